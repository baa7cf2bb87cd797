/*
 * testing.h — a test kit for your own saga definitions.
 *
 * Call it from your unit tests with your definition and your step
 * handlers. It runs the saga on a private engine (in-memory store, its own
 * loop) under a virtual clock, so timeouts, backoff and retries take no
 * real time, and it explores failures systematically: one run with no
 * fault, one per step with that step failing, one per step timing out, one
 * per compensation failing N times, one cancelled at each step. For every
 * run it returns the journal and whether the run met the saga invariants:
 *   - the saga ended in the state the fault calls for (COMPLETED,
 *     COMPENSATED, or FAILED when the pivot may have applied, a step past
 *     the pivot ran out of attempts, or a compensation did);
 *   - exactly the steps that completed or may have run (timed out, or in
 *     flight when cancelled), and have a compensation, were compensated;
 *   - in reverse order;
 *   - plus your own check (the state of your fakes), called after each run.
 *
 * Local steps run your actions and compensations. Remote steps (a service
 * and command instead of an action) are stubbed: their action and
 * compensation answer OK at once, since the kit tests the orchestration;
 * test the participant's handlers on their own.
 *
 * A timed-out step's action still runs (it may have applied), with a ref
 * whose completion the engine ignores, as it ignores a completion that
 * arrives after a timeout. Actions must complete before they return or from
 * a zero-delay uv timer on saga_engine_loop(); the virtual clock does not
 * wait for real time.
 */
#ifndef SAGA_TESTING_H
#define SAGA_TESTING_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

/** What a run injects. */
typedef enum saga_test_fault_kind {
    SAGA_TEST_NO_FAULT = 0,
    /** Step @c step answers FAIL without running its action: a business
     * "no", every attempt (the first only for a retriable step retried
     * forever, since past the pivot a FAIL is retried). */
    SAGA_TEST_STEP_FAILS = 1,
    /** Step @c step's action runs but never answers, every attempt (the
     * first attempt only for a retriable step): it may have applied. */
    SAGA_TEST_STEP_TIMES_OUT = 2,
    /** Step @c step's compensation answers FAIL @c times times, then runs.
     * The compensation is triggered by failing the next step that can
     * still fail before the pivot. */
    SAGA_TEST_COMP_FAILS = 3,
    /** The saga is cancelled while step @c step is in flight (its action
     * has run, its answer is ignored). */
    SAGA_TEST_CANCEL = 4
} saga_test_fault_kind;

/** One fault. */
typedef struct saga_test_fault {
    saga_test_fault_kind kind;
    int32_t step;   /* the step it applies to */
    uint32_t times; /* SAGA_TEST_COMP_FAILS: failed attempts */
} saga_test_fault;

/** The longest journal / compensation text kept per run. */
#define SAGA_TEST_TEXT_MAX 2048

/** One run's outcome. */
typedef struct saga_test_run {
    saga_test_fault fault;
    /** "no fault", "step 'pay' fails", "step 'pay' times out",
     * "compensation of 'reserve' fails 2 times", "cancelled at 'pay'". */
    char label[300];
    /** How the saga ended (0 if it did not end), and how it should have. */
    saga_state state;
    saga_state expected;
    /** 1 if every invariant held. */
    int ok;
    /** The first invariant broken, "" if ok. */
    char why[512];
    /** The journal, one word per entry with step names, e.g.
     * "STARTED STEP_OK(reserve) STEP_FAIL(pay) COMPENSATING
     * COMP_OK(reserve) COMPENSATED". */
    char journal[SAGA_TEST_TEXT_MAX];
    /** The compensations that ran (your functions, or a remote stub), in
     * order, space separated, e.g. "pay reserve"; "" if none. */
    char compensated[SAGA_TEST_TEXT_MAX];
    /** The steps whose compensation was expected, in the expected order. */
    char expected_compensated[SAGA_TEST_TEXT_MAX];
} saga_test_run;

/** Reset your fakes before a run. */
typedef void (*saga_test_reset_fn)(void *arg);
/**
 * Check your fakes after a run (for example: a COMPENSATED run left stock
 * and money as they were). Write why into @p why (at most @p why_len bytes)
 * and return 0 if the run is wrong, or return 1.
 */
typedef int (*saga_test_check_fn)(const saga_test_run *run, char *why,
                                  size_t why_len, void *arg);

#define SAGA_TEST_OPTIONS_VERSION 1
#define SAGA_TEST_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_TEST_OPTIONS_VERSION)

/** Options; zero in any field selects its default. */
typedef struct saga_test_options {
    unsigned int version;
    /** N for "each compensation fails N times"; default 2. */
    uint32_t comp_failures;
    /** Called before each run; may be NULL. */
    saga_test_reset_fn reset;
    /** Called after each run; may be NULL. */
    saga_test_check_fn check;
    void *arg;
    /** Seed of the engine's random source (retry jitter); default 1. */
    uint64_t seed;
    /** Give up on a run after this much virtual time; default 7 days. */
    uint64_t max_virtual_ms;
} saga_test_options;

/**
 * Zero @p opts and set its version: every field then selects its default.
 * @param opts     caller memory.
 * @param version  SAGA_TEST_OPTIONS_VERSION (or an older one).
 * @return SAGA_OK, SAGA_EINVAL (@p opts NULL), SAGA_EVERSION (0 or newer
 *   than this library).
 * Ownership: @p opts is the caller's. Since: 0.2.
 */
SAGA_EXTERN int saga_test_options_init(saga_test_options *opts,
                                       unsigned int version);

/**
 * Run definition @p def once with @p fault (NULL: no fault) on saga data
 * @p data / @p len (a msgpack map; NULL for an empty one).
 * @param def borrowed: the kit runs a copy, so one definition serves many
 *   runs; it must be valid (saga_def_validate()).
 * @param opts NULL for defaults.
 * @param out receives the run (see saga_test_run); @c out->ok says whether
 *   the invariants held.
 * @return SAGA_OK (the run happened; look at out->ok), SAGA_EINVAL (NULL
 *   argument, invalid definition, a fault naming no such step or one that
 *   cannot apply to it: see out->why), SAGA_EVERSION (opts->version 0 or
 *   newer than this library), SAGA_ENOMEM.
 * Since: 0.2.
 * Ownership: @p def, @p data, @p fault and @p opts stay the caller's; @p out is
 *   caller memory (plain arrays: nothing to free).
 */
SAGA_EXTERN int saga_test_run_one(const saga_def *def, const void *data,
                                  size_t len, const saga_test_fault *fault,
                                  const saga_test_options *opts,
                                  saga_test_run *out);

/** Every run of an exploration. */
typedef struct saga_test_report {
    size_t nruns;
    size_t nfailed; /* runs whose invariants did not hold */
    saga_test_run *runs;
} saga_test_report;

/**
 * Explore the failures of @p def: no fault; each step failing; each step
 * timing out; each compensation failing N times (where a later step can
 * trigger it); cancelled at each compensatable step before the pivot.
 * @return SAGA_OK (look at (*out)->nfailed), SAGA_EINVAL, SAGA_ENOMEM.
 * Ownership: free *out with saga_test_report_free(). Since: 0.2.
 */
SAGA_EXTERN int saga_test_explore(const saga_def *def, const void *data,
                                  size_t len, const saga_test_options *opts,
                                  saga_test_report **out);

/** Free a report; NULL is a no-op. Since: 0.2.
 * Ownership: @p r and its runs are freed. */
SAGA_EXTERN void saga_test_report_free(saga_test_report *r);

/**
 * Write a readable summary of @p r into @p buf (at most @p len bytes, NUL
 * terminated): one line per run, "ok" or "VIOLATION" with the reason and
 * the journal. @return the length the whole summary needs (as snprintf).
 * Since: 0.2.
 * Ownership: @p buf is caller memory.
 */
SAGA_EXTERN size_t saga_test_report_format(const saga_test_report *r, char *buf,
                                           size_t len);

/**
 * The first run of @p r whose label contains @p label_part (e.g. "'pay'
 * fails"), or NULL. @return a run borrowed from @p r. Since: 0.2.
 * Ownership: valid until saga_test_report_free(@p r).
 */
SAGA_EXTERN const saga_test_run *
saga_test_report_find(const saga_test_report *r, const char *label_part);

SAGA_END_DECL

#endif /* SAGA_TESTING_H */

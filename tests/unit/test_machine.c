/*
 * test_machine.c — the saga state machine (lib/machine.c) on its own: the
 * transitions are driven with no loop, no store and no engine, through a
 * staging interface that records what they write (journal events, effects,
 * remote commands, staged sagas).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "machine.h"

typedef struct rec {
    int64_t now;
    char journal[1024]; /* "STARTED STEP_OK ..." */
    char effects[256];  /* "I0 I1 D" (invoke step, done) */
    int commands;       /* remote commands queued */
    int staged;
    unsigned int put_flags;
    saga_engine_counters stats;
    int logged[SAGA_LOG_ERROR + 1]; /* lines handed to log, by level */
} rec;

static int64_t r_now(void *self) { return ((rec *)self)->now; }
static uint64_t r_rand(void *self)
{
    (void)self;
    return 1ull << 63; /* jitter factor 1 */
}
static int r_reserve(void *self)
{
    (void)self;
    return SAGA_OK;
}
static int r_journal(void *self, saga__inst *in, saga_journal_kind ev,
                     const char *error)
{
    rec *r = self;
    (void)error;
    in->jseq++;
    size_t n = strlen(r->journal);
    snprintf(r->journal + n, sizeof r->journal - n, "%s%s", n ? " " : "",
             saga_journal_kind_name(ev));
    return SAGA_OK;
}
static int r_effect(void *self, const saga__effect *f)
{
    rec *r = self;
    size_t n = strlen(r->effects);
    if (f->kind == EFF_INVOKE)
        snprintf(r->effects + n, sizeof r->effects - n, "%s%s%d", n ? " " : "",
                 f->backward ? "C" : "I", f->step);
    else if (f->kind == EFF_DONE)
        snprintf(r->effects + n, sizeof r->effects - n, "%sD", n ? " " : "");
    else
        snprintf(r->effects + n, sizeof r->effects - n, "%s?", n ? " " : "");
    return SAGA_OK;
}
static int r_command(void *self, saga__inst *in)
{
    (void)in;
    ((rec *)self)->commands++;
    return SAGA_OK;
}
static void r_stage(void *self, saga__inst *in, unsigned int put_flags)
{
    (void)in;
    rec *r = self;
    r->staged++;
    r->put_flags |= put_flags;
}
static void r_log(void *self, saga_log_level l, const char *id, int step,
                  const char *msg)
{
    (void)id, (void)step, (void)msg;
    ((rec *)self)->logged[l]++;
}
static const char *r_errmsg(void *self)
{
    (void)self;
    return "";
}

static const saga__stager_ops rec_ops = {
    .now = r_now,
    .rand = r_rand,
    .reserve = r_reserve,
    .journal = r_journal,
    .effect = r_effect,
    .command = r_command,
    .stage = r_stage,
    .log = r_log,
    .errmsg = r_errmsg,
};

static void noop(saga_engine *e, const saga_step_ref *ref, const void *d,
                 size_t l, void *arg)
{
    (void)e, (void)ref, (void)d, (void)l, (void)arg;
}

static rec R;
static saga__machine M;
static saga_def *D;
static saga__inst *I;

/* Definition "m": a (compensatable), b (pivot), c (retriable), with local
 * actions, 2 attempts each and a 1000 ms timeout. */
static void setup(void)
{
    memset(&R, 0, sizeof R);
    R.now = 1000;
    M.ops = &rec_ops;
    M.self = &R;
    M.stats = &R.stats;
    cr_assert_eq(saga_def_new(&D, "m", 1), SAGA_OK);
    const char *names[] = {"a", "b", "c"};
    saga_step_kind kinds[] = {SAGA_STEP_COMPENSATABLE, SAGA_STEP_PIVOT,
                              SAGA_STEP_RETRIABLE};
    for (int i = 0; i < 3; i++) {
        saga_step_options o = SAGA_STEP_OPTIONS_INIT;
        o.kind = kinds[i];
        o.timeout_ms = 1000;
        o.retry.max_attempts = 2;
        o.retry.initial_backoff_ms = 10;
        o.retry.jitter = 0;
        cr_assert_eq(saga_def_add_step(D, names[i], noop, i == 0 ? noop : NULL,
                                       &o, NULL),
                     SAGA_OK);
    }
    cr_assert_eq(saga_def_validate(D), SAGA_OK);
    I = saga__inst_new(D, NULL, NULL, 0, R.now);
    cr_assert_not_null(I);
    snprintf(I->id, sizeof I->id, "%s", "0123456789abcdef0123456789abcdef");
}

static void teardown(void)
{
    saga__inst_destroy(I);
    saga_def_free(D);
}

/* The released invocation of the current attempt, as the engine does. */
static void invoked(void)
{
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_INVOKE;
    f.step = I->step;
    f.attempt = I->attempt;
    f.backward = (I->flags & SAGA_REC_BACKWARD) ? 1u : 0u;
    cr_assert(saga__m_invoking(&M, I, &f));
}

Test(machine, runs_forward_to_completed, .init = setup, .fini = teardown)
{
    cr_assert_eq(saga__m_start(&M, I, NULL), SAGA_OK);
    cr_expect_eq(R.put_flags, SAGA_PUT_INSERT | SAGA_PUT_DATA);
    for (int s = 0; s < 3; s++) {
        invoked();
        saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0);
    }
    cr_expect_eq(I->state, SAGA_STATE_COMPLETED);
    cr_expect_str_eq(R.journal, "STARTED STEP_OK STEP_OK STEP_OK COMPLETED");
    cr_expect_str_eq(R.effects, "I0 I1 I2 D");
    cr_expect_eq(R.stats.completed, 1);
    cr_expect_eq(R.stats.started, 1);
    cr_expect_eq(R.staged, 4);
}

Test(machine, failure_before_the_pivot_compensates, .init = setup,
     .fini = teardown)
{
    saga__m_start(&M, I, NULL);
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0); /* a */
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_FAIL, "no", 0); /* b fails */
    cr_expect_eq(I->state, SAGA_STATE_COMPENSATING);
    cr_expect_str_eq(R.effects, "I0 I1 C0");
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0); /* undo a */
    cr_expect_eq(I->state, SAGA_STATE_COMPENSATED);
    cr_expect_str_eq(R.journal, "STARTED STEP_OK STEP_FAIL COMPENSATING "
                                "COMP_OK COMPENSATED");
}

Test(machine, timeout_then_retry_then_gives_up_past_the_pivot, .init = setup,
     .fini = teardown)
{
    saga__m_start(&M, I, NULL);
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0);
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0); /* pivot done */
    invoked();
    /* c times out: retried after its backoff, by the timer. */
    cr_expect_eq(saga__m_due(I), R.now + 1000);
    R.now += 1000;
    cr_expect_eq(saga__m_fire(&M, I, R.now), SAGA__FIRE_STAGED);
    cr_expect(I->flags & SAGA_REC_MAYBE);
    cr_expect_eq(saga__m_due(I), R.now + 10);
    cr_expect_eq(saga__m_fire(&M, I, R.now), SAGA__FIRE_NONE, "not yet due");
    R.now += 10;
    cr_expect_eq(saga__m_fire(&M, I, R.now), SAGA__FIRE_STAGED);
    cr_expect_eq(I->attempt, 2);
    invoked();
    saga__m_outcome(&M, I, SAGA_OUTCOME_RETRY, "busy", 0);
    /* Out of attempts past the pivot: FAILED, for an operator. */
    cr_expect_eq(I->state, SAGA_STATE_FAILED);
    cr_expect_str_eq(R.journal, "STARTED STEP_OK STEP_OK STEP_TIMEOUT "
                                "STEP_RETRY FAILED");
    /* The operator retries it: step c again, attempt 1. */
    saga__m_retry(&M, I, "by test");
    cr_expect_eq(I->state, SAGA_STATE_RUNNING);
    cr_expect_eq(I->attempt, 1);
    cr_expect_str_eq(R.effects, "I0 I1 I2 I2 D I2");
}

Test(machine, a_stale_or_superseded_attempt_is_not_current, .init = setup,
     .fini = teardown)
{
    saga__m_start(&M, I, NULL);
    cr_expect(saga__m_is_current(I, 0, 1, 0));
    cr_expect(!saga__m_is_current(I, 0, 2, 0));
    cr_expect(!saga__m_is_current(I, 0, 1, 1));
    cr_expect(!saga__m_is_current(I, 1, 1, 0));
    cr_expect(!saga__m_is_current(NULL, 0, 1, 0));
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_INVOKE;
    f.step = 0;
    f.attempt = 1;
    /* Cancelled before the invocation was released: it is skipped. */
    cr_expect(saga__m_can_compensate(I));
    saga__m_cancel(&M, I, "test");
    cr_expect_eq(saga__m_invoking(&M, I, &f), 0);
    cr_expect_eq(I->state, SAGA_STATE_COMPENSATED, "step a never ran");
    cr_expect_str_eq(R.journal, "STARTED COMPENSATING COMPENSATED");
}

Test(machine, deadline_compensates_before_the_pivot, .init = setup,
     .fini = teardown)
{
    I->deadline_ms = R.now + 500;
    saga__m_start(&M, I, NULL);
    invoked();
    cr_expect_eq(saga__m_due(I), R.now + 500);
    R.now += 500;
    cr_expect_eq(saga__m_fire(&M, I, R.now), SAGA__FIRE_STAGED);
    /* Step a was invoked and may have applied: it is compensated. */
    cr_expect_eq(I->state, SAGA_STATE_COMPENSATING);
    cr_expect_str_eq(R.effects, "I0 C0");
}

Test(machine, lines_below_the_log_level_are_not_passed_on, .init = setup,
     .fini = teardown)
{
    /* A saga that ends logs one DEBUG line ("saga ended"); with the
     * engine's level (WARN) it must not reach the stager at all. */
    for (int pass = 0; pass < 2; pass++) {
        saga__inst_destroy(I);
        I = saga__inst_new(D, NULL, NULL, 0, R.now);
        cr_assert_not_null(I);
        memset(R.logged, 0, sizeof R.logged);
        M.log_level = pass == 0 ? 0 : SAGA_LOG_WARN;
        cr_assert_eq(saga__m_start(&M, I, NULL), SAGA_OK);
        for (int s = 0; s < 3; s++) {
            invoked();
            saga__m_outcome(&M, I, SAGA_OUTCOME_OK, NULL, 0);
        }
        cr_assert_eq(I->state, SAGA_STATE_COMPLETED);
        if (pass == 0)
            cr_expect_gt(R.logged[SAGA_LOG_DEBUG], 0);
        else
            cr_expect_eq(R.logged[SAGA_LOG_DEBUG] + R.logged[SAGA_LOG_INFO], 0);
    }
}

/* instance.c's index on util.h's hash table: find by id and by key, visit
 * every saga once with saga__index_next, remove. */
Test(machine, index_finds_visits_and_removes, .init = setup, .fini = teardown)
{
    enum { N = 300 }; /* past the table's first growth */
    saga__index x;
    memset(&x, 0, sizeof x);
    saga__inst *all[N];
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        all[i] = saga__inst_new(D, i % 2 ? key : NULL, NULL, 0, R.now);
        cr_assert_not_null(all[i]);
        snprintf(all[i]->id, sizeof all[i]->id, "%032x", i);
        cr_assert_eq(saga__index_add(&x, all[i]), SAGA_OK);
    }
    cr_assert_eq(x.ninst, N);
    int seen[N] = {0}, visited = 0;
    for (saga__inst *in = saga__index_next(&x, NULL); in;
         in = saga__index_next(&x, in), visited++)
        seen[strtol(in->id, NULL, 16)]++;
    cr_assert_eq(visited, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(seen[i], 1);
        cr_assert_eq(saga__index_find(&x, all[i]->id), all[i]);
    }
    cr_assert_eq(saga__index_find_key(&x, "k7"), all[7]);
    cr_assert_null(saga__index_find_key(&x, "k8"));
    saga__index_remove(&x, all[7]);
    cr_assert_null(saga__index_find(&x, all[7]->id));
    cr_assert_null(saga__index_find_key(&x, "k7"));
    cr_assert_eq(saga__index_find(&x, all[9]->id), all[9]);
    saga__inst_destroy(all[7]);
    saga__index_free(&x); /* frees the others */
}

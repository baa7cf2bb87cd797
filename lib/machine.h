/*
 * machine.h — the saga state machine (DESIGN §3) as transitions on one
 * saga instance that write into a staging interface: journal entries, the
 * effects to release after the commit (an action to invoke, a saga that
 * ended), the command of a remote attempt, and the saga itself, staged with
 * its SAGA_PUT_* flags. It knows no loop, store, batch or engine: the engine
 * implements the interface over its open batch, and a unit test over plain
 * arrays (tests/unit/test_machine.c).
 */
#ifndef SAGA_MACHINE_H
#define SAGA_MACHINE_H

#include "instance.h"

typedef struct saga__stager_ops {
    int64_t (*now)(void *self);
    uint64_t (*rand)(void *self);
    /** Room for one transition's journal entries and effects, so that
     * staging it cannot fail half-way. @return SAGA_OK or SAGA_ENOMEM. */
    int (*reserve)(void *self);
    /** A journal entry for @p in (its seq is ++in->jseq). */
    int (*journal)(void *self, saga__inst *in, saga_journal_kind ev,
                   const char *error);
    /** An effect, released in order after the commit. */
    int (*effect)(void *self, const saga__effect *f);
    /** The outbox message that runs the current attempt of a remote step,
     * written with the transition. */
    int (*command)(void *self, saga__inst *in);
    /** Stage @p in (SAGA_PUT_* @p put_flags) with this transition. */
    void (*stage)(void *self, saga__inst *in, unsigned int put_flags);
    void (*log)(void *self, saga_log_level lvl, const char *saga_id, int step,
                const char *msg);
    /** The reason of the last failed operation. */
    const char *(*errmsg)(void *self);
} saga__stager_ops;

typedef struct saga__machine {
    const saga__stager_ops *ops;
    void *self;
    saga_engine_counters *stats; /* counters the transitions move */
    /* Lines below this level are not even formatted (0: all go to log). */
    saga_log_level log_level;
} saga__machine;

#define SAGA__IS_ACTIVE(s)                                                     \
    ((s) == SAGA_STATE_RUNNING || (s) == SAGA_STATE_COMPENSATING)

/* Whether (step, attempt, comp) names the current attempt of @p in, in
 * flight: the one test behind an action's completion, a remote reply, an
 * undeliverable command and a released invocation. */
int saga__m_is_current(const saga__inst *in, uint32_t step, uint32_t attempt,
                       int comp);
/* Whether @p in can still be undone (cancel, deadline): before the pivot,
 * at a compensatable step. */
int saga__m_can_compensate(const saga__inst *in);
/* When @p in's timer is due (the step timeout or retry, or the deadline);
 * INT64_MAX for none. */
int64_t saga__m_due(const saga__inst *in);

/* A new saga: journal STARTED, the effect @p started (may be NULL), its
 * first attempt; staged as an insert. @return SAGA_OK or SAGA_ENOMEM
 * (then nothing of it may be committed: drop the saga). */
int saga__m_start(saga__machine *m, saga__inst *in,
                  const saga__effect *started);
/* The current attempt's outcome (validated, current); @p put_flags: what
 * else changed (SAGA_PUT_DATA for a merged output). */
void saga__m_outcome(saga__machine *m, saga__inst *in, saga_outcome oc,
                     const char *error, unsigned int put_flags);
typedef enum {
    SAGA__FIRE_STAGED, /* a transition was staged */
    SAGA__FIRE_NONE,   /* nothing due (re-arm it) or nothing to do */
    SAGA__FIRE_NOMEM   /* no room to stage it: try again shortly */
} saga__fire_result;
/* Its timer fired at @p now: a timeout, a retry or the deadline. */
saga__fire_result saga__m_fire(saga__machine *m, saga__inst *in, int64_t now);
/* Cancel (checked with saga__m_can_compensate first). */
void saga__m_cancel(saga__machine *m, saga__inst *in, const char *reason);
/* Operator retry of a FAILED saga (@p why may be NULL). */
void saga__m_retry(saga__machine *m, saga__inst *in, const char *why);
/* Operator compensate; operator resolve as COMPLETED or COMPENSATED. */
void saga__m_compensate(saga__machine *m, saga__inst *in, const char *why);
void saga__m_resolve(saga__machine *m, saga__inst *in, saga_state as,
                     const char *why);
/* A saga loaded after a restart: its attempt in flight runs again (local)
 * or waits for its reply (remote). @return 1 if it only needs its timer,
 * 0 if an invocation was queued, SAGA_ENOMEM. */
int saga__m_resume(saga__machine *m, saga__inst *in);
/* The released invocation @p f is still current: the attempt starts now
 * (its timeout counts from here). @return 0 if superseded (skip it). */
int saga__m_invoking(saga__machine *m, saga__inst *in, const saga__effect *f);

#endif /* SAGA_MACHINE_H */

/*
 * machine.c — the saga state machine (DESIGN §3; see machine.h): start,
 * step outcomes, timeouts, retries with backoff, compensation in reverse
 * order, the deadline, cancel and the operator's retry, compensate and
 * resolve.
 *
 * Every transition changes the saga in memory and writes into the staging
 * interface: its journal entries, its effects (the next action, the end)
 * and the saga itself. Whoever implements the interface commits them and
 * releases the effects after.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "machine.h"

#define IS_ACTIVE SAGA__IS_ACTIVE
#define NOW(m) ((m)->ops->now((m)->self))
#define JOURNAL(m, in, ev, err) ((m)->ops->journal((m)->self, in, ev, err))

static void mlog(saga__machine *m, saga_log_level lvl, const char *id, int step,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void mlog(saga__machine *m, saga_log_level lvl, const char *id, int step,
                 const char *fmt, ...)
{
    if (lvl < m->log_level) /* not even formatted (one DEBUG line a saga) */
        return;
    va_list ap;
    va_start(ap, fmt);
    saga__vlog(m->log_level, lvl, id, step, m->ops->log, m->self, NULL, NULL,
               NULL, fmt, ap);
    va_end(ap);
}

static void invoke_effect(const saga__inst *in, saga__effect *f);

static const saga__step *step_of(const saga__inst *in)
{
    return &in->def->steps[in->step];
}

static int backward(const saga__inst *in)
{
    return (in->flags & SAGA_REC_BACKWARD) != 0;
}

static void set_error(saga__inst *in, const char *err)
{
    char *copy = saga__strdup(err);
    if (err != NULL && copy == NULL)
        return; /* keep the old text rather than lose the transition */
    saga_free(in->error);
    in->error = copy;
}

/* The delay before attempt @p attempt + 1: initial * multiplier^(attempt-1),
 * capped, then jittered by a factor in [1 - jitter, 1 + jitter]. */
static int64_t backoff_ms(saga__machine *m, const saga_retry_policy *p,
                          uint32_t attempt)
{
    double d = p->initial_backoff_ms;
    for (uint32_t i = 1; i < attempt && d < p->max_backoff_ms; i++)
        d *= p->multiplier;
    if (d > p->max_backoff_ms)
        d = p->max_backoff_ms;
    if (p->jitter > 0) {
        double u = (double)(m->ops->rand(m->self) >> 11) *
                   (1.0 / 9007199254740992.0);
        d *= 1.0 + p->jitter * (2.0 * u - 1.0);
    }
    return d < 0 ? 0 : (int64_t)d;
}

/* Schedule the current attempt: durable as INFLIGHT, invoked after the
 * commit. */
static void begin_attempt(saga__machine *m, saga__inst *in)
{
    const saga__step *s = step_of(in);
    int64_t now = NOW(m);
    in->flags |= SAGA_REC_INFLIGHT;
    in->started_ms = now;
    in->due_ms = s->opts.timeout_ms == SAGA_TIMEOUT_NONE
                     ? 0
                     : now + (int64_t)s->opts.timeout_ms;
    /* A local action runs only after the commit; a command, once queued,
     * is published with the commit whatever happens next. */
    in->invoked = s->opts.service != NULL;
    if (s->opts.service != NULL) {
        /* A remote attempt is a command in the outbox, written in the same
         * transaction as this transition. */
        if (m->ops->command(m->self, in) != SAGA_OK)
            mlog(m, SAGA_LOG_ERROR, in->id, in->step,
                 "cannot queue the command: %s; the step times out "
                 "and is retried",
                 m->ops->errmsg(m->self));
        return;
    }
    saga__effect f;
    invoke_effect(in, &f);
    if (m->ops->effect(m->self, &f) != SAGA_OK)
        mlog(m, SAGA_LOG_ERROR, in->id, in->step,
             "out of memory queueing an attempt; it runs on recovery");
}

static void end_saga(saga__machine *m, saga__inst *in, saga_state st,
                     saga_journal_kind ev, const char *err)
{
    in->state = st;
    in->flags &= ~SAGA_REC_INFLIGHT;
    in->due_ms = 0;
    if (err != NULL)
        set_error(in, err);
    JOURNAL(m, in, ev, err);
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_DONE;
    f.inst = in;
    m->ops->effect(m->self, &f);
    if (st == SAGA_STATE_COMPLETED)
        m->stats->completed++;
    else if (st == SAGA_STATE_COMPENSATED)
        m->stats->compensated++;
    else
        m->stats->failed++;
    mlog(m, st == SAGA_STATE_FAILED ? SAGA_LOG_WARN : SAGA_LOG_DEBUG, in->id,
         in->step, "saga %s%s%s", saga_state_name(st), err ? ": " : "",
         err ? err : "");
}

/* Go back to the highest step at or below @p from that has a
 * compensation; none left means COMPENSATED. */
static void compensate_from(saga__machine *m, saga__inst *in, int32_t from)
{
    while (from >= 0 && !saga__step_has_comp(&in->def->steps[from]))
        from--;
    if (from < 0) {
        end_saga(m, in, SAGA_STATE_COMPENSATED, SAGA_JOURNAL_COMPENSATED, NULL);
        return;
    }
    in->step = from;
    in->attempt = 1;
    begin_attempt(m, in);
}

/* Enter COMPENSATING. The current step is compensated too when its action
 * may have applied (it timed out, or was in flight when cancelled). */
static void start_compensation(saga__machine *m, saga__inst *in,
                               const char *reason)
{
    int32_t from = (in->flags & SAGA_REC_MAYBE) ||
                           SAGA__BUG(SAGA__BUG_COMP_NEVER)
                       ? in->step
                       : in->step - 1;
    in->state = SAGA_STATE_COMPENSATING;
    in->flags |= SAGA_REC_BACKWARD;
    in->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
    in->due_ms = 0;
    set_error(in, reason);
    JOURNAL(m, in, SAGA_JOURNAL_COMPENSATING, reason);
    mlog(m, SAGA_LOG_DEBUG, in->id, in->step, "compensating: %s", reason);
    compensate_from(m, in, from);
}

/* Whether the saga can still be undone: before the pivot, at a
 * compensatable step. */
static int can_compensate(const saga__inst *in)
{
    return in->state == SAGA_STATE_RUNNING && !(in->flags & SAGA_REC_PIVOTED) &&
           step_of(in)->opts.kind == SAGA_STEP_COMPENSATABLE;
}

static void wait_retry(saga__machine *m, saga__inst *in,
                       const saga_retry_policy *p)
{
    in->flags &= ~SAGA_REC_INFLIGHT;
    in->due_ms = NOW(m) + backoff_ms(m, p, in->attempt);
}

static int attempts_left(const saga_retry_policy *p, uint32_t attempt)
{
    return p->max_attempts == SAGA_RETRY_FOREVER || attempt < p->max_attempts;
}

static void forward_outcome(saga__machine *m, saga__inst *in, saga_outcome oc,
                            int timed_out, const char *err)
{
    const saga__step *s = step_of(in);
    char why[SAGA_NAME_MAX + 300];
    if (oc == SAGA_OUTCOME_OK) {
        JOURNAL(m, in, SAGA_JOURNAL_STEP_OK, NULL);
        m->stats->steps_ok++;
        in->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
        if (s->opts.kind != SAGA_STEP_COMPENSATABLE)
            in->flags |= SAGA_REC_PIVOTED;
        if ((size_t)in->step + 1 == in->def->nsteps) {
            end_saga(m, in, SAGA_STATE_COMPLETED, SAGA_JOURNAL_COMPLETED, NULL);
            return;
        }
        in->step++;
        in->attempt = 1;
        begin_attempt(m, in);
        return;
    }
    int past_pivot = (in->flags & SAGA_REC_PIVOTED) ||
                     s->opts.kind == SAGA_STEP_RETRIABLE;
    if (oc == SAGA_OUTCOME_FAIL) {
        JOURNAL(m, in, SAGA_JOURNAL_STEP_FAIL, err);
        m->stats->steps_failed++;
        if (!past_pivot) {
            in->flags &= ~SAGA_REC_INFLIGHT;
            snprintf(why, sizeof why, "step '%s' failed: %s", s->name,
                     err ? err : "no reason given");
            start_compensation(m, in, why);
            return;
        }
        /* Past the pivot the saga can only move forward: a retriable
         * step's FAIL is retried under its policy, like RETRY (and like a
         * compensation's FAIL). */
    } else {
        /* RETRY or a timeout. */
        if (timed_out) {
            in->flags |= SAGA_REC_MAYBE;
            m->stats->timeouts++;
        }
        JOURNAL(m, in,
                timed_out ? SAGA_JOURNAL_STEP_TIMEOUT : SAGA_JOURNAL_STEP_RETRY,
                timed_out ? "timed out" : err);
    }
    if (attempts_left(&s->opts.retry, in->attempt)) {
        m->stats->retries++;
        wait_retry(m, in, &s->opts.retry);
        return;
    }
    in->flags &= ~SAGA_REC_INFLIGHT;
    snprintf(why, sizeof why, "step '%s' gave up after %u attempts%s%s",
             s->name, in->attempt, err ? ": " : "", err ? err : "");
    if (past_pivot ||
        (s->opts.kind == SAGA_STEP_PIVOT && (in->flags & SAGA_REC_MAYBE))) {
        /* Past the point of no return, or a pivot that may have applied:
         * neither forward nor back is safe without an operator. */
        end_saga(m, in, SAGA_STATE_FAILED, SAGA_JOURNAL_FAILED, why);
        return;
    }
    start_compensation(m, in, why);
}

static void backward_outcome(saga__machine *m, saga__inst *in, saga_outcome oc,
                             int timed_out, const char *err)
{
    const saga__step *s = step_of(in);
    if (oc == SAGA_OUTCOME_OK) {
        JOURNAL(m, in, SAGA_JOURNAL_COMP_OK, NULL);
        m->stats->compensations++;
        in->flags &= ~SAGA_REC_INFLIGHT;
        compensate_from(m, in, in->step - 1);
        return;
    }
    /* A compensation must eventually succeed: FAIL is retried like RETRY. */
    if (timed_out)
        m->stats->timeouts++;
    JOURNAL(m, in,
            timed_out ? SAGA_JOURNAL_COMP_TIMEOUT : SAGA_JOURNAL_COMP_FAIL,
            timed_out ? "timed out" : err);
    if (attempts_left(&s->opts.comp_retry, in->attempt)) {
        m->stats->retries++;
        wait_retry(m, in, &s->opts.comp_retry);
        return;
    }
    char why[SAGA_NAME_MAX + 300];
    snprintf(why, sizeof why,
             "compensation of step '%s' gave up after %u attempts%s%s", s->name,
             in->attempt, err ? ": " : "", err ? err : "");
    end_saga(m, in, SAGA_STATE_FAILED, SAGA_JOURNAL_FAILED, why);
}

static void apply_outcome(saga__machine *m, saga__inst *in, saga_outcome oc,
                          int timed_out, const char *err)
{
    in->updated_ms = NOW(m);
    if (backward(in))
        backward_outcome(m, in, oc, timed_out, err);
    else
        forward_outcome(m, in, oc, timed_out, err);
}

/* ------------------------------------------------------------------------ */
/* Queries on one saga                                                      */

int saga__m_is_current(const saga__inst *in, uint32_t step, uint32_t attempt,
                       int comp)
{
    return in != NULL && IS_ACTIVE(in->state) &&
           (in->flags & SAGA_REC_INFLIGHT) && (uint32_t)in->step == step &&
           in->attempt == attempt && backward(in) == (comp != 0);
}

int saga__m_can_compensate(const saga__inst *in) { return can_compensate(in); }

int64_t saga__m_due(const saga__inst *in)
{
    int64_t key = INT64_MAX;
    if (IS_ACTIVE(in->state) && in->due_ms > 0)
        key = in->due_ms;
    if (in->state == SAGA_STATE_RUNNING && !(in->flags & SAGA_REC_PIVOTED) &&
        in->deadline_ms > 0 && in->deadline_ms < key)
        key = in->deadline_ms;
    return key;
}

/* ------------------------------------------------------------------------ */
/* Transitions                                                              */

int saga__m_start(saga__machine *m, saga__inst *in, const saga__effect *started)
{
    if (JOURNAL(m, in, SAGA_JOURNAL_STARTED, NULL) != SAGA_OK ||
        (started != NULL && m->ops->effect(m->self, started) != SAGA_OK))
        return SAGA_ENOMEM;
    begin_attempt(m, in);
    m->ops->stage(m->self, in, SAGA_PUT_INSERT | SAGA_PUT_DATA);
    m->stats->started++;
    return SAGA_OK;
}

void saga__m_outcome(saga__machine *m, saga__inst *in, saga_outcome oc,
                     const char *error, unsigned int put_flags)
{
    if (oc != SAGA_OUTCOME_OK && error != NULL)
        set_error(in, error);
    apply_outcome(m, in, oc, 0, error);
    m->ops->stage(m->self, in, put_flags);
}

saga__fire_result saga__m_fire(saga__machine *m, saga__inst *in, int64_t now)
{
    if (in->in_batch || !IS_ACTIVE(in->state))
        return SAGA__FIRE_NONE;
    if (m->ops->reserve(m->self) != SAGA_OK)
        return SAGA__FIRE_NOMEM;
    if (in->state == SAGA_STATE_RUNNING && !(in->flags & SAGA_REC_PIVOTED) &&
        in->deadline_ms > 0 && now >= in->deadline_ms) {
        if (can_compensate(in)) {
            if ((in->flags & SAGA_REC_INFLIGHT) && in->invoked)
                in->flags |= SAGA_REC_MAYBE;
            in->updated_ms = now;
            start_compensation(m, in, "saga deadline passed");
            m->ops->stage(m->self, in, 0);
            return SAGA__FIRE_STAGED;
        }
        /* At the pivot: too late to undo, so the deadline no longer
         * applies; the saga finishes forward. */
        mlog(m, SAGA_LOG_INFO, in->id, in->step,
             "deadline passed at the pivot; finishing forward");
        in->deadline_ms = 0;
    }
    if (in->due_ms > 0 && now >= in->due_ms) {
        if (in->flags & SAGA_REC_INFLIGHT) {
            mlog(m, SAGA_LOG_INFO, in->id, in->step, "attempt %u timed out",
                 in->attempt);
            apply_outcome(m, in, SAGA_OUTCOME_RETRY, 1, NULL);
        } else {
            in->attempt++;
            in->updated_ms = now;
            begin_attempt(m, in);
        }
        m->ops->stage(m->self, in, 0);
        return SAGA__FIRE_STAGED;
    }
    return SAGA__FIRE_NONE;
}

void saga__m_cancel(saga__machine *m, saga__inst *in, const char *reason)
{
    /* A step in flight may have run, unless its action was never called
     * (its attempt is not committed yet). */
    if ((in->flags & SAGA_REC_INFLIGHT) && in->invoked)
        in->flags |= SAGA_REC_MAYBE;
    in->updated_ms = NOW(m);
    char why[300];
    snprintf(why, sizeof why, "cancelled: %s", reason ? reason : "by request");
    start_compensation(m, in, why);
    m->ops->stage(m->self, in, 0);
}

void saga__m_retry(saga__machine *m, saga__inst *in, const char *why)
{
    in->state = backward(in) ? SAGA_STATE_COMPENSATING : SAGA_STATE_RUNNING;
    in->attempt = 1;
    in->updated_ms = NOW(m);
    JOURNAL(m, in, SAGA_JOURNAL_OPERATOR_RETRY, why);
    begin_attempt(m, in);
    m->ops->stage(m->self, in, 0);
}

void saga__m_compensate(saga__machine *m, saga__inst *in, const char *why)
{
    /* A failed compensation is tried again; a step in flight, or one that
     * may have applied, is undone too. */
    int include = backward(in) || (in->flags & SAGA_REC_MAYBE) ||
                  ((in->flags & SAGA_REC_INFLIGHT) && in->invoked);
    int32_t from = include ? in->step : in->step - 1;
    in->updated_ms = NOW(m);
    JOURNAL(m, in, SAGA_JOURNAL_OPERATOR_COMPENSATE, why);
    in->state = SAGA_STATE_COMPENSATING;
    in->flags |= SAGA_REC_BACKWARD;
    in->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
    in->due_ms = 0;
    set_error(in, why);
    JOURNAL(m, in, SAGA_JOURNAL_COMPENSATING, why);
    compensate_from(m, in, from);
    m->ops->stage(m->self, in, 0);
}

void saga__m_resolve(saga__machine *m, saga__inst *in, saga_state as,
                     const char *why)
{
    in->updated_ms = NOW(m);
    JOURNAL(m, in, SAGA_JOURNAL_OPERATOR_RESOLVE, why);
    end_saga(m, in, as,
             as == SAGA_STATE_COMPLETED ? SAGA_JOURNAL_COMPLETED
                                        : SAGA_JOURNAL_COMPENSATED,
             NULL);
    m->ops->stage(m->self, in, 0);
}

static void invoke_effect(const saga__inst *in, saga__effect *f)
{
    memset(f, 0, sizeof *f);
    f->kind = EFF_INVOKE;
    f->inst = (saga__inst *)in;
    f->step = in->step;
    f->attempt = in->attempt;
    f->backward = backward(in) ? 1u : 0u;
}

int saga__m_resume(saga__machine *m, saga__inst *in)
{
    if (!(in->flags & SAGA_REC_INFLIGHT) || step_of(in)->opts.service)
        /* Waiting for a retry, or a remote attempt: its command is in the
         * outbox (or was published); the reply, or the durable timeout,
         * moves on. */
        return 1;
    /* The attempt's outcome never became durable: run it again (actions
     * are at-least-once), after the next commit point. */
    saga__effect f;
    invoke_effect(in, &f);
    return m->ops->effect(m->self, &f) == SAGA_OK ? 0 : SAGA_ENOMEM;
}

int saga__m_invoking(saga__machine *m, saga__inst *in, const saga__effect *f)
{
    /* The batch that scheduled this attempt committed; skip it if a later
     * transition (a cancel) superseded it meanwhile. */
    if (!saga__m_is_current(in, (uint32_t)f->step, f->attempt,
                            (int)f->backward))
        return 0;
    const saga__step *s = step_of(in);
    int64_t now = NOW(m);
    /* The timeout counts from the invocation, not from the staging. */
    in->started_ms = now;
    if (s->opts.timeout_ms != SAGA_TIMEOUT_NONE)
        in->due_ms = now + (int64_t)s->opts.timeout_ms;
    in->invoked = 1;
    return 1;
}

/*
 * saga.c — the saga state machine (DESIGN §3): start, step outcomes,
 * timeouts, retries with backoff, compensation in reverse order, the
 * deadline, cancel, operator retry and recovery.
 *
 * Every transition changes the in-memory saga, stages it into the open batch
 * with its journal entries, and queues its effects (the next action, a done
 * callback). engine.c commits the batch and releases the effects after.
 */
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "engine_int.h"

#define IS_ACTIVE(s)                                                           \
    ((s) == SAGA_STATE_RUNNING || (s) == SAGA_STATE_COMPENSATING)

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
static int64_t backoff_ms(saga_engine *e, const saga_retry_policy *p,
                          uint32_t attempt)
{
    double d = p->initial_backoff_ms;
    for (uint32_t i = 1; i < attempt && d < p->max_backoff_ms; i++)
        d *= p->multiplier;
    if (d > p->max_backoff_ms)
        d = p->max_backoff_ms;
    if (p->jitter > 0) {
        double u = (double)(saga__rand(e) >> 11) * (1.0 / 9007199254740992.0);
        d *= 1.0 + p->jitter * (2.0 * u - 1.0);
    }
    return d < 0 ? 0 : (int64_t)d;
}

/* Schedule the current attempt: durable as INFLIGHT, invoked after the
 * commit. */
static void begin_attempt(saga_engine *e, saga__inst *in)
{
    const saga__step *s = step_of(in);
    int64_t now = saga__now(e);
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
        if (saga__remote_command(e, in) != SAGA_OK)
            saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                      "cannot queue the command: %s; the step times out "
                      "and is retried", e->errmsg);
        return;
    }
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_INVOKE;
    f.inst = in;
    f.step = in->step;
    f.attempt = in->attempt;
    f.backward = backward(in) ? 1u : 0u;
    if (saga__push_effect(e, &f) != SAGA_OK)
        saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                  "out of memory queueing an attempt; it runs on recovery");
}

static void end_saga(saga_engine *e, saga__inst *in, saga_state st,
                     saga_journal_kind ev, const char *err)
{
    in->state = st;
    in->flags &= ~SAGA_REC_INFLIGHT;
    in->due_ms = 0;
    if (err != NULL)
        set_error(in, err);
    saga__journal(e, in, ev, err);
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_DONE;
    f.inst = in;
    saga__push_effect(e, &f);
    if (st == SAGA_STATE_COMPLETED)
        e->stats.completed++;
    else if (st == SAGA_STATE_COMPENSATED)
        e->stats.compensated++;
    else
        e->stats.failed++;
    saga__log(e, st == SAGA_STATE_FAILED ? SAGA_LOG_WARN : SAGA_LOG_DEBUG,
              in->id, in->step, "saga %s%s%s", saga_state_name(st),
              err ? ": " : "", err ? err : "");
}

/* Go back to the highest step at or below @p from that has a
 * compensation; none left means COMPENSATED. */
static void compensate_from(saga_engine *e, saga__inst *in, int32_t from)
{
    while (from >= 0 && !saga__step_has_comp(&in->def->steps[from]))
        from--;
    if (from < 0) {
        end_saga(e, in, SAGA_STATE_COMPENSATED, SAGA_JOURNAL_COMPENSATED, NULL);
        return;
    }
    in->step = from;
    in->attempt = 1;
    begin_attempt(e, in);
}

/* Enter COMPENSATING. The current step is compensated too when its action
 * may have applied (it timed out, or was in flight when cancelled). */
static void start_compensation(saga_engine *e, saga__inst *in,
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
    saga__journal(e, in, SAGA_JOURNAL_COMPENSATING, reason);
    saga__log(e, SAGA_LOG_DEBUG, in->id, in->step, "compensating: %s", reason);
    compensate_from(e, in, from);
}

/* Whether the saga can still be undone: before the pivot, at a
 * compensatable step. */
static int can_compensate(const saga__inst *in)
{
    return in->state == SAGA_STATE_RUNNING &&
           !(in->flags & SAGA_REC_PIVOTED) &&
           step_of(in)->opts.kind == SAGA_STEP_COMPENSATABLE;
}

static void wait_retry(saga_engine *e, saga__inst *in,
                       const saga_retry_policy *p)
{
    in->flags &= ~SAGA_REC_INFLIGHT;
    in->due_ms = saga__now(e) + backoff_ms(e, p, in->attempt);
}

static int attempts_left(const saga_retry_policy *p, uint32_t attempt)
{
    return p->max_attempts == SAGA_RETRY_FOREVER || attempt < p->max_attempts;
}

static void forward_outcome(saga_engine *e, saga__inst *in, saga_outcome oc,
                            int timed_out, const char *err)
{
    const saga__step *s = step_of(in);
    char why[SAGA_NAME_MAX + 300];
    if (oc == SAGA_OUTCOME_OK) {
        saga__journal(e, in, SAGA_JOURNAL_STEP_OK, NULL);
        e->stats.steps_ok++;
        in->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
        if (s->opts.kind != SAGA_STEP_COMPENSATABLE)
            in->flags |= SAGA_REC_PIVOTED;
        if ((size_t)in->step + 1 == in->def->nsteps) {
            end_saga(e, in, SAGA_STATE_COMPLETED, SAGA_JOURNAL_COMPLETED, NULL);
            return;
        }
        in->step++;
        in->attempt = 1;
        begin_attempt(e, in);
        return;
    }
    int past_pivot = (in->flags & SAGA_REC_PIVOTED) ||
                     s->opts.kind == SAGA_STEP_RETRIABLE;
    if (oc == SAGA_OUTCOME_FAIL) {
        saga__journal(e, in, SAGA_JOURNAL_STEP_FAIL, err);
        e->stats.steps_failed++;
        if (!past_pivot) {
            in->flags &= ~SAGA_REC_INFLIGHT;
            snprintf(why, sizeof why, "step '%s' failed: %s", s->name,
                     err ? err : "no reason given");
            start_compensation(e, in, why);
            return;
        }
        /* Past the pivot the saga can only move forward: a retriable
         * step's FAIL is retried under its policy, like RETRY (and like a
         * compensation's FAIL). */
    } else {
        /* RETRY or a timeout. */
        if (timed_out) {
            in->flags |= SAGA_REC_MAYBE;
            e->stats.timeouts++;
        }
        saga__journal(e, in,
                      timed_out ? SAGA_JOURNAL_STEP_TIMEOUT : SAGA_JOURNAL_STEP_RETRY,
                      timed_out ? "timed out" : err);
    }
    if (attempts_left(&s->opts.retry, in->attempt)) {
        e->stats.retries++;
        wait_retry(e, in, &s->opts.retry);
        return;
    }
    in->flags &= ~SAGA_REC_INFLIGHT;
    snprintf(why, sizeof why, "step '%s' gave up after %u attempts%s%s",
             s->name, in->attempt, err ? ": " : "", err ? err : "");
    if (past_pivot || (s->opts.kind == SAGA_STEP_PIVOT &&
                       (in->flags & SAGA_REC_MAYBE))) {
        /* Past the point of no return, or a pivot that may have applied:
         * neither forward nor back is safe without an operator. */
        end_saga(e, in, SAGA_STATE_FAILED, SAGA_JOURNAL_FAILED, why);
        return;
    }
    start_compensation(e, in, why);
}

static void backward_outcome(saga_engine *e, saga__inst *in, saga_outcome oc,
                             int timed_out, const char *err)
{
    const saga__step *s = step_of(in);
    if (oc == SAGA_OUTCOME_OK) {
        saga__journal(e, in, SAGA_JOURNAL_COMP_OK, NULL);
        e->stats.compensations++;
        in->flags &= ~SAGA_REC_INFLIGHT;
        compensate_from(e, in, in->step - 1);
        return;
    }
    /* A compensation must eventually succeed: FAIL is retried like RETRY. */
    if (timed_out)
        e->stats.timeouts++;
    saga__journal(e, in, timed_out ? SAGA_JOURNAL_COMP_TIMEOUT : SAGA_JOURNAL_COMP_FAIL,
                  timed_out ? "timed out" : err);
    if (attempts_left(&s->opts.comp_retry, in->attempt)) {
        e->stats.retries++;
        wait_retry(e, in, &s->opts.comp_retry);
        return;
    }
    char why[SAGA_NAME_MAX + 300];
    snprintf(why, sizeof why,
             "compensation of step '%s' gave up after %u attempts%s%s",
             s->name, in->attempt, err ? ": " : "", err ? err : "");
    end_saga(e, in, SAGA_STATE_FAILED, SAGA_JOURNAL_FAILED, why);
}

static void apply_outcome(saga_engine *e, saga__inst *in, saga_outcome oc,
                          int timed_out, const char *err)
{
    in->updated_ms = saga__now(e);
    if (backward(in))
        backward_outcome(e, in, oc, timed_out, err);
    else
        forward_outcome(e, in, oc, timed_out, err);
}

/* ------------------------------------------------------------------------ */
/* Invocation and timers (called by engine.c)                               */

void saga__invoke(saga_engine *e, saga__inst *in, const saga__effect *f)
{
    /* The batch that scheduled this attempt committed; skip it if a later
     * transition (a cancel) superseded it meanwhile. */
    if (!IS_ACTIVE(in->state) || in->step != f->step ||
        in->attempt != f->attempt || (uint32_t)backward(in) != f->backward ||
        !(in->flags & SAGA_REC_INFLIGHT))
        return;
    const saga__step *s = step_of(in);
    int64_t now = saga__now(e);
    /* The timeout counts from the invocation, not from the staging. */
    in->started_ms = now;
    if (s->opts.timeout_ms != SAGA_TIMEOUT_NONE)
        in->due_ms = now + (int64_t)s->opts.timeout_ms;
    saga_step_ref ref;
    memcpy(ref.saga_id, in->id, SAGA_ID_SIZE);
    ref.step = (uint32_t)in->step;
    ref.attempt = in->attempt;
    ref.compensating = f->backward;
    saga_action_fn fn = f->backward ? s->compensation : s->action;
    in->invoked = 1;
    fn(e, &ref, in->data, in->data_len, s->arg);
    if (!in->in_batch)
        saga__arm(e, in);
}

void saga__arm(saga_engine *e, saga__inst *in)
{
    int64_t key = INT64_MAX;
    if (IS_ACTIVE(in->state) && in->due_ms > 0)
        key = in->due_ms;
    if (in->state == SAGA_STATE_RUNNING && !(in->flags & SAGA_REC_PIVOTED) &&
        in->deadline_ms > 0 && in->deadline_ms < key)
        key = in->deadline_ms;
    if (key == INT64_MAX)
        saga__heap_remove(e, in);
    else
        saga__heap_set(e, in, key);
}

void saga__fire(saga_engine *e, saga__inst *in, int64_t now)
{
    if (in->in_batch || !IS_ACTIVE(in->state))
        return;
    if (saga__reserve(e) != SAGA_OK) {
        /* No room to stage what is due: try again shortly. */
        saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                  "out of memory firing a timer; retrying in %u ms",
                  e->opts.store_retry_ms);
        saga__heap_set(e, in, now + (int64_t)e->opts.store_retry_ms);
        return;
    }
    if (in->state == SAGA_STATE_RUNNING && !(in->flags & SAGA_REC_PIVOTED) &&
        in->deadline_ms > 0 && now >= in->deadline_ms) {
        if (can_compensate(in)) {
            if ((in->flags & SAGA_REC_INFLIGHT) && in->invoked)
                in->flags |= SAGA_REC_MAYBE;
            in->updated_ms = now;
            start_compensation(e, in, "saga deadline passed");
            saga__stage(e, in, 0);
            return;
        }
        /* At the pivot: too late to undo, so the deadline no longer
         * applies; the saga finishes forward. */
        saga__log(e, SAGA_LOG_INFO, in->id, in->step,
                  "deadline passed at the pivot; finishing forward");
        in->deadline_ms = 0;
    }
    if (in->due_ms > 0 && now >= in->due_ms) {
        if (in->flags & SAGA_REC_INFLIGHT) {
            saga__log(e, SAGA_LOG_INFO, in->id, in->step,
                      "attempt %u timed out", in->attempt);
            apply_outcome(e, in, SAGA_OUTCOME_RETRY, 1, NULL);
        } else {
            in->attempt++;
            in->updated_ms = now;
            begin_attempt(e, in);
        }
        saga__stage(e, in, 0);
        return;
    }
    saga__arm(e, in);
}

/* ------------------------------------------------------------------------ */
/* The public verbs                                                         */

/* 12 hex digits of the creation time (ms, 48 bits), 4 of a per-engine
 * counter, then 64 random bits. Ids made by one engine thus sort in
 * creation order, which keeps the store's id-keyed B-trees (sagas, journal)
 * growing at their right edge: with fully random ids every commit dirtied
 * about one leaf page per saga per tree, and the SQLite store wrote ~21 KB
 * of WAL per 4-step saga instead of ~3 KB (bench/core). The random part
 * keeps ids unique across engines and unguessable; everything comes from
 * the injectable clock and random source, so a seeded run still replays. */
static void new_id(saga_engine *e, char out[SAGA_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t t = (uint64_t)saga__now(e);
    uint64_t seq = e->id_seq++;
    uint64_t r = saga__rand(e);
    for (int i = 0; i < 12; i++)
        out[i] = hex[(t >> (44 - 4 * i)) & 15];
    for (int i = 0; i < 4; i++)
        out[12 + i] = hex[(seq >> (12 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++)
        out[16 + i] = hex[(r >> (60 - 4 * i)) & 15];
    out[SAGA_ID_LEN] = '\0';
}

static int valid_key(const char *key)
{
    size_t n = strnlen(key, SAGA_NAME_MAX + 1);
    return n >= 1 && n <= SAGA_NAME_MAX;
}

static int check_data(saga_engine *e, const void *data, size_t len)
{
    if (len > e->opts.max_data_size)
        return saga__err(e, SAGA_EINVAL,
                         "saga data of %zu bytes exceeds the limit of %zu",
                         len, e->opts.max_data_size);
    if (len > 0 && data == NULL)
        return saga__err(e, SAGA_EINVAL, "data is NULL but len is %zu", len);
    if (!saga__data_is_map(data, len))
        return saga__err(e, SAGA_EINVAL,
                         "saga data must be a msgpack map with string keys");
    return SAGA_OK;
}

static int started_effect(saga_engine *e, const char *id, int existed,
                          saga_start_cb cb, void *arg)
{
    if (cb == NULL)
        return SAGA_OK;
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_STARTED;
    memcpy(f.id, id, SAGA_ID_SIZE);
    f.existed = existed;
    f.start_cb = cb;
    f.arg = arg;
    return saga__push_effect(e, &f);
}

static int rec_updated_cb(const saga_record *r, void *arg)
{
    *(int64_t *)arg = r->updated_ms;
    return 0;
}

/* Look @p key up in the store (the sagas it names have ended). A saga past
 * its retention is purged first, so that the key starts a new saga instead
 * of naming one about to disappear; one that is returned is pinned: no
 * purge removes it until this start is released. */
static int stored_key(saga_engine *e, const char *key, char found[SAGA_ID_SIZE])
{
    saga_store *s = e->store;
    for (int pass = 0;; pass++) {
        int rc = s->idem_get(s, key, found);
        if (rc == SAGA_ENOTFOUND)
            return rc;
        if (rc != SAGA_OK)
            return saga__err(e, SAGA_ESTORE, "idempotency lookup: %s",
                             s->errmsg(s));
        int64_t updated = 0;
        rc = s->saga_get(s, found, rec_updated_cb, &updated);
        if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
            return saga__err(e, SAGA_ESTORE, "idempotency lookup: %s",
                             s->errmsg(s));
        int64_t cut = saga__now(e) - (int64_t)e->opts.retention_ms;
        if (pass == 0 && rc == SAGA_OK && updated < cut) {
            /* Expired, not purged yet: purge now (pinned sagas stay). */
            rc = saga_engine_housekeep(e);
            if (rc != SAGA_OK)
                return rc;
            continue;
        }
        saga__pin(e, rc == SAGA_OK && updated < cut ? updated : cut);
        return SAGA_OK;
    }
}

int saga_start(saga_engine *e, const char *def_name, const char *idem_key,
               const void *data, size_t len, char id_out[SAGA_ID_SIZE],
               saga_start_cb cb, void *arg)
{
    if (e == NULL || def_name == NULL || id_out == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return SAGA_ECLOSED;
    if (!e->started)
        return saga__err(e, SAGA_EBUSY, "call saga_engine_start() first");
    if (idem_key != NULL && !valid_key(idem_key))
        return saga__err(e, SAGA_EINVAL,
                         "idempotency key must be 1..%d bytes", SAGA_NAME_MAX);
    int rc = check_data(e, data, len);
    if (rc != SAGA_OK)
        return rc;
    const saga_def *def = saga__def_find(e, def_name, 0);
    if (def == NULL)
        return saga__err(e, SAGA_ENOTFOUND, "no definition named '%.64s'",
                         def_name);
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    if (idem_key != NULL) {
        /* Active sagas are indexed in memory (their key may not be committed
         * yet); ended ones are found in the store until purged. */
        saga__inst *old = saga__idem_find(e, idem_key);
        char found[SAGA_ID_SIZE];
        if (old != NULL) {
            memcpy(found, old->id, SAGA_ID_SIZE);
            rc = SAGA_OK;
        } else {
            rc = stored_key(e, idem_key, found);
            if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
                return rc;
        }
        if (rc == SAGA_OK) {
            memcpy(id_out, found, SAGA_ID_SIZE);
            return started_effect(e, found, 1, cb, arg);
        }
    }
    saga__inst *in = saga__inst_new(def, idem_key, data, len, saga__now(e));
    if (in == NULL)
        return SAGA_ENOMEM;
    do
        new_id(e, in->id);
    while (saga__inst_find(e, in->id) != NULL);
    if (saga__inst_add(e, in) != SAGA_OK) {
        saga__inst_free(NULL, in);
        return SAGA_ENOMEM;
    }
    if ((idem_key && saga__stage_idem(e, idem_key, in->id) != SAGA_OK) ||
        saga__journal(e, in, SAGA_JOURNAL_STARTED, NULL) != SAGA_OK ||
        started_effect(e, in->id, 0, cb, arg) != SAGA_OK) {
        /* Nothing about this saga can be committed half-way: drop it from
         * the batch bookkeeping by failing the whole start. */
        saga__inst_free(e, in);
        return SAGA_ENOMEM;
    }
    begin_attempt(e, in);
    saga__stage(e, in, SAGA_PUT_INSERT | SAGA_PUT_DATA);
    e->stats.started++;
    memcpy(id_out, in->id, SAGA_ID_SIZE);
    return SAGA_OK;
}

/* Whether @p id names a saga the store knows (for ESTALE vs ENOTFOUND). */
static int rec_exists_cb(const saga_record *r, void *arg)
{
    *(saga_state *)arg = r->state;
    return 0;
}

static int stored_state(saga_engine *e, const char *id, saga_state *st)
{
    return e->store->saga_get(e->store, id, rec_exists_cb, st);
}

int saga_step_complete(saga_engine *e, const saga_step_ref *ref,
                       saga_outcome outcome, const void *out, size_t out_len,
                       const char *error)
{
    if (e == NULL || ref == NULL)
        return SAGA_EINVAL;
    if (outcome != SAGA_OUTCOME_OK && outcome != SAGA_OUTCOME_FAIL &&
        outcome != SAGA_OUTCOME_RETRY)
        return saga__err(e, SAGA_EINVAL, "unknown outcome %d", (int)outcome);
    if (out == NULL && out_len > 0)
        return saga__err(e, SAGA_EINVAL, "output is NULL but out_len is %zu",
                         out_len);
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (strnlen(ref->saga_id, SAGA_ID_SIZE) != SAGA_ID_LEN)
        return saga__err(e, SAGA_EINVAL, "malformed saga id");
    saga__inst *in = saga__inst_find(e, ref->saga_id);
    if (in == NULL) {
        saga_state st;
        if (stored_state(e, ref->saga_id, &st) != SAGA_OK)
            return saga__err(e, SAGA_ENOTFOUND, "no saga %s", ref->saga_id);
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, ref->saga_id, (int)ref->step,
                  "ignored a completion: the saga has ended (%s)",
                  saga_state_name(st));
        return SAGA_ESTALE;
    }
    if (!IS_ACTIVE(in->state) || (uint32_t)in->step != ref->step ||
        in->attempt != ref->attempt ||
        (uint32_t)backward(in) != (ref->compensating ? 1u : 0u) ||
        !(in->flags & SAGA_REC_INFLIGHT)) {
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, in->id, (int)ref->step,
                  "ignored a stale completion (attempt %u%s); now at step %d "
                  "attempt %u, %s", ref->attempt,
                  ref->compensating ? ", compensation" : "", in->step,
                  in->attempt, saga_state_name(in->state));
        return SAGA_ESTALE;
    }
    return saga__complete(e, in, outcome, out, out_len, error);
}

int saga__complete(saga_engine *e, saga__inst *in, saga_outcome outcome,
                   const void *out, size_t out_len, const char *error)
{
    unsigned int put = 0;
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    if (outcome == SAGA_OUTCOME_OK && out != NULL && out_len > 0 &&
        !backward(in)) {
        if (!saga__data_is_map(out, out_len))
            return saga__err(e, SAGA_EINVAL,
                             "step output must be a msgpack map");
        void *merged = NULL;
        size_t mlen = 0;
        int rc = saga__data_merge(in->data, in->data_len, out, out_len,
                                  &merged, &mlen);
        if (rc != SAGA_OK)
            return saga__err(e, rc, "merging step output failed");
        if (mlen > e->opts.max_data_size) {
            saga_free(merged);
            return saga__err(e, SAGA_EINVAL,
                             "saga data would grow to %zu bytes, over the "
                             "limit of %zu", mlen, e->opts.max_data_size);
        }
        saga__graveyard(e, in->data);
        in->data = merged;
        in->data_len = mlen;
        put = SAGA_PUT_DATA;
    }
    if (outcome != SAGA_OUTCOME_OK && error != NULL)
        set_error(in, error);
    apply_outcome(e, in, outcome, 0, error);
    saga__stage(e, in, put);
    return SAGA_OK;
}

int saga_cancel(saga_engine *e, const char *saga_id, const char *reason)
{
    if (e == NULL || saga_id == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in == NULL) {
        saga_state st;
        if (stored_state(e, saga_id, &st) == SAGA_OK)
            return saga__err(e, SAGA_EBUSY, "saga %s is %s", saga_id,
                             saga_state_name(st));
        return saga__err(e, SAGA_ENOTFOUND, "no saga %.40s", saga_id);
    }
    if (!can_compensate(in))
        return saga__err(e, SAGA_EBUSY, "saga %s is %s%s", saga_id,
                         saga_state_name(in->state),
                         in->state == SAGA_STATE_RUNNING ? " past its pivot"
                                                         : "");
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    /* A step in flight may have run, unless its action was never called
     * (its attempt is not committed yet). */
    if ((in->flags & SAGA_REC_INFLIGHT) && in->invoked)
        in->flags |= SAGA_REC_MAYBE;
    in->updated_ms = saga__now(e);
    char why[300];
    snprintf(why, sizeof why, "cancelled: %s", reason ? reason : "by request");
    start_compensation(e, in, why);
    saga__stage(e, in, 0);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Loading sagas from the store (recovery, operator retry)                  */

static int count_journal_cb(const saga_journal_entry *j, void *arg)
{
    uint32_t *max = arg;
    if (j->seq > *max)
        *max = j->seq;
    return 0;
}

typedef struct load_ctx {
    saga_engine *e;
    saga__inst **list;
    size_t n, cap;
    size_t skipped;
    int rc;
} load_ctx;

static int load_cb(const saga_record *r, void *arg)
{
    load_ctx *c = arg;
    saga_engine *e = c->e;
    const saga_def *def = saga__def_find(e, r->def_name, r->def_version);
    if (def == NULL || r->step < 0 || (size_t)r->step >= def->nsteps) {
        c->skipped++;
        saga__log(e, SAGA_LOG_ERROR, r->id, r->step,
                  "cannot resume: definition '%s' v%u is not registered "
                  "(or has no step %d); left as it is", r->def_name,
                  r->def_version, r->step);
        return 0;
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        saga__inst **nl = saga_realloc(c->list, nc * sizeof *nl);
        if (nl == NULL) {
            c->rc = SAGA_ENOMEM;
            return 1;
        }
        c->list = nl;
        c->cap = nc;
    }
    saga__inst *in = saga__inst_from_record(def, r);
    if (in == NULL) {
        c->rc = SAGA_ENOMEM;
        return 1;
    }
    c->list[c->n++] = in;
    return 0;
}

/* Finish loading: journal position, index. Frees what it cannot add. */
static int adopt(saga_engine *e, saga__inst *in)
{
    int rc = e->store->journal_scan(e->store, in->id, count_journal_cb,
                                    &in->jseq);
    if (rc == SAGA_OK)
        rc = saga__inst_add(e, in);
    if (rc != SAGA_OK)
        saga__inst_free(NULL, in);
    return rc;
}

static int scan_active(saga_engine *e, saga_record_cb cb, void *arg)
{
    return e->store->saga_scan(e->store, SAGA_STATE_MASK_ACTIVE, cb, arg);
}

int saga__recover(saga_engine *e) { return saga__recover_from(e, scan_active); }

int saga__recover_from(saga_engine *e, saga__scan_fn scan)
{
    load_ctx c = {e, NULL, 0, 0, 0, SAGA_OK};
    int rc = scan(e, load_cb, &c);
    if (rc == SAGA_OK)
        rc = c.rc;
    size_t resumed = 0;
    for (size_t i = 0; i < c.n; i++) {
        saga__inst *in = c.list[i];
        if (rc != SAGA_OK || saga__inst_find(e, in->id) != NULL) {
            saga__inst_free(NULL, in);
            continue;
        }
        rc = adopt(e, in);
        if (rc != SAGA_OK)
            continue;
        resumed++;
        if ((in->flags & SAGA_REC_INFLIGHT) && step_of(in)->opts.service) {
            /* A remote attempt: its command is in the outbox (or was
             * published); the reply, or the durable timeout, moves on. */
            saga__arm(e, in);
        } else if (in->flags & SAGA_REC_INFLIGHT) {
            /* The attempt's outcome never became durable: run it again
             * (actions are at-least-once), after the next commit point. */
            saga__effect f;
            memset(&f, 0, sizeof f);
            f.kind = EFF_INVOKE;
            f.inst = in;
            f.step = in->step;
            f.attempt = in->attempt;
            f.backward = backward(in) ? 1u : 0u;
            rc = saga__push_effect(e, &f);
        } else {
            saga__arm(e, in);
        }
    }
    saga_free(c.list);
    if (rc != SAGA_OK)
        return saga__err(e, rc == SAGA_ENOMEM || rc == SAGA_EFENCED
                                ? rc
                                : SAGA_ESTORE,
                         "recovery failed: %s", e->store->errmsg(e->store));
    if (resumed || c.skipped)
        saga__log(e, SAGA_LOG_INFO, NULL, -1,
                  "recovery: resumed %zu sagas, skipped %zu", resumed,
                  c.skipped);
    return SAGA_OK;
}

static int load_one(saga_engine *e, const char *id, saga__inst **out)
{
    load_ctx c = {e, NULL, 0, 0, 0, SAGA_OK};
    int rc = e->store->saga_get(e->store, id, load_cb, &c);
    if (rc == SAGA_OK && c.rc != SAGA_OK)
        rc = c.rc;
    if (rc == SAGA_OK && c.n == 0)
        rc = saga__err(e, SAGA_EINVAL, "saga %s: its definition is not "
                       "registered", id);
    if (rc == SAGA_OK)
        rc = adopt(e, c.list[0]);
    else if (c.n)
        saga__inst_free(NULL, c.list[0]);
    if (rc == SAGA_OK)
        *out = c.list[0];
    saga_free(c.list);
    return rc;
}

int saga_retry(saga_engine *e, const char *saga_id)
{
    if (e == NULL || saga_id == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in == NULL) {
        saga_state st;
        int rc = stored_state(e, saga_id, &st);
        if (rc == SAGA_ENOTFOUND)
            return saga__err(e, rc, "no saga %.40s", saga_id);
        if (rc != SAGA_OK)
            return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
        if (st != SAGA_STATE_FAILED)
            return saga__err(e, SAGA_EBUSY, "saga %s is %s, not FAILED",
                             saga_id, saga_state_name(st));
        rc = load_one(e, saga_id, &in);
        if (rc != SAGA_OK)
            return rc;
    } else if (in->state != SAGA_STATE_FAILED) {
        return saga__err(e, SAGA_EBUSY, "saga %s is %s, not FAILED", saga_id,
                         saga_state_name(in->state));
    }
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    in->state = backward(in) ? SAGA_STATE_COMPENSATING : SAGA_STATE_RUNNING;
    in->attempt = 1;
    in->updated_ms = saga__now(e);
    saga__journal(e, in, SAGA_JOURNAL_OPERATOR_RETRY, NULL);
    begin_attempt(e, in);
    saga__stage(e, in, 0);
    return SAGA_OK;
}

int saga_on_done(saga_engine *e, const char *saga_id, saga_done_cb cb,
                 void *arg)
{
    if (e == NULL || saga_id == NULL || cb == NULL)
        return SAGA_EINVAL;
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in != NULL && IS_ACTIVE(in->state)) {
        saga__donecb *d = saga_malloc(sizeof *d);
        if (d == NULL)
            return SAGA_ENOMEM;
        d->cb = cb;
        d->arg = arg;
        d->next = in->done_cbs;
        in->done_cbs = d;
        return SAGA_OK;
    }
    saga_state st;
    if (in != NULL)
        st = in->state;
    else if (stored_state(e, saga_id, &st) != SAGA_OK)
        return saga__err(e, SAGA_ENOTFOUND, "no saga %.40s", saga_id);
    if (st == SAGA_STATE_RUNNING || st == SAGA_STATE_COMPENSATING)
        return saga__err(e, SAGA_EBUSY, "saga %s is not loaded (its "
                         "definition is missing)", saga_id);
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_DONE_CB;
    snprintf(f.id, sizeof f.id, "%s", saga_id);
    f.state = st;
    f.done_cb = cb;
    f.arg = arg;
    return saga__push_effect(e, &f);
}

/* ------------------------------------------------------------------------ */
/* Operator actions (admin.c does the lookups, the checks and the replies;  */
/* these are the transitions, kept here beside the state machine).          */

int saga__op_find(saga_engine *e, const char *id, saga__inst **out,
                  saga_state *st)
{
    *out = saga__inst_find(e, id);
    if (*out != NULL) {
        *st = (*out)->state;
        return SAGA_OK;
    }
    int rc = stored_state(e, id, st);
    if (rc == SAGA_ENOTFOUND)
        return saga__err(e, rc, "no saga %.40s", id);
    if (rc != SAGA_OK)
        return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
    if (*st != SAGA_STATE_FAILED)
        return SAGA_OK; /* ended (or owned elsewhere): nothing to load */
    return load_one(e, id, out);
}

void saga__op_retry(saga_engine *e, saga__inst *in, const char *why)
{
    in->state = backward(in) ? SAGA_STATE_COMPENSATING : SAGA_STATE_RUNNING;
    in->attempt = 1;
    in->updated_ms = saga__now(e);
    saga__journal(e, in, SAGA_JOURNAL_OPERATOR_RETRY, why);
    begin_attempt(e, in);
    saga__stage(e, in, 0);
}

int saga__op_can_compensate(const saga__inst *in)
{
    return in->state == SAGA_STATE_FAILED || can_compensate(in);
}

void saga__op_compensate(saga_engine *e, saga__inst *in, const char *why)
{
    /* A failed compensation is tried again; a step in flight, or one that
     * may have applied, is undone too. */
    int include = backward(in) || (in->flags & SAGA_REC_MAYBE) ||
                  ((in->flags & SAGA_REC_INFLIGHT) && in->invoked);
    int32_t from = include ? in->step : in->step - 1;
    in->updated_ms = saga__now(e);
    saga__journal(e, in, SAGA_JOURNAL_OPERATOR_COMPENSATE, why);
    in->state = SAGA_STATE_COMPENSATING;
    in->flags |= SAGA_REC_BACKWARD;
    in->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
    in->due_ms = 0;
    set_error(in, why);
    saga__journal(e, in, SAGA_JOURNAL_COMPENSATING, why);
    compensate_from(e, in, from);
    saga__stage(e, in, 0);
}

void saga__op_resolve(saga_engine *e, saga__inst *in, saga_state as,
                      const char *why)
{
    in->updated_ms = saga__now(e);
    saga__journal(e, in, SAGA_JOURNAL_OPERATOR_RESOLVE, why);
    end_saga(e, in, as,
             as == SAGA_STATE_COMPLETED ? SAGA_JOURNAL_COMPLETED
                                        : SAGA_JOURNAL_COMPENSATED,
             NULL);
    saga__stage(e, in, 0);
}

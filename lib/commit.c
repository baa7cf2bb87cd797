/*
 * commit.c — the engine over its two batches (batch.h: the open one and
 * the one taken for commit). Staging into the open batch with what the
 * engine adds to it (a commit scheduled, the saga's timer stopped, the
 * clock, metrics); the operations gcommit.c calls to take, write and
 * release the batches; and saga_engine_flush(). Releasing a committed batch runs its
 * effects in staging order (actions invoked, start and done callbacks,
 * deliveries acked), hands its outbox messages to the relay, then frees
 * the sagas that ended and arms the others' timers.
 */
#include <string.h>

#include "engine_int.h"

/* Commit rounds per check callback: sync completions can chain batches;
 * yield to I/O after this many. */
#define MAX_ROUNDS 8
#define MAX_STORE_RETRY_MS 5000u

/* ------------------------------------------------------------------------ */
/* Staging                                                                  */

static void schedule_flush(saga_engine *e)
{
    if (!e->closing)
        saga__gc_schedule(&e->gc);
}

void saga__stage(saga_engine *e, saga__inst *in, unsigned int put_flags)
{
    saga__batch_stage(&e->batch, in, put_flags);
    /* A saga with an uncommitted transition has no running timer: its
     * timers restart from what the commit made durable. */
    saga__heap_remove(e, in);
    e->stats.transitions++;
    schedule_flush(e);
}

int saga__journal(saga_engine *e, saga__inst *in, saga_journal_kind ev,
                  const char *error)
{
    const saga_journal_entry *j = saga__batch_journal(&e->batch, in, ev, error,
                                                      saga__now(e));
    if (j == NULL)
        return SAGA_ENOMEM;
    saga__metrics_journal(e, in, j);
    return SAGA_OK;
}

int saga__reserve(saga_engine *e)
{
    if (saga__batch_reserve(&e->batch) != SAGA_OK ||
        /* Saga data replaced under a running action goes there. */
        (e->invoking &&
         saga__array_grow(&e->graveyard, &e->cgrave, e->ngrave + 1,
                          sizeof *e->graveyard, 64) != SAGA_OK))
        return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__push_effect(saga_engine *e, const saga__effect *eff)
{
    if (saga__batch_effect(&e->batch, eff) != SAGA_OK)
        return SAGA_ENOMEM;
    schedule_flush(e);
    return SAGA_OK;
}

int saga__stage_idem(saga_engine *e, const char *key, const char *saga_id)
{
    return saga__batch_idem(&e->batch, key, saga_id, saga__now(e));
}

void saga__stage_outmsg(saga_engine *e, saga__outmsg *m)
{
    saga__batch_outmsg(&e->batch, m);
    schedule_flush(e);
}

/* The relay published a message: delete its outbox row with the next
 * batch (losing the delete only means publishing it again). */
void saga__stage_outbox_done(saga_engine *e, const char *msg_id)
{
    if (saga__batch_outbox_done(&e->batch, msg_id) == SAGA_OK)
        schedule_flush(e);
}

void saga__pin(saga_engine *e, int64_t updated_ms)
{
    saga__batch_pin(&e->batch, updated_ms);
    /* The pin lasts until this batch is released, at the end of the turn. */
    schedule_flush(e);
}

void saga__graveyard(saga_engine *e, void *p)
{
    if (!e->invoking) {
        saga_free(p);
        return;
    }
    if (saga__array_grow(&e->graveyard, &e->cgrave, e->ngrave + 1,
                         sizeof *e->graveyard, 64) != SAGA_OK) {
        /* Leaking beats a use-after-free in the running action. */
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "out of memory: leaked %p", p);
        return;
    }
    e->graveyard[e->ngrave++] = p;
}

/* ------------------------------------------------------------------------ */
/* Release                                                                  */

static int is_end_state(saga_state s)
{
    return s == SAGA_STATE_COMPLETED || s == SAGA_STATE_COMPENSATED ||
           s == SAGA_STATE_FAILED;
}

static void run_effects(saga_engine *e, saga__batch *b)
{
    e->invoking = 1;
    for (size_t i = 0; i < b->neffects; i++) {
        saga__effect *f = &b->effects[i];
        switch (f->kind) {
        case EFF_INVOKE:
            /* A closing engine runs no more actions: they are in flight
             * in the store and run again after a restart. */
            if (!e->closing && saga__own_may_act(e))
                saga__invoke(e, f->inst, f);
            break;
        case EFF_STARTED:
            f->start_cb(e, SAGA_OK, f->id, f->existed, f->arg);
            break;
        case EFF_DONE_CB:
            f->done_cb(e, f->id, f->state, f->arg);
            break;
        case EFF_ACK:
            if (e->transport != NULL)
                e->transport->ack(e->transport, f->delivery);
            break;
        case EFF_DONE: {
            saga__inst *in = f->inst;
            if (e->opts.on_done)
                e->opts.on_done(e, in->id, in->state, e->opts.on_done_arg);
            saga__donecb *d = in->done_cbs;
            in->done_cbs = NULL;
            while (d != NULL) {
                saga__donecb *nx = d->next;
                d->cb(e, in->id, in->state, d->arg);
                saga_free(d);
                d = nx;
            }
            break;
        }
        }
    }
    e->invoking = 0;
    for (size_t i = 0; i < e->ngrave; i++)
        saga_free(e->graveyard[i]);
    e->ngrave = 0;
}

/* gcommit: the taken batch is durable. Outbox messages go to the relay,
 * effects run in staging order (they may stage transitions into the open
 * batch), then ended sagas leave memory and the others get their timers.
 * No allocation here, so no saga can lose its timer to an out-of-memory. */
static void committed(void *owner)
{
    saga_engine *e = owner;
    saga__batch *b = &e->commit;
    if (e->commit_writes) {
        e->stats.commits++;
        saga__metrics_commit(e, b->njournal, e->gc.latency_us, 1);
    }
    while (b->out_head != NULL) {
        saga__outmsg *m = b->out_head;
        b->out_head = m->next;
        if (e->relay != NULL)
            saga__relay_push(e->relay, m);
        else
            saga__outmsg_free(m);
    }
    b->out_tail = &b->out_head;
    /* b->pin_ms stays until the reset: purges spare it meanwhile. */
    run_effects(e, b);
    for (saga__inst *in = b->head, *nx; in; in = nx) {
        nx = in->commit_next;
        in->commit_next = NULL;
        in->in_commit = 0;
        in->commit_flags = 0;
        if (in->in_batch)
            continue; /* staged again: handled after its next commit */
        if (is_end_state(in->state))
            saga__inst_free(e, in);
        else
            saga__arm(e, in);
    }
    b->head = NULL;
    b->tail = &b->head;
    saga__batch_reset(b);
    if (e->relay != NULL)
        saga__relay_kick(e->relay);
    if (e->hk_wanted && !e->closing) {
        /* A purge put off while the batch was in flight. */
        e->hk_wanted = 0;
        saga_engine_housekeep(e);
    }
}

static void failed(void *owner, int rc)
{
    saga_engine *e = owner;
    e->stats.commit_failures++;
    if (e->commit_writes)
        saga__metrics_commit(e, e->commit.njournal, e->gc.latency_us, 0);
    const char *detail = rc == SAGA_ENOMEM ? "out of memory"
                                           : e->store->errmsg(e->store);
    saga__log(e, SAGA_LOG_ERROR, NULL, -1,
              "commit of %zu sagas failed (%s): %s; retrying in %u ms",
              e->commit.ninst, saga_err_name(rc), detail, e->gc.backoff_ms);
    saga__err(e, SAGA_ESTORE, "commit failed: %s", detail);
    if (!e->commit_stuck &&
        saga__batch_put_back(&e->commit, &e->batch) != SAGA_OK) {
        /* Kept aside and put back before the next try. */
        e->commit_stuck = 1;
        saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                  "out of memory putting a failed batch back: kept aside");
    } else if (!e->commit_stuck && saga__own_resolve(e, rc)) {
        /* A shared store refused some sagas (fenced, or a key another
         * engine took first): they left the batch; write the rest at
         * once rather than after the backoff. */
        e->gc.backoff_ms = 1;
    }
}

static void drained(void *owner) { saga__engine_drained(owner); }

/* Anything to commit: the open batch, or a failed one kept aside. */
static int batch_open(const saga_engine *e)
{
    return e->commit_stuck || saga__batch_pending(&e->batch);
}

/* While the first lease, or the store's answer about a refused batch, is
 * in flight (own.c), commits wait: what is staged stays in memory. */
static int op_pending(void *owner)
{
    return !saga__own_hold(owner) && batch_open(owner);
}

/* Take the open batch for commit (e->commit). @return 1 if it has writes,
 * 0 if only effects, SAGA_ENOMEM (a failed batch could not be put back). */
static int op_take(void *owner)
{
    saga_engine *e = owner;
    if (e->commit_stuck) {
        if (saga__batch_put_back(&e->commit, &e->batch) != SAGA_OK)
            return SAGA_ENOMEM;
        e->commit_stuck = 0;
    }
    e->commit_writes = saga__batch_take(&e->commit, &e->batch);
    return e->commit_writes;
}

static int op_write(void *owner)
{
    saga_engine *e = owner;
    return saga__batch_write(&e->commit, &e->snap, e->store);
}

static int op_arrays(void *owner, saga_batch_writes *w)
{
    saga_engine *e = owner;
    return saga__batch_arrays(&e->commit, &e->snap, w);
}

static const saga__gc_ops engine_gc_ops = {
    .pending = op_pending,
    .detach = op_take,
    .write = op_write,
    .writes = op_arrays,
    .committed = committed,
    .failed = failed,
    .drained = drained,
};

void saga__commit_init(saga_engine *e)
{
    saga__batch_init(&e->batch);
    saga__batch_init(&e->commit);
    saga__gc_init(&e->gc, e->loop, e->store, &engine_gc_ops, e,
                  e->opts.store_retry_ms, MAX_STORE_RETRY_MS, MAX_ROUNDS);
}

void saga__commit_fini(saga_engine *e)
{
    saga__batch_free(&e->batch);
    saga__batch_free(&e->commit);
    saga__snapshot_free(&e->snap);
}

int saga_engine_flush(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    if (e->gc.busy)
        /* Called from an action or callback that a commit released: the
         * commit in progress writes what it staged as soon as it returns. */
        return saga__err(e, SAGA_EBUSY,
                         "saga_engine_flush() inside a callback of the engine: "
                         "what it staged is committed when it returns");
    saga__gc_flush(&e->gc);
    /* With an asynchronous store, a batch in flight is on its way (what was
     * staged meanwhile follows it). */
    int rc = !e->gc.inflight && batch_open(e) ? SAGA_ESTORE : SAGA_OK;
    if (e->free_deferred && e->owns_loop && !e->running)
        /* A callback it released closed or freed the engine: finish. */
        saga_engine_free(e);
    return rc;
}

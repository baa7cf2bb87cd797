/*
 * batch.c — group commit: staging transitions into the open batch, writing
 * the batch in one store transaction, and releasing what depends on it.
 *
 * Every transition staged during a loop turn lands in one batch; a uv_check
 * handle commits the batch at the end of the turn (a uv_idle handle keeps
 * the poll phase from blocking meanwhile). Only after the commit are the
 * batch's effects released: actions invoked, start and completion callbacks
 * called, deliveries acked, outbox messages handed to the relay, timers
 * armed. A failed commit is rolled back and the whole batch is written again
 * later; nothing was released.
 */
#include <string.h>

#include "engine_int.h"

/* Commit rounds per check callback: sync completions can chain batches;
 * yield to I/O after this many. */
#define MAX_ROUNDS 8
#define MAX_STORE_RETRY_MS 5000u

/* ------------------------------------------------------------------------ */
/* Staging                                                                  */

static void check_cb(uv_check_t *h);
static void idle_cb(uv_idle_t *h) { (void)h; }

static void schedule_flush(saga_engine *e)
{
    /* While a failed commit waits for its retry timer, new transitions
     * join the batch but do not bring the retry forward. */
    if (e->closing || uv_is_active((uv_handle_t *)&e->check) ||
        uv_is_active((uv_handle_t *)&e->retry_timer))
        return;
    uv_idle_start(&e->idle, idle_cb);
    uv_check_start(&e->check, check_cb);
}

void saga__stage(saga_engine *e, saga__inst *in, unsigned int put_flags)
{
    in->put_flags |= put_flags | 0x100u; /* 0x100: dirty even if no flags */
    if (!in->in_batch) {
        in->in_batch = 1;
        in->batch_next = NULL;
        *e->batch.tail = in;
        e->batch.tail = &in->batch_next;
        e->batch.ninst++;
    }
    /* A saga with an uncommitted transition has no running timer: its
     * timers restart from what the commit made durable. */
    saga__heap_remove(e, in);
    e->stats.transitions++;
    schedule_flush(e);
}

#define GROW(arr, n, cap)                                                      \
    ((n) < (cap) ? SAGA_OK                                                     \
                 : grow_array((void **)&(arr), &(cap), sizeof *(arr)))

static int grow_array(void **arr, size_t *cap, size_t elem)
{
    size_t nc = *cap ? *cap * 2 : 64;
    void *na = saga_realloc(*arr, nc * elem);
    if (na == NULL)
        return SAGA_ENOMEM;
    *arr = na;
    *cap = nc;
    return SAGA_OK;
}

int saga__journal(saga_engine *e, saga__inst *in, saga_event ev,
                  const char *error)
{
    saga__batch *b = &e->batch;
    if (GROW(b->journal, b->njournal, b->cjournal) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__jentry *j = &b->journal[b->njournal];
    memset(j, 0, sizeof *j);
    /* Out of memory for the text: the entry is kept without it. */
    j->error = saga__strdup(error);
    memcpy(j->saga_id, in->id, SAGA_ID_SIZE);
    int saga_level = ev == SAGA_EV_STARTED || ev == SAGA_EV_COMPLETED ||
                     ev == SAGA_EV_COMPENSATING || ev == SAGA_EV_COMPENSATED ||
                     ev == SAGA_EV_FAILED || ev == SAGA_EV_OPERATOR_RETRY ||
                     ev == SAGA_EV_OPERATOR_COMPENSATE ||
                     ev == SAGA_EV_OPERATOR_RESOLVE;
    j->e.seq = ++in->jseq;
    j->e.event = ev;
    j->e.step = saga_level ? -1 : in->step;
    j->e.attempt = saga_level ? 0 : in->attempt;
    j->e.started_ms = saga_level ? 0 : in->started_ms;
    j->e.at_ms = saga__now(e);
    saga__metrics_journal(e, in, &j->e);
    b->njournal++;
    return SAGA_OK;
}

/* Room for one transition: the most journal entries one writes (a step
 * outcome, COMPENSATING, a compensation outcome, the end) and effects. */
#define RESERVE_JOURNAL 8
#define RESERVE_EFFECTS 4

static int reserve(void **arr, size_t n, size_t *cap, size_t elem,
                   size_t room)
{
    while (n + room > *cap)
        if (grow_array(arr, cap, elem) != SAGA_OK)
            return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__reserve(saga_engine *e)
{
    saga__batch *b = &e->batch;
    if (reserve((void **)&b->journal, b->njournal, &b->cjournal,
                sizeof *b->journal, RESERVE_JOURNAL) != SAGA_OK ||
        reserve((void **)&b->effects, b->neffects, &b->ceffects,
                sizeof *b->effects, RESERVE_EFFECTS) != SAGA_OK ||
        reserve((void **)&b->idem, b->nidem, &b->cidem, sizeof *b->idem,
                1) != SAGA_OK ||
        /* Saga data replaced under a running action goes there. */
        (e->invoking && reserve((void **)&e->graveyard, e->ngrave,
                                &e->cgrave, sizeof *e->graveyard,
                                1) != SAGA_OK))
        return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__push_effect(saga_engine *e, const saga__effect *eff)
{
    saga__batch *b = &e->batch;
    if (GROW(b->effects, b->neffects, b->ceffects) != SAGA_OK)
        return SAGA_ENOMEM;
    b->effects[b->neffects++] = *eff;
    schedule_flush(e);
    return SAGA_OK;
}

int saga__stage_idem(saga_engine *e, const char *key, const char *saga_id)
{
    saga__batch *b = &e->batch;
    if (GROW(b->idem, b->nidem, b->cidem) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__idem *d = &b->idem[b->nidem];
    d->key = saga__strdup(key);
    if (d->key == NULL)
        return SAGA_ENOMEM;
    memcpy(d->saga_id, saga_id, SAGA_ID_SIZE);
    d->created_ms = saga__now(e);
    b->nidem++;
    return SAGA_OK;
}

void saga__stage_outmsg(saga_engine *e, saga__outmsg *m)
{
    m->next = NULL;
    *e->batch.out_tail = m;
    e->batch.out_tail = &m->next;
    schedule_flush(e);
}

/* The relay published a message: delete its outbox row with the next
 * batch (losing the delete only means publishing it again). */
void saga__stage_outbox_done(saga_engine *e, const char *msg_id)
{
    saga__batch *b = &e->batch;
    char *id = saga__strdup(msg_id);
    if (id == NULL || GROW(b->done_ids, b->ndone, b->cdone) != SAGA_OK) {
        saga_free(id);
        return;
    }
    b->done_ids[b->ndone++] = id;
    schedule_flush(e);
}

void saga__pin(saga_engine *e, int64_t updated_ms)
{
    if (updated_ms <= 0)
        updated_ms = 1;
    if (e->batch.pin_ms == 0 || updated_ms < e->batch.pin_ms)
        e->batch.pin_ms = updated_ms;
    /* The pin lasts until this batch is released, at the end of the turn. */
    schedule_flush(e);
}

void saga__graveyard(saga_engine *e, void *p)
{
    if (!e->invoking) {
        saga_free(p);
        return;
    }
    if (GROW(e->graveyard, e->ngrave, e->cgrave) != SAGA_OK) {
        /* Leaking beats a use-after-free in the running action. */
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "out of memory: leaked %p", p);
        return;
    }
    e->graveyard[e->ngrave++] = p;
}

void saga__record_from_inst(const saga__inst *in, saga_record *r)
{
    memset(r, 0, sizeof *r);
    r->id = in->id;
    r->def_name = in->def->name;
    r->def_version = in->def->version;
    r->state = in->state;
    r->step = in->step;
    r->attempt = in->attempt;
    r->flags = in->flags;
    r->created_ms = in->created_ms;
    r->updated_ms = in->updated_ms;
    r->due_ms = in->due_ms;
    r->deadline_ms = in->deadline_ms;
    r->idem_key = in->idem_key;
    r->error = in->error;
    r->data = in->data;
    r->data_len = in->data_len;
}

/* ------------------------------------------------------------------------ */
/* Commit                                                                   */

/* A store that writes a batch in one go (version 3) gets it as arrays. */
static int write_batch_whole(saga_engine *e, saga__batch *b)
{
    saga_store *s = e->store;
    size_t nout = 0;
    for (saga__outmsg *m = b->out_head; m; m = m->next)
        nout++;
    saga_record *recs = saga_malloc((b->ninst + 1) * sizeof *recs);
    unsigned int *flags = saga_malloc((b->ninst + 1) * sizeof *flags);
    saga_idem_entry *idem = saga_malloc((b->nidem + 1) * sizeof *idem);
    saga_message *msgs = saga_malloc((nout + 1) * sizeof *msgs);
    saga_journal_entry *jes = saga_malloc((b->njournal + 1) * sizeof *jes);
    int rc = SAGA_ENOMEM;
    if (recs && flags && idem && msgs && jes) {
        size_t i = 0;
        for (saga__inst *in = b->head; in; in = in->batch_next, i++) {
            saga__record_from_inst(in, &recs[i]);
            flags[i] = in->put_flags & (SAGA_PUT_INSERT | SAGA_PUT_DATA);
        }
        for (i = 0; i < b->nidem; i++) {
            idem[i].key = b->idem[i].key;
            idem[i].saga_id = b->idem[i].saga_id;
            idem[i].created_ms = b->idem[i].created_ms;
        }
        i = 0;
        for (saga__outmsg *m = b->out_head; m; m = m->next, i++) {
            saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                                m->created_ms};
            msgs[i] = msg;
        }
        for (i = 0; i < b->njournal; i++) {
            saga__jentry *j = &b->journal[i];
            j->e.saga_id = j->saga_id;
            j->e.error = j->error;
            jes[i] = j->e;
        }
        saga_batch_writes w = {recs, flags, b->ninst, idem, b->nidem,
                               msgs, nout, (const char *const *)b->done_ids,
                               b->ndone, jes, b->njournal};
        rc = s->write_batch(s, &w);
    }
    saga_free(recs);
    saga_free(flags);
    saga_free(idem);
    saga_free(msgs);
    saga_free(jes);
    return rc;
}

static int write_batch(saga_engine *e, saga__batch *b)
{
    saga_store *s = e->store;
    if (s->version >= 3 && s->write_batch != NULL)
        return write_batch_whole(e, b);
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    for (saga__inst *in = b->head; in && rc == SAGA_OK; in = in->batch_next) {
        saga_record r;
        saga__record_from_inst(in, &r);
        rc = s->saga_put(s, &r, in->put_flags & (SAGA_PUT_INSERT | SAGA_PUT_DATA));
    }
    for (size_t i = 0; i < b->nidem && rc == SAGA_OK; i++)
        rc = s->idem_put(s, b->idem[i].key, b->idem[i].saga_id,
                         b->idem[i].created_ms);
    for (saga__outmsg *m = b->out_head; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                            m->created_ms};
        rc = s->outbox_put(s, &msg);
    }
    for (size_t i = 0; i < b->ndone && rc == SAGA_OK; i++)
        rc = s->outbox_done(s, b->done_ids[i]);
    for (size_t i = 0; i < b->njournal && rc == SAGA_OK; i++) {
        saga__jentry *j = &b->journal[i];
        j->e.saga_id = j->saga_id;
        j->e.error = j->error;
        rc = s->journal_append(s, &j->e);
    }
    if (rc == SAGA_OK)
        return s->commit(s);
    s->rollback(s);
    return rc;
}

static void batch_reset(saga__batch *b)
{
    for (size_t i = 0; i < b->njournal; i++)
        saga_free(b->journal[i].error);
    for (size_t i = 0; i < b->nidem; i++)
        saga_free(b->idem[i].key);
    for (size_t i = 0; i < b->ndone; i++)
        saga_free(b->done_ids[i]);
    while (b->out_head != NULL) {
        saga__outmsg *m = b->out_head;
        b->out_head = m->next;
        saga__outmsg_free(m);
    }
    b->out_tail = &b->out_head;
    b->head = NULL;
    b->tail = &b->head;
    b->ninst = b->njournal = b->nidem = b->neffects = b->ndone = 0;
}

void saga__batch_free(saga__batch *b)
{
    batch_reset(b);
    saga_free(b->journal);
    saga_free(b->idem);
    saga_free(b->effects);
    saga_free(b->done_ids);
    memset(b, 0, sizeof *b);
    b->tail = &b->head;
    b->out_tail = &b->out_head;
}

static int batch_writes(const saga__batch *b)
{
    return b->head != NULL || b->njournal || b->nidem || b->ndone ||
           b->out_head != NULL;
}

int saga__batch_pending(const saga__batch *b)
{
    return batch_writes(b) || b->neffects || b->pin_ms != 0;
}
#define batch_pending saga__batch_pending

static void retry_timer_cb(uv_timer_t *t) { schedule_flush(t->data); }

static int is_end_state(saga_state s)
{
    return s == SAGA_STATE_COMPLETED || s == SAGA_STATE_COMPENSATED ||
           s == SAGA_STATE_FAILED;
}

/* Release a committed batch: sagas become clean, effects run in staging
 * order (they may stage transitions into the next batch), then ended sagas
 * leave memory and the others get their timers. */
static void release(saga_engine *e, saga__batch *b)
{
    /* The committed sagas, linked through release_next: the effects may
     * stage them again, which reuses batch_next. No allocation here, so
     * no saga can lose its timer to an out-of-memory. */
    saga__inst *committed = b->head;
    for (saga__inst *in = b->head, *nx; in; in = nx) {
        nx = in->batch_next;
        in->in_batch = 0;
        in->put_flags = 0;
        in->batch_next = NULL;
        in->release_next = nx;
    }
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
    for (saga__inst *in = committed, *nx; in; in = nx) {
        nx = in->release_next;
        in->release_next = NULL;
        if (in->in_batch)
            continue; /* staged again: handled after its next commit */
        if (is_end_state(in->state))
            saga__inst_free(e, in);
        else
            saga__arm(e, in);
    }
}

/* Commit the open batch and release its effects. */
static int flush_once(saga_engine *e)
{
    saga__batch b = e->batch;
    if (!batch_pending(&b))
        return SAGA_OK;
    if (batch_writes(&b)) {
        uint64_t t0 = uv_hrtime();
        int rc = write_batch(e, &b);
        /* A shared store refused some sagas (fenced, or a key another
         * engine took first): drop them and write the rest at once. */
        for (int k = 0; rc != SAGA_OK && k < 4 && saga__own_resolve(e, rc);
             k++) {
            b = e->batch;
            rc = batch_writes(&b) ? write_batch(e, &b) : SAGA_OK;
        }
        saga__metrics_commit(e, b.njournal,
                             (int64_t)((uv_hrtime() - t0) / 1000),
                             rc == SAGA_OK);
        if (rc != SAGA_OK) {
            e->stats.commit_failures++;
            const char *detail = e->store->errmsg(e->store);
            saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                      "commit of %zu sagas failed (%s): %s; retrying in %u ms",
                      b.ninst, saga_err_name(rc), detail, e->store_backoff_ms);
            saga__err(e, SAGA_ESTORE, "commit failed: %s", detail);
            return SAGA_ESTORE;
        }
        e->stats.commits++;
        /* A commit (an fsync) takes time, and one check callback may run
         * several: refresh the loop's clock so that what the next round
         * stamps (journal times, timeouts) is not stale. */
        uv_update_time(e->loop);
    }
    e->store_backoff_ms = e->opts.store_retry_ms;
    /* Detach the committed batch: what release() stages opens a new one. */
    memset(&e->batch, 0, sizeof e->batch);
    e->batch.tail = &e->batch.head;
    e->batch.out_tail = &e->batch.out_head;
    /* Committed outbox messages go to the relay. */
    while (b.out_head != NULL) {
        saga__outmsg *m = b.out_head;
        b.out_head = m->next;
        if (e->relay != NULL)
            saga__relay_push(e->relay, m);
        else
            saga__outmsg_free(m);
    }
    b.out_tail = &b.out_head;
    e->releasing_pin_ms = b.pin_ms;
    release(e, &b);
    e->releasing_pin_ms = 0;
    if (e->relay != NULL)
        saga__relay_kick(e->relay);
    batch_reset(&b);
    /* Hand the arrays back for reuse when the new batch has none. */
    if (e->batch.journal == NULL) {
        e->batch.journal = b.journal, e->batch.cjournal = b.cjournal;
        b.journal = NULL;
    }
    if (e->batch.effects == NULL) {
        e->batch.effects = b.effects, e->batch.ceffects = b.ceffects;
        b.effects = NULL;
    }
    if (e->batch.idem == NULL) {
        e->batch.idem = b.idem, e->batch.cidem = b.cidem;
        b.idem = NULL;
    }
    saga__batch_free(&b);
    return SAGA_OK;
}

static void flush_rounds(saga_engine *e)
{
    if (e->flushing)
        return;
    e->flushing = 1;
    for (int round = 0; round < MAX_ROUNDS && batch_pending(&e->batch);
         round++) {
        if (flush_once(e) != SAGA_OK) {
            uv_idle_stop(&e->idle);
            uv_check_stop(&e->check);
            if (!e->closing)
                uv_timer_start(&e->retry_timer, retry_timer_cb,
                               e->store_backoff_ms, 0);
            e->store_backoff_ms =
                e->store_backoff_ms * 2 > MAX_STORE_RETRY_MS
                    ? MAX_STORE_RETRY_MS
                    : e->store_backoff_ms * 2;
            e->flushing = 0;
            return;
        }
    }
    if (!batch_pending(&e->batch)) {
        uv_idle_stop(&e->idle);
        uv_check_stop(&e->check);
    }
    e->flushing = 0;
}

static void check_cb(uv_check_t *h) { flush_rounds(h->data); }

int saga_engine_flush(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    if (e->flushing)
        /* Called from an action or callback that a commit released: the
         * commit in progress writes what it staged as soon as it returns. */
        return saga__err(e, SAGA_EBUSY,
                         "saga_engine_flush() inside a callback of the engine: "
                         "what it staged is committed when it returns");
    flush_rounds(e);
    int rc = batch_pending(&e->batch) ? SAGA_ESTORE : SAGA_OK;
    if (e->free_deferred && e->owns_loop && !e->running)
        /* A callback it released closed or freed the engine: finish. */
        saga_engine_free(e);
    return rc;
}


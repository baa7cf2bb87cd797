/*
 * async_store.c — a store that commits asynchronously (see async_store.h).
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <saga/store.h>

#include "fakes/async_store.h"

/* One submitted batch, deep-copied (the caller may free its arrays as soon
 * as submit_batch returns). libc memory, so that the allocation-failure
 * tests count only the engine's. */
typedef struct abatch {
    saga_batch_writes w;
    saga_record *recs;
    unsigned int *flags;
    saga_idem_entry *idem;
    saga_message *msgs;
    char **done;
    saga_journal_entry *jes;
    saga_kv_write *kv;
    void **owned;
    size_t nowned, cowned;
    saga_store_done_cb cb;
    void *arg;
    struct abatch *next;
} abatch;

struct async_store {
    saga_store base; /* first */
    saga_store *inner;
    uv_loop_t *loop;
    uv_timer_t timer; /* completes queued batches on a later loop turn */
    int hold;
    unsigned fail_next, refuse_next;
    abatch *head, **tail;
    size_t queued;
    async_store_stats st;
};

#define AS struct async_store *as = (struct async_store *)self

static void *own(abatch *b, const void *p, size_t n)
{
    if (p == NULL)
        return NULL;
    if (b->nowned == b->cowned) {
        b->cowned = b->cowned ? b->cowned * 2 : 32;
        b->owned = realloc(b->owned, b->cowned * sizeof *b->owned);
        if (b->owned == NULL)
            abort();
    }
    void *c = malloc(n ? n : 1);
    if (c == NULL)
        abort();
    memcpy(c, p, n);
    b->owned[b->nowned++] = c;
    return c;
}

static const char *str(abatch *b, const char *s)
{
    return s ? own(b, s, strlen(s) + 1) : NULL;
}

static void *arr(abatch *b, const void *p, size_t n, size_t elem)
{
    return n ? own(b, p, n * elem) : NULL;
}

static abatch *copy(const saga_batch_writes *w)
{
    abatch *b = calloc(1, sizeof *b);
    if (b == NULL)
        abort();
    b->recs = arr(b, w->sagas, w->nsagas, sizeof *w->sagas);
    for (size_t i = 0; i < w->nsagas; i++) {
        saga_record *r = &b->recs[i];
        r->id = str(b, r->id);
        r->def_name = str(b, r->def_name);
        r->idem_key = str(b, r->idem_key);
        r->error = str(b, r->error);
        r->data = own(b, r->data, r->data_len);
    }
    b->flags = arr(b, w->put_flags, w->nsagas, sizeof *w->put_flags);
    b->idem = arr(b, w->idem, w->nidem, sizeof *w->idem);
    for (size_t i = 0; i < w->nidem; i++) {
        b->idem[i].key = str(b, b->idem[i].key);
        b->idem[i].saga_id = str(b, b->idem[i].saga_id);
    }
    b->msgs = arr(b, w->outbox, w->noutbox, sizeof *w->outbox);
    for (size_t i = 0; i < w->noutbox; i++) {
        saga_message *m = &b->msgs[i];
        m->id = str(b, m->id);
        m->topic = str(b, m->topic);
        m->key = str(b, m->key);
        m->payload = own(b, m->payload, m->len);
    }
    b->done = w->ndone ? own(b, w->done_ids, w->ndone * sizeof(char *)) : NULL;
    for (size_t i = 0; i < w->ndone; i++)
        b->done[i] = (char *)str(b, w->done_ids[i]);
    b->jes = arr(b, w->journal, w->njournal, sizeof *w->journal);
    for (size_t i = 0; i < w->njournal; i++) {
        b->jes[i].saga_id = str(b, b->jes[i].saga_id);
        b->jes[i].error = str(b, b->jes[i].error);
    }
    /* Version 13: the key-value writes. */
    b->kv = arr(b, w->kv, w->nkv, sizeof *w->kv);
    for (size_t i = 0; i < w->nkv; i++) {
        saga_kv_write *k = &b->kv[i];
        k->key = str(b, k->key);
        k->val = own(b, k->val, k->len);
        k->expect = own(b, k->expect, k->expect_len);
    }
    saga_batch_writes c = {b->recs,     b->flags,
                           w->nsagas,   b->idem,
                           w->nidem,    b->msgs,
                           w->noutbox,  (const char *const *)b->done,
                           w->ndone,    b->jes,
                           w->njournal, b->kv,
                           w->nkv};
    b->w = c;
    return b;
}

static void batch_free(abatch *b)
{
    for (size_t i = 0; i < b->nowned; i++)
        free(b->owned[i]);
    free(b->owned);
    free(b);
}

/* Write @p w to the inner store in one transaction: its own write_batch
 * (every built-in store has one since store version 13, the key-value
 * part included; async_store_new requires it). */
static int apply(saga_store *s, const saga_batch_writes *w)
{
    return s->write_batch(s, w);
}

int async_store_complete(async_store *as, int rc)
{
    abatch *b = as->head;
    if (b == NULL)
        return 0;
    as->head = b->next;
    if (as->head == NULL)
        as->tail = &as->head;
    as->queued--;
    if (rc == SAGA_OK && as->fail_next > 0) {
        as->fail_next--;
        rc = SAGA_ESTORE;
    }
    if (rc == SAGA_OK)
        rc = apply(as->inner, &b->w);
    if (rc == SAGA_OK) {
        as->st.committed++;
        as->st.sagas_written += b->w.nsagas;
    } else {
        as->st.failed++;
    }
    saga_store_done_cb cb = b->cb;
    void *arg = b->arg;
    batch_free(b);
    cb(arg, rc);
    return 1;
}

static void timer_cb(uv_timer_t *t)
{
    async_store *as = t->data;
    /* One batch per loop turn; the engine submits the next from its done
     * callback's turn at the earliest. */
    if (!as->hold && async_store_complete(as, SAGA_OK) && as->head != NULL &&
        !as->hold)
        uv_timer_start(&as->timer, timer_cb, 0, 0);
}

static int a_attach(saga_store *self, uv_loop_t *loop)
{
    AS;
    if (as->loop != NULL)
        return SAGA_EINVAL;
    as->loop = loop;
    uv_timer_init(loop, &as->timer);
    as->timer.data = as;
    as->st.attached = 1;
    return SAGA_OK;
}

static int a_submit(saga_store *self, const saga_batch_writes *w,
                    saga_store_done_cb done, void *arg)
{
    AS;
    if (as->loop == NULL)
        return SAGA_EINVAL;
    if (as->refuse_next > 0) {
        as->refuse_next--;
        as->st.refused++;
        return SAGA_ESTORE;
    }
    abatch *b = copy(w);
    b->cb = done;
    b->arg = arg;
    *as->tail = b;
    as->tail = &b->next;
    as->queued++;
    as->st.submitted++;
    if (as->queued > as->st.max_queued)
        as->st.max_queued = as->queued;
    if (!as->hold)
        uv_timer_start(&as->timer, timer_cb, 0, 0);
    return SAGA_OK;
}

static void closed_cb(uv_handle_t *h)
{
    async_store *as = h->data;
    free(as);
}

static void a_close(saga_store *self)
{
    AS;
    while (as->head != NULL) {
        /* The contract says this never happens; do not call back. */
        abatch *b = as->head;
        as->head = b->next;
        batch_free(b);
    }
    as->inner->close(as->inner);
    if (as->loop != NULL)
        uv_close((uv_handle_t *)&as->timer, closed_cb);
    else
        free(as);
}

/* Forwarding. */
static int a_begin(saga_store *self)
{
    AS;
    if (as->queued > 0)
        as->st.sync_writes_in_flight++;
    return as->inner->begin(as->inner);
}
#define FWD0(name, params, args)                                               \
    static int a_##name params                                                 \
    {                                                                          \
        AS;                                                                    \
        return as->inner->name args;                                           \
    }
FWD0(commit, (saga_store * self), (as->inner))
FWD0(rollback, (saga_store * self), (as->inner))
FWD0(saga_put, (saga_store * self, const saga_record *r, unsigned f),
     (as->inner, r, f))
FWD0(saga_get, (saga_store * self, const char *id, saga_record_cb cb, void *a),
     (as->inner, id, cb, a))
FWD0(saga_scan, (saga_store * self, unsigned m, saga_record_cb cb, void *a),
     (as->inner, m, cb, a))
FWD0(journal_append, (saga_store * self, const saga_journal_entry *e),
     (as->inner, e))
FWD0(journal_scan,
     (saga_store * self, const char *id, saga_journal_cb cb, void *a),
     (as->inner, id, cb, a))
FWD0(idem_put, (saga_store * self, const char *k, const char *id, int64_t t),
     (as->inner, k, id, t))
FWD0(idem_get, (saga_store * self, const char *k, char id[SAGA_ID_SIZE]),
     (as->inner, k, id))
FWD0(purge, (saga_store * self, int64_t b, uint64_t *n), (as->inner, b, n))
FWD0(outbox_put, (saga_store * self, const saga_message *m), (as->inner, m))
FWD0(outbox_scan, (saga_store * self, uint32_t l, saga_message_cb cb, void *a),
     (as->inner, l, cb, a))
FWD0(outbox_done, (saga_store * self, const char *id), (as->inner, id))
FWD0(inbox_claim,
     (saga_store * self, const char *id, int64_t t, saga_blob_cb cb, void *a),
     (as->inner, id, t, cb, a))
FWD0(inbox_reply, (saga_store * self, const char *id, const void *r, size_t n),
     (as->inner, id, r, n))
FWD0(kv_get, (saga_store * self, const char *k, saga_blob_cb cb, void *a),
     (as->inner, k, cb, a))
FWD0(kv_put, (saga_store * self, const char *k, const void *v, size_t n),
     (as->inner, k, v, n))
FWD0(kv_scan, (saga_store * self, const char *p, saga_kv_cb cb, void *a),
     (as->inner, p, cb, a))
FWD0(kv_del, (saga_store * self, const char *k), (as->inner, k))
FWD0(savepoint, (saga_store * self), (as->inner))
FWD0(savepoint_rollback, (saga_store * self), (as->inner))
FWD0(savepoint_release, (saga_store * self), (as->inner))

static const char *a_errmsg(saga_store *self)
{
    AS;
    return as->inner->errmsg(as->inner);
}

static void *a_native(saga_store *self)
{
    AS;
    return as->inner->native_handle ? as->inner->native_handle(as->inner)
                                    : NULL;
}

int async_store_new(saga_store **out, saga_store *inner, async_store **handle)
{
    if (out == NULL || inner == NULL || inner->version < 3 ||
        inner->write_batch == NULL)
        return SAGA_EINVAL;
    async_store *as = calloc(1, sizeof *as);
    if (as == NULL)
        return SAGA_ENOMEM;
    saga_store_init(&as->base, 4);
    as->inner = inner;
    as->tail = &as->head;
    saga_store *b = &as->base;
    b->begin = a_begin;
    b->commit = a_commit;
    b->rollback = a_rollback;
    b->saga_put = a_saga_put;
    b->saga_get = a_saga_get;
    b->saga_scan = a_saga_scan;
    b->journal_append = a_journal_append;
    b->journal_scan = a_journal_scan;
    b->idem_put = a_idem_put;
    b->idem_get = a_idem_get;
    b->purge = a_purge;
    b->outbox_put = a_outbox_put;
    b->outbox_scan = a_outbox_scan;
    b->outbox_done = a_outbox_done;
    b->inbox_claim = a_inbox_claim;
    b->inbox_reply = a_inbox_reply;
    b->kv_get = a_kv_get;
    b->kv_put = a_kv_put;
    b->native_handle = a_native;
    b->errmsg = a_errmsg;
    b->close = a_close;
    if (inner->version >= 2) {
        b->kv_scan = inner->kv_scan ? a_kv_scan : NULL;
        b->kv_del = inner->kv_del ? a_kv_del : NULL;
        b->savepoint = inner->savepoint ? a_savepoint : NULL;
        b->savepoint_rollback = inner->savepoint_rollback ? a_savepoint_rollback
                                                          : NULL;
        b->savepoint_release = inner->savepoint_release ? a_savepoint_release
                                                        : NULL;
    }
    b->attach = a_attach;
    b->submit_batch = a_submit;
    *out = b;
    if (handle != NULL)
        *handle = as;
    return SAGA_OK;
}

void async_store_hold(async_store *as, int on)
{
    as->hold = on;
    if (!on && as->head != NULL && as->loop != NULL)
        uv_timer_start(&as->timer, timer_cb, 0, 0);
}

void async_store_fail_next(async_store *as, unsigned n) { as->fail_next = n; }
void async_store_refuse_next(async_store *as, unsigned n)
{
    as->refuse_next = n;
}
size_t async_store_queued(const async_store *as) { return as->queued; }
size_t async_store_head_sagas(const async_store *as)
{
    return as->head ? as->head->w.nsagas : 0;
}
void async_store_stats_get(const async_store *as, async_store_stats *out)
{
    *out = as->st;
}
saga_store *async_store_inner(async_store *as) { return as->inner; }

/*
 * mem_ops.c — the in-memory store's journal, idempotency keys, retention
 * purge, outbox, inbox and key-value space. Every write goes through
 * saga__mem_put_node() so that a transaction can undo it.
 */
#include <string.h>

#include "util.h"
#include "saga/saga.h"
#include "mem_store.h"

#define SELF mem_store *s = (mem_store *)self

char *saga__mem_put_str(char **cur, const char *src)
{
    if (src == NULL)
        return NULL;
    size_t n = strlen(src) + 1;
    char *dst = *cur;
    memcpy(dst, src, n);
    *cur += n;
    return dst;
}

static const void *copy_bytes(char **cur, const void *src, size_t len)
{
    if (len == 0)
        return saga__mem_empty;
    char *dst = *cur;
    memcpy(dst, src, len);
    *cur += len;
    return dst;
}

static void visit_blob(mem_store *s, saga_blob_cb cb, void *arg,
                       const void *buf, size_t len)
{
    if (cb == NULL)
        return;
    saga__mem_visit_begin(s);
    cb(buf, len, arg);
    saga__mem_visit_end(s);
}

/* ------------------------------------------------------------------------ */
/* Journal                                                                  */

/* The index of the first entry with seq >= @p seq. */
static size_t jlist_lower(const mjlist *l, uint32_t seq)
{
    size_t lo = 0, hi = l->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->v[mid]->e.seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int jlist_grow(mjlist *l)
{
    if (l->len < l->cap)
        return 0;
    size_t cap = l->cap ? l->cap * 2 : 8;
    mjentry **nv = saga_realloc(l->v, cap * sizeof *nv);
    if (nv == NULL)
        return -1;
    l->v = nv;
    l->cap = cap;
    return 0;
}

static int mem_journal_append(saga_store *self, const saga_journal_entry *e)
{
    SELF;
    if (e == NULL || e->saga_id == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "journal_append: NULL entry");
    mjlist *l = (mjlist *)saga__mt_find(&s->journal, e->saga_id);
    size_t pos = l ? jlist_lower(l, e->seq) : 0;
    if (l && pos < l->len && l->v[pos]->e.seq == e->seq)
        return saga__mem_fail(s, SAGA_EDUP, "journal %s/%u exists", e->saga_id,
                              (unsigned)e->seq);

    mjentry *je = saga_malloc(sizeof *je + strlen(e->saga_id) + 1 +
                              (e->error ? strlen(e->error) + 1 : 0));
    if (je == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (journal)");
    memset(je, 0, sizeof *je);
    je->n.kind = MN_JENTRY;
    je->e = *e;
    char *cur = (char *)(je + 1);
    je->e.saga_id = saga__mem_put_str(&cur, e->saga_id);
    je->e.error = saga__mem_put_str(&cur, e->error);

    /* Take every resource before the first change, so a failure leaves
     * the store as it was. */
    int rc = saga__mem_log_reserve(s, 2);
    if (rc) {
        saga_free(je);
        return rc;
    }
    if (l == NULL) {
        size_t idlen = strlen(e->saga_id) + 1;
        l = saga_malloc(sizeof *l + idlen);
        if (l == NULL) {
            saga_free(je);
            return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (journal)");
        }
        memset(l, 0, sizeof *l);
        l->n.kind = MN_JLIST;
        l->n.h.key = memcpy(l + 1, e->saga_id, idlen);
        if (jlist_grow(l) != 0 ||
            (rc = saga__mem_put_node(s, &s->journal, NULL, &l->n)) != 0) {
            saga_free(l->v);
            saga_free(l);
            saga_free(je);
            return rc ? rc : saga__mem_fail(s, SAGA_ENOMEM, "out of memory");
        }
    } else if (jlist_grow(l) != 0) {
        saga_free(je);
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (journal)");
    }
    memmove(&l->v[pos + 1], &l->v[pos], (l->len - pos) * sizeof *l->v);
    l->v[pos] = je;
    l->len++;
    saga__mem_log_jappend(s, l, je);
    return SAGA_OK;
}

static int mem_journal_scan(saga_store *self, const char *saga_id,
                            saga_journal_cb cb, void *arg)
{
    SELF;
    if (saga_id == NULL || cb == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "journal_scan: NULL argument");
    mjlist *l = (mjlist *)saga__mt_find(&s->journal, saga_id);
    if (l == NULL || l->len == 0)
        return SAGA_OK;
    /* Copy the entry array: the callback may append to this journal. */
    size_t n = l->len;
    mjentry **v = saga_malloc(n * sizeof *v);
    if (v == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (scan)");
    memcpy(v, l->v, n * sizeof *v);
    saga__mem_visit_begin(s);
    for (size_t i = 0; i < n; i++)
        if (cb(&v[i]->e, arg) != 0)
            break;
    saga__mem_visit_end(s);
    saga_free(v);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Idempotency keys                                                         */

static int mem_idem_put(saga_store *self, const char *key, const char *saga_id,
                        int64_t created_ms)
{
    SELF;
    if (key == NULL || saga_id == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "idem_put: NULL argument");
    size_t idlen = strlen(saga_id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__mem_fail(s, SAGA_EINVAL,
                              "idem_put: saga id must be 1..%d characters",
                              SAGA_ID_LEN);
    if (saga__mt_find(&s->idem, key))
        return saga__mem_fail(s, SAGA_EDUP, "idempotency key %s is bound", key);
    midem *m = saga_malloc(sizeof *m + strlen(key) + 1);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (idem)");
    memset(m, 0, sizeof *m);
    m->n.kind = MN_IDEM;
    m->n.h.key = strcpy((char *)(m + 1), key);
    memcpy(m->saga_id, saga_id, idlen + 1);
    m->created_ms = created_ms;
    int rc = saga__mem_put_node(s, &s->idem, NULL, &m->n);
    if (rc)
        saga_free(m);
    return rc;
}

static int mem_idem_get(saga_store *self, const char *key,
                        char saga_id_out[SAGA_ID_SIZE])
{
    SELF;
    if (key == NULL || saga_id_out == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "idem_get: NULL argument");
    midem *m = (midem *)saga__mt_find(&s->idem, key);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOTFOUND, "no idempotency key %s", key);
    memcpy(saga_id_out, m->saga_id, SAGA_ID_SIZE);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Purge                                                                    */

typedef struct purge_acc {
    mem_store *s;
    int64_t before;
    mnode **v;
    size_t len, cap;
    int oom;
} purge_acc;

static int purgeable(const msaga *m, int64_t before)
{
    return (m->rec.state == SAGA_STATE_COMPLETED ||
            m->rec.state == SAGA_STATE_COMPENSATED) &&
           m->rec.updated_ms < before;
}

static void acc_push(purge_acc *a, mnode *n)
{
    if (a->len == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        mnode **nv = saga_realloc(a->v, cap * sizeof *nv);
        if (nv == NULL) {
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->len++] = n;
}

static void pick_saga(mnode *n, void *arg)
{
    purge_acc *a = arg;
    if (purgeable((msaga *)n, a->before))
        acc_push(a, n);
}

static void pick_idem(mnode *n, void *arg)
{
    purge_acc *a = arg;
    msaga *m = (msaga *)saga__mt_find(&a->s->sagas, ((midem *)n)->saga_id);
    if (m && purgeable(m, a->before))
        acc_push(a, n);
}

static void pick_inbox(mnode *n, void *arg)
{
    purge_acc *a = arg;
    if (((minbox *)n)->created_ms < a->before)
        acc_push(a, n);
}

static int mem_purge(saga_store *self, int64_t before_ms, uint64_t *out)
{
    SELF;
    if (out)
        *out = 0;
    /* Pick the victims first, then delete: tables must not change while
     * they are walked. Idempotency keys go by the saga they are bound to,
     * so they are picked while the sagas still exist. */
    purge_acc a = {s, before_ms, NULL, 0, 0, 0};
    saga__mt_each(&s->sagas, pick_saga, &a);
    size_t nsagas = a.len;
    saga__mt_each(&s->idem, pick_idem, &a);
    size_t nidem = a.len;
    saga__mt_each(&s->inbox, pick_inbox, &a);
    if (a.oom) {
        saga_free(a.v);
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (purge)");
    }
    /* Run in a transaction of our own when the caller has none, and
     * reserve the whole undo log up front: after that nothing can fail. */
    int own = !s->in_txn;
    if (own)
        saga__mem_begin(self);
    int rc = saga__mem_log_reserve(s, a.len + nsagas);
    if (rc) {
        if (own)
            saga__mem_rollback(self);
        saga_free(a.v);
        return rc;
    }
    for (size_t i = 0; i < a.len; i++) {
        if (i < nsagas) {
            mnode *j = saga__mt_find(&s->journal, a.v[i]->h.key);
            if (j)
                saga__mem_put_node(s, &s->journal, j, NULL);
            saga__mem_put_node(s, &s->sagas, a.v[i], NULL);
        } else {
            saga__mem_put_node(s, i < nidem ? &s->idem : &s->inbox, a.v[i],
                               NULL);
        }
    }
    if (own)
        saga__mem_commit(self);
    if (out)
        *out = nsagas;
    saga_free(a.v);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Outbox                                                                   */

static int mem_outbox_put(saga_store *self, const saga_message *msg)
{
    SELF;
    if (msg == NULL || msg->id == NULL || msg->topic == NULL ||
        (msg->payload == NULL && msg->len > 0))
        return saga__mem_fail(s, SAGA_EINVAL,
                              "outbox_put: message, id and topic required");
    if (saga__mt_find(&s->outbox, msg->id))
        return saga__mem_fail(s, SAGA_EDUP, "message %s is queued", msg->id);
    size_t sz = sizeof(moutbox) + strlen(msg->id) + 1 + strlen(msg->topic) + 1 +
                (msg->key ? strlen(msg->key) + 1 : 0) + msg->len;
    moutbox *m = saga_malloc(sz);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (outbox)");
    memset(m, 0, sizeof *m);
    m->n.kind = MN_OUTBOX;
    m->m = *msg;
    char *cur = (char *)(m + 1);
    m->m.id = m->n.h.key = saga__mem_put_str(&cur, msg->id);
    m->m.topic = saga__mem_put_str(&cur, msg->topic);
    m->m.key = saga__mem_put_str(&cur, msg->key);
    m->m.payload = copy_bytes(&cur, msg->payload, msg->len);
    m->seq = ++s->ob_seq;
    int rc = saga__mem_put_node(s, &s->outbox, NULL, &m->n);
    if (rc)
        saga_free(m);
    return rc;
}

static int mem_outbox_scan(saga_store *self, uint32_t limit, saga_message_cb cb,
                           void *arg)
{
    SELF;
    if (cb == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "outbox_scan: NULL callback");
    size_t n = s->outbox.count;
    if (limit > 0 && limit < n)
        n = limit;
    if (n == 0)
        return SAGA_OK;
    /* Copy the queue head: the callback may mark messages done. */
    moutbox **v = saga_malloc(n * sizeof *v);
    if (v == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (scan)");
    size_t k = 0;
    for (moutbox *m = s->ob_head; m && k < n; m = m->onext)
        v[k++] = m;
    saga__mem_visit_begin(s);
    for (size_t i = 0; i < k; i++) {
        if (saga__mt_find(&s->outbox, v[i]->m.id) != &v[i]->n)
            continue; /* done meanwhile */
        if (cb(&v[i]->m, arg) != 0)
            break;
    }
    saga__mem_visit_end(s);
    saga_free(v);
    return SAGA_OK;
}

static int mem_outbox_done(saga_store *self, const char *msg_id)
{
    SELF;
    if (msg_id == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "outbox_done: NULL id");
    mnode *m = saga__mt_find(&s->outbox, msg_id);
    return m ? saga__mem_put_node(s, &s->outbox, m, NULL) : SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Inbox and key-value space                                                */

static minbox *inbox_node(const char *id, int64_t created, const void *reply,
                          size_t len)
{
    minbox *m = saga_malloc(sizeof *m + strlen(id) + 1 + len);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof *m);
    m->n.kind = MN_INBOX;
    char *cur = (char *)(m + 1);
    m->n.h.key = saga__mem_put_str(&cur, id);
    m->created_ms = created;
    m->reply = copy_bytes(&cur, reply, len);
    m->len = len;
    return m;
}

static int mem_inbox_claim(saga_store *self, const char *msg_id, int64_t now_ms,
                           saga_blob_cb cb, void *arg)
{
    SELF;
    if (msg_id == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "inbox_claim: NULL id");
    minbox *old = (minbox *)saga__mt_find(&s->inbox, msg_id);
    if (old) {
        visit_blob(s, cb, arg, old->reply, old->len);
        return SAGA_EDUP;
    }
    minbox *m = inbox_node(msg_id, now_ms, NULL, 0);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (inbox)");
    int rc = saga__mem_put_node(s, &s->inbox, NULL, &m->n);
    if (rc)
        saga_free(m);
    return rc;
}

static int mem_inbox_reply(saga_store *self, const char *msg_id,
                           const void *reply, size_t len)
{
    SELF;
    if (msg_id == NULL || (reply == NULL && len > 0))
        return saga__mem_fail(s, SAGA_EINVAL, "inbox_reply: NULL argument");
    minbox *old = (minbox *)saga__mt_find(&s->inbox, msg_id);
    if (old == NULL)
        return saga__mem_fail(s, SAGA_ENOTFOUND, "message %s not claimed",
                              msg_id);
    minbox *m = inbox_node(msg_id, old->created_ms, reply, len);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (inbox)");
    int rc = saga__mem_put_node(s, &s->inbox, &old->n, &m->n);
    if (rc)
        saga_free(m);
    return rc;
}

static int mem_kv_get(saga_store *self, const char *key, saga_blob_cb cb,
                      void *arg)
{
    SELF;
    if (key == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "kv_get: NULL key");
    mkv *m = (mkv *)saga__mt_find(&s->kv, key);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOTFOUND, "no key %s", key);
    visit_blob(s, cb, arg, m->val, m->len);
    return SAGA_OK;
}

static int mem_kv_put(saga_store *self, const char *key, const void *val,
                      size_t len)
{
    SELF;
    if (key == NULL || (val == NULL && len > 0))
        return saga__mem_fail(s, SAGA_EINVAL, "kv_put: NULL argument");
    mkv *m = saga_malloc(sizeof *m + strlen(key) + 1 + len);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (kv)");
    memset(m, 0, sizeof *m);
    m->n.kind = MN_KV;
    char *cur = (char *)(m + 1);
    m->n.h.key = saga__mem_put_str(&cur, key);
    m->val = copy_bytes(&cur, val, len);
    m->len = len;
    int rc = saga__mem_put_node(s, &s->kv, saga__mt_find(&s->kv, key), &m->n);
    if (rc)
        saga_free(m);
    return rc;
}

typedef struct kv_scan_acc {
    const char *prefix;
    size_t plen;
    saga_kv_cb cb;
    void *arg;
    int stop;
} kv_scan_acc;

static void kv_scan_one(mnode *n, void *arg)
{
    kv_scan_acc *a = arg;
    mkv *m = (mkv *)n;
    if (a->stop || strncmp(n->h.key, a->prefix, a->plen) != 0)
        return;
    a->stop = a->cb(n->h.key, m->val, m->len, a->arg) != 0;
}

static int mem_kv_scan(saga_store *self, const char *prefix, saga_kv_cb cb,
                       void *arg)
{
    SELF;
    if (prefix == NULL || cb == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "kv_scan: NULL argument");
    kv_scan_acc a = {prefix, strlen(prefix), cb, arg, 0};
    saga__mem_visit_begin(s);
    saga__mt_each(&s->kv, kv_scan_one, &a);
    saga__mem_visit_end(s);
    return SAGA_OK;
}

static int mem_kv_del(saga_store *self, const char *key)
{
    SELF;
    if (key == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "kv_del: NULL key");
    mnode *old = saga__mt_find(&s->kv, key);
    return old ? saga__mem_put_node(s, &s->kv, old, NULL) : SAGA_OK;
}

/* Version 3, with the version-13 key-value part: by this store's own
 * slots, in one transaction (lib/plugins.c). */
static int mem_write_batch(saga_store *self, const saga_batch_writes *w)
{
    return saga__store_write_by_slots(self, w);
}

/* The memory store's vtable: one constant table, copied into each store
 * (SQLite's sqlite3_io_methods, nng's ops tables). */
const saga_store saga__mem_store_ops = {
    .version = SAGA_STORE_VERSION,
    /* version 1 */
    .begin = saga__mem_begin,
    .commit = saga__mem_commit,
    .rollback = saga__mem_rollback,
    .saga_put = saga__mem_saga_put,
    .saga_get = saga__mem_saga_get,
    .saga_scan = saga__mem_saga_scan,
    .journal_append = mem_journal_append,
    .journal_scan = mem_journal_scan,
    .idem_put = mem_idem_put,
    .idem_get = mem_idem_get,
    .purge = mem_purge,
    .outbox_put = mem_outbox_put,
    .outbox_scan = mem_outbox_scan,
    .outbox_done = mem_outbox_done,
    .inbox_claim = mem_inbox_claim,
    .inbox_reply = mem_inbox_reply,
    .kv_get = mem_kv_get,
    .kv_put = mem_kv_put,
    .native_handle = saga__mem_native_handle,
    .errmsg = saga__mem_errmsg,
    .close = saga__mem_close,
    /* version 2 */
    .kv_scan = mem_kv_scan,
    .kv_del = mem_kv_del,
    .savepoint = saga__mem_savepoint,
    .savepoint_rollback = saga__mem_savepoint_rollback,
    .savepoint_release = saga__mem_savepoint_release,
    /* version 3 */
    .write_batch = mem_write_batch,
};

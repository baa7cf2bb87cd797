/*
 * store_memory.c — the in-memory store: node life-cycle, transactions and
 * the saga table. The other tables live in mem_ops.c.
 *
 * Transactions keep an undo log instead of a staged copy: a write applies
 * at once (so reads in the transaction see it) and logs which node it
 * replaced; commit frees the replaced nodes, rollback walks the log
 * backwards and puts them back. Outside a transaction every write commits
 * by itself.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga/saga.h"
#include "mem_store.h"

const char saga__mem_empty[1] = "";

int saga__mem_fail(mem_store *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The tables: util.h's hash table, walked with a callback                  */

void saga__mt_each(const mtable *t, void (*fn)(mnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        for (saga__hnode *n = t->buckets[i]; n; n = n->next)
            fn((mnode *)n, arg);
}

void saga__mt_destroy(mtable *t, void (*fn)(mnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        saga__hnode *n = t->buckets[i];
        while (n) {
            saga__hnode *next = n->next; /* fn may free n */
            fn((mnode *)n, arg);
            n = next;
        }
    }
    saga__htable_free(t);
}

/* ------------------------------------------------------------------------ */
/* Node life-cycle                                                          */

static void free_node(mnode *n)
{
    if (n->kind == MN_JLIST) {
        mjlist *l = (mjlist *)n;
        for (size_t i = 0; i < l->len; i++)
            saga_free(l->v[i]);
        saga_free(l->v);
    }
    /* Every other kind is one allocation, strings included. */
    saga_free(n);
}

void saga__mem_release(mem_store *s, mnode *n)
{
    if (n == NULL)
        return;
    if (s->visiting > 0) {
        n->h.next = (saga__hnode *)s->graveyard;
        s->graveyard = n;
    } else {
        free_node(n);
    }
}

void saga__mem_visit_begin(mem_store *s) { s->visiting++; }

void saga__mem_visit_end(mem_store *s)
{
    if (--s->visiting > 0)
        return;
    while (s->graveyard) {
        mnode *n = s->graveyard;
        s->graveyard = (mnode *)n->h.next;
        free_node(n);
    }
}

/* The outbox is also a list in queue order. Nodes come back by rollback
 * in any order, so link by seq; the walk from the tail is short because
 * new messages have the largest seq. */
static void ob_link(mem_store *s, moutbox *m)
{
    moutbox *p = s->ob_tail;
    while (p && p->seq > m->seq)
        p = p->prev;
    m->prev = p;
    m->onext = p ? p->onext : s->ob_head;
    if (m->onext)
        m->onext->prev = m;
    else
        s->ob_tail = m;
    if (p)
        p->onext = m;
    else
        s->ob_head = m;
}

static void ob_unlink(mem_store *s, moutbox *m)
{
    if (m->prev)
        m->prev->onext = m->onext;
    else
        s->ob_head = m->onext;
    if (m->onext)
        m->onext->prev = m->prev;
    else
        s->ob_tail = m->prev;
    m->prev = m->onext = NULL;
}

/* Swap two nodes of one key. Never allocates: an insert of a new key is
 * reserved by the caller, and a rollback only re-inserts into room that
 * the undone write had. */
static void swap_nodes(mem_store *s, mtable *t, mnode *old, mnode *nw)
{
    if (old) {
        saga__mt_remove(t, old);
        if (t == &s->outbox)
            ob_unlink(s, (moutbox *)old);
    }
    if (nw) {
        saga__mt_insert(t, nw);
        if (t == &s->outbox)
            ob_link(s, (moutbox *)nw);
    }
}

int saga__mem_log_reserve(mem_store *s, size_t n)
{
    if (!s->in_txn || s->log_len + n <= s->log_cap)
        return SAGA_OK;
    size_t cap = s->log_cap ? s->log_cap : 64;
    while (cap < s->log_len + n)
        cap *= 2;
    mundo *nl = saga_realloc(s->log, cap * sizeof *nl);
    if (nl == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (undo log)");
    s->log = nl;
    s->log_cap = cap;
    return SAGA_OK;
}

int saga__mem_put_node(mem_store *s, mtable *t, mnode *old, mnode *nw)
{
    int rc = saga__mem_log_reserve(s, 1);
    if (rc)
        return rc;
    if (nw && !old && saga__mt_reserve(t) != 0)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (table)");
    swap_nodes(s, t, old, nw);
    if (s->in_txn)
        s->log[s->log_len++] = (mundo){U_NODE, t, old, nw};
    else
        saga__mem_release(s, old);
    return SAGA_OK;
}

void saga__mem_log_jappend(mem_store *s, mjlist *l, mjentry *e)
{
    if (s->in_txn)
        s->log[s->log_len++] = (mundo){U_JAPPEND, NULL, &e->n, &l->n};
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                             */

int saga__mem_begin(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (s->in_txn)
        return saga__mem_fail(s, SAGA_ESTORE,
                              "begin: a transaction is already open");
    s->in_txn = 1;
    s->log_len = 0;
    return SAGA_OK;
}

int saga__mem_commit(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (!s->in_txn)
        return saga__mem_fail(s, SAGA_ESTORE, "commit: no open transaction");
    for (size_t i = 0; i < s->log_len; i++)
        if (s->log[i].kind == U_NODE)
            saga__mem_release(s, s->log[i].old);
    s->log_len = 0;
    s->in_txn = 0;
    s->in_sp = 0;
    return SAGA_OK;
}

static void jlist_remove(mjlist *l, mjentry *e)
{
    for (size_t i = 0; i < l->len; i++) {
        if (l->v[i] == e) {
            memmove(&l->v[i], &l->v[i + 1], (l->len - i - 1) * sizeof *l->v);
            l->len--;
            return;
        }
    }
}

/* Undo the log back to @p len entries. */
static void undo_to(mem_store *s, size_t len)
{
    /* Backwards, so each step finds the table as its write left it. */
    while (s->log_len > len) {
        mundo *u = &s->log[--s->log_len];
        if (u->kind == U_NODE) {
            swap_nodes(s, u->t, u->new_, u->old);
            saga__mem_release(s, u->new_);
        } else {
            jlist_remove((mjlist *)u->new_, (mjentry *)u->old);
            saga__mem_release(s, u->old);
        }
    }
}

int saga__mem_rollback(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (!s->in_txn)
        return SAGA_OK; /* e.g. after a failed commit: nothing to undo */
    undo_to(s, 0);
    s->in_txn = 0;
    s->in_sp = 0;
    return SAGA_OK;
}

int saga__mem_savepoint(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (!s->in_txn || s->in_sp)
        return saga__mem_fail(s, SAGA_ESTORE,
                              s->in_sp ? "savepoint: one is already open"
                                       : "savepoint: no open transaction");
    s->in_sp = 1;
    s->sp_len = s->log_len;
    return SAGA_OK;
}

int saga__mem_savepoint_rollback(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (!s->in_txn || !s->in_sp)
        return saga__mem_fail(s, SAGA_ESTORE,
                              "savepoint_rollback: no open savepoint");
    undo_to(s, s->sp_len);
    s->in_sp = 0;
    return SAGA_OK;
}

int saga__mem_savepoint_release(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (!s->in_txn || !s->in_sp)
        return saga__mem_fail(s, SAGA_ESTORE,
                              "savepoint_release: no open savepoint");
    s->in_sp = 0;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Sagas                                                                    */

static size_t slen(const char *p) { return p ? strlen(p) + 1 : 0; }

/* One allocation holds the node, its strings and its data. */
static msaga *saga_node_new(const saga_record *r, const char *idem,
                            const void *data, size_t len)
{
    size_t sz = sizeof(msaga) + slen(r->id) + slen(r->def_name) + slen(idem) +
                slen(r->error) + len;
    msaga *m = saga_malloc(sz);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof *m);
    m->rec = *r;
    char *cur = (char *)(m + 1);
    m->rec.id = saga__mem_put_str(&cur, r->id);
    m->rec.def_name = saga__mem_put_str(&cur, r->def_name);
    m->rec.idem_key = saga__mem_put_str(&cur, idem);
    m->rec.error = saga__mem_put_str(&cur, r->error);
    if (len > 0)
        memcpy(cur, data, len);
    m->rec.data = len > 0 ? (const void *)cur : (const void *)saga__mem_empty;
    m->rec.data_len = len;
    m->n.h.key = m->rec.id;
    m->n.kind = MN_SAGA;
    return m;
}

static int check_record(mem_store *s, const saga_record *r, unsigned flags)
{
    if (r == NULL || r->id == NULL || r->def_name == NULL)
        return saga__mem_fail(s, SAGA_EINVAL,
                              "saga_put: record, id and def_name required");
    size_t idlen = strlen(r->id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__mem_fail(s, SAGA_EINVAL,
                              "saga_put: id must be 1..%d characters",
                              SAGA_ID_LEN);
    if (r->state < SAGA_STATE_RUNNING || r->state > SAGA_STATE_FAILED)
        return saga__mem_fail(s, SAGA_EINVAL, "saga_put: bad state %d",
                              (int)r->state);
    if (r->data == NULL && r->data_len > 0)
        return saga__mem_fail(s, SAGA_EINVAL, "saga_put: NULL data");
    if (flags & ~(SAGA_PUT_INSERT | SAGA_PUT_DATA))
        return saga__mem_fail(s, SAGA_EINVAL, "saga_put: unknown flags");
    return SAGA_OK;
}

int saga__mem_saga_put(saga_store *self, const saga_record *r,
                       unsigned int flags)
{
    mem_store *s = (mem_store *)self;
    int rc = check_record(s, r, flags);
    if (rc)
        return rc;
    msaga *old = (msaga *)saga__mt_find(&s->sagas, r->id);
    msaga *nw;
    if (flags & SAGA_PUT_INSERT) {
        if (old)
            return saga__mem_fail(s, SAGA_EDUP, "saga %s exists", r->id);
        nw = saga_node_new(r, r->idem_key, r->data, r->data_len);
    } else if (old == NULL) {
        return saga__mem_fail(s, SAGA_ENOTFOUND, "no saga %s", r->id);
    } else if (flags & SAGA_PUT_DATA) {
        nw = saga_node_new(r, r->idem_key, r->data, r->data_len);
    } else {
        nw = saga_node_new(r, old->rec.idem_key, old->rec.data,
                           old->rec.data_len);
    }
    if (nw == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (saga)");
    nw->seq = old ? old->seq : ++s->saga_seq;
    rc = saga__mem_put_node(s, &s->sagas, old ? &old->n : NULL, &nw->n);
    if (rc)
        saga_free(nw);
    return rc;
}

int saga__mem_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                       void *arg)
{
    mem_store *s = (mem_store *)self;
    if (id == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "saga_get: NULL id");
    msaga *m = (msaga *)saga__mt_find(&s->sagas, id);
    if (m == NULL)
        return saga__mem_fail(s, SAGA_ENOTFOUND, "no saga %s", id);
    if (cb) {
        saga__mem_visit_begin(s);
        cb(&m->rec, arg);
        saga__mem_visit_end(s);
    }
    return SAGA_OK;
}

typedef struct scan_acc {
    msaga **v;
    size_t len;
    unsigned mask;
} scan_acc;

static void scan_collect(mnode *n, void *arg)
{
    scan_acc *a = arg;
    msaga *m = (msaga *)n;
    if (SAGA_STATE_BIT(m->rec.state) & a->mask)
        a->v[a->len++] = m;
}

static int scan_cmp(const void *pa, const void *pb)
{
    const msaga *a = *(msaga *const *)pa, *b = *(msaga *const *)pb;
    if (a->rec.created_ms != b->rec.created_ms)
        return a->rec.created_ms < b->rec.created_ms ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

int saga__mem_saga_scan(saga_store *self, unsigned int mask, saga_record_cb cb,
                        void *arg)
{
    mem_store *s = (mem_store *)self;
    if (cb == NULL)
        return saga__mem_fail(s, SAGA_EINVAL, "saga_scan: NULL callback");
    if (s->sagas.count == 0)
        return SAGA_OK;
    scan_acc a = {saga_malloc(s->sagas.count * sizeof(msaga *)), 0, mask};
    if (a.v == NULL)
        return saga__mem_fail(s, SAGA_ENOMEM, "out of memory (scan)");
    saga__mt_each(&s->sagas, scan_collect, &a);
    qsort(a.v, a.len, sizeof *a.v, scan_cmp);
    /* The callback may write: nodes it replaces are parked, and each visit
     * shows the saga as it is now (skipping it if deleted or moved out of
     * the mask). */
    saga__mem_visit_begin(s);
    for (size_t i = 0; i < a.len; i++) {
        msaga *cur = (msaga *)saga__mt_find(&s->sagas, a.v[i]->rec.id);
        if (cur == NULL || !(SAGA_STATE_BIT(cur->rec.state) & mask))
            continue;
        if (cb(&cur->rec, arg) != 0)
            break;
    }
    saga__mem_visit_end(s);
    saga_free(a.v);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* The rest of the vtable                                                   */

void *saga__mem_native_handle(saga_store *self) { return NULL; }

const char *saga__mem_errmsg(saga_store *self)
{
    return ((mem_store *)self)->err;
}

static void destroy_node(mnode *n, void *arg) { free_node(n); }

void saga__mem_close(saga_store *self)
{
    mem_store *s = (mem_store *)self;
    if (s == NULL)
        return;
    saga__mem_rollback(self);
    s->visiting = 1;
    saga__mem_visit_end(s);
    saga__mt_destroy(&s->sagas, destroy_node, NULL);
    saga__mt_destroy(&s->journal, destroy_node, NULL);
    saga__mt_destroy(&s->idem, destroy_node, NULL);
    saga__mt_destroy(&s->outbox, destroy_node, NULL);
    saga__mt_destroy(&s->inbox, destroy_node, NULL);
    saga__mt_destroy(&s->kv, destroy_node, NULL);
    saga_free(s->log);
    saga_free(s);
}

int saga_store_memory_new(saga_store **out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    mem_store *s = saga_malloc(sizeof *s);
    if (s == NULL)
        return SAGA_ENOMEM;
    memset(s, 0, sizeof *s);
    s->base = saga__mem_store_ops;
    *out = &s->base;
    return SAGA_OK;
}

/*
 * sim_disk.c — the simulated disk, behind the store vtable.
 *
 * Each process keeps its committed state in an in-memory store (the
 * "platter") that outlives the process; each incarnation talks to it
 * through a disk wrapper. A commit may fail (the batch is rolled back, as
 * the store contract says), or succeed and kill the process right after
 * (before it can act on the commit). A crashed incarnation's disk refuses
 * everything, so whatever it had not committed is lost; the next
 * incarnation opens a new wrapper on the same platter.
 */
#include <stdlib.h>
#include <string.h>

#include "sim_world.h"

#define D(self) ((disk *)(self))
#define INNER(self) (D(self)->inner)

static int dead(saga_store *self)
{
    D(self)->errmsg[0] = '\0';
    if (!D(self)->dead)
        return 0;
    snprintf(D(self)->errmsg, sizeof D(self)->errmsg, "process crashed");
    return 1;
}

#define FWD(call)                                                              \
    do {                                                                       \
        if (dead(self))                                                        \
            return SAGA_ESTORE;                                                \
        return call;                                                           \
    } while (0)

static int d_begin(saga_store *self) { FWD(INNER(self)->begin(INNER(self))); }

static int d_commit(saga_store *self)
{
    disk *dk = D(self);
    world *w = dk->w;
    if (dead(self)) {
        INNER(self)->rollback(INNER(self));
        return SAGA_ESTORE;
    }
    if (w->faults_on && sim_chance(&w->rng, w->p_commit_fail)) {
        INNER(self)->rollback(INNER(self));
        snprintf(dk->errmsg, sizeof dk->errmsg, "injected commit failure");
        tracef(w, "disk %s: commit fails", dk->pr->name);
        w->res->commit_faults++;
        return SAGA_ESTORE;
    }
    int rc = INNER(self)->commit(INNER(self));
    if (rc == SAGA_OK && w->faults_on &&
        sim_chance(&w->rng, w->p_crash_after_commit)) {
        tracef(w, "disk %s: crash right after a commit", dk->pr->name);
        proc_crash_soon(w, dk->pr);
    }
    return rc;
}

static int d_rollback(saga_store *self)
{
    return INNER(self)->rollback(INNER(self));
}
static int d_saga_put(saga_store *self, const saga_record *r, unsigned f)
{
    FWD(INNER(self)->saga_put(INNER(self), r, f));
}
static int d_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                      void *arg)
{
    FWD(INNER(self)->saga_get(INNER(self), id, cb, arg));
}
static int d_saga_scan(saga_store *self, unsigned mask, saga_record_cb cb,
                       void *arg)
{
    FWD(INNER(self)->saga_scan(INNER(self), mask, cb, arg));
}
static int d_journal_append(saga_store *self, const saga_journal_entry *e)
{
    FWD(INNER(self)->journal_append(INNER(self), e));
}
static int d_journal_scan(saga_store *self, const char *id, saga_journal_cb cb,
                          void *arg)
{
    FWD(INNER(self)->journal_scan(INNER(self), id, cb, arg));
}
static int d_idem_put(saga_store *self, const char *k, const char *id,
                      int64_t ms)
{
    FWD(INNER(self)->idem_put(INNER(self), k, id, ms));
}
static int d_idem_get(saga_store *self, const char *k, char out[SAGA_ID_SIZE])
{
    FWD(INNER(self)->idem_get(INNER(self), k, out));
}
static int d_purge(saga_store *self, int64_t before, uint64_t *n)
{
    FWD(INNER(self)->purge(INNER(self), before, n));
}
static int d_outbox_put(saga_store *self, const saga_message *m)
{
    FWD(INNER(self)->outbox_put(INNER(self), m));
}
static int d_outbox_scan(saga_store *self, uint32_t limit, saga_message_cb cb,
                         void *arg)
{
    FWD(INNER(self)->outbox_scan(INNER(self), limit, cb, arg));
}
static int d_outbox_done(saga_store *self, const char *id)
{
    FWD(INNER(self)->outbox_done(INNER(self), id));
}
static int d_inbox_claim(saga_store *self, const char *id, int64_t now,
                         saga_blob_cb cb, void *arg)
{
    FWD(INNER(self)->inbox_claim(INNER(self), id, now, cb, arg));
}
static int d_inbox_reply(saga_store *self, const char *id, const void *r,
                         size_t n)
{
    FWD(INNER(self)->inbox_reply(INNER(self), id, r, n));
}
static int d_kv_get(saga_store *self, const char *k, saga_blob_cb cb, void *arg)
{
    FWD(INNER(self)->kv_get(INNER(self), k, cb, arg));
}
static int d_kv_put(saga_store *self, const char *k, const void *v, size_t n)
{
    FWD(INNER(self)->kv_put(INNER(self), k, v, n));
}
static int d_kv_scan(saga_store *self, const char *prefix, saga_kv_cb cb,
                     void *arg)
{
    FWD(INNER(self)->kv_scan(INNER(self), prefix, cb, arg));
}
static int d_kv_del(saga_store *self, const char *k)
{
    FWD(INNER(self)->kv_del(INNER(self), k));
}
static int d_savepoint(saga_store *self)
{
    FWD(INNER(self)->savepoint(INNER(self)));
}
static int d_savepoint_rollback(saga_store *self)
{
    FWD(INNER(self)->savepoint_rollback(INNER(self)));
}
static int d_savepoint_release(saga_store *self)
{
    FWD(INNER(self)->savepoint_release(INNER(self)));
}
static void *d_native(saga_store *self)
{
    (void)self;
    return NULL;
}
static const char *d_errmsg(saga_store *self)
{
    if (D(self)->dead || D(self)->errmsg[0])
        return D(self)->errmsg;
    return INNER(self)->errmsg(INNER(self));
}
/* The process is gone; the platter stays. */
static void d_close(saga_store *self) { free(self); }

int disk_new(world *w, proc *pr, disk **out)
{
    disk *dk = calloc(1, sizeof *dk);
    if (dk == NULL)
        return SAGA_ENOMEM;
    saga_store_init(&dk->base, SAGA_STORE_VERSION);
    saga_store *s = &dk->base;
    s->begin = d_begin;
    s->commit = d_commit;
    s->rollback = d_rollback;
    s->saga_put = d_saga_put;
    s->saga_get = d_saga_get;
    s->saga_scan = d_saga_scan;
    s->journal_append = d_journal_append;
    s->journal_scan = d_journal_scan;
    s->idem_put = d_idem_put;
    s->idem_get = d_idem_get;
    s->purge = d_purge;
    s->outbox_put = d_outbox_put;
    s->outbox_scan = d_outbox_scan;
    s->outbox_done = d_outbox_done;
    s->inbox_claim = d_inbox_claim;
    s->inbox_reply = d_inbox_reply;
    s->kv_get = d_kv_get;
    s->kv_put = d_kv_put;
    s->native_handle = d_native;
    s->errmsg = d_errmsg;
    s->close = d_close;
    /* version 2: forwarded when the platter has them */
    saga_store *in = pr->inner;
    if (in->version >= 2) {
        s->kv_scan = in->kv_scan ? d_kv_scan : NULL;
        s->kv_del = in->kv_del ? d_kv_del : NULL;
        s->savepoint = in->savepoint ? d_savepoint : NULL;
        s->savepoint_rollback = in->savepoint_rollback ? d_savepoint_rollback
                                                       : NULL;
        s->savepoint_release = in->savepoint_release ? d_savepoint_release
                                                     : NULL;
    }
    dk->w = w;
    dk->pr = pr;
    dk->inner = pr->inner;
    *out = dk;
    return SAGA_OK;
}

/*
 * plugins.c — what lib/ does with a plug-in's vtable before using it:
 * saga_store_init()/saga_transport_init() and their _free(), and
 * saga__plugins_check() (a known version, every required slot set).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "saga/store.h"
#include "saga/transport.h"

int saga_store_init(saga_store *s, unsigned int version)
{
    if (s == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_STORE_VERSION);
    memset(s, 0, sizeof *s);
    s->version = version;
    return SAGA_OK;
}

void saga_store_free(saga_store *s)
{
    if (s != NULL && s->close != NULL)
        s->close(s);
}

int saga_transport_init(saga_transport *t, unsigned int version)
{
    if (t == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_TRANSPORT_VERSION);
    memset(t, 0, sizeof *t);
    t->version = version;
    return SAGA_OK;
}

void saga_transport_free(saga_transport *t)
{
    if (t != NULL && t->close != NULL)
        t->close(t);
}

static int plugin_refuse(int rc, saga__log_fn log, void *log_arg,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int plugin_refuse(int rc, saga__log_fn log, void *log_arg,
                         const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log != NULL)
        log(SAGA_LOG_ERROR, NULL, -1, msg, log_arg);
    else
        fprintf(stderr, "libsaga error %s\n", msg);
    return rc;
}

int saga__plugins_check(const saga_store *s, const saga_transport *t,
                        saga__log_fn log, void *log_arg)
{
    if (s != NULL) {
        if (saga__check_version(s, SAGA_STORE_VERSION) != SAGA_OK)
            return plugin_refuse(SAGA_EVERSION, log, log_arg,
                                 "store: version %u is not supported (1..%d)",
                                 s->version, SAGA_STORE_VERSION);
            /* Every version-1 slot but native_handle is required. */
#define SLOT(name)                                                             \
    {                                                                          \
#name, s->name == NULL                                                 \
    }
        const struct {
            const char *name;
            int missing;
        } slots[] = {SLOT(begin),          SLOT(commit),
                     SLOT(rollback),       SLOT(saga_put),
                     SLOT(saga_get),       SLOT(saga_scan),
                     SLOT(journal_append), SLOT(journal_scan),
                     SLOT(idem_put),       SLOT(idem_get),
                     SLOT(purge),          SLOT(outbox_put),
                     SLOT(outbox_scan),    SLOT(outbox_done),
                     SLOT(inbox_claim),    SLOT(inbox_reply),
                     SLOT(kv_get),         SLOT(kv_put),
                     SLOT(errmsg),         SLOT(close)};
#undef SLOT
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
            if (slots[i].missing)
                return plugin_refuse(SAGA_EINVAL, log, log_arg,
                                     "store: required slot '%s' is NULL",
                                     slots[i].name);
    }
    if (t != NULL) {
        if (saga__check_version(t, SAGA_TRANSPORT_VERSION) != SAGA_OK)
            return plugin_refuse(SAGA_EVERSION, log, log_arg,
                                 "transport: version %u is not supported "
                                 "(1..%d)",
                                 t->version, SAGA_TRANSPORT_VERSION);
            /* Every version-1 slot is required; route (version 2) is not. */
#define SLOT(name)                                                             \
    {                                                                          \
#name, t->name == NULL                                                 \
    }
        const struct {
            const char *name;
            int missing;
        } slots[] = {SLOT(send), SLOT(subscribe), SLOT(ack), SLOT(errmsg),
                     SLOT(close)};
#undef SLOT
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
            if (slots[i].missing)
                return plugin_refuse(SAGA_EINVAL, log, log_arg,
                                     "transport: required slot '%s' is NULL",
                                     slots[i].name);
    }
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* write_batch by slots (store version 13)                                  */

typedef struct kv_cmp {
    const void *expect;
    size_t len;
    int equal;
} kv_cmp;

static void kv_cmp_cb(const void *buf, size_t len, void *arg)
{
    kv_cmp *c = arg;
    c->equal = c->expect != NULL && len == c->len &&
               (len == 0 || memcmp(buf, c->expect, len) == 0);
}

/* SAGA_OK if the key holds what @p k expects, SAGA_EBUSY if not. */
static int kv_expect(saga_store *s, const saga_kv_write *k)
{
    kv_cmp c = {k->expect, k->expect_len, 0};
    int rc = s->kv_get(s, k->key, kv_cmp_cb, &c);
    if (rc == SAGA_ENOTFOUND)
        return k->expect == NULL ? SAGA_OK : SAGA_EBUSY;
    if (rc != SAGA_OK)
        return rc;
    return c.equal ? SAGA_OK : SAGA_EBUSY;
}

static int kv_write(saga_store *s, const saga_kv_write *k)
{
    if (k->key == NULL || (k->val == NULL && k->len > 0) ||
        (k->expect == NULL && k->expect_len > 0))
        return SAGA_EINVAL;
    int rc = (k->flags & SAGA_KV_EXPECT) ? kv_expect(s, k) : SAGA_OK;
    if (rc != SAGA_OK)
        return rc;
    if (k->val != NULL)
        return s->kv_put(s, k->key, k->val, k->len);
    if (s->version >= 2 && s->kv_del != NULL)
        return s->kv_del(s, k->key);
    return SAGA_EINVAL;
}

int saga__store_write_by_slots(saga_store *s, const saga_batch_writes *w)
{
    if (w == NULL || (w->nsagas && (!w->sagas || !w->put_flags)) ||
        (w->nidem && !w->idem) || (w->noutbox && !w->outbox) ||
        (w->ndone && !w->done_ids) || (w->njournal && !w->journal) ||
        (w->nkv && !w->kv))
        return SAGA_EINVAL;
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    for (size_t i = 0; i < w->nsagas && rc == SAGA_OK; i++)
        rc = s->saga_put(s, &w->sagas[i], w->put_flags[i]);
    for (size_t i = 0; i < w->nidem && rc == SAGA_OK; i++)
        rc = s->idem_put(s, w->idem[i].key, w->idem[i].saga_id,
                         w->idem[i].created_ms);
    for (size_t i = 0; i < w->noutbox && rc == SAGA_OK; i++)
        rc = s->outbox_put(s, &w->outbox[i]);
    for (size_t i = 0; i < w->ndone && rc == SAGA_OK; i++)
        rc = s->outbox_done(s, w->done_ids[i]);
    for (size_t i = 0; i < w->njournal && rc == SAGA_OK; i++)
        rc = s->journal_append(s, &w->journal[i]);
    for (size_t i = 0; i < w->nkv && rc == SAGA_OK; i++)
        rc = kv_write(s, &w->kv[i]);
    if (rc == SAGA_OK)
        return s->commit(s);
    s->rollback(s);
    return rc;
}

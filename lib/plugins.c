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

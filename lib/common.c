/*
 * common.c — version, error codes, the allocator hook, enum names and the
 * plug-in init helpers.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "saga/store.h"
#include "saga/transport.h"

/* The reason the last constructor on this thread failed: constructors have
 * no object yet to keep it in (saga_open_errmsg()). */
static _Thread_local char open_err[512];

const char *saga_open_errmsg(void) { return open_err; }

void saga_open_errmsg_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(open_err, sizeof open_err, fmt, ap);
    va_end(ap);
}

int saga_version(void) { return SAGA_VERSION_NUMBER; }
const char *saga_version_string(void) { return SAGA_VERSION_STRING; }

const char *saga_strerror(int err)
{
    switch (err) {
    case SAGA_OK:
        return "success";
#define XX(name, val, msg)                                                     \
    case SAGA_##name:                                                          \
        return msg;
        SAGA_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *saga_err_name(int err)
{
    switch (err) {
    case SAGA_OK:
        return "SAGA_OK";
#define XX(name, val, msg)                                                     \
    case SAGA_##name:                                                          \
        return "SAGA_" #name;
        SAGA_ERRNO_MAP(XX)
#undef XX
    default:
        return "SAGA_UNKNOWN";
    }
}

/* The allocator is process-wide, like uv_replace_allocator(): it must be set
 * before anything is allocated, so plain statics are enough. */
static saga_malloc_fn g_malloc = malloc;
static saga_realloc_fn g_realloc = realloc;
static saga_free_fn g_free = free;

int saga_replace_allocator(saga_malloc_fn m, saga_realloc_fn r, saga_free_fn f)
{
    if (m == NULL || r == NULL || f == NULL)
        return SAGA_EINVAL;
    g_malloc = m;
    g_realloc = r;
    g_free = f;
    return SAGA_OK;
}

void *saga_malloc(size_t size) { return g_malloc(size ? size : 1); }
void *saga_realloc(void *ptr, size_t size)
{
    return g_realloc(ptr, size ? size : 1);
}
void saga_free(void *ptr)
{
    if (ptr != NULL)
        g_free(ptr);
}

const char *saga_state_name(saga_state s)
{
    switch (s) {
    case SAGA_STATE_RUNNING:
        return "RUNNING";
    case SAGA_STATE_COMPENSATING:
        return "COMPENSATING";
    case SAGA_STATE_COMPLETED:
        return "COMPLETED";
    case SAGA_STATE_COMPENSATED:
        return "COMPENSATED";
    case SAGA_STATE_FAILED:
        return "FAILED";
    }
    return "UNKNOWN";
}

const char *saga_journal_kind_name(saga_journal_kind ev)
{
    static const char *const names[] = {
        "UNKNOWN",      "STARTED",       "STEP_OK",      "STEP_FAIL",
        "STEP_RETRY",   "STEP_TIMEOUT",  "COMP_OK",      "COMP_FAIL",
        "COMP_TIMEOUT", "COMPLETED",     "COMPENSATING", "COMPENSATED",
        "FAILED",       "OPERATOR_RETRY", "OPERATOR_COMPENSATE",
        "OPERATOR_RESOLVE"};
    if ((int)ev < 1 || (size_t)ev >= sizeof names / sizeof names[0])
        return names[0];
    return names[ev];
}

int saga_store_init(saga_store *s, unsigned int version)
{
    if (s == NULL)
        return SAGA_EINVAL;
    if (version == 0 || version > SAGA_STORE_VERSION)
        return SAGA_EVERSION;
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
    if (version == 0 || version > SAGA_TRANSPORT_VERSION)
        return SAGA_EVERSION;
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
        if (s->version == 0 || s->version > SAGA_STORE_VERSION)
            return plugin_refuse(SAGA_EVERSION, log, log_arg,
                                 "store: version %u is not supported (1..%d)",
                                 s->version, SAGA_STORE_VERSION);
        /* Every version-1 slot but native_handle is required. */
#define SLOT(name)                                                             \
    {#name, s->name == NULL}
        const struct {
            const char *name;
            int missing;
        } slots[] = {SLOT(begin),          SLOT(commit),      SLOT(rollback),
                     SLOT(saga_put),       SLOT(saga_get),    SLOT(saga_scan),
                     SLOT(journal_append), SLOT(journal_scan), SLOT(idem_put),
                     SLOT(idem_get),       SLOT(purge),       SLOT(outbox_put),
                     SLOT(outbox_scan),    SLOT(outbox_done), SLOT(inbox_claim),
                     SLOT(inbox_reply),    SLOT(kv_get),      SLOT(kv_put),
                     SLOT(errmsg),         SLOT(close)};
#undef SLOT
        for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++)
            if (slots[i].missing)
                return plugin_refuse(SAGA_EINVAL, log, log_arg,
                                     "store: required slot '%s' is NULL",
                                     slots[i].name);
    }
    if (t != NULL) {
        if (t->version == 0 || t->version > SAGA_TRANSPORT_VERSION)
            return plugin_refuse(SAGA_EVERSION, log, log_arg,
                                 "transport: version %u is not supported "
                                 "(1..%d)", t->version, SAGA_TRANSPORT_VERSION);
        /* Every version-1 slot is required; route (version 2) is not. */
#define SLOT(name)                                                             \
    {#name, t->name == NULL}
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
/* Time and randomness shared by the engine and participants                */

int64_t saga__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64: small, fast, and good enough for jitter and ids; the point is
 * that a seed replays a run. */
uint64_t saga__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t saga__os_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof s) != (ssize_t)sizeof s)
            s = 0;
        close(fd);
    }
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
            (uint64_t)getpid();
    }
    return s ? s : 1;
}

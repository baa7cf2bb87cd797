/*
 * trace.c — W3C trace context for sagas and structured log events
 * (include/saga/trace.h).
 *
 * The span id of an attempt is a hash of (saga id, step, attempt,
 * direction): deterministic, so a command re-sent after a restart carries
 * the same span, and a seeded run replays with the same ids.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "engine_int.h"
#include "participant_int.h"
#include "saga/trace.h"

static int is_hex(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        nonzero |= c != '0';
    }
    return nonzero;
}

int saga_traceparent_valid(const char *tp)
{
    /* 00-<32 hex>-<16 hex>-<2 hex> */
    if (tp == NULL || strlen(tp) != SAGA_TRACEPARENT_SIZE - 1)
        return 0;
    if (tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' ||
        tp[52] != '-')
        return 0;
    return is_hex(tp + 3, 32) && is_hex(tp + 36, 16) &&
           (is_hex(tp + 53, 2) || (tp[53] == '0' && tp[54] == '0'));
}

/* The trace id and flags of a saga: from its stored traceparent, else its
 * own id. @p trace gets 32 hex + NUL. */
static void saga_trace(const void *data, size_t len, const char *saga_id,
                       char trace[SAGA_TRACE_ID_SIZE], char flags[3])
{
    const char *tp = NULL;
    size_t n = 0;
    if (data != NULL &&
        saga_data_get_str(data, len, SAGA_TRACE_KEY, &tp, &n) == SAGA_OK &&
        n == SAGA_TRACEPARENT_SIZE - 1) {
        char buf[SAGA_TRACEPARENT_SIZE];
        memcpy(buf, tp, n);
        buf[n] = '\0';
        if (saga_traceparent_valid(buf)) {
            memcpy(trace, buf + 3, 32);
            trace[32] = '\0';
            memcpy(flags, buf + 53, 2);
            flags[2] = '\0';
            return;
        }
    }
    snprintf(trace, SAGA_TRACE_ID_SIZE, "%.32s", saga_id ? saga_id : "");
    if (strlen(trace) != 32 || !is_hex(trace, 32))
        snprintf(trace, SAGA_TRACE_ID_SIZE, "%032x", 1u);
    memcpy(flags, "01", 3);
}

int saga_step_traceparent(const void *data, size_t len,
                          const saga_step_ref *ref,
                          char out[SAGA_TRACEPARENT_SIZE])
{
    if (ref == NULL || out == NULL)
        return SAGA_EINVAL;
    char trace[SAGA_TRACE_ID_SIZE], flags[3];
    saga_trace(data, len, ref->saga_id, trace, flags);
    /* FNV-1a over the attempt's identity, then one splitmix64 round. */
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ref->saga_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint32_t parts[3] = {ref->step, ref->attempt, ref->compensating};
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++)
            h = (h ^ ((parts[i] >> (8 * b)) & 0xffu)) * 1099511628211ull;
    uint64_t span = saga__splitmix64(&h);
    if (span == 0)
        span = 1;
    snprintf(out, SAGA_TRACEPARENT_SIZE, "00-%s-%016llx-%s", trace,
             (unsigned long long)span, flags);
    return SAGA_OK;
}

int saga_start_traced(saga_engine *e, const char *def_name,
                      const char *idem_key, const void *data, size_t len,
                      const char *traceparent, char id_out[SAGA_ID_SIZE],
                      saga_start_cb cb, void *arg)
{
    if (e == NULL || !saga_traceparent_valid(traceparent))
        return saga_start(e, def_name, idem_key, data, len, id_out, cb, arg);
    const char *old = NULL;
    size_t olen = 0;
    if (data != NULL && len > 0 &&
        saga_data_get_str(data, len, SAGA_TRACE_KEY, &old, &olen) == SAGA_OK &&
        (olen != strlen(traceparent) || memcmp(old, traceparent, olen) != 0))
        return saga__err(e, SAGA_EINVAL, "the data holds another %s",
                         SAGA_TRACE_KEY);
    saga_map *m;
    int rc = saga_map_new(&m);
    if (rc != SAGA_OK)
        return rc;
    const void *add;
    size_t addlen;
    rc = saga_map_set_str(m, SAGA_TRACE_KEY, traceparent);
    if (rc == SAGA_OK)
        rc = saga_map_encode(m, &add, &addlen);
    void *merged = NULL;
    size_t mlen = 0;
    if (rc == SAGA_OK)
        rc = saga__data_merge(len ? data : NULL, len, add, addlen, &merged,
                              &mlen);
    saga_map_free(m);
    if (rc != SAGA_OK)
        return rc == SAGA_ENOMEM ? rc
                                 : saga__err(e, SAGA_EINVAL,
                                             "saga data must be a msgpack map");
    rc = saga_start(e, def_name, idem_key, merged, mlen, id_out, cb, arg);
    saga_free(merged);
    return rc;
}

const char *saga_log_level_name(saga_log_level level)
{
    static const char *const names[] = {"unknown", "debug", "info", "warn",
                                        "error"};
    unsigned i = (unsigned)level <= SAGA_LOG_ERROR ? (unsigned)level : 0;
    return names[i];
}

void saga_log_sink_text(const saga_log_event *ev, void *arg)
{
    FILE *f = arg ? arg : stderr;
    time_t t = (time_t)(ev->at_ms / 1000);
    struct tm tm;
    char ts[32];
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ev->saga_id != NULL)
        fprintf(f,
                "%s.%03dZ %-5s %s [saga %s step %d attempt %u trace %s] "
                "%s\n",
                ts, (int)(ev->at_ms % 1000), saga_log_level_name(ev->level),
                ev->service ? ev->service : "-", ev->saga_id, ev->step,
                ev->attempt, ev->trace_id ? ev->trace_id : "-", ev->message);
    else
        fprintf(f, "%s.%03dZ %-5s %s %s\n", ts, (int)(ev->at_ms % 1000),
                saga_log_level_name(ev->level), ev->service ? ev->service : "-",
                ev->message);
}

/* The fields every log event has; the caller adds attempt and trace id. */
static saga_log_event log_event_of(saga_log_level lvl, int64_t at_ms,
                                   const char *service, const char *saga_id,
                                   int step, const char *msg)
{
    saga_log_event ev;
    memset(&ev, 0, sizeof ev);
    ev.version = 1;
    ev.level = lvl;
    ev.at_ms = at_ms;
    ev.service = service;
    ev.saga_id = saga_id;
    ev.step = step;
    ev.message = msg;
    return ev;
}

void saga__log_event(void *engine, saga_log_level lvl, const char *saga_id,
                     int step, const char *msg)
{
    saga_engine *e = engine;
    saga_log_event ev = log_event_of(lvl, saga__now(e), e->opts.service,
                                     saga_id, step, msg);
    char trace[SAGA_TRACE_ID_SIZE], flags[3];
    if (saga_id != NULL) {
        /* Attempt and trace from the saga in memory, when it is there. */
        saga__inst *in = saga__inst_find(e, saga_id);
        if (in != NULL && in->step == step)
            ev.attempt = in->attempt;
        saga_trace(in ? in->data : NULL, in ? in->data_len : 0, saga_id, trace,
                   flags);
        ev.trace_id = trace;
    }
    e->opts.log_event(&ev, e->opts.log_event_arg);
}

void saga__plog_event(saga_participant *p, saga_log_level lvl, const char *id,
                      int step, const char *msg)
{
    saga_log_event ev = log_event_of(lvl, saga__pnow(p), p->opts.service, id,
                                     step, msg);
    char trace[SAGA_TRACE_ID_SIZE];
    const saga_envelope *env = p->cur;
    if (env != NULL && id != NULL && strcmp(env->saga_id, id) == 0) {
        ev.attempt = env->attempt;
        if (saga_traceparent_valid(env->trace)) {
            memcpy(trace, env->trace + 3, 32);
            trace[32] = '\0';
            ev.trace_id = trace;
        }
    }
    if (ev.trace_id == NULL && id != NULL && strlen(id) == 32 && is_hex(id, 32))
        ev.trace_id = id;
    p->opts.log_event(&ev, p->opts.log_event_arg);
}

saga_store *saga_engine_store(saga_engine *e) { return e ? e->store : NULL; }

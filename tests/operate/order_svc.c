/*
 * order_svc — a small service on a SQLite store for the operations tests
 * (sagactl, the console, metrics): definition "order" v1 with
 *   reserve-stock  compensatable (undo: release-stock)
 *   charge-card    pivot; FAILs when the order's amount is over 1000
 *   ship           retriable
 * release-stock fails its first --comp-failures invocations in this process
 * (and has a budget of 2 attempts), so an order over 1000 ends FAILED when
 * that is 2 or more.
 *
 *   order_svc --store F --orders "100,2000,50" [--comp-failures N]
 *       start one order per amount, run until every saga ended, exit 0.
 *   order_svc --store F --serve [--until-idle] [--traceparent TP]
 *       run the engine on F (recovery, operator requests from sagactl or
 *       the console) until SIGTERM, or with --until-idle until no saga is
 *       active (at least 1 s, so that queued operator requests are seen).
 *   --console HOST:PORT --token T   also mount the console and /metrics.
 *   --log-format json               structured logs as JSON lines.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>
#ifdef ORDER_SVC_CONSOLE
#include "console.h"
#endif

static int comp_failures;
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void log_attempt(saga_engine *e, const saga_step_ref *ref,
                        const char *what, const void *data, size_t len)
{
    char tp[SAGA_TRACEPARENT_SIZE];
    if (saga_step_traceparent(data, len, ref, tp) == SAGA_OK)
        fprintf(stderr,
                "order_svc: %s saga=%s step=%u attempt=%u "
                "traceparent=%s\n",
                what, ref->saga_id, ref->step, ref->attempt, tp);
    (void)e;
}

static void reserve(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t len, void *arg)
{
    (void)arg;
    log_attempt(e, ref, "reserve-stock", d, len);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void release(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t len, void *arg)
{
    (void)arg;
    log_attempt(e, ref, "release-stock", d, len);
    if (comp_failures > 0) {
        comp_failures--;
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0,
                           "warehouse API unavailable");
        return;
    }
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void charge(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t len, void *arg)
{
    (void)arg;
    log_attempt(e, ref, "charge-card", d, len);
    int64_t amount = 0;
    saga_data_get_int(d, len, "amount", &amount);
    if (amount > 1000) {
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0,
                           "card declined: insufficient funds");
        return;
    }
    saga_map *m;
    saga_map_new(&m);
    saga_map_set_str(m, "payment_id", "pay-0001");
    const void *out;
    size_t olen;
    saga_map_encode(m, &out, &olen);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, out, olen, NULL);
    saga_map_free(m);
}

static void ship(saga_engine *e, const saga_step_ref *ref, const void *d,
                 size_t len, void *arg)
{
    (void)arg;
    log_attempt(e, ref, "ship", d, len);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static int define(saga_engine *e)
{
    saga_def *d;
    saga_def_new(&d, "order", 1);
    saga_step_options o;
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.comp_retry.max_attempts = 2;
    o.comp_retry.initial_backoff_ms = 10;
    o.comp_retry.jitter = SAGA_JITTER_NONE;
    saga_def_add_step(d, "reserve-stock", reserve, release, &o, NULL);
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.kind = SAGA_STEP_PIVOT;
    o.retry.max_attempts = 1;
    saga_def_add_step(d, "charge-card", charge, NULL, &o, NULL);
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.kind = SAGA_STEP_RETRIABLE;
    saga_def_add_step(d, "ship", ship, NULL, &o, NULL);
    return saga_engine_register(e, d);
}

typedef struct run {
    int idle_exit;
    int64_t started;
    saga_engine *e;
} run;

static void tick(uv_timer_t *t)
{
    run *r = t->data;
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(r->e, &st);
    int64_t now = saga_engine_now(r->e);
    if (stop_flag ||
        (r->idle_exit && st.active == 0 && now - r->started >= 1500))
        uv_stop(t->loop);
}

int main(int argc, char **argv)
{
    const char *store_path = NULL, *orders = NULL, *traceparent = NULL;
    const char *listen = NULL, *token = NULL;
    int serve = 0, until_idle = 0, json_logs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--store") && v)
            store_path = v, i++;
        else if (!strcmp(a, "--orders") && v)
            orders = v, i++;
        else if (!strcmp(a, "--comp-failures") && v)
            comp_failures = atoi(v), i++;
        else if (!strcmp(a, "--traceparent") && v)
            traceparent = v, i++;
        else if (!strcmp(a, "--console") && v)
            listen = v, i++;
        else if (!strcmp(a, "--token") && v)
            token = v, i++;
        else if (!strcmp(a, "--serve"))
            serve = 1;
        else if (!strcmp(a, "--until-idle"))
            until_idle = 1;
        else if (!strcmp(a, "--log-format") && v)
            json_logs = !strcmp(v, "json"), i++;
        else {
            fprintf(stderr, "order_svc: bad argument %s\n", a);
            return 2;
        }
    }
    if (store_path == NULL || (!serve && orders == NULL)) {
        fprintf(stderr, "usage: order_svc --store F (--orders A,B,.. | "
                        "--serve [--until-idle])\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    saga_store *st;
    /* NORMAL: WAL keeps commits atomic; the tests need no fsync per
     * commit on a shared, busy disk. */
    saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
    so.synchronous = 1;
    if (saga_store_sqlite_open(&st, store_path, &so) != SAGA_OK) {
        fprintf(stderr, "order_svc: cannot open %s\n", store_path);
        return 1;
    }
    saga_engine_options eo;
    saga_engine_options_init(&eo, SAGA_ENGINE_OPTIONS_VERSION);
    eo.loop = uv_default_loop();
    eo.log_level = SAGA_LOG_INFO;
    eo.service = "order";
#ifdef ORDER_SVC_CONSOLE
    eo.log_event = json_logs ? saga_console_log_json : saga_log_sink_text;
#else
    eo.log_event = saga_log_sink_text;
    (void)json_logs;
#endif
    eo.log_event_arg = stderr;
    saga_engine *e;
    if (saga_engine_new(&e, st, NULL, &eo) != SAGA_OK)
        return 1;
    saga_engine_set_control_poll(e, 200);
    if (define(e) != SAGA_OK || saga_engine_start(e) != SAGA_OK) {
        fprintf(stderr, "order_svc: %s\n", saga_engine_errmsg(e));
        return 1;
    }
#ifdef ORDER_SVC_CONSOLE
    h2o_globalconf_t conf;
    saga_console *console = NULL;
    if (listen != NULL) {
        h2o_config_init(&conf);
        conf.http1.upgrade_to_http2 = 0;
        h2o_hostconf_t *host = h2o_config_register_host(
            &conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
        saga_console_config cc = {saga_engine_store(e), e, token, 0};
        if (token == NULL || saga_console_new(&console, &cc) != SAGA_OK) {
            fprintf(stderr, "order_svc: --console needs --token (8+)\n");
            return 2;
        }
        saga_console_mount(console, host);
        saga_console_mount_metrics(host, e, NULL, 0);
        saga_http_server *srv;
        char err[256];
        if (saga_http_listen(&srv, uv_default_loop(), &conf, listen, err,
                             sizeof err) != 0) {
            fprintf(stderr, "order_svc: %s\n", err);
            return 1;
        }
    }
#else
    (void)listen;
    (void)token;
#endif
    if (orders != NULL) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", orders);
        int n = 0;
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            saga_map *m;
            saga_map_new(&m);
            char oid[32];
            snprintf(oid, sizeof oid, "ord-%d-%s", ++n, tok);
            saga_map_set_str(m, "order_id", oid);
            saga_map_set_int(m, "amount", atoll(tok));
            saga_map_set_str(m, "customer", "c-42");
            const void *d;
            size_t len;
            saga_map_encode(m, &d, &len);
            char id[SAGA_ID_SIZE];
            int rc = traceparent
                         ? saga_start_traced(e, "order", NULL, d, len,
                                             traceparent, id, NULL, NULL)
                         : saga_start(e, "order", NULL, d, len, id, NULL, NULL);
            saga_map_free(m);
            if (rc != SAGA_OK) {
                fprintf(stderr, "order_svc: start: %s\n",
                        saga_engine_errmsg(e));
                return 1;
            }
            printf("%s %s\n", id, oid);
        }
        fflush(stdout);
        until_idle = 1;
    }
    run r = {until_idle, saga_engine_now(e), e};
    uv_timer_t t;
    uv_timer_init(uv_default_loop(), &t);
    t.data = &r;
    uv_timer_start(&t, tick, 50, 50);
    if (serve)
        fprintf(stderr, "order_svc: serving %s\n", store_path);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    saga_engine_free(e);
#ifdef ORDER_SVC_CONSOLE
    saga_console_free(console);
#endif
    return 0;
}

/*
 * xp_orch.c — the orchestrator process of the cross-process test.
 *
 *   xp_orch DB PORT INV_PORT PAY_PORT N RATE STATUS [T0_MS]
 *
 * An engine on a SQLite file and a TCP transport runs N sagas of
 * "checkout" (reserve @inventory, compensatable; charge @payment, the
 * pivot; ship @inventory, retriable), started at RATE per second with
 * idempotency keys xp-0 .. xp-(N-1). Every 10 ms it writes
 * "started acked terminal active failed" to STATUS (write + rename). It
 * exits 0 once every saga is started and none is active. T0_MS (wall
 * clock) is when the starts began: a restarted orchestrator is given the
 * first one's, and re-issues the keys due by now (they exist already).
 *
 * With XP_KAFKA=kafka://... in the environment it runs over Kafka instead
 * (the ports are ignored) and starts sagas once its reply consumer has
 * partitions; XP_STEP_TIMEOUT_MS changes the step timeout.
 *
 * Step timeouts are 500 ms, so a killed participant causes timeouts,
 * retries, late (stale) replies and compensations of steps that may have
 * applied. The pivot is retried (almost) forever so that it never gives up
 * with a maybe-applied charge (which would end FAILED, for an operator).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <saga/saga.h>

#include "xp_common.h"

static saga_engine *E;
static int n_total, rate, next_i, acked, closing, exit_code = 1;
static const char *status_path;
static uv_timer_t starter, status;
static uv_signal_t sigterm;
static saga_transport *T;
static const char *kafka_url;

static void on_started(saga_engine *e, int st, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)id, (void)existed, (void)arg;
    if (st == SAGA_OK)
        acked++;
    else
        fprintf(stderr, "xp_orch: start failed: %s\n", saga_strerror(st));
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t t0_wall; /* when the first incarnation began starting */
#ifdef XP_WITH_KAFKA
static int64_t began_ms; /* when this incarnation began */
static int kafka_ready;
#endif

static void start_some(uv_timer_t *h)
{
    /* Open loop: the starts due by now, whatever the sagas are doing. A
     * restarted orchestrator catches up at once: the keys it started
     * already name their sagas and start nothing. */
#ifdef XP_WITH_KAFKA
    /* Replies would wait in Kafka until our consumer joins its group;
     * steps would time out meanwhile. */
    if (kafka_url != NULL && !kafka_ready) {
        if (xp_kafka_assigned(T) == 0)
            return;
        /* The schedule starts now: no burst of the starts due while we
         * waited (re-issued keys would start nothing anyway). */
        kafka_ready = 1;
        t0_wall += wall_ms() - began_ms;
    }
#endif
    int64_t el = wall_ms() - t0_wall;
    int due = (int)((el > 0 ? el : 0) * rate / 1000) + 1;
    while (next_i < n_total && next_i < due) {
        char key[32], id[SAGA_ID_SIZE];
        snprintf(key, sizeof key, "xp-%d", next_i);
        saga_map *m;
        const void *b;
        size_t n;
        saga_map_new(&m);
        saga_map_set_int(m, "i", next_i);
        saga_map_encode(m, &b, &n);
        int rc = saga_start(E, XP_DEF, key, b, n, id, on_started, NULL);
        saga_map_free(m);
        if (rc != SAGA_OK) {
            fprintf(stderr, "xp_orch: saga_start: %s (%s)\n", saga_strerror(rc),
                    saga_engine_errmsg(E));
            return; /* tried again on the next tick */
        }
        next_i++;
    }
    if (next_i == n_total)
        uv_timer_stop(h);
}

static int count_cb(const char *id, saga_state st, const char *def, void *arg)
{
    (void)id, (void)def;
    ((int *)arg)[st]++;
    return 0;
}

static void engine_closed(void *arg)
{
    (void)arg;
    uv_close((uv_handle_t *)&starter, NULL);
    uv_close((uv_handle_t *)&status, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
}

static void finish(int code)
{
    if (closing)
        return;
    closing = 1;
    exit_code = code;
    saga_engine_counters s = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(E, &s);
    printf("xp_orch: started=%llu completed=%llu compensated=%llu "
           "failed=%llu steps_ok=%llu timeouts=%llu retries=%llu "
           "compensations=%llu stale=%llu commits=%llu\n",
           (unsigned long long)s.started, (unsigned long long)s.completed,
           (unsigned long long)s.compensated, (unsigned long long)s.failed,
           (unsigned long long)s.steps_ok, (unsigned long long)s.timeouts,
           (unsigned long long)s.retries, (unsigned long long)s.compensations,
           (unsigned long long)s.stale_completions,
           (unsigned long long)s.commits);
    fflush(stdout);
    uv_timer_stop(&starter);
    uv_timer_stop(&status);
    saga_engine_close(E, engine_closed, NULL);
}

static void write_status(uv_timer_t *h)
{
    (void)h;
    int by[8] = {0};
    if (saga_list(E, SAGA_STATE_MASK_ALL, count_cb, by) != SAGA_OK)
        return;
    int active = by[SAGA_STATE_RUNNING] + by[SAGA_STATE_COMPENSATING];
    int terminal = by[SAGA_STATE_COMPLETED] + by[SAGA_STATE_COMPENSATED];
    int failed = by[SAGA_STATE_FAILED];
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", status_path);
    FILE *f = fopen(tmp, "w");
    if (f != NULL) {
        fprintf(f, "%d %d %d %d %d\n", next_i, acked, terminal, active, failed);
        fclose(f);
        rename(tmp, status_path);
    }
    if (next_i == n_total && acked == n_total && active == 0)
        finish(failed ? 4 : 0);
}

static void on_sigterm(uv_signal_t *h, int sig)
{
    (void)h, (void)sig;
    finish(3);
}

static void tlog(saga_log_level l, const char *saga_id, int step,
                 const char *msg, void *arg)
{
    (void)arg;
    if (l >= SAGA_LOG_WARN)
        fprintf(stderr, "xp_orch transport: %s\n", msg);
}

static uint32_t step_timeout_ms = 500;

static int define(void)
{
    saga_def *d;
    if (saga_def_new(&d, XP_DEF, 1) != SAGA_OK)
        return -1;
    saga_step_options o[XP_NSTEPS];
    for (int i = 0; i < XP_NSTEPS; i++) {
        saga_step_options_init(&o[i], SAGA_STEP_OPTIONS_VERSION);
        o[i].service = xp_step_service[i];
        o[i].command = xp_step_name[i];
        o[i].timeout_ms = step_timeout_ms;
        o[i].retry.max_backoff_ms = 400;
        o[i].comp_retry.max_backoff_ms = 400;
    }
    /* reserve: the default 3 attempts, so a long outage makes it give up
     * and compensate a step that may have applied. */
    o[0].kind = SAGA_STEP_COMPENSATABLE;
    o[0].comp_command = "reserve";
    o[1].kind = SAGA_STEP_PIVOT;
    o[1].retry.max_attempts = 100000;
    o[2].kind = SAGA_STEP_RETRIABLE;
    for (int i = 0; i < XP_NSTEPS; i++)
        if (saga_def_add_step(d, xp_step_name[i], NULL, NULL, &o[i], NULL) !=
            SAGA_OK) {
            fprintf(stderr, "xp_orch: %s\n", saga_def_errmsg(d));
            saga_def_free(d);
            return -1;
        }
    if (saga_engine_register(E, d) != SAGA_OK) {
        fprintf(stderr, "xp_orch: register: %s\n", saga_engine_errmsg(E));
        saga_def_free(d);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: xp_orch DB PORT INV_PORT PAY_PORT N RATE "
                        "STATUS [T0_MS]\n");
        return 2;
    }
    n_total = atoi(argv[5]);
    t0_wall = argc == 9 ? strtoll(argv[8], NULL, 10) : wall_ms();
#ifdef XP_WITH_KAFKA
    began_ms = wall_ms();
#endif
    rate = atoi(argv[6]);
    status_path = argv[7];
    if (n_total <= 0 || rate <= 0)
        return 2;
    uv_loop_t *loop = uv_default_loop();
    saga_store *store;
    int rc = saga_store_sqlite_open(&store, argv[1], NULL);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_orch: open %s: %s\n", argv[1], saga_strerror(rc));
        return 1;
    }
    char listen[64], inv[64], pay[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", argv[2]);
    snprintf(inv, sizeof inv, "127.0.0.1:%s", argv[3]);
    snprintf(pay, sizeof pay, "127.0.0.1:%s", argv[4]);
    saga_tcp_peer peers[2] = {{XP_INV, inv}, {XP_PAY, pay}};
    saga_tcp_options to = SAGA_TCP_OPTIONS_INIT;
    to.service = XP_ORCH;
    to.listen = listen;
    to.peers = peers;
    to.npeers = 2;
    to.reconnect_max_ms = 200;
    to.log = tlog;
    saga_transport *t;
    if (getenv("XP_STEP_TIMEOUT_MS") != NULL)
        step_timeout_ms = (uint32_t)atoi(getenv("XP_STEP_TIMEOUT_MS"));
    kafka_url = getenv("XP_KAFKA");
    if (kafka_url != NULL) {
#ifdef XP_WITH_KAFKA
        rc = xp_kafka_new(&t, loop, kafka_url, tlog);
#else
        fprintf(stderr, "xp_orch: built without the Kafka transport\n");
        return 2;
#endif
    } else {
        rc = saga_transport_tcp_new(&t, loop, &to);
    }
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_orch: transport (%s): %s\n",
                kafka_url ? kafka_url : listen, saga_strerror(rc));
        return 1;
    }
    T = t;
    saga_engine_options eo = SAGA_ENGINE_OPTIONS_INIT;
    eo.loop = loop;
    eo.service = XP_ORCH;
    eo.log_level = SAGA_LOG_WARN;
    rc = saga_engine_new(&E, store, t, &eo);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_orch: engine: %s\n", saga_strerror(rc));
        return 1;
    }
    if (define() != 0)
        return 1;
    rc = saga_engine_start(E);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_orch: start: %s\n", saga_engine_errmsg(E));
        return 1;
    }
    uv_timer_init(loop, &starter);
    uv_timer_init(loop, &status);
    uv_signal_init(loop, &sigterm);
    /* Bursts every 500 ms: many sagas in flight at once, for the kills to
     * land among. */
    uv_timer_start(&starter, start_some, 0, 500);
    uv_timer_start(&status, write_status, 10, 10);
    uv_signal_start(&sigterm, on_sigterm, SIGTERM);
    /* The driver starts us with SIGTERM blocked (see xp_driver.c). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &term, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return exit_code;
}

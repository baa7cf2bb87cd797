/*
 * main.c — saga-checkout: the seed's checkout system on libsaga.
 *
 *   saga-checkout serve --data DIR --listen HOST:PORT [--catalog FILE]
 *   saga-checkout demo [--serve] [--listen HOST:PORT]
 *   saga-checkout service NAME --data DIR --config FILE
 *
 * serve runs the seven services in one process (one SQLite file per
 * service in DIR, the in-memory transport, one HTTP port) on two threads
 * by default (--threads N): the order service and the HTTP front on the
 * main loop, the six participants on the other loops, over one shared
 * in-memory bus (saga_inmem_bus_new_shared); service runs one
 * of them over the TCP transport (the config file names every endpoint; see
 * docs/checkout-api.md).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ck.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: saga-checkout serve --data DIR --listen HOST:PORT "
            "[--catalog FILE] [--store URL] [--threads N]\n"
            "       saga-checkout demo [--serve] [--listen HOST:PORT] "
            "[--url URL] [--store URL]\n"
            "       saga-checkout service NAME --data DIR --config FILE "
            "[--transport kafka://HOST:PORT[?prop=value&...]] [--store URL]\n"
            "--store postgres://USER@HOST:PORT/DB[?schema=PREFIX]: every "
            "service in its own\n  schema of that database (default: "
            "SQLite files in DIR)\n"
            "options: --log-format json (JSON-lines logs); CK_ADMIN_TOKEN "
            "in the environment\n  turns on the operator console at "
            "/console/ (GET /metrics is always served)\n"
            "--threads N (serve, 1-%d, default 2): the order service and "
            "the HTTP front on one\n  loop, the other six services round "
            "robin on N-1 more loops, one thread each\n"
            "services: order cart inventory payment shipping warehouse "
            "notification\n",
            CK_NSVC);
}

/* --- life cycle ---------------------------------------------------------- */

static uv_signal_t sig_term, sig_int;

/* serve --threads N: the loops besides the main one, each with the
 * participants it runs. Stopped one after the other once the order
 * service closed (ck_services_close() is for one loop at a time). */
typedef struct ck_worker {
    ck_app app;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t stop;
    uv_sem_t ready; /* posted once its services are open (or failed) */
    unsigned mask;  /* the services it runs */
    int rc;         /* their start: 0 or -1 */
    int started;
    struct ck_worker *next;
} ck_worker;

static int start_services(ck_app *a, unsigned mask);

static ck_worker *workers; /* NULL when serve runs on one loop */
static int nworkers;

static void worker_closed(ck_app *a)
{
    ck_worker *w = (ck_worker *)a; /* app is the first member */
    if (w == &workers[0])
        ck_ckpt_close();
    uv_close((uv_handle_t *)&w->stop, NULL);
    if (w->next != NULL)
        uv_async_send(&w->next->stop);
    uv_stop(&w->loop);
}

static void worker_stop(uv_async_t *h)
{
    ck_worker *w = h->data;
    if (w->app.closing)
        return;
    w->app.closing = 1;
    ck_services_close(&w->app, worker_closed);
}

/* A worker thread: opens its services on its own loop (so that every
 * connection and prepared statement of them lives on this thread), tells
 * the main thread, and runs until stopped. */
static void worker_run(void *arg)
{
    ck_worker *w = arg;
    w->rc = -1;
    if (uv_loop_init(&w->loop) == 0 &&
        uv_async_init(&w->loop, &w->stop, worker_stop) == 0) {
        w->stop.data = w;
        w->app.loop = &w->loop;
        w->rc = start_services(&w->app, w->mask);
    }
    uv_sem_post(&w->ready);
    if (w->rc == 0)
        uv_run(&w->loop, UV_RUN_DEFAULT);
}

static void closed(ck_app *a)
{
    /* The order service is closed: now the participants, loop by loop
     * (main joins their threads after its own loop stops). */
    if (workers != NULL)
        uv_async_send(&workers[0].stop);
    uv_stop(a->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
    ck_app *a = s->data;
    if (a->closing)
        return;
    fprintf(stderr, "saga-checkout: signal %d, shutting down\n", signum);
    a->closing = 1;
    ck_http_stop(a);
    uv_signal_stop(&sig_term);
    uv_signal_stop(&sig_int);
    ck_services_close(a, closed);
}

/* Open the services in @p mask (bit i: service i), the order service last
 * (started once every other one here is up). */
static int start_services(ck_app *a, unsigned mask)
{
    int (*open[CK_NSVC])(ck_app *) = {ck_order_open,       ck_cart_open,
                                      ck_inventory_open,   ck_payment_open,
                                      ck_shipping_open,    ck_warehouse_open,
                                      ck_notification_open};
    /* The order service last: it reads the others' databases when they run
     * here, and opens its own connections when they do not. */
    for (int k = 1; k <= CK_NSVC; k++) {
        int i = k % CK_NSVC;
        if (!(mask & (1u << i)))
            continue;
        if (open[i](a) != 0) {
            fprintf(stderr, "saga-checkout: cannot start the %s service\n",
                    ck_svc_names[i]);
            return -1;
        }
    }
    if (mask & (1u << CK_SVC_ORDER))
        return ck_order_start(a);
    return 0;
}

#define CK_ALL_SVC ((1u << CK_NSVC) - 1)

/* serve --threads N > 1: the six participants round robin on N-1 loops of
 * their own, each opened and run by its thread (only that thread touches
 * them); the order service, opened afterwards on the main loop, reaches
 * them over the shared bus and reads their databases through its own
 * connections, as it does when they run in other processes. */
static int start_workers(ck_app *a, int threads)
{
    nworkers = threads - 1;
    workers = calloc((size_t)nworkers, sizeof *workers);
    if (workers == NULL)
        return -1;
    for (int k = 0; k < nworkers; k++) {
        ck_worker *w = &workers[k];
        w->app = *a; /* directory, catalogue, timing, options, bus */
        memset(w->app.svc, 0, sizeof w->app.svc);
        memset(w->app.state, 0, sizeof w->app.state);
        w->app.engine = NULL;
        w->app.http = NULL;
        w->app.npeer_parts = 0;
        w->next = k + 1 < nworkers ? &workers[k + 1] : NULL;
        for (int i = 1; i < CK_NSVC; i++)
            if ((i - 1) % nworkers == k)
                w->mask |= 1u << i;
        /* One at a time: the services' start-up is not made to run
         * concurrently (schema creation, catalogue seeding). */
        if (uv_sem_init(&w->ready, 0) != 0 ||
            uv_thread_create(&w->thread, worker_run, w) != 0)
            return -1;
        uv_sem_wait(&w->ready);
        if (w->rc != 0) {
            uv_thread_join(&w->thread);
            return -1;
        }
        w->started = 1;
        for (int i = 0; i < CK_NSVC; i++)
            if (w->app.svc[i] != NULL)
                a->peer_parts[a->npeer_parts++] = w->app.svc[i];
    }
    return 0;
}

static void join_workers(void)
{
    for (int k = 0; k < nworkers; k++)
        if (workers[k].started)
            uv_thread_join(&workers[k].thread);
}

/* Run until a signal; returns the exit code. @p only: one service (-1:
 * all); @p threads: loops for serve (1: everything on the main loop). */
static int run(ck_app *a, int only, const char *listen, int threads)
{
    signal(SIGPIPE, SIG_IGN);
    if (threads > 1) {
        if (start_workers(a, threads) != 0) {
            fprintf(stderr, "saga-checkout: cannot start the service "
                            "threads\n");
            /* Started threads run until the process exits. */
            return 1;
        }
        if (start_services(a, 1u << CK_SVC_ORDER) != 0)
            return 1;
        if (a->store == NULL && ck_ckpt_init() == 0) {
            /* The order participant's and the engine's SQLite files:
             * their checkpoints on a thread of their own (ckpt.c); without
             * it SQLite's own, on the main loop. */
            saga_store *es = saga_engine_store(a->engine);
            ck_ckpt_attach(saga_participant_store_handle(a->svc[CK_SVC_ORDER]));
            ck_ckpt_attach(es != NULL && es->native_handle != NULL
                               ? es->native_handle(es)
                               : NULL);
        }
    } else if (start_services(a, only < 0 ? CK_ALL_SVC : 1u << only) != 0)
        return 1;
    if (listen != NULL) {
        char bound[300];
        if (ck_http_start(a, listen, bound, sizeof bound) != 0)
            return 1;
        printf("listening on http://%s\n", bound);
        fflush(stdout);
    } else {
        /* A service without the REST front serves GET /metrics when the
         * config names an address for it: "metrics": {"cart": "H:P"}. */
        const char *m = json_string_value(
            json_object_get(json_object_get(a->config, "metrics"),
                            ck_svc_names[only]));
        if (m != NULL && ck_metrics_start(a, m) != 0)
            return 1;
        printf("service %s running\n", ck_svc_names[only]);
        fflush(stdout);
    }
    uv_signal_init(a->loop, &sig_term);
    uv_signal_init(a->loop, &sig_int);
    sig_term.data = sig_int.data = a;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_run(a->loop, UV_RUN_DEFAULT);
    join_workers();
    fprintf(stderr, "saga-checkout: stopped\n");
    return 0;
}

static int ck_log_json; /* --log-format json */

static void app_init(ck_app *a)
{
    memset(a, 0, sizeof *a);
    a->log_json = ck_log_json;
    const char *tok = getenv("CK_ADMIN_TOKEN");
    a->admin_token = tok != NULL && *tok ? tok : NULL;
    a->loop = uv_default_loop();
    a->timing.reservation_ttl_ms = 15 * 60 * 1000;
    a->timing.ttl_sweep_ms = 1000;
    a->timing.payment_step_timeout_ms = 1500;
    a->timing.gateway_timeout_ms = 3000;
    a->timing.gateway_slow_ms = 2500;
    a->timing.gateway_latency_ms = 5;
    a->timing.pick_ms = 5;
    const char *ttl = getenv("CK_RESERVATION_TTL_MS");
    if (ttl != NULL && atoll(ttl) > 0)
        a->timing.reservation_ttl_ms = atoll(ttl);
    /* Load shedding: a backlog past about one payment timeout's worth of
     * sagas would make their steps time out and retry, which only adds
     * work (docs/checkout-api.md, "Overload"). */
    a->timing.max_pending = 1024;
    const char *mp = getenv("CK_MAX_PENDING");
    if (mp != NULL && *mp != '\0' && atoll(mp) >= 0)
        a->timing.max_pending = (uint64_t)atoll(mp);
}

static int set_dir(ck_app *a, const char *dir)
{
    if (dir == NULL) {
        fprintf(stderr, "saga-checkout: --data DIR is required\n");
        return -1;
    }
    mkdir(dir, 0755);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "saga-checkout: %s is not a directory\n", dir);
        return -1;
    }
    snprintf(a->dir, sizeof a->dir, "%s", dir);
    return 0;
}

static int load_catalog(ck_app *a, const char *path)
{
    if (path == NULL) {
        ck_catalog_builtin(&a->catalog);
        return 0;
    }
    char err[512];
    if (ck_catalog_load(&a->catalog, path, err, sizeof err) != 0) {
        fprintf(stderr, "saga-checkout: catalogue: %s\n", err);
        return -1;
    }
    return 0;
}

static const char *ck_store_url; /* --store */
static int ck_threads = 2;       /* serve --threads */

static int check_store(const char *url)
{
    if (url == NULL)
        return 0;
    if (strncmp(url, "postgres://", 11) != 0 &&
        strncmp(url, "postgresql://", 13) != 0) {
        fprintf(stderr, "saga-checkout: --store takes a postgres:// URL "
                        "(SQLite files are the default, in --data DIR)\n");
        return -1;
    }
    return 0;
}

int ck_serve_dir(const char *dir, const char *listen, const char *catalog);
int ck_serve_dir(const char *dir, const char *listen, const char *catalog)
{
    static ck_app app;
    ck_app *a = &app;
    app_init(a);
    a->store = ck_store_url;
    if (set_dir(a, dir) != 0 || load_catalog(a, catalog) != 0)
        return 2;
    /* --store postgres: one loop (the PostgreSQL statement cache of db.c
     * is per process). */
    int threads = a->store != NULL ? 1 : ck_threads;
    if (threads > 1 ? saga_inmem_bus_new_shared(&a->bus) != SAGA_OK
                    : saga_inmem_bus_new(&a->bus, a->loop) != SAGA_OK)
        return 1;
    return run(a, -1, listen, threads);
}

static int cmd_service(int argc, char **argv)
{
    static ck_app app;
    ck_app *a = &app;
    app_init(a);
    const char *dir = NULL, *config = NULL;
    if (argc < 3) {
        usage();
        return 2;
    }
    int svc = ck_svc_index(argv[2]);
    if (svc < 0) {
        fprintf(stderr, "saga-checkout: unknown service %s\n", argv[2]);
        usage();
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc)
            ck_log_json = strcmp(argv[++i], "json") == 0;
        else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc)
            a->transport = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            a->store = argv[++i];
        else {
            usage();
            return 2;
        }
    }
    if (config == NULL) {
        fprintf(stderr, "saga-checkout: --config FILE is required\n");
        return 2;
    }
    json_error_t je;
    a->config = json_load_file(config, 0, &je);
    if (a->config == NULL || !json_is_object(a->config)) {
        fprintf(stderr, "saga-checkout: %s:%d: %s\n", config, je.line,
                a->config ? "the config must be a JSON object" : je.text);
        return 2;
    }
    a->distributed = 1;
    /* --store, else the config's "store" (one URL for every service). */
    if (a->store == NULL)
        a->store = json_string_value(json_object_get(a->config, "store"));
    if (check_store(a->store) != 0)
        return 2;
    if (set_dir(a, dir) != 0 ||
        load_catalog(a, json_string_value(
                            json_object_get(a->config, "catalog"))) != 0)
        return 2;
    const char *http = json_string_value(json_object_get(a->config, "http"));
    if (svc == CK_SVC_ORDER && http == NULL) {
        fprintf(stderr, "saga-checkout: config: \"http\" (HOST:PORT) is "
                        "required for the order service\n");
        return 2;
    }
    return run(a, svc, svc == CK_SVC_ORDER ? http : NULL, 1);
}

int main(int argc, char **argv)
{
    /* Before any other SQLite call: no global memory statistics. With them
     * on (the default), every SQLite allocation and free of every thread
     * takes one process-wide mutex (~3% of serve's CPU per checkout in
     * perf), and the loops of serve --threads contend on it. Nothing here
     * reads sqlite3_memory_used(). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (argc < 2) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0) {
        const char *dir = NULL, *listen = NULL, *catalog = NULL;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
                dir = argv[++i];
            else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
                listen = argv[++i];
            else if (strcmp(argv[i], "--catalog") == 0 && i + 1 < argc)
                catalog = argv[++i];
            else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
                ck_store_url = argv[++i];
            else if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc)
                ck_log_json = strcmp(argv[++i], "json") == 0;
            else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
                char *end;
                long n = strtol(argv[++i], &end, 10);
                if (*end != '\0' || n < 1 || n > CK_NSVC) {
                    fprintf(stderr, "saga-checkout: --threads takes 1 to %d\n",
                            CK_NSVC);
                    return 2;
                }
                ck_threads = (int)n;
            } else {
                usage();
                return 2;
            }
        }
        if (listen == NULL) {
            fprintf(stderr, "saga-checkout: --listen HOST:PORT is required\n");
            return 2;
        }
        if (check_store(ck_store_url) != 0)
            return 2;
        return ck_serve_dir(dir, listen, catalog);
    }
    if (strcmp(argv[1], "service") == 0)
        return cmd_service(argc, argv);
    if (strcmp(argv[1], "demo") == 0)
        return ck_demo(argc, argv);
    usage();
    return 2;
}

/*
 * main.c — saga-checkout: the seed's checkout system on libsaga.
 *
 *   saga-checkout serve --data DIR --listen HOST:PORT [--catalog FILE]
 *   saga-checkout demo [--serve] [--listen HOST:PORT]
 *   saga-checkout service NAME --data DIR --config FILE
 *
 * serve runs the seven services in one process (one SQLite file per
 * service in DIR, the in-memory transport, one HTTP port); service runs one
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
            "[--catalog FILE] [--store URL]\n"
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
            "services: order cart inventory payment shipping warehouse "
            "notification\n");
}

/* --- life cycle ---------------------------------------------------------- */

static uv_signal_t sig_term, sig_int;

static void closed(ck_app *a)
{
    (void)a;
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

static int start_services(ck_app *a, int only)
{
    int (*open[CK_NSVC])(ck_app *) = {ck_order_open,       ck_cart_open,
                                      ck_inventory_open,   ck_payment_open,
                                      ck_shipping_open,    ck_warehouse_open,
                                      ck_notification_open};
    /* The order service last: it reads the others' databases when they run
     * here, and opens its own connections when they do not. */
    for (int k = 1; k <= CK_NSVC; k++) {
        int i = k % CK_NSVC;
        if (only >= 0 && i != only)
            continue;
        if (open[i](a) != 0) {
            fprintf(stderr, "saga-checkout: cannot start the %s service\n",
                    ck_svc_names[i]);
            return -1;
        }
    }
    if (only < 0 || only == CK_SVC_ORDER)
        return ck_order_start(a);
    return 0;
}

/* Run until a signal; returns the exit code. */
static int run(ck_app *a, int only, const char *listen)
{
    signal(SIGPIPE, SIG_IGN);
    if (start_services(a, only) != 0)
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
    if (saga_inmem_bus_new(&a->bus, a->loop) != SAGA_OK)
        return 1;
    return run(a, -1, listen);
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
    return run(a, svc, svc == CK_SVC_ORDER ? http : NULL);
}

int main(int argc, char **argv)
{
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
            else {
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

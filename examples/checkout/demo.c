/*
 * demo.c — saga-checkout demo [--serve] [--listen HOST:PORT]: start the
 * one-process server in a temporary directory (a child process running
 * `serve`) and drive seven scenarios through the real HTTP API with
 * libcurl, then print what happened to each order, the money and the stock.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ck.h"

static char base[300];

typedef struct buf {
    char *p;
    size_t n;
} buf;

static size_t on_data(char *d, size_t s, size_t n, void *arg)
{
    buf *b = arg;
    char *np = realloc(b->p, b->n + s * n + 1);
    if (np == NULL)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, d, s * n);
    b->n += s * n;
    b->p[b->n] = '\0';
    return s * n;
}

static CURL *prepare(const char *method, const char *path, const char *user,
                     const char *key, const char *body, buf *out,
                     struct curl_slist **hdrs)
{
    CURL *c = curl_easy_init();
    char url[512], h[300];
    snprintf(url, sizeof url, "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (user) {
        snprintf(h, sizeof h, "X-User-Id: %s", user);
        *hdrs = curl_slist_append(*hdrs, h);
    }
    if (key) {
        snprintf(h, sizeof h, "Idempotency-Key: %s", key);
        *hdrs = curl_slist_append(*hdrs, h);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    return c;
}

static json_t *http(const char *method, const char *path, const char *user,
                    const char *key, const char *body, long *status)
{
    buf out = {0};
    struct curl_slist *hdrs;
    CURL *c = prepare(method, path, user, key, body, &out, &hdrs);
    *status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    json_t *j = out.p ? json_loads(out.p, 0, NULL) : NULL;
    free(out.p);
    return j;
}

typedef struct scenario {
    const char *name, *product, *token;
    int qty;
    const char *want_status, *want_reason;
    int double_click;
    /* results */
    char order_id[64];
    json_t *order;
    long codes[2];
    int ok;
} scenario;

static scenario sc[] = {
    {"successful order",
     "prod_123",
     "tok_ok",
     2,
     "COMPLETED",
     NULL,
     0,
     "",
     NULL,
     {0, 0},
     0},
    {"out of stock",
     "prod_soldout",
     "tok_ok",
     1,
     "CANCELLED",
     "inventory_failed",
     0,
     "",
     NULL,
     {0, 0},
     0},
    {"declined card",
     "prod_456",
     "tok_decline",
     1,
     "CANCELLED",
     "payment_failed",
     0,
     "",
     NULL,
     {0, 0},
     0},
    {"warehouse failure",
     "prod_fragile",
     "tok_ok",
     1,
     "CANCELLED",
     "fulfillment_failed",
     0,
     "",
     NULL,
     {0, 0},
     0},
    {"double click",
     "prod_789",
     "tok_ok",
     3,
     "COMPLETED",
     NULL,
     1,
     "",
     NULL,
     {0, 0},
     0},
    {"flaky payment",
     "prod_123",
     "tok_flaky",
     1,
     "COMPLETED",
     NULL,
     0,
     "",
     NULL,
     {0, 0},
     0},
    {"payment timeout",
     "prod_456",
     "tok_timeout",
     1,
     "CANCELLED",
     "payment_failed",
     0,
     "",
     NULL,
     {0, 0},
     0},
};
#define NSC (sizeof sc / sizeof sc[0])

static int checkout(scenario *s, int i)
{
    char user[32], cart[32], path[128], body[512], key[64];
    long st;
    snprintf(user, sizeof user, "demo_user_%d", i + 1);
    snprintf(cart, sizeof cart, "cart_demo_%d_%ld", i + 1, (long)getpid());
    snprintf(key, sizeof key, "demo-key-%d-%ld", i + 1, (long)getpid());
    snprintf(path, sizeof path, "/api/v1/carts/%s/items", cart);
    snprintf(body, sizeof body, "{\"product_id\": \"%s\", \"quantity\": %d}",
             s->product, s->qty);
    json_decref(http("POST", path, user, NULL, body, &st));
    if (st != 201) {
        fprintf(stderr, "demo: add to cart answered %ld\n", st);
        return -1;
    }
    snprintf(body, sizeof body,
             "{\"cart_id\": \"%s\", \"shipping_address\": {\"street\": "
             "\"123 Main St\", \"city\": \"San Francisco\", \"state\": "
             "\"CA\", \"zip\": \"94102\", \"country\": \"USA\"}, "
             "\"payment_method\": {\"type\": \"credit_card\", "
             "\"card_token\": \"%s\"}}",
             cart, s->token);
    int n = s->double_click ? 2 : 1;
    CURLM *m = curl_multi_init();
    CURL *e[2];
    buf out[2] = {{0}, {0}};
    struct curl_slist *h[2];
    for (int k = 0; k < n; k++) {
        e[k] = prepare("POST", "/api/v1/orders/checkout", user, key, body,
                       &out[k], &h[k]);
        curl_multi_add_handle(m, e[k]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    char ids[2][64] = {"", ""};
    for (int k = 0; k < n; k++) {
        curl_easy_getinfo(e[k], CURLINFO_RESPONSE_CODE, &s->codes[k]);
        json_t *j = out[k].p ? json_loads(out[k].p, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(j, "order_id"));
        snprintf(ids[k], sizeof ids[k], "%s", id ? id : "");
        json_decref(j);
        free(out[k].p);
        curl_multi_remove_handle(m, e[k]);
        curl_easy_cleanup(e[k]);
        curl_slist_free_all(h[k]);
    }
    curl_multi_cleanup(m);
    snprintf(s->order_id, sizeof s->order_id, "%s", ids[0]);
    if (s->order_id[0] == '\0')
        return -1;
    if (n == 2 && strcmp(ids[0], ids[1]) != 0) {
        fprintf(stderr, "demo: double click made two orders (%s, %s)\n", ids[0],
                ids[1]);
        return -1;
    }
    return 0;
}

static int terminal(const json_t *o)
{
    const char *st = json_string_value(json_object_get(o, "status"));
    const char *ss = json_string_value(json_object_get(o, "saga_state"));
    return st && ss &&
           (strcmp(st, "COMPLETED") == 0 || strcmp(st, "CANCELLED") == 0) &&
           (strcmp(ss, "COMPLETED") == 0 || strcmp(ss, "COMPENSATED") == 0);
}

static void steps_text(const json_t *o, char *out, size_t size)
{
    static const char *const map[][2] = {{"ORDER_CREATED", "order"},
                                         {"INVENTORY_RESERVED", "reserve"},
                                         {"SHIPPING_CALCULATED", "ship"},
                                         {"PAYMENT_PROCESSED", "pay"},
                                         {"ORDER_FULFILLED", "fulfil"},
                                         {"INVENTORY_COMMITTED", "commit"},
                                         {"ORDER_CONFIRMED", "confirm"}};
    size_t i, len = 0;
    json_t *s;
    out[0] = '\0';
    json_array_foreach(json_object_get(o, "saga_steps"), i, s)
    {
        const char *step = json_string_value(json_object_get(s, "step"));
        const char *st = json_string_value(json_object_get(s, "status"));
        const char *nm = step;
        for (size_t k = 0; k < 7; k++)
            if (step && strcmp(step, map[k][0]) == 0)
                nm = map[k][1];
        const char *mark = st == NULL                       ? "?"
                           : strcmp(st, "COMPLETED") == 0   ? "+"
                           : strcmp(st, "COMPENSATED") == 0 ? "~"
                           : strcmp(st, "FAILED") == 0      ? "x"
                                                            : "?";
        json_int_t att = json_integer_value(json_object_get(s, "attempts"));
        char a[32] = "";
        if (att > 1)
            snprintf(a, sizeof a, "(%lld)", (long long)att);
        len += (size_t)snprintf(out + len, len < size ? size - len : 0,
                                "%s%s%s%s", i ? " " : "", nm ? nm : "?", mark,
                                a);
    }
}

static void ledger_for(const json_t *ledger, const char *order_id,
                       double *charged, double *refunded)
{
    size_t i;
    json_t *c;
    *charged = *refunded = 0;
    json_array_foreach(json_object_get(ledger, "charges"), i, c)
    {
        const char *o = json_string_value(json_object_get(c, "order_id"));
        const char *st = json_string_value(json_object_get(c, "state"));
        if (o && strcmp(o, order_id) == 0 && st &&
            (strcmp(st, "CHARGED") == 0 || strcmp(st, "REFUNDED") == 0)) {
            *charged += json_number_value(json_object_get(c, "amount"));
            *refunded += json_number_value(json_object_get(c, "refunded"));
        }
    }
}

static pid_t child;

static void forward(int sig)
{
    if (child > 0)
        kill(child, sig);
}

/* The server: `saga-checkout serve` in a child, with --store when given
 * (every service's tables in a schema of that PostgreSQL database). */
static pid_t start_server(const char *dir, const char *listen,
                          const char *store)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        if (store != NULL)
            execl("/proc/self/exe", "saga-checkout", "serve", "--data", dir,
                  "--listen", listen, "--store", store, (char *)NULL);
        else
            execl("/proc/self/exe", "saga-checkout", "serve", "--data", dir,
                  "--listen", listen, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    char line[256];
    if (f == NULL || fgets(line, sizeof line, f) == NULL ||
        strncmp(line, "listening on ", 13) != 0) {
        fprintf(stderr, "demo: the server did not start\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    line[strcspn(line, "\n")] = '\0';
    snprintf(base, sizeof base, "%s", line + 13);
    fclose(f);
    return pid;
}

int ck_demo(int argc, char **argv)
{
    int serve = 0;
    const char *listen = "127.0.0.1:0", *url = NULL, *store = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--serve") == 0)
            serve = 1;
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            url = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store = argv[++i];
        else {
            fprintf(stderr, "usage: saga-checkout demo [--serve] [--listen "
                            "HOST:PORT] [--url http://HOST:PORT] [--store "
                            "postgres://USER@HOST:PORT/DB[?schema=PREFIX]]"
                            "\n");
            return 2;
        }
    }
    if (store != NULL && strncmp(store, "postgres://", 11) != 0 &&
        strncmp(store, "postgresql://", 13) != 0) {
        fprintf(stderr, "demo: --store takes a postgres:// URL (SQLite files "
                        "in a temporary directory are the default)\n");
        return 2;
    }
    if (store != NULL && url != NULL) {
        fprintf(stderr, "demo: --store and --url exclude each other (--url "
                        "names a running deployment with its own store)\n");
        return 2;
    }
    char dir[] = "/tmp/saga-checkout-demo.XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("demo: mkdtemp");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (url != NULL) {
        /* Against a running deployment (e.g. run-distributed.sh). */
        snprintf(base, sizeof base, "%s", url);
        rmdir(dir);
        snprintf(dir, sizeof dir, "%s", "(the server's)");
        child = 0;
    } else if ((child = start_server(dir, listen, store)) < 0)
        return 1;
    signal(SIGINT, forward);
    signal(SIGTERM, forward);
    if (store != NULL)
        printf("saga-checkout demo: seven services in one process, data in "
               "PostgreSQL (%s, a schema per service), API at %s\n\n",
               store, base);
    else
        printf("saga-checkout demo: seven services%s, data in %s, API at "
               "%s\n\n",
               child ? " in one process" : "", dir, base);
    long st;
    json_t *before = http("GET", "/api/v1/inventory", NULL, NULL, NULL, &st);
    for (size_t i = 0; i < NSC; i++) {
        printf("  %-18s %s x%d, card %s ...\n", sc[i].name, sc[i].product,
               sc[i].qty, sc[i].token);
        fflush(stdout);
        if (checkout(&sc[i], (int)i) != 0)
            continue;
        char path[128];
        snprintf(path, sizeof path, "/api/v1/orders/%s", sc[i].order_id);
        for (int t = 0; t < 300; t++) {
            json_decref(sc[i].order);
            sc[i].order = http("GET", path, NULL, NULL, NULL, &st);
            if (terminal(sc[i].order))
                break;
            usleep(100 * 1000);
        }
    }
    json_t *after = http("GET", "/api/v1/inventory", NULL, NULL, NULL, &st);
    json_t *ledger = http("GET", "/api/v1/ledger", NULL, NULL, NULL, &st);

    printf("\n%-18s %-22s %-30s %-8s %-8s %s\n", "scenario", "order",
           "final status", "charged", "refunded",
           "saga steps (+ done, x "
           "failed, ~ compensated, (n) attempts)");
    int good = 0;
    for (size_t i = 0; i < NSC; i++) {
        scenario *s = &sc[i];
        const char *status = json_string_value(
            json_object_get(s->order, "status"));
        const char *reason = json_string_value(
            json_object_get(s->order, "cancel_reason"));
        char fs[64], steps[512] = "";
        snprintf(fs, sizeof fs, "%s%s%s%s", status ? status : "(none)",
                 reason ? " (" : "", reason ? reason : "", reason ? ")" : "");
        steps_text(s->order, steps, sizeof steps);
        double ch = 0, rf = 0;
        ledger_for(ledger, s->order_id, &ch, &rf);
        double total = json_number_value(
            json_object_get(s->order, "total_amount"));
        int completed = status && strcmp(status, "COMPLETED") == 0;
        s->ok = status && strcmp(status, s->want_status) == 0 &&
                (s->want_reason == NULL ||
                 (reason && strcmp(reason, s->want_reason) == 0)) &&
                terminal(s->order) &&
                (completed
                     ? (ch - rf > total - 0.005 && ch - rf < total + 0.005)
                     : (ch - rf < 0.005)) &&
                (!s->double_click ||
                 (s->codes[0] + s->codes[1] == 402 &&
                  (s->codes[0] == 202 || s->codes[1] == 202)));
        good += s->ok;
        printf("%-18s %-22s %-30s %-8.2f %-8.2f %s%s\n", s->name,
               s->order_id[0] ? s->order_id : "-", fs, ch, rf, steps,
               s->ok ? "" : "   <-- NOT AS EXPECTED");
        if (s->double_click)
            printf("%-18s the same Idempotency-Key twice at once: answers %ld "
                   "and %ld, one order, one charge\n",
                   "", s->codes[0], s->codes[1]);
    }
    printf("\n%-14s %10s %10s %10s %10s %10s\n", "product", "before",
           "available", "reserved", "sold", "total");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(after, "inventory"), i, p)
    {
        json_t *b = json_array_get(json_object_get(before, "inventory"), i);
        printf("%-14s %10lld %10lld %10lld %10lld %10lld\n",
               json_string_value(json_object_get(p, "product_id")),
               (long long)json_integer_value(
                   json_object_get(b, "available_quantity")),
               (long long)json_integer_value(
                   json_object_get(p, "available_quantity")),
               (long long)json_integer_value(
                   json_object_get(p, "reserved_quantity")),
               (long long)json_integer_value(
                   json_object_get(p, "sold_quantity")),
               (long long)json_integer_value(
                   json_object_get(p, "total_quantity")));
    }
    printf("\nmoney: charged %.2f, refunded %.2f, net %.2f (= the COMPLETED "
           "orders' totals)\n",
           json_number_value(json_object_get(ledger, "total_charged")),
           json_number_value(json_object_get(ledger, "total_refunded")),
           json_number_value(json_object_get(ledger, "net")));
    if (child)
        printf("emails sent: %s/notifications.log\n", dir);
    if (good == (int)NSC)
        printf("demo: all %d scenarios as expected\n", (int)NSC);
    else
        printf("demo: %d of %d scenarios as expected\n", good, (int)NSC);
    fflush(stdout);
    json_decref(before);
    json_decref(after);
    json_decref(ledger);
    for (size_t k = 0; k < NSC; k++)
        json_decref(sc[k].order);
    if (child == 0) {
        curl_global_cleanup();
        return good == (int)NSC ? 0 : 1;
    }
    if (serve) {
        printf("\nstill serving at %s (data in %s); Ctrl-C to stop\n", base,
               dir);
        fflush(stdout);
    } else
        kill(child, SIGTERM);
    int wst;
    while (waitpid(child, &wst, 0) < 0)
        ;
    if (!serve) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "demo: could not remove %s\n", dir);
    }
    curl_global_cleanup();
    return good == (int)NSC ? 0 : 1;
}

/*
 * util.c — time, money, ids and JSON helpers, the catalogue, and
 * events through the participant's outbox.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ck.h"

const char *const ck_svc_names[CK_NSVC] = {"order",       "cart",
                                           "inventory",   "payment",
                                           "shipping",    "warehouse",
                                           "notification"};

int ck_svc_index(const char *name)
{
    for (int i = 0; i < CK_NSVC; i++)
        if (strcmp(ck_svc_names[i], name) == 0)
            return i;
    return -1;
}

/* The services' clock (timestamps, reservation expiry): the wall clock,
 * plus an offset in ms read from the file named by CK_CLOCK_OFFSET_FILE when
 * it is set (a test moves every service's clock forward by writing a number
 * there, e.g. past a reservation's TTL, instead of sleeping). */
static int64_t clock_offset(int64_t now)
{
    /* Per thread: serve runs services on several threads. */
    static _Thread_local const char *path;
    static _Thread_local int checked;
    static _Thread_local int64_t offset, read_at;
    if (!checked) {
        path = getenv("CK_CLOCK_OFFSET_FILE");
        checked = 1;
    }
    if (path == NULL || path[0] == '\0')
        return 0;
    if (now - read_at >= 100 || read_at == 0) {
        read_at = now;
        FILE *f = fopen(path, "r");
        long long v = 0;
        if (f != NULL) {
            if (fscanf(f, "%lld", &v) == 1)
                offset = v;
            fclose(f);
        }
    }
    return offset;
}

/* SQLite synchronous level of every service's file: NORMAL by default (in
 * WAL mode a commit survives a process crash, SIGKILL included; the last
 * commits may be lost on power loss), FULL with CK_SYNCHRONOUS=full (a
 * commit survives power loss too; one fsync per commit). */
int ck_synchronous(void)
{
    const char *v = getenv("CK_SYNCHRONOUS");
    return v != NULL && strcmp(v, "full") == 0 ? 0 : 1;
}

int64_t ck_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return now + clock_offset(now);
}

void ck_iso8601(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    size_t n = strlen(out);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000) % 1000);
}

json_t *ck_json_time(int64_t ms)
{
    char b[32];
    if (ms <= 0)
        return json_null();
    ck_iso8601(ms, b);
    return json_string(b);
}

json_t *ck_json_money(int64_t cents)
{
    return json_real((double)cents / 100.0);
}

int64_t ck_money_parse(const json_t *v)
{
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!(d >= 0) || d > 1e9)
        return -1;
    /* At most two decimals: 12.345 is refused, not rounded to 12.35 (a
     * charge of another amount than asked). The tolerance is far above
     * the binary error of a two-decimal number (< 1e-4 cents at 1e9). */
    double c = d * 100.0;
    if (fabs(c - (double)llround(c)) > 0.01)
        return -1;
    return (int64_t)llround(c);
}

void ck_random_id(const char *prefix, char *out, size_t size)
{
    /* Per thread (serve runs services on several threads), each seeded
     * from /dev/urandom: two threads never share a state, so never an id. */
    static _Thread_local uint64_t s;
    if (s == 0) {
        FILE *f = fopen("/dev/urandom", "rb");
        if (f == NULL || fread(&s, sizeof s, 1, f) != 1)
            s = (uint64_t)ck_now_ms() ^ (uint64_t)(uintptr_t)&s;
        if (f)
            fclose(f);
        s |= 1;
    }
    /* splitmix64 */
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    snprintf(out, size, "%s%016llx", prefix, (unsigned long long)z);
}

char *ck_dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS |
                             JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
}

void ck_log(ck_app *a, const char *fmt, ...)
{
    if (a != NULL && a->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("saga-checkout: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* --- catalogue ----------------------------------------------------------- */

void ck_catalog_free(ck_catalog *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

static void add(ck_catalog *c, const char *id, const char *name, int64_t price,
                int64_t stock, int fail)
{
    ck_product *p = &c->v[c->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->price = price;
    p->stock = stock;
    p->fail_fulfillment = fail;
}

void ck_catalog_builtin(ck_catalog *c)
{
    ck_catalog_free(c);
    c->v = calloc(8, sizeof *c->v);
    if (c->v == NULL)
        return;
    add(c, "prod_123", "Wireless Mouse", 2999, 100, 0);
    add(c, "prod_456", "Mechanical Keyboard", 8950, 50, 0);
    add(c, "prod_789", "USB-C Cable", 999, 500, 0);
    add(c, "prod_limited", "Limited Edition Poster", 4900, 1, 0);
    add(c, "prod_soldout", "Concert Ticket", 12000, 0, 0);
    add(c, "prod_fragile", "Glass Vase (cannot be picked)", 3500, 20, 1);
}

int ck_catalog_load(ck_catalog *c, const char *path, char *err, size_t esz)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root == NULL) {
        snprintf(err, esz, "%s:%d: %s", path, je.line, je.text);
        return -1;
    }
    if (!json_is_array(root)) {
        snprintf(err, esz, "%s: the catalogue must be a JSON array", path);
        json_decref(root);
        return -1;
    }
    ck_catalog_free(c);
    c->v = calloc(json_array_size(root) + 1, sizeof *c->v);
    if (c->v == NULL) {
        json_decref(root);
        return -1;
    }
    size_t i;
    json_t *o;
    json_array_foreach(root, i, o)
    {
        json_t *id = json_object_get(o, "product_id");
        json_t *name = json_object_get(o, "name");
        int64_t price = ck_money_parse(json_object_get(o, "price"));
        json_t *stock = json_object_get(o, "stock");
        json_t *fail = json_object_get(o, "fail_fulfillment");
        if (!json_is_string(id) || json_string_length(id) == 0 ||
            json_string_length(id) >= sizeof c->v[0].id ||
            !json_is_string(name) || price < 0 || !json_is_integer(stock) ||
            json_integer_value(stock) < 0 ||
            (fail != NULL && !json_is_boolean(fail))) {
            snprintf(err, esz,
                     "%s: entry %zu needs product_id (string), name (string), "
                     "price (number >= 0), stock (integer >= 0), optional "
                     "fail_fulfillment (boolean)",
                     path, i);
            json_decref(root);
            ck_catalog_free(c);
            return -1;
        }
        add(c, json_string_value(id), json_string_value(name), price,
            json_integer_value(stock), json_is_true(fail));
    }
    json_decref(root);
    return 0;
}

/* --- saga data and events ------------------------------------------------ */

int ck_map_str(saga_map *m, const char *k, const char *v)
{
    return saga_map_set_str(m, k, v ? v : "");
}

void ck_data_str(const void *d, size_t n, const char *k, char *out, size_t size)
{
    const char *s;
    size_t l;
    out[0] = '\0';
    if (saga_data_get_str(d, n, k, &s, &l) == SAGA_OK) {
        if (l >= size)
            l = size - 1;
        memcpy(out, s, l);
        out[l] = '\0';
    }
}

int64_t ck_data_int(const void *d, size_t n, const char *k, int64_t dflt)
{
    int64_t v;
    return saga_data_get_int(d, n, k, &v) == SAGA_OK ? v : dflt;
}

json_t *ck_event(const char *type, const char *order_id, int64_t now)
{
    char id[40];
    ck_random_id("evt_", id, sizeof id);
    return json_pack("{s:s, s:s, s:s, s:o}", "event_id", id, "event_type", type,
                     "order_id", order_id, "timestamp", ck_json_time(now));
}

int ck_publish(saga_participant *p, const char *topic, const char *order_id,
               json_t *ev)
{
    if (ev == NULL)
        return SAGA_ENOMEM;
    /* In the order the fields were set (event_id, event_type, order_id,
     * timestamp, then the event's own, as the seed shows them): sorting
     * the keys, which ck_dump() does for the canonical request, copied and
     * sorted every object's keys of every event (perf: json_dumps ~3% of
     * the checkout's CPU). */
    char *body = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(15));
    const char *type = json_string_value(json_object_get(ev, "event_type"));
    int rc = body ? saga_participant_publish(p, topic, order_id,
                                             type ? type : "event", body,
                                             strlen(body))
                  : SAGA_ENOMEM;
    free(body);
    json_decref(ev);
    return rc;
}

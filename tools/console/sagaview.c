/*
 * sagaview.c — see sagaview.h. Everything here reads the store through the
 * public store vtable and saga_shape_*(); nothing writes.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sagaview.h"

int sv_exit_code(int rc, const char *detail)
{
    switch (rc) {
    case SAGA_OK:
        return SV_EXIT_OK;
    case SAGA_ENOTFOUND:
        return SV_EXIT_NOTFOUND;
    case SAGA_EBUSY:
        return SV_EXIT_STATE;
    case SAGA_EINVAL:
        return SV_EXIT_USAGE;
    case SAGA_ESTORE:
    case SAGA_EVERSION:
        if (detail && (strstr(detail, "locked") || strstr(detail, "busy")))
            return SV_EXIT_LOCKED;
        return SV_EXIT_STORE;
    default:
        return SV_EXIT_ERROR;
    }
}

int sv_open_store(const char *spec, saga_store **out, char *err, size_t n)
{
    *out = NULL;
    if (spec == NULL || *spec == '\0') {
        snprintf(err, n, "no store: give --store PATH or set %s",
                 SAGA_STORE_ENV);
        return SAGA_EINVAL;
    }
    if (strncmp(spec, "sqlite:", 7) == 0)
        spec += 7;
    else if (strncmp(spec, "postgres://", 11) == 0 ||
             strncmp(spec, "postgresql://", 13) == 0) {
        /* A PostgreSQL store (?schema=NAME picks its schema, default
         * "saga"): saga_store_open() knows the URL form. */
        int rc = saga_store_open(out, spec);
        if (rc != SAGA_OK)
            snprintf(err, n, "cannot open the store: %s (%s)",
                     saga_open_errmsg(), saga_strerror(rc));
        return rc == SAGA_EINVAL ? SAGA_ESTORE : rc;
    }
    if (strstr(spec, "://") != NULL) {
        snprintf(err, n,
                 "%s: not a store (a SQLite file path or a "
                 "postgres:// URL)",
                 spec);
        return SAGA_ESTORE;
    }
    struct stat st;
    if (stat(spec, &st) != 0 || !S_ISREG(st.st_mode) ||
        access(spec, R_OK) != 0) {
        snprintf(err, n, "%s: no such readable store file", spec);
        return SAGA_ESTORE;
    }
    saga_sqlite_options o;
    saga_sqlite_options_init(&o, SAGA_SQLITE_OPTIONS_VERSION);
    o.busy_timeout_ms = 2000;
    int rc = saga_store_sqlite_open(out, spec, &o);
    if (rc != SAGA_OK) {
        /* A SQLite file that cannot be opened (its schema is checked and
         * migrated on open, under a write lock) is most likely locked by
         * another writer; anything else is not a store. */
        char head[16] = "";
        FILE *f = fopen(spec, "rb");
        size_t got = f ? fread(head, 1, sizeof head, f) : 0;
        if (f)
            fclose(f);
        int sqlite = got == sizeof head &&
                     memcmp(head, "SQLite format 3", 16) == 0;
        snprintf(err, n, "%s: cannot open the store (%s)%s", spec,
                 saga_strerror(rc),
                 sqlite && rc == SAGA_ESTORE
                     ? ": the database is locked by another writer"
                     : "");
    }
    return rc == SAGA_EINVAL ? SAGA_ESTORE : rc;
}

/* ------------------------------------------------------------------------ */
/* msgpack -> JSON                                                          */

typedef struct rd {
    const unsigned char *p;
    size_t len, off;
} rd;

static int need(rd *r, size_t n) { return r->len - r->off >= n ? 0 : -1; }

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static json_t *mp_value(rd *r, int depth);

static json_t *mp_str(rd *r, size_t n)
{
    if (need(r, n))
        return NULL;
    json_t *s = json_stringn_nocheck((const char *)r->p + r->off, n);
    r->off += n;
    return s;
}

static json_t *mp_bin(rd *r, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (need(r, n) || n > 1u << 20)
        return NULL;
    char *h = malloc(2 * n + 5);
    if (h == NULL)
        return NULL;
    memcpy(h, "hex:", 4);
    for (size_t i = 0; i < n; i++) {
        h[4 + 2 * i] = hex[r->p[r->off + i] >> 4];
        h[5 + 2 * i] = hex[r->p[r->off + i] & 15];
    }
    h[4 + 2 * n] = '\0';
    r->off += n;
    json_t *s = json_string(h);
    free(h);
    return s;
}

static json_t *mp_array(rd *r, size_t n, int depth)
{
    /* Each element takes at least one byte: a count beyond the bytes left
     * is a lie, caught before any allocation. */
    if (n > r->len - r->off)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *v = mp_value(r, depth + 1);
        if (v == NULL || json_array_append_new(a, v) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *mp_map(rd *r, size_t n, int depth)
{
    if (n > (r->len - r->off) / 2)
        return NULL;
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++) {
        json_t *k = mp_value(r, depth + 1);
        json_t *v = k ? mp_value(r, depth + 1) : NULL;
        char kbuf[64];
        const char *key;
        if (k && json_is_string(k)) {
            key = json_string_value(k);
        } else if (k && json_is_integer(k)) {
            snprintf(kbuf, sizeof kbuf, "%lld",
                     (long long)json_integer_value(k));
            key = kbuf;
        } else {
            key = NULL;
        }
        if (v == NULL || key == NULL || json_object_set_new(o, key, v) != 0) {
            if (v && key == NULL)
                json_decref(v);
            json_decref(k);
            json_decref(o);
            return NULL;
        }
        json_decref(k);
    }
    return o;
}

static json_t *mp_value(rd *r, int depth)
{
    if (depth > 32 || need(r, 1))
        return NULL;
    unsigned c = r->p[r->off++];
    if (c <= 0x7f)
        return json_integer(c);
    if (c >= 0xe0)
        return json_integer((int8_t)c);
    if ((c & 0xf0) == 0x80)
        return mp_map(r, c & 15, depth);
    if ((c & 0xf0) == 0x90)
        return mp_array(r, c & 15, depth);
    if ((c & 0xe0) == 0xa0)
        return mp_str(r, c & 31);
    int w = 0;
    switch (c) {
    case 0xc0:
        return json_null();
    case 0xc2:
        return json_false();
    case 0xc3:
        return json_true();
    case 0xc4:
    case 0xc5:
    case 0xc6:
        w = 1 << (c - 0xc4);
        if (need(r, (size_t)w))
            return NULL;
        r->off += (size_t)w;
        return mp_bin(r, (size_t)be(r->p + r->off - w, w));
    case 0xca:
    case 0xcb: {
        w = c == 0xca ? 4 : 8;
        if (need(r, (size_t)w))
            return NULL;
        uint64_t v = be(r->p + r->off, w);
        r->off += (size_t)w;
        double d;
        if (w == 4) {
            uint32_t u = (uint32_t)v;
            float f;
            memcpy(&f, &u, 4);
            d = f;
        } else {
            memcpy(&d, &v, 8);
        }
        return json_real(d);
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        int sign = c >= 0xd0;
        w = 1 << ((c - (sign ? 0xd0 : 0xcc)));
        if (need(r, (size_t)w))
            return NULL;
        uint64_t v = be(r->p + r->off, w);
        r->off += (size_t)w;
        if (!sign)
            return json_integer((json_int_t)v);
        int64_t sv = w == 1   ? (int8_t)v
                     : w == 2 ? (int16_t)v
                     : w == 4 ? (int32_t)v
                              : (int64_t)v;
        return json_integer(sv);
    }
    case 0xd9:
    case 0xda:
    case 0xdb:
        w = 1 << (c - 0xd9);
        if (need(r, (size_t)w))
            return NULL;
        r->off += (size_t)w;
        return mp_str(r, (size_t)be(r->p + r->off - w, w));
    case 0xdc:
    case 0xdd:
        w = c == 0xdc ? 2 : 4;
        if (need(r, (size_t)w))
            return NULL;
        r->off += (size_t)w;
        return mp_array(r, (size_t)be(r->p + r->off - w, w), depth);
    case 0xde:
    case 0xdf:
        w = c == 0xde ? 2 : 4;
        if (need(r, (size_t)w))
            return NULL;
        r->off += (size_t)w;
        return mp_map(r, (size_t)be(r->p + r->off - w, w), depth);
    default:
        return NULL; /* ext types and 0xc1 are not saga data */
    }
}

json_t *sv_msgpack_json(const void *data, size_t len)
{
    if (len == 0)
        return json_object();
    rd r = {data, len, 0};
    json_t *v = mp_value(&r, 0);
    if (v != NULL && r.off != len) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ------------------------------------------------------------------------ */
/* Time                                                                     */

int64_t sv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sv_iso_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", b, (int)(ms % 1000));
}

void sv_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        snprintf(out, n, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(out, n, "%.1fs", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(out, n, "%lldm%llds", (long long)(ms / 60000),
                 (long long)(ms / 1000 % 60));
    else if (ms < 86400000)
        snprintf(out, n, "%lldh%lldm", (long long)(ms / 3600000),
                 (long long)(ms / 60000 % 60));
    else
        snprintf(out, n, "%lldd%lldh", (long long)(ms / 86400000),
                 (long long)(ms / 3600000 % 24));
}

int sv_parse_duration(const char *s, int64_t *ms)
{
    char *end;
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    long long v = strtoll(s, &end, 10);
    int64_t mul;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "d") == 0)
        mul = 86400000;
    else
        return -1;
    if (v < 0 || v > INT64_MAX / mul)
        return -1;
    *ms = v * mul;
    return 0;
}

saga_state sv_parse_state(const char *s)
{
    for (int st = SAGA_STATE_RUNNING; s && st <= SAGA_STATE_FAILED; st++)
        if (strcasecmp(s, saga_state_name((saga_state)st)) == 0)
            return (saga_state)st;
    return (saga_state)0;
}

const char *sv_kind_name(saga_step_kind k)
{
    return k == SAGA_STEP_PIVOT       ? "pivot"
           : k == SAGA_STEP_RETRIABLE ? "retriable"
                                      : "compensatable";
}

/* ------------------------------------------------------------------------ */
/* Shapes, cached per (name, version) while one call runs                   */

#define SHAPES_MAX 32

typedef struct shape_cache {
    saga_store *s;
    saga_shape *sh[SHAPES_MAX];
    char name[SHAPES_MAX][SAGA_NAME_MAX + 1];
    uint32_t version[SHAPES_MAX];
    size_t n;
} shape_cache;

static const saga_shape *shape_get(shape_cache *c, const char *name,
                                   uint32_t version)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->version[i] == version && strcmp(c->name[i], name) == 0)
            return c->sh[i];
    if (c->n == SHAPES_MAX)
        return NULL;
    saga_shape *sh = NULL;
    if (saga_shape_load(&sh, c->s, name, version) != SAGA_OK)
        sh = NULL;
    snprintf(c->name[c->n], sizeof c->name[0], "%s", name);
    c->version[c->n] = version;
    c->sh[c->n++] = sh;
    return sh;
}

static void shape_cache_free(shape_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        saga_shape_free(c->sh[i]);
}

static const char *step_name(const saga_shape *sh, int step)
{
    saga_shape_step_info st;
    if (sh == NULL || step < 0 || saga_shape_step(sh, (size_t)step, &st))
        return NULL;
    return st.name;
}

static json_t *record_json(const saga_record *r, const saga_shape *sh,
                           int64_t now)
{
    const char *sn = step_name(sh, r->step);
    return json_pack(
        "{s:s, s:s, s:I, s:s, s:i, s:s?, s:I, s:s, s:I, s:I, s:I, s:s?, "
        "s:s?, s:b, s:b}",
        "id", r->id, "definition", r->def_name, "version",
        (json_int_t)r->def_version, "state", saga_state_name(r->state), "step",
        (int)r->step, "step_name", sn, "attempt", (json_int_t)r->attempt,
        "direction", (r->flags & SAGA_REC_BACKWARD) ? "compensation" : "action",
        "created_ms", (json_int_t)r->created_ms, "updated_ms",
        (json_int_t)r->updated_ms, "age_ms", (json_int_t)(now - r->created_ms),
        "error", r->error, "idem_key", r->idem_key, "pivoted",
        (r->flags & SAGA_REC_PIVOTED) != 0, "in_flight",
        (r->flags & SAGA_REC_INFLIGHT) != 0);
}

/* ------------------------------------------------------------------------ */
/* list                                                                     */

typedef struct list_ctx {
    const sv_filter *f;
    shape_cache cache;
    json_t **ring; /* the newest offset+limit matches */
    size_t cap, n, total;
    int64_t now;
    int oom;
} list_ctx;

static int list_cb(const saga_record *r, void *arg)
{
    list_ctx *c = arg;
    const sv_filter *f = c->f;
    if (f->definition && strcmp(f->definition, r->def_name) != 0)
        return 0;
    if (f->since_ms && r->created_ms < c->now - f->since_ms)
        return 0;
    json_t *j = record_json(r,
                            shape_get(&c->cache, r->def_name, r->def_version),
                            c->now);
    if (j == NULL) {
        c->oom = 1;
        return 1;
    }
    size_t slot = c->total % c->cap;
    if (c->total >= c->cap)
        json_decref(c->ring[slot]);
    c->ring[slot] = j;
    c->total++;
    return 0;
}

int sv_list(saga_store *s, const sv_filter *f, json_t **out)
{
    *out = NULL;
    list_ctx c;
    memset(&c, 0, sizeof c);
    c.f = f;
    c.cache.s = s;
    c.now = sv_now_ms();
    size_t limit = f->limit ? f->limit : 50;
    if (limit > 1000)
        limit = 1000;
    size_t offset = f->offset > 100000 ? 100000 : f->offset;
    c.cap = offset + limit;
    c.ring = calloc(c.cap, sizeof *c.ring);
    if (c.ring == NULL)
        return SAGA_ENOMEM;
    unsigned mask = f->state_mask ? f->state_mask : SAGA_STATE_MASK_ALL;
    int rc = s->saga_scan(s, mask, list_cb, &c);
    if (rc == SAGA_OK && c.oom)
        rc = SAGA_ENOMEM;
    json_t *arr = json_array();
    /* Newest first: walk the ring backwards from the last match. */
    size_t have = c.total < c.cap ? c.total : c.cap;
    for (size_t k = 0; k < have; k++) {
        size_t idx = (c.total - 1 - k) % c.cap;
        if (k >= offset && k < offset + limit)
            json_array_append(arr, c.ring[idx]);
    }
    for (size_t k = 0; k < have; k++)
        json_decref(c.ring[k]);
    free(c.ring);
    shape_cache_free(&c.cache);
    if (rc != SAGA_OK) {
        json_decref(arr);
        return rc;
    }
    *out = json_pack("{s:I, s:I, s:I, s:o}", "total", (json_int_t)c.total,
                     "offset", (json_int_t)offset, "limit", (json_int_t)limit,
                     "sagas", arr);
    return *out ? SAGA_OK : SAGA_ENOMEM;
}

/* ------------------------------------------------------------------------ */
/* show                                                                     */

typedef struct show_ctx {
    json_t *saga, *data;
    char def_name[SAGA_NAME_MAX + 1];
    uint32_t def_version;
    json_t *journal;
    int64_t prev_ms;
    const saga_shape *sh;
    int64_t now;
} show_ctx;

static int show_rec_cb(const saga_record *r, void *arg)
{
    show_ctx *c = arg;
    snprintf(c->def_name, sizeof c->def_name, "%s", r->def_name);
    c->def_version = r->def_version;
    c->saga = record_json(r, NULL, c->now);
    c->data = sv_msgpack_json(r->data, r->data_len);
    return 0;
}

static int show_journal_cb(const saga_journal_entry *j, void *arg)
{
    show_ctx *c = arg;
    json_t *e = json_pack("{s:I, s:s, s:i, s:s?, s:I, s:I, s:I, s:I, s:s?}",
                          "seq", (json_int_t)j->seq, "event",
                          saga_journal_kind_name(j->kind), "step", (int)j->step,
                          "step_name", step_name(c->sh, j->step), "attempt",
                          (json_int_t)j->attempt, "at_ms", (json_int_t)j->at_ms,
                          "started_ms", (json_int_t)j->started_ms,
                          "since_prev_ms",
                          (json_int_t)(c->prev_ms ? j->at_ms - c->prev_ms : 0),
                          "error", j->error);
    c->prev_ms = j->at_ms;
    if (e)
        json_array_append_new(c->journal, e);
    return 0;
}

int sv_show(saga_store *s, const char *id, json_t **out)
{
    *out = NULL;
    show_ctx c;
    memset(&c, 0, sizeof c);
    c.now = sv_now_ms();
    int rc = s->saga_get(s, id, show_rec_cb, &c);
    if (rc != SAGA_OK)
        return rc;
    saga_shape *sh = NULL;
    if (saga_shape_load(&sh, s, c.def_name, c.def_version) != SAGA_OK)
        sh = NULL;
    c.sh = sh;
    if (c.saga && sh) {
        const char *sn = step_name(sh, (int)json_integer_value(
                                           json_object_get(c.saga, "step")));
        if (sn)
            json_object_set_new(c.saga, "step_name", json_string(sn));
    }
    c.journal = json_array();
    rc = s->journal_scan(s, id, show_journal_cb, &c);
    *out = json_pack("{s:o?, s:o?, s:o, s:o?}", "saga", c.saga, "data",
                     c.data ? c.data : json_string("(malformed msgpack)"),
                     "journal", c.journal, "definition",
                     sh ? sv_shape_json(sh) : NULL);
    saga_shape_free(sh);
    if (rc != SAGA_OK) {
        json_decref(*out);
        *out = NULL;
        return rc;
    }
    return *out ? SAGA_OK : SAGA_ENOMEM;
}

/* ------------------------------------------------------------------------ */
/* stats, definitions, shapes                                               */

typedef struct stats_ctx {
    json_t *states, *defs, *oldest;
    uint64_t total;
    int64_t now;
} stats_ctx;

static void bump(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    json_object_set_new(o, k, json_integer(v ? json_integer_value(v) + 1 : 1));
}

static int stats_cb(const saga_record *r, void *arg)
{
    stats_ctx *c = arg;
    const char *st = saga_state_name(r->state);
    bump(c->states, st);
    json_t *d = json_object_get(c->defs, r->def_name);
    if (d == NULL) {
        d = json_object();
        json_object_set_new(c->defs, r->def_name, d);
    }
    bump(d, st);
    c->total++;
    if ((r->state == SAGA_STATE_RUNNING ||
         r->state == SAGA_STATE_COMPENSATING) &&
        (c->oldest == NULL ||
         r->created_ms <
             json_integer_value(json_object_get(c->oldest, "created_ms")))) {
        json_decref(c->oldest);
        c->oldest = record_json(r, NULL, c->now);
    }
    return 0;
}

static int outbox_count_cb(const saga_message *m, void *arg)
{
    (void)m;
    (*(uint64_t *)arg)++;
    return 0;
}

int sv_stats(saga_store *s, json_t **out)
{
    stats_ctx c = {json_object(), json_object(), NULL, 0, sv_now_ms()};
    for (int st = SAGA_STATE_RUNNING; st <= SAGA_STATE_FAILED; st++)
        json_object_set_new(c.states, saga_state_name((saga_state)st),
                            json_integer(0));
    int rc = s->saga_scan(s, SAGA_STATE_MASK_ALL, stats_cb, &c);
    uint64_t outbox = 0;
    if (rc == SAGA_OK)
        rc = s->outbox_scan(s, 100000, outbox_count_cb, &outbox);
    *out = json_pack("{s:o, s:o, s:o?, s:I, s:I}", "states", c.states,
                     "definitions", c.defs, "oldest_active", c.oldest,
                     "outbox_depth", (json_int_t)outbox, "total",
                     (json_int_t)c.total);
    if (rc != SAGA_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

json_t *sv_shape_json(const saga_shape *sh)
{
    json_t *steps = json_array();
    for (size_t i = 0; i < saga_shape_step_count(sh); i++) {
        saga_shape_step_info st;
        saga_shape_step(sh, i, &st);
        json_array_append_new(
            steps,
            json_pack("{s:s, s:s, s:b, s:s?, s:s?, s:s?, s:I, s:I, s:I}",
                      "name", st.name, "kind",
                      sv_kind_name((saga_step_kind)st.kind), "compensation",
                      st.has_compensation, "service", st.service, "command",
                      st.command, "comp_command", st.comp_command, "timeout_ms",
                      (json_int_t)st.timeout_ms, "max_attempts",
                      (json_int_t)st.max_attempts, "comp_max_attempts",
                      (json_int_t)st.comp_max_attempts));
    }
    return json_pack("{s:s, s:I, s:I, s:o}", "name", saga_shape_name(sh),
                     "version", (json_int_t)saga_shape_version(sh),
                     "deadline_ms", (json_int_t)saga_shape_deadline(sh),
                     "steps", steps);
}

static int defs_cb(const char *name, uint32_t version, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s, s:I}", "name", name, "version",
                                         (json_int_t)version));
    return 0;
}

int sv_definitions(saga_store *s, json_t **out)
{
    *out = json_array();
    int rc = saga_shape_list(s, defs_cb, *out);
    if (rc != SAGA_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Diagrams                                                                 */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 1024;
        while (nc < b->len + (size_t)n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (np == NULL)
            return;
        b->p = np;
        b->cap = nc;
    }
}

/* Names in diagrams: [A-Za-z0-9._-] by the definition rules, so they need
 * no escaping inside quotes. */
char *sv_graph(const saga_shape *sh, const char *format, int current)
{
    sbuf b = {NULL, 0, 0};
    size_t n = saga_shape_step_count(sh);
    int dot = strcmp(format, "dot") == 0;
    if (!dot && strcmp(format, "mermaid") != 0)
        return NULL;
    if (dot) {
        sb_printf(&b,
                  "digraph \"%s_v%u\" {\n  rankdir=LR;\n"
                  "  node [fontname=\"Helvetica\"];\n"
                  "  start [shape=circle, label=\"start\"];\n"
                  "  done [shape=doublecircle, label=\"COMPLETED\"];\n"
                  "  undone [shape=doublecircle, label=\"COMPENSATED\"];\n",
                  saga_shape_name(sh), saga_shape_version(sh));
    } else {
        sb_printf(&b,
                  "flowchart LR\n  %%%% %s v%u\n  start((start))\n"
                  "  done(((COMPLETED)))\n  undone(((COMPENSATED)))\n",
                  saga_shape_name(sh), saga_shape_version(sh));
    }
    for (size_t i = 0; i < n; i++) {
        saga_shape_step_info st;
        saga_shape_step(sh, i, &st);
        char where[SAGA_NAME_MAX * 2 + 8] = "";
        if (st.service)
            snprintf(where, sizeof where, "%s%s -> %s", dot ? "\\n" : "<br/>",
                     st.service, st.command ? st.command : st.name);
        const char *kind = sv_kind_name((saga_step_kind)st.kind);
        if (dot) {
            const char *shape = st.kind == SAGA_STEP_PIVOT ? "hexagon" : "box";
            const char *style = st.kind == SAGA_STEP_RETRIABLE ? "rounded,bold"
                                : st.kind == SAGA_STEP_PIVOT   ? "bold"
                                                               : "solid";
            sb_printf(&b,
                      "  s%zu [shape=%s, style=\"%s%s\", label=\"%s\\n(%s%s)"
                      "%s\"%s];\n",
                      i, shape, style, (int)i == current ? ",filled" : "",
                      st.name, kind,
                      st.kind == SAGA_STEP_RETRIABLE ? ", retried" : "", where,
                      (int)i == current ? ", fillcolor=\"#ffd54f\"" : "");
            if (st.has_compensation)
                sb_printf(&b,
                          "  c%zu [shape=box, style=dashed, label=\"undo %s%s"
                          "%s\"];\n",
                          i, st.name, st.comp_command ? "\\n" : "",
                          st.comp_command ? st.comp_command : "");
        } else {
            const char *open = st.kind == SAGA_STEP_PIVOT       ? "{{"
                               : st.kind == SAGA_STEP_RETRIABLE ? "(["
                                                                : "[";
            const char *close = st.kind == SAGA_STEP_PIVOT       ? "}}"
                                : st.kind == SAGA_STEP_RETRIABLE ? "])"
                                                                 : "]";
            sb_printf(&b, "  s%zu%s\"%s<br/>(%s)%s\"%s:::%s\n", i, open,
                      st.name, kind, where, close, kind);
            if (st.has_compensation)
                sb_printf(&b, "  c%zu[/\"undo %s%s%s\"/]:::compensation\n", i,
                          st.name, st.comp_command ? "<br/>" : "",
                          st.comp_command ? st.comp_command : "");
        }
    }
    const char *arrow = dot ? "->" : "-->";
    const char *dashed = dot ? " [style=dashed, label=\"fail\"]" : "";
    sb_printf(&b, "  start %s s0;\n", arrow);
    for (size_t i = 0; i + 1 < n; i++)
        sb_printf(&b, "  s%zu %s s%zu;\n", i, arrow, i + 1);
    sb_printf(&b, "  s%zu %s done;\n", n ? n - 1 : 0, arrow);
    /* Compensation: a failure before the pivot walks back through the
     * compensations of the steps that completed, in reverse order. */
    int prev = -1;
    for (size_t i = 0; i < n; i++) {
        saga_shape_step_info st;
        saga_shape_step(sh, i, &st);
        if (st.kind != SAGA_STEP_RETRIABLE) {
            char target[32];
            if (prev >= 0)
                snprintf(target, sizeof target, "c%d", prev);
            else
                snprintf(target, sizeof target, "undone");
            if (dot)
                sb_printf(&b, "  s%zu -> %s%s;\n", i, target, dashed);
            else
                sb_printf(&b, "  s%zu -. fail .-> %s\n", i, target);
        }
        if (st.has_compensation)
            prev = (int)i;
    }
    int last = -1;
    for (int i = (int)n - 1; i >= 0; i--) {
        saga_shape_step_info st;
        saga_shape_step(sh, (size_t)i, &st);
        if (!st.has_compensation)
            continue;
        if (last >= 0)
            sb_printf(&b,
                      dot ? "  c%d -> c%d [style=dashed];\n"
                          : "  c%d -.-> c%d\n",
                      last, i);
        last = i;
    }
    if (last >= 0)
        sb_printf(&b,
                  dot ? "  c%d -> undone [style=dashed];\n"
                      : "  c%d -.-> undone\n",
                  last);
    if (dot) {
        sb_printf(&b, "}\n");
    } else {
        sb_printf(&b, "  classDef compensatable fill:#e3f2fd,stroke:#1565c0\n"
                      "  classDef pivot fill:#fff3e0,stroke:#e65100,"
                      "stroke-width:3px\n"
                      "  classDef retriable fill:#e8f5e9,stroke:#2e7d32\n"
                      "  classDef compensation fill:#fce4ec,stroke:#ad1457,"
                      "stroke-dasharray:4 3\n"
                      "  classDef current fill:#ffd54f,stroke:#000,"
                      "stroke-width:3px\n");
        if (current >= 0 && (size_t)current < n)
            sb_printf(&b, "  class s%d current\n", current);
    }
    return b.p;
}

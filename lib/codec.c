/*
 * codec.c — the msgpack wire envelope (DESIGN §8, include/saga/codec.h).
 *
 * Encoding uses msgpack-c's packer writing into a saga_realloc()'d buffer.
 * Decoding never hands the input to msgpack-c's unpacker (which allocates
 * for a container's declared size up front, so unvalidated bytes could make
 * it ask for gigabytes): one walk with the allocation-free reader of
 * mpread.c validates the whole input and keeps the heads of the top-level
 * pairs, and the envelope's fields are read from those. Nothing is
 * allocated; the payload points into the caller's buffer.
 */
#include <msgpack.h>
#include <stdatomic.h>
#include <string.h>

#include "saga/codec.h"
#include "mpread.h"
#include "util.h"

/* An envelope has 12 known keys; a few unknown ones leave room to grow.
 * The cap keeps the duplicate-key check (quadratic) trivially cheap. */
#define MAX_KEYS 64

/* ------------------------------------------------------------------------ */
/* Counters                                                                 */

enum reason {
    R_MALFORMED,
    R_OVERSIZE,
    R_VERSION,
    R_TYPE,
    R_MISSING,
    R_DUPLICATE,
    R_INVALID,
    R_COUNT
};

static atomic_uint_fast64_t g_decoded;
static atomic_uint_fast64_t g_rejected[R_COUNT];

int saga_codec_stats(saga_codec_counters *out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(out, SAGA_CODEC_COUNTERS_VERSION);
    memset(out, 0, sizeof(*out));
    out->version = SAGA_CODEC_COUNTERS_VERSION;
    out->decoded = atomic_load_explicit(&g_decoded, memory_order_relaxed);
#define LOAD(r) atomic_load_explicit(&g_rejected[r], memory_order_relaxed)
    out->rej_malformed = LOAD(R_MALFORMED);
    out->rej_oversize = LOAD(R_OVERSIZE);
    out->rej_version = LOAD(R_VERSION);
    out->rej_type = LOAD(R_TYPE);
    out->rej_missing = LOAD(R_MISSING);
    out->rej_duplicate = LOAD(R_DUPLICATE);
    out->rej_invalid = LOAD(R_INVALID);
#undef LOAD
    return SAGA_OK;
}

void saga_codec_stats_reset(void)
{
    atomic_store_explicit(&g_decoded, 0, memory_order_relaxed);
    for (int r = 0; r < R_COUNT; r++)
        atomic_store_explicit(&g_rejected[r], 0, memory_order_relaxed);
}

const char *saga_msg_kind_name(saga_msg_kind kind)
{
    switch (kind) {
    case SAGA_MSG_COMMAND:
        return "command";
    case SAGA_MSG_REPLY:
        return "reply";
    case SAGA_MSG_EVENT:
        return "event";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Encode                                                                   */

typedef struct growbuf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} growbuf;

static int growbuf_write(void *data, const char *buf, size_t len)
{
    growbuf *g = data;
    if (g->oom)
        return -1;
    if (len == 0) /* an empty body may come with a NULL pointer */
        return 0;
    if (g->cap - g->len < len) {
        size_t cap = g->cap ? g->cap : 256;
        while (cap - g->len < len) {
            if (cap > SIZE_MAX / 2) {
                g->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        char *p = saga_realloc(g->data, cap);
        if (p == NULL) {
            g->oom = 1;
            return -1;
        }
        g->data = p;
        g->cap = cap;
    }
    memcpy(g->data + g->len, buf, len);
    g->len += len;
    return 0;
}

/* Length of a NUL-terminated string held in an array of @p size bytes, or
 * -1 if the array has no NUL. */
static long arrlen(const char *s, size_t size)
{
    const char *nul = memchr(s, '\0', size);
    return nul ? (long)(nul - s) : -1;
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    size_t n = strlen(key);
    msgpack_pack_str_with_body(pk, key, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *key, const char *s,
                        size_t n)
{
    pack_key(pk, key);
    msgpack_pack_str_with_body(pk, s, n);
}

int saga_envelope_encode(const saga_envelope *env, void **buf_out,
                         size_t *len_out)
{
    if (buf_out != NULL)
        *buf_out = NULL;
    if (len_out != NULL)
        *len_out = 0;
    if (env == NULL || buf_out == NULL || len_out == NULL)
        return SAGA_EINVAL;
    if (env->v != 0 && env->v != SAGA_ENVELOPE_VERSION)
        return SAGA_EVERSION;
    if (env->kind != SAGA_MSG_COMMAND && env->kind != SAGA_MSG_REPLY &&
        env->kind != SAGA_MSG_EVENT)
        return SAGA_EINVAL;
    long idn = arrlen(env->msg_id, sizeof(env->msg_id));
    long sidn = arrlen(env->saga_id, sizeof(env->saga_id));
    long namen = arrlen(env->name, sizeof(env->name));
    long tracen = arrlen(env->trace, sizeof(env->trace));
    long errn = arrlen(env->error, sizeof(env->error));
    long rton = arrlen(env->reply_to, sizeof(env->reply_to));
    if (idn <= 0 || sidn <= 0 || namen <= 0 || tracen < 0 || errn < 0 ||
        rton < 0)
        return SAGA_EINVAL;
    if (env->kind == SAGA_MSG_REPLY &&
        (env->outcome < SAGA_OUTCOME_OK || env->outcome > SAGA_OUTCOME_RETRY))
        return SAGA_EINVAL;
    if ((env->payload == NULL && env->payload_len > 0) ||
        (uint64_t)env->payload_len > UINT32_MAX)
        return SAGA_EINVAL;

    int is_cmd = env->kind == SAGA_MSG_COMMAND;
    int is_reply = env->kind == SAGA_MSG_REPLY;
    /* comp: commands, and replies (which answer a command or its undo). */
    size_t nkeys = 9 + (is_cmd || is_reply ? 1 : 0) + (is_reply ? 1 : 0) +
                   (is_reply && errn > 0 ? 1 : 0) + (rton > 0 ? 1 : 0);
    growbuf g = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &g, growbuf_write);

    /* "v" first, so a reader meets the version before anything else. The
     * packer's return values are not checked one by one: growbuf_write
     * latches g.oom, checked once at the end. */
    msgpack_pack_map(&pk, nkeys);
    pack_key(&pk, "v");
    msgpack_pack_uint32(&pk, SAGA_ENVELOPE_VERSION);
    const char *kind = saga_msg_kind_name(env->kind);
    pack_kv_str(&pk, "kind", kind, strlen(kind));
    pack_kv_str(&pk, "msg_id", env->msg_id, (size_t)idn);
    pack_kv_str(&pk, "saga_id", env->saga_id, (size_t)sidn);
    pack_key(&pk, "step");
    msgpack_pack_uint32(&pk, env->step);
    pack_key(&pk, "attempt");
    msgpack_pack_uint32(&pk, env->attempt);
    pack_kv_str(&pk, "name", env->name, (size_t)namen);
    pack_kv_str(&pk, "trace", env->trace, (size_t)tracen);
    if (rton > 0)
        pack_kv_str(&pk, "reply_to", env->reply_to, (size_t)rton);
    if (is_cmd || is_reply) {
        pack_key(&pk, "comp");
        if (env->comp)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (is_reply) {
        pack_key(&pk, "outcome");
        msgpack_pack_uint32(&pk, (uint32_t)env->outcome);
        if (errn > 0)
            pack_kv_str(&pk, "error", env->error, (size_t)errn);
    }
    pack_key(&pk, "payload");
    msgpack_pack_bin_with_body(&pk, env->payload, env->payload_len);

    if (g.oom) {
        saga_free(g.data);
        return SAGA_ENOMEM;
    }
    *buf_out = g.data;
    *len_out = g.len;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Decode                                                                   */

enum key_id {
    K_V,
    K_KIND,
    K_MSG_ID,
    K_SAGA_ID,
    K_STEP,
    K_ATTEMPT,
    K_NAME,
    K_TRACE,
    K_PAYLOAD,
    K_COMP,
    K_OUTCOME,
    K_ERROR,
    K_REPLY_TO,
    K_COUNT,
    K_UNKNOWN = -1
};

/* The known keys with their lengths, so a lookup compares a length and a
 * first byte before any memcmp (this runs for every key of every message). */
static const struct {
    const char *name;
    size_t len;
} key_names[K_COUNT] = {
    {"v", 1},       {"kind", 4},  {"msg_id", 6},   {"saga_id", 7}, {"step", 4},
    {"attempt", 7}, {"name", 4},  {"trace", 5},    {"payload", 7}, {"comp", 4},
    {"outcome", 7}, {"error", 5}, {"reply_to", 8},
};

static int key_lookup(const uint8_t *p, size_t n)
{
    for (int k = 0; k < K_COUNT; k++)
        if (key_names[k].len == n && (uint8_t)key_names[k].name[0] == p[0] &&
            memcmp(key_names[k].name, p, n) == 0)
            return k;
    return K_UNKNOWN;
}

/* A decode failure: counts it, sets *why, returns @p code. */
typedef struct dctx {
    const char **why;
} dctx;

static int reject(dctx *c, enum reason r, int code, const char *why)
{
    atomic_fetch_add_explicit(&g_rejected[r], 1, memory_order_relaxed);
    if (c->why != NULL)
        *c->why = why;
    return code;
}

/* Copy a string field into its array: 1..max bytes (0..max if @p may_empty),
 * no NUL inside. Returns a reason, or -1 if fine. */
static int copy_str(const saga__mp_item *o, char *dst, size_t max,
                    int may_empty)
{
    if (o->type != SAGA__MP_STR)
        return R_TYPE;
    size_t n = o->len;
    if (n > max)
        return R_OVERSIZE;
    if (n == 0 && !may_empty)
        return R_TYPE;
    if (n > 0 && memchr(o->ptr, '\0', n) != NULL)
        return R_TYPE;
    if (n > 0)
        memcpy(dst, o->ptr, n);
    dst[n] = '\0';
    return -1;
}

static int get_u32(const saga__mp_item *o, uint32_t *out)
{
    if (o->type != SAGA__MP_UINT || o->u > UINT32_MAX)
        return R_TYPE;
    *out = (uint32_t)o->u;
    return -1;
}

/* Check and store one known field. Returns a reason, or -1 if fine. */
static int field(saga_envelope *e, int k, const saga__mp_item *o,
                 size_t max_payload)
{
    uint32_t u;
    int r;
    switch (k) {
    case K_KIND: {
        char kind[16];
        if ((r = copy_str(o, kind, sizeof(kind) - 1, 0)) >= 0)
            return r == R_OVERSIZE ? R_TYPE : r;
        if (strcmp(kind, "command") == 0)
            e->kind = SAGA_MSG_COMMAND;
        else if (strcmp(kind, "reply") == 0)
            e->kind = SAGA_MSG_REPLY;
        else if (strcmp(kind, "event") == 0)
            e->kind = SAGA_MSG_EVENT;
        else
            return R_TYPE;
        return -1;
    }
    case K_MSG_ID:
        return copy_str(o, e->msg_id, SAGA_NAME_MAX, 0);
    case K_SAGA_ID:
        return copy_str(o, e->saga_id, SAGA_NAME_MAX, 0);
    case K_NAME:
        return copy_str(o, e->name, SAGA_NAME_MAX, 0);
    case K_TRACE:
        return copy_str(o, e->trace, SAGA_ENVELOPE_TRACE_MAX, 1);
    case K_ERROR:
        return copy_str(o, e->error, SAGA_ENVELOPE_ERROR_MAX, 1);
    case K_REPLY_TO:
        return copy_str(o, e->reply_to, SAGA_NAME_MAX, 1);
    case K_STEP:
        return get_u32(o, &e->step);
    case K_ATTEMPT:
        return get_u32(o, &e->attempt);
    case K_OUTCOME:
        if ((r = get_u32(o, &u)) >= 0)
            return r;
        if (u > SAGA_OUTCOME_RETRY)
            return R_TYPE;
        e->outcome = (saga_outcome)u;
        return -1;
    case K_COMP:
        if (o->type != SAGA__MP_BOOL)
            return R_TYPE;
        e->comp = o->u ? 1 : 0;
        return -1;
    case K_PAYLOAD:
        if (o->type != SAGA__MP_BIN)
            return R_TYPE;
        if (o->len > max_payload)
            return R_OVERSIZE;
        /* Points into the caller's buffer, as msgpack-c's bin did. */
        e->payload = o->len ? o->ptr : NULL;
        e->payload_len = o->len;
        return -1;
    }
    return -1; /* K_V is checked by the caller */
}

static const char *reason_text(int r)
{
    switch (r) {
    case R_OVERSIZE:
        return "a string or the payload is over its limit";
    case R_TYPE:
        return "a field has the wrong type or value";
    default:
        return "malformed envelope";
    }
}

/* One key/value pair of the top-level map as the walk saw it: the key (a
 * string, or not) and the head of the value (for a container only its
 * header; no known field is a container, so that is all a check needs). */
typedef struct pair {
    int key_is_str;
    const uint8_t *key;
    uint32_t key_len;
    saga__mp_item val;
} pair;

/* Read one object at *off into @p it; a container is then stepped over
 * whole (@p max_depth counts from it). Returns 0, or -1. */
static int read_one(const uint8_t *p, size_t len, size_t *off,
                    saga__mp_item *it, unsigned max_depth)
{
    size_t start = *off;
    if (saga__mp_next(p, len, off, it) < 0)
        return -1;
    if ((it->type == SAGA__MP_ARRAY || it->type == SAGA__MP_MAP) &&
        it->len > 0) {
        *off = start;
        if (saga__mp_skip(p, len, off, max_depth) < 0)
            return -1;
    }
    return 0;
}

/* Check the pairs of the top-level map (@p n of them, at most MAX_KEYS);
 * fills @p e. Keys are checked first (string, no duplicate), then the
 * version, then the fields in key_id order. */
static int decode_pairs(dctx *c, const pair *m, uint32_t n, saga_envelope *e,
                        size_t max_payload)
{
    int where[K_COUNT];

    for (int k = 0; k < K_COUNT; k++)
        where[k] = -1;
    for (uint32_t i = 0; i < n; i++) {
        const pair *key = &m[i];
        if (!key->key_is_str)
            return reject(c, R_MALFORMED, SAGA_ECORRUPT, "non-string key");
        for (uint32_t j = 0; j < i; j++) {
            const pair *o = &m[j];
            /* Empty keys are equal without looking at their bytes. */
            if (o->key_len == key->key_len &&
                (key->key_len == 0 ||
                 (o->key[0] == key->key[0] &&
                  memcmp(o->key, key->key, key->key_len) == 0)))
                return reject(c, R_DUPLICATE, SAGA_ECORRUPT, "duplicate key");
        }
        int k = key_lookup(key->key, key->key_len);
        if (k != K_UNKNOWN)
            where[k] = (int)i;
    }

    /* The version decides how to read the rest, so it is checked first. */
    if (where[K_V] < 0)
        return reject(c, R_MISSING, SAGA_ECORRUPT, "no version key");
    const saga__mp_item *v = &m[where[K_V]].val;
    if (v->type != SAGA__MP_UINT)
        return reject(c, R_TYPE, SAGA_ECORRUPT, "version is not an integer");
    if (v->u != SAGA_ENVELOPE_VERSION)
        return reject(c, R_VERSION, SAGA_EVERSION, "unsupported version");
    e->v = SAGA_ENVELOPE_VERSION;

    static const int required[] = {K_KIND,    K_MSG_ID, K_SAGA_ID, K_STEP,
                                   K_ATTEMPT, K_NAME,   K_PAYLOAD};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (where[required[i]] < 0)
            return reject(c, R_MISSING, SAGA_ECORRUPT,
                          "a required key is missing");
    for (int k = K_KIND; k < K_COUNT; k++) {
        if (where[k] < 0)
            continue;
        int r = field(e, k, &m[where[k]].val, max_payload);
        if (r >= 0)
            return reject(c, (enum reason)r, SAGA_ECORRUPT, reason_text(r));
    }
    if (e->kind == SAGA_MSG_REPLY && where[K_OUTCOME] < 0)
        return reject(c, R_MISSING, SAGA_ECORRUPT, "a reply has no outcome");
    return SAGA_OK;
}

int saga_envelope_decode(saga_envelope *out, const void *buf, size_t len,
                         size_t max_payload, const char **why)
{
    dctx c = {why};
    if (why != NULL)
        *why = NULL;
    if (out == NULL || (buf == NULL && len > 0))
        return reject(&c, R_INVALID, SAGA_EINVAL, "invalid argument");
    memset(out, 0, sizeof(*out));
    if (max_payload == 0)
        max_payload = SAGA_ENVELOPE_PAYLOAD_MAX_DEFAULT;
    size_t limit = max_payload > SIZE_MAX - SAGA_ENVELOPE_OVERHEAD_MAX
                       ? SIZE_MAX
                       : max_payload + SAGA_ENVELOPE_OVERHEAD_MAX;
    if (len > limit)
        return reject(&c, R_OVERSIZE, SAGA_ECORRUPT, "message too large");

    const uint8_t *p = buf;
    size_t off = 0;
    saga__mp_item head;
    if (len == 0 || saga__mp_next(p, len, &off, &head) < 0 ||
        head.type != SAGA__MP_MAP)
        return reject(&c, R_MALFORMED, SAGA_ECORRUPT, "not a msgpack map");

    /* One walk validates everything and keeps the heads of the first
     * MAX_KEYS pairs; the checks below then read only what it kept. The
     * order of the rejections is that of a full validation first. */
    pair m[MAX_KEYS];
    for (uint32_t i = 0; i < head.len; i++) {
        saga__mp_item key, val;
        if (read_one(p, len, &off, &key, SAGA__MP_MAX_DEPTH - 1) < 0 ||
            read_one(p, len, &off, &val, SAGA__MP_MAX_DEPTH - 1) < 0)
            return reject(&c, R_MALFORMED, SAGA_ECORRUPT,
                          "truncated, malformed or too deeply nested");
        if (i < MAX_KEYS) {
            m[i].key_is_str = key.type == SAGA__MP_STR;
            m[i].key = key.ptr;
            m[i].key_len = key.len;
            m[i].val = val;
        }
    }
    if (off != len)
        return reject(&c, R_MALFORMED, SAGA_ECORRUPT, "trailing bytes");
    if (head.len > MAX_KEYS)
        return reject(&c, R_OVERSIZE, SAGA_ECORRUPT, "too many keys");

    int rc = decode_pairs(&c, m, head.len, out, max_payload);
    if (rc != SAGA_OK) {
        memset(out, 0, sizeof(*out));
        return rc;
    }
    atomic_fetch_add_explicit(&g_decoded, 1, memory_order_relaxed);
    return SAGA_OK;
}

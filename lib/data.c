/*
 * data.c — saga data: a msgpack map with string keys (saga.h, data.h).
 *
 * Reading never decodes into objects: the map is walked in place with the
 * bounds-checked reader of mpread.c and a value is read only when asked for,
 * as DESIGN §7 wants ("decoded only by the code that needs a field").
 * Writing (saga_map) keeps each value pre-encoded, so encode is a copy.
 *
 * Every reader validates the whole map first, including duplicate keys: a
 * map with a key twice has no single meaning (which value wins depends on
 * the decoder), so it is rejected instead of guessed at.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "saga/saga.h"
#include "data.h"
#include "mpread.h"

/* ------------------------------------------------------------------------ */
/* Parsing a map in place                                                   */

/* One pair: the key's bytes, and where the pair starts and ends. */
typedef struct kv {
    const uint8_t *k;
    uint32_t klen;
    size_t start; /* offset of the key's first byte */
    size_t voff;  /* offset of the value's first byte */
    size_t end;   /* offset just past the value */
} kv;

/* Maps up to this many pairs are parsed without allocating. */
#define SMALL 32

typedef struct kvlist {
    kv *v;
    size_t n;
    kv small[SMALL];
} kvlist;

static void kvlist_free(kvlist *l)
{
    if (l->v != l->small)
        saga_free(l->v);
    l->v = NULL;
}

static int kv_cmp(const void *x, const void *y)
{
    const kv *a = x, *b = y;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = n ? memcmp(a->k, b->k, n) : 0;
    if (c != 0)
        return c;
    return (a->klen > b->klen) - (a->klen < b->klen);
}

/* 1 if two pairs of @p l have the same key; -1 if out of memory. */
static int has_dup(const kvlist *l)
{
    if (l->n <= SMALL) {
        for (size_t i = 1; i < l->n; i++)
            for (size_t j = 0; j < i; j++)
                if (kv_cmp(&l->v[i], &l->v[j]) == 0)
                    return 1;
        return 0;
    }
    /* Sort a copy: callers need the original order. */
    kv *s = saga_malloc(l->n * sizeof(*s));
    if (s == NULL)
        return -1;
    memcpy(s, l->v, l->n * sizeof(*s));
    qsort(s, l->n, sizeof(*s), kv_cmp);
    int dup = 0;
    for (size_t i = 1; i < l->n && !dup; i++)
        dup = kv_cmp(&s[i - 1], &s[i]) == 0;
    saga_free(s);
    return dup;
}

/*
 * Parse the map in @p p/@p len into @p l (which the caller frees with
 * kvlist_free on any return). NULL/0 is an empty map.
 * @return SAGA_OK, SAGA_EINVAL (NULL with a length), SAGA_ECORRUPT, or
 * SAGA_ENOMEM.
 */
static int map_parse(const void *p, size_t len, kvlist *l)
{
    l->v = l->small;
    l->n = 0;
    if (p == NULL)
        return len == 0 ? SAGA_OK : SAGA_EINVAL;
    if (len == 0)
        return SAGA_OK;

    const uint8_t *b = p;
    size_t off = 0;
    saga__mp_item it;
    if (saga__mp_next(b, len, &off, &it) < 0 || it.type != SAGA__MP_MAP)
        return SAGA_ECORRUPT;
    /* saga__mp_next checked that 2 * it.len bytes remain, so this size is
     * bounded by the input length. */
    if (it.len > SMALL) {
        l->v = saga_malloc((size_t)it.len * sizeof(kv));
        if (l->v == NULL)
            return SAGA_ENOMEM;
    }
    for (uint32_t i = 0; i < it.len; i++) {
        kv *e = &l->v[i];
        saga__mp_item key;
        e->start = off;
        if (saga__mp_next(b, len, &off, &key) < 0 || key.type != SAGA__MP_STR)
            return SAGA_ECORRUPT;
        e->k = key.ptr;
        e->klen = key.len;
        e->voff = off;
        if (saga__mp_skip(b, len, &off, SAGA__MP_MAX_DEPTH - 1) < 0)
            return SAGA_ECORRUPT;
        e->end = off;
        l->n = i + 1;
    }
    if (off != len)
        return SAGA_ECORRUPT;
    int dup = has_dup(l);
    if (dup < 0)
        return SAGA_ENOMEM;
    return dup ? SAGA_ECORRUPT : SAGA_OK;
}

static const kv *kv_find_len(const kvlist *l, const uint8_t *key, size_t n)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].klen == n && (n == 0 || memcmp(l->v[i].k, key, n) == 0))
            return &l->v[i];
    return NULL;
}

/* Is @p e's key among @p l's keys? @p sorted is l sorted by kv_cmp, or NULL
 * for a small list searched linearly. */
static int kv_in(const kvlist *l, const kv *sorted, const kv *e)
{
    if (sorted != NULL)
        return bsearch(e, sorted, l->n, sizeof(kv), kv_cmp) != NULL;
    return kv_find_len(l, e->k, e->klen) != NULL;
}

int saga__data_is_map(const void *p, size_t len)
{
    kvlist l;
    int rc = map_parse(p, len, &l);
    kvlist_free(&l);
    return rc == SAGA_OK;
}

/* Bytes of a msgpack map header for @p n pairs, written to @p out. */
static size_t map_header(uint8_t *out, size_t n)
{
    if (n <= 15) {
        out[0] = (uint8_t)(0x80 | n);
        return 1;
    }
    if (n <= 0xffff) {
        out[0] = 0xde;
        out[1] = (uint8_t)(n >> 8);
        out[2] = (uint8_t)n;
        return 3;
    }
    out[0] = 0xdf;
    for (int i = 0; i < 4; i++)
        out[1 + i] = (uint8_t)(n >> (24 - 8 * i));
    return 5;
}

int saga__data_merge(const void *a, size_t alen, const void *b, size_t blen,
                     void **out, size_t *out_len)
{
    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (out == NULL || out_len == NULL)
        return SAGA_EINVAL;

    kvlist la, lb;
    int rc = map_parse(a, alen, &la);
    if (rc == SAGA_OK)
        rc = map_parse(b, blen, &lb);
    else
        lb.v = lb.small;
    if (rc != SAGA_OK)
        goto done;

    /* Big maps are matched by binary search, so a hostile map with many
     * keys costs n log n, not n * m. */
    kv *sorted = NULL;
    if (lb.n > SMALL && la.n > 0) {
        sorted = saga_malloc(lb.n * sizeof(kv));
        if (sorted == NULL) {
            rc = SAGA_ENOMEM;
            goto done;
        }
        memcpy(sorted, lb.v, lb.n * sizeof(kv));
        qsort(sorted, lb.n, sizeof(kv), kv_cmp);
    }

    /* Count and size what survives of a; b survives whole. */
    size_t n = lb.n, size = 5;
    for (size_t i = 0; i < la.n; i++) {
        if (!kv_in(&lb, sorted, &la.v[i])) {
            n++;
            size += la.v[i].end - la.v[i].start;
        }
    }
    for (size_t i = 0; i < lb.n; i++)
        size += lb.v[i].end - lb.v[i].start;
    uint8_t *o = n > UINT32_MAX ? NULL : saga_malloc(size);
    if (o == NULL) {
        saga_free(sorted);
        rc = n > UINT32_MAX ? SAGA_ECORRUPT : SAGA_ENOMEM;
        goto done;
    }
    size_t w = map_header(o, n);
    for (size_t i = 0; i < la.n; i++) {
        const kv *e = &la.v[i];
        if (kv_in(&lb, sorted, e))
            continue;
        memcpy(o + w, (const uint8_t *)a + e->start, e->end - e->start);
        w += e->end - e->start;
    }
    for (size_t i = 0; i < lb.n; i++) {
        const kv *e = &lb.v[i];
        memcpy(o + w, (const uint8_t *)b + e->start, e->end - e->start);
        w += e->end - e->start;
    }
    saga_free(sorted);
    *out = o;
    *out_len = w;
done:
    kvlist_free(&la);
    kvlist_free(&lb);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading one value                                                        */

/* Find @p key in map @p data and read its value's head into @p it.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_EINVAL or SAGA_ECORRUPT. */
static int data_get(const void *data, size_t len, const char *key,
                    saga__mp_item *it)
{
    if (key == NULL || (data == NULL && len > 0))
        return SAGA_EINVAL;
    kvlist l;
    int rc = map_parse(data, len, &l);
    if (rc == SAGA_OK) {
        const kv *e = kv_find_len(&l, (const uint8_t *)key, strlen(key));
        if (e == NULL) {
            rc = SAGA_ENOTFOUND;
        } else {
            size_t off = e->voff;
            /* Already validated by map_parse, so this cannot fail. */
            rc = saga__mp_next(data, len, &off, it) < 0 ? SAGA_ECORRUPT
                                                        : SAGA_OK;
        }
    }
    kvlist_free(&l);
    return rc;
}

int saga_data_get_str(const void *data, size_t len, const char *key,
                      const char **out, size_t *out_len)
{
    saga__mp_item it;
    if (out == NULL || out_len == NULL)
        return SAGA_EINVAL;
    int rc = data_get(data, len, key, &it);
    if (rc != SAGA_OK)
        return rc;
    if (it.type != SAGA__MP_STR)
        return SAGA_EINVAL;
    *out = (const char *)it.ptr;
    *out_len = it.len;
    return SAGA_OK;
}

int saga_data_get_int(const void *data, size_t len, const char *key,
                      int64_t *out)
{
    saga__mp_item it;
    if (out == NULL)
        return SAGA_EINVAL;
    int rc = data_get(data, len, key, &it);
    if (rc != SAGA_OK)
        return rc;
    if (it.type == SAGA__MP_INT) {
        *out = it.i;
        return SAGA_OK;
    }
    /* A uint64 above INT64_MAX does not fit: a different type for us. */
    if (it.type != SAGA__MP_UINT || it.u > (uint64_t)INT64_MAX)
        return SAGA_EINVAL;
    *out = (int64_t)it.u;
    return SAGA_OK;
}

int saga_data_get_bool(const void *data, size_t len, const char *key, int *out)
{
    saga__mp_item it;
    if (out == NULL)
        return SAGA_EINVAL;
    int rc = data_get(data, len, key, &it);
    if (rc != SAGA_OK)
        return rc;
    if (it.type != SAGA__MP_BOOL)
        return SAGA_EINVAL;
    *out = it.u ? 1 : 0;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* The map builder                                                          */

typedef struct entry {
    char *key;
    size_t klen;
    uint8_t *val; /* the value, msgpack-encoded */
    size_t vlen;
} entry;

/* A growable saga_malloc buffer used as a msgpack-c packer target. */
typedef struct buf {
    uint8_t *data;
    size_t len, cap;
    int oom;
} buf;

struct saga_map {
    entry *e;
    size_t n, cap;
    buf enc;   /* the last encoding */
    int dirty; /* enc is stale */
};

static int buf_write(void *data, const char *p, size_t len)
{
    buf *g = data;
    if (g->oom)
        return -1;
    if (len == 0)
        return 0;
    if (g->cap - g->len < len) {
        size_t cap = g->cap ? g->cap : 64;
        while (cap - g->len < len) {
            if (cap > SIZE_MAX / 2) {
                g->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        uint8_t *q = saga_realloc(g->data, cap);
        if (q == NULL) {
            g->oom = 1;
            return -1;
        }
        g->data = q;
        g->cap = cap;
    }
    memcpy(g->data + g->len, p, len);
    g->len += len;
    return 0;
}

int saga_map_new(saga_map **out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = saga_malloc(sizeof(saga_map));
    if (*out == NULL)
        return SAGA_ENOMEM;
    memset(*out, 0, sizeof(saga_map));
    (*out)->dirty = 1;
    return SAGA_OK;
}

void saga_map_free(saga_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        saga_free(m->e[i].key);
        saga_free(m->e[i].val);
    }
    saga_free(m->e);
    saga_free(m->enc.data);
    saga_free(m);
}

/* Store the encoded value in @p v (taken over, even on error) under @p key. */
static int map_put(saga_map *m, const char *key, buf *v)
{
    if (v->oom) {
        saga_free(v->data);
        return SAGA_ENOMEM;
    }
    size_t klen = strlen(key);
    for (size_t i = 0; i < m->n; i++) {
        entry *e = &m->e[i];
        if (e->klen == klen && memcmp(e->key, key, klen) == 0) {
            saga_free(e->val);
            e->val = v->data;
            e->vlen = v->len;
            m->dirty = 1;
            return SAGA_OK;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        entry *ne = saga_realloc(m->e, cap * sizeof(entry));
        if (ne == NULL) {
            saga_free(v->data);
            return SAGA_ENOMEM;
        }
        m->e = ne;
        m->cap = cap;
    }
    char *k = saga_malloc(klen + 1);
    if (k == NULL) {
        saga_free(v->data);
        return SAGA_ENOMEM;
    }
    memcpy(k, key, klen + 1);
    m->e[m->n++] = (entry){k, klen, v->data, v->len};
    m->dirty = 1;
    return SAGA_OK;
}

/* Set up a packer for one value after checking the common arguments. */
#define BEGIN_VALUE(m, key)                                                    \
    buf v = {0};                                                               \
    msgpack_packer pk;                                                         \
    if ((m) == NULL || (key) == NULL)                                          \
        return SAGA_EINVAL;                                                    \
    msgpack_packer_init(&pk, &v, buf_write)

int saga_map_set_str(saga_map *m, const char *key, const char *val)
{
    BEGIN_VALUE(m, key);
    if (val == NULL)
        return SAGA_EINVAL;
    msgpack_pack_str_with_body(&pk, val, strlen(val));
    return map_put(m, key, &v);
}

int saga_map_set_int(saga_map *m, const char *key, int64_t val)
{
    BEGIN_VALUE(m, key);
    msgpack_pack_int64(&pk, val);
    return map_put(m, key, &v);
}

int saga_map_set_bool(saga_map *m, const char *key, int val)
{
    BEGIN_VALUE(m, key);
    if (val)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    return map_put(m, key, &v);
}

int saga_map_set_bin(saga_map *m, const char *key, const void *val, size_t len)
{
    BEGIN_VALUE(m, key);
    if ((val == NULL && len > 0) || (uint64_t)len > UINT32_MAX)
        return SAGA_EINVAL;
    msgpack_pack_bin_with_body(&pk, val, len);
    return map_put(m, key, &v);
}

int saga_map_encode(saga_map *m, const void **data, size_t *len)
{
    if (m == NULL || data == NULL || len == NULL)
        return SAGA_EINVAL;
    if (m->dirty) {
        msgpack_packer pk;
        m->enc.len = 0;
        m->enc.oom = 0;
        msgpack_packer_init(&pk, &m->enc, buf_write);
        msgpack_pack_map(&pk, m->n);
        for (size_t i = 0; i < m->n; i++) {
            msgpack_pack_str_with_body(&pk, m->e[i].key, m->e[i].klen);
            buf_write(&m->enc, (const char *)m->e[i].val, m->e[i].vlen);
        }
        if (m->enc.oom)
            return SAGA_ENOMEM;
        m->dirty = 0;
    }
    *data = m->enc.data;
    *len = m->enc.len;
    return SAGA_OK;
}

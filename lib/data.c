/*
 * data.c — saga data: a msgpack map with string keys. The engine keeps it
 * as an opaque blob and decodes it only here, when a step's output is
 * merged in or a caller reads a field.
 */
#include <msgpack.h>
#include <string.h>

#include "data.h"
#include "internal.h"

/* Decode exactly one map with string keys and nothing after it. */
static int unpack_map(const void *p, size_t len, msgpack_unpacked *u)
{
    size_t off = 0;
    msgpack_unpacked_init(u);
    if (msgpack_unpack_next(u, p, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != len || u->data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(u);
        return SAGA_ECORRUPT;
    }
    msgpack_object_map *m = &u->data.via.map;
    for (uint32_t i = 0; i < m->size; i++)
        if (m->ptr[i].key.type != MSGPACK_OBJECT_STR) {
            msgpack_unpacked_destroy(u);
            return SAGA_ECORRUPT;
        }
    return SAGA_OK;
}

int saga__data_is_map(const void *p, size_t len)
{
    if (p == NULL || len == 0)
        return p == NULL || len == 0;
    msgpack_unpacked u;
    if (unpack_map(p, len, &u) != SAGA_OK)
        return 0;
    msgpack_unpacked_destroy(&u);
    return 1;
}

static int key_eq(const msgpack_object *k, const char *s, size_t n)
{
    return k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_find(const msgpack_object_map *m,
                                      const char *key, size_t n)
{
    for (uint32_t i = m->size; i-- > 0;) /* the last duplicate wins */
        if (key_eq(&m->ptr[i].key, key, n))
            return &m->ptr[i].val;
    return NULL;
}

static int sbuf_take(msgpack_sbuffer *sb, void **out, size_t *out_len)
{
    void *p = saga_malloc(sb->size ? sb->size : 1);
    if (p == NULL)
        return SAGA_ENOMEM;
    memcpy(p, sb->data, sb->size);
    *out = p;
    *out_len = sb->size;
    return SAGA_OK;
}

int saga__data_merge(const void *a, size_t alen, const void *b, size_t blen,
                     void **out, size_t *out_len)
{
    static const unsigned char empty = 0x80;
    if (a == NULL || alen == 0)
        a = &empty, alen = 1;
    if (b == NULL || blen == 0)
        b = &empty, blen = 1;
    msgpack_unpacked ua, ub;
    if (unpack_map(a, alen, &ua) != SAGA_OK)
        return SAGA_ECORRUPT;
    if (unpack_map(b, blen, &ub) != SAGA_OK) {
        msgpack_unpacked_destroy(&ua);
        return SAGA_ECORRUPT;
    }
    msgpack_object_map *ma = &ua.data.via.map, *mb = &ub.data.via.map;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < ma->size; i++) {
        const msgpack_object *k = &ma->ptr[i].key;
        if (!map_find(mb, k->via.str.ptr, k->via.str.size))
            keep++;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_map(&pk, keep + mb->size);
    for (uint32_t i = 0; i < ma->size && !bad; i++) {
        const msgpack_object *k = &ma->ptr[i].key;
        if (map_find(mb, k->via.str.ptr, k->via.str.size))
            continue;
        bad = msgpack_pack_object(&pk, *k) ||
              msgpack_pack_object(&pk, ma->ptr[i].val);
    }
    for (uint32_t i = 0; i < mb->size && !bad; i++)
        bad = msgpack_pack_object(&pk, mb->ptr[i].key) ||
              msgpack_pack_object(&pk, mb->ptr[i].val);
    int rc = bad ? SAGA_ENOMEM : sbuf_take(&sb, out, out_len);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&ua);
    msgpack_unpacked_destroy(&ub);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading fields                                                           */

static int get_field(const void *data, size_t len, const char *key,
                     msgpack_unpacked *u, const msgpack_object **val)
{
    if (key == NULL)
        return SAGA_EINVAL;
    if (data == NULL || len == 0)
        return SAGA_ENOTFOUND;
    int rc = unpack_map(data, len, u);
    if (rc != SAGA_OK)
        return rc;
    *val = map_find(&u->data.via.map, key, strlen(key));
    if (*val == NULL) {
        msgpack_unpacked_destroy(u);
        return SAGA_ENOTFOUND;
    }
    return SAGA_OK;
}

int saga_data_get_str(const void *data, size_t len, const char *key,
                      const char **out, size_t *out_len)
{
    if (out == NULL || out_len == NULL)
        return SAGA_EINVAL;
    msgpack_unpacked u;
    const msgpack_object *v;
    int rc = get_field(data, len, key, &u, &v);
    if (rc != SAGA_OK)
        return rc;
    if (v->type == MSGPACK_OBJECT_STR) {
        /* The zone-free unpacker points strings into the input buffer. */
        *out = v->via.str.ptr;
        *out_len = v->via.str.size;
    } else {
        rc = SAGA_EINVAL;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

int saga_data_get_int(const void *data, size_t len, const char *key,
                      int64_t *out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    msgpack_unpacked u;
    const msgpack_object *v;
    int rc = get_field(data, len, key, &u, &v);
    if (rc != SAGA_OK)
        return rc;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        v->via.u64 <= (uint64_t)INT64_MAX)
        *out = (int64_t)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else
        rc = SAGA_EINVAL;
    msgpack_unpacked_destroy(&u);
    return rc;
}

int saga_data_get_bool(const void *data, size_t len, const char *key,
                       int *out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    msgpack_unpacked u;
    const msgpack_object *v;
    int rc = get_field(data, len, key, &u, &v);
    if (rc != SAGA_OK)
        return rc;
    if (v->type == MSGPACK_OBJECT_BOOLEAN)
        *out = v->via.boolean ? 1 : 0;
    else
        rc = SAGA_EINVAL;
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The map builder                                                          */

enum { V_STR, V_INT, V_BOOL, V_BIN };

typedef struct entry {
    char *key;
    int type;
    int64_t i;
    void *p;
    size_t n;
} entry;

struct saga_map {
    entry *e;
    size_t n, cap;
    msgpack_sbuffer sb;
};

int saga_map_new(saga_map **out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    saga_map *m = saga_malloc(sizeof *m);
    if (m == NULL)
        return SAGA_ENOMEM;
    memset(m, 0, sizeof *m);
    msgpack_sbuffer_init(&m->sb);
    *out = m;
    return SAGA_OK;
}

void saga_map_free(saga_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        saga_free(m->e[i].key);
        saga_free(m->e[i].p);
    }
    saga_free(m->e);
    msgpack_sbuffer_destroy(&m->sb);
    saga_free(m);
}

static int map_set(saga_map *m, const char *key, int type, int64_t i,
                   const void *p, size_t n)
{
    if (m == NULL || key == NULL || (n > 0 && p == NULL))
        return SAGA_EINVAL;
    void *copy = NULL;
    if (type == V_STR || type == V_BIN) {
        copy = saga_malloc(n ? n : 1);
        if (copy == NULL)
            return SAGA_ENOMEM;
        if (n)
            memcpy(copy, p, n);
    }
    entry *slot = NULL;
    for (size_t k = 0; k < m->n; k++)
        if (strcmp(m->e[k].key, key) == 0)
            slot = &m->e[k];
    if (slot == NULL) {
        if (m->n == m->cap) {
            size_t nc = m->cap ? m->cap * 2 : 8;
            entry *ne = saga_realloc(m->e, nc * sizeof *ne);
            if (ne == NULL) {
                saga_free(copy);
                return SAGA_ENOMEM;
            }
            m->e = ne;
            m->cap = nc;
        }
        char *k = saga__strdup(key);
        if (k == NULL) {
            saga_free(copy);
            return SAGA_ENOMEM;
        }
        slot = &m->e[m->n++];
        memset(slot, 0, sizeof *slot);
        slot->key = k;
    }
    saga_free(slot->p);
    slot->type = type;
    slot->i = i;
    slot->p = copy;
    slot->n = n;
    return SAGA_OK;
}

int saga_map_set_str(saga_map *m, const char *key, const char *val)
{
    if (val == NULL)
        return SAGA_EINVAL;
    return map_set(m, key, V_STR, 0, val, strlen(val));
}

int saga_map_set_int(saga_map *m, const char *key, int64_t val)
{
    return map_set(m, key, V_INT, val, NULL, 0);
}

int saga_map_set_bool(saga_map *m, const char *key, int val)
{
    return map_set(m, key, V_BOOL, val ? 1 : 0, NULL, 0);
}

int saga_map_set_bin(saga_map *m, const char *key, const void *val, size_t len)
{
    return map_set(m, key, V_BIN, 0, val, len);
}

int saga_map_encode(saga_map *m, const void **data, size_t *len)
{
    if (m == NULL || data == NULL || len == NULL)
        return SAGA_EINVAL;
    msgpack_sbuffer_clear(&m->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_map(&pk, (uint32_t)m->n);
    for (size_t i = 0; i < m->n && !bad; i++) {
        entry *e = &m->e[i];
        size_t kl = strlen(e->key);
        bad = msgpack_pack_str(&pk, kl) || msgpack_pack_str_body(&pk, e->key, kl);
        if (bad)
            break;
        switch (e->type) {
        case V_STR:
            bad = msgpack_pack_str(&pk, e->n) ||
                  msgpack_pack_str_body(&pk, e->p, e->n);
            break;
        case V_INT:
            bad = msgpack_pack_int64(&pk, e->i);
            break;
        case V_BOOL:
            bad = e->i ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
            break;
        default:
            bad = msgpack_pack_bin(&pk, e->n) ||
                  msgpack_pack_bin_body(&pk, e->p, e->n);
            break;
        }
    }
    if (bad)
        return SAGA_ENOMEM;
    *data = m->sb.data;
    *len = m->sb.size;
    return SAGA_OK;
}

/*
 * mpread.c — a bounds-checked msgpack reader that never allocates.
 *
 * Every length read from the input is checked against what is left before
 * anything is dereferenced. Counts are compared with the remaining bytes
 * (each element needs at least one), so a lying header fails fast instead of
 * making anyone loop over four billion missing elements.
 */
#include <string.h>

#include "mpread.h"

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Take @p n bytes at *off if they are there. */
static const uint8_t *take(const uint8_t *p, size_t len, size_t *off, size_t n)
{
    if (*off > len || len - *off < n)
        return NULL;
    const uint8_t *r = p + *off;
    *off += n;
    return r;
}

/* A body of @p n bytes (str/bin/ext); its length was already read. */
static int body(const uint8_t *p, size_t len, size_t *off, uint64_t n,
                saga__mp_item *it)
{
    if (n > UINT32_MAX)
        return -1;
    const uint8_t *b = take(p, len, off, (size_t)n);
    if (b == NULL)
        return -1;
    it->ptr = b;
    it->len = (uint32_t)n;
    return 0;
}

/* The length field of @p n bytes that follows a type byte. */
static int lenfield(const uint8_t *p, size_t len, size_t *off, unsigned n,
                    uint64_t *out)
{
    const uint8_t *b = take(p, len, off, n);
    if (b == NULL)
        return -1;
    *out = be(b, n);
    return 0;
}

static int container(const uint8_t *p, size_t len, size_t *off, unsigned n,
                     saga__mp_type type, saga__mp_item *it)
{
    uint64_t count;
    if (lenfield(p, len, off, n, &count) < 0)
        return -1;
    it->type = type;
    it->len = (uint32_t)count;
    return 0;
}

static int ext(const uint8_t *p, size_t len, size_t *off, uint64_t n,
               saga__mp_item *it)
{
    const uint8_t *t = take(p, len, off, 1);
    if (t == NULL)
        return -1;
    it->type = SAGA__MP_EXT;
    it->ext_type = (int8_t)t[0];
    return body(p, len, off, n, it);
}

int saga__mp_next(const uint8_t *p, size_t len, size_t *off, saga__mp_item *it)
{
    size_t o = *off;
    uint64_t n;
    const uint8_t *b;

    memset(it, 0, sizeof(*it));
    if ((b = take(p, len, &o, 1)) == NULL)
        return -1;
    uint8_t c = b[0];

    if (c <= 0x7f) {
        it->type = SAGA__MP_UINT;
        it->u = c;
    } else if (c >= 0xe0) {
        it->type = SAGA__MP_INT;
        it->i = (int8_t)c;
    } else if (c <= 0x8f) {
        it->type = SAGA__MP_MAP;
        it->len = c & 0x0f;
    } else if (c <= 0x9f) {
        it->type = SAGA__MP_ARRAY;
        it->len = c & 0x0f;
    } else if (c <= 0xbf) {
        it->type = SAGA__MP_STR;
        if (body(p, len, &o, c & 0x1f, it) < 0)
            return -1;
    } else {
        switch (c) {
        case 0xc0:
            it->type = SAGA__MP_NIL;
            break;
        case 0xc2:
        case 0xc3:
            it->type = SAGA__MP_BOOL;
            it->u = c == 0xc3;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            it->type = SAGA__MP_BIN;
            if (lenfield(p, len, &o, 1u << (c - 0xc4), &n) < 0 ||
                body(p, len, &o, n, it) < 0)
                return -1;
            break;
        case 0xc7:
        case 0xc8:
        case 0xc9:
            if (lenfield(p, len, &o, 1u << (c - 0xc7), &n) < 0 ||
                ext(p, len, &o, n, it) < 0)
                return -1;
            break;
        case 0xca:
        case 0xcb: {
            unsigned w = c == 0xca ? 4 : 8;
            if ((b = take(p, len, &o, w)) == NULL)
                return -1;
            uint64_t bits = be(b, w);
            it->type = SAGA__MP_FLOAT;
            if (w == 4) {
                uint32_t b32 = (uint32_t)bits;
                float fl;
                memcpy(&fl, &b32, sizeof(fl));
                it->f = fl;
            } else {
                memcpy(&it->f, &bits, sizeof(it->f));
            }
            break;
        }
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            if (lenfield(p, len, &o, 1u << (c - 0xcc), &it->u) < 0)
                return -1;
            it->type = SAGA__MP_UINT;
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3: {
            unsigned w = 1u << (c - 0xd0);
            if (lenfield(p, len, &o, w, &n) < 0)
                return -1;
            /* Sign-extend from w bytes; a non-negative value is a UINT, as
             * msgpack-c reports it. */
            int64_t v;
            if (w == 8)
                memcpy(&v, &n, sizeof(v));
            else if (n & (1ull << (w * 8 - 1)))
                v = (int64_t)(n | ~((1ull << (w * 8)) - 1));
            else
                v = (int64_t)n;
            if (v < 0) {
                it->type = SAGA__MP_INT;
                it->i = v;
            } else {
                it->type = SAGA__MP_UINT;
                it->u = (uint64_t)v;
            }
            break;
        }
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            if (ext(p, len, &o, 1u << (c - 0xd4), it) < 0)
                return -1;
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            it->type = SAGA__MP_STR;
            if (lenfield(p, len, &o, 1u << (c - 0xd9), &n) < 0 ||
                body(p, len, &o, n, it) < 0)
                return -1;
            break;
        case 0xdc:
        case 0xdd:
            if (container(p, len, &o, c == 0xdc ? 2 : 4, SAGA__MP_ARRAY, it))
                return -1;
            break;
        case 0xde:
        case 0xdf:
            if (container(p, len, &o, c == 0xde ? 2 : 4, SAGA__MP_MAP, it))
                return -1;
            break;
        default: /* 0xc1 is never used */
            return -1;
        }
    }
    /* Each element of a container needs at least one byte. */
    if (it->type == SAGA__MP_ARRAY || it->type == SAGA__MP_MAP) {
        uint64_t need = it->type == SAGA__MP_MAP ? 2ull * it->len : it->len;
        if (need > len - o)
            return -1;
    }
    *off = o;
    return 0;
}

int saga__mp_skip(const uint8_t *p, size_t len, size_t *off, unsigned max_depth)
{
    /* left[d] = objects still to read at depth d+1; an explicit stack keeps
     * hostile nesting away from the C stack. */
    uint64_t left[SAGA__MP_MAX_DEPTH];
    unsigned depth = 0;
    size_t o = *off;
    saga__mp_item it;

    if (max_depth == 0 || max_depth > SAGA__MP_MAX_DEPTH)
        max_depth = SAGA__MP_MAX_DEPTH;
    left[0] = 1;
    depth = 1;
    while (depth > 0) {
        if (left[depth - 1] == 0) {
            depth--;
            continue;
        }
        left[depth - 1]--;
        if (saga__mp_next(p, len, &o, &it) < 0)
            return -1;
        if (it.type == SAGA__MP_ARRAY || it.type == SAGA__MP_MAP) {
            if (it.len == 0)
                continue;
            if (depth >= max_depth)
                return -1;
            left[depth++] = it.type == SAGA__MP_MAP ? 2ull * it.len
                                                    : (uint64_t)it.len;
        }
    }
    *off = o;
    return 0;
}

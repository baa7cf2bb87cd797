/*
 * tcp_wire.c — the TCP transport's frame codec and address parsing.
 *
 * Decoding trusts nothing: every length is checked against the bytes that
 * are actually there, so a hostile peer can at worst get its connection
 * closed.
 */
#include <stdlib.h>
#include <string.h>

#include "saga/saga.h"
#include "tcp_int.h"

void saga__tcp_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

void saga__tcp_put_u16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

uint32_t saga__tcp_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static unsigned get_u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

void saga__tcp_put_header(unsigned char *p, int kind, size_t body_len)
{
    uint32_t l = (uint32_t)(body_len + 1);
    p[0] = (unsigned char)(l >> 24);
    p[1] = (unsigned char)(l >> 16);
    p[2] = (unsigned char)(l >> 8);
    p[3] = (unsigned char)l;
    p[4] = (unsigned char)kind;
}

int saga__tcp_data_encode(uint64_t id, const char *topic, const char *key,
                          const void *buf, size_t len, unsigned char **out,
                          size_t *out_len)
{
    size_t tl = strlen(topic), kl = key != NULL ? strlen(key) : 0;
    size_t total = SAGA__TCP_DATA_OVERHEAD + tl + kl + len;
    unsigned char *f = saga_malloc(total);
    if (f == NULL)
        return SAGA_ENOMEM;
    unsigned char *p = f;
    saga__tcp_put_header(p, SAGA__TCP_DATA, total - SAGA__TCP_HDR);
    p += SAGA__TCP_HDR;
    saga__tcp_put_u64(p, id);
    p += 8;
    saga__tcp_put_u16(p, (unsigned)tl);
    p += 2;
    memcpy(p, topic, tl);
    p += tl;
    saga__tcp_put_u16(p, key != NULL ? (unsigned)kl : SAGA__TCP_NOKEY);
    p += 2;
    if (kl > 0)
        memcpy(p, key, kl);
    p += kl;
    if (len > 0)
        memcpy(p, buf, len);
    *out = f;
    *out_len = total;
    return SAGA_OK;
}

/* Names and keys must not hold a NUL: they are handed on as C strings. */
static int has_nul(const void *p, size_t n) { return memchr(p, 0, n) != NULL; }

int saga__tcp_frame_decode(int kind, const unsigned char *body, size_t len,
                           saga__tcp_frame *f, const char **why)
{
    memset(f, 0, sizeof *f);
    f->kind = kind;
    switch (kind) {
    case SAGA__TCP_HELLO:
        if (len < 2 || body[0] != SAGA__TCP_PROTO_VERSION) {
            *why = "HELLO: unsupported protocol version";
            return SAGA_ECORRUPT;
        }
        if (body[1] == 0 || (size_t)body[1] + 2 != len ||
            has_nul(body + 2, body[1])) {
            *why = "HELLO: bad service name";
            return SAGA_ECORRUPT;
        }
        f->name = (const char *)body + 2;
        f->name_len = body[1];
        return SAGA_OK;
    case SAGA__TCP_ACK:
        if (len != 8) {
            *why = "ACK: body is not 8 bytes";
            return SAGA_ECORRUPT;
        }
        f->id = get_u64(body);
        if (f->id & SAGA__TCP_LIMIT_TAG) {
            uint64_t lim = f->id & ~SAGA__TCP_LIMIT_TAG;
            if (lim < SAGA__TCP_MIN_FRAME || lim > SAGA__TCP_MAX_FRAME) {
                *why = "ACK: limit answer out of range";
                return SAGA_ECORRUPT;
            }
            f->limit = (uint32_t)lim;
        }
        return SAGA_OK;
    case SAGA__TCP_HEARTBEAT:
        if (len != 0) {
            *why = "HEARTBEAT: unexpected body";
            return SAGA_ECORRUPT;
        }
        return SAGA_OK;
    case SAGA__TCP_DATA: {
        size_t off = 0;
        if (len < 8 + 2) {
            *why = "DATA: short header";
            return SAGA_ECORRUPT;
        }
        f->id = get_u64(body);
        off = 8;
        f->topic_len = get_u16(body + off);
        off += 2;
        if (f->topic_len == 0 || f->topic_len > SAGA_NAME_MAX ||
            len - off < f->topic_len + 2 || has_nul(body + off, f->topic_len)) {
            *why = "DATA: bad topic";
            return SAGA_ECORRUPT;
        }
        f->topic = (const char *)body + off;
        off += f->topic_len;
        unsigned kl = get_u16(body + off);
        off += 2;
        if (kl != SAGA__TCP_NOKEY) {
            if (len - off < kl || has_nul(body + off, kl)) {
                *why = "DATA: bad key";
                return SAGA_ECORRUPT;
            }
            f->key = (const char *)body + off;
            f->key_len = kl;
            off += kl;
        }
        f->payload = body + off;
        f->payload_len = len - off;
        return SAGA_OK;
    }
    default:
        *why = "unknown frame kind";
        return SAGA_ECORRUPT;
    }
}

int saga__tcp_parse_addr(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    if (s == NULL)
        return SAGA_EINVAL;
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return SAGA_EINVAL;
    size_t hl = (size_t)(colon - s);
    int v6 = 0;
    if (s[0] == '[') {
        if (hl < 3 || s[hl - 1] != ']')
            return SAGA_EINVAL;
        s++;
        hl -= 2;
        v6 = 1;
    }
    if (hl >= sizeof host)
        return SAGA_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    const char *ps = colon + 1;
    char *end;
    if (*ps < '0' || *ps > '9')
        return SAGA_EINVAL;
    long port = strtol(ps, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return SAGA_EINVAL;
    memset(out, 0, sizeof *out);
    if (v6)
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0
                   ? SAGA_OK
                   : SAGA_EINVAL;
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0
               ? SAGA_OK
               : SAGA_EINVAL;
}

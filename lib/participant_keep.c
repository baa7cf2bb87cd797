/*
 * participant_keep.c — the participant's barrier rows as stored, and the
 * housekeeping pass that purges old inbox entries and barrier rows.
 *
 * A barrier row is 0x01, the time of its last write (8 bytes, big-endian
 * ms by the participant's clock), then the state byte and its data ('A' +
 * output, 'C', 'N', or 'P' + ... for a pending deferred command). Rows
 * written before 0.2 lack the first 9 bytes; they are read as they are and
 * stamped by the first housekeeping pass.
 */
#include <stdio.h>
#include <string.h>

#include "participant_int.h"

#define BAR_MARK 0x01
#define BAR_HDR 9
/* Barrier rows deleted (or stamped) per transaction of a pass. */
#define HK_CHUNK 4096

/* The stored row's value and time; 0 if it has no header. */
static const unsigned char *bar_inner(const void *val, size_t len,
                                      size_t *inner_len, int64_t *at)
{
    const unsigned char *v = val;
    if (len >= BAR_HDR && v[0] == BAR_MARK) {
        uint64_t t = 0;
        for (int i = 1; i < BAR_HDR; i++)
            t = t << 8 | v[i];
        *at = (int64_t)t;
        *inner_len = len - BAR_HDR;
        return v + BAR_HDR;
    }
    *at = 0;
    *inner_len = len;
    return v;
}

typedef struct bget {
    void *p;
    size_t n;
    int found, oom;
} bget;

static void bget_cb(const void *buf, size_t len, void *arg)
{
    bget *b = arg;
    int64_t at;
    size_t n;
    const unsigned char *in = bar_inner(buf, len, &n, &at);
    b->found = 1;
    b->p = saga_malloc(n ? n : 1);
    if (b->p == NULL) {
        b->oom = 1;
        return;
    }
    if (n)
        memcpy(b->p, in, n);
    b->n = n;
}

int saga__pbar_get(saga_participant *p, const char *key, void **val,
                   size_t *len)
{
    bget b = {0};
    *val = NULL;
    *len = 0;
    int rc = saga__pkv_get(p, key, bget_cb, &b);
    if (rc == SAGA_ENOTFOUND)
        return SAGA_OK;
    if (rc != SAGA_OK)
        return rc;
    if (b.oom)
        return SAGA_ENOMEM;
    *val = b.p;
    *len = b.n;
    return SAGA_OK;
}

/* @p p NULL: straight to the store's slot (housekeeping). */
static int put_at(saga_participant *p, saga_store *s, const char *key,
                  const void *val, size_t len, int64_t at)
{
    unsigned char *v = saga_malloc(BAR_HDR + len);
    if (v == NULL)
        return SAGA_ENOMEM;
    v[0] = BAR_MARK;
    uint64_t t = (uint64_t)at;
    for (int i = BAR_HDR - 1; i >= 1; i--, t >>= 8)
        v[i] = (unsigned char)t;
    if (len)
        memcpy(v + BAR_HDR, val, len);
    int rc = p ? saga__pkv_put(p, key, v, BAR_HDR + len)
               : s->kv_put(s, key, v, BAR_HDR + len);
    saga_free(v);
    return rc;
}

int saga__pbar_put(saga_participant *p, const char *key, const void *val,
                   size_t len)
{
    saga_store *s = p->store;
    if (len == 0) {
        if (s->version >= 2 && s->kv_del != NULL)
            return saga__pkv_del(p, key);
        return saga__pkv_put(p, key, "", 0);
    }
    return put_at(p, s, key, val, len, saga__pnow(p));
}

const void *saga__pbar_value(const void *val, size_t len, size_t *inner_len)
{
    int64_t at;
    return bar_inner(val, len, inner_len, &at);
}

/* ------------------------------------------------------------------------ */
/* Housekeeping                                                             */

typedef struct hk_acc {
    int64_t before, now;
    char **del; /* rows to delete */
    size_t ndel;
    char **stamp; /* rows without a time: stamp them */
    void **sval;
    size_t *slen;
    size_t nstamp;
    int oom;
} hk_acc;

static char *dupkey(const char *k)
{
    size_t n = strlen(k) + 1;
    char *c = saga_malloc(n);
    if (c)
        memcpy(c, k, n);
    return c;
}

static int hk_cb(const char *key, const void *val, size_t len, void *arg)
{
    hk_acc *a = arg;
    int64_t at;
    size_t n;
    const unsigned char *in = bar_inner(val, len, &n, &at);
    int has_time = in != (const unsigned char *)val;
    if (n > 0 && in[0] == 'P')
        return 0; /* pending: never purged */
    if (has_time) {
        if (at >= a->before || a->ndel >= HK_CHUNK)
            return 0;
        char *k = dupkey(key);
        if (k == NULL) {
            a->oom = 1;
            return 1;
        }
        a->del[a->ndel++] = k;
        return 0;
    }
    if (a->nstamp >= HK_CHUNK)
        return 0;
    char *k = dupkey(key);
    void *v = saga_malloc(n ? n : 1);
    if (k == NULL || v == NULL) {
        saga_free(k);
        saga_free(v);
        a->oom = 1;
        return 1;
    }
    if (n)
        memcpy(v, in, n);
    a->stamp[a->nstamp] = k;
    a->sval[a->nstamp] = v;
    a->slen[a->nstamp++] = n;
    return 0;
}

static void hk_free(hk_acc *a)
{
    for (size_t i = 0; i < a->ndel; i++)
        saga_free(a->del[i]);
    for (size_t i = 0; i < a->nstamp; i++) {
        saga_free(a->stamp[i]);
        saga_free(a->sval[i]);
    }
    saga_free(a->del);
    saga_free(a->stamp);
    saga_free(a->sval);
    saga_free(a->slen);
}

static int hk_fail(saga_participant *p, int rc, const char *what)
{
    saga_store *s = p->store;
    snprintf(p->errmsg, sizeof p->errmsg, "housekeeping: %s: %s", what,
             rc == SAGA_ENOMEM ? "out of memory" : s->errmsg(s));
    saga__plog(p, SAGA_LOG_ERROR, NULL, -1, "%s", p->errmsg);
    return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
}

int saga_participant_housekeep(saga_participant *p)
{
    if (p == NULL)
        return SAGA_EINVAL;
    if (p->closing)
        return SAGA_ECLOSED;
    saga_store *s = p->store;
    int64_t now = saga__pnow(p);
    int64_t before = now - (int64_t)p->opts.retention_ms;
    /* Inbox entries: the store's purge (a participant has no sagas). */
    int rc = s->begin(s);
    if (rc == SAGA_OK) {
        rc = s->purge(s, before, NULL);
        if (rc == SAGA_OK)
            rc = s->commit(s);
        else
            s->rollback(s);
    }
    if (rc != SAGA_OK)
        return hk_fail(p, rc, "inbox purge");
    if (s->version < 2 || s->kv_scan == NULL || s->kv_del == NULL)
        return SAGA_OK; /* the barrier cannot be listed: kept */
    /* Barrier rows, a bounded chunk per transaction. */
    for (;;) {
        hk_acc a;
        memset(&a, 0, sizeof a);
        a.before = before;
        a.now = now;
        a.del = saga_malloc(HK_CHUNK * sizeof *a.del);
        a.stamp = saga_malloc(HK_CHUNK * sizeof *a.stamp);
        a.sval = saga_malloc(HK_CHUNK * sizeof *a.sval);
        a.slen = saga_malloc(HK_CHUNK * sizeof *a.slen);
        if (!a.del || !a.stamp || !a.sval || !a.slen) {
            hk_free(&a);
            return hk_fail(p, SAGA_ENOMEM, "barrier purge");
        }
        rc = s->kv_scan(s, "b/", hk_cb, &a);
        if (rc == SAGA_OK && a.oom)
            rc = SAGA_ENOMEM;
        size_t ndel = a.ndel, nstamp = a.nstamp;
        if (rc == SAGA_OK && ndel + nstamp > 0) {
            rc = s->begin(s);
            for (size_t i = 0; i < ndel && rc == SAGA_OK; i++)
                rc = s->kv_del(s, a.del[i]);
            for (size_t i = 0; i < nstamp && rc == SAGA_OK; i++)
                rc = put_at(NULL, s, a.stamp[i], a.sval[i], a.slen[i], now);
            if (rc == SAGA_OK)
                rc = s->commit(s);
            else
                s->rollback(s);
        }
        hk_free(&a);
        if (rc != SAGA_OK)
            return hk_fail(p, rc, "barrier purge");
        p->stats.barriers_purged += ndel;
        if (ndel)
            saga__plog(p, SAGA_LOG_INFO, NULL, -1,
                       "purged %zu barrier rows older than %llu ms", ndel,
                       (unsigned long long)p->opts.retention_ms);
        if (ndel < HK_CHUNK && nstamp < HK_CHUNK)
            return SAGA_OK;
    }
}

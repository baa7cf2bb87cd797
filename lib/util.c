/*
 * util.c — the bodies of util.h: strings, the hash table, the growable
 * buffer and the message setters, written once for lib/ and the plug-ins.
 */
#include <stdio.h>
#include <string.h>

#include "util.h"

char *saga__strdup(const char *s)
{
    if (s == NULL)
        return NULL;
    return saga__strndup(s, strlen(s));
}

char *saga__strndup(const char *s, size_t n)
{
    char *p = saga_malloc(n + 1);
    if (p != NULL) {
        if (n > 0)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Hash table                                                               */

int saga__htable_reserve(saga__htable *t)
{
    /* Grow at a load factor of 1: chains stay short and growth is rare. */
    if (t->count + 1 <= t->nbuckets)
        return SAGA_OK;
    size_t nnb = t->nbuckets ? t->nbuckets * 2 : 64;
    saga__hnode **nb = saga_malloc(nnb * sizeof *nb);
    if (nb == NULL)
        return SAGA_ENOMEM;
    memset(nb, 0, nnb * sizeof *nb);
    for (size_t i = 0; i < t->nbuckets; i++) {
        saga__hnode *n = t->buckets[i];
        while (n != NULL) {
            saga__hnode *next = n->next;
            size_t j = (size_t)n->hash & (nnb - 1);
            n->next = nb[j];
            nb[j] = n;
            n = next;
        }
    }
    saga_free(t->buckets);
    t->buckets = nb;
    t->nbuckets = nnb;
    return SAGA_OK;
}

void saga__htable_insert(saga__htable *t, saga__hnode *n)
{
    n->hash = saga__hash_str(n->key);
    size_t j = (size_t)n->hash & (t->nbuckets - 1);
    n->next = t->buckets[j];
    t->buckets[j] = n;
    t->count++;
}

saga__hnode *saga__htable_find(const saga__htable *t, const char *key)
{
    if (t->nbuckets == 0)
        return NULL;
    uint64_t h = saga__hash_str(key);
    for (saga__hnode *n = t->buckets[(size_t)h & (t->nbuckets - 1)]; n;
         n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

void saga__htable_remove(saga__htable *t, saga__hnode *n)
{
    if (t->nbuckets == 0)
        return;
    saga__hnode **pp = &t->buckets[(size_t)n->hash & (t->nbuckets - 1)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
    }
}

void saga__htable_free(saga__htable *t)
{
    saga_free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

/* ------------------------------------------------------------------------ */
/* Growable buffer and arrays                                               */

int saga__buf_reserve(saga__buf *b, size_t extra, size_t first)
{
    if (b->oom)
        return SAGA_ENOMEM;
    if (b->cap - b->len >= extra)
        return SAGA_OK;
    size_t cap = b->cap ? b->cap : (first ? first : 64);
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return SAGA_ENOMEM;
        }
        cap *= 2;
    }
    unsigned char *p = saga_realloc(b->data, cap);
    if (p == NULL) {
        b->oom = 1;
        return SAGA_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return SAGA_OK;
}

int saga__buf_append(saga__buf *b, const void *p, size_t len)
{
    if (b->oom)
        return SAGA_ENOMEM;
    if (len == 0) /* an empty piece may come with a NULL pointer */
        return SAGA_OK;
    if (saga__buf_reserve(b, len, 0) != SAGA_OK)
        return SAGA_ENOMEM;
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return SAGA_OK;
}

int saga__buf_write(void *buf, const char *p, size_t len)
{
    return saga__buf_append(buf, p, len) == SAGA_OK ? 0 : -1;
}

void saga__buf_free(saga__buf *b)
{
    saga_free(b->data);
    memset(b, 0, sizeof *b);
}

int saga__array_grow(void *items, size_t *cap, size_t need, size_t elem,
                     size_t first)
{
    if (need <= *cap)
        return SAGA_OK;
    size_t nc = *cap ? *cap : (first ? first : 8);
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem)
            return SAGA_ENOMEM;
        nc *= 2;
    }
    void **pp = items;
    void *np = saga_realloc(*pp, nc * elem);
    if (np == NULL)
        return SAGA_ENOMEM;
    *pp = np;
    *cap = nc;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */

int saga__verrf(char *dst, size_t cap, int rc, const char *fmt, va_list ap)
{
    if (dst != NULL && cap > 0)
        vsnprintf(dst, cap, fmt, ap);
    return rc;
}

int saga__errf(char *dst, size_t cap, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__verrf(dst, cap, rc, fmt, ap);
    va_end(ap);
    return rc;
}

void saga__vlogf(saga_log_fn log, void *arg, saga_log_level level,
                 const char *fmt, va_list ap)
{
    if (log == NULL)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    log(level, NULL, -1, msg, arg);
}

void saga__logf(saga_log_fn log, void *arg, saga_log_level level,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlogf(log, arg, level, fmt, ap);
    va_end(ap);
}

static void log_stderr(saga_log_level level, const char *who,
                       const char *saga_id, int step, const char *line)
{
    static const char *const names[] = {"?", "debug", "info", "warn", "error"};
    unsigned i = (unsigned)level <= SAGA_LOG_ERROR ? (unsigned)level : 0;
    char where[160] = "";
    if (saga_id != NULL)
        snprintf(where, sizeof where, " [%s step %d]", saga_id, step);
    fprintf(stderr, "libsaga %s%s%s%s %s\n", names[i], who ? " " : "",
            who ? who : "", where, line);
}

void saga__vlog(saga_log_level min, saga_log_level level, const char *saga_id,
                int step, saga__log_line_fn event, void *owner, saga_log_fn log,
                void *log_arg, const char *who, const char *fmt, va_list ap)
{
    if (level < min)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    if (event != NULL)
        event(owner, level, saga_id, step, line);
    else if (log != NULL)
        log(level, saga_id, step, line, log_arg);
    else
        log_stderr(level, who, saga_id, step, line);
}

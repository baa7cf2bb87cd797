/*
 * util.h — the small pieces every part of libsaga needs once: a string
 * copy, an intrusive list, a string-keyed hash table, a growable buffer, a
 * version check and the "format a message into a fixed buffer" setters.
 *
 * Internal (saga__*), never installed. lib/ includes it as "util.h"; the
 * plug-ins (stores/, transports/) get this one header on their include path
 * and nothing else of lib/ (CMakeLists.txt), so that they still see the
 * engine only through include/saga/. Everything allocates with
 * saga_malloc()/saga_free(), so the allocator hook covers it.
 */
#ifndef SAGA_UTIL_H
#define SAGA_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "saga/saga.h"

/* ------------------------------------------------------------------------ */
/* Strings                                                                  */

/* strdup with saga_malloc; NULL in, NULL out (and NULL on ENOMEM). */
char *saga__strdup(const char *s);
/* The first @p n bytes of @p s (which need no NUL) as a C string. */
char *saga__strndup(const char *s, size_t n);

/* ------------------------------------------------------------------------ */
/* Intrusive doubly-linked list with a sentinel head (libuv's queue.h).     */

typedef struct saga__list {
    struct saga__list *prev, *next;
} saga__list;

#define SAGA__CONTAINER(ptr, type, field)                                      \
    ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

/* for (saga__list *n = ...): @p n must not be removed inside the loop. */
#define SAGA__LIST_FOREACH(n, head)                                            \
    for (saga__list *n = (head)->next; n != (head); n = n->next)

static inline void saga__list_init(saga__list *h) { h->prev = h->next = h; }
static inline int saga__list_empty(const saga__list *h) { return h->next == h; }
static inline void saga__list_push_back(saga__list *h, saga__list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
static inline void saga__list_push_front(saga__list *h, saga__list *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}
/* Unlinks @p n and leaves it an empty list, so removing twice is harmless. */
static inline void saga__list_remove(saga__list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
static inline saga__list *saga__list_pop_front(saga__list *h)
{
    saga__list *n = h->next;
    if (n == h)
        return NULL;
    saga__list_remove(n);
    return n;
}
/* Moves every node of @p src, in order, to the front of @p dst. */
static inline void saga__list_splice_front(saga__list *dst, saga__list *src)
{
    if (saga__list_empty(src))
        return;
    saga__list *first = src->next, *last = src->prev;
    last->next = dst->next;
    dst->next->prev = last;
    dst->next = first;
    first->prev = dst;
    saga__list_init(src);
}

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */

/* FNV-1a, 64 bits, over a NUL-terminated string. Keys here are ids and
 * names the process or its own store produced: a simple, fast hash is
 * enough (no adversarial input reaches a table). */
static inline uint64_t saga__hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}
/* FNV-1a, 64 bits, over @p len bytes, continuing from @p h (start with
 * SAGA__HASH_INIT). */
#define SAGA__HASH_INIT 1469598103934665603ull
static inline uint64_t saga__hash_bytes(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* A chained hash table keyed by NUL-terminated strings. Nodes are
 * intrusive (embed saga__hnode and set key before inserting), so the table
 * allocates only its bucket array. Zero-initialised is an empty table. */
typedef struct saga__hnode {
    struct saga__hnode *next;
    const char *key; /* owned by the node's container */
    uint64_t hash;   /* set by saga__htable_insert */
} saga__hnode;

typedef struct saga__htable {
    saga__hnode **buckets;
    size_t nbuckets; /* 0 or a power of two */
    size_t count;
} saga__htable;

/* Makes room for one more node (load factor 1, first size 64): call before
 * saga__htable_insert, which then cannot fail. SAGA_OK or SAGA_ENOMEM. */
int saga__htable_reserve(saga__htable *t);
/* Links @p n (its key set); the caller reserved first. Duplicates are the
 * caller's business (find first). */
void saga__htable_insert(saga__htable *t, saga__hnode *n);
/* The node whose key equals @p key, or NULL. */
saga__hnode *saga__htable_find(const saga__htable *t, const char *key);
/* Unlinks @p n if it is in the table. */
void saga__htable_remove(saga__htable *t, saga__hnode *n);
/* Frees the bucket array (not the nodes) and empties the table. */
void saga__htable_free(saga__htable *t);
/* Visit every node: for (i = 0; i < t->nbuckets; i++) for (n =
 * t->buckets[i]; n; n = next) with next read before n is freed. */

/* ------------------------------------------------------------------------ */
/* Growable byte buffer (also a msgpack-c packer target: saga__buf_write)   */

typedef struct saga__buf {
    unsigned char *data;
    size_t len, cap;
    int oom; /* an append failed: data holds what fitted, len is stale */
} saga__buf;

/* Room for @p extra more bytes (capacity doubles from @p first, 64 if 0).
 * SAGA_OK, or SAGA_ENOMEM with oom set and the buffer unchanged. */
int saga__buf_reserve(saga__buf *b, size_t extra, size_t first);
/* Appends @p len bytes; after a failure every later append fails too, so
 * callers may check oom once at the end. SAGA_OK or SAGA_ENOMEM. */
int saga__buf_append(saga__buf *b, const void *p, size_t len);
/* The msgpack_packer_write signature: 0, or -1 (oom set). */
int saga__buf_write(void *buf, const char *p, size_t len);
/* Frees the bytes and zeroes the buffer. */
void saga__buf_free(saga__buf *b);

/* Grows an array of @p elem-sized items so that it holds @p need: *items
 * and *cap change only on success (capacity doubles from @p first).
 * SAGA_OK or SAGA_ENOMEM. */
int saga__array_grow(void *items, size_t *cap, size_t need, size_t elem,
                     size_t first);

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */

/* The one version rule for options structs and vtables (libgit2's
 * GIT_ERROR_CHECK_VERSION): NULL passes (defaults); otherwise the leading
 * `unsigned int version` must be 1..@p max. SAGA_OK or SAGA_EVERSION. */
static inline int saga__version_ok(unsigned int version, unsigned int max)
{
    return version > 0 && version <= max ? SAGA_OK : SAGA_EVERSION;
}
static inline int saga__check_version(const void *structure, unsigned int max)
{
    if (structure == NULL)
        return SAGA_OK;
    return saga__version_ok(*(const unsigned int *)structure, max);
}
#define SAGA__CHECK_VERSION(structure, max)                                    \
    do {                                                                       \
        int saga__cv_rc = saga__check_version((structure), (max));             \
        if (saga__cv_rc != SAGA_OK)                                            \
            return saga__cv_rc;                                                \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */

/* Formats into @p dst (a fixed buffer of @p cap bytes, truncating) and
 * returns @p rc: the one body of every object's set_err(obj, rc, fmt...). */
int saga__errf(char *dst, size_t cap, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int saga__verrf(char *dst, size_t cap, int rc, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* Formats (up to 1023 bytes) and calls @p log, if it is set, as a message
 * about no saga (saga_id NULL, step -1): the plug-ins' log lines. */
void saga__logf(saga_log_fn log, void *arg, saga_log_level level,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void saga__vlogf(saga_log_fn log, void *arg, saga_log_level level,
                 const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* A formatted log line handed to its owner (the engine's or the
 * participant's structured sink, the state machine's stager). */
typedef void (*saga__log_line_fn)(void *owner, saga_log_level level,
                                  const char *saga_id, int step,
                                  const char *line);

/* The one log path of the engine and the participant: nothing below
 * @p min; otherwise formats the line (up to 511 bytes) and hands it to
 * @p event(@p owner, ...) when that is set (the structured sink), else to
 * @p log(..., @p log_arg) when that is set, else writes
 * "libsaga LEVEL [WHO] [ID step N] line" to stderr (@p who and @p saga_id
 * may be NULL). */
void saga__vlog(saga_log_level min, saga_log_level level, const char *saga_id,
                int step, saga__log_line_fn event, void *owner, saga_log_fn log,
                void *log_arg, const char *who, const char *fmt, va_list ap)
    __attribute__((format(printf, 10, 0)));

/* write_batch by a store's own slots (store version 13: the in-memory and
 * SQLite stores' write_batch; lib/plugins.c): begin, then saga_put, idem_put, outbox_put,
 * outbox_done, journal_append of each entry, then the key-value writes
 * (SAGA_KV_EXPECT checked with kv_get: SAGA_EBUSY), then commit; rolled
 * back on any failure. Called outside a transaction. */
struct saga_store;
struct saga_batch_writes;
int saga__store_write_by_slots(struct saga_store *s,
                               const struct saga_batch_writes *w);

#endif /* SAGA_UTIL_H */

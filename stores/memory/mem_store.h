/*
 * mem_store.h — state of the in-memory store, shared by its two files:
 * store_memory.c (table walks, transactions, node life-cycle, sagas) and
 * mem_ops.c (journal, idempotency keys, purge, outbox, inbox, kv).
 */
#ifndef SAGA_MEM_STORE_H
#define SAGA_MEM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "saga/saga.h"
#include "util.h"

/*
 * The string-keyed hash table. Every value the store keeps is an immutable
 * node that embeds `mnode` first. A write never edits a node in place: it
 * builds a new node and replaces the old one. That makes transactions cheap
 * to get right (the undo log just remembers which node replaced which) and
 * lets a callback write to the store while a scan holds pointers to old
 * nodes, because nodes released during a callback are parked until it
 * returns.
 */
enum mnode_kind {
    MN_SAGA = 1,
    MN_JLIST,  /* one saga's journal: a sorted array of MN_JENTRY */
    MN_JENTRY, /* not in a table, owned by its MN_JLIST */
    MN_IDEM,
    MN_OUTBOX,
    MN_INBOX,
    MN_KV
};

typedef struct mnode {
    /* key points into the node's own allocation; h.next is the bucket
     * chain, or the graveyard list once the node left its table */
    saga__hnode h;
    uint32_t kind; /* enum mnode_kind */
} mnode;

/* util.h's table of saga__hnode; every node in it is an mnode (h first). */
typedef saga__htable mtable;

/** The node stored under @p key, or NULL. */
static inline mnode *saga__mt_find(const mtable *t, const char *key)
{
    return (mnode *)(void *)saga__htable_find(t, key);
}
/** Make room for one more node; call before a write that must not fail
 * half-way. @return SAGA_OK or SAGA_ENOMEM. */
static inline int saga__mt_reserve(mtable *t)
{
    return saga__htable_reserve(t);
}
/** Insert @p n (its key must be absent); never fails after a reserve. */
static inline void saga__mt_insert(mtable *t, mnode *n)
{
    saga__htable_insert(t, &n->h);
}
/** Unlink exactly @p n from the table. */
static inline void saga__mt_remove(mtable *t, mnode *n)
{
    saga__htable_remove(t, &n->h);
}
/** Call @p fn on every node; @p fn must not change the table. */
void saga__mt_each(const mtable *t, void (*fn)(mnode *n, void *arg), void *arg);
/** Call @p fn on every node (it may free them), then free the buckets. */
void saga__mt_destroy(mtable *t, void (*fn)(mnode *n, void *arg), void *arg);

typedef struct msaga {
    mnode n;         /* key = rec.id */
    saga_record rec; /* strings and data point into this allocation */
    uint64_t seq;    /* insertion order, the tie-break of saga_scan */
} msaga;

typedef struct mjentry {
    mnode n; /* not in a table */
    saga_journal_entry e;
} mjentry;

/* One saga's journal. The entry array is the only thing the store edits in
 * place; scans copy it first, so growing it under a callback is safe. */
typedef struct mjlist {
    mnode n; /* key = saga id */
    mjentry **v;
    size_t len, cap;
} mjlist;

typedef struct midem {
    mnode n; /* key = idempotency key */
    char saga_id[SAGA_ID_SIZE];
    int64_t created_ms;
} midem;

typedef struct moutbox {
    mnode n; /* key = message id */
    saga_message m;
    uint64_t seq; /* queue order */
    struct moutbox *prev, *onext;
} moutbox;

typedef struct minbox {
    mnode n; /* key = message id */
    int64_t created_ms;
    const void *reply;
    size_t len;
} minbox;

typedef struct mkv {
    mnode n;
    const void *val;
    size_t len;
} mkv;

enum { U_NODE = 1, U_JAPPEND = 2 };

/* One undo step. U_NODE: @new_ replaced @old in @t (either may be NULL).
 * U_JAPPEND: entry @old was added to list @new_. */
typedef struct mundo {
    int kind;
    mtable *t;
    mnode *old;
    mnode *new_;
} mundo;

typedef struct mem_store {
    saga_store base;
    mtable sagas, journal, idem, outbox, inbox, kv;
    moutbox *ob_head, *ob_tail;
    uint64_t saga_seq, ob_seq;
    int in_txn;
    int in_sp;     /* a savepoint is open */
    size_t sp_len; /* the undo log's length at the savepoint */
    mundo *log;
    size_t log_len, log_cap;
    int visiting;     /* > 0 while a callback runs */
    mnode *graveyard; /* nodes released while visiting */
    char err[256];
} mem_store;

/* Data pointers of zero length point here, never NULL. */
extern const char saga__mem_empty[1];

int saga__mem_fail(mem_store *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Make room for @p n more undo steps (no-op outside a transaction). */
int saga__mem_log_reserve(mem_store *s, size_t n);
/** Replace @p old by @p nw in @p t (either may be NULL), logging the
 * change in a transaction or releasing @p old outside one. On error
 * nothing changed and the caller still owns @p nw. */
int saga__mem_put_node(mem_store *s, mtable *t, mnode *old, mnode *nw);
/** Log that @p e was added to @p l (after saga__mem_log_reserve). */
void saga__mem_log_jappend(mem_store *s, mjlist *l, mjentry *e);
/** Free a node now, or park it if a callback is running. */
void saga__mem_release(mem_store *s, mnode *n);
void saga__mem_visit_begin(mem_store *s);
void saga__mem_visit_end(mem_store *s);
int saga__mem_begin(saga_store *self);
int saga__mem_commit(saga_store *self);
int saga__mem_rollback(saga_store *self);

/* mem_ops.c */
/* store_memory.c's slots, for the ops table in mem_ops.c */
int saga__mem_saga_put(saga_store *self, const saga_record *r,
                       unsigned int flags);
int saga__mem_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                       void *arg);
int saga__mem_saga_scan(saga_store *self, unsigned int mask, saga_record_cb cb,
                        void *arg);
void *saga__mem_native_handle(saga_store *self);
const char *saga__mem_errmsg(saga_store *self);
void saga__mem_close(saga_store *self);
int saga__mem_savepoint(saga_store *self);
int saga__mem_savepoint_rollback(saga_store *self);
int saga__mem_savepoint_release(saga_store *self);
/* Copy @p src (NULL: none) to *@p cur, the free part of a block sized for
 * it, and move *@p cur past it: the copy, or NULL. */
char *saga__mem_put_str(char **cur, const char *src);
/* The vtable every memory store starts from. */
extern const saga_store saga__mem_store_ops;

#endif /* SAGA_MEM_STORE_H */

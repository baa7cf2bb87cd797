/*
 * mem_table.h — the string-keyed hash table and node kinds of the in-memory
 * store (internal to stores/memory).
 *
 * Every value the store keeps is an immutable node that embeds `mnode`
 * first. A write never edits a node in place: it builds a new node and
 * replaces the old one. That makes transactions cheap to get right (the
 * undo log just remembers which node replaced which) and lets a callback
 * write to the store while a scan holds pointers to old nodes, because
 * nodes released during a callback are parked until it returns.
 */
#ifndef SAGA_MEM_TABLE_H
#define SAGA_MEM_TABLE_H

#include <stddef.h>
#include <stdint.h>

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
    struct mnode *next; /* bucket chain, or the graveyard list */
    const char *key;    /* points into the node's own allocation */
    uint32_t hash;
    uint32_t kind;      /* enum mnode_kind */
} mnode;

typedef struct mtable {
    mnode **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first insert */
    size_t count;
} mtable;

uint32_t saga__mt_hash(const char *key);
/** The node stored under @p key, or NULL. */
mnode *saga__mt_find(const mtable *t, const char *key);
/** Make room for one more node; call before a write that must not fail
 * half-way. @return 0 or -1 (out of memory). */
int saga__mt_reserve(mtable *t);
/** Insert @p n (its key must be absent); never fails after a reserve. */
void saga__mt_insert(mtable *t, mnode *n);
/** Unlink exactly @p n from the table. */
void saga__mt_remove(mtable *t, mnode *n);
/** Call @p fn on every node; @p fn must not change the table. */
void saga__mt_each(const mtable *t, void (*fn)(mnode *n, void *arg),
                   void *arg);
/** Call @p fn on every node (it may free them), then free the buckets. */
void saga__mt_destroy(mtable *t, void (*fn)(mnode *n, void *arg), void *arg);

#endif /* SAGA_MEM_TABLE_H */

/*
 * mem_table.c — a chained hash table keyed by NUL-terminated strings, for
 * the in-memory store. Nodes are intrusive (see mem_table.h), so the table
 * itself allocates only its bucket array.
 */
#include <string.h>

#include "saga/saga.h"
#include "mem_table.h"

/* FNV-1a: short keys (saga ids, message ids) and no adversarial input in a
 * test store, so a simple, fast hash is enough. */
uint32_t saga__mt_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

mnode *saga__mt_find(const mtable *t, const char *key)
{
    if (t->nbuckets == 0)
        return NULL;
    uint32_t h = saga__mt_hash(key);
    for (mnode *n = t->buckets[h & (t->nbuckets - 1)]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static void rehash(mtable *t, mnode **nb, size_t nnb)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        mnode *n = t->buckets[i];
        while (n) {
            mnode *next = n->next;
            size_t j = n->hash & (nnb - 1);
            n->next = nb[j];
            nb[j] = n;
            n = next;
        }
    }
    saga_free(t->buckets);
    t->buckets = nb;
    t->nbuckets = nnb;
}

int saga__mt_reserve(mtable *t)
{
    /* Grow at a load factor of 1: chains stay short and growth is rare. */
    if (t->count + 1 <= t->nbuckets)
        return 0;
    size_t nnb = t->nbuckets ? t->nbuckets * 2 : 64;
    mnode **nb = saga_malloc(nnb * sizeof *nb);
    if (nb == NULL)
        return -1;
    memset(nb, 0, nnb * sizeof *nb);
    rehash(t, nb, nnb);
    return 0;
}

void saga__mt_insert(mtable *t, mnode *n)
{
    /* Callers reserve first; the table is never left without a bucket. */
    n->hash = saga__mt_hash(n->key);
    size_t j = n->hash & (t->nbuckets - 1);
    n->next = t->buckets[j];
    t->buckets[j] = n;
    t->count++;
}

void saga__mt_remove(mtable *t, mnode *n)
{
    if (t->nbuckets == 0)
        return;
    mnode **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return;
        }
    }
}

void saga__mt_each(const mtable *t, void (*fn)(mnode *n, void *arg),
                   void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        for (mnode *n = t->buckets[i]; n; n = n->next)
            fn(n, arg);
}

void saga__mt_destroy(mtable *t, void (*fn)(mnode *n, void *arg), void *arg)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        mnode *n = t->buckets[i];
        while (n) {
            mnode *next = n->next; /* fn may free n */
            fn(n, arg);
            n = next;
        }
    }
    saga_free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

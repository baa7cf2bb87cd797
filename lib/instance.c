/*
 * instance.c — saga instances in memory and their index (see instance.h):
 * chained hash tables by id and by idempotency key, and the timer heap.
 */
#include <stdio.h>
#include <string.h>

#include "instance.h"

/* ------------------------------------------------------------------------ */
/* Building an instance: one way, for a new saga and for a stored one       */

static saga__inst *inst_alloc(const saga_def *def, const char *idem_key,
                              const char *error, const void *data, size_t len)
{
    saga__inst *in = saga_malloc(sizeof *in);
    if (in == NULL)
        return NULL;
    memset(in, 0, sizeof *in);
    in->heap_idx = SIZE_MAX;
    in->def = def;
    in->idem_key = saga__strdup(idem_key);
    in->error = saga__strdup(error);
    in->data = saga_malloc(len ? len : 1);
    if (in->data == NULL || (idem_key && !in->idem_key) ||
        (error && !in->error)) {
        saga__inst_destroy(in);
        return NULL;
    }
    if (len > 0) {
        memcpy(in->data, data, len);
        in->data_len = len;
    } else {
        ((unsigned char *)in->data)[0] = 0x80; /* the empty msgpack map */
        in->data_len = 1;
    }
    return in;
}

saga__inst *saga__inst_new(const saga_def *def, const char *idem_key,
                           const void *data, size_t len, int64_t now_ms)
{
    saga__inst *in = inst_alloc(def, idem_key, NULL, data, len);
    if (in == NULL)
        return NULL;
    in->state = SAGA_STATE_RUNNING;
    in->step = 0;
    in->attempt = 1;
    in->created_ms = in->updated_ms = now_ms;
    if (def->deadline_ms)
        in->deadline_ms = now_ms + (int64_t)def->deadline_ms;
    return in;
}

saga__inst *saga__inst_from_record(const saga_def *def, const saga_record *r)
{
    saga__inst *in = inst_alloc(def, r->idem_key, r->error, r->data,
                                r->data_len);
    if (in == NULL)
        return NULL;
    snprintf(in->id, sizeof in->id, "%s", r->id);
    in->state = r->state;
    in->step = r->step;
    in->attempt = r->attempt ? r->attempt : 1;
    in->flags = r->flags;
    /* In flight before a restart: it may have run. */
    in->invoked = (r->flags & SAGA_REC_INFLIGHT) != 0;
    in->created_ms = r->created_ms;
    in->updated_ms = r->updated_ms;
    in->due_ms = r->due_ms;
    in->deadline_ms = r->deadline_ms;
    return in;
}

void saga__record_from_inst(const saga__inst *in, saga_record *r)
{
    memset(r, 0, sizeof *r);
    r->id = in->id;
    r->def_name = in->def->name;
    r->def_version = in->def->version;
    r->state = in->state;
    r->step = in->step;
    r->attempt = in->attempt;
    r->flags = in->flags;
    r->created_ms = in->created_ms;
    r->updated_ms = in->updated_ms;
    r->due_ms = in->due_ms;
    r->deadline_ms = in->deadline_ms;
    r->idem_key = in->idem_key;
    r->error = in->error;
    r->data = in->data;
    r->data_len = in->data_len;
}

void saga__inst_destroy(saga__inst *in)
{
    if (in == NULL)
        return;
    for (saga__donecb *d = in->done_cbs, *nx; d; d = nx) {
        nx = d->next;
        saga_free(d);
    }
    saga_free(in->idem_key);
    saga_free(in->error);
    saga_free(in->data);
    saga_free(in);
}

/* ------------------------------------------------------------------------ */
/* Hash tables by id and by idempotency key                                 */

static int index_grow(saga__index *x)
{
    size_t nb = x->nbuckets ? x->nbuckets * 2 : 1024;
    saga__inst **ids = saga_malloc(nb * sizeof *ids);
    saga__inst **idem = saga_malloc(nb * sizeof *idem);
    if (ids == NULL || idem == NULL) {
        saga_free(ids);
        saga_free(idem);
        return SAGA_ENOMEM;
    }
    memset(ids, 0, nb * sizeof *ids);
    memset(idem, 0, nb * sizeof *idem);
    for (size_t i = 0; i < x->nbuckets; i++) {
        for (saga__inst *in = x->by_id[i], *nx; in; in = nx) {
            nx = in->id_next;
            size_t b = saga__hash_str(in->id) & (nb - 1);
            in->id_next = ids[b];
            ids[b] = in;
        }
        for (saga__inst *in = x->by_idem[i], *nx; in; in = nx) {
            nx = in->idem_next;
            size_t b = saga__hash_str(in->idem_key) & (nb - 1);
            in->idem_next = idem[b];
            idem[b] = in;
        }
    }
    saga_free(x->by_id);
    saga_free(x->by_idem);
    x->by_id = ids;
    x->by_idem = idem;
    x->nbuckets = nb;
    return SAGA_OK;
}

saga__inst *saga__index_find(const saga__index *x, const char *id)
{
    if (x->nbuckets == 0)
        return NULL;
    for (saga__inst *in = x->by_id[saga__hash_str(id) & (x->nbuckets - 1)]; in;
         in = in->id_next)
        if (strcmp(in->id, id) == 0)
            return in;
    return NULL;
}

saga__inst *saga__index_find_key(const saga__index *x, const char *key)
{
    if (x->nbuckets == 0)
        return NULL;
    for (saga__inst *in = x->by_idem[saga__hash_str(key) & (x->nbuckets - 1)];
         in; in = in->idem_next)
        if (strcmp(in->idem_key, key) == 0)
            return in;
    return NULL;
}

int saga__index_add(saga__index *x, saga__inst *in)
{
    if (x->ninst + 1 > x->nbuckets && index_grow(x) != SAGA_OK)
        return SAGA_ENOMEM;
    /* Every saga in memory has its timer slot from the start, so that
     * arming a timer never allocates (and never fails). */
    if (x->ninst + 1 > x->cheap) {
        size_t nc = x->cheap ? x->cheap * 2 : 256;
        saga__inst **nh = saga_realloc(x->heap, nc * sizeof *nh);
        if (nh == NULL)
            return SAGA_ENOMEM;
        x->heap = nh;
        x->cheap = nc;
    }
    size_t b = saga__hash_str(in->id) & (x->nbuckets - 1);
    in->id_next = x->by_id[b];
    x->by_id[b] = in;
    if (in->idem_key != NULL) {
        b = saga__hash_str(in->idem_key) & (x->nbuckets - 1);
        in->idem_next = x->by_idem[b];
        x->by_idem[b] = in;
    }
    in->heap_idx = SIZE_MAX;
    x->ninst++;
    return SAGA_OK;
}

static void unlink_chain(saga__inst **head, saga__inst *in, int by_idem)
{
    for (saga__inst **pp = head; *pp;
         pp = by_idem ? &(*pp)->idem_next : &(*pp)->id_next) {
        if (*pp == in) {
            *pp = by_idem ? in->idem_next : in->id_next;
            return;
        }
    }
}

void saga__index_remove(saga__index *x, saga__inst *in)
{
    if (x->nbuckets == 0)
        return;
    unlink_chain(&x->by_id[saga__hash_str(in->id) & (x->nbuckets - 1)], in, 0);
    if (in->idem_key)
        unlink_chain(
            &x->by_idem[saga__hash_str(in->idem_key) & (x->nbuckets - 1)], in,
            1);
    saga__index_disarm(x, in);
    x->ninst--;
}

void saga__index_free(saga__index *x)
{
    for (size_t i = 0; i < x->nbuckets; i++) {
        saga__inst *in = x->by_id[i];
        while (in != NULL) {
            saga__inst *nx = in->id_next;
            saga__inst_destroy(in);
            in = nx;
        }
    }
    saga_free(x->by_id);
    saga_free(x->by_idem);
    saga_free(x->heap);
    memset(x, 0, sizeof *x);
}

/* ------------------------------------------------------------------------ */
/* Timer heap                                                               */

static void heap_swap(saga__index *x, size_t a, size_t b)
{
    saga__inst *t = x->heap[a];
    x->heap[a] = x->heap[b];
    x->heap[b] = t;
    x->heap[a]->heap_idx = a;
    x->heap[b]->heap_idx = b;
}

static void heap_up(saga__index *x, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (x->heap[p]->heap_key <= x->heap[i]->heap_key)
            break;
        heap_swap(x, p, i);
        i = p;
    }
}

static void heap_down(saga__index *x, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < x->nheap && x->heap[l]->heap_key < x->heap[m]->heap_key)
            m = l;
        if (r < x->nheap && x->heap[r]->heap_key < x->heap[m]->heap_key)
            m = r;
        if (m == i)
            return;
        heap_swap(x, i, m);
        i = m;
    }
}

int saga__index_disarm(saga__index *x, saga__inst *in)
{
    size_t i = in->heap_idx;
    if (i == SIZE_MAX)
        return 0;
    in->heap_idx = SIZE_MAX;
    x->nheap--;
    if (i != x->nheap) {
        x->heap[i] = x->heap[x->nheap];
        x->heap[i]->heap_idx = i;
        heap_up(x, i);
        heap_down(x, x->heap[i]->heap_idx);
    }
    return i == 0;
}

int saga__index_arm(saga__index *x, saga__inst *in, int64_t key)
{
    int changed = saga__index_disarm(x, in);
    if (x->nheap == x->cheap)
        /* Cannot happen: saga__index_add() reserves a slot per saga. */
        return -1;
    in->heap_key = key;
    in->heap_idx = x->nheap;
    x->heap[x->nheap++] = in;
    heap_up(x, in->heap_idx);
    return changed || in->heap_idx == 0;
}

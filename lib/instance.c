/*
 * instance.c — saga instances in memory and their index (see instance.h):
 * hash tables by id and by idempotency key (util.h's saga__htable), and
 * the timer heap.
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
/* The index: by id, by idempotency key                                     */

#define INST_OF(node, field) SAGA__CONTAINER(node, saga__inst, field)

saga__inst *saga__index_find(const saga__index *x, const char *id)
{
    saga__hnode *n = saga__htable_find(&x->by_id, id);
    return n ? INST_OF(n, by_id) : NULL;
}

saga__inst *saga__index_find_key(const saga__index *x, const char *key)
{
    saga__hnode *n = saga__htable_find(&x->by_idem, key);
    return n ? INST_OF(n, by_idem) : NULL;
}

int saga__index_add(saga__index *x, saga__inst *in)
{
    if (saga__htable_reserve(&x->by_id) != SAGA_OK ||
        (in->idem_key != NULL && saga__htable_reserve(&x->by_idem) != SAGA_OK))
        return SAGA_ENOMEM;
    /* Every saga in memory has its timer slot from the start, so that
     * arming a timer never allocates (and never fails). */
    if (saga__array_grow(&x->heap, &x->cheap, x->ninst + 1, sizeof *x->heap,
                         256) != SAGA_OK)
        return SAGA_ENOMEM;
    in->by_id.key = in->id;
    saga__htable_insert(&x->by_id, &in->by_id);
    if (in->idem_key != NULL) {
        in->by_idem.key = in->idem_key;
        saga__htable_insert(&x->by_idem, &in->by_idem);
    }
    in->heap_idx = SIZE_MAX;
    x->ninst++;
    return SAGA_OK;
}

void saga__index_remove(saga__index *x, saga__inst *in)
{
    saga__htable_remove(&x->by_id, &in->by_id);
    if (in->idem_key != NULL)
        saga__htable_remove(&x->by_idem, &in->by_idem);
    saga__index_disarm(x, in);
    x->ninst--;
}

saga__inst *saga__index_next(const saga__index *x, const saga__inst *in)
{
    const saga__htable *t = &x->by_id;
    size_t i = 0;
    if (in != NULL) {
        if (in->by_id.next != NULL)
            return INST_OF(in->by_id.next, by_id);
        i = ((size_t)in->by_id.hash & (t->nbuckets - 1)) + 1;
    }
    for (; i < t->nbuckets; i++)
        if (t->buckets[i] != NULL)
            return INST_OF(t->buckets[i], by_id);
    return NULL;
}

void saga__index_free(saga__index *x)
{
    for (size_t i = 0; i < x->by_id.nbuckets; i++) {
        saga__hnode *n = x->by_id.buckets[i];
        while (n != NULL) {
            saga__hnode *nx = n->next;
            saga__inst_destroy(INST_OF(n, by_id));
            n = nx;
        }
    }
    saga__htable_free(&x->by_id);
    saga__htable_free(&x->by_idem);
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

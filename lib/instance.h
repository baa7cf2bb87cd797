/*
 * instance.h — the bottom layer of the engine: a saga instance in memory
 * (saga__inst), the effects a committed transition releases, and the index
 * of active sagas (hash tables by id and by idempotency key, and the timer
 * heap), with the mapping between an instance and a store record. It knows
 * nothing of loops, stores or batches.
 */
#ifndef SAGA_INSTANCE_H
#define SAGA_INSTANCE_H

#include "internal.h"
#include "saga/engine.h"
#include "saga/store.h"
#include "saga/transport.h"

/* An active saga held in memory. Sagas leave memory once their terminal
 * state is committed; queries about them go to the store. */
typedef struct saga__inst {
    char id[SAGA_ID_SIZE];
    const saga_def *def;
    saga_state state;
    int32_t step;
    uint32_t attempt;
    uint32_t flags; /* SAGA_REC_* */
    int64_t created_ms, updated_ms, due_ms, deadline_ms;
    int64_t started_ms; /* when the current attempt was invoked */
    /* The current attempt may have run: its action was called, its command
     * queued, or (after recovery) it was in flight before the restart. */
    int invoked;
    char *idem_key;
    char *error;
    void *data;
    size_t data_len;
    uint32_t jseq; /* last journal seq written or staged */

    /* batch membership: the open batch, and the batch taken for commit
     * (in flight, or being released); a saga can be in both */
    unsigned int put_flags; /* SAGA_PUT_* pending, 0 = clean */
    int in_batch;
    struct saga__inst *batch_next;
    unsigned int commit_flags; /* put_flags as taken for commit */
    int in_commit;
    struct saga__inst *commit_next;

    /* timer heap (index, or SIZE_MAX when not armed) */
    size_t heap_idx;
    int64_t heap_key;

    /* the index's tables (util.h): key = id / idem_key */
    saga__hnode by_id;
    saga__hnode by_idem;

    /* per-saga completion callbacks */
    struct saga__donecb *done_cbs;
} saga__inst;

typedef struct saga__donecb {
    saga_done_cb cb;
    void *arg;
    struct saga__donecb *next;
} saga__donecb;

/* What a batch releases once it commits. */
typedef enum {
    EFF_INVOKE,  /* run the current attempt's action/compensation */
    EFF_STARTED, /* saga_start()'s callback */
    EFF_DONE,    /* the saga ended: callbacks, then leave memory */
    EFF_DONE_CB, /* a saga_on_done() for a saga that ended before */
    EFF_ACK      /* ack a transport delivery whose effect is now durable */
} saga__eff_kind;

typedef struct saga__effect {
    saga__eff_kind kind;
    saga__inst *inst;      /* EFF_INVOKE, EFF_DONE, EFF_STARTED(new) */
    char id[SAGA_ID_SIZE]; /* EFF_STARTED, EFF_DONE_CB */
    int32_t step;          /* EFF_INVOKE: what was scheduled */
    uint32_t attempt;
    uint32_t backward;
    int existed;      /* EFF_STARTED */
    saga_state state; /* EFF_DONE_CB */
    saga_start_cb start_cb;
    saga_done_cb done_cb;
    void *arg;
    saga_delivery *delivery; /* EFF_ACK */
} saga__effect;

/* The index of active sagas. Every saga in it has a timer slot reserved,
 * so that arming a timer never allocates (and never fails). */
typedef struct saga__index {
    saga__htable by_id;   /* every saga */
    saga__htable by_idem; /* those with an idempotency key */
    size_t ninst;
    saga__inst **heap; /* min-heap on heap_key */
    size_t nheap, cheap;
} saga__index;

/* A new instance of @p def, RUNNING at step 0 attempt 1, created at
 * @p now_ms, with copies of @p idem_key (may be NULL) and @p data (len 0:
 * the empty map); its id is left empty. @return NULL on ENOMEM. */
saga__inst *saga__inst_new(const saga_def *def, const char *idem_key,
                           const void *data, size_t len, int64_t now_ms);
/* An instance as the store record @p r describes it (recovery, operator
 * actions): @p def is its definition. @return NULL on ENOMEM. */
saga__inst *saga__inst_from_record(const saga_def *def, const saga_record *r);
/* The store record of @p in (borrowing its strings and data). */
void saga__record_from_inst(const saga__inst *in, saga_record *r);
/* Free an instance that is in no index. */
void saga__inst_destroy(saga__inst *in);

saga__inst *saga__index_find(const saga__index *x, const char *id);
saga__inst *saga__index_find_key(const saga__index *x, const char *key);
/* @return SAGA_OK or SAGA_ENOMEM (not added). */
int saga__index_add(saga__index *x, saga__inst *in);
/* Unlink @p in (and disarm it); the caller frees it. */
void saga__index_remove(saga__index *x, saga__inst *in);
/* Arm @p in at @p key / disarm it. @return 1 if the earliest timer
 * changed (the caller re-arms its clock). */
int saga__index_arm(saga__index *x, saga__inst *in, int64_t key);
int saga__index_disarm(saga__index *x, saga__inst *in);
/* The saga after @p in (NULL: the first) in @p x, in no particular order,
 * or NULL after the last; @p in must still be in @p x. */
saga__inst *saga__index_next(const saga__index *x, const saga__inst *in);
/* The saga whose timer is earliest, or NULL. */
static inline saga__inst *saga__index_first(const saga__index *x)
{
    return x->nheap ? x->heap[0] : NULL;
}
/* Free every instance and the tables. */
void saga__index_free(saga__index *x);

#endif /* SAGA_INSTANCE_H */

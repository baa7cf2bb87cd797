/*
 * engine_int.h — the engine's private state, shared by the engine layer:
 * engine.c (loop, timers, life-cycle), commit.c (staging and group commit
 * over batch.h's batches), verbs.c (public verbs, recovery), remote.c,
 * query.c, admin.c, metrics.c, own.c, trace.c, testing.c. The layers below
 * it (batch.h, machine.h, gcommit.h, relay.h, instance.h) do not see it:
 * scripts/check-layers.sh checks that.
 */
#ifndef SAGA_ENGINE_INT_H
#define SAGA_ENGINE_INT_H

#include <uv.h>

#include "batch.h"
#include "gcommit.h"
#include "instance.h"
#include "internal.h"
#include "machine.h"
#include "relay.h"

typedef struct saga__defent {
    saga_def *def;
    struct saga__defent *next;
} saga__defent;

struct saga_engine {
    uv_loop_t *loop;
    uv_loop_t own_loop;
    int owns_loop;
    saga_store *store;
    saga_transport *transport;
    saga_engine_options opts;
    int started, closing;

    saga_clock_fn clock;
    void *clock_arg;
    saga_random_fn random;
    void *random_arg;
    uint64_t seed, rng;
    uint32_t id_seq; /* the counter in saga ids (new_id()) */
    int64_t wall_base, loop_base;

    saga__defent *defs;

    saga__index idx; /* active sagas: by id, by key, and their timers */

    saga__batch batch;   /* open: staging */
    saga__batch commit;  /* taken for commit: in flight or being released */
    int commit_writes;   /* it has writes (metrics) */
    int commit_stuck;    /* it failed and could not be put back yet */
    saga__gc gc;         /* the group-commit driver */
    saga__snapshot snap; /* write_batch/submit_batch arrays, reused */
    int hk_wanted;       /* a purge waits for the batch in flight */
    int keys_held;       /* own.c: a refused batch's keys are looked up */
    int hk_inflight;     /* own.c: a purge is on its way (store v12) */
    int close_deferred;  /* closing waits for the batch in flight */

    uv_timer_t timer;    /* the heap's earliest */
    uv_timer_t hk_timer; /* housekeeping */
    int64_t hk_next_ms;  /* when the next pass is due (engine clock) */
    int nclosing;
    int own_wait;        /* the close waits for own.c (saga__own_close) */
    int handles_closing; /* close_handles ran: nclosing counts */
    saga_close_cb close_cb;
    void *close_arg;
    int running;       /* inside saga_engine_run() (own loop) */
    int *destroyed;    /* set by engine_destroy() (saga_engine_free waits) */
    int free_deferred; /* saga_engine_free() was called in a callback */

    /* data buffers replaced while an action still holds them */
    void **graveyard;
    size_t ngrave, cgrave;
    int invoking;

    saga__relay *relay;
    uint64_t replies_rejected;

    saga_engine_counters stats;
    struct saga__admin *admin; /* admin.c */
    saga__list kvops;          /* admin.c: key-value requests in flight */
    int shapes_due; /* admin.c: the shapes' write failed: tried again */
    struct saga__metrics *metrics; /* metrics.c */
    struct saga__own *own;         /* own.c: NULL unless the store is shared */
    uint32_t control_poll_ms;      /* 0: off; set before start */
    char errmsg[512];
};

/* engine.c */
void saga__log(saga_engine *e, saga_log_level lvl, const char *saga_id,
               int step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The engine's error text (saga_engine_errmsg()); returns code. */
#define saga__err(e, code, ...)                                                \
    saga__errf((e)->errmsg, sizeof(e)->errmsg, (code), __VA_ARGS__)
int64_t saga__now(saga_engine *e);
/* Admission (saga_engine_options.max_active): SAGA_OK if a new saga may
 * start now, else SAGA_EFULL (counted, errmsg set). */
int saga__admit(saga_engine *e);
uint64_t saga__rand(saga_engine *e);
const saga_def *saga__def_find(saga_engine *e, const char *name,
                               uint32_t version);
static inline saga__inst *saga__inst_find(saga_engine *e, const char *id)
{
    return saga__index_find(&e->idx, id);
}
static inline saga__inst *saga__idem_find(saga_engine *e, const char *key)
{
    return saga__index_find_key(&e->idx, key);
}
static inline int saga__inst_add(saga_engine *e, saga__inst *in)
{
    return saga__index_add(&e->idx, in);
}
/* Drop @p in from the index (e may be NULL: not indexed) and free it. */
void saga__inst_free(saga_engine *e, saga__inst *in);
/* Arm or disarm @p in's timer; the engine's uv timer follows the earliest. */
void saga__heap_set(saga_engine *e, saga__inst *in, int64_t key);
void saga__heap_remove(saga_engine *e, saga__inst *in);
/* commit.c: staging into the open batch (batch.c) with what the engine
 * adds: the commit scheduled, the saga's timer stopped, its clock, metrics.
 * Staging: mark @p in dirty in the open batch (flags SAGA_PUT_*). */
void saga__stage(saga_engine *e, saga__inst *in, unsigned int put_flags);
int saga__journal(saga_engine *e, saga__inst *in, saga_journal_kind ev,
                  const char *error);
int saga__push_effect(saga_engine *e, const saga__effect *eff);
/* Make room in the open batch for one transition (its journal entries and
 * effects), so that staging it cannot fail half-way: call before changing
 * a saga. @return SAGA_OK or SAGA_ENOMEM (nothing changed). */
int saga__reserve(saga_engine *e);
int saga__stage_idem(saga_engine *e, const char *key, const char *saga_id);
/* Queue an outbox message in the open batch (it takes @p m). */
void saga__stage_outmsg(saga_engine *e, saga__outmsg *m);
/* Delete a published message's outbox row with the next batch. */
void saga__stage_outbox_done(saga_engine *e, const char *msg_id);
/* Keep ended sagas updated at or after @p updated_ms from being purged
 * until the open batch is released. */
void saga__pin(saga_engine *e, int64_t updated_ms);
/* Free @p p now, or after the effects being run if an action may hold it. */
void saga__graveyard(saga_engine *e, void *p);
/* The group-commit driver over the engine's batches; and at teardown,
 * both batches and the arrays. */
void saga__commit_init(saga_engine *e);
void saga__commit_fini(saga_engine *e);

/* Closing waited for the batch in flight: it is done (engine.c). */
void saga__engine_drained(saga_engine *e);

/* remote.c */
int saga__remote_start(saga_engine *e);
/* The outbox message that runs the current attempt of a remote step. */
int saga__remote_command(saga_engine *e, saga__inst *in);
void saga__remote_close(saga_engine *e);
/* own.c: a claim round is over: take over the outbox rows of the sagas
 * this epoch owns (store version 10). */
void saga__remote_owned(saga_engine *e);

/* verbs.c: the state machine (machine.c) staging into the open batch. */
struct saga__machine saga__machine_of(saga_engine *e);
/* Apply an attempt's outcome (validated, current) and stage it. */
int saga__complete(saga_engine *e, saga__inst *in, saga_outcome oc,
                   const void *out, size_t out_len, const char *error);
void saga__invoke(saga_engine *e, saga__inst *in, const saga__effect *eff);
void saga__arm(saga_engine *e, saga__inst *in);
void saga__fire(saga_engine *e, saga__inst *in, int64_t now);
int saga__recover(saga_engine *e);
/* Operator actions (admin.c). */
int saga__op_find(saga_engine *e, const char *id, saga__inst **out,
                  saga_state *st);
void saga__op_retry(saga_engine *e, saga__inst *in, const char *why);
int saga__op_can_compensate(const saga__inst *in);
void saga__op_compensate(saga_engine *e, saga__inst *in, const char *why);
void saga__op_resolve(saga_engine *e, saga__inst *in, saga_state as,
                      const char *why);

/* own.c: several engines on one store (store version 5). */
typedef struct saga__own saga__own;
/* Take a lease and claim, in place of recovery. @return 1 if the store is
 * not shared (then recover as usual), SAGA_OK, or an error. */
int saga__own_start(saga_engine *e);
/* @return 1 if the close must wait for own.c's handle: it calls
 * saga__engine_handle_closed() once (the release answered or timed out). */
int saga__own_close(saga_engine *e);
/* Whether commits wait (the first lease, or the store's answer about a
 * refused batch, is in flight; also without a lease for keys). */
int saga__own_hold(const saga_engine *e);
/* engine.c: a handle the close waits for (saga__own_close) is closed. */
void saga__engine_handle_closed(saga_engine *e);
/* Whether the engine may invoke actions now (its lease is surely live). */
int saga__own_may_act(saga_engine *e);
/* A saga_on_done() waiter for an active saga that another engine owns:
 * called once the store says it ended. SAGA_OK, SAGA_ENOMEM. */
int saga__own_wait(saga_engine *e, const char *id, saga_done_cb cb, void *arg);
/* Whether saga_start() leaves a key not in memory to the commit (a store
 * that looks keys up on the loop, version 8): a key the store holds
 * refuses the batch, and saga__own_resolve answers the start with the
 * key's saga. */
int saga__keys_at_commit(const saga_engine *e);
/* Whether the engine reads a saga not in memory on the loop
 * (saga_get_submit, store version 8 with submit_batch). */
int saga__reads_on_loop(const saga_engine *e);
/* The housekeeping purge of sagas updated before @p before_ms on the loop
 * (purge_submit, store version 12): answered there. @return 1 if the store
 * has no such slot (purge synchronously), SAGA_OK (submitted, or one is in
 * flight), SAGA_ESTORE (refused). */
int saga__purge_submit(saga_engine *e, int64_t before_ms);
/* A commit failed with @p rc: drop from the open batch the sagas that made
 * it fail (fenced, or an idempotency key taken by another engine). @return
 * 1 if it dropped any (write the rest at once), 0 if not. */
int saga__own_resolve(saga_engine *e, int rc);
/* The relay's gate (remote.c): 0 while the engine may not publish (its
 * lease is not surely live, or not taken yet), else a number that changes
 * with each new epoch; 1 without a shared store. */
uint64_t saga__own_term(const saga_engine *e);
/* Whether the lease's round trips go out on the loop (store version 6). */
int saga__own_async(const saga_engine *e);
/* Give the lease up (something of this epoch is unknown here, e.g. an
 * outbox scan whose answer was lost): a new epoch is taken at once. */
void saga__own_give_up(saga_engine *e);
/* verbs.c: a saga not in memory read on the loop (store version 13:
 * saga_get_submit and journal_scan_submit, with submit_batch). */
int saga__loads_on_loop(const saga_engine *e);
/* Answer of saga__load_submit: @p rc SAGA_OK with the saga's state @p st
 * and, for a FAILED saga, @p in loaded into memory (or the one already
 * there; NULL for a saga that ended otherwise); SAGA_ENOTFOUND,
 * SAGA_ESTORE, SAGA_EINVAL (its definition is not registered),
 * SAGA_ENOMEM, SAGA_ECLOSED (the engine is closing); the engine's errmsg
 * says why. */
typedef void (*saga__loaded_cb)(saga_engine *e, int rc, saga__inst *in,
                                saga_state st, void *arg);
/* Read saga @p id on the loop as saga__op_find would, and load it if it
 * is FAILED; @p cb runs once, later, on the loop. @return SAGA_OK, or the
 * refusal (SAGA_ESTORE, SAGA_ENOMEM: @p cb never runs). */
int saga__load_submit(saga_engine *e, const char *id, saga__loaded_cb cb,
                      void *arg);
/* verbs.c: resume the sagas that @p scan visits, as recovery does. */
typedef int (*saga__scan_fn)(saga_engine *e, saga_record_cb cb, void *arg);
int saga__recover_from(saga_engine *e, saga__scan_fn scan);

/* admin.c: shapes recorded and the control queue polled from start; its
 * timer closed with the engine. */
struct saga__admin;
/* Record the definitions' shapes (saga_engine_start): synchronously
 * before the first lease request (@p after_lease 0), or on the loop after
 * it (1, store version 13); each call does its own kind only. */
void saga__admin_shapes(saga_engine *e, int after_lease);
void saga__admin_start(saga_engine *e);
void saga__admin_close(saga_engine *e);
/* Free the key-value requests still linked (after the store closed). */
void saga__admin_fini(saga_engine *e);
/* trace.c: a log line as a structured event (attempt, trace id). */
void saga__log_event(void *engine, saga_log_level lvl, const char *saga_id,
                     int step, const char *msg);
/* metrics.c */
struct saga__metrics;
void saga__metrics_journal(saga_engine *e, const saga__inst *in,
                           const saga_journal_entry *j);
void saga__metrics_commit(saga_engine *e, size_t transitions,
                          int64_t latency_us, int ok);
void saga__metrics_free(saga_engine *e);

#endif /* SAGA_ENGINE_INT_H */

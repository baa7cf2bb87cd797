/*
 * own.c — several engines on one store: the engine's side of leases,
 * fencing and claiming (store interface version 5), and of idempotency
 * keys that another engine took first.
 *
 * With a store that has the version-5 slots, the engine:
 *   - takes a lease at start (a new epoch) and resumes the sagas it claims
 *     instead of every active saga in the store (those belong to others);
 *   - renews the lease and claims sagas of engines whose lease ran out on
 *     a timer, every quarter of the lease, and resumes them as recovery
 *     does; with a store that has the version-6 slots these round trips
 *     go out on the loop (own_renew_submit, own_claim_submit) and are
 *     answered there, so the loop never waits for them; a renewal in
 *     flight extends nothing until its answer comes (the lease then counts
 *     from the time it was sent);
 *   - invokes actions only while its lease is surely live by its own
 *     monotonic clock (the time a renewal was sent + the lease length):
 *     after a pause (SIGSTOP, a long GC-like stall) it invokes nothing,
 *     drops every saga from memory and starts a new epoch, so that the
 *     engine that claimed them meanwhile is the only one acting on them;
 *   - when a commit is refused with SAGA_EFENCED, asks the store which
 *     sagas are no longer its own, drops them from memory and from the
 *     batch, and writes the rest of the batch at once.
 * Dropping a saga from the open batch is also how a start whose
 * idempotency key another engine bound first (the batch failed with
 * SAGA_EDUP) is answered: the saga is dropped and the start callback gets
 * the existing saga's id with existed = 1.
 *
 * With a store that also has the version-8 slots, nothing of this waits
 * for the server on the loop: the first lease and claim at start go out
 * with the version-6 slots (start returns at once; commits are held until
 * the lease is taken), the fenced commit's own_check and the lookup of
 * keys another engine took go out with own_check_submit/idem_get_submit
 * (the failed batch is held until the answer), the saga_on_done() waiters
 * of moved sagas are answered by saga_get_submit, and the release at close
 * by own_release_submit (the close waits for it, bounded).
 *
 * The hooks: saga__own_start and saga__own_close (engine.c),
 * saga__own_may_act and saga__own_resolve (batch.c), saga__own_hold
 * (commit.c).
 */
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "machine.h"

/* Sagas claimed per store round trip, and round trips per tick. */
#define CLAIM_LIMIT 64u
#define CLAIM_ROUNDS 4
/* Before the first lease is taken (its length unknown): how often the
 * request is sent again after a failure. */
#define START_RETRY_MS 250u
/* The close waits at most this long for the release's answer (and at most
 * a quarter of the lease). */
#define RELEASE_WAIT_MS 2000u

struct saga__own {
    saga_engine *e;
    uv_timer_t timer;
    uint32_t lease_ms;
    uint64_t valid_until_ns; /* uv_hrtime(): act only before it */
    int lost;                /* the lease is (believed) lost */
    int async;               /* the store has the version-6 slots */
    int busy;                /* renewals and claims in flight */
    int fresh;               /* the one in flight takes a new epoch */
    int closed;              /* the engine closed: the answer frees this */
    int timer_closed;
    int starting;     /* the first lease is not taken yet: commits wait */
    int resolving;    /* a fenced or key-refused batch waits for the store */
    int reqs;         /* version-8 requests in flight (check, get, release) */
    int polling;      /* saga_get_submit requests of poll_moved in flight */
    int releasing;    /* the close waits for the release (or its bound) */
    int notify;       /* the engine counts this timer's close (close_handles) */
    int rounds;       /* claim round trips this tick */
    uint64_t sent_ns; /* when the renewal in flight was sent */
    const saga_record *feed; /* the claimed sagas being resumed */
    size_t nfeed;
    struct saga__moved *moved; /* saga_on_done() waiters of moved sagas */
};

/* A saga_on_done() waiter whose saga this engine does not hold (another
 * engine owns it now): the store is asked at every lease tick, and the
 * waiter is called once the saga ended there (or handed back to the saga
 * when this engine claims it again). */
typedef struct saga__moved {
    struct saga__moved *next;
    char id[SAGA_ID_SIZE];
    saga_done_cb cb;
    void *arg;
} saga__moved;

#define MOVED_POLL_MAX 64 /* store reads per tick */

static int has_slots(const saga_store *s)
{
    return s->version >= 5 && s->own_renew != NULL && s->own_claim != NULL &&
           s->own_check != NULL && s->own_release != NULL;
}

static int has_async(const saga_store *s)
{
    return s->version >= 6 && s->own_renew_submit != NULL &&
           s->own_claim_submit != NULL && s->submit_batch != NULL;
}

static int has_v8(const saga_store *s) { return s->version >= 8; }

static void renew_submit(saga__own *o, int fresh);
static void own_closed(uv_handle_t *h);
static void own_tick(uv_timer_t *t);

/* An answer came for a request counted in @p count (o->busy: renewals
 * and claims; o->reqs: the version-8 requests). @return 1 if the engine
 * closed meanwhile: the state is freed once nothing more is in flight and
 * the timer is closed; touch nothing more. */
static int answer_came(saga__own *o, int *count)
{
    --*count;
    if (!o->closed)
        return 0;
    if (o->timer_closed && o->busy == 0 && o->reqs == 0)
        saga_free(o);
    return 1;
}

static int req_answered(saga__own *o) { return answer_came(o, &o->reqs); }

/* Commits may go on again: the held batch is written at once when
 * @p now (something left it), else after its backoff. */
static void unhold(saga_engine *e, int now)
{
    if (now)
        e->gc.backoff_ms = 1;
    if (!e->closing)
        saga__gc_schedule(&e->gc);
}

/* ------------------------------------------------------------------------ */
/* Dropping a saga from memory and from the open batch                      */

static int add_waiter(saga__own *o, const char *id, saga_done_cb cb, void *arg)
{
    saga__moved *m = saga_malloc(sizeof *m);
    if (m == NULL)
        return SAGA_ENOMEM;
    snprintf(m->id, sizeof m->id, "%s", id);
    m->cb = cb;
    m->arg = arg;
    m->next = o->moved;
    o->moved = m;
    return SAGA_OK;
}

/* The saga leaves memory for another engine: its saga_on_done() waiters
 * wait for the store instead (@p id: the saga that ends for them). */
static void keep_waiters(saga_engine *e, saga__inst *in, const char *id)
{
    saga__donecb *d = in->done_cbs;
    if (e->own == NULL)
        return; /* freed with the saga, as before */
    in->done_cbs = NULL;
    for (saga__donecb *nx; d; d = nx) {
        nx = d->next;
        if (add_waiter(e->own, id, d->cb, d->arg) != SAGA_OK)
            saga__log(e, SAGA_LOG_ERROR, id, -1,
                      "out of memory: a saga_on_done() waiter of a saga "
                      "that moved to another engine is dropped");
        saga_free(d);
    }
}

int saga__own_wait(saga_engine *e, const char *id, saga_done_cb cb, void *arg)
{
    if (e->own == NULL)
        return SAGA_EBUSY;
    if (add_waiter(e->own, id, cb, arg) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    return SAGA_OK;
}

typedef struct moved_state {
    saga_state st;
    int found;
} moved_state;

static int moved_state_cb(const saga_record *r, void *arg)
{
    moved_state *m = arg;
    m->st = r->state;
    m->found = 1;
    return 0;
}

/* The store's answer about a moved saga (@p st, or ENOTFOUND): call or
 * forget its waiters. @return 0, or -1 (out of memory: the next tick). */
static int moved_answer(saga_engine *e, saga__moved **pp, int rc, saga_state st)
{
    saga__moved *m = *pp;
    if (rc == SAGA_ENOTFOUND) {
        saga__log(e, SAGA_LOG_WARN, m->id, -1,
                  "saga_on_done(): the saga is gone from the store "
                  "(purged): its waiter is not called");
    } else {
        saga__effect f;
        memset(&f, 0, sizeof f);
        f.kind = EFF_DONE_CB;
        snprintf(f.id, sizeof f.id, "%s", m->id);
        f.state = st;
        f.done_cb = m->cb;
        f.arg = m->arg;
        if (saga__push_effect(e, &f) != SAGA_OK)
            return -1;
    }
    *pp = m->next;
    saga_free(m);
    return 0;
}

typedef struct moved_req {
    saga__own *o;
    char id[SAGA_ID_SIZE];
} moved_req;

static void moved_got_cb(void *arg, int rc, const saga_record *rec)
{
    moved_req *q = arg;
    saga__own *o = q->o;
    o->polling--;
    if (req_answered(o)) {
        saga_free(q);
        return;
    }
    saga_engine *e = o->e;
    if (rc == SAGA_ENOTFOUND || (rc == SAGA_OK && !SAGA__IS_ACTIVE(rec->state)))
        for (saga__moved **pp = &o->moved; *pp;) {
            if (strcmp((*pp)->id, q->id) != 0 ||
                saga__inst_find(e, q->id) != NULL) {
                pp = &(*pp)->next;
                continue;
            }
            if (moved_answer(e, pp, rc, rc == SAGA_OK ? rec->state : 0) != 0)
                break;
        }
    saga_free(q);
}

/* Ask the store about the moved sagas: a waiter whose saga ended is
 * called (as an effect, on a later loop turn, as saga_on_done() does for
 * a saga that ended already); one whose saga this engine holds again
 * goes back to it. */
static void poll_moved(saga_engine *e)
{
    saga__own *o = e->own;
    int n = 0;
    for (saga__moved **pp = &o->moved; *pp && n < MOVED_POLL_MAX;) {
        saga__moved *m = *pp;
        saga__inst *in = saga__inst_find(e, m->id);
        if (in != NULL && SAGA__IS_ACTIVE(in->state)) {
            saga__donecb *d = saga_malloc(sizeof *d);
            if (d == NULL)
                break;
            d->cb = m->cb;
            d->arg = m->arg;
            d->next = in->done_cbs;
            in->done_cbs = d;
            *pp = m->next;
            saga_free(m);
            continue;
        }
        if (in == NULL && o->async && has_v8(e->store) &&
            e->store->saga_get_submit != NULL) {
            /* On the loop: the answer calls the waiters (moved_got_cb). */
            moved_req *q = saga_malloc(sizeof *q);
            if (q == NULL)
                break;
            q->o = o;
            snprintf(q->id, sizeof q->id, "%s", m->id);
            if (e->store->saga_get_submit(e->store, m->id, moved_got_cb, q) !=
                SAGA_OK) {
                saga_free(q);
                break; /* the store is unreachable: the next tick */
            }
            o->reqs++;
            o->polling++;
            n++;
            pp = &m->next;
            continue;
        }
        moved_state ms = {SAGA_STATE_RUNNING, 0};
        int rc = in != NULL
                     ? SAGA_OK
                     : e->store->saga_get(e->store, m->id, moved_state_cb, &ms);
        n++;
        if (in != NULL) {
            ms.st = in->state;
            ms.found = 1;
        }
        if (rc == SAGA_ENOTFOUND ||
            (rc == SAGA_OK && (!ms.found || !SAGA__IS_ACTIVE(ms.st)))) {
            if (!ms.found) {
                saga__log(e, SAGA_LOG_WARN, m->id, -1,
                          "saga_on_done(): the saga is gone from the store "
                          "(purged): its waiter is not called");
            } else {
                saga__effect f;
                memset(&f, 0, sizeof f);
                f.kind = EFF_DONE_CB;
                snprintf(f.id, sizeof f.id, "%s", m->id);
                f.state = ms.st;
                f.done_cb = m->cb;
                f.arg = m->arg;
                if (saga__push_effect(e, &f) != SAGA_OK)
                    break; /* out of memory: the next tick */
            }
            *pp = m->next;
            saga_free(m);
            continue;
        }
        if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
            break; /* the store is unreachable: the next tick */
        pp = &m->next;
    }
}

/* Forget @p in: its staged journal entries, key, outbox messages and
 * effects leave the open batch, and it leaves memory. Start callbacks that
 * named it get @p answer_id (existed = 1) instead, when given. */
static void drop(saga_engine *e, saga__inst *in, const char *answer_id)
{
    saga__batch *b = &e->batch;
    if (in->in_batch) {
        b->tail = &b->head;
        for (saga__inst **pp = &b->head; *pp;) {
            if (*pp == in) {
                *pp = in->batch_next;
                continue;
            }
            b->tail = &(*pp)->batch_next;
            pp = &(*pp)->batch_next;
        }
        b->ninst--;
        in->in_batch = 0;
        in->batch_next = NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->njournal; i++) {
        if (strcmp(b->journal[i].saga_id, in->id) == 0)
            saga_free(b->journal[i].error);
        else
            b->journal[k++] = b->journal[i];
    }
    b->njournal = k;
    k = 0;
    for (size_t i = 0; i < b->nidem; i++) {
        if (strcmp(b->idem[i].saga_id, in->id) == 0)
            saga_free(b->idem[i].key);
        else
            b->idem[k++] = b->idem[i];
    }
    b->nidem = k;
    b->out_tail = &b->out_head;
    for (saga__outmsg **pp = &b->out_head; *pp;) {
        saga__outmsg *m = *pp;
        if (m->key != NULL && strcmp(m->key, in->id) == 0) {
            *pp = m->next;
            saga__outmsg_free(m);
            continue;
        }
        b->out_tail = &m->next;
        pp = &m->next;
    }
    k = 0;
    for (size_t i = 0; i < b->neffects; i++) {
        saga__effect *f = &b->effects[i];
        if ((f->kind == EFF_INVOKE || f->kind == EFF_DONE) && f->inst == in)
            continue;
        if (f->kind == EFF_STARTED && answer_id != NULL &&
            strcmp(f->id, in->id) == 0) {
            memcpy(f->id, answer_id, SAGA_ID_SIZE);
            f->existed = 1;
        }
        b->effects[k++] = *f;
    }
    b->neffects = k;
    keep_waiters(e, in, answer_id != NULL ? answer_id : in->id);
    saga__inst_free(e, in);
}

/* The lease is lost (or given up): every saga in memory may be another
 * engine's now. Drop them all but those inserted by the open batch (new,
 * nobody else knows them: they are written under the next epoch), then
 * take a new epoch. @return the renewal's result. */
static int lose_lease(saga_engine *e)
{
    saga__own *o = e->own;
    size_t n = 0, cap = e->idx.ninst;
    saga__inst **all = cap ? saga_malloc(cap * sizeof *all) : NULL;
    if (cap && all == NULL) {
        o->lost = 1; /* try again on the next tick */
        return SAGA_ENOMEM;
    }
    for (saga__inst *in = saga__index_next(&e->idx, NULL); in && n < cap;
         in = saga__index_next(&e->idx, in))
        if (!(in->in_batch && (in->put_flags & SAGA_PUT_INSERT)) &&
            !in->in_commit)
            all[n++] = in;
    for (size_t i = 0; i < n; i++)
        drop(e, all[i], NULL);
    saga_free(all);
    if (n)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "lease lost: dropped %zu sagas from memory; they are "
                  "claimed again by whichever engine is live",
                  n);
    if (o->async) {
        /* Answered on the loop (renewed_cb); lost until then. With a
         * request in flight, the next tick asks. */
        o->lost = 1;
        if (!o->busy)
            renew_submit(o, 1);
        return SAGA_OK;
    }
    uint64_t t0 = uv_hrtime();
    uint32_t lease = o->lease_ms;
    int rc = e->store->own_renew(e->store, 1, &lease);
    if (rc != SAGA_OK) {
        o->lost = 1;
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "cannot take a new lease: %s",
                  e->store->errmsg(e->store));
        return rc;
    }
    o->lost = 0;
    o->lease_ms = lease;
    o->valid_until_ns = t0 + (uint64_t)lease * 1000000u;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Claiming                                                                 */

static int claim_scan(saga_engine *e, saga_record_cb cb, void *arg)
{
    size_t n = 0;
    int rc = SAGA_OK;
    for (int round = 0; round < CLAIM_ROUNDS; round++) {
        rc = e->store->own_claim(e->store, CLAIM_LIMIT, cb, arg, &n);
        if (rc != SAGA_OK || n < CLAIM_LIMIT)
            break;
    }
    return rc;
}

static int claim(saga_engine *e)
{
    int rc = saga__recover_from(e, claim_scan);
    if (rc == SAGA_EFENCED)
        e->own->lost = 1;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* On the loop: renew, then claim, each answered by the store later         */

static int answered(saga__own *o) { return answer_came(o, &o->busy); }

static int feed_scan(saga_engine *e, saga_record_cb cb, void *arg)
{
    saga__own *o = e->own;
    for (size_t i = 0; o != NULL && i < o->nfeed; i++)
        if (cb(&o->feed[i], arg) != 0)
            break;
    return SAGA_OK;
}

static void claim_submit(saga__own *o);

static void claimed_cb(void *arg, int rc, const saga_record *recs, size_t n)
{
    saga__own *o = arg;
    if (answered(o))
        return;
    saga_engine *e = o->e;
    if (rc == SAGA_OK) {
        if (n > 0) {
            o->feed = recs;
            o->nfeed = n;
            int r = saga__recover_from(e, feed_scan);
            o->feed = NULL;
            o->nfeed = 0;
            if (r == SAGA_EFENCED)
                o->lost = 1;
        }
        if (n == CLAIM_LIMIT && ++o->rounds < CLAIM_ROUNDS && !o->lost)
            claim_submit(o);
        return;
    }
    if (rc == SAGA_EFENCED) {
        o->lost = 1;
    } else {
        /* The claim may have committed with its answer lost: sagas of
         * this epoch that nobody knows. A new epoch makes them claimable
         * again (by this engine too). */
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "claim failed (%s): giving the lease up to take a new one",
                  e->store->errmsg(e->store));
        o->lost = 1;
    }
    if (!e->gc.inflight && !o->busy)
        lose_lease(e);
}

static void claim_submit(saga__own *o)
{
    saga_engine *e = o->e;
    int rc = e->store->own_claim_submit(e->store, CLAIM_LIMIT, claimed_cb, o);
    if (rc == SAGA_OK) {
        o->busy++;
        return;
    }
    /* Refused, nothing sent: the next tick tries again. */
    if (rc == SAGA_EFENCED)
        o->lost = 1;
    else
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "cannot claim: %s",
                  e->store->errmsg(e->store));
}

static void renewed_cb(void *arg, int rc, uint32_t lease)
{
    saga__own *o = arg;
    if (answered(o))
        return;
    saga_engine *e = o->e;
    int fresh = o->fresh;
    if (rc == SAGA_OK) {
        o->lease_ms = lease;
        o->valid_until_ns = o->sent_ns + (uint64_t)lease * 1000000u;
        /* A renewal extends a live lease only: once the engine believed
         * it lost (it stopped acting), only a new epoch ends that. */
        if (fresh)
            o->lost = 0;
        if (fresh && o->starting) {
            /* saga_engine_start()'s lease: what was started meanwhile
             * commits now, under this epoch. */
            uint64_t every = lease / 4 ? lease / 4 : 1;
            o->starting = 0;
            uv_unref((uv_handle_t *)&o->timer);
            uv_timer_start(&o->timer, own_tick, every, every);
            unhold(e, 1);
        }
        if (!o->lost) {
            o->rounds = 0;
            claim_submit(o);
        } else if (!e->gc.inflight && !o->busy) {
            lose_lease(e);
        }
        return;
    }
    if (rc == SAGA_EFENCED && !fresh) {
        o->lost = 1;
        if (!e->gc.inflight && !o->busy)
            lose_lease(e);
        return;
    }
    /* The lease runs on; if it runs out before a renewal gets through,
     * the engine stops acting (saga__own_may_act). */
    saga__log(e, SAGA_LOG_ERROR, NULL, -1, "%s: %s",
              fresh ? "cannot take a new lease" : "lease renewal failed",
              e->store->errmsg(e->store));
}

static void renew_submit(saga__own *o, int fresh)
{
    saga_engine *e = o->e;
    o->sent_ns = uv_hrtime();
    o->fresh = fresh;
    int rc = e->store->own_renew_submit(e->store, fresh, renewed_cb, o);
    if (rc == SAGA_OK) {
        o->busy++;
        return;
    }
    saga__log(e, SAGA_LOG_ERROR, NULL, -1, "%s: %s",
              fresh ? "cannot take a new lease" : "lease renewal failed",
              e->store->errmsg(e->store));
}

/* ------------------------------------------------------------------------ */
/* The timer: renew, then claim                                             */

static void own_tick(uv_timer_t *t)
{
    saga__own *o = t->data;
    saga_engine *e = o->e;
    if (e->closing || e->gc.busy || o->busy)
        return;
    if (o->moved != NULL && o->polling == 0)
        poll_moved(e);
    if (o->async) {
        if (o->lost || uv_hrtime() >= o->valid_until_ns) {
            o->lost = 1;
            if (!e->gc.inflight)
                lose_lease(e);
            return;
        }
        renew_submit(o, 0);
        return;
    }
    if (o->lost || uv_hrtime() >= o->valid_until_ns) {
        /* Acting on nothing meanwhile (saga__own_may_act); the sagas of a
         * batch in flight are dropped once it is done. */
        o->lost = 1;
        if (e->gc.inflight)
            return;
        if (lose_lease(e) != SAGA_OK)
            return;
    } else {
        uint64_t t0 = uv_hrtime();
        uint32_t lease = o->lease_ms;
        int rc = e->store->own_renew(e->store, 0, &lease);
        if (rc == SAGA_OK) {
            o->lease_ms = lease;
            o->valid_until_ns = t0 + (uint64_t)lease * 1000000u;
        } else if (rc == SAGA_EFENCED) {
            o->lost = 1;
            if (e->gc.inflight || lose_lease(e) != SAGA_OK)
                return;
        } else {
            /* The lease runs on; if it runs out before a renewal gets
             * through, the engine stops acting (saga__own_may_act). */
            saga__log(e, SAGA_LOG_ERROR, NULL, -1, "lease renewal failed: %s",
                      e->store->errmsg(e->store));
            return;
        }
    }
    if (claim(e) == SAGA_EFENCED && !e->gc.inflight)
        lose_lease(e);
}

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */

int saga__own_start(saga_engine *e)
{
    saga_store *s = e->store;
    if (!has_slots(s))
        return 1;
    saga__own *o = saga_malloc(sizeof *o);
    if (o == NULL)
        return SAGA_ENOMEM;
    memset(o, 0, sizeof *o);
    o->e = e;
    uv_timer_init(e->loop, &o->timer);
    o->timer.data = o;
    if (has_async(s)) {
        /* The first lease goes out on the loop too: start returns at
         * once, and until the lease is taken the engine acts on nothing
         * and commits nothing (what saga_start() stages waits in memory,
         * its callback not yet run); renewed_cb then claims and commits.
         * A refused or failed request is sent again every quarter of the
         * configured lease. */
        o->async = 1;
        o->lost = 1;
        o->starting = 1;
        /* Until then the request keeps the loop alive (a saga started
         * meanwhile waits for it: saga_engine_run(SAGA_RUN_DEFAULT) must
         * not return before it ran); once taken, the lease alone does
         * not (renewed_cb). */
        e->own = o;
        renew_submit(o, 1);
        /* The lease's length is known with the answer (renewed_cb then
         * sets the timer to a quarter of it); until then, try again
         * every START_RETRY_MS. */
        uv_timer_start(&o->timer, own_tick, START_RETRY_MS, START_RETRY_MS);
        return SAGA_OK;
    }
    /* Like housekeeping, the lease alone does not keep a loop alive. */
    uv_unref((uv_handle_t *)&o->timer);
    uint64_t t0 = uv_hrtime();
    int rc = s->own_renew(s, 1, &o->lease_ms);
    if (rc != SAGA_OK || o->lease_ms == 0) {
        o->closed = 1;
        uv_close((uv_handle_t *)&o->timer, own_closed);
        return saga__err(e, SAGA_ESTORE, "cannot take a lease: %s",
                         s->errmsg(s));
    }
    o->valid_until_ns = t0 + (uint64_t)o->lease_ms * 1000000u;
    o->async = has_async(s);
    e->own = o;
    rc = claim(e);
    if (rc != SAGA_OK) {
        e->own = NULL;
        o->closed = 1;
        uv_close((uv_handle_t *)&o->timer, own_closed);
        return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    uint64_t every = o->lease_ms / 4 ? o->lease_ms / 4 : 1;
    uv_timer_start(&o->timer, own_tick, every, every);
    return SAGA_OK;
}

/* The timer is closed; an answer still in flight frees the state. The
 * engine may be destroyed by the notification (its store closed, which
 * answers what is in flight): the state is not touched after it. */
static void own_closed(uv_handle_t *h)
{
    saga__own *o = h->data;
    saga_engine *notify = o->notify ? o->e : NULL;
    o->timer_closed = 1;
    if (!o->busy && !o->reqs)
        saga_free(o);
    if (notify != NULL)
        saga__engine_handle_closed(notify);
}

/* The release is answered, or its wait ran out: the close goes on. */
static void release_over(saga__own *o)
{
    o->releasing = 0;
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, own_closed);
}

static void released_cb(void *arg, int rc)
{
    saga__own *o = arg;
    if (!o->releasing) {
        /* Answered after the wait ran out (the engine is gone or going):
         * only the state is left to free. */
        req_answered(o);
        return;
    }
    o->reqs--;
    if (rc != SAGA_OK)
        saga__log(o->e, SAGA_LOG_WARN, NULL, -1,
                  "cannot release the lease: %s; it runs out by itself",
                  o->e->store->errmsg(o->e->store));
    release_over(o);
}

static void release_timeout_cb(uv_timer_t *t)
{
    saga__own *o = t->data;
    saga__log(o->e, SAGA_LOG_WARN, NULL, -1,
              "no answer to the release of the lease in time: closing "
              "without it (the lease runs out by itself)");
    release_over(o);
}

int saga__own_close(saga_engine *e)
{
    saga__own *o = e->own;
    if (o == NULL)
        return 0;
    e->own = NULL;
    o->closed = 1;
    /* Waiters of sagas elsewhere are not called, as those of the sagas
     * in memory at close are not. */
    for (saga__moved *m = o->moved, *nx; m; m = nx) {
        nx = m->next;
        saga_free(m);
    }
    o->moved = NULL;
    /* Give the lease up: the sagas left here are claimed at once by the
     * other engines instead of after the lease. On the loop (version 8)
     * the release goes out after the batch in flight (answered in order:
     * it does not fence it), and the close waits for its answer, at most
     * RELEASE_WAIT_MS and a quarter of the lease; the timer keeps the
     * loop alive meanwhile and the engine counts its close. */
    saga_store *s = e->store;
    if (!o->lost && o->async && has_v8(s) && s->own_release_submit != NULL) {
        if (s->own_release_submit(s, released_cb, o) == SAGA_OK) {
            uint64_t wait = o->lease_ms / 4 < RELEASE_WAIT_MS ? o->lease_ms / 4
                                                              : RELEASE_WAIT_MS;
            o->reqs++;
            o->releasing = 1;
            o->notify = 1;
            uv_ref((uv_handle_t *)&o->timer);
            uv_timer_start(&o->timer, release_timeout_cb, wait ? wait : 1, 0);
            return 1;
        }
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "cannot release the lease: %s; it runs out by itself",
                  s->errmsg(s));
    } else if (!o->lost && !o->async && !e->gc.inflight &&
               s->own_release(s) != SAGA_OK) {
        /* Not under a batch in flight: it would be fenced; the lease then
         * runs out by itself. */
        saga__log(e, SAGA_LOG_WARN, NULL, -1, "cannot release the lease: %s",
                  s->errmsg(s));
    }
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, own_closed);
    return 0;
}

int saga__own_may_act(saga_engine *e)
{
    saga__own *o = e->own;
    if (o == NULL)
        return 1;
    if (!o->lost && uv_hrtime() < o->valid_until_ns)
        return 1;
    if (!o->lost) {
        o->lost = 1;
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "the lease may have run out (the engine was paused?): "
                  "acting on no saga until a new one is taken");
    }
    /* Handle it on the timer, outside the commit that asked. */
    uv_timer_start(&o->timer, own_tick, 0,
                   o->lease_ms / 4 ? o->lease_ms / 4 : 1);
    return 0;
}

/* The batch's keys that another saga holds in the store: drop the saga
 * that wanted each, answering its starts with the holder. */
static int resolve_keys(saga_engine *e)
{
    saga__batch *b = &e->batch;
    int dropped = 0;
    for (size_t i = 0; i < b->nidem;) {
        char holder[SAGA_ID_SIZE];
        int rc = e->store->idem_get(e->store, b->idem[i].key, holder);
        saga__inst *in = saga__inst_find(e, b->idem[i].saga_id);
        if (rc != SAGA_OK || strcmp(holder, b->idem[i].saga_id) == 0 ||
            in == NULL || !(in->put_flags & SAGA_PUT_INSERT)) {
            i++;
            continue;
        }
        saga__log(e, SAGA_LOG_INFO, in->id, -1,
                  "idempotency key '%.64s' was taken by saga %s (another "
                  "engine): answering with it",
                  b->idem[i].key, holder);
        e->stats.started--;
        drop(e, in, holder); /* removes b->idem[i] */
        dropped++;
    }
    return dropped;
}

static int resolve_fenced(saga_engine *e)
{
    saga__batch *b = &e->batch;
    size_t n = 0;
    for (saga__inst *in = b->head; in; in = in->batch_next)
        n++;
    const char **ids = saga_malloc((n + 1) * sizeof *ids);
    saga__inst **insts = saga_malloc((n + 1) * sizeof *insts);
    unsigned char *lost = saga_malloc(n + 1);
    int dropped = 0;
    if (ids && insts && lost) {
        size_t m = 0;
        for (saga__inst *in = b->head; in; in = in->batch_next) {
            if (in->put_flags & SAGA_PUT_INSERT)
                continue; /* new: ours whatever happens */
            insts[m] = in;
            ids[m++] = in->id;
        }
        int rc = e->store->own_check(e->store, ids, m, lost);
        if (rc == SAGA_EFENCED) {
            dropped = lose_lease(e) == SAGA_OK;
        } else if (rc == SAGA_OK) {
            for (size_t i = 0; i < m; i++) {
                if (!lost[i])
                    continue;
                saga__log(e, SAGA_LOG_INFO, insts[i]->id, insts[i]->step,
                          "fenced: another engine owns the saga now; "
                          "dropped from memory");
                drop(e, insts[i], NULL);
                dropped++;
            }
        }
    }
    saga_free(ids);
    saga_free(insts);
    saga_free(lost);
    return dropped;
}

/* ------------------------------------------------------------------------ */
/* The same on the loop (version 8): the failed batch waits (commits are
 * held, see saga__own_hold) until the store answered, then what was
 * refused leaves it and the rest is written at once. The sagas are named
 * by id, as the lease may be lost (and memory emptied) meanwhile. */

typedef struct key_ent {
    struct key_set *set;
    char *key;
    char saga_id[SAGA_ID_SIZE];
    char holder[SAGA_ID_SIZE];
    int rc;
} key_ent;

typedef struct key_set {
    saga__own *o;
    size_t n, left;
    key_ent ents[];
} key_set;

static void key_set_free(key_set *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        saga_free(ks->ents[i].key);
    saga_free(ks);
}

static void key_got_cb(void *arg, int rc, const char *holder)
{
    key_ent *k = arg;
    key_set *ks = k->set;
    k->rc = rc;
    if (rc == SAGA_OK)
        snprintf(k->holder, sizeof k->holder, "%s", holder);
    int gone = req_answered(ks->o);
    if (--ks->left > 0)
        return;
    if (gone) {
        key_set_free(ks);
        return;
    }
    saga__own *o = ks->o;
    saga_engine *e = o->e;
    int dropped = 0;
    for (size_t i = 0; i < ks->n; i++) {
        key_ent *x = &ks->ents[i];
        if (x->rc != SAGA_OK || strcmp(x->holder, x->saga_id) == 0)
            continue;
        saga__inst *in = saga__inst_find(e, x->saga_id);
        if (in == NULL || !in->in_batch || in->in_commit ||
            !(in->put_flags & SAGA_PUT_INSERT))
            continue;
        saga__log(e, SAGA_LOG_INFO, in->id, -1,
                  "idempotency key '%.64s' was taken by saga %s (another "
                  "engine): answering with it",
                  x->key, x->holder);
        e->stats.started--;
        drop(e, in, x->holder);
        dropped++;
    }
    key_set_free(ks);
    o->resolving = 0;
    unhold(e, dropped > 0);
}

/* @return 1 if the lookups went out (the batch waits for them), 0 if not
 * (the synchronous path then runs). */
static int resolve_keys_submit(saga_engine *e)
{
    saga__own *o = e->own;
    saga__batch *b = &e->batch;
    size_t n = b->nidem;
    key_set *ks = saga_malloc(sizeof *ks + n * sizeof ks->ents[0]);
    if (ks == NULL)
        return 0;
    memset(ks, 0, sizeof *ks + n * sizeof ks->ents[0]);
    ks->o = o;
    ks->n = n;
    for (size_t i = 0; i < n; i++) {
        key_ent *k = &ks->ents[i];
        k->set = ks;
        k->rc = SAGA_ESTORE;
        k->key = saga__strdup(b->idem[i].key);
        snprintf(k->saga_id, sizeof k->saga_id, "%s", b->idem[i].saga_id);
        if (k->key == NULL) {
            key_set_free(ks);
            return 0;
        }
    }
    /* left counts one more until every request is out, so that an answer
     * cannot finish the set early (answers never come from inside the
     * call, but a refusal part way must not leave it hanging). */
    ks->left = 1;
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        key_ent *k = &ks->ents[i];
        if (e->store->idem_get_submit(e->store, k->key, key_got_cb, k) !=
            SAGA_OK)
            break; /* the rest stay ESTORE: retried with the batch */
        ks->left++;
        o->reqs++;
        sent++;
    }
    if (sent == 0) {
        key_set_free(ks);
        return 0;
    }
    ks->left--;
    o->resolving = 1;
    return 1;
}

typedef struct check_req {
    saga__own *o;
    size_t n;
    char ids[]; /* n ids of SAGA_ID_SIZE */
} check_req;

static void checked_cb(void *arg, int rc, const unsigned char *lost, size_t n)
{
    check_req *q = arg;
    saga__own *o = q->o;
    if (req_answered(o)) {
        saga_free(q);
        return;
    }
    saga_engine *e = o->e;
    int dropped = 0;
    o->resolving = 0;
    if (rc == SAGA_EFENCED) {
        o->lost = 1;
        if (!e->gc.inflight && !o->busy)
            lose_lease(e);
    } else if (rc == SAGA_OK) {
        for (size_t i = 0; i < n && i < q->n; i++) {
            saga__inst *in = lost[i]
                                 ? saga__inst_find(e, q->ids + i * SAGA_ID_SIZE)
                                 : NULL;
            if (in == NULL || in->in_commit)
                continue;
            saga__log(e, SAGA_LOG_INFO, in->id, in->step,
                      "fenced: another engine owns the saga now; "
                      "dropped from memory");
            drop(e, in, NULL);
            dropped++;
        }
    }
    saga_free(q);
    unhold(e, dropped > 0 || rc == SAGA_EFENCED);
}

static int resolve_fenced_submit(saga_engine *e)
{
    saga__own *o = e->own;
    saga__batch *b = &e->batch;
    size_t n = 0;
    for (saga__inst *in = b->head; in; in = in->batch_next)
        n++;
    check_req *q = saga_malloc(sizeof *q + (n + 1) * SAGA_ID_SIZE);
    const char **ids = saga_malloc((n + 1) * sizeof *ids);
    if (q == NULL || ids == NULL) {
        saga_free(q);
        saga_free(ids);
        return 0;
    }
    q->o = o;
    size_t m = 0;
    for (saga__inst *in = b->head; in; in = in->batch_next) {
        if (in->put_flags & SAGA_PUT_INSERT)
            continue; /* new: ours whatever happens */
        char *slot = q->ids + m * SAGA_ID_SIZE;
        snprintf(slot, SAGA_ID_SIZE, "%s", in->id);
        ids[m++] = slot;
    }
    q->n = m;
    int rc = e->store->own_check_submit(e->store, ids, m, checked_cb, q);
    saga_free(ids);
    if (rc != SAGA_OK) {
        saga_free(q);
        return 0;
    }
    o->reqs++;
    o->resolving = 1;
    return 1;
}

int saga__own_hold(const saga_engine *e)
{
    const saga__own *o = e->own;
    return o != NULL && (o->starting || o->resolving);
}

int saga__own_resolve(saga_engine *e, int rc)
{
    saga__own *o = e->own;
    int v8 = o != NULL && o->async && has_v8(e->store);
    if (rc == SAGA_EDUP && e->batch.nidem > 0) {
        /* On the loop, a refused lookup is not made synchronously: the
         * batch is retried after its backoff and asks again. */
        if (v8 && e->store->idem_get_submit != NULL)
            return resolve_keys_submit(e);
        return resolve_keys(e) > 0;
    }
    if (rc == SAGA_EFENCED && o != NULL) {
        if (v8 && e->store->own_check_submit != NULL)
            return resolve_fenced_submit(e);
        return resolve_fenced(e) > 0;
    }
    return 0;
}

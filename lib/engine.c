/*
 * engine.c — the engine's life-cycle and loop plumbing: logging and errors,
 * the clock and random source, definitions, the one uv timer over the timer
 * heap of the active sagas (instance.c), housekeeping, start, run, close
 * and free. See docs/architecture.md for the layers: instance.c (sagas in
 * memory), machine.c (transitions), batch.c (staging and the batch),
 * gcommit.c + commit.c (group commit), verbs.c (the public verbs), remote.c
 * (remote steps).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

#define DEFAULT_RETENTION_MS (24ull * 3600 * 1000)
#define DEFAULT_HK_MS 60000ull
#define DEFAULT_MAX_DATA (1024u * 1024u)
#define DEFAULT_STORE_RETRY_MS 100u

/* ------------------------------------------------------------------------ */
/* Logging and errors                                                       */

void saga__log(saga_engine *e, saga_log_level lvl, const char *saga_id,
               int step, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlog(e->opts.log_level, lvl, saga_id, step,
               e->opts.version >= 2 && e->opts.log_event ? saga__log_event
                                                         : NULL,
               e, e->opts.log, e->opts.log_arg, e->opts.service, fmt, ap);
    va_end(ap);
}

const char *saga_engine_errmsg(saga_engine *e)
{
    return e ? e->errmsg : "invalid argument";
}

/* ------------------------------------------------------------------------ */
/* Clock and random source                                                  */

static int64_t default_clock(void *arg)
{
    saga_engine *e = arg;
    return e->wall_base + ((int64_t)uv_now(e->loop) - e->loop_base);
}

static uint64_t default_random(void *arg)
{
    return saga__splitmix64(&((saga_engine *)arg)->rng);
}

int64_t saga__now(saga_engine *e) { return e->clock(e->clock_arg); }
uint64_t saga__rand(saga_engine *e) { return e->random(e->random_arg); }
int64_t saga_engine_now(saga_engine *e) { return e ? saga__now(e) : 0; }
uint64_t saga_engine_seed(saga_engine *e) { return e ? e->seed : 0; }
uv_loop_t *saga_engine_loop(saga_engine *e) { return e ? e->loop : NULL; }

/* ------------------------------------------------------------------------ */
/* Definitions                                                              */

const saga_def *saga__def_find(saga_engine *e, const char *name,
                               uint32_t version)
{
    const saga_def *best = NULL;
    for (saga__defent *d = e->defs; d; d = d->next) {
        if (strcmp(d->def->name, name) != 0)
            continue;
        if (version != 0 && d->def->version == version)
            return d->def;
        if (version == 0 && (best == NULL || d->def->version > best->version))
            best = d->def;
    }
    return best;
}

int saga_engine_register(saga_engine *e, saga_def *def)
{
    if (e == NULL || def == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (e->started)
        return saga__err(e, SAGA_EBUSY, "register definitions before start");
    if (def->registered)
        /* Another engine (or this one) owns it and frees it. */
        return saga__err(e, SAGA_EBUSY,
                         "definition '%s' v%u is registered with an engine "
                         "already; make one definition per engine",
                         def->name, def->version);
    int rc = saga_def_validate(def);
    if (rc != SAGA_OK)
        return saga__err(e, rc, "%s", saga_def_errmsg(def));
    if (saga__def_find(e, def->name, def->version) != NULL)
        return saga__err(e, SAGA_EDUP, "definition '%s' v%u is registered",
                         def->name, def->version);
    for (size_t i = 0; i < def->nsteps; i++)
        if (def->steps[i].opts.service != NULL && e->transport == NULL)
            return saga__err(e, SAGA_EINVAL,
                             "step '%s' is remote but the engine has no "
                             "transport",
                             def->steps[i].name);
    saga__defent *ent = saga_malloc(sizeof *ent);
    if (ent == NULL)
        return SAGA_ENOMEM;
    ent->def = def;
    ent->next = e->defs;
    e->defs = ent;
    def->registered = 1;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Active sagas (instance.c) and the one uv timer for the earliest due.     */

static void timer_rearm(saga_engine *e);

void saga__inst_free(saga_engine *e, saga__inst *in)
{
    if (in == NULL)
        return;
    if (e != NULL) {
        int first = in->heap_idx == 0;
        saga__index_remove(&e->idx, in);
        if (first)
            timer_rearm(e);
    }
    saga__inst_destroy(in);
}

static void timer_cb(uv_timer_t *t);

static void timer_rearm(saga_engine *e)
{
    if (e->closing)
        return;
    saga__inst *first = saga__index_first(&e->idx);
    if (first == NULL) {
        uv_timer_stop(&e->timer);
        return;
    }
    int64_t delay = first->heap_key - saga__now(e);
    uv_timer_start(&e->timer, timer_cb, delay > 0 ? (uint64_t)delay : 0, 0);
}

void saga__heap_remove(saga_engine *e, saga__inst *in)
{
    if (saga__index_disarm(&e->idx, in))
        timer_rearm(e);
}

void saga__heap_set(saga_engine *e, saga__inst *in, int64_t key)
{
    int rc = saga__index_arm(&e->idx, in, key);
    if (rc < 0)
        saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                  "no timer slot (a bug): the saga has no timer");
    else if (rc)
        timer_rearm(e);
}

static void fire_due(saga_engine *e)
{
    int64_t now = saga__now(e);
    /* Pop everything due by now; a fired saga re-arms itself after its
     * transition commits, so this loop terminates. */
    saga__inst *in;
    while ((in = saga__index_first(&e->idx)) != NULL && in->heap_key <= now) {
        saga__heap_remove(e, in);
        saga__fire(e, in, now);
    }
    timer_rearm(e);
}

static void timer_cb(uv_timer_t *t) { fire_due(t->data); }

int saga_engine_advance(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    fire_due(e);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Housekeeping                                                             */

int saga_engine_housekeep(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    saga_store *s = e->store;
    int64_t now = saga__now(e);
    int64_t before = now - (int64_t)e->opts.retention_ms;
    e->hk_next_ms = now + (int64_t)e->opts.housekeeping_interval_ms;
    /* An ended saga whose id saga_start() has just returned (existed=1) is
     * spared until that start is released: the caller holds its id. */
    if (e->batch.pin_ms > 0 && e->batch.pin_ms < before)
        before = e->batch.pin_ms;
    if (e->commit.pin_ms > 0 && e->commit.pin_ms < before)
        before = e->commit.pin_ms;
    /* On a store that purges on the loop (version 12) the purge goes out
     * at once, after the batch in flight, and is answered there (own.c). */
    int rc = saga__purge_submit(e, before);
    if (rc <= 0)
        return rc;
    if (e->gc.inflight) {
        /* The purge writes: it waits until the batch in flight is done
         * (and runs right after its release). */
        e->hk_wanted = 1;
        return SAGA_OK;
    }
    uint64_t n = 0;
    rc = s->begin(s);
    if (rc == SAGA_OK) {
        rc = s->purge(s, before, &n);
        if (rc == SAGA_OK)
            rc = s->commit(s);
        else
            s->rollback(s);
    }
    if (rc != SAGA_OK) {
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "housekeeping failed: %s",
                  s->errmsg(s));
        return saga__err(e, SAGA_ESTORE, "purge failed: %s", s->errmsg(s));
    }
    e->stats.purged += n;
    if (n)
        saga__log(e, SAGA_LOG_INFO, NULL, -1, "purged %llu ended sagas",
                  (unsigned long long)n);
    return SAGA_OK;
}

static void hk_cb(uv_timer_t *t) { saga_engine_housekeep(t->data); }

static int in_callback(const saga_engine *e);

/* A program that polls with SAGA_RUN_NOWAIT while no saga is active runs a
 * loop that is not alive: uv_run() returns before running any timer, so the
 * housekeeping timer alone would never fire. */
static void hk_if_due(saga_engine *e)
{
    if (e->started && !e->closing && !in_callback(e) &&
        saga__now(e) >= e->hk_next_ms)
        saga_engine_housekeep(e);
}

/* ------------------------------------------------------------------------ */
/* Life-cycle                                                               */

int saga_engine_options_init(saga_engine_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_ENGINE_OPTIONS_VERSION);
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

int saga_engine_new(saga_engine **out, saga_store *store,
                    saga_transport *transport, const saga_engine_options *opts)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    SAGA__CHECK_VERSION(opts, SAGA_ENGINE_OPTIONS_VERSION);
    int rc = saga__plugins_check(store, transport,
                                 opts != NULL ? opts->log : NULL,
                                 opts != NULL ? opts->log_arg : NULL);
    if (rc != SAGA_OK)
        return rc;
    saga_engine *e = saga_malloc(sizeof *e);
    if (e == NULL)
        return SAGA_ENOMEM;
    memset(e, 0, sizeof *e);
    if (opts != NULL)
        /* An older caller's struct ends before the newer fields (version
         * 1: before log_event; version 2: before max_active). */
        memcpy(&e->opts, opts,
               opts->version >= 3   ? sizeof *opts
               : opts->version == 2 ? offsetof(saga_engine_options, max_active)
                                    : offsetof(saga_engine_options, log_event));
    else
        saga_engine_options_init(&e->opts, SAGA_ENGINE_OPTIONS_VERSION);
    saga_engine_options *o = &e->opts;
    if (o->log_level == 0)
        o->log_level = SAGA_LOG_WARN;
    if (o->retention_ms == 0)
        o->retention_ms = DEFAULT_RETENTION_MS;
    if (o->housekeeping_interval_ms == 0)
        o->housekeeping_interval_ms = DEFAULT_HK_MS;
    if (o->max_data_size == 0)
        o->max_data_size = DEFAULT_MAX_DATA;
    if (o->store_retry_ms == 0)
        o->store_retry_ms = DEFAULT_STORE_RETRY_MS;
    if (o->service == NULL)
        o->service = "orchestrator";
    e->control_poll_ms = 500;

    saga_store *own_store = NULL;
    if (store == NULL) {
        rc = saga_store_memory_new(&own_store);
        if (rc != SAGA_OK)
            goto fail;
        store = own_store;
    }
    if (o->loop == NULL) {
        if (uv_loop_init(&e->own_loop) != 0) {
            rc = SAGA_ENOMEM;
            goto fail;
        }
        e->loop = &e->own_loop;
        e->owns_loop = 1;
    } else {
        e->loop = o->loop;
    }
    if (store->version >= 4 && store->attach != NULL &&
        (rc = store->attach(store, e->loop)) != SAGA_OK) {
        if (e->owns_loop)
            uv_loop_close(e->loop);
        goto fail;
    }
    uv_timer_init(e->loop, &e->timer);
    uv_timer_init(e->loop, &e->hk_timer);
    e->timer.data = e->hk_timer.data = e;
    /* Housekeeping alone must not keep a loop alive. */
    uv_unref((uv_handle_t *)&e->hk_timer);

    uv_update_time(e->loop);
    e->wall_base = saga__wall_ms();
    e->loop_base = (int64_t)uv_now(e->loop);
    e->clock = o->clock ? o->clock : default_clock;
    e->clock_arg = o->clock ? o->clock_arg : e;
    e->seed = o->seed ? o->seed : saga__os_seed();
    e->rng = e->seed;
    e->random = o->random ? o->random : default_random;
    e->random_arg = o->random ? o->random_arg : e;
    e->store = store;
    e->transport = transport;
    saga__commit_init(e);
    *out = e;
    return SAGA_OK;
fail:
    saga_store_free(own_store);
    saga_free(e);
    return rc;
}

int saga_engine_start(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    if (e->started)
        return saga__err(e, SAGA_EBUSY, "engine already started");
    if (e->closing)
        return SAGA_ECLOSED;
    /* The definitions' shapes first: a synchronous transaction, which
     * would otherwise wait behind the first lease request in flight. */
    saga__admin_shapes(e, 0);
    /* A store shared by several engines: resume the sagas claimed. */
    int rc = saga__own_start(e);
    /* On the loop (store version 13): after the first lease request, so
     * that the claim does not wait behind the shapes' batch. */
    saga__admin_shapes(e, 1);
    if (rc > 0)
        rc = saga__recover(e);
    if (rc == SAGA_OK && e->transport != NULL)
        rc = saga__remote_start(e);
    if (rc != SAGA_OK)
        return rc;
    e->started = 1;
    e->hk_next_ms = saga__now(e) + (int64_t)e->opts.housekeeping_interval_ms;
    saga__admin_start(e);
    uv_timer_start(&e->hk_timer, hk_cb, e->opts.housekeeping_interval_ms,
                   e->opts.housekeeping_interval_ms);
    return SAGA_OK;
}

_Static_assert(SAGA_RUN_DEFAULT == (int)UV_RUN_DEFAULT &&
                   SAGA_RUN_ONCE == (int)UV_RUN_ONCE &&
                   SAGA_RUN_NOWAIT == (int)UV_RUN_NOWAIT,
               "saga_run_mode mirrors uv_run_mode");

static void own_loop_finish(saga_engine *e);

/* Whether user code of this engine is on the stack: an action or callback
 * released by a commit, or saga_engine_run() of the engine's own loop. The
 * engine cannot be freed under it. */
static int in_callback(const saga_engine *e)
{
    return e->gc.busy || e->running;
}

int saga_engine_run(saga_engine *e, saga_run_mode mode)
{
    if (e == NULL || (int)mode < 0 || mode > SAGA_RUN_NOWAIT)
        return SAGA_EINVAL;
    hk_if_due(e);
    if (!e->owns_loop)
        /* A close may free the engine inside uv_run(): do not touch it
         * after. */
        return uv_run(e->loop, (uv_run_mode)mode);
    if (e->closing && !in_callback(e)) {
        own_loop_finish(e);
        return 0;
    }
    e->running++;
    int r = uv_run(e->loop, (uv_run_mode)mode);
    e->running--;
    if (e->closing && !in_callback(e)) {
        /* Closed from a callback during this run: finish it now. */
        own_loop_finish(e);
        return 0;
    }
    return r;
}

int saga_engine_stats(saga_engine *e, saga_engine_counters *out)
{
    if (e == NULL || out == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(out, SAGA_ENGINE_COUNTERS_VERSION);
    unsigned int v = out->version;
    saga_engine_counters c = e->stats;
    c.active = e->idx.ninst;
    /* Write only what the caller's version has room for. */
    memcpy(out, &c,
           v == 1 ? offsetof(saga_engine_counters, starts_refused) : sizeof c);
    out->version = v;
    return SAGA_OK;
}

int saga__admit(saga_engine *e)
{
    size_t max = e->opts.max_active;
    if (max == 0 || e->idx.ninst < max)
        return SAGA_OK;
    e->stats.starts_refused++;
    return saga__err(e, SAGA_EFULL,
                     "%zu sagas run, max_active is %zu: retry later",
                     e->idx.ninst, max);
}

static void engine_destroy(saga_engine *e)
{
    saga_close_cb cb = e->close_cb;
    void *arg = e->close_arg;
    saga__index_free(&e->idx);
    saga_free(e->graveyard);
    saga__commit_fini(e);
    saga__metrics_free(e);
    for (saga__defent *d = e->defs, *nx; d; d = nx) {
        nx = d->next;
        saga__def_destroy(d->def);
        saga_free(d);
    }
    saga_store_free(e->store);
    saga__admin_fini(e);
    if (e->destroyed != NULL)
        *e->destroyed = 1;
    saga_free(e);
    if (cb)
        cb(arg);
}

/* Finish closing an engine on its own loop, outside that loop: run it until
 * the engine's and the transport's handles are closed, close it, free. */
static void own_loop_finish(saga_engine *e)
{
    while (e->nclosing != -1)
        uv_run(e->loop, UV_RUN_ONCE);
    /* A store bound to the loop (attach) closes its handles there. */
    saga_store_free(e->store);
    e->store = NULL;
    uv_run(e->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(e->loop) != 0)
        saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                  "the engine's loop still has handles open at close: "
                  "they are leaked");
    engine_destroy(e);
}

static void closed_one(saga_engine *e)
{
    if (--e->nclosing > 0)
        return;
    if (e->owns_loop) {
        /* The loop is inside the engine: freed after uv_run() returns, by
         * saga_engine_run(), saga_engine_free() or saga_engine_flush(). */
        e->nclosing = -1;
        return;
    }
    engine_destroy(e);
}

static void on_handle_closed(uv_handle_t *h) { closed_one(h->data); }

void saga__engine_handle_closed(saga_engine *e)
{
    if (!e->own_wait)
        return;
    e->own_wait = 0;
    if (e->handles_closing)
        closed_one(e);
}

static void close_handles(saga_engine *e)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&e->timer, (uv_handle_t *)&e->hk_timer};
    e->handles_closing = 1;
    e->nclosing = (int)(sizeof hs / sizeof hs[0]) + (e->own_wait ? 1 : 0);
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        uv_close(hs[i], on_handle_closed);
    e->nclosing += saga__gc_close(&e->gc, on_handle_closed, e);
}

static void close_deferred_cb(uv_timer_t *t) { close_handles(t->data); }

/* batch.c: the batch in flight at close is done (called from the store's
 * callback: the handles close from a timer, and the store is freed after).
 */
void saga__engine_drained(saga_engine *e)
{
    if (!e->close_deferred)
        return;
    e->close_deferred = 0;
    uv_timer_start(&e->timer, close_deferred_cb, 0, 0);
}

void saga_engine_close(saga_engine *e, saga_close_cb cb, void *arg)
{
    if (e == NULL || e->closing)
        return;
    /* Make what was staged durable first; a store that still fails loses
     * only transitions whose effects were never released, and recovery
     * replays from the last commit. */
    /* From a callback of a commit, the commit in progress goes on and
     * writes the rest. With an asynchronous store this submits the batch
     * and the close waits for it. */
    if (!e->gc.busy && saga__batch_pending(&e->batch) &&
        saga_engine_flush(e) != SAGA_OK)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "closing with uncommitted transitions: %s", e->errmsg);
    e->closing = 1;
    e->close_cb = cb;
    e->close_arg = arg;
    saga__gc_stop(&e->gc);
    saga__remote_close(e);
    saga__admin_close(e);
    /* The lease's release may go out on the loop: the handles' close then
     * waits for its answer (bounded, own.c). */
    e->own_wait = saga__own_close(e);
    if (e->transport != NULL) {
        saga_transport_free(e->transport);
        e->transport = NULL;
    }
    if (e->gc.inflight) {
        /* The store still writes a batch: the engine, its store and the
         * sagas the batch names stay until it is done. */
        uv_timer_stop(&e->timer);
        uv_timer_stop(&e->hk_timer);
        e->close_deferred = 1;
        return;
    }
    close_handles(e);
}

void saga_engine_free(saga_engine *e)
{
    if (e == NULL)
        return;
    if (!e->closing)
        saga_engine_close(e, NULL, NULL);
    if (in_callback(e)) {
        /* Called from an action or callback: freeing now would pull the
         * engine from under the code that called it. Deferred: the engine
         * is closing, and is freed once control is back in the loop (own
         * loop: when saga_engine_run() returns). */
        saga__log(e, SAGA_LOG_INFO, NULL, -1,
                  "saga_engine_free() inside a callback: deferred");
        e->free_deferred = 1;
        return;
    }
    if (e->owns_loop) {
        own_loop_finish(e);
        return;
    }
    uv_loop_t *loop = e->loop;
    int done = 0;
    /* engine_destroy() sets it, then frees the engine (and the pointer). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
    e->destroyed = &done;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic pop
#endif
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
}

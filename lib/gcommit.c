/*
 * gcommit.c — the group-commit driver (see gcommit.h).
 */
#include "gcommit.h"

static void check_cb(uv_check_t *h);
static void idle_cb(uv_idle_t *h) { (void)h; }
static void retry_cb(uv_timer_t *t) { saga__gc_schedule(t->data); }

void saga__gc_init(saga__gc *g, uv_loop_t *loop, saga_store *store,
                   const saga__gc_ops *ops, void *owner, uint32_t retry_ms,
                   uint32_t max_backoff_ms, int max_rounds)
{
    g->loop = loop;
    g->store = store;
    g->ops = ops;
    g->owner = owner;
    g->retry_ms = g->backoff_ms = retry_ms;
    g->max_backoff_ms = max_backoff_ms;
    g->max_rounds = max_rounds > 0 ? max_rounds : 1;
    g->async = store != NULL && store->version >= 4 &&
               store->submit_batch != NULL && ops->writes != NULL &&
               ops->detach != NULL;
    g->busy = g->inflight = g->closing = g->linger = 0;
    g->t0 = 0;
    g->latency_us = 0;
    uv_idle_init(loop, &g->idle);
    uv_check_init(loop, &g->check);
    uv_timer_init(loop, &g->retry);
    g->idle.data = g->check.data = g->retry.data = g;
}

void saga__gc_schedule(saga__gc *g)
{
    /* While a failed commit waits for its retry timer, or a batch is in
     * flight, what is staged joins the next batch without bringing its
     * commit forward. */
    if (g->closing || g->inflight || uv_is_active((uv_handle_t *)&g->check) ||
        uv_is_active((uv_handle_t *)&g->retry))
        return;
    uv_idle_start(&g->idle, idle_cb);
    uv_check_start(&g->check, check_cb);
}

static void stop(saga__gc *g)
{
    uv_idle_stop(&g->idle);
    uv_check_stop(&g->check);
}

static void commit_failed(saga__gc *g, int rc)
{
    g->ops->failed(g->owner, rc);
    stop(g);
    if (!g->closing)
        uv_timer_start(&g->retry, retry_cb, g->backoff_ms, 0);
    g->backoff_ms = g->backoff_ms * 2 > g->max_backoff_ms ? g->max_backoff_ms
                                                          : g->backoff_ms * 2;
}

static void done_cb(void *arg, int rc)
{
    saga__gc *g = arg;
    g->inflight = 0;
    g->latency_us = (int64_t)((uv_hrtime() - g->t0) / 1000);
    g->busy = 1;
    if (rc == SAGA_OK) {
        g->backoff_ms = g->retry_ms;
        g->ops->committed(g->owner);
    } else {
        commit_failed(g, rc);
    }
    g->busy = 0;
    if (g->closing) {
        /* Closing: nothing more is submitted (what was staged meanwhile
         * had none of its effects released; recovery replays it). The
         * owner must not free the store from inside this callback. */
        if (g->ops->drained != NULL)
            g->ops->drained(g->owner);
        return;
    }
    if (rc == SAGA_OK && g->ops->pending(g->owner))
        saga__gc_schedule(g);
}

void saga__gc_done(saga__gc *g, int rc) { done_cb(g, rc); }

/* Take the staged batch and submit it; releases at once a batch of effects
 * only. Returns with g->inflight set if a batch went to the store. */
static void submit(saga__gc *g)
{
    for (int round = 0; round < g->max_rounds && g->ops->pending(g->owner);
         round++) {
        int rc = g->ops->detach(g->owner);
        if (rc == 0) {
            g->busy = 1;
            g->ops->committed(g->owner);
            g->busy = 0;
            continue;
        }
        saga_batch_writes w;
        if (rc > 0)
            rc = g->ops->writes(g->owner, &w);
        if (rc == SAGA_OK) {
            g->inflight = 1;
            g->t0 = uv_hrtime();
            rc = g->store->submit_batch(g->store, &w, done_cb, g);
            if (rc == SAGA_OK)
                return;
            g->inflight = 0;
        }
        g->busy = 1;
        commit_failed(g, rc);
        g->busy = 0;
        return;
    }
}

/* Commit rounds: a release can stage more (a local action completing at
 * once), committed in the same check callback up to max_rounds. */
static void flush_rounds(saga__gc *g)
{
    if (g->busy || g->inflight)
        return;
    if (g->async) {
        submit(g);
        if (g->inflight || !g->ops->pending(g->owner))
            stop(g);
        return;
    }
    g->busy = 1;
    int wrote = 0;
    for (int round = 0; round < g->max_rounds && g->ops->pending(g->owner);
         round++) {
        int rc = g->ops->detach != NULL ? g->ops->detach(g->owner) : 1;
        if (rc > 0) {
            uint64_t t0 = uv_hrtime();
            rc = g->ops->write(g->owner);
            g->latency_us = (int64_t)((uv_hrtime() - t0) / 1000);
            if (rc == SAGA__GC_AGAIN) {
                /* The check handle stays active: the next loop turn. */
                g->busy = 0;
                return;
            }
            if (rc == SAGA__GC_SUBMITTED) {
                /* In flight: saga__gc_done() releases it, and nothing
                 * more is committed meanwhile. */
                g->inflight = 1;
                g->t0 = t0;
                stop(g);
                g->busy = 0;
                return;
            }
            if (rc == SAGA_OK)
                /* A commit (an fsync) takes time, and one check callback
                 * may run several: refresh the loop's clock so that what
                 * the next round stamps is not stale. */
                uv_update_time(g->loop);
        }
        if (rc < 0) {
            commit_failed(g, rc);
            g->busy = 0;
            return;
        }
        g->backoff_ms = g->retry_ms;
        g->ops->committed(g->owner);
        wrote = 1;
    }
    /* Lingering, the handles stay for one more turn after a commit: what
     * its release causes at once (a published message's outbox delete)
     * joins a batch without waiting for a timer. */
    if (!g->ops->pending(g->owner) && !(g->linger && wrote))
        stop(g);
    g->busy = 0;
}

static void check_cb(uv_check_t *h) { flush_rounds(h->data); }

void saga__gc_flush(saga__gc *g) { flush_rounds(g); }

void saga__gc_stop(saga__gc *g)
{
    g->closing = 1;
    stop(g);
    uv_timer_stop(&g->retry);
}

int saga__gc_close(saga__gc *g, uv_close_cb cb, void *data)
{
    g->closing = 1;
    uv_handle_t *hs[] = {(uv_handle_t *)&g->idle, (uv_handle_t *)&g->check,
                         (uv_handle_t *)&g->retry};
    for (int i = 0; i < 3; i++) {
        hs[i]->data = data;
        uv_close(hs[i], cb);
    }
    return 3;
}

/*
 * participant.c — the service side of remote steps and choreography (see
 * include/saga/participant.h).
 *
 * The messages received are processed in one store transaction at the end
 * of the loop turn: the inbox claim, the barrier, the handler's own writes,
 * the reply (recorded in the inbox; see participant_msg.c's reply_as) and
 * any published events (in the outbox). Replies are published only after
 * that transaction commits, and a command's delivery is acked only once
 * the transport has confirmed its reply. If it fails, it is rolled back as a whole and
 * run again later, handlers included. One batch takes at most max_batch
 * messages, and none more once it has run max_batch_ms: the rest wait for
 * the next loop turn, so that one turn stays short however many messages
 * are queued and however slow the store is (timers and I/O of the same loop
 * run in between: heartbeats, an engine's silence limit).
 *
 * The barrier lives in the store's key-value space, one key per
 * (saga, step): 'A' + the first OK output (the action applied), 'F' (the
 * action answered FAIL: final, later attempts are refused), 'C' (it was
 * compensated) or 'N' (a null compensation: undo arrived first).
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "participant_int.h"

#define DEFAULT_MAX_PAYLOAD (1024u * 1024u)
#define DEFAULT_RETRY_MS 100u
#define MAX_RETRY_MS 5000u
#define DEFAULT_HANDLER_TRIES 5u
#define DEFAULT_RETENTION_MS (24ull * 3600 * 1000)
#define DEFAULT_HK_MS 60000u
#define DEFAULT_MAX_BATCH 256u
#define DEFAULT_MAX_BATCH_MS 50u
/* Outbox rows of published messages are deleted with the next batch; when
 * no batch comes (an idle service), after this delay, or at once when this
 * many wait. Left undeleted they would all be published again after a
 * crash. */
#define DONE_DELAY_MS 200u
#define DONE_BATCH 256u
/* How long saga_participant_close() waits for a commit in flight. */
#define CLOSE_WAIT_MS 2000u
/* Messages whose claims and barrier reads go in one round trip
 * (participant_pipe.c); the time budget is checked between chunks. */
#define PF_CHUNK 64u
/* ------------------------------------------------------------------------ */

static void plog_event(void *p, saga_log_level lvl, const char *id, int step,
                       const char *line)
{
    saga__plog_event(p, lvl, id, step, line);
}

void saga__plog(saga_participant *p, saga_log_level lvl, const char *id,
                int step, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlog(p->opts.log_level, lvl, id, step,
               p->opts.version >= 2 && p->opts.log_event ? plog_event : NULL, p,
               p->opts.log, p->opts.log_arg, p->opts.service, fmt, ap);
    va_end(ap);
}

/* The participant's error text (saga_participant_errmsg()); returns code. */
#define perr(p, code, ...)                                                     \
    saga__errf((p)->errmsg, sizeof(p)->errmsg, (code), __VA_ARGS__)

int64_t saga__pnow(saga_participant *p)
{
    if (p->opts.clock)
        return p->opts.clock(p->opts.clock_arg);
    return saga__wall_ms();
}

const char *saga_participant_errmsg(saga_participant *p)
{
    return p ? p->errmsg : "invalid argument";
}
void *saga_participant_store_handle(saga_participant *p)
{
    if (p == NULL)
        return NULL;
    saga_store *s = p->store;
    /* Outside a handler the application's own connection, if the store
     * has one (version 11): the batch's connection may have a commit in
     * flight. Inside, the batch's transaction. */
    if (!p->in_handler && s->version >= 11 && s->app_handle != NULL)
        return s->app_handle(s);
    return s->native_handle ? s->native_handle(s) : NULL;
}
saga_store *saga_participant_store(saga_participant *p)
{
    return p ? p->store : NULL;
}
int saga_participant_stats(saga_participant *p, saga_participant_counters *out)
{
    if (p == NULL || out == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(out, SAGA_PARTICIPANT_COUNTERS_VERSION);
    *out = p->stats;
    out->version = SAGA_PARTICIPANT_COUNTERS_VERSION;
    return SAGA_OK;
}

int saga__answer_dup(const void *out, size_t out_len, const char *error,
                     void **out_copy, char **err_copy)
{
    void *copy = NULL;
    char *err = saga__strdup(error);
    if (out_len > 0) {
        copy = saga_malloc(out_len);
        if (copy != NULL)
            memcpy(copy, out, out_len);
    }
    if ((out_len > 0 && copy == NULL) || (error != NULL && err == NULL)) {
        saga_free(copy);
        saga_free(err);
        return SAGA_ENOMEM;
    }
    *out_copy = copy;
    *err_copy = err;
    return SAGA_OK;
}

int saga_reply_set(saga_reply *r, saga_outcome outcome, const void *out,
                   size_t out_len, const char *error)
{
    if (r == NULL || (int)outcome < SAGA_OUTCOME_OK ||
        outcome > SAGA_OUTCOME_RETRY || (out == NULL && out_len > 0))
        return SAGA_EINVAL;
    if (out_len > 0 && !saga__data_is_map(out, out_len))
        return SAGA_EINVAL;
    void *copy;
    char *err;
    if (saga__answer_dup(out, out_len, error, &copy, &err) != SAGA_OK)
        return SAGA_ENOMEM;
    saga_free(r->out);
    saga_free(r->error);
    r->outcome = outcome;
    r->out = copy;
    r->out_len = out_len;
    r->error = err;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Outgoing messages                                                        */

static void schedule(saga_participant *p);
static void done_timer_cb(uv_timer_t *t);

void saga__pschedule(saga_participant *p) { schedule(p); }

static void relay_done(void *owner, const char *msg_id)
{
    saga_participant *p = owner;
    char *id = saga__strdup(msg_id);
    if (id == NULL)
        return;
    if (p->ndone == p->cdone) {
        size_t nc = p->cdone ? p->cdone * 2 : 64;
        char **nd = saga_realloc(p->done, nc * sizeof *nd);
        if (nd == NULL) {
            saga_free(id);
            return; /* the row stays and is published again: harmless */
        }
        p->done = nd;
        p->cdone = nc;
    }
    p->done[p->ndone++] = id;
    /* A busy participant deletes them with its next batch anyway; an idle
     * one would keep them forever without this. */
    if (p->ndone >= DONE_BATCH)
        schedule(p);
    else if (!p->closing && !uv_is_active((uv_handle_t *)&p->done_timer))
        uv_timer_start(&p->done_timer, done_timer_cb, DONE_DELAY_MS, 0);
}

static void relay_log(void *owner, saga_log_level lvl, const char *msg)
{
    saga__plog(owner, lvl, NULL, -1, "%s", msg);
}

static void schedule(saga_participant *p);

void saga__pappend(saga__outmsg ***tail, saga__outmsg *m)
{
    m->next = NULL;
    **tail = m;
    *tail = &m->next;
}

static void free_list(saga__outmsg **head, saga__outmsg ***tail)
{
    while (*head != NULL) {
        saga__outmsg *m = *head;
        *head = m->next;
        saga__outmsg_free(m);
    }
    *tail = head;
}

int saga__pencode(saga_participant *p, saga_envelope *env, const char *topic,
                  const char *key, saga__outmsg **out)
{
    void *buf;
    size_t len;
    int rc = saga_envelope_encode(env, &buf, &len);
    if (rc != SAGA_OK)
        return perr(p, rc, "encoding a %s failed",
                    saga_msg_kind_name(env->kind));
    *out = saga__outmsg_new(env->msg_id, topic, key, buf, len, saga__pnow(p));
    saga_free(buf);
    return *out ? SAGA_OK : SAGA_ENOMEM;
}

int saga_participant_publish(saga_participant *p, const char *topic,
                             const char *key, const char *name,
                             const void *payload, size_t len)
{
    if (p == NULL || !saga__valid_name(topic) || !saga__valid_name(name) ||
        (payload == NULL && len > 0) || len > p->opts.max_payload)
        return SAGA_EINVAL;
    if (p->closing)
        return SAGA_ECLOSED;
    saga_envelope env;
    memset(&env, 0, sizeof env);
    env.v = SAGA_ENVELOPE_VERSION;
    env.kind = SAGA_MSG_EVENT;
    /* The clock first (ms, 12 hex digits), then 20 random ones: ids of
     * events published close together sort together, so their outbox rows
     * (unique by id) and every subscriber's inbox claims go to the right
     * edge of those trees, a few leaf pages per batch, instead of one
     * random leaf page (a WAL frame) per event and tree. */
    uint64_t r = saga__splitmix64(&p->rng);
    snprintf(env.msg_id, sizeof env.msg_id, "%s.ev.%012llx%04llx%016llx",
             p->opts.service,
             (unsigned long long)((uint64_t)saga__pnow(p) & 0xffffffffffffull),
             (unsigned long long)(r >> 48),
             (unsigned long long)saga__splitmix64(&p->rng));
    snprintf(env.saga_id, sizeof env.saga_id, "%s", key && key[0] ? key : "-");
    snprintf(env.name, sizeof env.name, "%s", name);
    env.payload = payload;
    env.payload_len = len;
    saga__outmsg *m;
    int rc = saga__pencode(p, &env, topic, key, &m);
    if (rc != SAGA_OK)
        return rc;
    if (p->in_handler) {
        saga__pappend(&p->txn_ev_tail, m);
    } else {
        saga__pappend(&p->ext_tail, m);
        schedule(p);
    }
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* The batch                                                                */

static void free_items(item *it)
{
    while (it != NULL) {
        item *nx = it->next;
        saga__pdefer_unlink_item(it);
        saga_free(it->pf_reply);
        saga_free(it->own);
        saga_free(it);
        it = nx;
    }
}

/* An item is ~2.6 KB (its envelope's fixed fields): past glibc's per-thread
 * cache, so each malloc took the arena's slow path (perf, issue 8: 5.5% of
 * the checkout's worker loop in on_message's malloc). The last SPARE_MAX
 * items of committed batches are kept for the next messages. */
#define SPARE_MAX 128u

static item *new_item(saga_participant *p)
{
    item *it = p->spare;
    if (it != NULL) {
        p->spare = it->next;
        p->nspare--;
    } else {
        it = saga_malloc(sizeof *it);
        if (it == NULL)
            return NULL;
    }
    memset(it, 0, sizeof *it);
    return it;
}

/* Free @p it and the items after it, keeping some as spares. */
static void release_items(saga_participant *p, item *it)
{
    while (it != NULL && p->nspare < SPARE_MAX) {
        item *nx = it->next;
        saga__pdefer_unlink_item(it);
        saga_free(it->pf_reply);
        saga_free(it->own);
        it->pf_reply = it->own = NULL;
        it->next = p->spare;
        p->spare = it;
        p->nspare++;
        it = nx;
    }
    free_items(it);
}

static void done_timer_cb(uv_timer_t *t) { schedule(t->data); }

/* Free the messages queued at and after *@p from (a list tail mark). */
static void drop_from(saga__outmsg **from, saga__outmsg ***tail)
{
    free_list(from, tail);
}

/* A handler failed in @p it: its writes are undone (by the caller), and
 * so is what it queued and counted. */
static void undo_item(saga_participant *p, item *it, saga__outmsg **txn_mark,
                      saga__outmsg **ev_mark, saga__outmsg *rs_mark,
                      const saga_participant_counters *st)
{
    drop_from(txn_mark, &p->txn_tail);
    drop_from(ev_mark, &p->txn_ev_tail);
    while (p->resend != rs_mark) {
        saga__outmsg *m = p->resend;
        p->resend = m->next;
        saga__outmsg_free(m);
    }
    it->reply = NULL;
    p->stats = *st;
    p->stats.handler_failures++;
    if (it->dfr != NULL)
        saga__pdefer_void(p, it->dfr);
}

/* Process the received messages. With savepoints, one whose handler fails
 * is undone alone and the others go on; without, the failure is returned
 * and the caller runs the batch again without it. */
static int run_items(saga_participant *p, int sp)
{
    saga_store *s = p->store;
    int rc = SAGA_OK;
    uint64_t t0 = uv_hrtime();
    uint64_t budget = (uint64_t)p->opts.max_batch_ms * 1000000u;
    size_t fetched = 0; /* items whose reads were made ahead */
    p->nbatch = 0;
    for (item *it = p->head; it && rc == SAGA_OK; it = it->next) {
        /* The rest waits for the next loop turn (batch_committed keeps
         * it queued). Items claimed ahead are in the batch whatever the
         * time: their claims are in the transaction. */
        if (p->nbatch >= fetched &&
            (p->nbatch >= p->opts.max_batch ||
             (p->nbatch > 0 && uv_hrtime() - t0 >= budget)))
            break;
        if (p->nbatch >= fetched && saga__pb_on(p)) {
            /* The next chunk's claims and barrier reads, one round trip. */
            size_t n = p->opts.max_batch - p->nbatch;
            if (n > PF_CHUNK)
                n = PF_CHUNK;
            /* pb_end clears the marks of these items, however many the
             * read marked before it failed. */
            p->pf_upto = p->nbatch + n;
            if ((rc = saga__pb_prefetch(p, it, n, &n)) != SAGA_OK)
                break;
            fetched += n;
        }
        p->nbatch++;
        saga__outmsg **txn_mark = p->txn_tail, **ev_mark = p->txn_ev_tail;
        saga__outmsg *rs_mark = p->resend;
        saga_participant_counters st = p->stats;
        if (sp && (rc = s->savepoint(s)) != SAGA_OK)
            break;
        it->hfail = 0;
        saga__pdefer_unlink_item(it);
        rc = it->ev ? saga__pevent(p, it) : saga__pcommand(p, it);
        if (!it->hfail) {
            if (sp && rc == SAGA_OK)
                rc = s->savepoint_release(s);
            continue;
        }
        p->nhfail++;
        undo_item(p, it, txn_mark, ev_mark, rs_mark, &st);
        if (!sp)
            return rc;
        rc = s->savepoint_rollback(s);
    }
    return rc;
}

/* SAGA_OK, a store failure, or HANDLER_FAILED: a handler failed in a
 * batch run without savepoints, so the batch was rolled back to be run
 * again without it. */
#define HANDLER_FAILED (-1000)

/* Whether the batch (the first max_batch queued messages: run_items
 * takes no more) holds a message whose handler failed before (its retry,
 * or its FAIL answer). Only the batch is looked at, never the whole queue
 * (issue 8: a backlog of thousands made every batch walk them all). */
static int batch_has_retry(const saga_participant *p)
{
    size_t n = 0;
    for (const item *it = p->head; it && n < p->opts.max_batch;
         it = it->next, n++)
        if (it->tries > 0)
            return 1;
    return 0;
}

/* Per-message savepoints cost two statements per message (a round trip
 * each on a network store) and, in SQLite, a copy of every page that a
 * message touches after the savepoint. They are taken only in a batch
 * that holds the retry of a handler that failed before. Any other batch
 * runs without them: if a handler fails there, the batch is rolled back
 * and run again without that message, as with a store without savepoints
 * (the other handlers of that batch are called again, their first writes
 * undone with the rollback), and the failed message is then retried under
 * savepoints, so one that keeps failing costs the others nothing more. */
static int run_batch_in(saga_participant *p)
{
    saga_store *s = p->store;
    p->snap = p->stats;
    /* Nothing of the batch has run yet: no item in it failed, none was
     * read ahead (pb_end and park_failed look at these many). */
    p->nbatch = 0;
    p->nhfail = 0;
    int sp = s->version >= 2 && s->savepoint && s->savepoint_rollback &&
             s->savepoint_release && batch_has_retry(p);
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    /* Store version 9: reads made ahead, writes sent with the commit. */
    if ((rc = saga__pb_start(p, sp)) != SAGA_OK) {
        s->rollback(s);
        return rc;
    }
    rc = saga__pdefer_record(p);
    if (rc == SAGA_OK)
        rc = run_items(p, sp);
    if (rc != SAGA_OK && p->nhfail > 0 && !sp) {
        s->rollback(s);
        return HANDLER_FAILED;
    }
    for (saga__outmsg *m = p->ext; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id,  m->topic, m->key,
                            m->buf, m->len,   m->created_ms};
        rc = saga__poutbox_put(p, &msg);
    }
    if (rc == SAGA_OK && p->ext != NULL) {
        /* In the batch now: what is published while its commit is in
         * flight goes with the next one (batch_failed puts them back). */
        p->fl_ext = p->ext;
        p->ext = NULL;
        p->ext_tail = &p->ext;
    }
    for (saga__outmsg *m = p->txn_ev; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id,  m->topic, m->key,
                            m->buf, m->len,   m->created_ms};
        rc = saga__poutbox_put(p, &msg);
    }
    size_t ndone = p->ndone < p->opts.max_batch ? p->ndone : p->opts.max_batch;
    p->ndone_batch = ndone;
    for (size_t i = 0; i < ndone && rc == SAGA_OK; i++)
        rc = saga__poutbox_done(p, p->done[i]);
    if (rc == SAGA_OK && SAGA__BUG(SAGA__BUG_EARLY_REPLY)) {
        for (saga__outmsg *m = p->txn; m; m = m->next) {
            saga__outmsg *c = saga__outmsg_new(m->id, m->topic, m->key, m->buf,
                                               m->len, m->created_ms);
            if (c != NULL)
                saga__relay_push(p->relay, c);
        }
        saga__relay_kick(p->relay);
    }
    if (rc == SAGA_OK)
        return saga__pb_commit(p);
    s->rollback(s);
    return rc;
}

static int run_batch(saga_participant *p)
{
    int rc = run_batch_in(p);
    saga__pb_end(p);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Failed handlers: parked, tried again alone, then answered FAIL           */

static void park_cb(uv_timer_t *t);

static void arm_park(saga_participant *p)
{
    if (p->closing || p->parked == NULL)
        return;
    uint64_t now = uv_now(p->loop), first = UINT64_MAX;
    for (item *it = p->parked; it; it = it->next)
        if (it->due < first)
            first = it->due;
    uv_timer_start(&p->park_timer, park_cb, first > now ? first - now : 0, 0);
}

static void park_cb(uv_timer_t *t)
{
    saga_participant *p = t->data;
    uint64_t now = uv_now(p->loop);
    item **pp = &p->parked;
    while (*pp != NULL) {
        item *it = *pp;
        if (it->due <= now) {
            *pp = it->next;
            it->next = NULL;
            *p->tail = it;
            p->tail = &it->next;
        } else {
            pp = &it->next;
        }
    }
    arm_park(p);
    schedule(p);
}

/* Take the items whose handler failed out of the batch and park them.
 * Only the batch's first nbatch items can have failed: the walk stops
 * there (or at the last failed one), not at the end of the queue.
 * @return how many. */
static size_t park_failed(saga_participant *p)
{
    size_t n = 0, seen = 0, left = p->nhfail;
    item **pp = &p->head;
    uint32_t max = p->opts.handler_max_tries;
    p->nhfail = 0;
    while (*pp != NULL && left > 0 && seen < p->nbatch) {
        item *it = *pp;
        seen++;
        if (!it->hfail) {
            pp = &it->next;
            continue;
        }
        left--;
        *pp = it->next;
        if (*pp == NULL)
            p->tail = pp; /* it was the last queued */
        it->hfail = 0;
        it->tries++;
        uint64_t delay = p->opts.store_retry_ms;
        for (unsigned i = 1; i < it->tries && delay < MAX_RETRY_MS; i++)
            delay *= 2;
        if (delay > MAX_RETRY_MS)
            delay = MAX_RETRY_MS;
        if (!it->ev && it->tries >= max) {
            it->give_up = 1; /* answered FAIL in the next batch */
            delay = 0;
        }
        if (it->ev)
            saga__plog(p, SAGA_LOG_ERROR, it->env.saga_id, -1,
                       "handler for event '%s' on '%s' failed: %s (try %u); "
                       "again in %llu ms",
                       it->env.name, it->ev->topic, saga_err_name(it->herr_rc),
                       it->tries, (unsigned long long)delay);
        else
            saga__plog(p, SAGA_LOG_ERROR, it->env.saga_id, (int)it->env.step,
                       "handler for command '%s' failed: %s%s%s (try %u of "
                       "%u)%s",
                       it->env.name, saga_err_name(it->herr_rc),
                       it->herr[0] ? ": " : "", it->herr, it->tries, max,
                       it->give_up ? "; answering FAIL" : "");
        it->due = uv_now(p->loop) + delay;
        it->next = p->parked;
        p->parked = it;
        n++;
    }
    arm_park(p);
    return n;
}

/* The batch, as the group-commit driver (gcommit.c) runs it. */
static int batch_pending(void *owner)
{
    saga_participant *p = owner;
    return p->head != NULL || p->ext != NULL || p->ndone != 0 ||
           p->answers != NULL;
}

static int batch_write(void *owner)
{
    saga_participant *p = owner;
    int rc = run_batch(p);
    if (rc == HANDLER_FAILED) {
        /* Without savepoints: run the batch again without it. */
        p->stats = p->snap;
        p->stats.handler_failures += p->nhfail;
        saga__pdefer_rolled_back(p);
        free_list(&p->txn, &p->txn_tail);
        free_list(&p->txn_ev, &p->txn_ev_tail);
        saga__outmsg **rt = &p->resend;
        free_list(&p->resend, &rt);
        park_failed(p);
        p->rerun = 1;
        return SAGA__GC_AGAIN; /* the next loop turn */
    }
    return rc;
}

/* The events the failed batch wrote for saga_participant_publish() go
 * first into the next one. */
static void ext_back(saga_participant *p)
{
    if (p->fl_ext == NULL)
        return;
    saga__outmsg *last = p->fl_ext;
    while (last->next != NULL)
        last = last->next;
    last->next = p->ext;
    if (p->ext == NULL)
        p->ext_tail = &last->next;
    p->ext = p->fl_ext;
    p->fl_ext = NULL;
}

static void batch_failed(void *owner, int rc)
{
    saga_participant *p = owner;
    /* Nothing of it remains: handlers run again on the retry. What was
     * counted outside the batch (on receipt, by housekeeping: also while
     * its commit was in flight) stays. */
    uint64_t rejected = p->stats.rejected, unroutable = p->stats.unroutable;
    uint64_t purged = p->stats.barriers_purged;
    p->stats = p->snap;
    p->stats.rejected = rejected;
    p->stats.unroutable = unroutable;
    p->stats.barriers_purged = purged;
    p->stats.commit_failures++;
    ext_back(p);
    saga__pdefer_rolled_back(p);
    /* Only the batch's items ran (and may have failed). */
    size_t n = 0;
    for (item *it = p->head; it && n < p->nbatch; it = it->next, n++)
        it->hfail = 0;
    p->nhfail = 0;
    saga__plog(p, SAGA_LOG_ERROR, NULL, -1,
               "commit of %s failed (%s): %s; retrying in %u ms",
               p->head ? "received messages" : "the outbox", saga_err_name(rc),
               p->store->errmsg(p->store), p->gc.backoff_ms);
    free_list(&p->txn, &p->txn_tail);
    free_list(&p->txn_ev, &p->txn_ev_tail);
    saga__outmsg **rt = &p->resend;
    free_list(&p->resend, &rt);
}

static void batch_committed(void *owner)
{
    saga_participant *p = owner;
    p->stats.commits++;
    saga__pdefer_committed(p);
    /* The batch was the first nbatch items; the failed ones among them
     * are parked, the rest of the batch is a prefix of the queue. */
    size_t nb = p->nbatch - park_failed(p);
    p->nbatch = 0;
    size_t ndone = p->ndone_batch;
    p->ndone_batch = 0;
    for (size_t i = 0; i < ndone; i++)
        saga_free(p->done[i]);
    if (ndone > 0 && ndone < p->ndone)
        memmove(p->done, p->done + ndone, (p->ndone - ndone) * sizeof *p->done);
    p->ndone -= ndone;
    /* Durable: ack what was received, publish what was queued. What was
     * left out of the batch stays queued for the next loop turn, and so
     * does what arrived while its commit was in flight (part_commit_submit):
     * a batch of no message (the outbox only) acks nothing. */
    item *done = NULL;
    if (nb > 0) {
        item **cut = &p->head;
        for (size_t i = 0; i < nb; i++)
            cut = &(*cut)->next;
        done = p->head;
        p->head = *cut;
        *cut = NULL;
        if (p->head == NULL)
            p->tail = &p->head;
    }
    for (item *it = done; it; it = it->next)
        if (it->reply != NULL)
            it->reply->ack = it->d; /* acked when the reply is confirmed */
        else if (it->d != NULL)
            p->transport->ack(p->transport, it->d);
    release_items(p, done);
    /* Nothing is staged into txn, txn_ev and resend while a commit is in
     * flight (no batch runs); ext was moved aside when written. */
    saga__outmsg *lists[4] = {p->fl_ext, p->txn, p->txn_ev, p->resend};
    p->fl_ext = p->txn = p->txn_ev = p->resend = NULL;
    p->txn_tail = &p->txn;
    p->txn_ev_tail = &p->txn_ev;
    for (int l = 0; l < 4; l++)
        while (lists[l] != NULL) {
            saga__outmsg *m = lists[l];
            lists[l] = m->next;
            saga__relay_push(p->relay, m);
        }
    saga__relay_kick(p->relay);
}

static void close_asked_cb(uv_timer_t *t);

/* Closing, and the commit in flight is done (from the store's callback:
 * the rest of the close runs from a timer, as the store must not be freed
 * from inside its callback). */
static void batch_drained(void *owner)
{
    saga_participant *p = owner;
    if (!p->close_wait)
        return;
    uv_timer_start(&p->done_timer, close_asked_cb, 0, 0);
}

/* The handlers run inside the transaction (write); its commit may go out
 * on the loop (part_commit_submit: write returns SAGA__GC_SUBMITTED and
 * the store's callback answers through saga__gc_done). */
static const saga__gc_ops participant_gc_ops = {
    .pending = batch_pending,
    .write = batch_write,
    .committed = batch_committed,
    .failed = batch_failed,
    .drained = batch_drained,
};

static void schedule(saga_participant *p)
{
    if (!p->closing)
        saga__gc_schedule(&p->gc);
}

/* Whether the transport can ever deliver to @p topic (version-2 route();
 * without it every topic is taken as routable). */
static int routable(saga_participant *p, const char *topic)
{
    saga_transport *t = p->transport;
    if (t->version < 2 || t->route == NULL)
        return 1;
    return t->route(t, topic) != SAGA_ENOROUTE;
}

static void on_message(saga_transport *t, saga_delivery *d, const char *topic,
                       const char *key, const void *buf, size_t len, void *arg,
                       handler *ev)
{
    (void)key;
    saga_participant *p = arg;
    item *it = new_item(p);
    if (it == NULL) {
        /* Not acked: the transport delivers it again. */
        saga__plog(p, SAGA_LOG_ERROR, NULL, -1, "out of memory receiving");
        return;
    }
    const char *why = NULL;
    int rc = saga_envelope_decode(&it->env, buf, len, p->opts.max_payload,
                                  &why);
    saga_msg_kind want = ev ? SAGA_MSG_EVENT : SAGA_MSG_COMMAND;
    if (rc != SAGA_OK || it->env.kind != want ||
        (ev && ev->name && strcmp(ev->name, it->env.name) != 0)) {
        if (rc != SAGA_OK || it->env.kind != want) {
            p->stats.rejected++;
            saga__plog(p, SAGA_LOG_WARN, NULL, -1,
                       "rejected a %zu-byte message on '%s': %s", len, topic,
                       rc != SAGA_OK ? (why ? why : saga_err_name(rc))
                                     : "unexpected kind");
        }
        saga_free(it);
        t->ack(t, d); /* nothing to do with it, ever */
        return;
    }
    if (!ev && it->env.reply_to[0] && !routable(p, it->env.reply_to)) {
        /* Its reply could never leave: refuse it now, before it has any
         * effect, instead of letting the reply wait in the outbox. */
        p->stats.unroutable++;
        saga__plog(p, SAGA_LOG_WARN, it->env.saga_id, (int)it->env.step,
                   "refused command %s: no route to its reply_to '%s'",
                   it->env.msg_id, it->env.reply_to);
        saga_free(it);
        t->ack(t, d);
        return;
    }
    it->d = d;
    it->raw = buf;
    it->raw_len = len;
    it->ev = ev;
    *p->tail = it;
    p->tail = &it->next;
    schedule(p);
}

static void on_command(saga_transport *t, saga_delivery *d, const char *topic,
                       const char *key, const void *buf, size_t len, void *arg)
{
    on_message(t, d, topic, key, buf, len, arg, NULL);
}

static void on_event(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    handler *h = arg;
    on_message(t, d, topic, key, buf, len, h->ev_owner, h);
}

static void hk_timer_cb(uv_timer_t *t)
{
    saga_participant *p = t->data;
    if (p->gc.inflight) {
        /* Its transactions would wait for the commit in flight: a little
         * later, then at the interval again. */
        uv_timer_start(&p->hk_timer, hk_timer_cb, 50,
                       p->opts.housekeeping_interval_ms);
        return;
    }
    saga_participant_housekeep(p);
}

/* ------------------------------------------------------------------------ */
/* Life-cycle                                                               */

/* The size of options struct version @p v (1 to 3). */
static size_t opts_size(unsigned int v)
{
    if (v >= 3)
        return sizeof(saga_participant_options);
    if (v == 2)
        return offsetof(saga_participant_options, max_batch);
    return offsetof(saga_participant_options, handler_max_tries);
}

int saga_participant_options_init(saga_participant_options *opts,
                                  unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_PARTICIPANT_OPTIONS_VERSION);
    memset(opts, 0, opts_size(version));
    opts->version = version;
    return SAGA_OK;
}

int saga_participant_new(saga_participant **out, struct uv_loop_s *loop,
                         saga_store *store, saga_transport *transport,
                         const saga_participant_options *opts)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (loop == NULL || store == NULL || transport == NULL || opts == NULL ||
        !saga__valid_name(opts->service))
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(opts, SAGA_PARTICIPANT_OPTIONS_VERSION);
    SAGA__CHECK_VERSION(store, SAGA_STORE_VERSION);
    SAGA__CHECK_VERSION(transport, SAGA_TRANSPORT_VERSION);
    int rc = saga__plugins_check(store, transport, opts->log, opts->log_arg);
    if (rc != SAGA_OK)
        return rc;
    saga_participant *p = saga_malloc(sizeof *p);
    if (p == NULL)
        return SAGA_ENOMEM;
    memset(p, 0, sizeof *p);
    /* An older caller's struct ends before the newer version's fields. */
    memcpy(&p->opts, opts, opts_size(opts->version));
    p->opts.service = saga__strdup(opts->service);
    if (p->opts.service == NULL) {
        saga_free(p);
        return SAGA_ENOMEM;
    }
    if (p->opts.log_level == 0)
        p->opts.log_level = SAGA_LOG_WARN;
    if (p->opts.max_payload == 0)
        p->opts.max_payload = DEFAULT_MAX_PAYLOAD;
    if (p->opts.store_retry_ms == 0)
        p->opts.store_retry_ms = DEFAULT_RETRY_MS;
    if (p->opts.handler_max_tries == 0)
        p->opts.handler_max_tries = DEFAULT_HANDLER_TRIES;
    if (p->opts.retention_ms == 0)
        p->opts.retention_ms = DEFAULT_RETENTION_MS;
    if (p->opts.housekeeping_interval_ms == 0)
        p->opts.housekeeping_interval_ms = DEFAULT_HK_MS;
    if (p->opts.max_batch == 0)
        p->opts.max_batch = DEFAULT_MAX_BATCH;
    if (p->opts.max_batch_ms == 0)
        p->opts.max_batch_ms = DEFAULT_MAX_BATCH_MS;
    p->loop = loop;
    p->store = store;
    p->transport = transport;
    p->tail = &p->head;
    p->ext_tail = &p->ext;
    p->txn_tail = &p->txn;
    p->txn_ev_tail = &p->txn_ev;
    p->answers_tail = &p->answers;
    p->rng = saga__os_seed();
    if (saga__relay_new(&p->relay, loop, transport, p, relay_done, relay_log) !=
        SAGA_OK) {
        saga_free((char *)p->opts.service);
        saga_free(p);
        return SAGA_ENOMEM;
    }
    saga__gc_init(&p->gc, loop, store, &participant_gc_ops, p,
                  p->opts.store_retry_ms, MAX_RETRY_MS, 1);
    /* Store version 11: the batch's commit goes out on this loop (the
     * store watches its socket there); the application's SQL outside
     * handlers has a connection of its own (app_handle). */
    p->async = store->version >= 11 && store->part_read != NULL &&
               store->part_commit != NULL &&
               store->part_commit_submit != NULL && store->app_handle != NULL &&
               store->attach != NULL && store->attach(store, loop) == SAGA_OK;
    p->gc.linger = 1;
    uv_timer_init(loop, &p->done_timer);
    uv_timer_init(loop, &p->park_timer);
    uv_timer_init(loop, &p->hk_timer);
    /* Housekeeping never needs to keep the loop alive. */
    uv_unref((uv_handle_t *)&p->hk_timer);
    /* Deleting outbox rows never needs to keep the loop alive. */
    uv_unref((uv_handle_t *)&p->done_timer);
    p->done_timer.data = p;
    p->park_timer.data = p->hk_timer.data = p;
    *out = p;
    return SAGA_OK;
}

static int add_handler(saga_participant *p, const char *name, const char *topic,
                       const char *group, saga_command_fn cmd, saga_event_fn ev,
                       void *arg)
{
    handler *h = saga_malloc(sizeof *h);
    if (h == NULL)
        return SAGA_ENOMEM;
    memset(h, 0, sizeof *h);
    h->name = saga__strdup(name);
    h->topic = saga__strdup(topic);
    h->group = saga__strdup(group);
    if ((name && !h->name) || (topic && !h->topic) || (group && !h->group)) {
        saga_free(h->name);
        saga_free(h->topic);
        saga_free(h->group);
        saga_free(h);
        return SAGA_ENOMEM;
    }
    h->cmd = cmd;
    h->ev = ev;
    h->arg = arg;
    h->ev_owner = p;
    h->next = p->handlers;
    p->handlers = h;
    return SAGA_OK;
}

int saga_participant_on_command(saga_participant *p, const char *name,
                                saga_command_fn fn, void *arg)
{
    if (p == NULL || !saga__valid_name(name) || fn == NULL)
        return SAGA_EINVAL;
    if (p->started)
        return SAGA_EBUSY;
    if (saga__pfind_cmd(p, name) != NULL)
        return SAGA_EDUP;
    return add_handler(p, name, NULL, NULL, fn, NULL, arg);
}

int saga_participant_on_event(saga_participant *p, const char *topic,
                              const char *group, const char *name,
                              saga_event_fn fn, void *arg)
{
    if (p == NULL || !saga__valid_name(topic) || fn == NULL ||
        (group && !saga__valid_name(group)) ||
        (name && !saga__valid_name(name)))
        return SAGA_EINVAL;
    if (p->started)
        return SAGA_EBUSY;
    const char *g = group ? group : p->opts.service;
    for (handler *h = p->handlers; h; h = h->next)
        if (h->ev && strcmp(h->topic, topic) == 0 && strcmp(h->group, g) == 0)
            return SAGA_EDUP;
    return add_handler(p, name, topic, g, NULL, fn, arg);
}

int saga_participant_start(saga_participant *p)
{
    if (p == NULL)
        return SAGA_EINVAL;
    if (p->started || p->closing)
        return SAGA_EBUSY;
    saga_transport *t = p->transport;
    int rc = t->subscribe(t, p->opts.service, p->opts.service, on_command, p);
    for (handler *h = p->handlers; h && rc == SAGA_OK; h = h->next)
        if (h->ev)
            rc = t->subscribe(t, h->topic, h->group, on_event, h);
    if (rc != SAGA_OK)
        return perr(p, SAGA_ETRANSPORT, "subscribe: %s", t->errmsg(t));
    rc = saga__relay_recover(p->relay, p->store);
    if (rc != SAGA_OK)
        return perr(p, SAGA_ESTORE, "outbox recovery: %s",
                    p->store->errmsg(p->store));
    rc = saga__pdefer_redrive(p);
    if (rc != SAGA_OK)
        return perr(p, rc == SAGA_ENOMEM ? rc : SAGA_ESTORE,
                    "pending commands: %s", p->store->errmsg(p->store));
    uv_timer_start(&p->hk_timer, hk_timer_cb, p->opts.housekeeping_interval_ms,
                   p->opts.housekeeping_interval_ms);
    p->started = 1;
    return SAGA_OK;
}

static void destroy(saga_participant *p)
{
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    while (p->handlers != NULL) {
        handler *h = p->handlers;
        p->handlers = h->next;
        saga_free(h->name);
        saga_free(h->topic);
        saga_free(h->group);
        saga_free(h);
    }
    free_items(p->head); /* (close_now freed them already) */
    free_items(p->spare);
    saga__pdefer_detach(p);
    free_list(&p->ext, &p->ext_tail);
    saga__outmsg **ft = &p->fl_ext;
    free_list(&p->fl_ext, &ft);
    free_list(&p->txn, &p->txn_tail);
    free_list(&p->txn_ev, &p->txn_ev_tail);
    saga__outmsg **rt = &p->resend;
    free_list(&p->resend, &rt);
    for (size_t i = 0; i < p->ndone; i++)
        saga_free(p->done[i]);
    saga_free(p->done);
    saga_store_free(p->store);
    saga_free((char *)p->opts.service);
    saga_free(p);
    if (cb)
        cb(arg);
}

static void handle_closed(uv_handle_t *h)
{
    saga_participant *p = h->data;
    if (--p->nclosing == 0)
        destroy(p);
}

static void close_now(saga_participant *p);

static void close_asked_cb(uv_timer_t *t) { close_now(t->data); }

/* The commit in flight was not answered in time: close without it. */
static void close_wait_cb(uv_timer_t *t)
{
    saga_participant *p = t->data;
    p->close_gave_up = 1;
    close_now(p);
}

void saga_participant_close(saga_participant *p, void (*cb)(void *arg),
                            void *arg)
{
    if (p == NULL || p->closing || p->close_asked)
        return;
    p->close_asked = 1;
    p->close_cb = cb;
    p->close_arg = arg;
    if (p->in_handler) {
        /* From inside a handler: the batch that runs it still walks its
         * items and holds the transaction. Close on the next loop turn,
         * once that batch is done; until then every call answers as
         * closed (a later handler's deferred reply too: the command is
         * re-driven at the next start). */
        p->closing = 1;
        uv_ref((uv_handle_t *)&p->done_timer);
        uv_timer_start(&p->done_timer, close_asked_cb, 0, 0);
        return;
    }
    close_now(p);
}

static void close_now(saga_participant *p)
{
    if (p->gc.inflight && !p->close_gave_up) {
        /* A commit is in flight on the loop (part_commit_submit): its
         * answer releases the batch first (batch_drained then closes), or
         * after CLOSE_WAIT_MS the close goes on without it: the store
         * drops it unanswered, its deliveries stay unacked and come again
         * (the inbox then answers them from what committed). */
        p->closing = 1;
        p->close_wait = 1;
        saga__gc_stop(&p->gc);
        uv_ref((uv_handle_t *)&p->done_timer);
        uv_timer_start(&p->done_timer, close_wait_cb, CLOSE_WAIT_MS, 0);
        return;
    }
    p->close_wait = 0;
    p->closing = 1;
    /* Commit what is pending if the store lets us (synchronously: closing,
     * the participant waits for each commit); otherwise the deliveries
     * stay unacked and come again. */
    for (int i = 0; i < 64 && !p->gc.inflight; i++) {
        if (p->head == NULL && p->ext == NULL && !p->ndone && !p->answers)
            break;
        uint64_t commits = p->stats.commits;
        p->rerun = 0;
        saga__gc_flush(&p->gc);
        /* Again after a commit (a batch takes max_batch at most) or a
         * rerun without a failed handler; not after a store failure. */
        if (!p->rerun && p->stats.commits == commits)
            break;
    }
    p->closing = 1;
    saga__relay_close(p->relay);
    /* Unacked deliveries belong to the transport, which frees them. */
    free_items(p->head);
    p->head = NULL;
    p->tail = &p->head;
    free_items(p->parked);
    p->parked = NULL;
    saga_transport_free(p->transport);
    p->nclosing = 3;
    uv_close((uv_handle_t *)&p->park_timer, handle_closed);
    uv_close((uv_handle_t *)&p->hk_timer, handle_closed);
    uv_close((uv_handle_t *)&p->done_timer, handle_closed);
    saga__gc_stop(&p->gc);
    p->nclosing += saga__gc_close(&p->gc, handle_closed, p);
}

static void free_done(void *arg) { *(int *)arg = 1; }

void saga_participant_free(saga_participant *p)
{
    if (p == NULL || p->closing)
        return;
    uv_loop_t *loop = p->loop;
    int done = 0;
    saga_participant_close(p, free_done, &done);
    while (!done)
        if (uv_run(loop, UV_RUN_ONCE) == 0 && !done)
            break; /* nothing left to run: cannot happen, but never spin */
}

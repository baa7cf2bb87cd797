/*
 * participant.c — the service side of remote steps and choreography (see
 * include/saga/participant.h).
 *
 * Every message received in a loop turn is processed in one store
 * transaction at the end of the turn: the inbox claim, the barrier, the
 * handler's own writes, the reply (recorded in the inbox and queued in the
 * outbox) and any published events. Deliveries are acked, and replies
 * published, only after that transaction commits. If it fails, it is rolled
 * back as a whole and run again later, handlers included.
 *
 * The barrier lives in the store's key-value space, one key per
 * (saga, step): 'A' + the first OK output (the action applied), 'C' (it was
 * compensated) or 'N' (a null compensation: undo arrived first).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "internal.h"
#include "relay.h"
#include "saga/codec.h"
#include "saga/participant.h"

#define DEFAULT_MAX_PAYLOAD (1024u * 1024u)
#define DEFAULT_RETRY_MS 100u
#define MAX_RETRY_MS 5000u
/* Outbox rows of published messages are deleted with the next batch; when
 * no batch comes (an idle service), after this delay, or at once when this
 * many wait. Left undeleted they would all be published again after a
 * crash. */
#define DONE_DELAY_MS 200u
#define DONE_BATCH 256u

typedef struct handler {
    char *name;  /* command or event name; NULL: every event */
    char *topic; /* events: the topic */
    char *group;
    saga_command_fn cmd;
    saga_event_fn ev;
    void *arg;
    void *ev_owner; /* events: the participant */
    struct handler *next;
} handler;

/* A received message waiting for the end of the loop turn. */
typedef struct item {
    saga_delivery *d;
    saga_envelope env; /* payload borrowed from the delivery */
    handler *ev;       /* set for an event subscription */
    struct item *next;
} item;

struct saga_reply {
    saga_outcome outcome;
    void *out;
    size_t out_len;
    char *error;
};

struct saga_participant {
    uv_loop_t *loop;
    saga_store *store;
    saga_transport *transport;
    saga_participant_options opts;
    saga__relay *relay;
    handler *handlers;
    item *head, **tail;          /* received, not yet committed */
    saga__outmsg *ext, **ext_tail; /* published outside a handler */
    saga__outmsg *txn, **txn_tail; /* replies written this batch */
    saga__outmsg *txn_ev, **txn_ev_tail; /* events from handlers */
    saga__outmsg *resend;        /* recorded replies of duplicates */
    char **done;
    size_t ndone, cdone;
    int in_handler, started, closing, nclosing;
    uv_idle_t idle;
    uv_check_t check;
    uv_timer_t retry;
    uv_timer_t done_timer; /* commits outbox deletes when idle */
    uint32_t backoff_ms;
    uint64_t rng;
    saga_participant_stats stats;
    void (*close_cb)(void *);
    void *close_arg;
    char errmsg[512];
};

/* ------------------------------------------------------------------------ */

static void plog(saga_participant *p, saga_log_level lvl, const char *id,
                 int step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void plog(saga_participant *p, saga_log_level lvl, const char *id,
                 int step, const char *fmt, ...)
{
    if (lvl < p->opts.log_level)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (p->opts.log != NULL)
        p->opts.log(lvl, id, step, buf, p->opts.log_arg);
    else
        fprintf(stderr, "libsaga participant %s: %s\n", p->opts.service, buf);
}

static int perr(saga_participant *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int perr(saga_participant *p, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

static int64_t pnow(saga_participant *p)
{
    if (p->opts.clock)
        return p->opts.clock(p->opts.clock_arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t prand(saga_participant *p)
{
    uint64_t z = (p->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

const char *saga_participant_errmsg(saga_participant *p)
{
    return p ? p->errmsg : "invalid argument";
}
void *saga_participant_store_handle(saga_participant *p)
{
    if (p == NULL || p->store->native_handle == NULL)
        return NULL;
    return p->store->native_handle(p->store);
}
saga_store *saga_participant_store(saga_participant *p)
{
    return p ? p->store : NULL;
}
int saga_participant_stats_get(saga_participant *p,
                               saga_participant_stats *out)
{
    if (p == NULL || out == NULL)
        return SAGA_EINVAL;
    *out = p->stats;
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
    plog(owner, lvl, NULL, -1, "%s", msg);
}

static void schedule(saga_participant *p);

static void append(saga__outmsg ***tail, saga__outmsg *m)
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

static int encode_msg(saga_participant *p, saga_envelope *env,
                      const char *topic, const char *key, saga__outmsg **out)
{
    void *buf;
    size_t len;
    int rc = saga_envelope_encode(env, &buf, &len);
    if (rc != SAGA_OK)
        return perr(p, rc, "encoding a %s failed",
                    saga_msg_kind_name(env->kind));
    *out = saga__outmsg_new(env->msg_id, topic, key, buf, len, pnow(p));
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
    snprintf(env.msg_id, sizeof env.msg_id, "%s.ev.%016llx%016llx",
             p->opts.service, (unsigned long long)prand(p),
             (unsigned long long)prand(p));
    snprintf(env.saga_id, sizeof env.saga_id, "%s",
             key && key[0] ? key : "-");
    snprintf(env.name, sizeof env.name, "%s", name);
    env.payload = payload;
    env.payload_len = len;
    saga__outmsg *m;
    int rc = encode_msg(p, &env, topic, key, &m);
    if (rc != SAGA_OK)
        return rc;
    if (p->in_handler) {
        append(&p->txn_ev_tail, m);
    } else {
        append(&p->ext_tail, m);
        schedule(p);
    }
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Processing one message inside the batch transaction                     */

typedef struct blob {
    void *p;
    size_t n;
    int found;
    int oom;
} blob;

static void blob_cb(const void *buf, size_t len, void *arg)
{
    blob *b = arg;
    b->found = 1;
    b->p = saga_malloc(len ? len : 1);
    if (b->p == NULL) {
        b->oom = 1;
        return;
    }
    if (len)
        memcpy(b->p, buf, len);
    b->n = len;
}

static handler *find_cmd(saga_participant *p, const char *name)
{
    for (handler *h = p->handlers; h; h = h->next)
        if (h->cmd != NULL && strcmp(h->name, name) == 0)
            return h;
    return NULL;
}

/* Build, record and queue the reply to command @p env. */
static int reply(saga_participant *p, const saga_envelope *env,
                 saga_outcome oc, const void *out, size_t out_len,
                 const char *error)
{
    saga_store *s = p->store;
    saga_envelope r;
    memset(&r, 0, sizeof r);
    r.v = SAGA_ENVELOPE_VERSION;
    r.kind = SAGA_MSG_REPLY;
    r.step = env->step;
    r.attempt = env->attempt;
    r.comp = env->comp;
    r.outcome = oc;
    snprintf(r.msg_id, sizeof r.msg_id, "%.250s.r", env->msg_id);
    memcpy(r.saga_id, env->saga_id, sizeof r.saga_id);
    memcpy(r.name, env->name, sizeof r.name);
    memcpy(r.trace, env->trace, sizeof r.trace);
    if (error != NULL)
        snprintf(r.error, sizeof r.error, "%s", error);
    r.payload = out;
    r.payload_len = out_len;
    saga__outmsg *m;
    int rc = encode_msg(p, &r, env->reply_to, env->saga_id, &m);
    if (rc != SAGA_OK)
        return rc;
    rc = s->inbox_reply(s, env->msg_id, m->buf, m->len);
    saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                        m->created_ms};
    if (rc == SAGA_OK)
        rc = s->outbox_put(s, &msg);
    if (rc == SAGA_EDUP)
        rc = SAGA_OK; /* the same reply queued before: fine */
    if (rc != SAGA_OK) {
        saga__outmsg_free(m);
        return rc;
    }
    append(&p->txn_tail, m);
    return SAGA_OK;
}

static int run_handler(saga_participant *p, handler *h, const saga_envelope *env,
                       saga_reply *rep)
{
    saga_command c = {env->saga_id, env->name, env->step, env->attempt,
                      env->comp, env->msg_id, env->payload,
                      env->payload_len};
    p->in_handler = 1;
    int rc = h->cmd(p, &c, rep, h->arg);
    p->in_handler = 0;
    return rc;
}

static int process_command(saga_participant *p, item *it)
{
    saga_store *s = p->store;
    saga_envelope *env = &it->env;
    blob rec = {0};
    int rc = s->inbox_claim(s, env->msg_id, pnow(p), blob_cb, &rec);
    if (rc == SAGA_EDUP) {
        /* Seen before: answer again with the recorded reply. */
        p->stats.duplicates++;
        if (rec.found && rec.n > 0 && env->reply_to[0]) {
            char id[SAGA_NAME_MAX + 8];
            snprintf(id, sizeof id, "%.250s.r", env->msg_id);
            saga__outmsg *m = saga__outmsg_new(id, env->reply_to,
                                               env->saga_id, rec.p, rec.n, 0);
            if (m != NULL) {
                m->next = p->resend;
                p->resend = m;
            }
        }
        saga_free(rec.p);
        return SAGA_OK;
    }
    saga_free(rec.p);
    if (rc != SAGA_OK)
        return rc;
    p->stats.commands++;
    if (env->reply_to[0] == '\0') {
        plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
             "command %s has no reply_to; dropped", env->msg_id);
        return SAGA_OK;
    }
    handler *h = find_cmd(p, env->name);
    if (h == NULL) {
        plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
             "no handler for command '%s'", env->name);
        return reply(p, env, SAGA_OUTCOME_FAIL, NULL, 0, "unknown command");
    }
    char key[SAGA_NAME_MAX + 32];
    snprintf(key, sizeof key, "b/%s/%u", env->saga_id, env->step);
    blob bar = {0};
    rc = s->kv_get(s, key, blob_cb, &bar);
    if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
        return rc;
    if (bar.oom)
        return SAGA_ENOMEM;
    char state = bar.found && bar.n > 0 ? ((char *)bar.p)[0] : 0;
    saga_reply rep = {SAGA_OUTCOME_OK, NULL, 0, NULL};
    if (!env->comp) {
        if (state == 'C' || state == 'N') {
            /* A hanging action: its compensation came first. */
            p->stats.hanging_refused++;
            plog(p, SAGA_LOG_INFO, env->saga_id, (int)env->step,
                 "refused a hanging action (already %s)",
                 state == 'N' ? "null-compensated" : "compensated");
            rc = reply(p, env, SAGA_OUTCOME_FAIL, NULL, 0,
                       "refused: the step was already compensated");
        } else if (state == 'A') {
            /* A retried action: the first result, not a second effect. */
            p->stats.retried_actions++;
            rc = reply(p, env, SAGA_OUTCOME_OK, (char *)bar.p + 1, bar.n - 1,
                       NULL);
        } else {
            rc = run_handler(p, h, env, &rep);
            if (rc == SAGA_OK && rep.outcome == SAGA_OUTCOME_OK) {
                /* Record the first result after the marker. */
                char *v = saga_malloc(rep.out_len + 1);
                rc = v ? SAGA_OK : SAGA_ENOMEM;
                if (v != NULL) {
                    v[0] = 'A';
                    if (rep.out_len)
                        memcpy(v + 1, rep.out, rep.out_len);
                    rc = s->kv_put(s, key, v, rep.out_len + 1);
                    saga_free(v);
                }
            }
            if (rc == SAGA_OK)
                rc = reply(p, env, rep.outcome, rep.out, rep.out_len,
                           rep.error);
        }
    } else {
        if (state == 'A') {
            rc = run_handler(p, h, env, &rep);
            if (rc == SAGA_OK && rep.outcome == SAGA_OUTCOME_OK)
                rc = s->kv_put(s, key, "C", 1);
            if (rc == SAGA_OK)
                rc = reply(p, env, rep.outcome, NULL, 0, rep.error);
        } else if (state == 'C' || state == 'N') {
            rc = reply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        } else {
            /* Undo of an action that never applied: record it, so that a
             * late action is refused, and do nothing else. */
            p->stats.null_compensations++;
            rc = s->kv_put(s, key, "N", 1);
            if (rc == SAGA_OK)
                rc = reply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        }
    }
    saga_free(bar.p);
    saga_free(rep.out);
    saga_free(rep.error);
    return rc;
}

static int process_event(saga_participant *p, item *it)
{
    saga_store *s = p->store;
    /* One claim per subscription: two subscriptions may both want it. */
    char claim[SAGA_NAME_MAX * 3 + 8];
    snprintf(claim, sizeof claim, "%s@%s/%s", it->env.msg_id, it->ev->topic,
             it->ev->group);
    int rc = s->inbox_claim(s, claim, pnow(p), NULL, NULL);
    if (rc == SAGA_EDUP) {
        p->stats.duplicates++;
        return SAGA_OK;
    }
    if (rc != SAGA_OK)
        return rc;
    p->stats.events++;
    saga_command c = {it->env.saga_id, it->env.name, 0, 0, 0,
                      it->env.msg_id, it->env.payload, it->env.payload_len};
    p->in_handler = 1;
    rc = it->ev->ev(p, &c, it->ev->arg);
    p->in_handler = 0;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The batch                                                                */

static void free_items(item *it)
{
    while (it != NULL) {
        item *nx = it->next;
        saga_free(it);
        it = nx;
    }
}

static void retry_cb(uv_timer_t *t) { schedule(t->data); }
static void done_timer_cb(uv_timer_t *t) { schedule(t->data); }
static void idle_cb(uv_idle_t *h) { (void)h; }

static int run_batch(saga_participant *p)
{
    saga_store *s = p->store;
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    for (item *it = p->head; it && rc == SAGA_OK; it = it->next)
        rc = it->ev ? process_event(p, it) : process_command(p, it);
    for (saga__outmsg *m = p->ext; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                            m->created_ms};
        rc = s->outbox_put(s, &msg);
    }
    for (saga__outmsg *m = p->txn_ev; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                            m->created_ms};
        rc = s->outbox_put(s, &msg);
    }
    size_t ndone = p->ndone;
    for (size_t i = 0; i < ndone && rc == SAGA_OK; i++)
        rc = s->outbox_done(s, p->done[i]);
    if (rc == SAGA_OK)
        return s->commit(s);
    s->rollback(s);
    return rc;
}

static void check_cb(uv_check_t *h)
{
    saga_participant *p = h->data;
    if (p->head == NULL && p->ext == NULL && p->ndone == 0) {
        uv_idle_stop(&p->idle);
        uv_check_stop(&p->check);
        return;
    }
    int rc = run_batch(p);
    if (rc != SAGA_OK) {
        /* Nothing of it remains: handlers run again on the retry. */
        p->stats.commit_failures++;
        plog(p, SAGA_LOG_ERROR, NULL, -1,
             "commit of %s failed (%s): %s; retrying in %u ms",
             p->head ? "received messages" : "the outbox",
             saga_err_name(rc), p->store->errmsg(p->store), p->backoff_ms);
        free_list(&p->txn, &p->txn_tail);
        free_list(&p->txn_ev, &p->txn_ev_tail);
        saga__outmsg **rt = &p->resend;
        free_list(&p->resend, &rt);
        uv_idle_stop(&p->idle);
        uv_check_stop(&p->check);
        uv_timer_start(&p->retry, retry_cb, p->backoff_ms, 0);
        p->backoff_ms = p->backoff_ms * 2 > MAX_RETRY_MS ? MAX_RETRY_MS
                                                          : p->backoff_ms * 2;
        return;
    }
    p->stats.commits++;
    p->backoff_ms = p->opts.store_retry_ms;
    for (size_t i = 0; i < p->ndone; i++)
        saga_free(p->done[i]);
    p->ndone = 0;
    /* Durable: ack what was received, publish what was queued. */
    item *done = p->head;
    p->head = NULL;
    p->tail = &p->head;
    for (item *it = done; it; it = it->next)
        p->transport->ack(p->transport, it->d);
    free_items(done);
    saga__outmsg *lists[4] = {p->ext, p->txn, p->txn_ev, p->resend};
    p->ext = p->txn = p->txn_ev = p->resend = NULL;
    p->ext_tail = &p->ext;
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

static void schedule(saga_participant *p)
{
    if (p->closing || uv_is_active((uv_handle_t *)&p->check) ||
        uv_is_active((uv_handle_t *)&p->retry))
        return;
    uv_idle_start(&p->idle, idle_cb);
    uv_check_start(&p->check, check_cb);
}

static void on_message(saga_transport *t, saga_delivery *d, const char *topic,
                       const char *key, const void *buf, size_t len,
                       void *arg, handler *ev)
{
    (void)key;
    saga_participant *p = arg;
    item *it = saga_malloc(sizeof *it);
    if (it == NULL) {
        /* Not acked: the transport delivers it again. */
        plog(p, SAGA_LOG_ERROR, NULL, -1, "out of memory receiving");
        return;
    }
    memset(it, 0, sizeof *it);
    const char *why = NULL;
    int rc = saga_envelope_decode(&it->env, buf, len, p->opts.max_payload,
                                  &why);
    saga_msg_kind want = ev ? SAGA_MSG_EVENT : SAGA_MSG_COMMAND;
    if (rc != SAGA_OK || it->env.kind != want ||
        (ev && ev->name && strcmp(ev->name, it->env.name) != 0)) {
        if (rc != SAGA_OK || it->env.kind != want) {
            p->stats.rejected++;
            plog(p, SAGA_LOG_WARN, NULL, -1,
                 "rejected a %zu-byte message on '%s': %s", len, topic,
                 rc != SAGA_OK ? (why ? why : saga_err_name(rc))
                               : "unexpected kind");
        }
        saga_free(it);
        t->ack(t, d); /* nothing to do with it, ever */
        return;
    }
    it->d = d;
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

/* ------------------------------------------------------------------------ */
/* Life-cycle                                                               */

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
    if (opts->version == 0 || opts->version > SAGA_PARTICIPANT_OPTIONS_VERSION ||
        store->version == 0 || store->version > SAGA_STORE_VERSION ||
        transport->version == 0 || transport->version > SAGA_TRANSPORT_VERSION)
        return SAGA_EVERSION;
    saga_participant *p = saga_malloc(sizeof *p);
    if (p == NULL)
        return SAGA_ENOMEM;
    memset(p, 0, sizeof *p);
    p->opts = *opts;
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
    p->backoff_ms = p->opts.store_retry_ms;
    p->loop = loop;
    p->store = store;
    p->transport = transport;
    p->tail = &p->head;
    p->ext_tail = &p->ext;
    p->txn_tail = &p->txn;
    p->txn_ev_tail = &p->txn_ev;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &p->rng, sizeof p->rng) != (ssize_t)sizeof p->rng)
        p->rng = (uint64_t)pnow(p) ^ ((uint64_t)getpid() << 32);
    if (fd >= 0)
        close(fd);
    if (saga__relay_new(&p->relay, loop, transport, p, relay_done,
                        relay_log) != SAGA_OK) {
        saga_free((char *)p->opts.service);
        saga_free(p);
        return SAGA_ENOMEM;
    }
    uv_idle_init(loop, &p->idle);
    uv_check_init(loop, &p->check);
    uv_timer_init(loop, &p->retry);
    uv_timer_init(loop, &p->done_timer);
    /* Deleting outbox rows never needs to keep the loop alive. */
    uv_unref((uv_handle_t *)&p->done_timer);
    p->idle.data = p->check.data = p->retry.data = p->done_timer.data = p;
    *out = p;
    return SAGA_OK;
}

static int add_handler(saga_participant *p, const char *name,
                       const char *topic, const char *group,
                       saga_command_fn cmd, saga_event_fn ev, void *arg)
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
    if (find_cmd(p, name) != NULL)
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
    free_items(p->head);
    free_list(&p->ext, &p->ext_tail);
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

void saga_participant_close(saga_participant *p, void (*cb)(void *arg),
                            void *arg)
{
    if (p == NULL || p->closing)
        return;
    /* Commit what is pending if the store lets us; otherwise the
     * deliveries stay unacked and come again. */
    if (p->head != NULL || p->ext != NULL || p->ndone)
        check_cb(&p->check);
    p->closing = 1;
    p->close_cb = cb;
    p->close_arg = arg;
    saga__relay_close(p->relay);
    /* Unacked deliveries belong to the transport, which frees them. */
    free_items(p->head);
    p->head = NULL;
    p->tail = &p->head;
    saga_transport_free(p->transport);
    p->nclosing = 4;
    uv_close((uv_handle_t *)&p->idle, handle_closed);
    uv_close((uv_handle_t *)&p->check, handle_closed);
    uv_close((uv_handle_t *)&p->retry, handle_closed);
    uv_close((uv_handle_t *)&p->done_timer, handle_closed);
}

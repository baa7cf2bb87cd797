/*
 * relay.c — publishes committed outbox messages (see relay.h).
 *
 * Messages are queued per destination (topic) and published in order
 * within it; destinations never wait for each other. A destination whose
 * send is refused (SAGA_EFULL, or a transient error) or whose publish fails
 * later backs off on its own timer while the others keep flowing. A message
 * that can never be delivered, because the transport knows no such
 * destination (route() or send() says SAGA_ENOROUTE) or refuses the message
 * itself (SAGA_EINVAL: too large, from send() or from its sent_cb), is
 * taken out at once: its outbox row is
 * deleted and the owner is told why (the engine fails the step).
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "relay.h"

#define RETRY_MIN_MS 10u
#define RETRY_MAX_MS 2000u

/* The queue of one destination. It exists while it holds messages or is
 * backing off, so hostile or one-off topics do not accumulate. */
typedef struct rdest {
    struct rdest *next;
    char *topic;
    saga__outmsg *head, **tail;
    size_t queued;
    uint64_t retry_at; /* loop time before which nothing is sent; 0: now */
    uint32_t backoff_ms;
    int noroute; /* route() said SAGA_ENOROUTE: fail what comes */
} rdest;

struct saga__relay {
    saga_transport *t;
    uv_loop_t *loop;
    uv_timer_t timer;
    rdest *dests, *last; /* last: the one used most recently */
    size_t ndests;
    size_t queued, inflight;
    void *owner;
    saga__relay_done_fn done;
    saga__relay_log_fn log;
    saga__relay_fail_fn fail;
    int closing, timer_closed, kicking;
    uint64_t published, undeliverable;
};

/* One allocation: the struct, then the id, topic, key and bytes. */
saga__outmsg *saga__outmsg_new(const char *id, const char *topic,
                               const char *key, const void *buf, size_t len,
                               int64_t created_ms)
{
    size_t il = strlen(id) + 1, tl = strlen(topic) + 1;
    size_t kl = key ? strlen(key) + 1 : 0;
    size_t n = sizeof(saga__outmsg) + il + tl + kl;
    if (len > SIZE_MAX - n)
        return NULL;
    saga__outmsg *m = saga_malloc(n + len);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof *m);
    char *at = (char *)(m + 1);
    m->id = memcpy(at, id, il);
    m->topic = memcpy(at + il, topic, tl);
    m->key = key ? memcpy(at + il + tl, key, kl) : NULL;
    m->buf = at + il + tl + kl;
    if (len)
        memcpy(m->buf, buf, len);
    m->len = len;
    m->created_ms = created_ms;
    return m;
}

void saga__outmsg_free(saga__outmsg *m)
{
    if (m == NULL)
        return;
    saga_free(m->why);
    saga_free(m);
}

static void maybe_free(saga__relay *r)
{
    if (r->closing && r->inflight == 0 && r->timer_closed)
        saga_free(r);
}

static void timer_closed(uv_handle_t *h)
{
    saga__relay *r = h->data;
    r->timer_closed = 1;
    maybe_free(r);
}

int saga__relay_new(saga__relay **out, uv_loop_t *loop, saga_transport *t,
                    void *owner, saga__relay_done_fn done,
                    saga__relay_log_fn log)
{
    saga__relay *r = saga_malloc(sizeof *r);
    if (r == NULL)
        return SAGA_ENOMEM;
    memset(r, 0, sizeof *r);
    r->t = t;
    r->loop = loop;
    r->owner = owner;
    r->done = done;
    r->log = log;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    *out = r;
    return SAGA_OK;
}

void saga__relay_on_fail(saga__relay *r, saga__relay_fail_fn fail)
{
    r->fail = fail;
}

/* ---- destinations ------------------------------------------------------ */

static rdest *dest_find(saga__relay *r, const char *topic)
{
    if (r->last != NULL && strcmp(r->last->topic, topic) == 0)
        return r->last;
    for (rdest *d = r->dests; d != NULL; d = d->next)
        if (strcmp(d->topic, topic) == 0)
            return r->last = d;
    return NULL;
}

static rdest *dest_get(saga__relay *r, const char *topic)
{
    rdest *d = dest_find(r, topic);
    if (d != NULL)
        return d;
    d = saga_malloc(sizeof *d);
    if (d == NULL)
        return NULL;
    memset(d, 0, sizeof *d);
    if ((d->topic = saga__strdup(topic)) == NULL) {
        saga_free(d);
        return NULL;
    }
    d->tail = &d->head;
    d->backoff_ms = RETRY_MIN_MS;
    /* Asked once per destination: a transport that knows its peers says
     * at once that a name is wrong (a typo in a definition, a forged
     * reply_to), rather than after the message waited for a timeout. */
    if (r->t->version >= 2 && r->t->route != NULL &&
        r->t->route(r->t, topic) == SAGA_ENOROUTE)
        d->noroute = 1;
    d->next = r->dests;
    r->dests = d;
    r->ndests++;
    return r->last = d;
}

static void dest_free(saga__relay *r, rdest *d)
{
    while (d->head != NULL) {
        saga__outmsg *m = d->head;
        d->head = m->next;
        saga__outmsg_free(m);
    }
    if (r->last == d)
        r->last = NULL;
    r->ndests--;
    saga_free(d->topic);
    saga_free(d);
}

static void dest_push_back(saga__relay *r, rdest *d, saga__outmsg *m)
{
    m->next = NULL;
    *d->tail = m;
    d->tail = &m->next;
    d->queued++;
    r->queued++;
}

static void dest_push_front(saga__relay *r, rdest *d, saga__outmsg *m)
{
    m->next = d->head;
    d->head = m;
    if (d->tail == &d->head)
        d->tail = &m->next;
    d->queued++;
    r->queued++;
}

static saga__outmsg *dest_pop(saga__relay *r, rdest *d)
{
    saga__outmsg *m = d->head;
    d->head = m->next;
    if (d->head == NULL)
        d->tail = &d->head;
    m->next = NULL;
    d->queued--;
    r->queued--;
    return m;
}

/* Refused or failed: nothing more to @p d until its backoff passes. */
static void dest_backoff(saga__relay *r, rdest *d)
{
    d->retry_at = uv_now(r->loop) + d->backoff_ms;
    d->backoff_ms = d->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
                                                     : d->backoff_ms * 2;
}

/* ---- publishing -------------------------------------------------------- */

void saga__relay_push(saga__relay *r, saga__outmsg *m)
{
    if (r->closing) {
        /* The outbox row stays: the next start publishes it (a message
         * without a row: its command, unacked, is delivered again). */
        saga__outmsg_free(m);
        return;
    }
    m->relay = r;
    rdest *d = dest_get(r, m->topic);
    if (d == NULL) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "out of memory queueing %.64s to "
                 "'%.64s'; it is published after a restart%s",
                 m->id, m->topic,
                 m->ack ? " (its command, unacked, comes again)" : "");
        r->log(r->owner, SAGA_LOG_ERROR, msg);
        saga__outmsg_free(m);
        return;
    }
    dest_push_back(r, d, m);
}

static void timer_cb(uv_timer_t *t) { saga__relay_kick(t->data); }

/* Arm the timer for the earliest destination that waits. */
static void arm_timer(saga__relay *r)
{
    if (r->closing)
        return;
    uint64_t now = uv_now(r->loop), first = UINT64_MAX;
    for (rdest *d = r->dests; d != NULL; d = d->next)
        if (d->head != NULL && d->retry_at > now && d->retry_at < first)
            first = d->retry_at;
    if (first == UINT64_MAX) {
        uv_timer_stop(&r->timer);
        return;
    }
    if (uv_is_active((uv_handle_t *)&r->timer) &&
        uv_timer_get_due_in(&r->timer) <= first - now)
        return;
    uv_timer_start(&r->timer, timer_cb, first - now, 0);
}

/* @p m is confirmed, or can never be delivered: delete its outbox row, or
 * ack the command it answers (a message without a row). */
static void settle(saga__relay *r, saga__outmsg *m)
{
    if (m->ack != NULL) {
        saga_delivery *d = m->ack;
        m->ack = NULL;
        r->t->ack(r->t, d);
        return;
    }
    r->done(r->owner, m->id);
}

/* The message cannot be delivered, ever: delete its row and say why. */
static void give_up(saga__relay *r, saga__outmsg *m, int code, const char *why)
{
    char msg[400];
    r->undeliverable++;
    snprintf(msg, sizeof msg,
             "message %.64s to '%.64s' cannot be delivered "
             "(%s: %.200s); dropped",
             m->id, m->topic, saga_err_name(code), why);
    r->log(r->owner, SAGA_LOG_ERROR, msg);
    settle(r, m);
    if (r->fail != NULL)
        r->fail(r->owner, m, code, why);
}

/* Send what @p d may send now; messages that can never be delivered go to
 * *failed (the caller reports them once the queues are consistent). */
static void dest_pump(saga__relay *r, rdest *d, uint64_t now,
                      saga__outmsg ***failed, saga_sent_cb cb)
{
    if (d->retry_at > now)
        return;
    d->retry_at = 0;
    while (d->head != NULL && !r->closing) {
        saga__outmsg *m = d->head;
        int rc = d->noroute ? SAGA_ENOROUTE
                            : r->t->send(r->t, m->topic, m->key, m->buf, m->len,
                                         cb, m);
        if (rc == SAGA_OK) {
            dest_pop(r, d);
            r->inflight++;
            d->backoff_ms = RETRY_MIN_MS;
            continue;
        }
        if (rc == SAGA_ENOROUTE || rc == SAGA_EINVAL) {
            /* No such destination: everything queued for it fails. A
             * message the transport refuses as such: only that one. */
            if (rc == SAGA_ENOROUTE)
                d->noroute = 1;
            dest_pop(r, d);
            m->status = rc;
            saga_free(m->why);
            m->why = saga__strdup(rc == SAGA_ENOROUTE || r->t->errmsg == NULL
                                      ? "no such destination"
                                      : r->t->errmsg(r->t));
            m->next = NULL;
            **failed = m;
            *failed = &m->next;
            continue;
        }
        if (rc != SAGA_EFULL) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "send of %.64s to '%.64s' refused (%s: "
                     "%s)",
                     m->id, m->topic, saga_err_name(rc),
                     r->t->errmsg ? r->t->errmsg(r->t) : "");
            r->log(r->owner, SAGA_LOG_WARN, msg);
        }
        /* Backpressure or a transient error: this destination waits, in
         * order; the others go on. */
        dest_backoff(r, d);
        return;
    }
}

static void sent_cb(saga_transport *t, int status, void *arg);

void saga__relay_kick(saga__relay *r)
{
    if (r->kicking || r->closing)
        return;
    r->kicking = 1;
    saga__outmsg *failed = NULL, **ftail = &failed;
    uint64_t now = uv_now(r->loop);
    rdest **pp = &r->dests;
    while (*pp != NULL && !r->closing) {
        rdest *d = *pp;
        dest_pump(r, d, now, &ftail, sent_cb);
        if (d->head == NULL && d->retry_at == 0) {
            *pp = d->next; /* nothing left: forget it */
            dest_free(r, d);
            continue;
        }
        pp = &d->next;
    }
    arm_timer(r);
    r->kicking = 0;
    /* Reported last: the owner may queue more (a compensation command). */
    while (failed != NULL) {
        saga__outmsg *m = failed;
        failed = m->next;
        if (!r->closing)
            give_up(r, m, m->status, m->why ? m->why : "refused");
        saga__outmsg_free(m);
    }
}

static void sent_cb(saga_transport *t, int status, void *arg)
{
    (void)t;
    saga__outmsg *m = arg;
    saga__relay *r = m->relay;
    r->inflight--;
    if (r->closing) {
        saga__outmsg_free(m);
        maybe_free(r);
        return;
    }
    if (status == SAGA_OK) {
        r->published++;
        settle(r, m);
        saga__outmsg_free(m);
        return;
    }
    if (status == SAGA_ENOROUTE || status == SAGA_EINVAL) {
        /* Refused for good (the TCP transport learns a receiver's frame
         * limit only once connected): sent again it would fail again, and
         * hold up its destination while it backs off. */
        give_up(r, m, status,
                status == SAGA_ENOROUTE
                    ? "no such destination"
                    : "the transport refused it (larger than the receiver "
                      "accepts)");
        saga__outmsg_free(m);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg,
             "publish of %.64s to '%.64s' failed (%s); "
             "resending",
             m->id, m->topic, saga_err_name(status));
    r->log(r->owner, SAGA_LOG_WARN, msg);
    rdest *d = dest_get(r, m->topic);
    if (d == NULL) {
        saga__outmsg_free(m); /* the row stays for the next start */
        return;
    }
    dest_push_front(r, d, m);
    if (d->retry_at == 0)
        dest_backoff(r, d);
    arm_timer(r);
}

typedef struct rec_ctx {
    saga__relay *r;
    int rc;
    size_t n;
} rec_ctx;

static int recover_cb(const saga_message *msg, void *arg)
{
    rec_ctx *c = arg;
    saga__outmsg *m = saga__outmsg_new(msg->id, msg->topic, msg->key,
                                       msg->payload, msg->len, msg->created_ms);
    if (m == NULL) {
        c->rc = SAGA_ENOMEM;
        return 1;
    }
    saga__relay_push(c->r, m);
    c->n++;
    return 0;
}

int saga__relay_recover(saga__relay *r, saga_store *s)
{
    /* The store visits the oldest first; one pass of a generous size, as
     * the backlog left by a crash is what was in flight then. */
    rec_ctx c = {r, SAGA_OK, 0};
    int rc = s->outbox_scan(s, UINT32_MAX, recover_cb, &c);
    if (rc == SAGA_OK)
        rc = c.rc;
    if (rc == SAGA_OK && c.n > 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "outbox: re-publishing %zu messages", c.n);
        r->log(r->owner, SAGA_LOG_INFO, msg);
    }
    saga__relay_kick(r);
    return rc;
}

void saga__relay_close(saga__relay *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    while (r->dests != NULL) {
        rdest *d = r->dests;
        r->dests = d->next;
        dest_free(r, d);
    }
    r->queued = 0;
    uv_close((uv_handle_t *)&r->timer, timer_closed);
}

uint64_t saga__relay_published(const saga__relay *r) { return r->published; }
uint64_t saga__relay_undeliverable(const saga__relay *r)
{
    return r->undeliverable;
}
size_t saga__relay_backlog(const saga__relay *r)
{
    return r->queued + r->inflight;
}

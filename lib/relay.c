/*
 * relay.c — publishes committed outbox messages (see relay.h).
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "relay.h"

#define RETRY_MIN_MS 10u
#define RETRY_MAX_MS 2000u

struct saga__relay {
    saga_transport *t;
    uv_timer_t timer;
    saga__outmsg *head, **tail;
    size_t queued, inflight;
    void *owner;
    saga__relay_done_fn done;
    saga__relay_log_fn log;
    uint32_t backoff_ms;
    int closing, timer_closed;
    uint64_t published;
};

saga__outmsg *saga__outmsg_new(const char *id, const char *topic,
                               const char *key, const void *buf, size_t len,
                               int64_t created_ms)
{
    saga__outmsg *m = saga_malloc(sizeof *m);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof *m);
    m->id = saga__strdup(id);
    m->topic = saga__strdup(topic);
    m->key = saga__strdup(key);
    m->buf = saga_malloc(len ? len : 1);
    if (!m->id || !m->topic || (key && !m->key) || !m->buf) {
        saga__outmsg_free(m);
        return NULL;
    }
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
    saga_free(m->id);
    saga_free(m->topic);
    saga_free(m->key);
    saga_free(m->buf);
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
    r->tail = &r->head;
    r->owner = owner;
    r->done = done;
    r->log = log;
    r->backoff_ms = RETRY_MIN_MS;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    *out = r;
    return SAGA_OK;
}

static void push_front(saga__relay *r, saga__outmsg *m)
{
    m->next = r->head;
    r->head = m;
    if (r->tail == &r->head)
        r->tail = &m->next;
    r->queued++;
}

void saga__relay_push(saga__relay *r, saga__outmsg *m)
{
    if (r->closing) {
        /* The outbox row stays: the next start publishes it. */
        saga__outmsg_free(m);
        return;
    }
    m->relay = r;
    m->next = NULL;
    *r->tail = m;
    r->tail = &m->next;
    r->queued++;
}

static void timer_cb(uv_timer_t *t) { saga__relay_kick(t->data); }

static void retry_later(saga__relay *r)
{
    if (r->closing || uv_is_active((uv_handle_t *)&r->timer))
        return;
    uv_timer_start(&r->timer, timer_cb, r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS
                                                     : r->backoff_ms * 2;
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
        r->backoff_ms = RETRY_MIN_MS;
        r->done(r->owner, m->id);
        saga__outmsg_free(m);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "publish of %.64s to '%.64s' failed (%s); "
             "resending", m->id, m->topic, saga_err_name(status));
    r->log(r->owner, SAGA_LOG_WARN, msg);
    push_front(r, m);
    retry_later(r);
}

void saga__relay_kick(saga__relay *r)
{
    while (r->head != NULL && !r->closing) {
        saga__outmsg *m = r->head;
        int rc = r->t->send(r->t, m->topic, m->key, m->buf, m->len, sent_cb,
                            m);
        if (rc == SAGA_EFULL) {
            retry_later(r); /* backpressure: keep the queue, try later */
            return;
        }
        r->head = m->next;
        if (r->head == NULL)
            r->tail = &r->head;
        r->queued--;
        if (rc == SAGA_OK) {
            r->inflight++;
            continue;
        }
        char msg[200];
        snprintf(msg, sizeof msg, "send of %.64s to '%.64s' refused (%s: "
                 "%s)", m->id, m->topic, saga_err_name(rc),
                 r->t->errmsg ? r->t->errmsg(r->t) : "");
        r->log(r->owner, SAGA_LOG_WARN, msg);
        push_front(r, m);
        retry_later(r);
        return;
    }
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
                                       msg->payload, msg->len,
                                       msg->created_ms);
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
    while (r->head != NULL) {
        saga__outmsg *m = r->head;
        r->head = m->next;
        saga__outmsg_free(m);
    }
    r->tail = &r->head;
    r->queued = 0;
    uv_close((uv_handle_t *)&r->timer, timer_closed);
}

uint64_t saga__relay_published(const saga__relay *r) { return r->published; }
size_t saga__relay_backlog(const saga__relay *r)
{
    return r->queued + r->inflight;
}

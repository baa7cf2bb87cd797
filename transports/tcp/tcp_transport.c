/*
 * tcp_transport.c — the TCP transport on libuv (include/saga/tcp.h).
 *
 * Shape: one listener for inbound connections (peers sending to us), and
 * per configured peer one outbound connection that we keep up. DATA flows
 * on outbound connections and ACKs come back on them; both directions
 * carry heartbeats.
 *
 * Sending: a message is encoded once into a DATA frame with the peer's next
 * id and queued on the peer until the peer ACKs it. While connected, new
 * frames are written at once; after a reconnect every queued frame is
 * written again in order. The queue bound (bytes and messages) is the
 * backpressure: send returns SAGA_EFULL.
 *
 * Receiving: a DATA frame becomes one delivery per local subscription to
 * its topic (or waits in a backlog until a first subscription). When the
 * application has acked all of them, the ACK goes back on the connection
 * the frame came on; if that connection is gone the ACK is dropped and the
 * sender will send again (at-least-once).
 *
 * User callbacks run only from one idle handle (the pump), never from a
 * slot call or from the middle of frame parsing; every loop over a list
 * that calls back re-checks t->closing. The transport is freed when its
 * last uv handle has closed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "saga/tcp.h"
#include "tcp_int.h"

/* ---- small helpers -------------------------------------------------------- */

void saga__tcp_log(tcp_t *t, saga_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlogf(t->o.log, t->o.log_arg, lvl, fmt, ap);
    va_end(ap);
}

void saga__tcp_out_msg_release(out_msg *m)
{
    m->done = 1;
    if (m->wrefs == 0) {
        saga_free(m->frame);
        saga_free(m);
    }
}

void saga__tcp_conn_unref(tcp_conn *c)
{
    if (--c->refs == 0) {
        c->t->rbuf_bytes -= c->rcap;
        saga_free(c->rbuf);
        saga_free(c->wq);
        saga_free(c->ctl);
        saga_free(c);
    }
}

/* ---- writing ------------------------------------------------------------- */

/*
 * Frames are not written one by one: each write is a syscall and a TCP
 * segment, and a busy endpoint writes many small frames per loop turn (a
 * reply and an ACK per command). conn_write() queues a frame on its
 * connection; the pump writes each connection's queue as one uv_write of
 * several buffers (a writev) at the end of its run, in the same loop turn
 * or early in the next one, before the loop polls again. Order per
 * connection is kept.
 */
typedef struct wreq {
    uv_write_t req;
    tcp_conn *conn;
    unsigned char *ctl; /* the control bytes written, owned */
    size_t nms;
    out_msg *ms[]; /* DATA frames written: their frames stay until done */
} wreq;

static void out_msg_unwrite(out_msg *m)
{
    if (--m->wrefs == 0 && m->done) {
        saga_free(m->frame);
        saga_free(m);
    }
}

/* Item: a peer that never reads must not grow our write queue without
 * bound. Inbound links only write ACKs and heartbeats, which its reading
 * (our reading of its DATA) causes: stop reading it while its queue is
 * over the bound, read again once half of it is written. (Outbound DATA is
 * bounded by max_queue_bytes already.) */
static void check_write_queue(tcp_conn *c)
{
    if (c->peer != NULL || c->closing)
        return;
    tcp_t *t = c->t;
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->h) + c->nctl;
    if (!c->wpaused && q > t->o.max_write_queue_bytes) {
        c->wpaused = 1;
        t->st.write_stalls++;
        saga__tcp_log(t, SAGA_LOG_WARN,
                      "tcp: %s does not read (%zu bytes queued for it); "
                      "not reading from it until it does",
                      c->name[0] ? c->name : "peer", q);
        saga__tcp_conn_reading(c);
    } else if (c->wpaused && q <= t->o.max_write_queue_bytes / 2) {
        c->wpaused = 0;
        c->last_rx = uv_now(t->loop);
        saga__tcp_conn_reading(c);
    }
}

static void on_write(uv_write_t *req, int status)
{
    wreq *w = req->data;
    tcp_conn *c = w->conn;
    for (size_t i = 0; i < w->nms; i++)
        out_msg_unwrite(w->ms[i]);
    saga_free(w->ctl);
    saga_free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing)
        saga__tcp_conn_close(c, uv_strerror(status));
    else if (c->wpaused)
        check_write_queue(c);
    saga__tcp_conn_unref(c);
}

/* Drop what @p c has queued (it is closing). */
static void conn_drop_queued(tcp_conn *c)
{
    for (size_t i = 0; i < c->nwq; i++)
        if (c->wq[i].m != NULL)
            out_msg_unwrite(c->wq[i].m);
    c->nwq = c->nctl = 0;
    if (c->fqueued) {
        c->fqueued = 0;
        saga__list_remove(&c->fnode);
        saga__tcp_conn_unref(c);
    }
}

/* Queue @p len bytes: a DATA frame of @p m, or a copied control frame. */
static void conn_write(tcp_conn *c, const unsigned char *buf, size_t len,
                       out_msg *m)
{
    if (c->closing)
        return;
    if (c->nwq == c->cwq) {
        size_t nc = c->cwq ? c->cwq * 2 : 16;
        wpend *nw = saga_realloc(c->wq, nc * sizeof *nw);
        if (nw == NULL) {
            /* Dropping a frame silently would break ordering; resync. */
            saga__tcp_conn_close(c, "out of memory");
            return;
        }
        c->wq = nw;
        c->cwq = nc;
    }
    wpend *e = &c->wq[c->nwq];
    e->m = m;
    e->len = len;
    e->off = 0;
    if (m == NULL) {
        if (c->nctl + len > c->cctl) {
            size_t nc = c->cctl ? c->cctl : 256;
            while (nc < c->nctl + len)
                nc *= 2;
            unsigned char *nb = saga_realloc(c->ctl, nc);
            if (nb == NULL) {
                saga__tcp_conn_close(c, "out of memory");
                return;
            }
            c->ctl = nb;
            c->cctl = nc;
        }
        e->off = c->nctl;
        memcpy(c->ctl + c->nctl, buf, len);
        c->nctl += len;
    } else {
        m->wrefs++;
    }
    c->nwq++;
    c->t->st.frames_out++;
    if (!c->fqueued) {
        c->fqueued = 1;
        c->refs++;
        saga__list_push_back(&c->t->flushq, &c->fnode);
        saga__tcp_pump_kick(c->t);
    }
}

static void conn_flush(tcp_conn *c)
{
    size_t n = c->nwq, nms = 0;
    for (size_t i = 0; i < n; i++)
        nms += c->wq[i].m != NULL;
    wreq *w = saga_malloc(sizeof *w + nms * sizeof(out_msg *));
    uv_buf_t small[16], *b = n <= 16 ? small : saga_malloc(n * sizeof *b);
    if (w == NULL || b == NULL) {
        saga_free(w);
        if (b != small)
            saga_free(b);
        saga__tcp_conn_close(c, "out of memory");
        return;
    }
    w->req.data = w;
    w->conn = c;
    w->ctl = c->ctl; /* the control bytes move to the request */
    w->nms = 0;
    for (size_t i = 0; i < n; i++) {
        wpend *e = &c->wq[i];
        if (e->m != NULL) {
            w->ms[w->nms++] = e->m;
            b[i] = uv_buf_init((char *)e->m->frame, (unsigned)e->len);
        } else {
            b[i] = uv_buf_init((char *)w->ctl + e->off, (unsigned)e->len);
        }
    }
    c->ctl = NULL;
    c->nctl = c->cctl = 0;
    c->nwq = 0;
    c->refs++;
    /* libuv copies the buffer array; the bytes live until on_write. */
    int rc = uv_write(&w->req, (uv_stream_t *)&c->h, b, (unsigned)n, on_write);
    if (b != small)
        saga_free(b);
    if (rc != 0) {
        for (size_t i = 0; i < w->nms; i++)
            out_msg_unwrite(w->ms[i]);
        saga_free(w->ctl);
        saga_free(w);
        saga__tcp_conn_unref(c);
        saga__tcp_conn_close(c, uv_strerror(rc));
        return;
    }
    check_write_queue(c);
}

void saga__tcp_flush(tcp_t *t)
{
    saga__list *n;
    while ((n = saga__list_pop_front(&t->flushq)) != NULL) {
        tcp_conn *c = SAGA__CONTAINER(n, tcp_conn, fnode);
        c->fqueued = 0;
        if (!c->closing && c->nwq > 0)
            conn_flush(c);
        saga__tcp_conn_unref(c);
    }
}

static void conn_write_ctl(tcp_conn *c, int kind, const void *body, size_t blen)
{
    unsigned char f[SAGA__TCP_HDR + 2 + SAGA_NAME_MAX];
    saga__tcp_put_header(f, kind, blen);
    if (blen > 0)
        memcpy(f + SAGA__TCP_HDR, body, blen);
    conn_write(c, f, SAGA__TCP_HDR + blen, NULL);
}

void saga__tcp_conn_write_ack(tcp_conn *c, uint64_t id)
{
    unsigned char b[8];
    saga__tcp_put_u64(b, id);
    conn_write_ctl(c, SAGA__TCP_ACK, b, sizeof b);
}

void saga__tcp_write_data(tcp_conn *c, out_msg *m)
{
    if (m->written)
        c->t->st.resent++;
    m->written = 1;
    conn_write(c, m->frame, m->flen, m);
}

static int try_accept(tcp_t *t);

/* ---- the pump: every user callback runs here ------------------------------ */

void saga__tcp_on_pump(uv_idle_t *h)
{
    tcp_t *t = h->data;
    saga__list batch, *n;
    if (t->accept_pending && try_accept(t) == 0)
        t->accept_pending = 0;
    saga__list_init(&batch);
    saga__list_splice_front(&batch, &t->completed);
    while (!t->closing && (n = saga__list_pop_front(&batch)) != NULL) {
        out_msg *m = SAGA__CONTAINER(n, out_msg, node);
        if (m->cb != NULL)
            m->cb(&t->base, m->status, m->arg);
        saga__tcp_out_msg_release(m);
    }
    saga__list_splice_front(&t->completed, &batch);

    saga__list_splice_front(&batch, &t->ready);
    while (!t->closing && (n = saga__list_pop_front(&batch)) != NULL) {
        saga_delivery *d = SAGA__CONTAINER(n, saga_delivery, node);
        saga__list_push_back(&t->handed, &d->node);
        d->handed = 1;
        rx_msg *m = d->m;
        d->sub->cb(&t->base, d, m->topic, m->key, m->data, m->len, d->sub->arg);
    }
    saga__list_splice_front(&t->ready, &batch);

    /* What the callbacks (and everything since the last pump) queued. */
    if (!t->closing)
        saga__tcp_flush(t);
    if (!t->closing && saga__list_empty(&t->completed) &&
        saga__list_empty(&t->ready) && saga__list_empty(&t->flushq) &&
        !t->accept_pending)
        uv_idle_stop(&t->pump);
}

void saga__tcp_pump_kick(tcp_t *t)
{
    if (!t->closing)
        uv_idle_start(&t->pump, saga__tcp_on_pump);
}

/* ---- receiving ----------------------------------------------------------- */

int saga__tcp_deliver(tcp_t *t, rx_msg *m, tcp_sub *s)
{
    saga_delivery *d = saga_malloc(sizeof *d);
    if (d == NULL)
        return SAGA_ENOMEM;
    d->magic = SAGA__TCP_DELIVERY_MAGIC;
    d->handed = 0;
    d->t = t;
    d->m = m;
    d->sub = s;
    m->refs++;
    saga__list_push_back(&t->ready, &d->node);
    saga__tcp_pump_kick(t);
    return SAGA_OK;
}

static int topic_is(const char *name, const saga__tcp_frame *f)
{
    return strlen(name) == f->topic_len &&
           memcmp(name, f->topic, f->topic_len) == 0;
}

/* @return SAGA_OK, SAGA_ENOMEM, or SAGA_ENOROUTE: nobody here subscribes
 * to its topic and it may not wait (the caller refuses it). */
static int on_data(tcp_conn *c, const saga__tcp_frame *f)
{
    tcp_t *t = c->t;
    size_t klen = f->key != NULL ? f->key_len + 1 : 0;
    size_t size = sizeof(rx_msg) + f->topic_len + klen + f->payload_len;
    int subscribed = 0;
    for (saga__list *n = t->subs.next; n != &t->subs && !subscribed;
         n = n->next)
        subscribed = topic_is(SAGA__CONTAINER(n, tcp_sub, node)->topic, f);
    /* Only our own service name may wait for its first subscriber (a
     * service starting up), and only up to the backlog budget. */
    if (!subscribed && (!topic_is(t->service, f) ||
                        t->backlog_bytes + size > t->o.max_backlog_bytes))
        return SAGA_ENOROUTE;
    rx_msg *m = saga_malloc(sizeof *m + f->topic_len + 1 + klen +
                            f->payload_len);
    if (m == NULL)
        return SAGA_ENOMEM;
    char *p = (char *)(m + 1);
    m->topic = p;
    memcpy(p, f->topic, f->topic_len);
    p[f->topic_len] = '\0';
    p += f->topic_len + 1;
    m->key = NULL;
    if (f->key != NULL) {
        m->key = p;
        memcpy(p, f->key, f->key_len);
        p[f->key_len] = '\0';
        p += klen;
    }
    m->data = (unsigned char *)p;
    m->len = f->payload_len;
    if (m->len > 0)
        memcpy(m->data, f->payload, m->len);
    m->id = f->id;
    m->refs = 0;
    m->conn = c;
    m->size = sizeof *m + f->topic_len + klen + f->payload_len;
    c->held += m->size;
    c->nheld++;
    c->refs++;
    for (saga__list *n = t->subs.next; n != &t->subs; n = n->next) {
        tcp_sub *s = SAGA__CONTAINER(n, tcp_sub, node);
        if (strcmp(s->topic, m->topic) == 0 &&
            saga__tcp_deliver(t, m, s) != SAGA_OK) {
            /* The deliveries made hold m; the frame is not acked, so the
             * sender sends it again after the reconnect. */
            if (m->refs == 0) {
                saga__tcp_conn_release(c, m->size);
                saga__tcp_conn_unref(c);
                saga_free(m);
            }
            return SAGA_ENOMEM;
        }
    }
    if (m->refs == 0) {
        saga__list_push_back(&t->backlog, &m->node);
        t->backlog_bytes += m->size;
    }
    return SAGA_OK;
}

static void on_ack(tcp_conn *c, uint64_t id)
{
    tcp_peer *p = c->peer;
    for (saga__list *n = p->queue.next; n != &p->queue; n = n->next) {
        out_msg *m = SAGA__CONTAINER(n, out_msg, node);
        if (m->id == id) {
            saga__list_remove(&m->node);
            p->qbytes -= m->flen;
            p->qmsgs--;
            m->status = SAGA_OK;
            saga__list_push_back(&c->t->completed, &m->node);
            saga__tcp_pump_kick(c->t);
            return;
        }
    }
    /* An ACK for a frame already acked (sent twice): harmless. */
}

/* The answer to a sender's HELLO: our max_frame_size, as an ACK with a
 * reserved id (tcp_int.h), which senders that predate it ignore. Written at
 * once, not at the end of the loop turn: a frame of that sender's already
 * on its way may be over our limit, and closing the link for it would drop
 * what is still queued here, this answer with it. */
static void write_limit(tcp_conn *c)
{
    unsigned char b[8];
    saga__tcp_put_u64(b, SAGA__TCP_LIMIT_TAG | c->t->o.max_frame_size);
    conn_write_ctl(c, SAGA__TCP_ACK, b, sizeof b);
    if (!c->closing && c->nwq > 0)
        conn_flush(c);
}

/* The peer's limit answer: a message queued for it whose frame is over
 * that limit would be refused there, and sent again first after every
 * reconnect, holding up everything behind it. It fails alone, with
 * SAGA_EINVAL; the rest keep flowing. A frame already written on this
 * link still makes the peer close it; the reconnect goes on without it. */
static void on_limit(tcp_conn *c, uint32_t limit)
{
    tcp_peer *p = c->peer;
    tcp_t *t = c->t;
    p->peer_max = limit;
    saga__list *n = p->queue.next;
    while (n != &p->queue) {
        out_msg *m = SAGA__CONTAINER(n, out_msg, node);
        n = n->next;
        if (m->flen - 4 <= limit)
            continue;
        saga__list_remove(&m->node);
        p->qbytes -= m->flen;
        p->qmsgs--;
        m->status = SAGA_EINVAL;
        t->st.oversized++;
        snprintf(t->err, sizeof t->err,
                 "send: a %zu-byte frame exceeds the max_frame_size %u of "
                 "peer '%.64s'",
                 m->flen - 4, (unsigned)limit, p->service);
        saga__tcp_log(t, SAGA_LOG_WARN,
                      "tcp: message %llu to %s failed (SAGA_EINVAL): its "
                      "%zu-byte frame exceeds the peer's max_frame_size %u",
                      (unsigned long long)m->id, p->service, m->flen - 4,
                      (unsigned)limit);
        saga__list_push_back(&t->completed, &m->node);
        saga__tcp_pump_kick(t);
    }
}

/* Handle one frame. @return 0, or -1 after closing the connection. */
static int conn_frame(tcp_conn *c, int kind, const unsigned char *body,
                      size_t len)
{
    tcp_t *t = c->t;
    saga__tcp_frame f;
    const char *why = NULL;
    if (saga__tcp_frame_decode(kind, body, len, &f, &why) != SAGA_OK)
        goto reject;
    int inbound = c->peer == NULL;
    switch (kind) {
    case SAGA__TCP_HELLO:
        if (!inbound || c->hello) {
            why = "unexpected HELLO";
            goto reject;
        }
        memcpy(c->name, f.name, f.name_len);
        c->name[f.name_len] = '\0';
        c->hello = 1;
        write_limit(c);
        break;
    case SAGA__TCP_DATA:
        if (!inbound || !c->hello) {
            why = inbound ? "DATA before HELLO" : "DATA on an outbound link";
            goto reject;
        }
        switch (on_data(c, &f)) {
        case SAGA_OK:
            break;
        case SAGA_ENOROUTE:
            /* Not acked: a legitimate sender sends it again after it
             * reconnects, when a subscriber may be there. */
            t->st.unrouted_frames++;
            saga__tcp_log(t, SAGA_LOG_WARN,
                          "tcp: refused a %zu-byte frame from %s for topic "
                          "'%.*s': nobody subscribes to it here; closing",
                          f.payload_len, c->name[0] ? c->name : "peer",
                          (int)(f.topic_len > 64 ? 64 : f.topic_len), f.topic);
            saga__tcp_conn_close(c, "frame for an unrouted topic");
            return -1;
        default:
            saga__tcp_conn_close(c, "out of memory");
            return -1;
        }
        break;
    case SAGA__TCP_ACK:
        if (inbound) {
            why = "ACK on an inbound link";
            goto reject;
        }
        if (f.limit != 0)
            on_limit(c, f.limit);
        else
            on_ack(c, f.id);
        break;
    default: /* HEARTBEAT: last_rx is already updated */
        break;
    }
    t->st.frames_in++;
    return 0;
reject:
    t->st.rejected_frames++;
    saga__tcp_log(t, SAGA_LOG_WARN, "tcp: rejected frame from %s: %s",
                  c->name[0] ? c->name : "unknown peer", why);
    saga__tcp_conn_close(c, why);
    return -1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tcp_conn *c = h->data;
    (void)suggested;
    /* Grow to hold the frame being read (its length is known once 4 bytes
     * are in), plus room to read ahead; never beyond max_frame_size. */
    size_t want = c->rlen + 65536;
    if (c->rlen - c->roff >= 4) {
        size_t need = c->roff + 4 +
                      (size_t)saga__tcp_get_u32(c->rbuf + c->roff);
        if (need > want && need - c->roff <= (size_t)c->t->o.max_frame_size + 4)
            want = need;
    }
    if (want > c->rcap) {
        tcp_t *t = c->t;
        if (t->rbuf_bytes - c->rcap + want > t->o.max_read_bytes) {
            /* A zero-length buffer: libuv reports UV_ENOBUFS to on_read,
             * which closes this connection. */
            c->over_budget = 1;
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        unsigned char *nb = saga_realloc(c->rbuf, want);
        if (nb != NULL) {
            t->rbuf_bytes += want - c->rcap;
            c->rbuf = nb;
            c->rcap = want;
        }
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen,
                       (unsigned)(c->rcap - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tcp_conn *c = s->data;
    tcp_t *t = c->t;
    (void)buf;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && c->rlen > c->roff) {
            t->st.rejected_frames++;
            saga__tcp_log(t, SAGA_LOG_WARN,
                          "tcp: %s closed in the middle of a frame",
                          c->name[0] ? c->name : "peer");
        }
        if (nread == UV_ENOBUFS && c->over_budget) {
            t->st.over_budget++;
            saga__tcp_log(t, SAGA_LOG_WARN,
                          "tcp: %s: receive buffers would exceed "
                          "max_read_bytes (%zu); closing",
                          c->name[0] ? c->name : "peer", t->o.max_read_bytes);
            saga__tcp_conn_close(c, "receive memory budget");
            return;
        }
        if (nread == UV_ENOBUFS) {
            saga__tcp_log(t, SAGA_LOG_ERROR,
                          "tcp: out of memory reading a frame");
        }
        saga__tcp_conn_close(c, nread == UV_EOF ? "closed by peer"
                                                : uv_strerror((int)nread));
        return;
    }
    c->rlen += (size_t)nread;
    c->last_rx = uv_now(t->loop);
    int consumed = 0;
    while (c->rlen - c->roff >= 4) {
        const unsigned char *p = c->rbuf + c->roff;
        uint32_t l = saga__tcp_get_u32(p);
        if (l == 0 || l > t->o.max_frame_size) {
            t->st.rejected_frames++;
            saga__tcp_log(t, SAGA_LOG_WARN,
                          "tcp: rejected frame from %s: length %lu (max %lu)",
                          c->name[0] ? c->name : "unknown peer",
                          (unsigned long)l, (unsigned long)t->o.max_frame_size);
            saga__tcp_conn_close(c, "bad frame length");
            return;
        }
        if (c->rlen - c->roff < 4 + (size_t)l)
            break;
        c->roff += 4 + (size_t)l;
        consumed = 1;
        if (conn_frame(c, p[4], p + SAGA__TCP_HDR, l - 1) != 0)
            return;
    }
    /* Flow control: a sender (or an attacker) cannot make us hold more
     * unacked data than the queue bounds (a legitimate sender never has
     * more unacked); we read on once acks free half of it. */
    if ((c->held > t->o.max_queue_bytes || c->nheld > t->o.max_queue_msgs) &&
        !c->paused) {
        c->paused = 1;
        saga__tcp_conn_reading(c);
    }
    /* Keep the partial frame at the front of the buffer. */
    if (c->roff > 0) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
        c->rlen -= c->roff;
        c->roff = 0;
    }
    /* The deadline of the frame now being read counts from its first
     * byte. */
    if (c->rlen == 0)
        c->frame_start = 0;
    else if (consumed || c->frame_start == 0)
        c->frame_start = c->last_rx;
    /* A buffer grown for a large frame goes back once it is read. */
    if (c->rlen == 0 && c->rcap > 65536) {
        t->rbuf_bytes -= c->rcap;
        saga_free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

void saga__tcp_conn_reading(tcp_conn *c)
{
    int want = !c->paused && !c->wpaused && !c->closing;
    if (want && !c->reading) {
        c->reading = 1;
        c->last_rx = uv_now(c->t->loop);
        if (c->frame_start != 0)
            c->frame_start = c->last_rx; /* we were the ones waiting */
        if (uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read) != 0) {
            c->reading = 0;
            saga__tcp_conn_close(c, "read_start failed");
        }
    } else if (!want && c->reading && !c->closing) {
        c->reading = 0;
        uv_read_stop((uv_stream_t *)&c->h);
    }
}

void saga__tcp_conn_release(tcp_conn *c, size_t size)
{
    c->held -= size;
    c->nheld--;
    if (c->paused && !c->closing && c->held <= c->t->o.max_queue_bytes / 2 &&
        c->nheld <= c->t->o.max_queue_msgs / 2) {
        c->paused = 0;
        saga__tcp_conn_reading(c);
    }
}

/* ---- connections ----------------------------------------------------------- */

static tcp_conn *conn_new(tcp_t *t, tcp_peer *peer)
{
    tcp_conn *c = saga_malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof *c);
    if (uv_tcp_init(t->loop, &c->h) != 0) {
        saga_free(c);
        return NULL;
    }
    c->h.data = c;
    c->creq.data = c;
    c->t = t;
    c->peer = peer;
    c->refs = 1;
    c->last_rx = c->born = uv_now(t->loop);
    if (peer != NULL)
        snprintf(c->name, sizeof c->name, "%s", peer->service);
    t->handles++;
    saga__list_push_back(&t->conns, &c->node);
    return c;
}

static void on_conn_closed(uv_handle_t *h)
{
    tcp_conn *c = h->data;
    tcp_t *t = c->t;
    t->handles--;
    /* Messages it delivered may keep c alive; not its receive buffer. */
    t->rbuf_bytes -= c->rcap;
    saga_free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = c->rlen = c->roff = 0;
    saga__tcp_conn_unref(c);
    saga__tcp_maybe_finish(t);
}

static void peer_schedule(tcp_peer *p)
{
    tcp_t *t = p->t;
    if (t->closing || !p->active || p->conn != NULL)
        return;
    uv_timer_start(&p->timer, saga__tcp_on_backoff, p->backoff, 0);
    p->backoff = p->backoff >= t->o.reconnect_max_ms / 2 ? t->o.reconnect_max_ms
                                                         : p->backoff * 2;
}

void saga__tcp_conn_close(tcp_conn *c, const char *why)
{
    if (c->closing)
        return;
    tcp_t *t = c->t;
    c->closing = 1;
    saga__list_remove(&c->node);
    conn_drop_queued(c);
    if (c->counted) {
        c->counted = 0;
        t->ninbound--;
    }
    /* What it sent for a topic nobody has subscribed to yet was not acked:
     * its sender sends it again; do not keep it after the link is gone. */
    if (!t->closing) {
        saga__list *n = t->backlog.next;
        while (n != &t->backlog) {
            rx_msg *m = SAGA__CONTAINER(n, rx_msg, node);
            n = n->next;
            if (m->conn != c)
                continue;
            saga__list_remove(&m->node);
            t->backlog_bytes -= m->size;
            saga__tcp_rx_msg_free(m);
        }
    }
    tcp_peer *p = c->peer;
    if (p != NULL && p->conn == c) {
        p->conn = NULL;
        if (!t->closing) {
            saga__tcp_log(t, SAGA_LOG_INFO,
                          "tcp: link to %s lost (%s), retry in %u ms",
                          p->service, why, (unsigned)p->backoff);
            peer_schedule(p);
        }
    } else if (p == NULL && !t->closing) {
        saga__tcp_log(t, SAGA_LOG_DEBUG,
                      "tcp: inbound link from %s closed (%s)",
                      c->name[0] ? c->name : "unknown peer", why);
    }
    uv_close((uv_handle_t *)&c->h, on_conn_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    tcp_conn *c = req->data;
    tcp_peer *p = c->peer;
    if (c->closing)
        return;
    if (status < 0) {
        saga__tcp_conn_close(c, uv_strerror(status));
        return;
    }
    c->up = 1;
    p->backoff = p->t->o.reconnect_min_ms;
    c->last_rx = uv_now(p->t->loop);
    uv_tcp_nodelay(&c->h, 1);
    saga__tcp_conn_reading(c);
    if (c->closing)
        return;
    unsigned char hello[2 + SAGA_NAME_MAX];
    size_t nl = strlen(p->t->service);
    hello[0] = SAGA__TCP_PROTO_VERSION;
    hello[1] = (unsigned char)nl;
    memcpy(hello + 2, p->t->service, nl);
    conn_write_ctl(c, SAGA__TCP_HELLO, hello, 2 + nl);
    /* Everything not yet acked goes again, in order. */
    for (saga__list *n = p->queue.next; !c->closing && n != &p->queue;
         n = n->next)
        saga__tcp_write_data(c, SAGA__CONTAINER(n, out_msg, node));
}

void saga__tcp_peer_connect(tcp_peer *p)
{
    tcp_t *t = p->t;
    if (t->closing || p->conn != NULL)
        return;
    tcp_conn *c = conn_new(t, p);
    if (c == NULL) {
        peer_schedule(p);
        return;
    }
    p->conn = c;
    int rc = uv_tcp_connect(&c->creq, &c->h, (struct sockaddr *)&p->addr,
                            on_connect);
    if (rc != 0)
        saga__tcp_conn_close(c, uv_strerror(rc));
}

void saga__tcp_on_backoff(uv_timer_t *h)
{
    tcp_peer *p = h->data;
    p->t->st.reconnects++;
    saga__tcp_peer_connect(p);
}

/* @return 0, or -1 if out of memory (the connection is left pending). */
static int try_accept(tcp_t *t)
{
    tcp_conn *c = conn_new(t, NULL);
    if (c == NULL)
        return -1;
    if (uv_accept((uv_stream_t *)&t->listener, (uv_stream_t *)&c->h) != 0) {
        saga__tcp_conn_close(c, "accept failed");
        return 0;
    }
    /* Accepted and closed at once over the limit, rather than left in
     * the listen queue, which would stop every later accept too. */
    if (t->ninbound >= t->o.max_conns) {
        t->st.refused_conns++;
        saga__tcp_log(t, SAGA_LOG_WARN,
                      "tcp: %u inbound connections open (max_conns); "
                      "refusing one more",
                      (unsigned)t->ninbound);
        saga__tcp_conn_close(c, "too many connections");
        return 0;
    }
    c->counted = 1;
    t->ninbound++;
    saga__tcp_conn_reading(c);
    if (c->closing)
        return 0;
    uv_tcp_nodelay(&c->h, 1);
    t->st.accepted++;
    return 0;
}

void saga__tcp_on_accept(uv_stream_t *server, int status)
{
    tcp_t *t = server->data;
    if (status < 0 || t->closing)
        return;
    /* libuv stops listening until this connection is accepted, so a
     * failure must be retried (from the pump), not dropped. */
    if (try_accept(t) != 0) {
        t->accept_pending = 1;
        saga__tcp_pump_kick(t);
    }
}

void saga__tcp_on_heartbeat(uv_timer_t *h)
{
    tcp_t *t = h->data;
    uint64_t now = uv_now(t->loop);
    saga__list *n = t->conns.next;
    while (n != &t->conns) {
        tcp_conn *c = SAGA__CONTAINER(n, tcp_conn, node);
        n = n->next; /* saga__tcp_conn_close unlinks c */
        if (c->paused) {
            /* We stopped reading: its heartbeats wait in the socket. We
             * keep sending ours, so the sender waits instead of
             * reconnecting and sending everything again. */
            c->last_rx = now;
        }
        /* A frame dripped in too slowly holds its buffer: a deadline.
         * Not while we stopped reading it ourselves. */
        if (c->reading && c->frame_start != 0 &&
            now - c->frame_start > t->o.frame_deadline_ms) {
            t->st.slow_frames++;
            saga__tcp_log(t, SAGA_LOG_WARN,
                          "tcp: %s: a frame not complete after %u ms "
                          "(%zu bytes so far); closing",
                          c->name[0] ? c->name : "peer",
                          (unsigned)t->o.frame_deadline_ms, c->rlen);
            saga__tcp_conn_close(c, "frame deadline");
            continue;
        }
        /* Heartbeats alone do not keep a link that never said HELLO. */
        int anonymous = c->peer == NULL && !c->hello &&
                        now - c->born > t->o.dead_peer_ms;
        if (anonymous || now - c->last_rx > t->o.dead_peer_ms) {
            t->st.dead_peers++;
            saga__tcp_log(t, SAGA_LOG_WARN, "tcp: %s silent for %u ms, closing",
                          c->name[0] ? c->name : "peer",
                          (unsigned)t->o.dead_peer_ms);
            saga__tcp_conn_close(c, "dead peer");
        } else if ((c->peer == NULL || c->up) && !c->wpaused) {
            conn_write_ctl(c, SAGA__TCP_HEARTBEAT, NULL, 0);
        }
    }
}

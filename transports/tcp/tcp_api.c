/*
 * tcp_api.c — the TCP transport's constructor, vtable slots, close and
 * counters. The I/O lives in tcp_transport.c; the wire in tcp_wire.c.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "saga/tcp.h"
#include "tcp_int.h"

#define DEF_SERVICE "orchestrator"
#define DEF_LISTEN "127.0.0.1:0"
#define DEF_MAX_FRAME (4u << 20)
#define MIN_MAX_FRAME SAGA__TCP_MIN_FRAME
#define MAX_MAX_FRAME SAGA__TCP_MAX_FRAME
#define DEF_QUEUE_BYTES ((size_t)64 << 20)
#define DEF_QUEUE_MSGS 65536u
#define DEF_HEARTBEAT_MS 1000u
#define DEF_DEAD_MS 5000u
#define DEF_BACKOFF_MIN_MS 50u
#define DEF_BACKOFF_MAX_MS 5000u
#define DEF_BACKLOG_BYTES ((size_t)16 << 20)
#define DEF_MAX_CONNS 1024u
#define DEF_FRAME_DEADLINE_MS 30000u
#define DEF_READ_BYTES ((size_t)128 << 20)
#define DEF_WRITE_QUEUE_BYTES ((size_t)1 << 20)
/* Read-ahead room beyond the frame being read (tcp_transport.c on_alloc). */
#define READ_AHEAD 65536u

/* The bytes of each options / stats version a caller may pass. */
#define OPTIONS_V1_SIZE offsetof(saga_tcp_options, max_backlog_bytes)
#define STATS_V1_SIZE offsetof(saga_tcp_counters, unrouted_frames)
#define STATS_V2_SIZE offsetof(saga_tcp_counters, oversized)

static int tcp_send(saga_transport *self, const char *topic, const char *key,
                    const void *buf, size_t len, saga_sent_cb cb, void *arg);

static int set_err(tcp_t *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_err(tcp_t *t, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__verrf(t->err, sizeof t->err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

static int valid_name(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= SAGA_NAME_MAX;
}

static tcp_t *as_tcp(saga_transport *self)
{
    return self != NULL && self->send == tcp_send ? (tcp_t *)self : NULL;
}

void saga__tcp_rx_msg_free(rx_msg *m)
{
    saga__tcp_conn_release(m->conn, m->size);
    saga__tcp_conn_unref(m->conn);
    saga_free(m);
}
#define rx_msg_free saga__tcp_rx_msg_free

/* ---- slots ----------------------------------------------------------------- */

static tcp_peer *peer_find(tcp_t *t, const char *service)
{
    for (size_t i = 0; i < t->npeers; i++)
        if (strcmp(t->peers[i].service, service) == 0)
            return &t->peers[i];
    return NULL;
}

static int has_local_sub(tcp_t *t, const char *topic)
{
    for (saga__list *n = t->subs.next; n != &t->subs; n = n->next)
        if (strcmp(SAGA__CONTAINER(n, tcp_sub, node)->topic, topic) == 0)
            return 1;
    return 0;
}

/* The peer a message to @p topic goes to: the peer of that service name,
 * else, for a topic subscribed on this endpoint, the self route (it loops
 * back through our listener). NULL: no route. */
static tcp_peer *route_of(tcp_t *t, const char *topic)
{
    tcp_peer *p = peer_find(t, topic);
    if (p == NULL && has_local_sub(t, topic))
        p = peer_find(t, t->service);
    return p;
}

static int tcp_route(saga_transport *self, const char *topic)
{
    tcp_t *t = (tcp_t *)self;
    if (t == NULL)
        return SAGA_EINVAL;
    if (!valid_name(topic))
        return set_err(t, SAGA_EINVAL, "route: topic is NULL, empty or long");
    if (route_of(t, topic) == NULL)
        return set_err(t, SAGA_ENOROUTE,
                       "no peer for topic '%.255s' and no local subscriber",
                       topic);
    return SAGA_OK;
}

static int tcp_send(saga_transport *self, const char *topic, const char *key,
                    const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    tcp_t *t = (tcp_t *)self;
    if (t == NULL)
        return SAGA_EINVAL;
    if (t->closing)
        return set_err(t, SAGA_ECLOSED, "send: transport is closed");
    if (!valid_name(topic))
        return set_err(t, SAGA_EINVAL, "send: topic is NULL, empty or long");
    if (buf == NULL && len > 0)
        return set_err(t, SAGA_EINVAL, "send: buf is NULL but len > 0");
    size_t kl = key != NULL ? strlen(key) : 0;
    if (kl >= SAGA__TCP_NOKEY)
        return set_err(t, SAGA_EINVAL, "send: key longer than 65534 bytes");
    size_t flen = SAGA__TCP_DATA_OVERHEAD + strlen(topic) + kl;
    if (len > (size_t)t->o.max_frame_size ||
        flen - 4 + len > (size_t)t->o.max_frame_size)
        return set_err(t, SAGA_EINVAL,
                       "send: %zu bytes exceed max_frame_size %u", len,
                       (unsigned)t->o.max_frame_size);
    flen += len;
    tcp_peer *p = route_of(t, topic);
    if (p == NULL)
        return set_err(t, SAGA_ENOROUTE,
                       "send: no peer for topic '%.255s' and no local "
                       "subscriber",
                       topic);
    /* The receiver's own limit, once its limit answer told us: a frame
     * over it would be refused there and sent again on every reconnect,
     * holding up everything behind it. */
    if (p->peer_max != 0 && flen - 4 > p->peer_max) {
        t->st.oversized++;
        return set_err(t, SAGA_EINVAL,
                       "send: a %zu-byte frame exceeds the max_frame_size "
                       "%u of peer '%.64s'",
                       flen - 4, (unsigned)p->peer_max, p->service);
    }
    if (p->qmsgs + 1 > t->o.max_queue_msgs ||
        p->qbytes + flen > t->o.max_queue_bytes)
        return set_err(t, SAGA_EFULL,
                       "send: queue to '%s' is full (%u msgs, %zu bytes)",
                       topic, (unsigned)p->qmsgs, p->qbytes);
    out_msg *m = saga_malloc(sizeof *m);
    if (m == NULL)
        return set_err(t, SAGA_ENOMEM, "send: out of memory");
    memset(m, 0, sizeof *m);
    m->id = p->next_id + 1;
    if (saga__tcp_data_encode(m->id, topic, key, buf, len, &m->frame,
                              &m->flen) != SAGA_OK) {
        saga_free(m);
        return set_err(t, SAGA_ENOMEM, "send: out of memory");
    }
    p->next_id++;
    m->cb = cb;
    m->arg = arg;
    saga__list_push_back(&p->queue, &m->node);
    p->qbytes += m->flen;
    p->qmsgs++;
    p->active = 1;
    if (p->conn != NULL && p->conn->up)
        saga__tcp_write_data(p->conn, m);
    else if (p->conn == NULL && !uv_is_active((uv_handle_t *)&p->timer))
        saga__tcp_peer_connect(p);
    return SAGA_OK;
}

static int tcp_subscribe(saga_transport *self, const char *topic,
                         const char *group, saga_recv_cb cb, void *arg)
{
    tcp_t *t = (tcp_t *)self;
    if (t == NULL)
        return SAGA_EINVAL;
    if (t->closing)
        return set_err(t, SAGA_ECLOSED, "subscribe: transport is closed");
    if (!valid_name(topic) || !valid_name(group) || cb == NULL)
        return set_err(t, SAGA_EINVAL,
                       "subscribe: topic, group and cb are required");
    for (saga__list *n = t->subs.next; n != &t->subs; n = n->next) {
        tcp_sub *s = SAGA__CONTAINER(n, tcp_sub, node);
        if (strcmp(s->topic, topic) == 0 && strcmp(s->group, group) == 0)
            return set_err(t, SAGA_EDUP,
                           "subscribe: topic and group already subscribed");
    }
    tcp_sub *s = saga_malloc(sizeof *s);
    if (s == NULL)
        return set_err(t, SAGA_ENOMEM, "subscribe: out of memory");
    s->topic = saga__strdup(topic);
    s->group = saga__strdup(group);
    if (s->topic == NULL || s->group == NULL) {
        saga_free(s->topic);
        saga_free(s->group);
        saga_free(s);
        return set_err(t, SAGA_ENOMEM, "subscribe: out of memory");
    }
    s->cb = cb;
    s->arg = arg;
    saga__list_push_back(&t->subs, &s->node);
    /* The first subscription to a topic takes what waited for it. On
     * memory failure the rest stay in the backlog for a later one. */
    saga__list *n = t->backlog.next;
    while (n != &t->backlog) {
        rx_msg *m = SAGA__CONTAINER(n, rx_msg, node);
        n = n->next;
        if (strcmp(m->topic, topic) != 0)
            continue;
        if (saga__tcp_deliver(t, m, s) != SAGA_OK)
            break;
        saga__list_remove(&m->node);
        t->backlog_bytes -= m->size;
    }
    return SAGA_OK;
}

static int tcp_ack(saga_transport *self, saga_delivery *d)
{
    tcp_t *t = (tcp_t *)self;
    if (t == NULL || d == NULL)
        return SAGA_EINVAL;
    if (d->magic != SAGA__TCP_DELIVERY_MAGIC || d->t != t || !d->handed)
        return set_err(t, SAGA_EINVAL,
                       "ack: not an unacked delivery of this transport");
    rx_msg *m = d->m;
    saga__list_remove(&d->node);
    d->magic = 0;
    saga_free(d);
    if (--m->refs == 0) {
        /* Every group has it: now the sender may forget it. */
        if (!m->conn->closing && !t->closing)
            saga__tcp_conn_write_ack(m->conn, m->id);
        rx_msg_free(m);
    }
    return SAGA_OK;
}

static const char *tcp_errmsg(saga_transport *self)
{
    tcp_t *t = (tcp_t *)self;
    return t != NULL ? t->err : "no transport";
}

/* ---- close ----------------------------------------------------------------- */

static void finish(tcp_t *t)
{
    saga__list *n;
    /* Callbacks first (they may call slots, which answer SAGA_ECLOSED);
     * confirmed sends keep their status, the rest were dropped. */
    while ((n = saga__list_pop_front(&t->completed)) != NULL) {
        out_msg *m = SAGA__CONTAINER(n, out_msg, node);
        if (m->cb != NULL)
            m->cb(&t->base, m->status, m->arg);
        saga__tcp_out_msg_release(m);
    }
    for (size_t i = 0; i < t->npeers; i++) {
        tcp_peer *p = &t->peers[i];
        while ((n = saga__list_pop_front(&p->queue)) != NULL) {
            out_msg *m = SAGA__CONTAINER(n, out_msg, node);
            if (m->cb != NULL)
                m->cb(&t->base, SAGA_ECLOSED, m->arg);
            saga__tcp_out_msg_release(m);
        }
        saga_free(p->service);
    }
    saga__list *lists[] = {&t->ready, &t->handed};
    for (size_t i = 0; i < 2; i++) {
        while ((n = saga__list_pop_front(lists[i])) != NULL) {
            saga_delivery *d = SAGA__CONTAINER(n, saga_delivery, node);
            rx_msg *m = d->m;
            d->magic = 0;
            saga_free(d);
            if (--m->refs == 0)
                rx_msg_free(m);
        }
    }
    while ((n = saga__list_pop_front(&t->backlog)) != NULL)
        rx_msg_free(SAGA__CONTAINER(n, rx_msg, node));
    while ((n = saga__list_pop_front(&t->subs)) != NULL) {
        tcp_sub *s = SAGA__CONTAINER(n, tcp_sub, node);
        saga_free(s->topic);
        saga_free(s->group);
        saga_free(s);
    }
    saga_free(t->peers);
    saga_free(t->service);
    saga_free(t);
}

void saga__tcp_maybe_finish(tcp_t *t)
{
    if (t->closing && t->handles == 0)
        finish(t);
}

static void on_t_handle_closed(uv_handle_t *h)
{
    tcp_t *t = h->data;
    t->handles--;
    saga__tcp_maybe_finish(t);
}

static void on_peer_timer_closed(uv_handle_t *h)
{
    tcp_peer *p = h->data;
    p->t->handles--;
    saga__tcp_maybe_finish(p->t);
}

static void tcp_close(saga_transport *self)
{
    tcp_t *t = (tcp_t *)self;
    if (t == NULL || t->closing)
        return;
    /* Hand queued frames (acks of what the application committed) to the
     * kernel first: uv_write writes at once when it can. */
    saga__tcp_flush(t);
    t->closing = 1;
    uv_handle_t *own[] = {(uv_handle_t *)&t->listener,
                          (uv_handle_t *)&t->heartbeat,
                          (uv_handle_t *)&t->pump};
    for (size_t i = 0; i < 3; i++)
        if (own[i]->data != NULL)
            uv_close(own[i], on_t_handle_closed);
    for (size_t i = 0; i < t->npeers; i++)
        if (t->peers[i].timer.data != NULL)
            uv_close((uv_handle_t *)&t->peers[i].timer, on_peer_timer_closed);
    while (!saga__list_empty(&t->conns))
        saga__tcp_conn_close(SAGA__CONTAINER(t->conns.next, tcp_conn, node),
                             "transport closed");
    /* Nothing was opened: free now rather than never. */
    saga__tcp_maybe_finish(t);
}

/* ---- constructor ----------------------------------------------------------- */

int saga_tcp_options_init(saga_tcp_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    if (version == 0 || version > SAGA_TCP_OPTIONS_VERSION)
        return SAGA_EVERSION;
    /* A caller built against version 1 has the smaller struct. */
    memset(opts, 0, version == 1 ? OPTIONS_V1_SIZE : sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static int check_options(const saga_tcp_options *o, const char **why)
{
    struct sockaddr_storage ss;
    if (o->service != NULL && !valid_name(o->service))
        return *why = "service name is empty or longer than 255 bytes",
               SAGA_EINVAL;
    if (o->listen != NULL && saga__tcp_parse_addr(o->listen, &ss) != SAGA_OK)
        return *why = "listen is not host:port", SAGA_EINVAL;
    if (o->npeers > 0 && o->peers == NULL)
        return *why = "npeers > 0 but peers is NULL", SAGA_EINVAL;
    for (size_t i = 0; i < o->npeers; i++) {
        if (!valid_name(o->peers[i].service))
            return *why = "a peer's service name is empty or too long",
                   SAGA_EINVAL;
        if (saga__tcp_parse_addr(o->peers[i].address, &ss) != SAGA_OK)
            return *why = "a peer's address is not host:port", SAGA_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->peers[i].service, o->peers[j].service) == 0)
                return *why = "two peers have the same service name",
                       SAGA_EINVAL;
    }
    if (o->max_frame_size != 0 && (o->max_frame_size < MIN_MAX_FRAME ||
                                   o->max_frame_size > MAX_MAX_FRAME))
        return *why = "max_frame_size out of range", SAGA_EINVAL;
    if (o->max_read_bytes != 0 &&
        o->max_read_bytes <
            (o->max_frame_size ? o->max_frame_size : DEF_MAX_FRAME) +
                (size_t)READ_AHEAD + 4)
        return *why = "max_read_bytes is less than max_frame_size + 64 KiB",
               SAGA_EINVAL;
    return SAGA_OK;
}

static void apply_defaults(saga_tcp_options *o)
{
#define DEF(field, val)                                                        \
    if (o->field == 0)                                                         \
    o->field = (val)
    DEF(max_frame_size, DEF_MAX_FRAME);
    DEF(max_queue_bytes, DEF_QUEUE_BYTES);
    DEF(max_queue_msgs, DEF_QUEUE_MSGS);
    DEF(heartbeat_ms, DEF_HEARTBEAT_MS);
    DEF(dead_peer_ms, DEF_DEAD_MS);
    DEF(reconnect_min_ms, DEF_BACKOFF_MIN_MS);
    DEF(reconnect_max_ms, DEF_BACKOFF_MAX_MS);
    DEF(max_backlog_bytes, DEF_BACKLOG_BYTES);
    DEF(max_conns, DEF_MAX_CONNS);
    DEF(frame_deadline_ms, DEF_FRAME_DEADLINE_MS);
    DEF(max_read_bytes, DEF_READ_BYTES);
    DEF(max_write_queue_bytes, DEF_WRITE_QUEUE_BYTES);
#undef DEF
    if (o->max_read_bytes < (size_t)o->max_frame_size + READ_AHEAD + 4)
        o->max_read_bytes = (size_t)o->max_frame_size + READ_AHEAD + 4;
    if (o->reconnect_max_ms < o->reconnect_min_ms)
        o->reconnect_max_ms = o->reconnect_min_ms;
    /* Strings were checked and are copied elsewhere; do not keep them. */
    o->service = NULL;
    o->listen = NULL;
    o->peers = NULL;
}

static int init_peer(tcp_t *t, tcp_peer *p, const char *service,
                     const struct sockaddr_storage *addr)
{
    p->t = t;
    p->addr = *addr;
    p->backoff = t->o.reconnect_min_ms;
    saga__list_init(&p->queue);
    if ((p->service = saga__strdup(service)) == NULL)
        return SAGA_ENOMEM;
    t->npeers++; /* from here on, close and finish take care of it */
    if (uv_timer_init(t->loop, &p->timer) != 0)
        return SAGA_ETRANSPORT;
    p->timer.data = p;
    t->handles++;
    return SAGA_OK;
}

/* Listen, and learn the port (the caller may have asked for port 0). */
static int start_listening(tcp_t *t, const struct sockaddr_storage *addr,
                           struct sockaddr_storage *bound)
{
    int rc, len = sizeof *bound;
    if ((rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)addr, 0)) ||
        (rc = uv_listen((uv_stream_t *)&t->listener, 128,
                        saga__tcp_on_accept)) ||
        (rc = uv_tcp_getsockname(&t->listener, (struct sockaddr *)bound, &len)))
        return set_err(t, SAGA_ETRANSPORT, "cannot listen: %s",
                       uv_strerror(rc));
    t->port = bound->ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)bound)->sin6_port)
                  : ntohs(((struct sockaddr_in *)bound)->sin_port);
    return SAGA_OK;
}

/* Without a configured peer of our own name, sends to our own name loop
 * back through our listener, so a service can message itself. */
static void self_address(struct sockaddr_storage *bound)
{
    if (bound->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)bound;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)bound;
        if (memcmp(&a->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0)
            a->sin6_addr = in6addr_loopback;
    }
}

static int tcp_open(tcp_t *t, const saga_tcp_options *opts)
{
    struct sockaddr_storage laddr, bound, pa;
    int rc;
    /* A handle's data is set once it is initialised: close uses that to
     * know which handles to close after a failure here. */
    if (uv_idle_init(t->loop, &t->pump) != 0)
        return set_err(t, SAGA_ETRANSPORT, "cannot make uv handles");
    t->handles++;
    t->pump.data = t;
    if (uv_timer_init(t->loop, &t->heartbeat) != 0)
        return set_err(t, SAGA_ETRANSPORT, "cannot make uv handles");
    t->handles++;
    t->heartbeat.data = t;
    if (uv_tcp_init(t->loop, &t->listener) != 0)
        return set_err(t, SAGA_ETRANSPORT, "cannot make uv handles");
    t->handles++;
    t->listener.data = t;
    saga__tcp_parse_addr(opts->listen ? opts->listen : DEF_LISTEN, &laddr);
    if ((rc = start_listening(t, &laddr, &bound)) != SAGA_OK)
        return rc;
    self_address(&bound);
    int self_routed = 0;
    for (size_t i = 0; i < opts->npeers; i++)
        self_routed |= strcmp(opts->peers[i].service, t->service) == 0;
    t->peers = saga_malloc((opts->npeers + 1) * sizeof *t->peers);
    if (t->peers == NULL)
        return set_err(t, SAGA_ENOMEM, "out of memory");
    memset(t->peers, 0, (opts->npeers + 1) * sizeof *t->peers);
    for (size_t i = 0; i < opts->npeers; i++) {
        saga__tcp_parse_addr(opts->peers[i].address, &pa);
        if ((rc = init_peer(t, &t->peers[i], opts->peers[i].service, &pa)))
            return set_err(t, rc, "cannot set up peer '%s'",
                           opts->peers[i].service);
    }
    if (!self_routed) {
        if ((rc = init_peer(t, &t->peers[t->npeers], t->service, &bound)))
            return set_err(t, rc, "cannot set up the self route");
    }
    uv_timer_start(&t->heartbeat, saga__tcp_on_heartbeat, t->o.heartbeat_ms,
                   t->o.heartbeat_ms);
    return SAGA_OK;
}

/* libuv writes with write(2), so a write to a peer that has just gone away
 * raises SIGPIPE, whose default action kills the process. Only the default
 * is replaced; a handler or SIG_IGN the application chose stays. */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

/* The TCP transport's vtable: one constant table, copied into each
 * transport (nng's nni_sp_dialer_ops). */
static const saga_transport tcp_ops = {
    .version = SAGA_TRANSPORT_VERSION,
    /* version 1 */
    .send = tcp_send,
    .subscribe = tcp_subscribe,
    .ack = tcp_ack,
    .errmsg = tcp_errmsg,
    .close = tcp_close,
    /* version 2 */
    .route = tcp_route,
};

int saga_transport_tcp_new(saga_transport **out, uv_loop_t *loop,
                           const saga_tcp_options *opts)
{
    saga_tcp_options copy;
    const char *why = NULL;
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (loop == NULL) {
        saga_open_errmsg_set("tcp: no loop");
        return SAGA_EINVAL;
    }
    memset(&copy, 0, sizeof copy);
    copy.version = SAGA_TCP_OPTIONS_VERSION;
    if (opts != NULL) {
        if (saga__check_version(opts, SAGA_TCP_OPTIONS_VERSION) != SAGA_OK) {
            saga_open_errmsg_set("tcp: options version %u not supported "
                                 "(1..%d)",
                                 opts->version, SAGA_TCP_OPTIONS_VERSION);
            return SAGA_EVERSION;
        }
        /* Read only what the caller's version has; newer fields stay 0
         * (their defaults). */
        memcpy(&copy, opts, opts->version == 1 ? OPTIONS_V1_SIZE : sizeof copy);
    }
    opts = &copy;
    int rc = check_options(opts, &why);
    if (rc != SAGA_OK) {
        /* The options' fault, named: the caller has no transport to ask. */
        saga_open_errmsg_set("tcp: %s", why ? why : saga_strerror(rc));
        return rc;
    }
    tcp_t *t = saga_malloc(sizeof *t);
    if (t == NULL) {
        saga_open_errmsg_set("tcp: out of memory");
        return SAGA_ENOMEM;
    }
    ignore_sigpipe();
    memset(t, 0, sizeof *t);
    t->base = tcp_ops;
    t->loop = loop;
    t->o = *opts;
    apply_defaults(&t->o);
    saga__list_init(&t->conns);
    saga__list_init(&t->subs);
    saga__list_init(&t->backlog);
    saga__list_init(&t->ready);
    saga__list_init(&t->handed);
    saga__list_init(&t->completed);
    saga__list_init(&t->flushq);
    t->service = saga__strdup(opts->service ? opts->service : DEF_SERVICE);
    if (t->service == NULL) {
        saga_free(t);
        saga_open_errmsg_set("tcp: out of memory");
        return SAGA_ENOMEM;
    }
    if ((rc = tcp_open(t, opts)) != SAGA_OK) {
        /* Handles that were opened are closed; the memory goes when the
         * loop next runs their close callbacks. */
        saga__tcp_log(t, SAGA_LOG_ERROR, "tcp: %s", t->err);
        saga_open_errmsg_set("tcp: %s", t->err);
        tcp_close(&t->base);
        return rc;
    }
    *out = &t->base;
    return SAGA_OK;
}

int saga_transport_tcp_port(saga_transport *self, int *port)
{
    tcp_t *t = as_tcp(self);
    if (t == NULL || port == NULL)
        return SAGA_EINVAL;
    *port = t->port;
    return SAGA_OK;
}

int saga_transport_tcp_stats(saga_transport *self, saga_tcp_counters *out)
{
    tcp_t *t = as_tcp(self);
    if (t == NULL || out == NULL)
        return SAGA_EINVAL;
    if (out->version == 0 || out->version > SAGA_TCP_COUNTERS_VERSION)
        return SAGA_EVERSION;
    unsigned int v = out->version;
    /* Write only what the caller's version has room for. */
    memcpy(out, &t->st,
           v == 1   ? STATS_V1_SIZE
           : v == 2 ? STATS_V2_SIZE
                    : sizeof t->st);
    out->version = v;
    return SAGA_OK;
}

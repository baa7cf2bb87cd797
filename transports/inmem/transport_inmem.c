/*
 * transport_inmem.c — the in-memory transport: endpoints on one loop that
 * share a bus, with broker-like semantics.
 *
 * Model (a tiny Kafka on one loop):
 * - A topic has consumer groups. Every group gets every message sent to the
 *   topic after the group exists; subscribers of one group share them.
 * - Messages sent to a topic before any group subscribed are kept in the
 *   topic's backlog. Every group that subscribes before the end of the loop
 *   turn in which the first group subscribed gets that backlog; then the
 *   backlog is dropped (it has been "consumed").
 * - Within a group a message is assigned to one subscriber: by a hash of its
 *   key (so one key stays with one subscriber and keeps its order), or round
 *   robin when the key is NULL.
 * - An assigned delivery stays on its subscriber until acked. If the
 *   subscriber's endpoint closes first, its unacked and not-yet-delivered
 *   messages go back to the front of the group's queue, in order, for the
 *   group's other (or future) subscribers. A group, once created, lives as
 *   long as the bus, as a broker keeps a group's offsets.
 *
 * Nothing is ever called back from inside send/subscribe/ack/close: work is
 * queued and an idle handle of an endpoint runs it on a later loop turn. The
 * idle handle is started only while there is work, so the loop is alive
 * exactly while messages or callbacks are pending. The in-memory queues are
 * unbounded: send never returns SAGA_EFULL. Every topic routes (route()
 * never says SAGA_ENOROUTE): a topic may get its first group later.
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "saga/saga.h"
#include "util.h"

/* ---- lists: lib/util.h's, under this file's short names ------------------ */

typedef saga__list qlink;
#define CONTAINER SAGA__CONTAINER
#define l_init saga__list_init
#define l_empty saga__list_empty
#define l_push_back saga__list_push_back
#define l_remove saga__list_remove
#define l_pop_front saga__list_pop_front
#define l_splice_front saga__list_splice_front

/* ---- types --------------------------------------------------------------- */

/* One sent message, shared (refcounted) by every group that must get it. */
typedef struct inmem_msg {
    unsigned refs;
    const char *key; /* NULL or points into the same allocation */
    size_t len;
    unsigned char data[]; /* len bytes, then the key and its NUL */
} inmem_msg;

typedef struct backlog_item {
    qlink node;
    inmem_msg *msg;
} backlog_item;

typedef struct inmem_topic {
    qlink node; /* bus->topics */
    char *name;
    qlink groups;
    qlink backlog;    /* backlog_item */
    int backlog_open; /* sends still go to the backlog */
} inmem_topic;

typedef struct inmem_group {
    qlink node; /* topic->groups */
    inmem_topic *topic;
    char *name;
    qlink pending; /* saga_delivery, not yet assigned */
    qlink subs;    /* inmem_sub.gnode */
    unsigned rr;
} inmem_group;

typedef struct inmem_ep inmem_ep;

typedef struct inmem_sub {
    qlink gnode;  /* group->subs; unlinked when the endpoint closes */
    qlink epnode; /* ep->subs */
    inmem_group *group;
    inmem_ep *ep;
    saga_recv_cb cb;
    void *arg;
    qlink inbox;   /* assigned, not yet handed to cb */
    qlink handing; /* taken from inbox for this turn, not yet handed */
    qlink unacked; /* handed to cb, waiting for ack */
} inmem_sub;

#define DELIVERY_MAGIC 0x53414744u /* "SAGD" */

struct saga_delivery {
    qlink node;
    uint32_t magic;
    int handed; /* 1 while the application holds it */
    inmem_msg *msg;
    inmem_group *group;
    inmem_sub *sub; /* NULL while pending in the group */
};

typedef struct pending_send {
    qlink node;
    saga_sent_cb cb;
    void *arg;
} pending_send;

struct inmem_ep {
    saga_transport base; /* first: the vtable */
    qlink node;          /* bus->eps while open */
    saga_inmem_bus *bus;
    uv_idle_t idle;
    qlink subs;
    qlink sent; /* pending_send */
    int closing;
    char err[160];
};

struct saga_inmem_bus {
    uv_loop_t *loop;
    qlink eps;     /* open endpoints */
    qlink topics;  /* inmem_topic */
    int dirty;     /* groups may have pending deliveries to assign */
    unsigned live; /* endpoints not yet freed */
    int freeing;   /* saga_inmem_bus_free() ran while endpoints lived */
};

/* ---- helpers ------------------------------------------------------------- */

static void msg_unref(inmem_msg *m)
{
    if (--m->refs == 0)
        saga_free(m);
}

static void delivery_free(saga_delivery *d)
{
    d->magic = 0;
    msg_unref(d->msg);
    saga_free(d);
}

static int set_err(inmem_ep *ep, int rc, const char *msg)
{
    snprintf(ep->err, sizeof ep->err, "%s", msg);
    return rc;
}

static void ep_pump(uv_idle_t *h);

static void ep_kick(inmem_ep *ep)
{
    if (!ep->closing)
        uv_idle_start(&ep->idle, ep_pump);
}

static void bus_kick(saga_inmem_bus *bus);

static inmem_topic *topic_find(saga_inmem_bus *bus, const char *name)
{
    for (qlink *n = bus->topics.next; n != &bus->topics; n = n->next) {
        inmem_topic *t = CONTAINER(n, inmem_topic, node);
        if (strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

static inmem_topic *topic_get(saga_inmem_bus *bus, const char *name)
{
    inmem_topic *t = topic_find(bus, name);
    if (t != NULL)
        return t;
    t = saga_malloc(sizeof *t);
    if (t == NULL)
        return NULL;
    if ((t->name = saga__strdup(name)) == NULL) {
        saga_free(t);
        return NULL;
    }
    l_init(&t->groups);
    l_init(&t->backlog);
    t->backlog_open = 1;
    l_push_back(&bus->topics, &t->node);
    return t;
}

static void backlog_drop(inmem_topic *t)
{
    qlink *n;
    while ((n = l_pop_front(&t->backlog)) != NULL) {
        backlog_item *b = CONTAINER(n, backlog_item, node);
        msg_unref(b->msg);
        saga_free(b);
    }
}

static void group_free(inmem_group *g)
{
    qlink *n;
    while ((n = l_pop_front(&g->pending)) != NULL)
        delivery_free(CONTAINER(n, saga_delivery, node));
    saga_free(g->name);
    saga_free(g);
}

static void topic_free(inmem_topic *t)
{
    qlink *n;
    while ((n = l_pop_front(&t->groups)) != NULL)
        group_free(CONTAINER(n, inmem_group, node));
    backlog_drop(t);
    saga_free(t->name);
    saga_free(t);
}

static void bus_destroy(saga_inmem_bus *bus)
{
    qlink *n;
    while ((n = l_pop_front(&bus->topics)) != NULL)
        topic_free(CONTAINER(n, inmem_topic, node));
    saga_free(bus);
}

/* Queue @p m for group @p g. The caller holds a reference it keeps. */
static int group_enqueue(inmem_group *g, inmem_msg *m)
{
    saga_delivery *d = saga_malloc(sizeof *d);
    if (d == NULL)
        return SAGA_ENOMEM;
    d->magic = DELIVERY_MAGIC;
    d->handed = 0;
    d->msg = m;
    d->group = g;
    d->sub = NULL;
    m->refs++;
    l_push_back(&g->pending, &d->node);
    return SAGA_OK;
}

/* Assign every pending delivery of every group that has a subscriber, and
 * drop backlogs that their first groups have taken. */
static void bus_distribute(saga_inmem_bus *bus)
{
    for (qlink *tn = bus->topics.next; tn != &bus->topics; tn = tn->next) {
        inmem_topic *t = CONTAINER(tn, inmem_topic, node);
        if (!l_empty(&t->groups)) {
            t->backlog_open = 0;
            backlog_drop(t);
        }
        for (qlink *gn = t->groups.next; gn != &t->groups; gn = gn->next) {
            inmem_group *g = CONTAINER(gn, inmem_group, node);
            unsigned nsubs = 0;
            for (qlink *s = g->subs.next; s != &g->subs; s = s->next)
                nsubs++;
            if (nsubs == 0)
                continue;
            qlink *n;
            while ((n = l_pop_front(&g->pending)) != NULL) {
                saga_delivery *d = CONTAINER(n, saga_delivery, node);
                unsigned pick = d->msg->key != NULL
                                    ? saga__hash_str(d->msg->key) % nsubs
                                    : g->rr++ % nsubs;
                qlink *s = g->subs.next;
                while (pick--)
                    s = s->next;
                inmem_sub *sub = CONTAINER(s, inmem_sub, gnode);
                d->sub = sub;
                l_push_back(&sub->inbox, &d->node);
                ep_kick(sub->ep);
            }
        }
    }
}

static int ep_has_work(inmem_ep *ep)
{
    if (!l_empty(&ep->sent))
        return 1;
    for (qlink *n = ep->subs.next; n != &ep->subs; n = n->next)
        if (!l_empty(&CONTAINER(n, inmem_sub, epnode)->inbox))
            return 1;
    return 0;
}

/* The endpoint's turn: assign, confirm sends, deliver. Callbacks may call
 * any slot, including close on this endpoint, so every loop re-checks
 * ep->closing and touches nothing a callback may have freed. */
static void ep_pump(uv_idle_t *h)
{
    inmem_ep *ep = h->data;
    saga_inmem_bus *bus = ep->bus;

    if (bus->dirty) {
        bus->dirty = 0;
        bus_distribute(bus);
    }

    /* Confirm only the sends queued before this turn; ones made by these
     * callbacks are confirmed on the next turn. */
    qlink batch;
    l_init(&batch);
    l_splice_front(&batch, &ep->sent);
    qlink *n;
    while (!ep->closing && (n = l_pop_front(&batch)) != NULL) {
        pending_send *p = CONTAINER(n, pending_send, node);
        saga_sent_cb cb = p->cb;
        void *arg = p->arg;
        saga_free(p);
        cb(&ep->base, SAGA_OK, arg);
    }
    /* Closed by a callback: the rest get SAGA_ECLOSED in the close cb. */
    l_splice_front(&ep->sent, &batch);

    for (qlink *sn = ep->subs.next; !ep->closing && sn != &ep->subs;
         sn = sn->next) {
        inmem_sub *sub = CONTAINER(sn, inmem_sub, epnode);
        /* Bound the turn to what was in the inbox when it started. A
         * callback that closes us makes close requeue sub->handing, so the
         * group keeps the order. */
        l_splice_front(&sub->handing, &sub->inbox);
        while (!ep->closing && (n = l_pop_front(&sub->handing)) != NULL) {
            saga_delivery *d = CONTAINER(n, saga_delivery, node);
            d->handed = 1;
            l_push_back(&sub->unacked, &d->node);
            sub->cb(&ep->base, d, sub->group->topic->name, d->msg->key,
                    d->msg->data, d->msg->len, sub->arg);
        }
    }

    if (!ep->closing && !bus->dirty && !ep_has_work(ep))
        uv_idle_stop(&ep->idle);
}

static void bus_kick(saga_inmem_bus *bus)
{
    bus->dirty = 1;
    if (!l_empty(&bus->eps))
        uv_idle_start(&CONTAINER(bus->eps.next, inmem_ep, node)->idle, ep_pump);
}

/* ---- vtable slots -------------------------------------------------------- */

static int inmem_send(saga_transport *self, const char *topic, const char *key,
                      const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL)
        return SAGA_EINVAL;
    if (ep->closing)
        return set_err(ep, SAGA_ECLOSED, "send: transport is closed");
    if (topic == NULL || topic[0] == '\0')
        return set_err(ep, SAGA_EINVAL, "send: topic is NULL or empty");
    if (buf == NULL && len > 0)
        return set_err(ep, SAGA_EINVAL, "send: buf is NULL but len > 0");
    size_t klen = key != NULL ? strlen(key) + 1 : 0;
    if (len > SIZE_MAX - sizeof(inmem_msg) - klen)
        return set_err(ep, SAGA_EINVAL, "send: message too large");

    saga_inmem_bus *bus = ep->bus;
    inmem_topic *t = topic_get(bus, topic);
    pending_send *p = NULL;
    inmem_msg *m = saga_malloc(sizeof *m + len + klen);
    if (cb != NULL)
        p = saga_malloc(sizeof *p);
    if (t == NULL || m == NULL || (cb != NULL && p == NULL)) {
        saga_free(m);
        saga_free(p);
        return set_err(ep, SAGA_ENOMEM, "send: out of memory");
    }
    m->refs = 1; /* ours, dropped below */
    m->len = len;
    if (len > 0)
        memcpy(m->data, buf, len);
    m->key = NULL;
    if (key != NULL) {
        memcpy(m->data + len, key, klen);
        m->key = (const char *)m->data + len;
    }

    /* Allocate every queue entry first, so a failure leaves nothing
     * half-sent: all groups get the message or none does. */
    backlog_item *b = NULL;
    if (t->backlog_open && (b = saga_malloc(sizeof *b)) == NULL)
        goto nomem;
    qlink added;
    l_init(&added);
    for (qlink *gn = t->groups.next; gn != &t->groups; gn = gn->next) {
        inmem_group *g = CONTAINER(gn, inmem_group, node);
        if (group_enqueue(g, m) != SAGA_OK) {
            /* Undo: the last delivery of each earlier group is ours. */
            for (qlink *u = t->groups.next; u != gn; u = u->next) {
                inmem_group *ug = CONTAINER(u, inmem_group, node);
                qlink *last = ug->pending.prev;
                l_remove(last);
                delivery_free(CONTAINER(last, saga_delivery, node));
            }
            saga_free(b);
            goto nomem;
        }
    }
    if (b != NULL) {
        b->msg = m;
        m->refs++;
        l_push_back(&t->backlog, &b->node);
    }
    msg_unref(m);

    if (p != NULL) {
        p->cb = cb;
        p->arg = arg;
        l_push_back(&ep->sent, &p->node);
        uv_idle_start(&ep->idle, ep_pump);
    }
    bus_kick(bus);
    return SAGA_OK;

nomem:
    saga_free(m);
    saga_free(p);
    return set_err(ep, SAGA_ENOMEM, "send: out of memory");
}

/* Every topic is a route on a bus: like a broker, the bus keeps what is
 * sent to a topic for the first groups that subscribe later, and a topic
 * nobody has subscribed to yet may still get its subscriber (a service
 * that starts after its callers). No topic name is ever known to be wrong,
 * so this never says SAGA_ENOROUTE. */
static int inmem_route(saga_transport *self, const char *topic)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL)
        return SAGA_EINVAL;
    if (topic == NULL || topic[0] == '\0')
        return set_err(ep, SAGA_EINVAL, "route: topic is NULL or empty");
    return SAGA_OK;
}

static int inmem_subscribe(saga_transport *self, const char *topic,
                           const char *group, saga_recv_cb cb, void *arg)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL)
        return SAGA_EINVAL;
    if (ep->closing)
        return set_err(ep, SAGA_ECLOSED, "subscribe: transport is closed");
    if (topic == NULL || topic[0] == '\0' || group == NULL ||
        group[0] == '\0' || cb == NULL)
        return set_err(ep, SAGA_EINVAL,
                       "subscribe: topic, group and cb are required");
    for (qlink *n = ep->subs.next; n != &ep->subs; n = n->next) {
        inmem_sub *s = CONTAINER(n, inmem_sub, epnode);
        if (strcmp(s->group->name, group) == 0 &&
            strcmp(s->group->topic->name, topic) == 0)
            return set_err(ep, SAGA_EDUP,
                           "subscribe: topic and group already subscribed");
    }

    saga_inmem_bus *bus = ep->bus;
    inmem_topic *t = topic_get(bus, topic);
    if (t == NULL)
        return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
    inmem_group *g = NULL;
    for (qlink *n = t->groups.next; n != &t->groups; n = n->next) {
        inmem_group *x = CONTAINER(n, inmem_group, node);
        if (strcmp(x->name, group) == 0)
            g = x;
    }
    inmem_sub *sub = saga_malloc(sizeof *sub);
    if (sub == NULL)
        return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
    if (g == NULL) {
        g = saga_malloc(sizeof *g);
        if (g == NULL || (g->name = saga__strdup(group)) == NULL) {
            saga_free(g);
            saga_free(sub);
            return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
        }
        g->topic = t;
        g->rr = 0;
        l_init(&g->pending);
        l_init(&g->subs);
        /* A new group starts with the topic's backlog, if still open. */
        for (qlink *n = t->backlog.next; n != &t->backlog; n = n->next) {
            if (group_enqueue(g, CONTAINER(n, backlog_item, node)->msg) !=
                SAGA_OK) {
                group_free(g);
                saga_free(sub);
                return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
            }
        }
        l_push_back(&t->groups, &g->node);
    }
    sub->group = g;
    sub->ep = ep;
    sub->cb = cb;
    sub->arg = arg;
    l_init(&sub->inbox);
    l_init(&sub->handing);
    l_init(&sub->unacked);
    l_push_back(&g->subs, &sub->gnode);
    l_push_back(&ep->subs, &sub->epnode);
    bus_kick(bus);
    return SAGA_OK;
}

static int inmem_ack(saga_transport *self, saga_delivery *d)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL || d == NULL)
        return SAGA_EINVAL;
    if (d->magic != DELIVERY_MAGIC || !d->handed || d->sub == NULL ||
        d->sub->ep != ep)
        return set_err(ep, SAGA_EINVAL,
                       "ack: not an unacked delivery of this transport");
    l_remove(&d->node);
    delivery_free(d);
    return SAGA_OK;
}

static const char *inmem_errmsg(saga_transport *self)
{
    inmem_ep *ep = (inmem_ep *)self;
    return ep != NULL ? ep->err : "no transport";
}

static void ep_closed(uv_handle_t *h)
{
    inmem_ep *ep = h->data;
    saga_inmem_bus *bus = ep->bus;
    qlink *n;
    /* The callbacks may call send (which fails: closing is set). */
    while ((n = l_pop_front(&ep->sent)) != NULL) {
        pending_send *p = CONTAINER(n, pending_send, node);
        saga_sent_cb cb = p->cb;
        void *arg = p->arg;
        saga_free(p);
        cb(&ep->base, SAGA_ECLOSED, arg);
    }
    while ((n = l_pop_front(&ep->subs)) != NULL)
        saga_free(CONTAINER(n, inmem_sub, epnode));
    saga_free(ep);
    if (--bus->live == 0 && bus->freeing)
        bus_destroy(bus);
}

static void inmem_close(saga_transport *self)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL || ep->closing)
        return;
    ep->closing = 1;
    l_remove(&ep->node);
    int moved = 0;
    for (qlink *n = ep->subs.next; n != &ep->subs; n = n->next) {
        inmem_sub *sub = CONTAINER(n, inmem_sub, epnode);
        l_remove(&sub->gnode);
        /* Oldest first: handed-out ones, then the not yet handed ones. */
        qlink back;
        l_init(&back);
        l_splice_front(&back, &sub->inbox);
        l_splice_front(&back, &sub->handing);
        l_splice_front(&back, &sub->unacked);
        for (qlink *x = back.next; x != &back; x = x->next) {
            saga_delivery *d = CONTAINER(x, saga_delivery, node);
            d->sub = NULL;
            d->handed = 0;
            moved = 1;
        }
        l_splice_front(&sub->group->pending, &back);
    }
    /* Another endpoint takes over the assignment this one may have owed. */
    if (moved || ep->bus->dirty)
        bus_kick(ep->bus);
    uv_close((uv_handle_t *)&ep->idle, ep_closed);
}

/* ---- public -------------------------------------------------------------- */

int saga_inmem_bus_new(saga_inmem_bus **out, struct uv_loop_s *loop)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (loop == NULL)
        return SAGA_EINVAL;
    saga_inmem_bus *bus = saga_malloc(sizeof *bus);
    if (bus == NULL)
        return SAGA_ENOMEM;
    memset(bus, 0, sizeof *bus);
    bus->loop = loop;
    l_init(&bus->eps);
    l_init(&bus->topics);
    *out = bus;
    return SAGA_OK;
}

void saga_inmem_bus_free(saga_inmem_bus *bus)
{
    if (bus == NULL)
        return;
    if (bus->live == 0) {
        bus_destroy(bus);
        return;
    }
    /* Endpoints are closing (or, against the contract, still open): close
     * them and let the last close callback free the bus. */
    bus->freeing = 1;
    while (!l_empty(&bus->eps))
        inmem_close(&CONTAINER(bus->eps.next, inmem_ep, node)->base);
}

/* The in-memory transport's vtable: one constant table, copied into each
 * endpoint (nng's inproc ops). */
static const saga_transport inmem_ops = {
    .version = SAGA_TRANSPORT_VERSION,
    /* version 1 */
    .send = inmem_send,
    .subscribe = inmem_subscribe,
    .ack = inmem_ack,
    .errmsg = inmem_errmsg,
    .close = inmem_close,
    /* version 2 */
    .route = inmem_route,
};

int saga_transport_inmem_new(saga_transport **out, saga_inmem_bus *bus)
{
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (bus == NULL || bus->freeing) {
        saga_open_errmsg_set("inmem: %s",
                             bus ? "the bus is being freed" : "no bus");
        return SAGA_EINVAL;
    }
    inmem_ep *ep = saga_malloc(sizeof *ep);
    if (ep == NULL) {
        saga_open_errmsg_set("inmem: out of memory");
        return SAGA_ENOMEM;
    }
    memset(ep, 0, sizeof *ep);
    ep->base = inmem_ops;
    ep->bus = bus;
    l_init(&ep->subs);
    l_init(&ep->sent);
    if (uv_idle_init(bus->loop, &ep->idle) != 0) {
        saga_free(ep);
        return SAGA_ENOMEM;
    }
    ep->idle.data = ep;
    l_push_back(&bus->eps, &ep->node);
    bus->live++;
    *out = &ep->base;
    return SAGA_OK;
}

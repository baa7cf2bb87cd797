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
 *
 * A shared bus (saga_inmem_bus_new_shared) has endpoints on several loops,
 * one loop per thread. One mutex guards the bus and every queue of it; no
 * callback runs under it. Each endpoint's own lists (sent, subs, handing,
 * unacked) are touched only on its loop's thread; inboxes are filled by
 * whichever thread distributes, under the lock. An endpoint wakes itself
 * with its idle handle and another endpoint with that one's async handle
 * (which starts its idle handle on its own thread). An endpoint is removed
 * from every group and its async handle closed under the lock, so no
 * thread wakes it after its close; the last endpoint to be freed frees a
 * bus whose free was asked for.
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "saga/saga.h"
#include "util.h"

#include <stdint.h>

/* ---- types --------------------------------------------------------------- */

typedef struct pending_send pending_send;

/* One sent message, shared (refcounted) by every group that must get it. */
typedef struct inmem_msg {
    unsigned refs;
    unsigned unacked; /* deliveries to groups not yet acked */
    pending_send *ps; /* its sender's confirmation, until every ack */
    const char *key;  /* NULL or points into the same allocation */
    size_t len;
    unsigned char data[]; /* len bytes, then the key and its NUL */
} inmem_msg;

typedef struct backlog_item {
    saga__list node;
    inmem_msg *msg;
} backlog_item;

typedef struct inmem_topic {
    saga__list node; /* bus->topics */
    char *name;
    saga__list groups;
    saga__list backlog; /* backlog_item */
    int backlog_open;   /* sends still go to the backlog */
} inmem_topic;

typedef struct inmem_group {
    saga__list node; /* topic->groups */
    inmem_topic *topic;
    char *name;
    saga__list pending; /* saga_delivery, not yet assigned */
    saga__list subs;    /* inmem_sub.gnode */
    unsigned rr;
} inmem_group;

typedef struct inmem_ep inmem_ep;

typedef struct inmem_sub {
    saga__list gnode;  /* group->subs; unlinked when the endpoint closes */
    saga__list epnode; /* ep->subs */
    inmem_group *group;
    inmem_ep *ep;
    saga_recv_cb cb;
    void *arg;
    saga__list inbox;   /* assigned, not yet handed to cb */
    saga__list handing; /* taken from inbox for this turn, not yet handed */
    saga__list unacked; /* handed to cb, waiting for ack */
} inmem_sub;

#define DELIVERY_MAGIC 0x53414744u /* "SAGD" */

struct saga_delivery {
    saga__list node;
    uint32_t magic;
    int handed; /* 1 while the application holds it */
    inmem_msg *msg;
    inmem_group *group;
    inmem_sub *sub; /* NULL while pending in the group */
};

struct pending_send {
    saga__list node; /* ep->waiting until every group acked, then ep->sent */
    saga_sent_cb cb;
    void *arg;
    inmem_ep *ep;
    inmem_msg *msg; /* NULL once confirmed or detached */
};

struct inmem_ep {
    saga_transport base; /* first: the vtable */
    saga__list node;     /* bus->eps while open */
    saga_inmem_bus *bus;
    uv_loop_t *loop;
    uv_idle_t idle;
    uv_async_t async; /* shared bus: woken by another endpoint */
    int handles;      /* handles not yet closed */
    saga__list subs;
    saga__list sent;    /* pending_send, to confirm on the next turn */
    saga__list waiting; /* pending_send, waiting for the groups' acks */
    int closing;
    char err[160];
};

struct saga_inmem_bus {
    uv_loop_t *loop;   /* NULL on a shared bus */
    int shared;        /* endpoints on several loops: lock is used */
    uv_mutex_t lock;   /* shared: guards all below and every queue */
    saga__list eps;    /* open endpoints */
    saga__list topics; /* inmem_topic */
    int dirty;         /* groups may have pending deliveries to assign */
    unsigned live;     /* endpoints not yet freed */
    int freeing;       /* saga_inmem_bus_free() ran while endpoints lived */
};

/* ---- helpers ------------------------------------------------------------- */

static void bus_lock(saga_inmem_bus *bus)
{
    if (bus->shared)
        uv_mutex_lock(&bus->lock);
}

static void bus_unlock(saga_inmem_bus *bus)
{
    if (bus->shared)
        uv_mutex_unlock(&bus->lock);
}

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

/* Wake @p ep; @p self is the endpoint whose thread runs this (NULL: none
 * known). Under the lock on a shared bus. */
static void ep_kick(inmem_ep *ep, inmem_ep *self)
{
    if (ep->closing)
        return;
    if (!ep->bus->shared || ep == self)
        uv_idle_start(&ep->idle, ep_pump);
    else
        uv_async_send(&ep->async);
}

static void bus_kick(saga_inmem_bus *bus, inmem_ep *self);

static inmem_topic *topic_find(saga_inmem_bus *bus, const char *name)
{
    for (saga__list *n = bus->topics.next; n != &bus->topics; n = n->next) {
        inmem_topic *t = SAGA__CONTAINER(n, inmem_topic, node);
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
    saga__list_init(&t->groups);
    saga__list_init(&t->backlog);
    t->backlog_open = 1;
    saga__list_push_back(&bus->topics, &t->node);
    return t;
}

static void backlog_drop(inmem_topic *t)
{
    saga__list *n;
    while ((n = saga__list_pop_front(&t->backlog)) != NULL) {
        backlog_item *b = SAGA__CONTAINER(n, backlog_item, node);
        msg_unref(b->msg);
        saga_free(b);
    }
}

static void group_free(inmem_group *g)
{
    saga__list *n;
    while ((n = saga__list_pop_front(&g->pending)) != NULL)
        delivery_free(SAGA__CONTAINER(n, saga_delivery, node));
    saga_free(g->name);
    saga_free(g);
}

static void topic_free(inmem_topic *t)
{
    saga__list *n;
    while ((n = saga__list_pop_front(&t->groups)) != NULL)
        group_free(SAGA__CONTAINER(n, inmem_group, node));
    backlog_drop(t);
    saga_free(t->name);
    saga_free(t);
}

static void bus_destroy(saga_inmem_bus *bus)
{
    saga__list *n;
    while ((n = saga__list_pop_front(&bus->topics)) != NULL)
        topic_free(SAGA__CONTAINER(n, inmem_topic, node));
    if (bus->shared)
        uv_mutex_destroy(&bus->lock);
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
    m->unacked++;
    saga__list_push_back(&g->pending, &d->node);
    return SAGA_OK;
}

/* Assign every pending delivery of every group that has a subscriber, and
 * drop backlogs that their first groups have taken. Runs on @p self's
 * thread (under the lock on a shared bus). */
static void bus_distribute(saga_inmem_bus *bus, inmem_ep *self)
{
    for (saga__list *tn = bus->topics.next; tn != &bus->topics; tn = tn->next) {
        inmem_topic *t = SAGA__CONTAINER(tn, inmem_topic, node);
        if (!saga__list_empty(&t->groups)) {
            t->backlog_open = 0;
            backlog_drop(t);
        }
        for (saga__list *gn = t->groups.next; gn != &t->groups; gn = gn->next) {
            inmem_group *g = SAGA__CONTAINER(gn, inmem_group, node);
            unsigned nsubs = 0;
            for (saga__list *s = g->subs.next; s != &g->subs; s = s->next)
                nsubs++;
            if (nsubs == 0)
                continue;
            saga__list *n;
            while ((n = saga__list_pop_front(&g->pending)) != NULL) {
                saga_delivery *d = SAGA__CONTAINER(n, saga_delivery, node);
                unsigned pick = d->msg->key != NULL
                                    ? saga__hash_str(d->msg->key) % nsubs
                                    : g->rr++ % nsubs;
                saga__list *s = g->subs.next;
                while (pick--)
                    s = s->next;
                inmem_sub *sub = SAGA__CONTAINER(s, inmem_sub, gnode);
                d->sub = sub;
                saga__list_push_back(&sub->inbox, &d->node);
                ep_kick(sub->ep, self);
            }
        }
    }
}

static int ep_has_work(inmem_ep *ep)
{
    if (!saga__list_empty(&ep->sent))
        return 1;
    for (saga__list *n = ep->subs.next; n != &ep->subs; n = n->next)
        if (!saga__list_empty(&SAGA__CONTAINER(n, inmem_sub, epnode)->inbox))
            return 1;
    return 0;
}

/* The endpoint's turn: assign, confirm sends, deliver. Callbacks may call
 * any slot, including close on this endpoint, so every loop re-checks
 * ep->closing and touches nothing a callback may have freed. On a shared
 * bus the lock is held around each step, never across a callback. */
static void ep_pump(uv_idle_t *h)
{
    inmem_ep *ep = h->data;
    saga_inmem_bus *bus = ep->bus;

    bus_lock(bus);
    if (bus->dirty) {
        bus->dirty = 0;
        bus_distribute(bus, ep);
    }
    bus_unlock(bus);

    /* Confirm only the sends queued before this turn; ones made by these
     * callbacks are confirmed on the next turn. */
    saga__list batch;
    saga__list_init(&batch);
    bus_lock(bus);
    saga__list_splice_front(&batch, &ep->sent);
    bus_unlock(bus);
    saga__list *n;
    while (!ep->closing && (n = saga__list_pop_front(&batch)) != NULL) {
        pending_send *p = SAGA__CONTAINER(n, pending_send, node);
        saga_sent_cb cb = p->cb;
        void *arg = p->arg;
        saga_free(p);
        cb(&ep->base, SAGA_OK, arg);
    }
    /* Closed by a callback: the rest get SAGA_ECLOSED in the close cb. */
    bus_lock(bus);
    saga__list_splice_front(&ep->sent, &batch);
    bus_unlock(bus);

    for (saga__list *sn = ep->subs.next; !ep->closing && sn != &ep->subs;
         sn = sn->next) {
        inmem_sub *sub = SAGA__CONTAINER(sn, inmem_sub, epnode);
        /* Bound the turn to what was in the inbox when it started. A
         * callback that closes us makes close requeue sub->handing, so the
         * group keeps the order. */
        bus_lock(bus);
        saga__list_splice_front(&sub->handing, &sub->inbox);
        bus_unlock(bus);
        for (;;) {
            bus_lock(bus);
            if (ep->closing ||
                (n = saga__list_pop_front(&sub->handing)) == NULL) {
                bus_unlock(bus);
                break;
            }
            saga_delivery *d = SAGA__CONTAINER(n, saga_delivery, node);
            d->handed = 1;
            saga__list_push_back(&sub->unacked, &d->node);
            inmem_msg *m = d->msg; /* lives while d is unacked */
            bus_unlock(bus);
            sub->cb(&ep->base, d, sub->group->topic->name, m->key, m->data,
                    m->len, sub->arg);
        }
    }

    bus_lock(bus);
    if (!ep->closing && !bus->dirty && !ep_has_work(ep))
        uv_idle_stop(&ep->idle);
    bus_unlock(bus);
}

/* A shared bus: another thread has work for this endpoint. */
static void ep_woken(uv_async_t *h)
{
    inmem_ep *ep = h->data;
    if (!ep->closing)
        uv_idle_start(&ep->idle, ep_pump);
}

/* Have some endpoint assign pending deliveries on its next turn: on one
 * loop the first endpoint; on a shared bus @p self (the caller's thread),
 * else, when it is closing, any open one. Under the lock when shared. */
static void bus_kick(saga_inmem_bus *bus, inmem_ep *self)
{
    bus->dirty = 1;
    if (bus->shared && self != NULL && !self->closing)
        ep_kick(self, self);
    else if (!saga__list_empty(&bus->eps))
        ep_kick(SAGA__CONTAINER(bus->eps.next, inmem_ep, node), self);
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
    pending_send *p = NULL;
    inmem_msg *m = saga_malloc(sizeof *m + len + klen);
    if (cb != NULL)
        p = saga_malloc(sizeof *p);
    if (m == NULL || (cb != NULL && p == NULL)) {
        saga_free(m);
        saga_free(p);
        return set_err(ep, SAGA_ENOMEM, "send: out of memory");
    }
    m->refs = 1; /* ours, dropped below */
    m->unacked = 0;
    m->ps = NULL;
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
    bus_lock(bus);
    inmem_topic *t = topic_get(bus, topic);
    if (t == NULL)
        goto nomem;
    backlog_item *b = NULL;
    if (t->backlog_open && (b = saga_malloc(sizeof *b)) == NULL)
        goto nomem;
    saga__list added;
    saga__list_init(&added);
    for (saga__list *gn = t->groups.next; gn != &t->groups; gn = gn->next) {
        inmem_group *g = SAGA__CONTAINER(gn, inmem_group, node);
        if (group_enqueue(g, m) != SAGA_OK) {
            /* Undo: the last delivery of each earlier group is ours. */
            for (saga__list *u = t->groups.next; u != gn; u = u->next) {
                inmem_group *ug = SAGA__CONTAINER(u, inmem_group, node);
                saga__list *last = ug->pending.prev;
                saga__list_remove(last);
                delivery_free(SAGA__CONTAINER(last, saga_delivery, node));
            }
            saga_free(b);
            goto nomem;
        }
    }
    if (b != NULL) {
        b->msg = m;
        m->refs++;
        saga__list_push_back(&t->backlog, &b->node);
    }
    msg_unref(m);

    if (p != NULL) {
        p->cb = cb;
        p->arg = arg;
        p->ep = ep;
        p->msg = NULL;
        if (m->unacked > 0) { /* confirmed once every group acked it */
            p->msg = m;
            m->ps = p;
            saga__list_push_back(&ep->waiting, &p->node);
        } else { /* no group yet: confirmed on the next turn */
            saga__list_push_back(&ep->sent, &p->node);
            uv_idle_start(&ep->idle, ep_pump);
        }
    }
    bus_kick(bus, ep);
    bus_unlock(bus);
    return SAGA_OK;

nomem:
    bus_unlock(bus);
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
    for (saga__list *n = ep->subs.next; n != &ep->subs; n = n->next) {
        inmem_sub *s = SAGA__CONTAINER(n, inmem_sub, epnode);
        if (strcmp(s->group->name, group) == 0 &&
            strcmp(s->group->topic->name, topic) == 0)
            return set_err(ep, SAGA_EDUP,
                           "subscribe: topic and group already subscribed");
    }

    inmem_sub *sub = saga_malloc(sizeof *sub);
    if (sub == NULL)
        return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
    saga_inmem_bus *bus = ep->bus;
    bus_lock(bus);
    inmem_topic *t = topic_get(bus, topic);
    if (t == NULL)
        goto nomem;
    inmem_group *g = NULL;
    for (saga__list *n = t->groups.next; n != &t->groups; n = n->next) {
        inmem_group *x = SAGA__CONTAINER(n, inmem_group, node);
        if (strcmp(x->name, group) == 0)
            g = x;
    }
    if (g == NULL) {
        g = saga_malloc(sizeof *g);
        if (g == NULL || (g->name = saga__strdup(group)) == NULL) {
            saga_free(g);
            goto nomem;
        }
        g->topic = t;
        g->rr = 0;
        saga__list_init(&g->pending);
        saga__list_init(&g->subs);
        /* A new group starts with the topic's backlog, if still open. */
        for (saga__list *n = t->backlog.next; n != &t->backlog; n = n->next) {
            if (group_enqueue(g, SAGA__CONTAINER(n, backlog_item, node)->msg) !=
                SAGA_OK) {
                group_free(g);
                goto nomem;
            }
        }
        saga__list_push_back(&t->groups, &g->node);
    }
    sub->group = g;
    sub->ep = ep;
    sub->cb = cb;
    sub->arg = arg;
    saga__list_init(&sub->inbox);
    saga__list_init(&sub->handing);
    saga__list_init(&sub->unacked);
    saga__list_push_back(&g->subs, &sub->gnode);
    saga__list_push_back(&ep->subs, &sub->epnode);
    bus_kick(bus, ep);
    bus_unlock(bus);
    return SAGA_OK;

nomem:
    bus_unlock(bus);
    saga_free(sub);
    return set_err(ep, SAGA_ENOMEM, "subscribe: out of memory");
}

static int inmem_ack(saga_transport *self, saga_delivery *d)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL || d == NULL)
        return SAGA_EINVAL;
    saga_inmem_bus *bus = ep->bus;
    bus_lock(bus);
    if (d->magic != DELIVERY_MAGIC || !d->handed || d->sub == NULL ||
        d->sub->ep != ep) {
        bus_unlock(bus);
        return set_err(ep, SAGA_EINVAL,
                       "ack: not an unacked delivery of this transport");
    }
    saga__list_remove(&d->node);
    inmem_msg *m = d->msg;
    if (--m->unacked == 0 && m->ps != NULL) {
        /* Every group has it durably: its sender may forget it. */
        pending_send *p = m->ps;
        m->ps = NULL;
        p->msg = NULL;
        saga__list_remove(&p->node);
        saga__list_push_back(&p->ep->sent, &p->node);
        ep_kick(p->ep, ep);
    }
    delivery_free(d);
    bus_unlock(bus);
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
    if (--ep->handles > 0)
        return;
    saga__list *n;
    /* The callbacks may call send (which fails: closing is set). */
    while ((n = saga__list_pop_front(&ep->sent)) != NULL) {
        pending_send *p = SAGA__CONTAINER(n, pending_send, node);
        saga_sent_cb cb = p->cb;
        void *arg = p->arg;
        saga_free(p);
        cb(&ep->base, SAGA_ECLOSED, arg);
    }
    while ((n = saga__list_pop_front(&ep->subs)) != NULL)
        saga_free(SAGA__CONTAINER(n, inmem_sub, epnode));
    saga_free(ep);
    bus_lock(bus);
    int last = --bus->live == 0 && bus->freeing;
    bus_unlock(bus);
    if (last)
        bus_destroy(bus);
}

static void inmem_close(saga_transport *self)
{
    inmem_ep *ep = (inmem_ep *)self;
    if (ep == NULL || ep->closing)
        return;
    saga_inmem_bus *bus = ep->bus;
    bus_lock(bus);
    ep->closing = 1;
    saga__list_remove(&ep->node);
    /* Sends still waiting for acks get SAGA_ECLOSED in the close cb; the
     * messages stay queued for their groups. */
    for (saga__list *n = ep->waiting.next; n != &ep->waiting; n = n->next) {
        pending_send *p = SAGA__CONTAINER(n, pending_send, node);
        p->msg->ps = NULL;
        p->msg = NULL;
    }
    saga__list_splice_front(&ep->sent, &ep->waiting);
    int moved = 0;
    for (saga__list *n = ep->subs.next; n != &ep->subs; n = n->next) {
        inmem_sub *sub = SAGA__CONTAINER(n, inmem_sub, epnode);
        saga__list_remove(&sub->gnode);
        /* Oldest first: handed-out ones, then the not yet handed ones. */
        saga__list back;
        saga__list_init(&back);
        saga__list_splice_front(&back, &sub->inbox);
        saga__list_splice_front(&back, &sub->handing);
        saga__list_splice_front(&back, &sub->unacked);
        for (saga__list *x = back.next; x != &back; x = x->next) {
            saga_delivery *d = SAGA__CONTAINER(x, saga_delivery, node);
            d->sub = NULL;
            d->handed = 0;
            moved = 1;
        }
        saga__list_splice_front(&sub->group->pending, &back);
    }
    /* Another endpoint takes over the assignment this one may have owed. */
    if (moved || bus->dirty)
        bus_kick(bus, ep);
    /* Under the lock: from here no thread wakes this endpoint. */
    uv_close((uv_handle_t *)&ep->idle, ep_closed);
    if (bus->shared)
        uv_close((uv_handle_t *)&ep->async, ep_closed);
    bus_unlock(bus);
}

/* An endpoint that never joined its bus: free it once its handles are. */
static void ep_free_early(uv_handle_t *h)
{
    inmem_ep *ep = h->data;
    if (--ep->handles == 0)
        saga_free(ep);
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
    saga__list_init(&bus->eps);
    saga__list_init(&bus->topics);
    *out = bus;
    return SAGA_OK;
}

int saga_inmem_bus_new_shared(saga_inmem_bus **out)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    saga_inmem_bus *bus = saga_malloc(sizeof *bus);
    if (bus == NULL)
        return SAGA_ENOMEM;
    memset(bus, 0, sizeof *bus);
    if (uv_mutex_init(&bus->lock) != 0) {
        saga_free(bus);
        return SAGA_ENOMEM;
    }
    bus->shared = 1;
    saga__list_init(&bus->eps);
    saga__list_init(&bus->topics);
    *out = bus;
    return SAGA_OK;
}

void saga_inmem_bus_free(saga_inmem_bus *bus)
{
    if (bus == NULL)
        return;
    if (bus->shared) {
        /* Each endpoint closes on its own loop; the last one gone frees
         * the bus. */
        bus_lock(bus);
        int now = bus->live == 0;
        bus->freeing = 1;
        bus_unlock(bus);
        if (now)
            bus_destroy(bus);
        return;
    }
    if (bus->live == 0) {
        bus_destroy(bus);
        return;
    }
    /* Endpoints are closing (or, against the contract, still open): close
     * them and let the last close callback free the bus. */
    bus->freeing = 1;
    while (!saga__list_empty(&bus->eps))
        inmem_close(&SAGA__CONTAINER(bus->eps.next, inmem_ep, node)->base);
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

int saga_transport_inmem_new_on(saga_transport **out, saga_inmem_bus *bus,
                                struct uv_loop_s *loop)
{
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (bus == NULL || loop == NULL) {
        saga_open_errmsg_set("inmem: %s", bus ? "no loop" : "no bus");
        return SAGA_EINVAL;
    }
    if (!bus->shared && loop != bus->loop) {
        saga_open_errmsg_set("inmem: the loop is not the bus's (a bus for "
                             "several loops is saga_inmem_bus_new_shared)");
        return SAGA_EINVAL;
    }
    bus_lock(bus);
    int freeing = bus->freeing;
    bus_unlock(bus);
    if (freeing) {
        saga_open_errmsg_set("inmem: the bus is being freed");
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
    ep->loop = loop;
    saga__list_init(&ep->subs);
    saga__list_init(&ep->sent);
    saga__list_init(&ep->waiting);
    if (uv_idle_init(loop, &ep->idle) != 0) {
        saga_free(ep);
        return SAGA_ENOMEM;
    }
    ep->idle.data = ep;
    ep->handles = 1;
    if (bus->shared) {
        if (uv_async_init(loop, &ep->async, ep_woken) != 0) {
            /* The idle handle is closed with the endpoint's memory. */
            ep->closing = 1;
            ep->bus = NULL;
            uv_close((uv_handle_t *)&ep->idle, ep_free_early);
            saga_open_errmsg_set("inmem: cannot make an async handle");
            return SAGA_ENOMEM;
        }
        ep->async.data = ep;
        ep->handles = 2;
    }
    bus_lock(bus);
    if (bus->freeing) {
        bus_unlock(bus);
        ep->closing = 1;
        ep->bus = NULL;
        uv_close((uv_handle_t *)&ep->idle, ep_free_early);
        if (bus->shared)
            uv_close((uv_handle_t *)&ep->async, ep_free_early);
        saga_open_errmsg_set("inmem: the bus is being freed");
        return SAGA_EINVAL;
    }
    saga__list_push_back(&bus->eps, &ep->node);
    bus->live++;
    bus_unlock(bus);
    *out = &ep->base;
    return SAGA_OK;
}

int saga_transport_inmem_new(saga_transport **out, saga_inmem_bus *bus)
{
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (bus == NULL || bus->shared) {
        saga_open_errmsg_set("inmem: %s",
                             bus ? "a shared bus needs the endpoint's loop "
                                   "(saga_transport_inmem_new_on)"
                                 : "no bus");
        return SAGA_EINVAL;
    }
    return saga_transport_inmem_new_on(out, bus, bus->loop);
}

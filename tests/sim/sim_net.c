/*
 * sim_net.c — the simulated network, behind the transport vtable.
 *
 * A broker holds every accepted message until one of its deliveries is
 * acked. Per message the world's random source decides: a send refused
 * (the relay resends), a send accepted whose confirmation is lost (the
 * relay resends: a duplicate), a delivery delayed (reordering: each
 * message has its own delay), slow or very late (the shipping service
 * answers late), delivered twice, or dropped and redelivered after a
 * visibility timeout. A partitioned process can neither send nor receive
 * until it heals; deliveries to it wait. A delivery that is not acked in
 * time, or whose endpoint closes (a crash), is redelivered.
 */
#include <stdlib.h>
#include <string.h>

#include <saga/codec.h>

#include "sim_world.h"

#define ACK_TIMEOUT_MS 4000

static const char *const topics[NPROC] = {"orchestrator", "stock", "payment",
                                          "shipping"};

/* Each process's own topic; "notify" (shipping's events) is consumed by
 * the stock service. */
int topic_proc(const char *topic)
{
    for (int i = 0; i < NPROC; i++)
        if (strcmp(topics[i], topic) == 0)
            return i;
    return strcmp(topic, "notify") == 0 ? P_STOCK : -1;
}

static int find_sub(const endpoint *ep, const char *topic)
{
    for (int i = 0; i < ep->nsubs; i++)
        if (strcmp(ep->subs[i].topic, topic) == 0)
            return i;
    return -1;
}

static int partitioned(world *w, const proc *pr)
{
    (void)w;
    return pr->partitioned_until > sim_now_ms;
}

static void describe(msg *m)
{
    saga_envelope env;
    if (saga_envelope_decode(&env, m->buf, m->len, 0, NULL) != SAGA_OK) {
        snprintf(m->desc, sizeof m->desc, "m%llu (undecodable)",
                 (unsigned long long)m->no);
        return;
    }
    if (env.kind == SAGA_MSG_REPLY)
        snprintf(m->desc, sizeof m->desc, "m%llu reply %s %.12s s%u a%u%s %s",
                 (unsigned long long)m->no, env.name, env.saga_id + 20,
                 env.step, env.attempt, env.comp ? "c" : "",
                 env.outcome == SAGA_OUTCOME_OK     ? "OK"
                 : env.outcome == SAGA_OUTCOME_FAIL ? "FAIL"
                                                    : "RETRY");
    else
        snprintf(m->desc, sizeof m->desc, "m%llu %s %s %.12s s%u a%u%s",
                 (unsigned long long)m->no, saga_msg_kind_name(env.kind),
                 env.name, env.saga_id + 20, env.step, env.attempt,
                 env.comp ? "c" : "");
}

static int64_t net_delay(world *w, int to)
{
    if (to == P_SHIP && sim_chance(&w->rng, w->p_late))
        return sim_range(&w->rng, 500, 3000);
    if (sim_chance(&w->rng, w->p_slow))
        return sim_range(&w->rng, 200, 2500);
    return sim_range(&w->rng, 1, 30);
}

static void schedule_delivery(world *w, msg *m, int64_t delay, int dup)
{
    event *ev = ev_new(w, sim_now_ms + delay, EV_DELIVER);
    ev->m = m;
    ev->a = dup;
}

/* ---- the vtable ---------------------------------------------------------- */

static int ep_send(saga_transport *self, const char *topic, const char *key,
                   const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    endpoint *ep = (endpoint *)self;
    world *w = ep->w;
    if (ep->closed)
        return SAGA_ECLOSED;
    int to = topic_proc(topic);
    if (to < 0 || (buf == NULL && len > 0))
        return SAGA_EINVAL;
    sendrec *sr = calloc(1, sizeof *sr);
    sr->ep = ep;
    sr->cb = cb;
    sr->arg = arg;
    ptrvec_push(&w->sendrecs, sr);
    if (ep->dead)
        return SAGA_OK; /* the process is dying: it never leaves */
    int status = SAGA_OK, accept = 1;
    if (partitioned(w, ep->pr) ||
        (w->faults_on && sim_chance(&w->rng, w->p_reject))) {
        status = SAGA_ETRANSPORT;
        accept = 0;
    } else if (w->faults_on && sim_chance(&w->rng, w->p_lost_ack)) {
        status = SAGA_ETRANSPORT; /* accepted, but the sender never knows */
    }
    if (accept) {
        msg *m = calloc(1, sizeof *m);
        m->no = ++w->msg_no;
        m->from = ep->pr->id;
        m->to = to;
        m->topic = strdup(topic);
        m->key = key ? strdup(key) : NULL;
        m->buf = malloc(len ? len : 1);
        memcpy(m->buf, buf, len);
        m->len = len;
        describe(m);
        ptrvec_push(&w->msgs, m);
        tracef(w, "send %s->%s %s%s", ep->pr->name, topic, m->desc,
               status ? " (ack lost)" : "");
        schedule_delivery(w, m, net_delay(w, to), 0);
        if (w->faults_on && sim_chance(&w->rng, w->p_dup))
            schedule_delivery(w, m, net_delay(w, to), 1);
    } else {
        tracef(w, "send %s->%s refused", ep->pr->name, topic);
    }
    event *ev = ev_new(w, sim_now_ms + sim_range(&w->rng, 1, 10), EV_SENT);
    ev->sr = sr;
    ev->a = status;
    return SAGA_OK;
}

static int ep_subscribe(saga_transport *self, const char *topic,
                        const char *group, saga_recv_cb cb, void *arg)
{
    endpoint *ep = (endpoint *)self;
    if (ep->closed)
        return SAGA_ECLOSED;
    if (topic_proc(topic) != ep->pr->id || cb == NULL ||
        strlen(topic) >= sizeof ep->subs[0].topic)
        return SAGA_EINVAL;
    if (find_sub(ep, topic) >= 0)
        return SAGA_EDUP;
    if (ep->nsubs == 2)
        return SAGA_ENOMEM;
    (void)group;
    snprintf(ep->subs[ep->nsubs].topic, sizeof ep->subs[0].topic, "%s", topic);
    ep->subs[ep->nsubs].cb = cb;
    ep->subs[ep->nsubs].arg = arg;
    ep->nsubs++;
    return SAGA_OK;
}

static int ep_ack(saga_transport *self, saga_delivery *d)
{
    endpoint *ep = (endpoint *)self;
    if (d == NULL || d->ep != ep || d->done)
        return SAGA_EINVAL;
    d->done = 1;
    if (!d->m->acked)
        tracef(ep->w, "ack %s %s", ep->pr->name, d->m->desc);
    d->m->acked = 1;
    return SAGA_OK;
}

static const char *ep_errmsg(saga_transport *self)
{
    return ((endpoint *)self)->errmsg;
}

static void ep_close(saga_transport *self)
{
    endpoint *ep = (endpoint *)self;
    world *w = ep->w;
    if (ep->closed)
        return;
    ep->closed = 1;
    /* Pending sends fail; unacked deliveries go back to the broker. */
    for (size_t i = 0; i < w->sendrecs.n; i++) {
        sendrec *sr = w->sendrecs.v[i];
        if (sr->ep == ep && !sr->done) {
            sr->done = 1;
            if (sr->cb)
                sr->cb(self, SAGA_ECLOSED, sr->arg);
        }
    }
    for (size_t i = 0; i < w->deliveries.n; i++) {
        saga_delivery *d = w->deliveries.v[i];
        if (d->ep == ep && !d->done) {
            d->done = 1;
            if (!d->m->acked)
                schedule_delivery(w, d->m, sim_range(&w->rng, 50, 500), 0);
        }
    }
}

static int ep_route(saga_transport *self, const char *topic)
{
    (void)self;
    if (topic == NULL)
        return SAGA_EINVAL;
    return topic_proc(topic) >= 0 ? SAGA_OK : SAGA_ENOROUTE;
}

int net_endpoint_new(world *w, proc *pr, endpoint **out)
{
    endpoint *ep = calloc(1, sizeof *ep);
    if (ep == NULL)
        return SAGA_ENOMEM;
    saga_transport_init(&ep->base, SAGA_TRANSPORT_VERSION);
    ep->base.send = ep_send;
    ep->base.subscribe = ep_subscribe;
    ep->base.ack = ep_ack;
    ep->base.errmsg = ep_errmsg;
    ep->base.close = ep_close;
    ep->base.route = ep_route;
    ep->w = w;
    ep->pr = pr;
    snprintf(ep->errmsg, sizeof ep->errmsg, "simulated network error");
    ptrvec_push(&w->endpoints, ep);
    *out = ep;
    return SAGA_OK;
}

/* ---- events -------------------------------------------------------------- */

void net_sent(world *w, event *ev)
{
    sendrec *sr = ev->sr;
    if (sr->done)
        return;
    sr->done = 1;
    if (sr->ep->closed)
        return;
    if (sr->cb)
        sr->cb(&sr->ep->base, ev->a, sr->arg);
    (void)w;
}

void net_deliver(world *w, event *ev)
{
    msg *m = ev->m;
    if (m->acked && !ev->a)
        return; /* done; only a duplicate in flight still arrives */
    proc *to = &w->procs[m->to];
    endpoint *ep = to->ep;
    int sub = ep ? find_sub(ep, m->topic) : -1;
    if (!to->up || ep == NULL || ep->closed || ep->dead || sub < 0 ||
        partitioned(w, to)) {
        if (!ev->a || !m->acked)
            schedule_delivery(w, m, sim_range(&w->rng, 200, 1000), 0);
        return;
    }
    if (w->faults_on && sim_chance(&w->rng, w->p_drop)) {
        tracef(w, "drop %s (redelivered later)", m->desc);
        schedule_delivery(w, m, sim_range(&w->rng, 300, 1500), 0);
        return;
    }
    saga_delivery *d = calloc(1, sizeof *d);
    d->m = m;
    d->ep = ep;
    ptrvec_push(&w->deliveries, d);
    tracef(w, "deliver %s %s%s", to->name, m->desc, ev->a ? " (dup)" : "");
    /* Not acked in time: the broker delivers it again. */
    schedule_delivery(w, m, ACK_TIMEOUT_MS, 0);
    ep->subs[sub].cb(&ep->base, d, m->topic, m->key, m->buf, m->len,
                     ep->subs[sub].arg);
}

int net_unacked(world *w)
{
    int n = 0;
    for (size_t i = 0; i < w->msgs.n; i++)
        n += !((msg *)w->msgs.v[i])->acked;
    return n;
}

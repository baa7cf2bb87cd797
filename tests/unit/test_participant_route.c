/*
 * test_participant_route.c — a command whose reply_to names a topic the
 * transport cannot route to is refused when it arrives: logged, counted,
 * acked, no effect (issue 7, item 2, participant side). Before, it was
 * handled and its reply waited in the outbox forever, ahead of the others.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#include "fixture.h"

/* The in-memory transport, with a route() that knows no "nowhere". */
typedef struct wrap {
    saga_transport base;
    saga_transport *inner;
} wrap;

static int w_send(saga_transport *self, const char *topic, const char *key,
                  const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    saga_transport *in = ((wrap *)self)->inner;
    return in->send(in, topic, key, buf, len, cb, arg);
}
static int w_subscribe(saga_transport *self, const char *topic,
                       const char *group, saga_recv_cb cb, void *arg)
{
    saga_transport *in = ((wrap *)self)->inner;
    return in->subscribe(in, topic, group, cb, arg);
}
static int w_ack(saga_transport *self, saga_delivery *d)
{
    saga_transport *in = ((wrap *)self)->inner;
    return in->ack(in, d);
}
static const char *w_errmsg(saga_transport *self)
{
    saga_transport *in = ((wrap *)self)->inner;
    return in->errmsg(in);
}
static void w_close(saga_transport *self)
{
    saga_transport_free(((wrap *)self)->inner);
    saga_free(self);
}
static int w_route(saga_transport *self, const char *topic)
{
    (void)self;
    if (topic == NULL)
        return SAGA_EINVAL;
    return strcmp(topic, "nowhere") == 0 ? SAGA_ENOROUTE : SAGA_OK;
}

static saga_transport *wrapped(saga_transport *inner, int with_route)
{
    wrap *w = saga_malloc(sizeof *w);
    cr_assert_not_null(w);
    memset(w, 0, sizeof *w);
    saga_transport_init(&w->base, SAGA_TRANSPORT_VERSION);
    w->inner = inner;
    w->base.send = w_send;
    w->base.subscribe = w_subscribe;
    w->base.ack = w_ack;
    w->base.errmsg = w_errmsg;
    w->base.close = w_close;
    w->base.route = with_route ? w_route : NULL;
    return &w->base;
}

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T;
static int calls, nreplies;
static char logbuf[4096];

static void on_log(saga_log_level lvl, const char *saga_id, int step,
                   const char *msg, void *arg)
{
    (void)lvl, (void)saga_id, (void)step, (void)arg;
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

static int h_cmd(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)p, (void)c, (void)r, (void)arg;
    calls++;
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)buf, (void)len, (void)arg;
    nreplies++;
    t->ack(t, d);
}

static void pump(void) { fx_pump(&loop, 50); }

static void send_cmd(const char *saga, const char *reply_to)
{
    fx_send(T, "inventory", &(fx_msg){.saga = saga, .reply_to = reply_to});
}

static void start(int with_route)
{
    calls = nreplies = 0;
    logbuf[0] = '\0';
    saga_transport *in;
    fx_inmem_open(&loop, &bus, &T, "tester", on_reply, &in);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.log = on_log;
    P = fx_participant(&loop, fx_memory_store(), wrapped(in, with_route), &o,
                       "reserve", h_cmd);
}

static void finish(void) { fx_inmem_close(&loop, P, T, bus, 50); }

static int outbox_rows(void) { return fx_outbox_rows(P, 0); }

Test(participant_route, unroutable_reply_to_is_refused_on_arrival)
{
    start(1);
    send_cmd("bad", "nowhere");
    send_cmd("good", "tester");
    pump();
    cr_assert_eq(calls, 1, "only the routable command is handled");
    cr_assert_eq(nreplies, 1);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.unroutable, 1);
    cr_assert_eq(st.commands, 1);
    cr_assert(strstr(logbuf, "nowhere") != NULL, "%s", logbuf);
    /* No effect: no inbox claim, no barrier, nothing in the outbox. */
    saga_store *s = saga_participant_store(P);
    cr_assert_eq(s->kv_get(s, "b/bad/0", NULL, NULL), SAGA_ENOTFOUND);
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "bad.0.1.a", 1, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    cr_assert_eq(outbox_rows(), 0);
    finish();
}

/* A transport without route(): every topic is taken as routable. */
Test(participant_route, no_route_slot_means_routable)
{
    start(0);
    send_cmd("a", "nowhere");
    send_cmd("b", "tester");
    pump();
    cr_assert_eq(calls, 2);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.unroutable, 0);
    finish();
}

/*
 * test_relay_isolation.c — one undeliverable destination never stops the
 * others (issue 7, items 1 and 2), over the TCP transport on loopback:
 *
 * - a saga whose remote step names a service nobody configured (a typo)
 *   fails that step at once, with the reason naming the service, while
 *   sagas to a healthy participant complete;
 * - a participant that is down until its send queue is full (SAGA_EFULL)
 *   holds only its own commands: sagas to another participant complete,
 *   and the held ones go out once it is up;
 * - a participant whose replies to one orchestrator cannot go out (that
 *   peer is down, or was never configured) still answers the others;
 * - a command larger than its participant's max_frame_size (finding F3)
 *   fails its step with SAGA_EINVAL, once, instead of holding up the
 *   participant's link, and the sagas behind it complete.
 *
 * The engine's clock is frozen, so no step ever times out: whatever
 * completes here completed because its messages flowed, and a blocked
 * relay shows up as sagas that stay RUNNING. Loops are bounded by a wall
 * clock guard only so that a regression fails instead of hanging.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <saga/saga.h>

#include "fixture.h"

static uv_loop_t loop;
static saga_engine *E;
static char logbuf[65536];
static uint32_t ep_max_frame; /* tcp_ep's max_frame_size; 0: the default */

static int64_t frozen_clock(void *a)
{
    (void)a;
    return 5000000;
}

static void capture(saga_log_level l, const char *id, int step, const char *msg,
                    void *arg)
{
    (void)l, (void)arg;
    size_t n = strlen(logbuf);
    if (n + 400 < sizeof logbuf)
        snprintf(logbuf + n, sizeof logbuf - n, "[%s %d] %s\n", id ? id : "-",
                 step, msg);
}

static int free_port(void) { return fx_free_port(&loop); }

/* A TCP endpoint named @p svc on @p port with peers name=port pairs. */
static saga_transport *tcp_ep(const char *svc, int port, uint32_t max_msgs,
                              size_t npeers, const char *const *names,
                              const int *ports)
{
    char listen[32], addr[8][32];
    saga_tcp_peer peers[8];
    cr_assert(npeers <= 8);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (size_t i = 0; i < npeers; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", ports[i]);
        peers[i].service = names[i];
        peers[i].address = addr[i];
    }
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = svc;
    o.listen = listen;
    o.peers = peers;
    o.npeers = npeers;
    o.max_queue_msgs = max_msgs;
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 20;
    o.max_frame_size = ep_max_frame;
    saga_transport *t;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_OK);
    return t;
}

static int h_ok(saga_participant *p, const saga_command *c, saga_reply *r,
                void *arg)
{
    (void)p, (void)c, (void)r, (void)arg;
    return SAGA_OK;
}

static saga_participant *participant(const char *svc, saga_transport *t)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = svc;
    o.log = capture;
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, s, t, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, "reserve", h_ok, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, "charge", h_ok, NULL), SAGA_OK);
    return p;
}

static saga_engine *engine(saga_transport *t)
{
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.clock = frozen_clock;
    o.seed = 7;
    o.service = "orders";
    o.log = capture;
    saga_engine *e;
    cr_assert_eq(saga_engine_new(&e, NULL, t, &o), SAGA_OK);
    return e;
}

/* A definition of remote steps, one per service named. */
static void define(saga_engine *e, const char *name, size_t n,
                   const char *const *services)
{
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, name, 1), SAGA_OK);
    for (size_t i = 0; i < n; i++) {
        saga_step_options s = SAGA_STEP_OPTIONS_INIT;
        s.service = services[i];
        s.command = i == 0 ? "reserve" : "charge";
        s.comp_command = s.command;
        s.timeout_ms = 1000;
        char step[32];
        snprintf(step, sizeof step, "s%zu", i);
        cr_assert_eq(saga_def_add_step(d, step, NULL, NULL, &s, NULL), SAGA_OK);
    }
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK, "%s",
                 saga_engine_errmsg(e));
}

static saga_state state_of(const char *id, char *err, size_t errsz)
{
    saga_info *i;
    if (saga_get(E, id, &i) != SAGA_OK)
        return (saga_state)0;
    saga_state s = saga_info_state(i);
    if (err != NULL)
        snprintf(err, errsz, "%s",
                 saga_info_error(i) ? saga_info_error(i) : "");
    saga_info_free(i);
    return s;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef int (*cond_fn)(void *);

/* Run the loop until @p cond holds; 0 if the guard ran out first. */
static int run_until(cond_fn cond, void *arg, double guard_s)
{
    double end = wall() + guard_s;
    while (!cond(arg)) {
        if (wall() > end)
            return 0;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return 1;
}

#define NGOOD 40
static char good[NGOOD][SAGA_ID_SIZE];

static int all_good_done(void *arg)
{
    (void)arg;
    for (int i = 0; i < NGOOD; i++)
        if (state_of(good[i], NULL, 0) != SAGA_STATE_COMPLETED)
            return 0;
    return 1;
}

static int ended(void *arg)
{
    saga_state s = state_of(arg, NULL, 0);
    return s == SAGA_STATE_COMPLETED || s == SAGA_STATE_COMPENSATED ||
           s == SAGA_STATE_FAILED;
}

static void closed(void *arg) { (*(int *)arg)++; }

static void close_all(saga_participant **ps, size_t n)
{
    int c = 0;
    saga_engine_close(E, closed, &c);
    for (size_t i = 0; i < n; i++)
        if (ps[i] != NULL)
            saga_participant_close(ps[i], closed, &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "loop has open handles");
}

static void count_states(int *completed, int *compensated)
{
    *completed = *compensated = 0;
    for (int i = 0; i < NGOOD; i++) {
        saga_state s = state_of(good[i], NULL, 0);
        *completed += s == SAGA_STATE_COMPLETED;
        *compensated += s == SAGA_STATE_COMPENSATED;
    }
}

/* A fresh loop and log, and two endpoints on loopback that know each
 * other: "orders" (returned) and "inventory" (*ti), whose max_frame_size
 * is @p inv_max_frame (0: the default). */
static saga_transport *orders_and_inventory(saga_transport **ti,
                                            uint32_t inv_max_frame)
{
    logbuf[0] = 0;
    uv_loop_init(&loop);
    int po = free_port(), pi = free_port();
    const char *onames[] = {"inventory"};
    const int oports[] = {pi};
    saga_transport *to = tcp_ep("orders", po, 0, 1, onames, oports);
    const char *inames[] = {"orders"};
    const int iports[] = {po};
    ep_max_frame = inv_max_frame;
    *ti = tcp_ep("inventory", pi, 0, 1, inames, iports);
    ep_max_frame = 0;
    return to;
}

/* Item 1 (a): a typo in a definition's service name. */
Test(relay_isolation, no_route_step_fails_at_once_others_complete,
     .timeout = 60)
{
    saga_transport *ti, *to = orders_and_inventory(&ti, 0);
    E = engine(to);
    const char *bad_steps[] = {"inventory", "inventroy"};
    const char *good_steps[] = {"inventory", "inventory"};
    define(E, "typo", 2, bad_steps);
    define(E, "checkout", 2, good_steps);
    cr_assert_eq(saga_engine_start(E), SAGA_OK, "%s", saga_engine_errmsg(E));
    saga_participant *inv = participant("inventory", ti);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);

    /* The bad saga first, so its undeliverable command is queued ahead of
     * the healthy ones' second steps. */
    char bad[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "typo", NULL, NULL, 0, bad, NULL, NULL),
                 SAGA_OK);
    for (int i = 0; i < NGOOD; i++)
        cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, good[i], NULL,
                                NULL),
                     SAGA_OK);
    cr_assert(run_until(ended, bad, 20),
              "the saga with the unknown service did not end:\n%s", logbuf);
    cr_assert(run_until(all_good_done, NULL, 20),
              "healthy sagas were held behind the undeliverable one:\n%s",
              logbuf);
    char err[512];
    saga_state st = state_of(bad, err, sizeof err);
    /* Its first step (to inventory) ran, so it is compensated; the error
     * names the unknown destination. */
    cr_expect_eq(st, SAGA_STATE_COMPENSATED, "state %s", saga_state_name(st));
    cr_expect(strstr(err, "inventroy") != NULL,
              "error does not name the destination: '%s'", err);
    int completed, compensated;
    count_states(&completed, &compensated);
    cr_expect_eq(completed, NGOOD);
    cr_expect_eq(compensated, 0);
    /* Started after it, a second bad saga fails the same way: the
     * destination is not remembered as "blocked". */
    char bad2[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "typo", NULL, NULL, 0, bad2, NULL, NULL),
                 SAGA_OK);
    cr_assert(run_until(ended, bad2, 20), "%s", logbuf);
    cr_expect_eq(state_of(bad2, NULL, 0), SAGA_STATE_COMPENSATED);
    saga_participant *ps[] = {inv};
    close_all(ps, 1);
}

static int count_completed(void *arg)
{
    const char(*ids)[SAGA_ID_SIZE] = arg;
    int n = 0;
    for (int i = 0; i < 12; i++)
        n += state_of(ids[i], NULL, 0) == SAGA_STATE_COMPLETED;
    return n == 12;
}

/* Item 1 (b): a participant down until its send queue is full. */
Test(relay_isolation, full_destination_holds_only_its_own, .timeout = 60)
{
    logbuf[0] = 0;
    uv_loop_init(&loop);
    int po = free_port(), pi = free_port(), pp = free_port();
    const char *onames[] = {"inventory", "payment"};
    const int oports[] = {pi, pp};
    /* Four unacked messages per peer at most: the fifth is SAGA_EFULL. */
    saga_transport *to = tcp_ep("orders", po, 4, 2, onames, oports);
    const char *pnames[] = {"orders"};
    const int pports[] = {po};
    saga_transport *ti = tcp_ep("inventory", pi, 0, 1, pnames, pports);
    E = engine(to);
    const char *inv_steps[] = {"inventory"};
    const char *pay_steps[] = {"payment"};
    define(E, "reserve", 1, inv_steps);
    define(E, "charge", 1, pay_steps);
    cr_assert_eq(saga_engine_start(E), SAGA_OK, "%s", saga_engine_errmsg(E));
    saga_participant *inv = participant("inventory", ti);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);

    /* Payment is not running: its queue fills and stays full. */
    static char held[12][SAGA_ID_SIZE];
    for (int i = 0; i < 12; i++)
        cr_assert_eq(saga_start(E, "charge", NULL, NULL, 0, held[i], NULL,
                                NULL),
                     SAGA_OK);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    for (int i = 0; i < NGOOD; i++)
        cr_assert_eq(saga_start(E, "reserve", NULL, NULL, 0, good[i], NULL,
                                NULL),
                     SAGA_OK);
    cr_assert(run_until(all_good_done, NULL, 20),
              "sagas to inventory were held behind the full payment "
              "queue:\n%s",
              logbuf);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(state_of(held[i], NULL, 0), SAGA_STATE_RUNNING);
    /* Payment comes up: what it held goes out, in order, and completes. */
    saga_transport *tp = tcp_ep("payment", pp, 0, 1, pnames, pports);
    saga_participant *pay = participant("payment", tp);
    cr_assert_eq(saga_participant_start(pay), SAGA_OK);
    cr_assert(run_until(count_completed, held, 30),
              "the held sagas did not complete once payment was up:\n%s",
              logbuf);
    saga_participant *ps[] = {inv, pay};
    close_all(ps, 2);
}

/* ---- item 2: the participant's outbox ----------------------------------- */

static int replies_a, replies_b;

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)buf, (void)len;
    (*(int *)arg)++;
    t->ack(t, d);
}

static void send_command(saga_transport *t, const char *reply_to, int i)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.v = SAGA_ENVELOPE_VERSION;
    e.kind = SAGA_MSG_COMMAND;
    e.attempt = 1;
    snprintf(e.msg_id, sizeof e.msg_id, "%s-%d", reply_to, i);
    snprintf(e.saga_id, sizeof e.saga_id, "%08d%s", i,
             "aaaaaaaaaaaaaaaaaaaaaaaa");
    e.saga_id[SAGA_ID_LEN] = '\0';
    strcpy(e.name, "reserve");
    snprintf(e.reply_to, sizeof e.reply_to, "%s", reply_to);
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(t->send(t, "inventory", e.saga_id, b, n, NULL, NULL), SAGA_OK);
    saga_free(b);
}

static int got_b(void *arg) { return replies_b >= *(int *)arg; }

Test(relay_isolation, participant_replies_isolated_per_destination,
     .timeout = 60)
{
    logbuf[0] = 0;
    replies_a = replies_b = 0;
    uv_loop_init(&loop);
    int pi = free_port(), pa = free_port(), pb = free_port(),
        pdown = free_port();
    /* The participant knows "down" (configured, never up) and two
     * orchestrators; "nobody" it does not know at all. Four unacked
     * replies per peer at most. */
    const char *inames[] = {"orch-a", "orch-b", "down"};
    const int iports[] = {pa, pb, pdown};
    saga_transport *ti = tcp_ep("inventory", pi, 4, 3, inames, iports);
    const char *cnames[] = {"inventory"};
    const int cports[] = {pi};
    saga_transport *ta = tcp_ep("orch-a", pa, 0, 1, cnames, cports);
    saga_transport *tb = tcp_ep("orch-b", pb, 0, 1, cnames, cports);
    cr_assert_eq(ta->subscribe(ta, "orch-a", "g", on_reply, &replies_a),
                 SAGA_OK);
    cr_assert_eq(tb->subscribe(tb, "orch-b", "g", on_reply, &replies_b),
                 SAGA_OK);
    saga_participant *inv = participant("inventory", ti);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);

    /* Valid commands whose replies cannot go out: to a peer that is down
     * (its queue fills: SAGA_EFULL) and to a topic nobody configured. */
    for (int i = 0; i < 10; i++)
        send_command(ta, "down", i);
    for (int i = 0; i < 3; i++)
        send_command(ta, "nobody", 100 + i);
    for (int i = 0; i < 30; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    /* Then ordinary commands from orch-b: answered. */
    for (int i = 0; i < 20; i++)
        send_command(tb, "orch-b", 200 + i);
    int want = 20;
    cr_assert(run_until(got_b, &want, 20),
              "replies to orch-b were held behind undeliverable ones "
              "(%d of 20):\n%s",
              replies_b, logbuf);
    int c = 0;
    saga_participant_close(inv, closed, &c);
    ta->close(ta);
    tb->close(tb);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "loop has open handles");
}

/* F3: the participant's endpoint takes frames of 1 KiB at most, the
 * engine's 4 MiB. A saga whose command is larger fails that step at once
 * (the relay drops the outbox row, logs it, and the engine fails the step
 * naming SAGA_EINVAL), instead of the command being sent again first on
 * every reconnect while nothing behind it flows. */
Test(relay_isolation, command_over_the_receivers_frame_limit_fails_alone,
     .timeout = 60)
{
    saga_transport *ti, *to = orders_and_inventory(&ti, 1024);
    E = engine(to);
    const char *steps[] = {"inventory", "inventory"};
    define(E, "checkout", 2, steps);
    cr_assert_eq(saga_engine_start(E), SAGA_OK, "%s", saga_engine_errmsg(E));
    saga_participant *inv = participant("inventory", ti);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);

    saga_map *m;
    cr_assert_eq(saga_map_new(&m), SAGA_OK);
    static unsigned char blob[2000];
    cr_assert_eq(saga_map_set_bin(m, "blob", blob, sizeof blob), SAGA_OK);
    const void *data;
    size_t len;
    cr_assert_eq(saga_map_encode(m, &data, &len), SAGA_OK);
    char big[2][SAGA_ID_SIZE];
    /* One before the engine knows the limit (its send fails in the
     * confirmation), then the healthy ones, then one after. */
    cr_assert_eq(saga_start(E, "checkout", NULL, data, len, big[0], NULL, NULL),
                 SAGA_OK);
    for (int i = 0; i < NGOOD; i++)
        cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, good[i], NULL,
                                NULL),
                     SAGA_OK);
    cr_assert(run_until(all_good_done, NULL, 20),
              "healthy sagas were held behind the oversized command:\n%s",
              logbuf);
    cr_assert_eq(saga_start(E, "checkout", NULL, data, len, big[1], NULL, NULL),
                 SAGA_OK);
    saga_map_free(m);
    for (int i = 0; i < 2; i++) {
        cr_assert(run_until(ended, big[i], 20), "%s", logbuf);
        char err[512];
        saga_state st = state_of(big[i], err, sizeof err);
        cr_expect(st == SAGA_STATE_FAILED || st == SAGA_STATE_COMPENSATED,
                  "state %s", saga_state_name(st));
        cr_expect(strstr(err, "SAGA_EINVAL") != NULL,
                  "error does not say why: '%s'", err);
    }
    cr_expect(strstr(logbuf, "cannot be delivered") != NULL, "%s", logbuf);
    /* Dropped when its confirmation failed, not queued to be sent again. */
    cr_expect(strstr(logbuf, "(SAGA_EINVAL); resending") == NULL, "%s", logbuf);
    int completed, compensated;
    count_states(&completed, &compensated);
    cr_expect_eq(completed, NGOOD);
    saga_participant *ps[] = {inv};
    close_all(ps, 1);
}

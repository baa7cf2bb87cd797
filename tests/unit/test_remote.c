/*
 * test_remote.c — remote steps over the in-memory transport: the engine
 * sends commands through its outbox, participants answer through theirs;
 * inbox dedup, the barrier (null compensation, hanging action, retried
 * action), stale replies and remote timeouts.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_engine *E;
static saga_participant *inv, *pay;
static int64_t now_ms;
static int fail_charge;
static char logbuf[32768];

static int64_t fake_clock(void *a)
{
    (void)a;
    return now_ms;
}

static void capture(saga_log_level l, const char *id, int step, const char *msg,
                    void *arg)
{
    (void)l, (void)arg;
    size_t n = strlen(logbuf);
    if (n + 300 < sizeof logbuf)
        snprintf(logbuf + n, sizeof logbuf - n, "[%s %d] %s\n", id ? id : "-",
                 step, msg);
}

/* Business effects: a counter per name in the participant's own store,
 * written in the handler's transaction. */
static void read_i64(const void *v, size_t l, void *arg)
{
    if (l == sizeof(int64_t))
        memcpy(arg, v, l);
}

static int64_t effects(saga_participant *p, const char *what)
{
    saga_store *s = saga_participant_store(p);
    int64_t n = 0;
    s->kv_get(s, what, read_i64, &n);
    return n;
}

static int bump(saga_participant *p, const char *what)
{
    int64_t n = effects(p, what) + 1;
    saga_store *s = saga_participant_store(p);
    return s->kv_put(s, what, &n, sizeof n);
}

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)arg;
    if (c->compensating)
        return bump(p, "released");
    saga_map *m;
    const void *b;
    size_t n;
    saga_map_new(&m);
    saga_map_set_str(m, "reservation", "R-1");
    saga_map_encode(m, &b, &n);
    int rc = saga_reply_set(r, SAGA_OUTCOME_OK, b, n, NULL);
    saga_map_free(m);
    return rc ? rc : bump(p, "reserved");
}

static int h_charge(saga_participant *p, const saga_command *c, saga_reply *r,
                    void *arg)
{
    (void)arg, (void)c;
    if (fail_charge)
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "card declined");
    return bump(p, "charged");
}

static void pump(void)
{
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static saga_participant *mk_participant(const char *svc, const char *cmd,
                                        saga_command_fn fn)
{
    saga_store *s;
    saga_transport *t;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = svc;
    o.log = capture;
    o.log_level = SAGA_LOG_DEBUG;
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, s, t, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, cmd, fn, NULL), SAGA_OK);
    return p;
}

static void setup(void)
{
    now_ms = 1000000;
    fail_charge = 0;
    logbuf[0] = 0;
    uv_loop_init(&loop);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.clock = fake_clock;
    o.seed = 1;
    o.service = "orders";
    o.log = capture;
    o.log_level = SAGA_LOG_DEBUG;
    cr_assert_eq(saga_engine_new(&E, NULL, t, &o), SAGA_OK);
    saga_def *d;
    saga_def_new(&d, "checkout", 1);
    saga_step_options s1 = SAGA_STEP_OPTIONS_INIT, s2 = SAGA_STEP_OPTIONS_INIT;
    s1.service = "inventory";
    s1.command = "reserve";
    s1.comp_command = "reserve";
    s1.timeout_ms = 1000;
    s2.service = "payment";
    s2.command = "charge";
    s2.kind = SAGA_STEP_PIVOT;
    s2.timeout_ms = 1000;
    s2.retry.max_attempts = 2;
    s2.retry.jitter = SAGA_JITTER_NONE;
    cr_assert_eq(saga_def_add_step(d, "reserve", NULL, NULL, &s1, NULL), 0);
    cr_assert_eq(saga_def_add_step(d, "charge", NULL, NULL, &s2, NULL), 0);
    cr_assert_eq(saga_engine_register(E, d), SAGA_OK, "%s",
                 saga_engine_errmsg(E));
    cr_assert_eq(saga_engine_start(E), SAGA_OK, "%s", saga_engine_errmsg(E));
    inv = mk_participant("inventory", "reserve", h_reserve);
    pay = mk_participant("payment", "charge", h_charge);
}

static void closed(void *arg) { (*(int *)arg)++; }

static void teardown(void)
{
    int n = 0;
    saga_engine_close(E, closed, &n);
    if (inv)
        saga_participant_close(inv, closed, &n);
    if (pay)
        saga_participant_close(pay, closed, &n);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "loop has open handles");
}

TestSuite(remote, .init = setup, .fini = teardown);

static saga_state state_of(const char *id)
{
    saga_info *i;
    if (saga_get(E, id, &i) != SAGA_OK)
        return (saga_state)0;
    saga_state s = saga_info_state(i);
    saga_info_free(i);
    return s;
}

Test(remote, saga_completes_across_participants)
{
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    cr_assert_eq(saga_participant_start(pay), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, id, NULL, NULL), 0);
    pump();
    cr_expect_eq(state_of(id), SAGA_STATE_COMPLETED, "%s", logbuf);
    cr_expect_eq(effects(inv, "reserved"), 1);
    cr_expect_eq(effects(pay, "charged"), 1);
    cr_expect_eq(effects(inv, "released"), 0);
    /* The participant's output was merged into the saga data. */
    saga_info *i;
    cr_assert_eq(saga_get(E, id, &i), SAGA_OK);
    size_t l;
    const void *d = saga_info_data(i, &l);
    const char *s;
    size_t n;
    cr_expect_eq(saga_data_get_str(d, l, "reservation", &s, &n), SAGA_OK);
    saga_info_free(i);
}

Test(remote, failure_compensates_remotely)
{
    fail_charge = 1;
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    cr_assert_eq(saga_participant_start(pay), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, id, NULL, NULL), 0);
    pump();
    cr_expect_eq(state_of(id), SAGA_STATE_COMPENSATED, "%s", logbuf);
    cr_expect_eq(effects(inv, "reserved"), 1);
    cr_expect_eq(effects(inv, "released"), 1);
    cr_expect_eq(effects(pay, "charged"), 0);
}

Test(remote, timeout_then_late_participant_applies_once)
{
    /* Payment is down: the command waits on the bus, the step times out
     * and is retried; when payment comes up it gets both attempts. The
     * barrier applies the charge once; the reply to attempt 1 is stale. */
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, id, NULL, NULL), 0);
    pump();
    now_ms += 1000;
    saga_engine_advance(E);
    pump();
    now_ms += 100; /* backoff before attempt 2 */
    saga_engine_advance(E);
    pump();
    cr_assert_eq(saga_participant_start(pay), SAGA_OK);
    pump();
    cr_expect_eq(state_of(id), SAGA_STATE_COMPLETED, "%s", logbuf);
    cr_expect_eq(effects(pay, "charged"), 1);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(pay, &st);
    cr_expect_eq(st.retried_actions, 1u);
    cr_expect(strstr(logbuf, "stale reply") != NULL, "%s", logbuf);
}

/* --- the barrier, driven by hand-made commands --------------------------- */

static int replies;
static char last_reply[4][64];
static saga_outcome outcomes[4];

static void on_tester(saga_transport *t, saga_delivery *d, const char *topic,
                      const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope env;
    cr_assert_eq(saga_envelope_decode(&env, buf, len, 1 << 20, NULL), 0);
    if (replies < 4) {
        snprintf(last_reply[replies], 64, "%.60s", env.msg_id);
        outcomes[replies] = env.outcome;
    }
    replies++;
    t->ack(t, d);
}

static void send_cmd(saga_transport *t, const char *msg_id, int comp,
                     uint32_t attempt)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.step = 0;
    e.attempt = attempt;
    e.comp = comp;
    strcpy(e.msg_id, msg_id);
    strcpy(e.saga_id, "0123456789abcdef0123456789abcdef");
    strcpy(e.name, "reserve");
    strcpy(e.reply_to, "tester");
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(t->send(t, "inventory", e.saga_id, b, n, NULL, NULL), 0);
    saga_free(b);
}

Test(remote, compensation_first_then_hanging_action_is_refused)
{
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    replies = 0;
    cr_assert_eq(t->subscribe(t, "tester", "tester", on_tester, NULL), 0);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    send_cmd(t, "m-comp", 1, 1);
    pump();
    send_cmd(t, "m-act", 0, 1);
    pump();
    cr_expect_eq(replies, 2);
    cr_expect_eq(outcomes[0], SAGA_OUTCOME_OK, "null compensation answers OK");
    cr_expect_eq(outcomes[1], SAGA_OUTCOME_FAIL, "hanging action refused");
    cr_expect_eq(effects(inv, "reserved"), 0);
    cr_expect_eq(effects(inv, "released"), 0);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(inv, &st);
    cr_expect_eq(st.null_compensations, 1u);
    cr_expect_eq(st.hanging_refused, 1u);
    saga_transport_free(t);
}

Test(remote, same_command_three_times_one_effect_three_replies)
{
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    replies = 0;
    cr_assert_eq(t->subscribe(t, "tester", "tester", on_tester, NULL), 0);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    for (int i = 0; i < 3; i++) {
        send_cmd(t, "m-dup", 0, 1);
        pump();
    }
    cr_expect_eq(replies, 3);
    cr_expect_eq(effects(inv, "reserved"), 1);
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(last_reply[i], "m-dup.r");
        cr_expect_eq(outcomes[i], SAGA_OUTCOME_OK);
    }
    /* A retried action (a new attempt) returns the first result. */
    send_cmd(t, "m-dup-2", 0, 2);
    pump();
    cr_expect_eq(replies, 4);
    cr_expect_eq(effects(inv, "reserved"), 1);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(inv, &st);
    cr_expect_eq(st.duplicates, 2u);
    cr_expect_eq(st.retried_actions, 1u);
    saga_transport_free(t);
}

/* --- choreography: events through the outbox, deduplicated by the inbox -- */

static int h_reserve_and_publish(saga_participant *p, const saga_command *c,
                                 saga_reply *r, void *arg)
{
    (void)r, (void)arg;
    if (c->compensating)
        return SAGA_OK;
    static const unsigned char body[] = {0x81, 0xa2, 'o', 'k', 0xc3};
    int rc = saga_participant_publish(p, "inventory-events", c->saga_id,
                                      "InventoryReservedEvent", body,
                                      sizeof body);
    return rc ? rc : bump(p, "reserved");
}

static int on_inventory_event(saga_participant *p, const saga_command *ev,
                              void *arg)
{
    (void)arg;
    cr_expect_str_eq(ev->name, "InventoryReservedEvent");
    int ok = 0;
    cr_expect_eq(saga_data_get_bool(ev->payload, ev->payload_len, "ok", &ok),
                 SAGA_OK);
    return bump(p, "notified");
}

Test(remote, events_are_published_after_commit_and_applied_once)
{
    /* A notification service reacts to inventory's events. */
    saga_participant_close(inv, NULL, NULL);
    inv = mk_participant("inventory", "reserve", h_reserve_and_publish);
    saga_participant *note = mk_participant("notification", "noop", h_charge);
    cr_assert_eq(saga_participant_on_event(note, "inventory-events", NULL,
                                           "InventoryReservedEvent",
                                           on_inventory_event, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_participant_start(inv), SAGA_OK);
    cr_assert_eq(saga_participant_start(pay), SAGA_OK);
    cr_assert_eq(saga_participant_start(note), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(E, "checkout", NULL, NULL, 0, id, NULL, NULL), 0);
    pump();
    cr_expect_eq(state_of(id), SAGA_STATE_COMPLETED, "%s", logbuf);
    cr_expect_eq(effects(note, "notified"), 1);
    /* The same event delivered again (a redelivery) is applied once. */
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_EVENT;
    strcpy(e.msg_id, "ev-1");
    strcpy(e.saga_id, id);
    strcpy(e.name, "InventoryReservedEvent");
    static const unsigned char body[] = {0x81, 0xa2, 'o', 'k', 0xc3};
    e.payload = body;
    e.payload_len = sizeof body;
    void *b;
    size_t len;
    cr_assert_eq(saga_envelope_encode(&e, &b, &len), SAGA_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(t->send(t, "inventory-events", id, b, len, NULL, NULL),
                     SAGA_OK);
    saga_free(b);
    pump();
    cr_expect_eq(effects(note, "notified"), 2, "one new event, applied once");
    saga_transport_free(t);
    int closed_n = 0;
    saga_participant_close(note, closed, &closed_n);
}

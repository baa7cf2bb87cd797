/*
 * test_trace.c — W3C trace context: a saga started with a traceparent keeps
 * its trace id on every step's command (each attempt with its own span),
 * in the participants' handlers and structured logs, and in the engine's
 * structured logs; the text sink prints one line per event.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_engine *E;
static saga_participant *inv, *pay;
static char seen_tp[8][SAGA_TRACEPARENT_SIZE];
static int nseen;
static char plog[16384], elog[16384];
static int plog_traced, plog_about_saga;

static void append(char *buf, size_t size, const saga_log_event *ev)
{
    size_t n = strlen(buf);
    if (n + 400 < size)
        snprintf(buf + n, size - n, "%s|%s|%d|%u|%s|%s\n",
                 ev->service ? ev->service : "-",
                 ev->saga_id ? ev->saga_id : "-", ev->step, ev->attempt,
                 ev->trace_id ? ev->trace_id : "-", ev->message);
}

static void psink(const saga_log_event *ev, void *arg)
{
    (void)arg;
    append(plog, sizeof plog, ev);
    if (ev->saga_id != NULL) {
        plog_about_saga++;
        if (ev->trace_id && strcmp(ev->trace_id, TRACE) == 0)
            plog_traced++;
    }
}

static void esink(const saga_log_event *ev, void *arg)
{
    (void)arg;
    append(elog, sizeof elog, ev);
}

static int handler(saga_participant *p, const saga_command *c, saga_reply *r,
                   void *arg)
{
    (void)p, (void)r, (void)arg;
    if (nseen < 8)
        snprintf(seen_tp[nseen++], SAGA_TRACEPARENT_SIZE, "%s", c->traceparent);
    return 0;
}

static saga_participant *mk(const char *svc, const char *cmd)
{
    saga_store *s;
    saga_transport *t;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = svc;
    o.log_event = psink;
    o.log_level = SAGA_LOG_DEBUG;
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, s, t, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, cmd, handler, NULL), SAGA_OK);
    cr_assert_eq(saga_participant_start(p), SAGA_OK);
    return p;
}

static void setup(void)
{
    nseen = 0;
    plog[0] = elog[0] = '\0';
    plog_traced = plog_about_saga = 0;
    uv_loop_init(&loop);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.seed = 1;
    o.service = "orders";
    o.log_event = esink;
    o.log_level = SAGA_LOG_DEBUG;
    cr_assert_eq(saga_engine_new(&E, NULL, t, &o), SAGA_OK);
    saga_def *d;
    saga_def_new(&d, "checkout", 1);
    saga_step_options s1 = SAGA_STEP_OPTIONS_INIT, s2 = SAGA_STEP_OPTIONS_INIT;
    s1.service = "inventory";
    s1.command = "reserve";
    s1.comp_command = "reserve";
    s2.service = "payment";
    s2.command = "charge";
    s2.kind = SAGA_STEP_PIVOT;
    cr_assert_eq(saga_def_add_step(d, "reserve", NULL, NULL, &s1, NULL), 0);
    cr_assert_eq(saga_def_add_step(d, "charge", NULL, NULL, &s2, NULL), 0);
    cr_assert_eq(saga_engine_register(E, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(E), SAGA_OK);
    inv = mk("inventory", "reserve");
    pay = mk("payment", "charge");
}

static void closed(void *arg) { (*(int *)arg)++; }

static void teardown(void)
{
    int n = 0;
    saga_engine_close(E, closed, &n);
    saga_participant_close(inv, closed, &n);
    saga_participant_close(pay, closed, &n);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

TestSuite(trace, .init = setup, .fini = teardown);

static void pump(void)
{
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static saga_state state_of(const char *id)
{
    saga_info *i;
    if (saga_get(E, id, &i) != SAGA_OK)
        return (saga_state)0;
    saga_state s = saga_info_state(i);
    saga_info_free(i);
    return s;
}

Test(trace, a_traceparent_reaches_every_step_and_log)
{
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start_traced(E, "checkout", NULL, NULL, 0, TP, id, NULL,
                                   NULL),
                 SAGA_OK);
    pump();
    cr_assert_eq(state_of(id), SAGA_STATE_COMPLETED, "%s", elog);
    cr_assert_eq(nseen, 2);
    for (int i = 0; i < nseen; i++) {
        cr_expect(saga_traceparent_valid(seen_tp[i]), "%s", seen_tp[i]);
        cr_expect_eq(strncmp(seen_tp[i], "00-" TRACE "-", 36), 0, "%s",
                     seen_tp[i]);
        /* A span of its own, not the caller's. */
        cr_expect_neq(strncmp(seen_tp[i] + 36, "00f067aa0ba902b7", 16), 0);
    }
    cr_expect_neq(strcmp(seen_tp[0], seen_tp[1]), 0, "one span per step");
    /* Every participant log event about the saga carries the trace id. */
    cr_expect_gt(plog_about_saga, 0, "%s", plog);
    cr_expect_eq(plog_traced, plog_about_saga, "%s", plog);
    cr_expect(strstr(plog, "inventory|") != NULL, "%s", plog);
    cr_expect(strstr(plog, "payment|") != NULL, "%s", plog);
    /* The engine's own events about the saga too. */
    char want[128];
    snprintf(want, sizeof want, "orders|%s|", id);
    cr_expect(strstr(elog, want) != NULL, "%s", elog);
    cr_expect(strstr(elog, "|" TRACE "|saga COMPLETED") != NULL, "%s", elog);
    /* A step's traceparent is the same when computed again (a re-sent
     * command carries the same span). */
    saga_info *i;
    cr_assert_eq(saga_get(E, id, &i), SAGA_OK);
    size_t len;
    const void *data = saga_info_data(i, &len);
    saga_step_ref ref;
    memset(&ref, 0, sizeof ref);
    memcpy(ref.saga_id, id, SAGA_ID_SIZE);
    ref.step = 0;
    ref.attempt = 1;
    char tp[SAGA_TRACEPARENT_SIZE];
    cr_assert_eq(saga_step_traceparent(data, len, &ref, tp), SAGA_OK);
    cr_expect_str_eq(tp, seen_tp[0]);
    saga_info_free(i);
}

Test(trace, without_a_valid_traceparent_the_saga_id_is_the_trace)
{
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start_traced(E, "checkout", NULL, NULL, 0,
                                   "00-zz-nonsense", id, NULL, NULL),
                 SAGA_OK);
    pump();
    cr_assert_eq(nseen, 2);
    cr_expect_eq(strncmp(seen_tp[0] + 3, id, 32), 0, "%s", seen_tp[0]);
    cr_expect_eq(saga_traceparent_valid("00-" TRACE "-0000000000000000-01"), 0);
    cr_expect_eq(saga_traceparent_valid(TP), 1);
}

Test(trace, text_sink_prints_one_line_per_event)
{
    char buf[512] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    saga_log_event ev = {1, SAGA_LOG_WARN, 1000,   "orders", "01a2", 2,
                         3, TRACE,         "hello"};
    saga_log_sink_text(&ev, f);
    fclose(f);
    cr_expect(strstr(buf, "warn") != NULL, "%s", buf);
    cr_expect(strstr(buf, "[saga 01a2 step 2 attempt 3 trace " TRACE
                          "] hello\n") != NULL,
              "%s", buf);
    cr_expect_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
}

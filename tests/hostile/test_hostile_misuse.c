/*
 * test_hostile_misuse.c — the participant and the store openers misused from
 * outside (run under ASan and UBSan by the test command): NULL arguments,
 * calls between close and its callback, a participant closed from inside
 * its own command handler (deferred or not) and from an event handler,
 * deferred handles answered after that close, and store specs that are
 * malformed, unreachable or point at things that are not files. Every
 * misuse gives its documented error (or is a documented no-op), never a
 * crash or a leak. Only <saga/saga.h> is used.
 */
#include <criterion/criterion.h>
#include <saga/saga.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_transport *T; /* the tester: sends commands, gets replies */
static int nreplies;
static saga_outcome last_outcome;

static const unsigned char MAP[] = {0x81, 0xa1, 'a', 0x01}; /* {"a":1} */

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    last_outcome = e.outcome;
    nreplies++;
    t->ack(t, d);
}

static void pump(int n)
{
    for (int i = 0; i < n; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void send_cmd(const char *topic, const char *saga, unsigned attempt,
                     int kind)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.step = 1;
    e.attempt = attempt;
    snprintf(e.msg_id, sizeof e.msg_id, "%s.%u", saga, attempt);
    snprintf(e.saga_id, sizeof e.saga_id, "%s", saga);
    strcpy(e.name, "pay");
    strcpy(e.reply_to, "tester");
    e.payload = MAP;
    e.payload_len = sizeof MAP;
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(T->send(T, topic, e.saga_id, b, n, NULL, NULL), 0);
    saga_free(b);
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&T, bus), SAGA_OK);
    cr_assert_eq(T->subscribe(T, "tester", "tester", on_reply, NULL), 0);
    nreplies = 0;
}

static void teardown(void)
{
    T->close(T);
    pump(20);
    saga_inmem_bus_free(bus);
    pump(20);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

/* ---- a participant closed from inside its own handlers ------------------ */

static saga_participant *P;
static int closed_cb;
static saga_deferred *held;
static char mode; /* 'd' defer then close, 'c' close, 'r' defer+reply+close */
static int calls;

static void on_closed(void *arg)
{
    (void)arg;
    closed_cb++;
}

static int h_pay(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)c, (void)arg;
    calls++;
    if (mode == 'd' || mode == 'r') {
        saga_deferred *d = NULL;
        cr_assert_eq(saga_reply_defer(r, &d), SAGA_OK);
        if (mode == 'r') {
            /* The first handler answers, then closes; a later one of the
             * same batch finds the participant closing. */
            int rc = saga_deferred_reply(d, SAGA_OUTCOME_OK, MAP, sizeof MAP,
                                         NULL);
            cr_assert_eq(rc, calls == 1 ? SAGA_OK : SAGA_ECLOSED, "%s",
                         saga_strerror(rc));
        } else if (calls == 1)
            held = d;
        else
            saga_deferred_abandon(d); /* a later handler of the batch */
    } else
        cr_assert_eq(saga_reply_set(r, SAGA_OUTCOME_OK, MAP, sizeof MAP, NULL),
                     SAGA_OK);
    saga_participant_close(p, on_closed, NULL);
    saga_participant_close(p, on_closed, NULL); /* a second call: nothing */
    /* Between close and its callback: documented errors, no crash. */
    cr_expect_eq(saga_participant_publish(p, "t", "k", "E", MAP, sizeof MAP),
                 SAGA_ECLOSED);
    cr_expect_eq(saga_participant_housekeep(p), SAGA_ECLOSED);
    cr_expect_neq(saga_participant_on_command(p, "x", h_pay, NULL), SAGA_OK);
    cr_expect_neq(saga_participant_start(p), SAGA_OK);
    cr_expect_not_null(saga_participant_errmsg(p));
    return SAGA_OK;
}

static int h_event(saga_participant *p, const saga_command *ev, void *arg)
{
    (void)ev, (void)arg;
    calls++;
    saga_participant_close(p, on_closed, NULL);
    return SAGA_OK;
}

static void quiet(saga_log_level l, const char *saga_id, int step,
                  const char *msg, void *arg)
{
    (void)l, (void)saga_id, (void)step, (void)msg, (void)arg;
}

static void start_participant(void)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "payment";
    o.log_level = SAGA_LOG_ERROR;
    o.log = quiet;
    cr_assert_eq(saga_participant_new(&P, &loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(P, "pay", h_pay, NULL), SAGA_OK);
    cr_assert_eq(saga_participant_on_event(P, "events", NULL, NULL, h_event,
                                           NULL),
                 SAGA_OK);
    cr_assert_eq(saga_participant_start(P), SAGA_OK);
    closed_cb = 0;
    calls = 0;
    held = NULL;
}

static void run_close_from_handler(char m)
{
    mode = m;
    start_participant();
    send_cmd("payment", "s1", 1, SAGA_MSG_COMMAND);
    send_cmd("payment", "s2", 1, SAGA_MSG_COMMAND);
    pump(200);
    cr_assert_eq(closed_cb, 1, "the close callback ran once");
    cr_assert_geq(calls, 1);
}

TestSuite(hostile_misuse, .init = setup, .fini = teardown, .timeout = 60);

Test(hostile_misuse, close_from_inside_a_command_handler)
{
    run_close_from_handler('c');
}

Test(hostile_misuse, close_from_inside_a_deferring_handler_then_answer)
{
    run_close_from_handler('d');
    cr_assert_not_null(held);
    /* The participant is gone: the handle is still the caller's. */
    int rc = saga_deferred_reply(held, SAGA_OUTCOME_OK, MAP, sizeof MAP, NULL);
    cr_expect_eq(rc, SAGA_ECLOSED, "%s", saga_strerror(rc));
}

Test(hostile_misuse, close_from_inside_a_deferring_handler_then_abandon)
{
    run_close_from_handler('d');
    cr_assert_not_null(held);
    saga_deferred_abandon(held);
}

Test(hostile_misuse, answer_then_close_inside_the_same_handler)
{
    run_close_from_handler('r');
}

Test(hostile_misuse, close_from_inside_an_event_handler)
{
    mode = 'c';
    start_participant();
    send_cmd("events", "e1", 1, SAGA_MSG_EVENT);
    send_cmd("events", "e2", 1, SAGA_MSG_EVENT);
    pump(200);
    cr_assert_eq(closed_cb, 1);
    cr_assert_geq(calls, 1);
}

Test(hostile_misuse, participant_null_arguments)
{
    saga_participant *p = (saga_participant *)1;
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "x";
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    cr_expect_eq(saga_participant_new(NULL, &loop, s, pt, &o), SAGA_EINVAL);
    cr_expect_eq(saga_participant_new(&p, &loop, NULL, pt, &o), SAGA_EINVAL);
    cr_expect_eq(saga_participant_new(&p, &loop, s, NULL, &o), SAGA_EINVAL);
    cr_expect_eq(saga_participant_new(&p, &loop, s, pt, NULL), SAGA_EINVAL);
    o.service = "";
    cr_expect_eq(saga_participant_new(&p, &loop, s, pt, &o), SAGA_EINVAL);
    o.service = NULL;
    cr_expect_eq(saga_participant_new(&p, &loop, s, pt, &o), SAGA_EINVAL);
    o.service = "x";
    o.version = 0;
    cr_expect_eq(saga_participant_new(&p, &loop, s, pt, &o), SAGA_EVERSION);
    o.version = 999;
    cr_expect_eq(saga_participant_new(&p, &loop, s, pt, &o), SAGA_EVERSION);
    cr_expect_eq(saga_participant_options_init(NULL, 3), SAGA_EINVAL);
    cr_expect_eq(saga_participant_options_init(&o, 0), SAGA_EVERSION);
    cr_expect_eq(saga_participant_options_init(&o, 999), SAGA_EVERSION);
    cr_expect_eq(saga_participant_on_command(NULL, "x", h_pay, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_on_event(NULL, "t", NULL, NULL, h_event,
                                           NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_start(NULL), SAGA_EINVAL);
    cr_expect_eq(saga_participant_publish(NULL, "t", NULL, "E", NULL, 0),
                 SAGA_EINVAL);
    cr_expect_null(saga_participant_store_handle(NULL));
    cr_expect_null(saga_participant_store(NULL));
    cr_expect_not_null(saga_participant_errmsg(NULL));
    cr_expect_eq(saga_participant_housekeep(NULL), SAGA_EINVAL);
    cr_expect_eq(saga_participant_stats(NULL, NULL), SAGA_EINVAL);
    saga_participant_close(NULL, NULL, NULL);
    saga_participant_free(NULL);
    cr_expect_eq(saga_reply_set(NULL, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_EINVAL);
    saga_deferred *d = (saga_deferred *)1;
    cr_expect_eq(saga_reply_defer(NULL, &d), SAGA_EINVAL);
    cr_expect_eq(saga_deferred_reply(NULL, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_EINVAL);
    cr_expect_null(saga_deferred_command(NULL));
    saga_deferred_abandon(NULL);
    /* Not taken by a failed new: still ours. */
    saga_store_free(s);
    pt->close(pt);
}

Test(hostile_misuse, participant_misuse_before_start_and_after_close)
{
    mode = 'c';
    start_participant();
    saga_participant *p = P;
    cr_expect_eq(saga_participant_start(p), SAGA_EBUSY, "started twice");
    cr_expect_eq(saga_participant_on_command(p, "late", h_pay, NULL),
                 SAGA_EBUSY);
    cr_expect_eq(saga_participant_on_command(p, NULL, h_pay, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_on_command(p, "x", NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_participant_publish(p, NULL, "k", "E", MAP, sizeof MAP),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_publish(p, "t", "k", NULL, MAP, sizeof MAP),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_publish(p, "t", "k", "E", NULL, 5),
                 SAGA_EINVAL);
    cr_expect_eq(saga_participant_publish(p, "", "k", "E", MAP, sizeof MAP),
                 SAGA_EINVAL);
    saga_participant_close(p, on_closed, NULL);
    cr_expect_eq(saga_participant_publish(p, "t", "k", "E", MAP, sizeof MAP),
                 SAGA_ECLOSED);
    cr_expect_eq(saga_participant_housekeep(p), SAGA_ECLOSED);
    saga_participant_free(p); /* closing already: a no-op */
    pump(100);
    cr_assert_eq(closed_cb, 1);
}

/* ---- store specs ---------------------------------------------------------- */

static void expect_open_fails(const char *spec)
{
    saga_store *s = (saga_store *)1;
    int rc = saga_store_open(&s, spec);
    cr_expect_neq(rc, SAGA_OK, "spec '%.80s' opened", spec ? spec : "(null)");
    cr_expect_null(s, "spec '%.80s': *out not NULL on failure",
                   spec ? spec : "(null)");
    cr_expect_not_null(saga_open_errmsg());
    if (rc == SAGA_OK && s != NULL)
        saga_store_free(s);
}

Test(hostile_misuse, store_specs_that_cannot_open, .timeout = 60)
{
    cr_expect_eq(saga_store_open(NULL, "memory:"), SAGA_EINVAL);
    expect_open_fails(NULL);
    expect_open_fails("");
    expect_open_fails("/");
    expect_open_fails("/tmp");
    expect_open_fails("/nonexistent-dir-xyz/sub/store.db");
    expect_open_fails("/proc/self/status");
    char tmpl[] = "/tmp/hostile_misuse.XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    char path[4200];
    /* a file that is not a database */
    snprintf(path, sizeof path, "%s/garbage.db", tmpl);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 4096; i++)
        fputc("not a database "[i % 15], f);
    fclose(f);
    expect_open_fails(path);
    unlink(path);
    /* a path far longer than PATH_MAX allows */
    memset(path, 'a', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    expect_open_fails(path);
    rmdir(tmpl);
}

Test(hostile_misuse, postgres_specs_that_cannot_open, .timeout = 60)
{
    /* Each is either refused as malformed or fails to connect: port 1 on
     * loopback refuses at once. A build without the PostgreSQL store
     * refuses them all with SAGA_EINVAL. */
    static const char *const specs[] = {
        "postgres://",
        "postgresql://",
        "postgres://127.0.0.1:1/db",
        "postgres://saga@127.0.0.1:1/db?schema=x",
        "postgres://127.0.0.1:notaport/db",
        "postgres://127.0.0.1:1/db?schema=",
        "postgres://127.0.0.1:1/db?schema=a%22%3B%20DROP%20TABLE%20x%3B--",
        "postgres://127.0.0.1:1/db?schema=a\";drop",
        "postgres://127.0.0.1:1/db?lease_ms=abc",
        "postgres://127.0.0.1:1/db?lease_ms=-5",
        "postgres://127.0.0.1:1/db?lease_ms=99999999999999999999999",
        "postgres://127.0.0.1:1/db?owner=",
        "postgres://127.0.0.1:1/db?%zz=1",
        "postgres://127.0.0.1:1/db?schema=x&schema=y",
        "postgres://127.0.0.1:1/db?&&&=",
        "postgres://%zz@127.0.0.1:1/db",
        "postgres://[::1/db",
        "postgres://127.0.0.1:1/db?connect_timeout=1&sslmode=bogus",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        expect_open_fails(specs[i]);
    /* a schema name of 10 kB */
    size_t n = 10000;
    char *big = malloc(n + 64);
    cr_assert_not_null(big);
    int k = snprintf(big, 64, "postgres://127.0.0.1:1/db?schema=");
    memset(big + k, 's', n);
    big[k + n] = '\0';
    expect_open_fails(big);
    free(big);
}

/*
 * test_participant_defer.c — command handlers that answer later
 * (saga_reply_defer, saga_deferred_reply): exactly once across the wait, a
 * re-drive after a restart, and no leak or use-after-free when the
 * participant closes with handles outstanding.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#include "fakes/fault_store.h"
#include "fakes/tmpdir.h"

#define MAXR 64

typedef struct got {
    char msg_id[300];
    saga_outcome outcome;
    int comp;
    unsigned attempt;
    char error[1100];
    unsigned char out[64];
    size_t out_len;
} got;

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T; /* the tester: sends commands, gets replies */
static got replies[MAXR];
static int nreplies;

/* What the handler does: 'd' defer, 'o' answer OK now, 'e' fail (error
 * code), 'n' defer then answer at once inside the handler. */
static char mode = 'd';
static int calls, comp_calls, redriven_calls;
static saga_deferred *held[16];
static int nheld;

static const unsigned char OUT[] = {0x81, 0xa1, 'a', 0x01}; /* {"a":1} */

static int h_pay(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)p, (void)arg;
    calls++;
    if (c->compensating)
        comp_calls++;
    if (c->redriven)
        redriven_calls++;
    if (mode == 'o')
        return SAGA_OK;
    if (mode == 'e')
        return SAGA_ESTORE;
    saga_deferred *d;
    int rc = saga_reply_defer(r, &d);
    cr_assert_eq(rc, SAGA_OK, "defer: %s", saga_strerror(rc));
    saga_deferred *d2;
    cr_assert_eq(saga_reply_defer(r, &d2), SAGA_EINVAL, "twice");
    cr_assert_null(d2);
    const saga_command *dc = saga_deferred_command(d);
    cr_assert_str_eq(dc->saga_id, c->saga_id);
    cr_assert_str_eq(dc->msg_id, c->msg_id);
    cr_assert_eq(dc->compensating, c->compensating);
    cr_assert_eq(dc->payload_len, c->payload_len);
    cr_assert_eq(dc->redriven, c->redriven);
    if (mode == 'n') {
        cr_assert_eq(saga_deferred_reply(d, SAGA_OUTCOME_OK, OUT, sizeof OUT,
                                         NULL),
                     SAGA_OK);
        return SAGA_OK;
    }
    held[nheld++] = d;
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    cr_assert_lt(nreplies, MAXR);
    got *g = &replies[nreplies++];
    snprintf(g->msg_id, sizeof g->msg_id, "%s", e.msg_id);
    g->outcome = e.outcome;
    g->comp = e.comp;
    g->attempt = e.attempt;
    snprintf(g->error, sizeof g->error, "%s", e.error);
    g->out_len = e.payload_len < sizeof g->out ? e.payload_len : 0;
    if (g->out_len)
        memcpy(g->out, e.payload, g->out_len);
    t->ack(t, d);
}

static void pump(void)
{
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void send_cmd(const char *saga, unsigned step, unsigned attempt,
                     int comp)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.step = step;
    e.attempt = attempt;
    e.comp = comp;
    snprintf(e.msg_id, sizeof e.msg_id, "%s.%u.%u.%c", saga, step, attempt,
             comp ? 'c' : 'a');
    snprintf(e.saga_id, sizeof e.saga_id, "%s", saga);
    strcpy(e.name, "pay");
    strcpy(e.reply_to, "tester");
    e.payload = OUT;
    e.payload_len = sizeof OUT;
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(T->send(T, "payment", e.saga_id, b, n, NULL, NULL), 0);
    saga_free(b);
}

static void start_participant(saga_store *s)
{
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "payment";
    cr_assert_eq(saga_participant_new(&P, &loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(P, "pay", h_pay, NULL), 0);
    cr_assert_eq(saga_participant_start(P), SAGA_OK, "%s",
                 saga_participant_errmsg(P));
}

static saga_store *mem(void)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    return s;
}

static void setup(void)
{
    nreplies = calls = comp_calls = redriven_calls = nheld = 0;
    mode = 'd';
    P = NULL;
    uv_loop_init(&loop);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&T, bus), SAGA_OK);
    cr_assert_eq(T->subscribe(T, "tester", "tester", on_reply, NULL), 0);
}

static void close_participant(void)
{
    if (P != NULL)
        saga_participant_close(P, NULL, NULL);
    P = NULL;
    pump();
}

static void teardown(void)
{
    close_participant();
    for (int i = 0; i < nheld; i++)
        saga_deferred_abandon(held[i]); /* valid after close */
    nheld = 0;
    saga_transport_free(T);
    pump();
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "loop has open handles");
}

TestSuite(participant_defer, .init = setup, .fini = teardown);

static int count_replies(const char *msg_id, saga_outcome oc)
{
    int n = 0;
    for (int i = 0; i < nreplies; i++)
        n += strcmp(replies[i].msg_id, msg_id) == 0 && replies[i].outcome == oc;
    return n;
}

static saga_participant_counters stats(void)
{
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    saga_participant_counters bad = {0};
    cr_assert_eq(saga_participant_stats(P, &bad), SAGA_EVERSION);
    return st;
}

Test(participant_defer, answer_later_is_recorded_and_published)
{
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nheld, 1);
    cr_assert_eq(nreplies, 0, "nothing is replied before the answer");
    cr_assert_eq(stats().deferred, 1);
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, OUT, sizeof OUT,
                                     NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
    cr_assert_str_eq(replies[0].msg_id, "s1.0.1.a.r");
    cr_assert_eq(replies[0].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(replies[0].out_len, sizeof OUT);
    cr_assert_eq(memcmp(replies[0].out, OUT, sizeof OUT), 0);
    /* The barrier holds the answer: a retried attempt gets it, no call. */
    send_cmd("s1", 0, 2, 0);
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nreplies, 2);
    cr_assert_eq(replies[1].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(replies[1].attempt, 2);
    cr_assert_eq(replies[1].out_len, sizeof OUT);
    cr_assert_eq(stats().retried_actions, 1);
}

Test(participant_defer, redelivery_while_pending_calls_nothing_twice)
{
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    send_cmd("s1", 0, 1, 0); /* the same message twice, one turn */
    pump();
    send_cmd("s1", 0, 1, 0); /* and again later */
    pump();
    cr_assert_eq(calls, 1, "the handler ran once");
    cr_assert_eq(nreplies, 0, "nothing replied while pending");
    cr_assert_eq(stats().duplicates, 2);
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
    send_cmd("s1", 0, 1, 0); /* after the answer: the recorded reply */
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nreplies, 2);
    cr_assert_str_eq(replies[1].msg_id, "s1.0.1.a.r");
    cr_assert_eq(replies[1].outcome, SAGA_OUTCOME_OK);
}

/* Our choice: a compensation (or another attempt) of a pending step is
 * answered RETRY; the orchestrator retries it with backoff. */
Test(participant_defer, compensation_while_pending_is_answered_retry)
{
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    pump();
    send_cmd("s1", 0, 2, 0); /* the orchestrator timed out and retried */
    send_cmd("s1", 0, 1, 1); /* then compensated */
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nreplies, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(replies[i].outcome, SAGA_OUTCOME_RETRY);
        cr_assert(strstr(replies[i].error, "pending") != NULL, "%s",
                  replies[i].error);
    }
    cr_assert_eq(stats().pending_retried, 2);
    /* The action's answer lands; the next compensation attempt undoes it. */
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 3);
    cr_assert_eq(replies[2].outcome, SAGA_OUTCOME_OK);
    mode = 'o';
    send_cmd("s1", 0, 2, 1);
    pump();
    cr_assert_eq(comp_calls, 1, "the compensation ran on the applied action");
    cr_assert_eq(nreplies, 4);
    cr_assert_eq(replies[3].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(replies[3].comp, 1);
    /* The step is compensated: a late action is refused. */
    send_cmd("s1", 0, 3, 0);
    pump();
    cr_assert_eq(nreplies, 5);
    cr_assert_eq(replies[4].outcome, SAGA_OUTCOME_FAIL);
    cr_assert_eq(calls, 2);
}

Test(participant_defer, answered_fail_leaves_nothing_applied)
{
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    pump();
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_FAIL, NULL, 0,
                                     "INSUFFICIENT_FUNDS"),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
    cr_assert_eq(replies[0].outcome, SAGA_OUTCOME_FAIL);
    cr_assert_str_eq(replies[0].error, "INSUFFICIENT_FUNDS");
    /* Its compensation is a null compensation: the handler is not called. */
    send_cmd("s1", 0, 1, 1);
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nreplies, 2);
    cr_assert_eq(replies[1].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(stats().null_compensations, 1);
}

Test(participant_defer, deferred_compensation)
{
    mode = 'o';
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    pump();
    cr_assert_eq(nreplies, 1);
    mode = 'd';
    send_cmd("s1", 0, 1, 1);
    pump();
    cr_assert_eq(comp_calls, 1);
    cr_assert_eq(nreplies, 1);
    /* A refund that must be retried: the action stays applied. */
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_RETRY, NULL, 0,
                                     "gateway busy"),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 2);
    cr_assert_eq(replies[1].outcome, SAGA_OUTCOME_RETRY);
    send_cmd("s1", 0, 2, 1);
    pump();
    cr_assert_eq(comp_calls, 2, "applied again: the compensation runs");
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 3);
    cr_assert_eq(replies[2].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(replies[2].comp, 1);
}

Test(participant_defer, answer_inside_the_handler_waits_for_its_commit)
{
    mode = 'n';
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    send_cmd("s2", 0, 1, 0);
    pump();
    cr_assert_eq(calls, 2);
    cr_assert_eq(nreplies, 2);
    cr_assert_eq(replies[0].outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(replies[1].out_len, sizeof OUT);
}

Test(participant_defer, many_pending_answered_in_any_order)
{
    start_participant(mem());
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "s%d", i);
        send_cmd(id, 1, 1, 0);
    }
    pump();
    cr_assert_eq(nheld, 10);
    for (int i = 9; i >= 0; i -= 2)
        cr_assert_eq(saga_deferred_reply(held[i], SAGA_OUTCOME_OK, NULL, 0,
                                         NULL),
                     SAGA_OK);
    for (int i = 0; i < 10; i += 2)
        cr_assert_eq(saga_deferred_reply(held[i], SAGA_OUTCOME_FAIL, NULL, 0,
                                         "no"),
                     SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 10);
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += replies[i].outcome == SAGA_OUTCOME_OK;
    cr_assert_eq(ok, 5);
}

/* A failed commit undoes the deferral: the old handle is void, the
 * handler runs again and the new handle's answer is the one sent. */
Test(participant_defer, handle_of_a_rolled_back_batch_is_void)
{
    saga_store *s;
    fault_store *fs;
    cr_assert_eq(fault_store_new(&s, mem(), &fs), SAGA_OK);
    fault_store_fail_nth(fs, FAULT_COMMIT, 1);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "payment";
    o.store_retry_ms = 1;
    o.log_level = (saga_log_level)9; /* quiet */
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    cr_assert_eq(saga_participant_new(&P, &loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(P, "pay", h_pay, NULL), 0);
    cr_assert_eq(saga_participant_start(P), SAGA_OK);
    send_cmd("s1", 0, 1, 0);
    for (int i = 0; i < 200 && nheld < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(nheld, 2, "the handler ran again after the failed commit");
    cr_assert_eq(stats().commit_failures, 1);
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_FAIL, NULL, 0,
                                     "void"),
                 SAGA_OK, "a void handle's answer does nothing");
    cr_assert_eq(saga_deferred_reply(held[1], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
    cr_assert_eq(replies[0].outcome, SAGA_OUTCOME_OK);
}

/* A crash (here: a close with the handle unanswered) during the wait: the
 * next start calls the handler again, flagged redriven, and its answer is
 * the reply. */
Test(participant_defer, pending_command_is_redriven_after_restart)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    start_participant(s);
    send_cmd("s1", 2, 1, 0);
    send_cmd("s2", 2, 1, 0);
    pump();
    cr_assert_eq(nheld, 2);
    /* s2 is answered before the stop: it must not be driven again. */
    cr_assert_eq(saga_deferred_reply(held[1], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 1;
    close_participant();
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ECLOSED, "closed: freed, stays pending");
    nheld = 0;
    cr_assert_eq(nreplies, 1);
    cr_assert_str_eq(replies[0].msg_id, "s2.2.1.a.r");
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    mode = 'o';
    calls = 0;
    start_participant(s);
    cr_assert_eq(stats().redriven, 1);
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(redriven_calls, 1);
    /* s2's reply may come again (its outbox row was confirmed after the
     * stop): at least once. s1's comes now. */
    cr_assert_eq(count_replies("s1.2.1.a.r", SAGA_OUTCOME_OK), 1);
    /* Answered now: a third start drives nothing. */
    close_participant();
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    start_participant(s);
    pump();
    cr_assert_eq(stats().redriven, 0);
    cr_assert_eq(calls, 1);
    close_participant();
    tmpdir_remove(&td);
}

/* A redriven command may defer again; its answer then goes out. */
Test(participant_defer, redriven_command_may_defer_again)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    start_participant(s);
    send_cmd("s1", 0, 1, 0);
    pump();
    close_participant();
    saga_deferred_abandon(held[0]);
    nheld = 0;
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    start_participant(s);
    pump();
    cr_assert_eq(redriven_calls, 1);
    cr_assert_eq(nheld, 1);
    cr_assert_eq(saga_deferred_command(held[0])->redriven, 1);
    send_cmd("s1", 0, 1, 0); /* a redelivery meanwhile: nothing */
    pump();
    cr_assert_eq(calls, 2);
    cr_assert_eq(nreplies, 0);
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, OUT, sizeof OUT,
                                     NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
    cr_assert_eq(replies[0].out_len, sizeof OUT);
    close_participant();
    tmpdir_remove(&td);
}

/* Closing with handles outstanding, answered and not: no leak, no
 * use-after-free (the sanitizer pass checks). */
Test(participant_defer, close_with_handles_outstanding)
{
    start_participant(mem());
    send_cmd("s1", 0, 1, 0);
    send_cmd("s2", 0, 1, 0);
    send_cmd("s3", 0, 1, 0);
    pump();
    cr_assert_eq(nheld, 3);
    /* One answered but not yet committed when close starts. */
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    saga_participant_close(P, NULL, NULL);
    /* During the close: refused, freed. */
    cr_assert_eq(saga_deferred_reply(held[1], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ECLOSED);
    P = NULL;
    pump();
    /* After it: abandon is still valid. */
    saga_deferred_abandon(held[2]);
    nheld = 0;
}

Test(participant_defer, misuse)
{
    start_participant(mem());
    saga_deferred *d = (saga_deferred *)1;
    cr_assert_eq(saga_reply_defer(NULL, &d), SAGA_EINVAL);
    cr_assert_null(d);
    cr_assert_null(saga_deferred_command(NULL));
    cr_assert_eq(saga_deferred_reply(NULL, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_EINVAL);
    saga_deferred_abandon(NULL);
    send_cmd("s1", 0, 1, 0);
    pump();
    cr_assert_eq(nheld, 1);
    cr_assert_eq(saga_deferred_reply(held[0], (saga_outcome)7, NULL, 0, NULL),
                 SAGA_EINVAL, "kept");
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, "x", 1, NULL),
                 SAGA_EINVAL, "not a map: kept");
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 3, NULL),
                 SAGA_EINVAL);
    cr_assert_eq(saga_deferred_reply(held[0], SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    nheld = 0;
    pump();
    cr_assert_eq(nreplies, 1);
}

static int h_try_defer(saga_participant *p, const saga_command *c,
                       saga_reply *r, void *arg)
{
    (void)p, (void)c, (void)arg;
    saga_deferred *d;
    calls++;
    cr_assert_eq(saga_reply_defer(r, &d), SAGA_EINVAL);
    return SAGA_OK;
}

/* Without kv_scan a pending command could not be re-driven: refused. */
Test(participant_defer, store_without_scan_refuses_defer)
{
    saga_store *s;
    cr_assert_eq(fault_store_new(&s, mem(), NULL), SAGA_OK);
    s->kv_scan = NULL;
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "payment";
    cr_assert_eq(saga_participant_new(&P, &loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(P, "pay", h_try_defer, NULL), 0);
    cr_assert_eq(saga_participant_start(P), SAGA_OK);
    send_cmd("s1", 0, 1, 0);
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_eq(nreplies, 1, "answered at once (OK by default)");
}

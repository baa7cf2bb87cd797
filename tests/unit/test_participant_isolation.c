/*
 * test_participant_isolation.c — a command handler that keeps failing
 * (returns an error) must not halt the participant (issue 7, item 3): it is
 * isolated from its batch, retried alone with capped backoff, and after
 * handler_max_tries answered FAIL with the handler's error, while every
 * other command goes on. Before the fix the whole batch rolled back on
 * every try and nothing committed again.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

#include "fakes/fault_store.h"
#include "fixture.h"

#define MAXR 512

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T;
static int nreplies, nok, nfail;
static char fail_error[1100];
static int poison_calls, event_calls, poison_event_calls;
static int audits;     /* events committed by the good event handlers */
static int late_calls; /* calls for the events sent during the retries */
static char logbuf[16384];

static void on_log(saga_log_level lvl, const char *saga_id, int step,
                   const char *msg, void *arg)
{
    (void)lvl, (void)saga_id, (void)step, (void)arg;
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

/* The poisoned saga's handler fails with its own reason every time. */
static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)arg;
    if (strncmp(c->saga_id, "poison", 6) == 0) {
        poison_calls++;
        saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                       "ledger row locked by another process");
        return SAGA_ESTORE;
    }
    /* The others write something in the same transaction. */
    char ev[32];
    snprintf(ev, sizeof ev, "reserved");
    return saga_participant_publish(p, "inventory-events", c->saga_id, ev, NULL,
                                    0);
}

static int h_event(saga_participant *p, const saga_command *e, void *arg)
{
    (void)p, (void)arg;
    event_calls++;
    if (strcmp(e->saga_id, "poison") == 0) {
        poison_event_calls++;
        return SAGA_EINVAL;
    }
    if (strncmp(e->saga_id, "late", 4) == 0)
        late_calls++;
    /* A write in the transaction: committed once, whatever the calls. */
    return saga_participant_publish(p, "audit", e->saga_id, "seen", NULL, 0);
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    if (e.kind == SAGA_MSG_EVENT && strcmp(topic, "audit") == 0)
        audits++;
    if (e.kind == SAGA_MSG_REPLY) {
        nreplies++;
        if (e.outcome == SAGA_OUTCOME_OK)
            nok++;
        else {
            nfail++;
            cr_assert(strncmp(e.saga_id, "poison", 6) == 0, "%s", e.saga_id);
            snprintf(fail_error, sizeof fail_error, "%s", e.error);
        }
    }
    t->ack(t, d);
}

static void send_env(const char *topic, saga_msg_kind kind, const char *saga,
                     unsigned step)
{
    char id[96];
    snprintf(id, sizeof id, "%s.%u.%d", saga, step, (int)kind);
    fx_send(T, topic,
            &(fx_msg){.kind = kind,
                      .saga = saga,
                      .msg_id = id,
                      .name = kind == SAGA_MSG_EVENT ? "price-changed"
                                                     : "reserve",
                      .step = step});
}

static uint32_t max_batch; /* 0: the default */

static void start(saga_store *s, uint32_t max_tries)
{
    nreplies = nok = nfail = poison_calls = event_calls = 0;
    poison_event_calls = audits = late_calls = 0;
    logbuf[0] = fail_error[0] = '\0';
    saga_transport *pt;
    fx_inmem_open(&loop, &bus, &T, "tester", on_reply, &pt);
    cr_assert_eq(T->subscribe(T, "audit", "tester", on_reply, NULL), 0);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.store_retry_ms = 1;
    o.handler_max_tries = max_tries;
    o.max_batch = max_batch;
    o.log = on_log;
    cr_assert_eq(saga_participant_new(&P, &loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(P, "reserve", h_reserve, NULL), 0);
    cr_assert_eq(saga_participant_on_event(P, "catalog", NULL, NULL, h_event,
                                           NULL),
                 0);
    cr_assert_eq(saga_participant_start(P), SAGA_OK);
}

static void finish(void) { fx_inmem_close(&loop, P, T, bus, 20); }

/* Run until @p n replies came, bounded (the backoff is 1 ms, capped). */
static void run_until(int n)
{
    for (int i = 0; i < 20000 && nreplies < n; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (i % 16 == 15)
            usleep(200);
    }
}

static saga_store *mem(void)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    return s;
}

static void poisoned_batch(saga_store *s)
{
    start(s, 4);
    char id[32];
    /* 60 commands on 20 sagas in one loop turn, the poisoned one in the
     * middle; then more while it is being retried. */
    for (int i = 0; i < 20; i++) {
        for (unsigned st = 0; st < 3; st++) {
            snprintf(id, sizeof id, "saga-%02d", i);
            send_env("inventory", SAGA_MSG_COMMAND, id, st);
        }
        if (i == 10)
            send_env("inventory", SAGA_MSG_COMMAND, "poison", 0);
    }
    for (int i = 0; i < 50 && nok < 60; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(nok, 60, "the other commands were held by the poisoned one");
    for (int i = 20; i < 30; i++) {
        snprintf(id, sizeof id, "saga-%02d", i);
        send_env("inventory", SAGA_MSG_COMMAND, id, 0);
    }
    run_until(71);
    cr_assert_eq(nok, 70);
    cr_assert_eq(nfail, 1, "the poisoned command is answered FAIL");
    cr_assert_eq(poison_calls, 4, "tried handler_max_tries times");
    cr_assert(strstr(fail_error, "ledger row locked") != NULL, "%s",
              fail_error);
    cr_assert(strstr(fail_error, "SAGA_ESTORE") != NULL, "%s", fail_error);
    /* The log names the handler's failure, not a stale store message. */
    cr_assert(strstr(logbuf, "handler for command 'reserve' failed") != NULL,
              "%s", logbuf);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.handler_failures, 4);
    cr_assert_eq(st.handler_gave_up, 1);
    cr_assert_eq(st.commit_failures, 0);
    /* A redelivery of the poisoned command gets the recorded FAIL. */
    send_env("inventory", SAGA_MSG_COMMAND, "poison", 0);
    run_until(72);
    cr_assert_eq(nfail, 2);
    cr_assert_eq(poison_calls, 4);
    finish();
}

Test(participant_isolation, poisoned_command_memory_store)
{
    poisoned_batch(mem());
}

/* A store without savepoints: the batch is run again without it. */
Test(participant_isolation, poisoned_command_without_savepoints)
{
    saga_store *s;
    cr_assert_eq(fault_store_new(&s, mem(), NULL), SAGA_OK);
    s->savepoint = NULL;
    s->savepoint_rollback = NULL;
    s->savepoint_release = NULL;
    poisoned_batch(s);
}

/* A failing event handler is isolated too; events are never answered, so
 * it is retried (capped backoff) while the others go on. */
Test(participant_isolation, poisoned_event_does_not_block_others)
{
    start(mem(), 3);
    send_env("catalog", SAGA_MSG_EVENT, "a", 0);
    send_env("catalog", SAGA_MSG_EVENT, "poison", 0);
    send_env("catalog", SAGA_MSG_EVENT, "b", 0);
    send_env("inventory", SAGA_MSG_COMMAND, "c", 0);
    run_until(1);
    for (int i = 0; i < 2000 && poison_event_calls < 5; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(100);
    }
    cr_assert_eq(nok, 1);
    cr_assert_geq(poison_event_calls, 5, "retried past handler_max_tries");
    /* The first batch ran without savepoints: rolled back when the poison
     * failed and run again without it, so "a" may be called twice, but
     * its write committed once. */
    cr_assert_geq(event_calls - poison_event_calls, 2);
    cr_assert_leq(event_calls - poison_event_calls, 3);
    /* Events that come while the poison is being retried run once: a
     * batch holding a retry runs under per-message savepoints. */
    for (int k = 0; k < 4; k++) {
        char id[16];
        snprintf(id, sizeof id, "late%d", k);
        send_env("catalog", SAGA_MSG_EVENT, id, 0);
        for (int i = 0; i < 2000 && late_calls < k + 1; i++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            usleep(100);
        }
    }
    for (int i = 0; i < 2000 && audits < 6; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(100);
    }
    cr_assert_eq(late_calls, 4, "each late event called once");
    cr_assert_eq(audits, 6, "each good event committed once");
    finish();
}

/* Issue 8: a batch looks only at its own items, not at the whole queue
 * (failed handlers, savepoints, reads ahead). Batches of 8 in a queue of
 * 41: one poisoned command in the first batch, one the last queued (the
 * queue's tail moves when it is parked), more sent while both are retried
 * behind the queue. Every command is answered once, each poisoned one
 * FAIL after its tries, and the queue loses nothing. */
static void poisoned_in_long_queue(saga_store *s)
{
    max_batch = 8;
    start(s, 3);
    max_batch = 0;
    char id[32];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "saga-%02d", i);
        send_env("inventory", SAGA_MSG_COMMAND, id, 0);
        if (i == 2)
            send_env("inventory", SAGA_MSG_COMMAND, "poison-a", 0);
    }
    send_env("inventory", SAGA_MSG_COMMAND, "poison-z", 0);
    for (int i = 0; i < 200 && nok < 40; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(nok, 40, "the other commands were held by the poisoned ones");
    for (int i = 40; i < 60; i++) {
        snprintf(id, sizeof id, "saga-%02d", i);
        send_env("inventory", SAGA_MSG_COMMAND, id, 0);
    }
    run_until(62);
    cr_assert_eq(nok, 60);
    cr_assert_eq(nfail, 2, "each poisoned command is answered FAIL");
    cr_assert_eq(poison_calls, 6, "each tried handler_max_tries times");
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.handler_failures, 6);
    cr_assert_eq(st.handler_gave_up, 2);
    cr_assert_eq(st.commit_failures, 0);
    /* The queue's tail is intact: one more is received and answered. */
    send_env("inventory", SAGA_MSG_COMMAND, "saga-last", 0);
    run_until(63);
    cr_assert_eq(nok, 61);
    finish();
}

Test(participant_isolation, poisoned_commands_in_a_long_queue)
{
    poisoned_in_long_queue(mem());
}

Test(participant_isolation, poisoned_commands_in_a_long_queue_no_savepoints)
{
    saga_store *s;
    cr_assert_eq(fault_store_new(&s, mem(), NULL), SAGA_OK);
    s->savepoint = NULL;
    s->savepoint_rollback = NULL;
    s->savepoint_release = NULL;
    poisoned_in_long_queue(s);
}

/*
 * test_participant_resend_oom.c — out of memory on the participant's resend
 * path (issue 9, item 3): a duplicate of a command that was answered gets
 * the recorded reply again (the barrier's resend case). If allocating that
 * resend fails, the participant logs it and fails the batch, which is
 * retried: the reply must still be resent, once the memory is back, and
 * nothing may be lost or run twice.
 *
 * The loop fails allocation number n (n = 1, 2, ...) counted from the
 * duplicate's arrival, one allocation only, until a run fails none; among
 * them is the resend's own allocation (the log line says so, and the test
 * requires that some n hit it). Each run must end with the reply resent,
 * its payload the recorded one, the handler called once, and no block
 * left. A failure elsewhere (the receive, queueing for the relay) may need
 * the sender to send the duplicate again, as a broker or the engine's
 * retry would; one on the resend path itself must not.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#include "fakes/failalloc.h"
#include "fixture.h"

#define MAX_RUNS 2000

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T; /* the tester: sends commands, gets replies */
static int calls, nreplies, resend_oom;
static char last_id[300];
static unsigned char last_out[16];
static size_t last_len;

static const unsigned char OUT[] = {0x81, 0xa1, 'a', 0x01}; /* {"a":1} */

static int h_pay(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)p, (void)c, (void)arg;
    calls++;
    return saga_reply_set(r, SAGA_OUTCOME_OK, OUT, sizeof OUT, NULL);
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    cr_assert_eq(e.outcome, SAGA_OUTCOME_OK);
    nreplies++;
    snprintf(last_id, sizeof last_id, "%s", e.msg_id);
    last_len = e.payload_len < sizeof last_out ? e.payload_len : 0;
    if (last_len)
        memcpy(last_out, e.payload, last_len);
    t->ack(t, d);
}

static void on_log(saga_log_level lvl, const char *saga_id, int step,
                   const char *msg, void *arg)
{
    (void)lvl, (void)saga_id, (void)step, (void)arg;
    if (strstr(msg, "out of memory resending its reply") != NULL)
        resend_oom++;
}

static void send_cmd(void)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.attempt = 1;
    strcpy(e.msg_id, "s1.0.1.a");
    strcpy(e.saga_id, "s1");
    strcpy(e.name, "pay");
    strcpy(e.reply_to, "tester");
    e.payload = OUT;
    e.payload_len = sizeof OUT;
    void *b;
    size_t n;
    /* The tester's encode and send may be the allocation that fails: the
     * tester tries again (the participant's allocations are under test). */
    int rc;
    while ((rc = saga_envelope_encode(&e, &b, &n)) == SAGA_ENOMEM)
        ;
    cr_assert_eq(rc, SAGA_OK);
    while (T->send(T, "payment", e.saga_id, b, n, NULL, NULL) != SAGA_OK)
        ;
    saga_free(b);
}

/* Run the loop until @p want replies arrived (retries run from a 1 ms
 * timer), a bounded number of turns. */
static void run_until(int want)
{
    for (int i = 0; i < 1000 && nreplies < want; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (nreplies < want)
            uv_sleep(1);
    }
}

static void up(void)
{
    calls = nreplies = 0;
    last_id[0] = '\0';
    last_len = 0;
    saga_transport *pt;
    fx_inmem_open(&loop, &bus, &T, "tester", on_reply, &pt);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "payment";
    o.store_retry_ms = 1;
    o.log = on_log;
    P = fx_participant(&loop, fx_memory_store(), pt, &o, "pay", h_pay);
}

static void down(void)
{
    saga_participant_close(P, NULL, NULL);
    P = NULL;
    fx_pump(&loop, 50);
    fx_inmem_close(&loop, NULL, T, bus, 50);
}

Test(participant_resend_oom, the_reply_is_resent_after_each_failure,
     .timeout = 240)
{
    fa_install();
    long n;
    int redelivered = 0;
    for (n = 1; n < MAX_RUNS; n++) {
        fa_arm(0, 0);
        up();
        send_cmd();
        run_until(1);
        cr_assert_eq(nreplies, 1, "n=%ld: the first answer", n);
        cr_assert_eq(calls, 1);

        /* The duplicate, with allocation n (from here) failing once. */
        int resend_before = resend_oom;
        fa_arm(n, 0);
        send_cmd();
        run_until(2);
        long failed = FA.failed;
        fa_arm(0, 0);
        run_until(2);
        if (resend_oom > resend_before) {
            /* The resend's own allocation failed: the batch is retried
             * and the reply resent with no help from the sender. */
            cr_assert_eq(nreplies, 2,
                         "n=%ld: the resend failed and was not retried", n);
        } else if (nreplies < 2) {
            /* The failure hit elsewhere (the receive, or queueing the
             * reply for publishing): the delivery was left unacked, or
             * acked with its reply lost to the relay. The sender sends
             * it again, as a broker redelivers and the engine retries a
             * step, and the duplicate is answered then. */
            send_cmd();
            run_until(2);
            redelivered++;
        }
        cr_assert_eq(nreplies, 2,
                     "n=%ld failing: the reply was not resent (%d replies)", n,
                     nreplies);
        cr_assert_str_eq(last_id, "s1.0.1.a.r", "n=%ld", n);
        cr_assert_eq(last_len, sizeof OUT, "n=%ld: the recorded payload", n);
        cr_assert_eq(memcmp(last_out, OUT, sizeof OUT), 0);
        cr_assert_eq(calls, 1, "n=%ld: the handler ran again", n);
        saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
        cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
        cr_assert_geq(st.duplicates, 1);
        down();
        cr_assert_eq(FA.live, 0, "n=%ld failing leaked %ld blocks", n, FA.live);
        if (failed == 0)
            break;
    }
    cr_assert_lt(n, MAX_RUNS);
    cr_assert_gt(resend_oom, 0,
                 "no run failed the resend's own allocation (%ld runs)", n);
    cr_log_info("%ld allocations on the duplicate's path, the resend's "
                "failed in %d runs, %d needed a second delivery",
                n - 1, resend_oom, redelivered);
}

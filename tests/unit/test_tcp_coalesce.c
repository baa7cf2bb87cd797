/*
 * test_tcp_coalesce.c — the TCP transport writes the frames queued in one
 * loop turn together (one writev per connection). A burst of sends made in
 * one turn arrives complete and in order and every send is confirmed;
 * acks made in one turn (many ACK frames) all reach the sender; a transport
 * closed with frames still queued frees them (ASan checks the leak side).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#define BURST 3000

static uv_loop_t loop;
static saga_transport *A, *B;
static int got, in_order, sent_ok, sent_other;
static saga_delivery *held[BURST];
static int nheld, hold;

static void on_recv(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    int v = -1;
    if (len == sizeof v)
        memcpy(&v, buf, sizeof v);
    if (v != got)
        in_order = 0;
    got++;
    if (hold && nheld < BURST)
        held[nheld++] = d; /* acked later, all in one turn */
    else
        t->ack(t, d);
}

static void on_sent(saga_transport *t, int status, void *arg)
{
    (void)t, (void)arg;
    if (status == SAGA_OK)
        sent_ok++;
    else
        sent_other++;
}

static void setup(void)
{
    got = sent_ok = sent_other = nheld = hold = 0;
    in_order = 1;
    uv_loop_init(&loop);
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "svc-b";
    o.listen = "127.0.0.1:0";
    cr_assert_eq(saga_transport_tcp_new(&B, &loop, &o), SAGA_OK);
    int port;
    cr_assert_eq(saga_transport_tcp_port(B, &port), SAGA_OK);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_peer peer = {"svc-b", addr};
    saga_tcp_options a = SAGA_TCP_OPTIONS_INIT;
    a.service = "svc-a";
    a.peers = &peer;
    a.npeers = 1;
    cr_assert_eq(saga_transport_tcp_new(&A, &loop, &a), SAGA_OK);
    cr_assert_eq(B->subscribe(B, "svc-b", "g", on_recv, NULL), SAGA_OK);
}

static void teardown(void)
{
    if (A)
        saga_transport_free(A);
    if (B)
        saga_transport_free(B);
    A = B = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0, "loop has open handles");
}

TestSuite(tcp_coalesce, .init = setup, .fini = teardown);

static void run_until(int *counter, int want)
{
    for (int i = 0; i < 20000 && *counter < want; i++)
        uv_run(&loop, UV_RUN_ONCE);
}

static void burst(int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(A->send(A, "svc-b", "k", &i, sizeof i, on_sent, NULL),
                     SAGA_OK);
}

Test(tcp_coalesce, burst_in_one_turn_arrives_in_order_and_is_confirmed)
{
    burst(BURST);
    run_until(&sent_ok, BURST);
    cr_expect_eq(got, BURST);
    cr_expect(in_order, "messages out of order");
    cr_expect_eq(sent_ok, BURST);
    cr_expect_eq(sent_other, 0);
    saga_tcp_counters st = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(A, &st), SAGA_OK);
    cr_expect_geq(st.frames_out, (uint64_t)BURST + 1); /* + HELLO */
    cr_expect_eq(st.rejected_frames, 0u);
}

Test(tcp_coalesce, acks_made_in_one_turn_all_reach_the_sender)
{
    hold = 1;
    burst(BURST);
    run_until(&got, BURST);
    cr_assert_eq(got, BURST);
    cr_expect_eq(sent_ok, 0, "nothing is confirmed before it is acked");
    for (int i = 0; i < nheld; i++)
        cr_assert_eq(B->ack(B, held[i]), SAGA_OK);
    run_until(&sent_ok, BURST);
    cr_expect_eq(sent_ok, BURST);
    cr_expect(in_order);
}

Test(tcp_coalesce, close_with_frames_queued)
{
    /* Connect first, so that the next sends are queued on a live link. */
    burst(1);
    run_until(&sent_ok, 1);
    cr_assert_eq(sent_ok, 1);
    burst(100); /* queued in this turn, not yet written */
    saga_transport_free(A);
    A = NULL;
    run_until(&sent_other, 100);
    cr_expect_eq(sent_other, 100, "each queued send reports ECLOSED");
}

/*
 * test_hostile_frames.c — the TCP transport at its frame-size limit (run
 * under ASan and UBSan by the test command): a message whose frame is
 * exactly max_frame_size bytes is sent and delivered, one byte more is
 * refused by send (SAGA_EINVAL) instead of being refused by the receiver;
 * the same at the smallest limit. Only <saga/saga.h> is used, on
 * 127.0.0.1.
 */
#include <criterion/criterion.h>
#include <saga/saga.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static uv_loop_t loop;
static int got, got_len, sent_ok, sent_err;

static void on_recv(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)buf, (void)arg;
    got++;
    got_len = (int)len;
    t->ack(t, d);
}

static void on_sent(saga_transport *t, int status, void *arg)
{
    (void)t, (void)arg;
    if (status == SAGA_OK)
        sent_ok++;
    else
        sent_err++;
}

static void quiet(saga_log_level l, const char *id, int step, const char *msg,
                  void *arg)
{
    (void)l, (void)id, (void)step, (void)msg, (void)arg;
}

static void pump_until(int *counter, int want)
{
    for (int i = 0; i < 4000 && *counter < want; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
}

/* B listens as service "b" with @p max_b; A sends to topic "b" with
 * @p max_a. Returns A; *bp receives B. */
static saga_transport *pair(uint32_t max_a, uint32_t max_b, saga_transport **bp)
{
    saga_tcp_options ob;
    cr_assert_eq(saga_tcp_options_init(&ob, SAGA_TCP_OPTIONS_VERSION), SAGA_OK);
    ob.service = "b";
    ob.max_frame_size = max_b;
    ob.log = quiet;
    saga_transport *b;
    cr_assert_eq(saga_transport_tcp_new(&b, &loop, &ob), SAGA_OK);
    cr_assert_eq(b->subscribe(b, "b", "b", on_recv, NULL), SAGA_OK);
    int port;
    cr_assert_eq(saga_transport_tcp_port(b, &port), SAGA_OK);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_peer peer = {"b", addr};
    saga_tcp_options oa;
    cr_assert_eq(saga_tcp_options_init(&oa, SAGA_TCP_OPTIONS_VERSION), SAGA_OK);
    oa.service = "a";
    oa.max_frame_size = max_a;
    oa.peers = &peer;
    oa.npeers = 1;
    oa.log = quiet;
    saga_transport *a;
    cr_assert_eq(saga_transport_tcp_new(&a, &loop, &oa), SAGA_OK);
    *bp = b;
    return a;
}

static void close_all(saga_transport *a, saga_transport *b)
{
    a->close(a);
    b->close(b);
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

/* The DATA frame's length field: kind, u64 id, u16 + topic, u16 + key,
 * payload (docs/transports.md, "Wire"). */
static size_t frame_len(const char *topic, const char *key, size_t len)
{
    return 1 + 8 + 2 + strlen(topic) + 2 + strlen(key) + len;
}

static void at_limit(uint32_t max)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    got = sent_ok = sent_err = 0;
    saga_transport *b, *a = pair(max, max, &b);
    size_t len = max - frame_len("b", "k", 0);
    cr_assert_eq(frame_len("b", "k", len), max);
    unsigned char *buf = calloc(1, len + 1);
    cr_assert_not_null(buf);
    int rc = a->send(a, "b", "k", buf, len + 1, on_sent, NULL);
    cr_expect_eq(rc, SAGA_EINVAL, "one byte over max_frame_size %u: %s", max,
                 saga_strerror(rc));
    rc = a->send(a, "b", "k", buf, len, on_sent, NULL);
    cr_assert_eq(rc, SAGA_OK, "exactly max_frame_size %u: %s", max,
                 saga_strerror(rc));
    pump_until(&sent_ok, 1);
    cr_expect_eq(got, 1, "the frame of exactly %u bytes was delivered", max);
    cr_expect_eq(got_len, (int)len);
    cr_expect_eq(sent_ok, 1);
    saga_tcp_counters c = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(b, &c), SAGA_OK);
    cr_expect_eq(c.rejected_frames, 0);
    free(buf);
    close_all(a, b);
}

Test(hostile_frames, a_frame_of_exactly_max_frame_size, .timeout = 30)
{
    at_limit(4096);
}

Test(hostile_frames, the_smallest_limit, .timeout = 30) { at_limit(64); }

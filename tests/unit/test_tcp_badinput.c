/*
 * test_tcp_badinput.c — the TCP transport facing hostile bytes from a raw
 * client socket: every bad frame is counted and logged, closes only its own
 * connection, and the endpoint keeps serving good clients.
 *
 * The frames are built here byte by byte from the format in saga/tcp.h, so
 * the test also pins the wire format.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "fixture.h"
#include "saga/saga.h"
#include "saga/tcp.h"

static uv_loop_t loop;
static saga_transport *srv;
static int port;
static int warnings;
static int nrx;
static char last_payload[64];
static saga_delivery *last_d;

static void log_cb(saga_log_level level, const char *saga_id, int step,
                   const char *msg, void *arg)
{
    (void)msg;
    (void)arg;
    if (level >= SAGA_LOG_WARN)
        warnings++;
}

static void recv_cb(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)t;
    (void)topic;
    (void)key;
    (void)arg;
    nrx++;
    cr_assert_lt(len, sizeof last_payload);
    memcpy(last_payload, buf, len);
    last_payload[len] = '\0';
    last_d = d;
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "svc";
    o.max_frame_size = 4096;
    o.log = log_cb;
    cr_assert_eq(saga_transport_tcp_new(&srv, &loop, &o), SAGA_OK);
    cr_assert_eq(saga_transport_tcp_port(srv, &port), SAGA_OK);
    cr_assert_eq(srv->subscribe(srv, "svc", "g", recv_cb, NULL), SAGA_OK);
}

static void teardown(void)
{
    srv->close(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

static saga_tcp_counters stats(void)
{
    saga_tcp_counters st = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(srv, &st), SAGA_OK);
    return st;
}

static int client(void) { return fx_raw_connect(port, 0); }

static void put(int fd, const void *buf, size_t len)
{
    cr_assert_eq(write(fd, buf, len), (ssize_t)len);
}

/* Frame: 4-byte big-endian length of kind + body, kind, body. */
static size_t frame(unsigned char *out, int kind, const void *body, size_t blen)
{
    uint32_t l = htonl((uint32_t)(blen + 1));
    memcpy(out, &l, 4);
    out[4] = (unsigned char)kind;
    memcpy(out + 5, body, blen);
    return blen + 5;
}

static size_t hello(unsigned char *out, const char *name)
{
    unsigned char b[64];
    b[0] = 1;
    b[1] = (unsigned char)strlen(name);
    memcpy(b + 2, name, strlen(name));
    return frame(out, 1, b, 2 + strlen(name));
}

static size_t data(unsigned char *out, uint64_t id, const char *topic,
                   const char *payload)
{
    unsigned char b[256], *p = b;
    for (int i = 7; i >= 0; i--)
        *p++ = (unsigned char)(id >> (i * 8));
    *p++ = 0;
    *p++ = (unsigned char)strlen(topic);
    memcpy(p, topic, strlen(topic));
    p += strlen(topic);
    *p++ = 0xff; /* no key */
    *p++ = 0xff;
    memcpy(p, payload, strlen(payload));
    p += strlen(payload);
    return frame(out, 2, b, (size_t)(p - b));
}

static int rejected_at_least(uint64_t n)
{
    for (int i = 0; i < 100000 && stats().rejected_frames < n; i++)
        uv_run(&loop, UV_RUN_ONCE);
    return stats().rejected_frames >= n;
}

/* The server closed the connection: EOF or a reset, not silence. */
static void assert_closed(int fd)
{
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1, "server kept the connection open");
    char b[64];
    ssize_t n;
    while ((n = read(fd, b, sizeof b)) > 0)
        ; /* heartbeats may come first */
    cr_assert(n == 0 || errno == ECONNRESET);
    close(fd);
}

static void expect_rejected(const void *bytes, size_t len, int hello_first)
{
    int fd = client();
    unsigned char h[64];
    if (hello_first)
        put(fd, h, hello(h, "evil"));
    put(fd, bytes, len);
    cr_assert(rejected_at_least(1));
    cr_assert_eq(stats().rejected_frames, 1);
    cr_assert_geq(warnings, 1);
    assert_closed(fd);
    cr_assert_eq(nrx, 0);
}

TestSuite(tcp_badinput, .init = setup, .fini = teardown, .timeout = 30);

Test(tcp_badinput, garbage)
{
    static const char g[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    expect_rejected(g, sizeof g - 1, 0);
}

Test(tcp_badinput, frame_of_2gib)
{
    static const unsigned char f[] = {0x80, 0, 0, 0, 2, 0, 0, 0};
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, over_max_frame)
{
    static const unsigned char f[] = {0, 0, 0x10, 0x01, 2}; /* 4097 */
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, zero_length)
{
    static const unsigned char f[] = {0, 0, 0, 0};
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, unknown_kind)
{
    static const unsigned char f[] = {0, 0, 0, 1, 0x7f};
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, data_before_hello)
{
    unsigned char f[128];
    expect_rejected(f, data(f, 1, "svc", "hi"), 0);
}

Test(tcp_badinput, bad_hello_version)
{
    static const unsigned char f[] = {0, 0, 0, 4, 1, 9, 1, 'x'};
    expect_rejected(f, sizeof f, 0);
}

Test(tcp_badinput, topic_longer_than_body)
{
    /* id, then a topic length of 300 with 3 bytes behind it. */
    static const unsigned char f[] = {0, 0, 0, 14, 2,    0,    0,   0,   0,
                                      0, 0, 0, 1,  0x01, 0x2c, 's', 'v', 'c'};
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, ack_on_inbound_link)
{
    static const unsigned char f[] = {0, 0, 0, 9, 3, 0, 0, 0, 0, 0, 0, 0, 1};
    expect_rejected(f, sizeof f, 1);
}

Test(tcp_badinput, half_frame_then_disconnect)
{
    int fd = client();
    unsigned char b[64];
    put(fd, b, hello(b, "evil"));
    static const unsigned char half[] = {0, 0, 0, 100, 2, 1, 2, 3};
    put(fd, half, sizeof half);
    close(fd);
    cr_assert(rejected_at_least(1));
    cr_assert_eq(stats().rejected_frames, 1);
    cr_assert_eq(nrx, 0);
}

Test(tcp_badinput, others_keep_working)
{
    unsigned char b[256];
    /* One client stalls mid-frame, another sends garbage... */
    int stall = client();
    put(stall, b, hello(b, "slow"));
    static const unsigned char half[] = {0, 0, 0, 50, 2, 0, 0};
    put(stall, half, sizeof half);
    int bad = client();
    put(bad, "\xff\xff\xff\xff garbage", 12);
    cr_assert(rejected_at_least(1));
    assert_closed(bad);

    /* ...and a good one is still served, and acked end to end. */
    int good = client();
    size_t n = hello(b, "good");
    n += data(b + n, 42, "svc", "hello");
    put(good, b, n);
    for (int i = 0; i < 100000 && nrx == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(nrx, 1);
    cr_assert_str_eq(last_payload, "hello");
    cr_assert_eq(srv->ack(srv, last_d), SAGA_OK);
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    /* The ACK frame for id 42 comes back (after any heartbeats), after
     * the limit answer to the HELLO: an ACK of 2^63 + max_frame_size. */
    unsigned char want[13] = {0, 0, 0, 9, 3, 0, 0, 0, 0, 0, 0, 0, 42};
    unsigned char limit[13] = {0, 0, 0, 9, 3, 0x80, 0, 0, 0, 0, 0, 0x10, 0};
    unsigned char got[13];
    int limits = 0;
    for (;;) {
        struct pollfd p = {.fd = good, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 5000), 1);
        cr_assert_eq(read(good, got, 5), 5);
        if (got[4] == 4) /* HEARTBEAT: length 1, no body */
            continue;
        cr_assert_eq(read(good, got + 5, 8), 8);
        if (got[5] & 0x80) {
            cr_assert_eq(memcmp(got, limit, sizeof limit), 0);
            limits++;
            continue;
        }
        break;
    }
    cr_assert_eq(limits, 1, "one limit answer, before the ACK");
    cr_assert_eq(memcmp(got, want, sizeof want), 0);
    saga_tcp_counters st = stats();
    cr_assert_eq(st.rejected_frames, 1);
    cr_assert_geq(st.frames_in, 3); /* 2 HELLOs and the DATA */
    cr_assert_eq(st.accepted, 3);
    close(stall);
    close(good);
}

Test(tcp_badinput, heartbeats_without_hello_are_dropped)
{
    /* A fast-clocked server: heartbeats every 10 ms, silence after 60. */
    srv->close(srv);
    uv_run(&loop, UV_RUN_NOWAIT);
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "svc";
    o.heartbeat_ms = 10;
    o.dead_peer_ms = 60;
    o.log = log_cb;
    cr_assert_eq(saga_transport_tcp_new(&srv, &loop, &o), SAGA_OK);
    cr_assert_eq(saga_transport_tcp_port(srv, &port), SAGA_OK);
    int fd = client();
    static const unsigned char hb[] = {0, 0, 0, 1, 4};
    for (int i = 0; i < 100000 && stats().dead_peers == 0; i++) {
        /* Keep talking, but never say who we are. */
        (void)send(fd, hb, sizeof hb, MSG_NOSIGNAL);
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert_eq(stats().dead_peers, 1);
    cr_assert_geq(stats().frames_in, 1);
    assert_closed(fd);
}

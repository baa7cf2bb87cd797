/*
 * test_tcp_limits.c — TCP endpoints with different max_frame_size
 * (finding F3): the receiver tells its limit in the limit answer to HELLO,
 * a message over it fails alone with SAGA_EINVAL (from its saga_sent_cb
 * when it was queued before the limit was known, from send() after), and
 * every message behind it is delivered. Old-style peers on either side,
 * played by raw sockets speaking the wire format of saga/tcp.h, still
 * work: a sender that ignores the answer, a receiver that never sends it.
 * Loopback only; every wait is bounded by a loop-turn count.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "fixture.h"
#include "saga/saga.h"
#include "saga/tcp.h"

static uv_loop_t loop;
static int sent_ok, sent_einval, sent_other;
static char order[64]; /* first byte of each payload, in delivery order */
static size_t norder;

static void on_sent(saga_transport *t, int status, void *arg)
{
    (void)t, (void)arg;
    sent_ok += status == SAGA_OK;
    sent_einval += status == SAGA_EINVAL;
    sent_other += status != SAGA_OK && status != SAGA_EINVAL;
}

static void on_recv(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    if (norder < sizeof order && len > 0)
        order[norder++] = ((const char *)buf)[0];
    cr_assert_eq(t->ack(t, d), SAGA_OK);
}

static void quiet(saga_log_level l, const char *id, int step, const char *msg,
                  void *arg)
{
    (void)l, (void)id, (void)step, (void)msg, (void)arg;
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    sent_ok = sent_einval = sent_other = 0;
    norder = 0;
}

static void teardown(void)
{
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

TestSuite(tcp_limits, .init = setup, .fini = teardown, .timeout = 60);

static void spin_until(const int *counter, int want)
{
    for (int i = 0; i < 20000 && *counter < want; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
}

static saga_transport *endpoint(const char *service, uint32_t max,
                                const char *peer, int port)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_peer p = {peer, addr};
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = service;
    o.max_frame_size = max;
    o.reconnect_min_ms = 5;
    o.log = quiet;
    if (peer != NULL) {
        o.peers = &p;
        o.npeers = 1;
    }
    saga_transport *t;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_OK);
    return t;
}

static saga_tcp_counters stats(saga_transport *t)
{
    saga_tcp_counters c = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(t, &c), SAGA_OK);
    return c;
}

/* A payload of @p len bytes, all @p tag. */
static int send_tagged(saga_transport *t, char tag, size_t len)
{
    char *b = malloc(len);
    cr_assert_not_null(b);
    memset(b, tag, len);
    int rc = t->send(t, "b", "k", b, len, on_sent, NULL);
    free(b);
    return rc;
}

/* The frame length of a payload of @p len to topic "b" with key "k":
 * kind, id, u16 + "b", u16 + "k", payload. */
static size_t frame_len(size_t len) { return 1 + 8 + 2 + 1 + 2 + 1 + len; }

Test(tcp_limits, over_the_receivers_limit_fails_alone)
{
    saga_transport *b = endpoint("b", 1024, NULL, 0);
    cr_assert_eq(b->subscribe(b, "b", "b", on_recv, NULL), SAGA_OK);
    int port;
    cr_assert_eq(saga_transport_tcp_port(b, &port), SAGA_OK);
    saga_transport *a = endpoint("a", 8192, "b", port);

    /* Queued before A knows B's limit: accepted by send. */
    cr_assert_eq(send_tagged(a, '1', 10), SAGA_OK);
    cr_assert_eq(send_tagged(a, 'X', 3000), SAGA_OK);
    cr_assert_eq(send_tagged(a, '2', 10), SAGA_OK);
    cr_assert_eq(send_tagged(a, '3', 10), SAGA_OK);
    int done = 0;
    for (int i = 0; i < 20000 && done < 4; i++) {
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
        done = sent_ok + sent_einval + sent_other;
    }
    cr_assert_eq(sent_einval, 1, "the 3000-byte message fails");
    cr_assert_eq(sent_ok, 3, "the messages behind it are confirmed");
    cr_assert_eq(sent_other, 0);
    /* Each small one arrived (at least once: the link may have been
     * closed once for the big frame), in order; the big one never. */
    cr_assert(memchr(order, 'X', norder) == NULL);
    char firsts[8];
    size_t nf = 0;
    for (size_t i = 0; i < norder; i++)
        if (memchr(firsts, order[i], nf) == NULL && nf < sizeof firsts)
            firsts[nf++] = order[i];
    cr_assert_eq(nf, 3);
    cr_assert_eq(memcmp(firsts, "123", 3), 0, "order: %.*s", (int)nf, firsts);
    cr_assert_eq(stats(a).oversized, 1);

    /* Now the limit is known: send refuses at once, with a clear error,
     * and the link keeps flowing. A frame of exactly 1024 bytes goes. */
    size_t at = 1024 - frame_len(0);
    cr_assert_eq(frame_len(at), 1024);
    int rc = send_tagged(a, 'Y', at + 1);
    cr_assert_eq(rc, SAGA_EINVAL, "%s", saga_err_name(rc));
    cr_assert(strstr(a->errmsg(a), "max_frame_size 1024") != NULL, "%s",
              a->errmsg(a));
    cr_assert_eq(stats(a).oversized, 2);
    cr_assert_eq(send_tagged(a, '4', at), SAGA_OK);
    cr_assert_eq(send_tagged(a, '5', 1), SAGA_OK);
    spin_until(&sent_ok, 5);
    cr_assert_eq(sent_ok, 5);
    cr_assert_eq(sent_einval, 1, "a sync refusal does not call back");
    cr_assert_eq(order[norder - 2], '4');
    cr_assert_eq(order[norder - 1], '5');
    /* A caller built against counters version 2 gets no more than that. */
    saga_tcp_counters v2;
    memset(&v2, 0xab, sizeof v2);
    v2.version = 2;
    cr_assert_eq(saga_transport_tcp_stats(a, &v2), SAGA_OK);
    cr_assert_eq(v2.version, 2);
    cr_assert_eq(v2.oversized, 0xababababababababull);
    a->close(a);
    b->close(b);
}

Test(tcp_limits, a_larger_receiver_takes_what_the_sender_may_send)
{
    saga_transport *b = endpoint("b", 8192, NULL, 0);
    cr_assert_eq(b->subscribe(b, "b", "b", on_recv, NULL), SAGA_OK);
    int port;
    cr_assert_eq(saga_transport_tcp_port(b, &port), SAGA_OK);
    saga_transport *a = endpoint("a", 1024, "b", port);
    cr_assert_eq(send_tagged(a, '1', 1024 - frame_len(0)), SAGA_OK);
    cr_assert_eq(send_tagged(a, 'X', 2000), SAGA_EINVAL, "its own limit");
    spin_until(&sent_ok, 1);
    cr_assert_eq(sent_ok, 1);
    cr_assert_eq(stats(a).oversized, 0);
    cr_assert_eq(stats(b).rejected_frames, 0);
    a->close(a);
    b->close(b);
}

/* ---- raw old-style peers -------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_all(int fd, const void *b, size_t n)
{
    cr_assert_eq(write(fd, b, n), (ssize_t)n);
}

/* Read one frame from @p fd (blocking up to a bound), running the loop
 * meanwhile. @return its length L (kind + body in @p out), 0 on EOF. */
static size_t read_frame(int fd, unsigned char *out, size_t cap)
{
    unsigned char hdr[4];
    size_t have = 0, need = 4;
    unsigned char *dst = hdr;
    for (int i = 0; i < 20000; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t r = recv(fd, dst + have, need - have, MSG_DONTWAIT);
        if (r == 0)
            return 0;
        if (r < 0) {
            cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "%s",
                      strerror(errno));
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 1);
            continue;
        }
        have += (size_t)r;
        if (have < need)
            continue;
        if (dst == hdr) {
            need = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
                   (size_t)hdr[2] << 8 | hdr[3];
            cr_assert(need > 0 && need <= cap);
            dst = out;
            have = 0;
            continue;
        }
        return need;
    }
    cr_assert_fail("no frame");
    return 0;
}

/* A new sender against a receiver that predates the limit answer: it
 * reads HELLO (still version 1) and DATA, acks the DATA and never sends a
 * limit. The sender goes by its own limit, as before. */
Test(tcp_limits, old_style_receiver)
{
    int lport, ls = fx_raw_listen(&lport);
    saga_transport *a = endpoint("a", 8192, "b", lport);
    cr_assert_eq(send_tagged(a, '1', 3000), SAGA_OK);
    cr_assert_eq(send_tagged(a, '2', 10), SAGA_OK);
    int fd = fx_raw_accept(&loop, ls);
    unsigned char *f = malloc(8192);
    cr_assert_not_null(f);
    size_t l = read_frame(fd, f, 8192);
    cr_assert_eq(f[0], 1, "HELLO first");
    cr_assert_eq(f[1], 1, "protocol version 1, unchanged");
    cr_assert_eq(l, 3 + 1u);
    uint64_t ids[2];
    size_t lens[2];
    for (int i = 0; i < 2;) {
        l = read_frame(fd, f, 8192);
        cr_assert_gt(l, 0);
        if (f[0] == 4)
            continue; /* HEARTBEAT */
        cr_assert_eq(f[0], 2, "DATA");
        ids[i] = get_u64(f + 1);
        lens[i++] = l;
    }
    cr_assert_eq(lens[0], frame_len(3000));
    cr_assert_eq(lens[1], frame_len(10));
    for (int i = 0; i < 2; i++) {
        unsigned char ack[13];
        put_u32(ack, 9);
        ack[4] = 3;
        put_u64(ack + 5, ids[i]);
        put_all(fd, ack, sizeof ack);
    }
    spin_until(&sent_ok, 2);
    cr_assert_eq(sent_ok, 2);
    cr_assert_eq(sent_einval, 0);
    cr_assert_eq(stats(a).rejected_frames, 0);
    free(f);
    a->close(a);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    close(fd);
    close(ls);
}

/* A sender that predates the limit answer: what it reads back are ACK
 * frames only (the limit answer is one, for an id it never sent, which
 * such a sender ignores), and its message is delivered and acked. */
Test(tcp_limits, old_style_sender)
{
    saga_transport *b = endpoint("b", 2048, NULL, 0);
    cr_assert_eq(b->subscribe(b, "b", "b", on_recv, NULL), SAGA_OK);
    int port;
    cr_assert_eq(saga_transport_tcp_port(b, &port), SAGA_OK);
    int fd = fx_raw_connect(port, 0);
    unsigned char m[64];
    size_t n = 0;
    put_u32(m, 1 + 3), m[4] = 1, m[5] = 1, m[6] = 1, m[7] = 'a'; /* HELLO */
    n = 8;
    unsigned char *d = m + n; /* DATA id 7, topic "b", no key, "1" */
    put_u32(d, 1 + 8 + 2 + 1 + 2 + 1);
    d[4] = 2;
    put_u64(d + 5, 7);
    d[13] = 0, d[14] = 1, d[15] = 'b', d[16] = 0xff, d[17] = 0xff, d[18] = '1';
    n += 19;
    put_all(fd, m, n);
    unsigned char f[64];
    int acks = 0, limits = 0;
    while (acks == 0) {
        size_t l = read_frame(fd, f, sizeof f);
        cr_assert_gt(l, 0, "closed by the endpoint");
        if (f[0] == 4)
            continue;
        cr_assert_eq(f[0], 3, "only ACKs and heartbeats come back");
        cr_assert_eq(l, 9);
        uint64_t id = get_u64(f + 1);
        if (id >> 63) {
            cr_assert_eq(id, ((uint64_t)1 << 63) + 2048, "the limit answer");
            cr_assert_eq(acks, 0, "before any ACK");
            limits++;
        } else {
            cr_assert_eq(id, 7);
            acks++;
        }
    }
    cr_assert_eq(limits, 1);
    cr_assert_eq(norder, 1);
    cr_assert_eq(order[0], '1');
    cr_assert_eq(stats(b).rejected_frames, 0);
    close(fd);
    b->close(b);
}

/* A receiver whose limit answer is out of range (under 64 bytes) is bad
 * input: the sender rejects the frame and closes that link, instead of
 * failing every message. */
Test(tcp_limits, a_limit_answer_out_of_range_is_rejected)
{
    int lport, ls = fx_raw_listen(&lport);
    saga_transport *a = endpoint("a", 8192, "b", lport);
    cr_assert_eq(send_tagged(a, '1', 10), SAGA_OK);
    int fd = fx_raw_accept(&loop, ls);
    unsigned char ans[13];
    put_u32(ans, 9);
    ans[4] = 3;
    put_u64(ans + 5, ((uint64_t)1 << 63) + 10);
    put_all(fd, ans, sizeof ans);
    for (int i = 0; i < 20000 && stats(a).rejected_frames == 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
    cr_assert_eq(stats(a).rejected_frames, 1);
    cr_assert_eq(stats(a).oversized, 0);
    cr_assert_eq(sent_einval, 0, "the message is not failed for it");
    a->close(a);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(sent_other, 1, "closed: SAGA_ECLOSED");
    close(fd);
    close(ls);
}

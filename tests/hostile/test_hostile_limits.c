/*
 * test_hostile_limits.c — the TCP transport's frame limit in HELLO
 * (docs/transports.md, "Frame limits") against hostile receivers, played
 * by raw sockets (redteam): a limit answer that shrinks under a frame the
 * sender is still writing to a receiver that does not read; limit answers
 * before HELLO is read, many of them, alternating, then one out of range
 * (0, 2^63 - 1). The sender never crashes or touches freed memory (ASan +
 * UBSan in the sanitizer pass, label unit), fails only the message over
 * the limit, and delivers the next one to a well-behaved receiver after
 * it reconnects. Loopback only; every wait is bounded by a turn count.
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

#include "../unit/fixture.h"
#include "saga/saga.h"
#include "saga/tcp.h"

static uv_loop_t loop;
static int sent_ok, sent_einval, sent_other;

static void on_sent(saga_transport *t, int status, void *arg)
{
    (void)t, (void)arg;
    sent_ok += status == SAGA_OK;
    sent_einval += status == SAGA_EINVAL;
    sent_other += status != SAGA_OK && status != SAGA_EINVAL;
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
}

static void teardown(void)
{
    for (int i = 0; i < 200; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_loop_close(&loop), 0, "handles left on the loop");
}

TestSuite(hostile_limits, .init = setup, .fini = teardown, .timeout = 60);

static saga_transport *sender(uint32_t max, int port)
{
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_peer p = {"b", addr};
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "a";
    o.max_frame_size = max;
    o.reconnect_min_ms = 5;
    o.log = quiet;
    o.peers = &p;
    o.npeers = 1;
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

static int send_len(saga_transport *t, char tag, size_t len)
{
    char *b = malloc(len);
    cr_assert_not_null(b);
    memset(b, tag, len);
    int rc = t->send(t, "b", "k", b, len, on_sent, NULL);
    free(b);
    return rc;
}

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

/* An ACK frame carrying @p id (a limit answer when the top bit is set). */
static void ack(int fd, uint64_t id)
{
    unsigned char a[13];
    put_u32(a, 9);
    a[4] = 3;
    put_u64(a + 5, id);
    ssize_t w = send(fd, a, sizeof a, MSG_NOSIGNAL);
    (void)w; /* the sender may have closed the link already */
}

/* Read one frame (running the loop meanwhile): its length (kind + body
 * in @p out), 0 on EOF or error. Bodies over @p cap are skipped. */
static size_t read_frame(int fd, unsigned char *out, size_t cap)
{
    unsigned char hdr[4];
    size_t have = 0, need = 4, total = 0;
    int in_body = 0;
    for (int i = 0; i < 20000; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        unsigned char skip[65536];
        unsigned char *dst = !in_body       ? hdr + have
                             : total <= cap ? out + have
                                            : skip;
        size_t want = need - have;
        if (in_body && total > cap && want > sizeof skip)
            want = sizeof skip;
        ssize_t r = recv(fd, dst, want, MSG_DONTWAIT);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return 0;
            struct pollfd p = {.fd = fd, .events = POLLIN};
            poll(&p, 1, 1);
            continue;
        }
        have += (size_t)r;
        if (have < need)
            continue;
        if (!in_body) {
            total = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
                    (size_t)hdr[2] << 8 | hdr[3];
            if (total == 0)
                return 0;
            need = total;
            have = 0;
            in_body = 1;
            continue;
        }
        return total;
    }
    return 0;
}

/* A receiver that behaves: reads HELLO, answers its limit (4096), acks
 * every DATA frame until @p want were acked by the sender's count. */
static void good_receiver(saga_transport *a, int ls, int want)
{
    int fd = fx_raw_accept(&loop, ls);
    unsigned char f[8192];
    int hello = 0;
    for (int i = 0; i < 200 && sent_ok < want; i++) {
        size_t l = read_frame(fd, f, sizeof f);
        if (l == 0)
            break;
        if (f[0] == 1 && !hello) {
            hello = 1;
            ack(fd, ((uint64_t)1 << 63) + 4096);
        } else if (f[0] == 2) {
            ack(fd, get_u64(f + 1));
            for (int k = 0; k < 200 && sent_ok < want; k++)
                uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
        }
    }
    cr_assert(hello, "HELLO first");
    cr_assert_geq(sent_ok, want, "delivered after the hostile receiver");
    (void)a;
    close(fd);
}

static void end(saga_transport *a, int ls)
{
    a->close(a);
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    close(ls);
}

/* A receiver that does not read while a 6 MiB frame is being written to
 * it, then shrinks its limit to 64 bytes: the message fails (EINVAL)
 * while a write still holds its frame; the receiver then hangs up. The
 * next small message reaches a well-behaved receiver. */
Test(hostile_limits, a_limit_shrinking_under_a_frame_being_written)
{
    int port, ls = fx_raw_listen(&port);
    saga_transport *a = sender(8u << 20, port);
    cr_assert_eq(send_len(a, 'x', 6u << 20), SAGA_OK);
    int fd = fx_raw_accept(&loop, ls);
    int rcv = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    /* Let the sender write what the socket takes; read nothing. */
    for (int i = 0; i < 300; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
    ack(fd, ((uint64_t)1 << 63) + 64);
    for (int i = 0; i < 20000 && sent_einval == 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
    cr_assert_eq(sent_einval, 1, "the message over the new limit fails");
    cr_assert_eq(stats(a).oversized, 1);
    close(fd); /* with 6 MiB unread: a reset */
    for (int i = 0; i < 300; i++)
        uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
    cr_assert_eq(send_len(a, 'y', 10), SAGA_OK,
                 "a frame under the peer's last limit");
    cr_assert_eq(send_len(a, 'z', 100), SAGA_EINVAL,
                 "a frame over the peer's last limit: %s", a->errmsg(a));
    good_receiver(a, ls, 1);
    cr_assert_eq(sent_other, 0);
    end(a, ls);
}

/* Limit answers before HELLO is read, fifty of them alternating between
 * the smallest and the largest limit, then one whose limit is 0 and one
 * 2^63 - 1 (out of range: the link is closed as a bad frame). Nothing
 * queued is failed for it; the next receiver gets the message. */
Test(hostile_limits, limit_answers_out_of_order_alternating_and_out_of_range)
{
    int port, ls = fx_raw_listen(&port);
    saga_transport *a = sender(1u << 20, port);
    cr_assert_eq(send_len(a, 'q', 40), SAGA_OK);
    for (int round = 0; round < 2; round++) {
        int fd = fx_raw_accept(&loop, ls);
        for (int i = 0; i < 50; i++)
            ack(fd, ((uint64_t)1 << 63) + (i % 2 ? (1u << 30) : 64u));
        ack(fd, round == 0 ? (uint64_t)1 << 63 : UINT64_MAX);
        uint64_t before = stats(a).rejected_frames;
        for (int i = 0; i < 20000 && stats(a).rejected_frames == before; i++)
            uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
        cr_assert_eq(stats(a).rejected_frames, before + 1,
                     "round %d: the out-of-range answer is a bad frame", round);
        close(fd);
    }
    cr_assert_eq(sent_einval, 0,
                 "a 55-byte frame fits the smallest limit (64)");
    good_receiver(a, ls, 1);
    cr_assert_eq(sent_other, 0);
    end(a, ls);
}

/*
 * test_tcp.c — TCP transport behaviour beyond the conformance suite:
 * options, backpressure, ack-gated confirmation, reconnect and resend,
 * dead-peer detection, self routing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "saga/saga.h"
#include "saga/tcp.h"

static uv_loop_t loop;
static int sent_calls, sent_ok, sent_closed, nrx;
static saga_delivery *rx[64];

static void sent_cb(saga_transport *t, int status, void *arg)
{
    (void)t;
    (void)arg;
    sent_calls++;
    sent_ok += status == SAGA_OK;
    sent_closed += status == SAGA_ECLOSED;
}

static void recv_cb(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)t;
    (void)topic;
    (void)key;
    (void)buf;
    (void)len;
    (void)arg;
    cr_assert_lt(nrx, 64);
    rx[nrx++] = d;
}

static void setup(void) { cr_assert_eq(uv_loop_init(&loop), 0); }

static void teardown(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

TestSuite(tcp, .init = setup, .fini = teardown, .timeout = 30);

static saga_transport *listener(const char *service, const char *listen,
                                int *port)
{
    saga_transport *t;
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = service;
    o.listen = listen;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_OK);
    cr_assert_eq(saga_transport_tcp_port(t, port), SAGA_OK);
    cr_assert_gt(*port, 0);
    return t;
}

static saga_transport *sender(const char *peer, int port, uint32_t hb,
                              uint32_t dead, uint32_t max_msgs)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_peer peers[] = {{peer, addr}};
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "sender";
    o.peers = peers;
    o.npeers = 1;
    o.heartbeat_ms = hb;
    o.dead_peer_ms = dead;
    o.max_queue_msgs = max_msgs;
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 20;
    saga_transport *t;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_OK);
    return t;
}

static saga_tcp_counters stats(saga_transport *t)
{
    saga_tcp_counters st = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(t, &st), SAGA_OK);
    return st;
}

static void run_until(int *counter, int n)
{
    for (int i = 0; i < 1000000 && *counter < n; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_geq(*counter, n);
}

static void settle(void)
{
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

Test(tcp, options_are_checked)
{
    saga_transport *t = (saga_transport *)&t;
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    cr_assert_eq(saga_transport_tcp_new(NULL, &loop, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_transport_tcp_new(&t, NULL, NULL), SAGA_EINVAL);
    cr_assert_null(t);
    o.version = 99;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EVERSION);
    cr_assert_eq(saga_tcp_options_init(&o, 99), SAGA_EVERSION);
    cr_assert_eq(saga_tcp_options_init(&o, SAGA_TCP_OPTIONS_VERSION), SAGA_OK);
    const char *bad_listen[] = {"nonsense", "127.0.0.1:", "127.0.0.1:99999",
                                "1.2.3:80", ":80",        "[::1:80"};
    for (size_t i = 0; i < sizeof bad_listen / sizeof *bad_listen; i++) {
        o.listen = bad_listen[i];
        cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL, "%s",
                     bad_listen[i]);
    }
    o.listen = NULL;
    o.service = "";
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL);
    o.service = NULL;
    saga_tcp_peer dup[] = {{"x", "127.0.0.1:1"}, {"x", "127.0.0.1:2"}};
    o.peers = dup;
    o.npeers = 2;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL);
    o.npeers = 1;
    dup[0].address = "localhost";
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL);
    o.npeers = 0;
    o.max_frame_size = 10;
    cr_assert_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL);
}

Test(tcp, port_in_use)
{
    int port;
    saga_transport *a = listener("a", "127.0.0.1:0", &port), *b;
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.listen = addr;
    cr_assert_eq(saga_transport_tcp_new(&b, &loop, &o), SAGA_ETRANSPORT);
    cr_assert_null(b);
    a->close(a);
}

Test(tcp, getters_reject_other_transports)
{
    saga_inmem_bus *bus;
    saga_transport *m;
    int port;
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&m, bus), SAGA_OK);
    saga_tcp_counters st = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_port(m, &port), SAGA_EINVAL);
    cr_assert_eq(saga_transport_tcp_stats(m, &st), SAGA_EINVAL);
    cr_assert_eq(saga_transport_tcp_stats(NULL, &st), SAGA_EINVAL);
    saga_transport *t = listener("t", "127.0.0.1:0", &port);
    st.version = 0;
    cr_assert_eq(saga_transport_tcp_stats(t, &st), SAGA_EVERSION);
    t->close(t);
    m->close(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
}

Test(tcp, send_checks_route_and_size)
{
    int port;
    saga_transport *b = listener("b", "127.0.0.1:0", &port);
    saga_transport *a = sender("b", port, 0, 0, 0);
    cr_assert_eq(a->send(a, "nobody", NULL, "x", 1, NULL, NULL), SAGA_ENOROUTE);
    cr_assert(strstr(a->errmsg(a), "nobody") != NULL);
    static char big[(4u << 20) + 1];
    cr_assert_eq(a->send(a, "b", NULL, big, sizeof big, NULL, NULL),
                 SAGA_EINVAL);
    a->close(a);
    b->close(b);
}

Test(tcp, confirmed_only_when_the_receiver_acks)
{
    int port;
    saga_transport *b = listener("b", "127.0.0.1:0", &port);
    saga_transport *a = sender("b", port, 0, 0, 0);
    cr_assert_eq(b->subscribe(b, "b", "g", recv_cb, NULL), SAGA_OK);
    cr_assert_eq(a->send(a, "b", "k", "hi", 2, sent_cb, NULL), SAGA_OK);
    run_until(&nrx, 1);
    settle();
    cr_assert_eq(sent_calls, 0, "confirmed before the receiver acked");
    cr_assert_eq(b->ack(b, rx[0]), SAGA_OK);
    run_until(&sent_calls, 1);
    cr_assert_eq(sent_ok, 1);
    a->close(a);
    b->close(b);
}

Test(tcp, backpressure_when_the_peer_is_down)
{
    /* A port with nobody listening: connects fail and are retried. */
    int port;
    saga_transport *gone = listener("gone", "127.0.0.1:0", &port);
    gone->close(gone);
    settle();
    saga_transport *a = sender("gone", port, 0, 0, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(a->send(a, "gone", "k", "x", 1, sent_cb, NULL), SAGA_OK);
    cr_assert_eq(a->send(a, "gone", "k", "x", 1, sent_cb, NULL), SAGA_EFULL);
    /* Retries happen with backoff; nothing is confirmed or lost. */
    for (int i = 0; i < 5 && stats(a).reconnects < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(sent_calls, 0);
    a->close(a);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(sent_calls, 3);
    cr_assert_eq(sent_closed, 3);
}

Test(tcp, resend_after_reconnect)
{
    int port;
    saga_transport *b = listener("b", "127.0.0.1:0", &port);
    saga_transport *a = sender("b", port, 0, 0, 0);
    cr_assert_eq(b->subscribe(b, "b", "g", recv_cb, NULL), SAGA_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(a->send(a, "b", "k", &i, sizeof i, sent_cb, NULL),
                     SAGA_OK);
    run_until(&nrx, 3);
    b->close(b); /* never acked */
    uv_run(&loop, UV_RUN_NOWAIT);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    b = listener("b", addr, &port);
    cr_assert_eq(b->subscribe(b, "b", "g", recv_cb, NULL), SAGA_OK);
    run_until(&nrx, 6);
    saga_tcp_counters st = stats(a);
    cr_assert_geq(st.reconnects, 1);
    cr_assert_eq(st.resent, 3);
    for (int i = 3; i < 6; i++)
        cr_assert_eq(b->ack(b, rx[i]), SAGA_OK);
    run_until(&sent_calls, 3);
    cr_assert_eq(sent_ok, 3);
    a->close(a);
    b->close(b);
}

Test(tcp, dead_peer_is_detected)
{
    /* A socket that accepts (in the kernel) but never speaks. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 8), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    saga_transport *a = sender("mute", ntohs(sa.sin_port), 10, 50, 0);
    cr_assert_eq(a->send(a, "mute", "k", "x", 1, sent_cb, NULL), SAGA_OK);
    for (int i = 0; i < 100000 && stats(a).dead_peers == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_geq(stats(a).dead_peers, 1);
    cr_assert_eq(sent_calls, 0);
    a->close(a);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(sent_closed, 1);
    close(fd);
}

Test(tcp, a_service_can_message_itself)
{
    int port;
    saga_transport *s = listener("self", "127.0.0.1:0", &port);
    cr_assert_eq(s->subscribe(s, "self", "g", recv_cb, NULL), SAGA_OK);
    cr_assert_eq(s->send(s, "self", NULL, "me", 2, sent_cb, NULL), SAGA_OK);
    run_until(&nrx, 1);
    cr_assert_eq(s->ack(s, rx[0]), SAGA_OK);
    run_until(&sent_calls, 1);
    cr_assert_eq(sent_ok, 1);
    s->close(s);
}

Test(tcp, receiver_stops_reading_until_acks_free_room)
{
    /* B holds at most ~2 MiB of unacked messages per connection. */
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "b";
    o.max_queue_bytes = 2u << 20;
    saga_transport *b;
    int port;
    cr_assert_eq(saga_transport_tcp_new(&b, &loop, &o), SAGA_OK);
    cr_assert_eq(saga_transport_tcp_port(b, &port), SAGA_OK);
    saga_transport *a = sender("b", port, 0, 0, 0);
    cr_assert_eq(b->subscribe(b, "b", "g", recv_cb, NULL), SAGA_OK);
    static char mib[1u << 20];
    for (int i = 0; i < 10; i++)
        cr_assert_eq(a->send(a, "b", "k", mib, sizeof mib, sent_cb, NULL),
                     SAGA_OK);
    run_until(&nrx, 2);
    settle();
    cr_assert_lt(nrx, 10, "read past the bound without acks");
    /* Acking resumes the flow: ack as they come until all are confirmed. */
    int acked = 0;
    for (int i = 0; i < 1000000 && sent_calls < 10; i++) {
        while (acked < nrx)
            cr_assert_eq(b->ack(b, rx[acked++]), SAGA_OK);
        uv_run(&loop, UV_RUN_ONCE);
    }
    cr_assert_eq(nrx, 10);
    cr_assert_eq(sent_ok, 10);
    cr_assert_eq(stats(b).dead_peers, 0);
    cr_assert_eq(stats(a).resent, 0);
    a->close(a);
    b->close(b);
}

/*
 * test_transport_tcp.c — the transport conformance suite on the TCP
 * transport: B listens on an ephemeral 127.0.0.1 port as service "svc-b";
 * A has B as its peer, so A's sends to topic "svc-b" reach B.
 */
#include <stdio.h>

#include "saga/tcp.h"
#include "transport_suite.h"

static int b_port;

static int make_b(saga_tsuite_env *env, const char *listen)
{
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "svc-b";
    o.listen = listen;
    int rc = saga_transport_tcp_new(&env->b, &env->loop, &o);
    if (rc == SAGA_OK)
        rc = saga_transport_tcp_port(env->b, &b_port);
    return rc;
}

static int tcp_open(saga_tsuite_env *env)
{
    int rc = make_b(env, "127.0.0.1:0");
    if (rc != SAGA_OK)
        return rc;
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", b_port);
    saga_tcp_peer peers[] = {{"svc-b", addr}};
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = "svc-a";
    o.peers = peers;
    o.npeers = 1;
    /* Reconnect quickly after B is reopened; behaviour is the same. */
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 50;
    return saga_transport_tcp_new(&env->a, &env->loop, &o);
}

static int tcp_reopen_b(saga_tsuite_env *env)
{
    /* The old B's sockets close on this turn; then its port is free. */
    uv_run(&env->loop, UV_RUN_NOWAIT);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", b_port);
    return make_b(env, addr);
}

static const saga_tsuite_fixture tcp_fx = {"svc-b",
                                           SAGA_TSUITE_REDELIVER |
                                               SAGA_TSUITE_KNOWS_ROUTES,
                                           tcp_open, tcp_reopen_b, NULL};

SAGA_TRANSPORT_CONFORMANCE(transport_tcp, tcp_fx)

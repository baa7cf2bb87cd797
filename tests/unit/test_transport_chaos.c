/*
 * test_transport_chaos.c — allocation failures in the transports: fail the
 * Nth allocation for N = 0, 1, ... until a scenario runs clean. Every
 * failure must come back as SAGA_ENOMEM (or a documented code), leave no
 * callback behind, and leak nothing once the loop has run (ASan checks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "saga/saga.h"
#include "saga/tcp.h"

static long countdown = -1; /* allocations left before one fails; -1: never */
static long failures;

static void *chaos_malloc(size_t n)
{
    if (countdown == 0) {
        failures++;
        countdown = -1; /* fail once per run, then let it recover */
        return NULL;
    }
    if (countdown > 0)
        countdown--;
    return malloc(n);
}

static void *chaos_realloc(void *p, size_t n)
{
    if (countdown == 0) {
        failures++;
        countdown = -1;
        return NULL;
    }
    if (countdown > 0)
        countdown--;
    return realloc(p, n);
}

static int nrx, nsent;

static void recv_cb(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic;
    (void)key;
    (void)buf;
    (void)len;
    (void)arg;
    nrx++;
    t->ack(t, d);
}

static void sent_cb(saga_transport *t, int status, void *arg)
{
    (void)t;
    (void)status;
    (void)arg;
    nsent++;
}

static int ok_or_nomem(int rc) { return rc == SAGA_OK || rc == SAGA_ENOMEM; }

/* One inmem scenario; @return 1 if no allocation failed. */
static int inmem_once(long fail_at)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    saga_inmem_bus *bus = NULL;
    saga_transport *a = NULL, *b = NULL;
    long before = failures;
    int sends = 0;
    nrx = nsent = 0;
    countdown = fail_at;
    int rc = saga_inmem_bus_new(&bus, &loop);
    cr_assert(ok_or_nomem(rc));
    if (rc == SAGA_OK) {
        cr_assert(ok_or_nomem(rc = saga_transport_inmem_new(&a, bus)));
        cr_assert(ok_or_nomem(saga_transport_inmem_new(&b, bus)));
    }
    if (a != NULL && b != NULL) {
        cr_assert(ok_or_nomem(b->subscribe(b, "t", "g1", recv_cb, NULL)));
        cr_assert(ok_or_nomem(b->subscribe(b, "t", "g2", recv_cb, NULL)));
        for (int i = 0; i < 4; i++) {
            rc = a->send(a, "t", i % 2 ? "k" : NULL, "abc", 3, sent_cb, NULL);
            cr_assert(ok_or_nomem(rc));
            sends += rc == SAGA_OK;
        }
        cr_assert(ok_or_nomem(a->subscribe(a, "u", "g", recv_cb, NULL)));
    }
    countdown = -1;
    uv_run(&loop, UV_RUN_DEFAULT);
    /* A failed send has no callback; an accepted one has exactly one. */
    cr_assert_eq(nsent, sends);
    if (a != NULL)
        a->close(a);
    if (b != NULL)
        b->close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    cr_assert_eq(uv_loop_close(&loop), 0);
    return failures == before;
}

Test(transport_chaos, inmem, .timeout = 60)
{
    cr_assert_eq(saga_replace_allocator(chaos_malloc, chaos_realloc, free),
                 SAGA_OK);
    long n = 0;
    while (!inmem_once(n))
        n++;
    cr_assert_gt(n, 5, "the scenario allocates more than that");
}

/* One TCP scenario: a listener and a sender that talks to it. */
static int tcp_once(long fail_at)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    saga_transport *a = NULL, *b = NULL;
    long before = failures;
    int sends = 0, port = 0;
    nrx = nsent = 0;
    countdown = fail_at;
    saga_tcp_options bo = SAGA_TCP_OPTIONS_INIT;
    bo.service = "b";
    int rc = saga_transport_tcp_new(&b, &loop, &bo);
    cr_assert(ok_or_nomem(rc) || rc == SAGA_ETRANSPORT, "%d", rc);
    if (b != NULL) {
        saga_transport_tcp_port(b, &port);
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        saga_tcp_peer peers[] = {{"b", addr}};
        saga_tcp_options ao = SAGA_TCP_OPTIONS_INIT;
        ao.service = "a";
        ao.peers = peers;
        ao.npeers = 1;
        rc = saga_transport_tcp_new(&a, &loop, &ao);
        cr_assert(ok_or_nomem(rc) || rc == SAGA_ETRANSPORT, "%d", rc);
    }
    if (a != NULL && b != NULL) {
        /* Retried: a lost subscription would strand the messages. */
        while ((rc = b->subscribe(b, "b", "g", recv_cb, NULL)) != SAGA_OK)
            cr_assert_eq(rc, SAGA_ENOMEM);
        for (int i = 0; i < 3; i++) {
            rc = a->send(a, "b", "k", "abc", 3, sent_cb, NULL);
            cr_assert(ok_or_nomem(rc));
            sends += rc == SAGA_OK;
        }
        /* Run until the sends are settled: a failure inside the I/O path
         * drops a connection, and the resend after reconnect fixes it. */
        for (int i = 0; i < 100000 && nsent < sends; i++)
            uv_run(&loop, UV_RUN_ONCE);
        cr_assert_eq(nsent, sends);
    }
    countdown = -1;
    if (a != NULL)
        a->close(a);
    if (b != NULL)
        b->close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    return failures == before;
}

Test(transport_chaos, tcp, .timeout = 120)
{
    cr_assert_eq(saga_replace_allocator(chaos_malloc, chaos_realloc, free),
                 SAGA_OK);
    long n = 0;
    while (!tcp_once(n)) {
        if (getenv("CHAOS_DEBUG"))
            fprintf(stderr, "tcp: failed allocation %ld passed\n", n);
        n++;
    }
    cr_assert_gt(n, 5, "the scenario allocates more than that");
}

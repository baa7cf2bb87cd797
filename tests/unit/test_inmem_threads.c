/*
 * test_inmem_threads.c — the shared in-memory bus across two loops on two
 * threads (saga_inmem_bus_new_shared + saga_transport_inmem_new_on):
 * messages both ways with per-key order, the bus freed from one thread
 * while the other's endpoint still runs (the last close frees it), and
 * unacked deliveries of an endpoint closed on one thread redelivered to an
 * endpoint on the other. Every test joins its thread and closes both loops
 * (uv_loop_close() == 0), so ASan sees any leak; a ThreadSanitizer build of
 * this file is the race check (docs/api/transport.md).
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "saga/saga.h"

#define NKEYS 8

typedef struct side {
    uv_loop_t loop;
    saga_transport *t;
    int n, want;     /* received, and how many before closing (0: never) */
    int ack;         /* ack what arrives */
    int echo;        /* send each one back to "to-a" */
    int last[NKEYS]; /* last value seen per key, for the order check */
    int order_bad;
    int sent_ok, sent_closed, sent_bad;
} side;

static saga_inmem_bus *bus;
static side A, B;

static void sent_cb(saga_transport *t, int status, void *arg)
{
    (void)t;
    side *s = arg;
    if (status == SAGA_OK)
        s->sent_ok++;
    else if (status == SAGA_ECLOSED)
        s->sent_closed++;
    else
        s->sent_bad++;
}

static void send_one(side *s, const char *topic, int v)
{
    char key[8];
    snprintf(key, sizeof key, "k%d", v % NKEYS);
    cr_assert_eq(s->t->send(s->t, topic, key, &v, sizeof v, sent_cb, s),
                 SAGA_OK);
}

static void recv_cb(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic;
    side *s = arg;
    int v;
    cr_assert_eq(len, sizeof v);
    memcpy(&v, buf, sizeof v);
    cr_assert(key != NULL);
    int k = atoi(key + 1);
    if (v <= s->last[k])
        s->order_bad++;
    s->last[k] = v;
    s->n++;
    if (s->ack)
        cr_assert_eq(t->ack(t, d), SAGA_OK);
    if (s->echo)
        send_one(s, "to-a", v);
    if (s->want != 0 && s->n == s->want)
        t->close(t);
}

static void side_init(side *s)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < NKEYS; k++)
        s->last[k] = -1;
    cr_assert_eq(uv_loop_init(&s->loop), 0);
    cr_assert_eq(saga_transport_inmem_new_on(&s->t, bus, &s->loop), SAGA_OK);
}

static void run_b(void *arg)
{
    (void)arg;
    uv_run(&B.loop, UV_RUN_DEFAULT);
}

static void setup(void) { cr_assert_eq(saga_inmem_bus_new_shared(&bus), 0); }

TestSuite(inmem_threads, .init = setup, .timeout = 60);

/* A (main thread) sends N to B (second thread), B echoes each one back;
 * both see every message once, each key in order, and both close. */
Test(inmem_threads, both_ways)
{
    enum { N = 4000 };
    side_init(&A);
    side_init(&B);
    A.ack = B.ack = 1;
    B.echo = 1;
    A.want = B.want = N;
    cr_assert_eq(A.t->subscribe(A.t, "to-a", "ga", recv_cb, &A), SAGA_OK);
    cr_assert_eq(B.t->subscribe(B.t, "to-b", "gb", recv_cb, &B), SAGA_OK);
    uv_thread_t th;
    cr_assert_eq(uv_thread_create(&th, run_b, NULL), 0);
    for (int i = 0; i < N; i++)
        send_one(&A, "to-b", i);
    uv_run(&A.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_thread_join(&th), 0);
    cr_assert_eq(A.n, N);
    cr_assert_eq(B.n, N);
    cr_assert_eq(A.order_bad, 0);
    cr_assert_eq(B.order_bad, 0);
    cr_assert_eq(A.sent_bad + B.sent_bad, 0);
    cr_assert_eq(A.sent_ok + A.sent_closed, N);
    cr_assert_eq(B.sent_ok + B.sent_closed, N);
    cr_assert_eq(uv_loop_close(&A.loop), 0);
    cr_assert_eq(uv_loop_close(&B.loop), 0);
    saga_inmem_bus_free(bus);
}

/* The bus is freed from the main thread and A closes at once while B, on
 * the other thread, still has everything to receive: B gets it all, and
 * its close (the last) frees the bus (ASan: no leak, no use after free). */
Test(inmem_threads, free_early_other_side_closes_last)
{
    enum { N = 2000 };
    side_init(&A);
    side_init(&B);
    B.ack = 1;
    B.want = N;
    cr_assert_eq(B.t->subscribe(B.t, "to-b", "gb", recv_cb, &B), SAGA_OK);
    uv_thread_t th;
    cr_assert_eq(uv_thread_create(&th, run_b, NULL), 0);
    for (int i = 0; i < N; i++)
        send_one(&A, "to-b", i);
    saga_inmem_bus_free(bus);
    A.t->close(A.t);
    uv_run(&A.loop, UV_RUN_DEFAULT);
    cr_assert_eq(A.sent_closed + A.sent_ok, N);
    cr_assert_eq(uv_thread_join(&th), 0);
    cr_assert_eq(B.n, N);
    cr_assert_eq(B.order_bad, 0);
    cr_assert_eq(uv_loop_close(&A.loop), 0);
    cr_assert_eq(uv_loop_close(&B.loop), 0);
}

/* B takes half of the messages without acking and closes on its thread;
 * a new endpoint on the main thread's loop, same group, gets every
 * message again, each key in order; the main thread's close is the last
 * and frees the bus. */
Test(inmem_threads, unacked_move_to_the_other_loop)
{
    enum { N = 1000 };
    side_init(&A);
    side_init(&B);
    B.want = N / 2; /* no ack */
    cr_assert_eq(B.t->subscribe(B.t, "to-b", "gb", recv_cb, &B), SAGA_OK);
    uv_thread_t th;
    cr_assert_eq(uv_thread_create(&th, run_b, NULL), 0);
    for (int i = 0; i < N; i++)
        send_one(&A, "to-b", i);
    /* One turn of the sender's loop: its endpoint hands the sends out (a
     * sender's loop distributes what it sent) and wakes B. */
    uv_run(&A.loop, UV_RUN_NOWAIT);
    cr_assert_eq(uv_thread_join(&th), 0);
    cr_assert_eq(B.n, N / 2);
    cr_assert_eq(uv_loop_close(&B.loop), 0);

    side C;
    memset(&C, 0, sizeof C);
    for (int k = 0; k < NKEYS; k++)
        C.last[k] = -1;
    C.ack = 1;
    C.want = N;
    cr_assert_eq(saga_transport_inmem_new_on(&C.t, bus, &A.loop), SAGA_OK);
    cr_assert_eq(C.t->subscribe(C.t, "to-b", "gb", recv_cb, &C), SAGA_OK);
    saga_inmem_bus_free(bus); /* freed by the last close below */
    A.t->close(A.t);
    uv_run(&A.loop, UV_RUN_DEFAULT);
    cr_assert_eq(C.n, N);
    cr_assert_eq(C.order_bad, 0);
    cr_assert_eq(uv_loop_close(&A.loop), 0);
}

/* The API's edges: a loop other than a single-loop bus's is refused, a
 * shared bus needs the endpoint's loop, and nothing leaks. */
Test(inmem_threads, api_edges)
{
    uv_loop_t l1, l2;
    cr_assert_eq(uv_loop_init(&l1), 0);
    cr_assert_eq(uv_loop_init(&l2), 0);
    saga_inmem_bus *single;
    saga_transport *t = NULL;
    cr_assert_eq(saga_inmem_bus_new(&single, &l1), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new_on(&t, single, &l2), SAGA_EINVAL);
    cr_assert_null(t);
    cr_assert_eq(saga_transport_inmem_new_on(&t, single, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_transport_inmem_new_on(&t, single, &l1), SAGA_OK);
    t->close(t);
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_EINVAL);
    cr_assert_eq(saga_inmem_bus_new_shared(NULL), SAGA_EINVAL);
    uv_run(&l1, UV_RUN_DEFAULT);
    saga_inmem_bus_free(single);
    saga_inmem_bus_free(bus);
    cr_assert_eq(uv_loop_close(&l1), 0);
    cr_assert_eq(uv_loop_close(&l2), 0);
}

/*
 * test_inmem.c — in-memory transport behaviour beyond the conformance
 * suite: the backlog rule, redelivery without a live subscriber, close from
 * inside a callback, key affinity in a shared group, deferred bus free,
 * confirmation only once every group acked.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "saga/saga.h"

static uv_loop_t loop;
static saga_inmem_bus *bus;

typedef struct got {
    int n;
    int vals[512];
    saga_delivery *d[512];
    int close_after; /* close the endpoint after this many (0: never) */
    int ack;
} got;

static void recv_cb(saga_transport *t, saga_delivery *d, const char *topic,
                    const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic;
    (void)key;
    got *g = arg;
    cr_assert_eq(len, sizeof(int));
    memcpy(&g->vals[g->n], buf, sizeof(int));
    g->d[g->n++] = d;
    if (g->ack)
        cr_assert_eq(t->ack(t, d), SAGA_OK);
    if (g->close_after != 0 && g->n == g->close_after)
        t->close(t);
}

static void setup(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
}

static void teardown(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

TestSuite(inmem, .init = setup, .fini = teardown, .timeout = 30);

static saga_transport *ep(void)
{
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    return t;
}

static void send_ints(saga_transport *t, const char *topic, const char *key,
                      int from, int to)
{
    for (int i = from; i < to; i++)
        cr_assert_eq(t->send(t, topic, key, &i, sizeof i, NULL, NULL), SAGA_OK);
}

Test(inmem, bad_args)
{
    saga_inmem_bus *b;
    saga_transport *t;
    cr_assert_eq(saga_inmem_bus_new(NULL, &loop), SAGA_EINVAL);
    cr_assert_eq(saga_inmem_bus_new(&b, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_transport_inmem_new(&t, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_transport_inmem_new(NULL, bus), SAGA_EINVAL);
    saga_inmem_bus_free(NULL);
}

Test(inmem, backlog_goes_to_groups_of_the_first_turn_only)
{
    saga_transport *a = ep(), *b = ep();
    got g1 = {.ack = 1}, g2 = {.ack = 1}, g3 = {.ack = 1};
    send_ints(a, "t", "k", 0, 5);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Two groups in the same turn both get the backlog... */
    cr_assert_eq(b->subscribe(b, "t", "g1", recv_cb, &g1), SAGA_OK);
    cr_assert_eq(b->subscribe(b, "t", "g2", recv_cb, &g2), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g1.n, 5);
    cr_assert_eq(g2.n, 5);
    /* ...a later group starts from what is sent after it joins. */
    cr_assert_eq(b->subscribe(b, "t", "g3", recv_cb, &g3), SAGA_OK);
    send_ints(a, "t", "k", 5, 6);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g3.n, 1);
    cr_assert_eq(g3.vals[0], 5);
    cr_assert_eq(g1.n, 6);
    a->close(a);
    b->close(b);
}

Test(inmem, unacked_waits_for_a_new_subscriber)
{
    saga_transport *a = ep(), *b = ep();
    got gb = {0}, gc = {.ack = 1};
    cr_assert_eq(b->subscribe(b, "t", "g", recv_cb, &gb), SAGA_OK);
    send_ints(a, "t", "k", 0, 3);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gb.n, 3);
    cr_assert_eq(b->ack(b, gb.d[0]), SAGA_OK);
    b->close(b);
    /* A delivery of a closed endpoint can no longer be acked. */
    cr_assert_eq(b->ack(b, gb.d[1]), SAGA_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_transport *c = ep();
    cr_assert_eq(c->subscribe(c, "t", "g", recv_cb, &gc), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gc.n, 2);
    cr_assert_eq(gc.vals[0], 1);
    cr_assert_eq(gc.vals[1], 2);
    a->close(a);
    c->close(c);
}

Test(inmem, close_inside_recv_keeps_order_for_the_group)
{
    saga_transport *a = ep(), *b = ep(), *c = ep();
    got gb = {.close_after = 2}, gc = {.ack = 1};
    cr_assert_eq(b->subscribe(b, "t", "g", recv_cb, &gb), SAGA_OK);
    send_ints(a, "t", "k", 0, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gb.n, 2);
    cr_assert_eq(c->subscribe(c, "t", "g", recv_cb, &gc), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gc.n, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(gc.vals[i], i);
    a->close(a);
    c->close(c);
}

Test(inmem, one_key_stays_with_one_subscriber)
{
    saga_transport *a = ep(), *b = ep();
    got ga = {.ack = 1}, gb = {.ack = 1};
    cr_assert_eq(a->subscribe(a, "t", "g", recv_cb, &ga), SAGA_OK);
    cr_assert_eq(b->subscribe(b, "t", "g", recv_cb, &gb), SAGA_OK);
    send_ints(a, "t", "same-key", 0, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(ga.n + gb.n, 100);
    cr_assert(ga.n == 0 || gb.n == 0);
    got *g = ga.n ? &ga : &gb;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(g->vals[i], i);
    a->close(a);
    b->close(b);
}

Test(inmem, wrong_transport_ack_is_rejected)
{
    saga_transport *a = ep(), *b = ep();
    got gb = {0};
    cr_assert_eq(b->subscribe(b, "t", "g", recv_cb, &gb), SAGA_OK);
    send_ints(a, "t", NULL, 0, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gb.n, 1);
    cr_assert_eq(a->ack(a, gb.d[0]), SAGA_EINVAL);
    cr_assert_eq(b->ack(b, gb.d[0]), SAGA_OK);
    a->close(a);
    b->close(b);
}

/* Blocks allocated through the library and not yet freed, counted from
 * the moment the counting allocator is installed (a test process is its
 * own: Criterion forks one per test). */
static long live_blocks;
static void *count_malloc(size_t n)
{
    void *p = malloc(n);
    live_blocks += p != NULL;
    return p;
}
static void *count_realloc(void *o, size_t n)
{
    void *p = realloc(o, n);
    live_blocks += o == NULL && p != NULL;
    return p;
}
static void count_free(void *p)
{
    live_blocks -= p != NULL;
    free(p);
}

Test(inmem, bus_free_while_endpoints_close)
{
    /* A bus of its own, made after the counter is in place, so that every
     * block of it is counted; without LeakSanitizer the count is the proof
     * that freeing the bus while its endpoint closes frees everything. */
    cr_assert_eq(saga_replace_allocator(count_malloc, count_realloc,
                                        count_free),
                 SAGA_OK);
    live_blocks = 0;
    saga_inmem_bus *b = NULL;
    cr_assert_eq(saga_inmem_bus_new(&b, &loop), SAGA_OK);
    saga_transport *a = NULL;
    cr_assert_eq(saga_transport_inmem_new(&a, b), SAGA_OK);
    got ga = {0};
    cr_assert_eq(a->subscribe(a, "t", "g", recv_cb, &ga), SAGA_OK);
    send_ints(a, "t", "k", 0, 3);
    cr_assert_gt(live_blocks, 0);
    a->close(a);
    /* Freed once a's close callback has run. */
    saga_inmem_bus_free(b);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_expect_eq(ga.n, 0, "a closed endpoint got deliveries");
    cr_expect_eq(live_blocks, 0, "%ld blocks of the bus were not freed",
                 live_blocks);
}

Test(inmem, the_loop_idles_when_there_is_no_work)
{
    saga_transport *a = ep();
    got ga = {.ack = 1};
    cr_assert_eq(a->subscribe(a, "t", "g", recv_cb, &ga), SAGA_OK);
    send_ints(a, "t", "k", 0, 3);
    /* uv_run returns by itself: no handle stays active without work. */
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(ga.n, 3);
    a->close(a);
}

static void count_sent(saga_transport *t, int status, void *arg)
{
    (void)t;
    int *n = arg;
    if (status == SAGA_OK)
        (*n)++;
    else
        n[1]++;
}

/* A send is confirmed only once every group that gets it has acked it:
 * the sender then forgets it (a relay deletes its outbox row), so a
 * confirmation before the receiver's effect is durable would lose the
 * message with the process. */
Test(inmem, a_send_is_confirmed_once_every_group_acked_it)
{
    saga_transport *a = ep(), *b = ep(), *c = ep();
    got g1 = {0}, g2 = {0}, gc = {.ack = 1};
    int sent[2] = {0, 0};
    cr_assert_eq(b->subscribe(b, "t", "g1", recv_cb, &g1), SAGA_OK);
    cr_assert_eq(b->subscribe(b, "t", "g2", recv_cb, &g2), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    int v = 7;
    cr_assert_eq(a->send(a, "t", "k", &v, sizeof v, count_sent, sent), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(g1.n, 1);
    cr_assert_eq(g2.n, 1);
    cr_assert_eq(sent[0], 0, "confirmed before any group acked");
    cr_assert_eq(b->ack(b, g1.d[0]), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sent[0], 0, "confirmed before the second group acked");
    /* The second group's subscriber closes unacked: the delivery goes to
     * the group's next subscriber, and its ack confirms the send. */
    b->close(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sent[0], 0);
    cr_assert_eq(c->subscribe(c, "t", "g2", recv_cb, &gc), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gc.n, 1);
    cr_assert_eq(sent[0], 1);
    cr_assert_eq(sent[1], 0);
    /* A topic without groups: confirmed on the next turn (the bus keeps
     * it for a later group, as a broker would). */
    cr_assert_eq(a->send(a, "none", "k", &v, sizeof v, count_sent, sent),
                 SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sent[0], 2);
    /* A sender closed while waiting gets SAGA_ECLOSED; the message stays
     * with its group. */
    gc.ack = 0;
    cr_assert_eq(a->send(a, "t", "k", &v, sizeof v, count_sent, sent), SAGA_OK);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(gc.n, 2);
    a->close(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sent[0], 2);
    cr_assert_eq(sent[1], 1);
    cr_assert_eq(c->ack(c, gc.d[1]), SAGA_OK);
    c->close(c);
}

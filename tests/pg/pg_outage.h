/*
 * pg_outage.h — the "never stops the loop" harness shared by the tests
 * that make the server silent as one request goes out (test_pg_loop.c,
 * test_pg_outbox.c): a slot hook calls pg_partition(), which, once armed,
 * starts a 1.5 s silent partition on the proxy and waits until it holds;
 * a 5 ms ticker counts the loop's ticks during it; pg_outage() arms,
 * triggers, runs the loop until the test's condition holds and the outage
 * is over, and asserts that the loop ticked through it.
 *
 * Static: included by one test file each, after pg_proxy.h (and
 * criterion, stdatomic, uv.h).
 */
#ifndef SAGA_TEST_PG_OUTAGE_H
#define SAGA_TEST_PG_OUTAGE_H

#include "pg_proxy.h"

static proxy g_px;
static atomic_int g_armed;
static int g_partitions;

/* Called by a hooked slot: the first call once armed starts the silent
 * partition (every open connection held, new ones too) and returns once
 * the proxy holds. */
static void pg_partition(void)
{
    if (!atomic_exchange(&g_armed, 0))
        return;
    g_partitions++;
    atomic_store(&g_px.hold_ms, 1500);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
}

/* Start the proxy in partition mode (open connections held, not closed,
 * when an outage starts), disarmed. */
static void pg_outage_proxy_start(void)
{
    proxy_start(&g_px);
    atomic_store(&g_px.freeze, 1);
    atomic_store(&g_armed, 0);
    g_partitions = 0;
}

typedef struct ticker {
    uv_timer_t t;
    int ticks, held_ticks;
} ticker;

static void tick_cb(uv_timer_t *t)
{
    ticker *k = t->data;
    k->ticks++;
    if (atomic_load(&g_px.holding))
        k->held_ticks++;
}

static void ticker_start(ticker *k, uv_loop_t *loop)
{
    memset(k, 0, sizeof *k);
    uv_timer_init(loop, &k->t);
    k->t.data = k;
    uv_timer_start(&k->t, tick_cb, 5, 5);
}

static void ticker_stop(ticker *k)
{
    uv_timer_stop(&k->t);
    uv_close((uv_handle_t *)&k->t, NULL);
}

/* Run @p loop until @p until(@p arg) holds and the outage is over
 * (bounded: 3000 ticks, 15 s). */
static void pg_run_until(uv_loop_t *loop, ticker *k, int (*until)(void *),
                         void *arg)
{
    while (k->ticks < 3000 &&
           !(until(arg) && atomic_load(&g_px.outages) >= g_partitions))
        uv_run(loop, UV_RUN_ONCE);
}

/* The loop ticked through the outage: 1.5 s of 5 ms ticks is 300; a loop
 * blocked in a synchronous slot gets none (the machine is shared: 40% is
 * plenty). */
static void pg_assert_ticked(const ticker *k)
{
    cr_assert_eq(g_partitions, 1, "the hooked request was sent");
    cr_assert_eq(atomic_load(&g_px.outages), 1, "the outage happened");
    cr_log_info("%d ticks during the outage, %d in all", k->held_ticks,
                k->ticks);
    cr_assert_geq(k->held_ticks, 120,
                  "the loop ticked %d times during the outage (%d in all)",
                  k->held_ticks, k->ticks);
}

/* The outage: arm the hook (the next hooked request makes the server
 * silent for 1.5 s), run @p trigger (NULL: the engine's own timers send
 * the request), run the loop until @p until holds and the outage is over,
 * and assert that the loop ticked through it. */
static void pg_outage(uv_loop_t *loop, ticker *k, void (*trigger)(void *),
                      int (*until)(void *), void *arg)
{
    atomic_store(&g_armed, 1);
    if (trigger != NULL)
        trigger(arg);
    pg_run_until(loop, k, until, arg);
    pg_assert_ticked(k);
}

#endif /* SAGA_TEST_PG_OUTAGE_H */

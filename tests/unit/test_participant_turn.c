/*
 * test_participant_turn.c — one loop turn of a participant is bounded
 * (issues 8 and 10): with thousands of commands queued at once, the
 * participant handles at most max_batch of them per batch (and none more
 * once a batch has run max_batch_ms), and the rest wait for the next loop
 * turn, so that a repeating timer on the same loop (a transport's heartbeat,
 * an engine's silence limit) fires between its batches. Before the fix the
 * whole queue was handled in one transaction, in one loop turn: on a slow
 * store (PostgreSQL under load) that turn lasted seconds, links were closed
 * as silent and a retry storm followed.
 *
 * The handler sleeps a little per command, standing in for a slow store (a
 * round trip per statement): a batch then always lasts longer than the
 * timer's period, so the timer is due after every batch, whatever the
 * machine's speed. What is asserted is counts, never durations.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

#include "fakes/fault_store.h"
#include "fixture.h"

#define NCMD 3000

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T;
static uv_timer_t tick;
static int handled, since_tick, max_between, ticks, ticks_while_draining;
static int replies, dup_replies, handled_twice;
static unsigned char answered[NCMD], called[NCMD];
static unsigned handler_sleep_us;

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)r, (void)arg;
    int i = atoi(c->saga_id + 2);
    cr_assert(i >= 0 && i < NCMD);
    if (called[i]++)
        handled_twice++;
    handled++;
    since_tick++;
    if (handler_sleep_us > 0)
        usleep(handler_sleep_us);
    return SAGA_OK;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
    ticks++;
    if (handled > 0 && handled < NCMD)
        ticks_while_draining++;
    if (since_tick > max_between)
        max_between = since_tick;
    since_tick = 0;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    if (e.kind == SAGA_MSG_REPLY) {
        int i = atoi(e.saga_id + 2);
        cr_assert(i >= 0 && i < NCMD);
        cr_assert_eq(e.outcome, SAGA_OUTCOME_OK);
        if (answered[i]++)
            dup_replies++;
        replies++;
    }
    t->ack(t, d);
}

static void send_cmd(int i)
{
    char saga[32], id[48];
    snprintf(saga, sizeof saga, "s-%d", i);
    snprintf(id, sizeof id, "s-%d.0.cmd", i);
    fx_send(T, "inventory", &(fx_msg){.saga = saga, .msg_id = id});
}

static void start(saga_store *s, uint32_t max_batch, uint32_t max_batch_ms,
                  unsigned sleep_us)
{
    handled = since_tick = max_between = ticks = ticks_while_draining = 0;
    replies = dup_replies = handled_twice = 0;
    memset(answered, 0, sizeof answered);
    memset(called, 0, sizeof called);
    handler_sleep_us = sleep_us;
    saga_transport *pt;
    fx_inmem_open(&loop, &bus, &T, "tester", on_reply, &pt);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.store_retry_ms = 1;
    o.max_batch = max_batch;
    o.max_batch_ms = max_batch_ms;
    P = fx_participant(&loop, s, pt, &o, "reserve", h_reserve);
    /* Every millisecond: due after every batch (each lasts longer). */
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, tick_cb, 1, 1);
}

static void drain(void)
{
    for (int i = 0; i < NCMD; i++)
        send_cmd(i);
    /* Bounded: one batch per loop turn at the least. */
    for (int i = 0; i < 100000 && replies < NCMD; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void finish(void)
{
    uv_close((uv_handle_t *)&tick, NULL);
    fx_inmem_close(&loop, P, T, bus, 20);
}

static void assert_all_answered_once(void)
{
    cr_assert_eq(replies, NCMD, "%d of %d answered", replies, NCMD);
    cr_assert_eq(dup_replies, 0);
    cr_assert_eq(handled, NCMD);
    cr_assert_eq(handled_twice, 0);
    for (int i = 0; i < NCMD; i++)
        cr_assert_eq(answered[i], 1, "command %d answered %d times", i,
                     answered[i]);
}

static saga_store *mem(void) { return fx_memory_store(); }

/* The default cap: 3000 queued commands are handled in batches of at most
 * 256, and the timer fires between them. The time budget is set high here
 * so that only the count is tested. */
Test(participant_turn, default_cap_lets_timers_run_between_batches)
{
    start(mem(), 0, 60000, 5);
    drain();
    assert_all_answered_once();
    cr_assert_leq(max_between, 256, "%d commands handled in one loop turn",
                  max_between);
    cr_assert_geq(ticks_while_draining, NCMD / 256 - 1,
                  "the timer fired %d times while %d commands drained",
                  ticks_while_draining, NCMD);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_geq(st.commits, (uint64_t)(NCMD + 255) / 256);
    finish();
}

/* A smaller cap set in the options. */
Test(participant_turn, max_batch_option_caps_the_batch)
{
    start(mem(), 100, 60000, 5);
    drain();
    assert_all_answered_once();
    cr_assert_leq(max_between, 100, "%d commands in one loop turn",
                  max_between);
    cr_assert_geq(ticks_while_draining, NCMD / 100 - 1);
    finish();
}

/* The time budget: a handler slower than max_batch_ms makes every batch
 * one command long, however many are queued. */
Test(participant_turn, time_budget_bounds_a_slow_batch)
{
    start(mem(), 0, 1, 1500);
    for (int i = 0; i < 40; i++)
        send_cmd(i);
    for (int i = 0; i < 10000 && replies < 40; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(replies, 40);
    cr_assert_eq(max_between, 1, "%d commands in one loop turn", max_between);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_geq(st.commits, 40);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(answered[i], 1);
    finish();
}

/* A store without savepoints, where a failed handler makes the batch run
 * again: the cap holds there too, and a commit that fails now and then
 * (the batch is run again later) loses and doubles nothing. */
Test(participant_turn, cap_holds_with_failing_commits_without_savepoints)
{
    saga_store *s;
    fault_store *fs;
    cr_assert_eq(fault_store_new(&s, mem(), &fs), SAGA_OK);
    s->savepoint = NULL;
    s->savepoint_rollback = NULL;
    s->savepoint_release = NULL;
    start(s, 200, 60000, 5);
    fault_store_fail_nth(fs, FAULT_COMMIT, 3);
    drain();
    cr_assert_eq(replies, NCMD);
    cr_assert_eq(dup_replies, 0);
    for (int i = 0; i < NCMD; i++)
        cr_assert_eq(answered[i], 1);
    cr_assert_leq(max_between, 200);
    cr_assert_eq(fault_store_injected(fs), 1);
    finish();
}

/* Closing with more queued than one batch holds commits them all (in
 * capped batches), so that nothing handled is lost or done twice. */
Test(participant_turn, close_commits_the_queue_in_capped_batches)
{
    start(mem(), 50, 60000, 0);
    for (int i = 0; i < 500; i++)
        send_cmd(i);
    /* The transport delivers all 500 in one turn; one batch takes 50. */
    for (int i = 0; i < 10 && handled == 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(handled, 50);
    finish();
    cr_assert_eq(handled, 500, "%d handled by the close", handled);
    cr_assert_eq(handled_twice, 0);
}

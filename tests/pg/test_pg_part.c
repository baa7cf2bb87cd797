/*
 * test_pg_part.c — a participant on the PostgreSQL store (issue 10): how
 * many round trips to the server one batch of received commands costs,
 * and how often the participant's loop turns meanwhile on a slow server.
 *
 * A small TCP proxy (pg_proxy.h) sits between the store and the server.
 * It counts round trips (a burst of bytes from the client after the
 * server last spoke starts one) and can answer slowly (every answer held
 * delay_ms before it is passed on: a distant or loaded server).
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL). Each test works in a schema of
 * its own. The figures are logged (cr_log_info, and on stderr as
 * "pg_part: ..."); what is asserted is counts, never durations.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "saga/postgres.h"
#include "saga/saga.h"

/* The proxy: counts round trips, answers slowly, swallows an answer. */
#include "pg_proxy.h"

/* ------------------------------------------------------------------------ */
/* A participant on the store behind the proxy                              */

#define MAXCMD 512

typedef struct world {
    uv_loop_t loop;
    proxy px;
    saga_inmem_bus *bus;
    saga_transport *T; /* the tester's side */
    saga_participant *P;
    uv_timer_t tick;
    int ticks, replies, handled, busy_ticks;
    uint64_t last_ns, max_gap_ns; /* logged, not asserted */
    unsigned char answered[MAXCMD];
} world;

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)c, (void)r;
    world *w = arg;
    w->handled++;
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key;
    world *w = arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    if (e.kind == SAGA_MSG_REPLY) {
        int i = atoi(e.saga_id + 2);
        cr_assert(i >= 0 && i < MAXCMD);
        cr_assert_eq(e.outcome, SAGA_OUTCOME_OK);
        if (!w->answered[i]++)
            w->replies++;
    }
    t->ack(t, d);
}

static void tick_cb(uv_timer_t *t)
{
    world *w = t->data;
    w->ticks++;
    uint64_t now = uv_hrtime();
    if (w->last_ns && now - w->last_ns > w->max_gap_ns)
        w->max_gap_ns = now - w->last_ns;
    w->last_ns = now;
}

static void send_cmd(world *w, int i)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.attempt = 1;
    snprintf(e.saga_id, sizeof e.saga_id, "s-%d", i);
    snprintf(e.msg_id, sizeof e.msg_id, "s-%d.0.cmd", i);
    strcpy(e.name, "reserve");
    strcpy(e.reply_to, "tester");
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(w->T->send(w->T, "inventory", e.saga_id, b, n, NULL, NULL), 0);
    saga_free(b);
}

/* @p old: the store's version-9 slots taken away, so the participant
 * calls every slot one by one (the code before them), for the figures
 * before/after in one run. */
static void world_start(world *w, uint32_t max_batch, int old)
{
    memset(w, 0, sizeof *w);
    proxy_start(&w->px);
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             w->px.port);
    static int n;
    char schema[64];
    snprintf(schema, sizeof schema, "p_%d_%d", (int)getpid(), n++);
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = schema;
    so.connect_timeout_s = 5;
    saga_store *s = NULL;
    cr_assert_eq(saga_store_postgres_open(&s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    cr_assert_geq(s->version, 9u);
    cr_assert_not_null(s->part_read);
    cr_assert_not_null(s->part_commit);
    if (old)
        s->part_read = NULL, s->part_commit = NULL;
    uv_loop_init(&w->loop);
    cr_assert_eq(saga_inmem_bus_new(&w->bus, &w->loop), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&w->T, w->bus), SAGA_OK);
    cr_assert_eq(w->T->subscribe(w->T, "tester", "tester", on_reply, w), 0);
    saga_transport *pt;
    cr_assert_eq(saga_transport_inmem_new(&pt, w->bus), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 5;
    o.max_batch = max_batch;
    /* One batch per max_batch commands, however slow the server. */
    o.max_batch_ms = 600000;
    cr_assert_eq(saga_participant_new(&w->P, &w->loop, s, pt, &o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(w->P, "reserve", h_reserve, w), 0);
    cr_assert_eq(saga_participant_start(w->P), SAGA_OK);
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, tick_cb, 1, 1);
}

static uint64_t commits(world *w)
{
    saga_participant_counters c = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(w->P, &c), SAGA_OK);
    return c.commits;
}

/* Send @p n commands at once and run the loop until every one is answered
 * (bounded). */
static void drain(world *w, int n)
{
    int start = w->replies;
    for (int i = start; i < start + n; i++)
        send_cmd(w, i);
    for (int i = 0; i < 200000 && w->replies < start + n; i++) {
        int before = w->ticks;
        uv_run(&w->loop, UV_RUN_ONCE);
        if (w->ticks > before)
            w->busy_ticks += w->ticks - before;
    }
    cr_assert_eq(w->replies, start + n, "%d of %d answered", w->replies - start,
                 n);
}

static void world_stop(world *w)
{
    uv_close((uv_handle_t *)&w->tick, NULL);
    saga_participant_close(w->P, NULL, NULL);
    saga_transport_free(w->T);
    for (int i = 0; i < 50; i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    saga_inmem_bus_free(w->bus);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&w->loop), 0);
    proxy_stop(&w->px);
}

/* ------------------------------------------------------------------------ */
/* Round trips per batch                                                    */

#define NBATCH 64

/* NBATCH new commands at once, as one batch: the round trips it costs
 * (from the first command's arrival to the last reply's release; the
 * outbox deletions of the published replies follow in a later batch and
 * are not counted). */
static long batch_round_trips(int old, long *batches)
{
    world w;
    world_start(&w, NBATCH, old);
    /* A first batch warms the connection. */
    drain(&w, 4);
    for (int i = 0; i < 100; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
    uint64_t c0 = commits(&w);
    long r0 = atomic_load(&w.px.rtt);
    drain(&w, NBATCH);
    long rtt = atomic_load(&w.px.rtt) - r0;
    uint64_t nb = commits(&w) - c0;
    /* The commands in one batch; an outbox deletion of the warm-up's
     * replies may come due on the way (a batch of its own). */
    cr_assert(nb >= 1 && nb <= 2, "%llu batches", (unsigned long long)nb);
    fprintf(stderr,
            "pg_part: %s: %d commands, %llu batch(es): %ld round trips "
            "(%.2f per command)\n",
            old ? "slot by slot" : "part_read/part_commit", NBATCH,
            (unsigned long long)nb, rtt, (double)rtt / NBATCH);
    cr_log_info("%s: %ld round trips for %d commands", old ? "old" : "new", rtt,
                NBATCH);
    cr_assert_eq(w.handled, NBATCH + 4);
    world_stop(&w);
    *batches = (long)nb;
    return rtt;
}

/* Slot by slot a batch of n commands costs about 4n + 2 round trips
 * (begin, per command the claim, the barrier read and write, the inbox
 * reply, then commit; a reply has no outbox row); with part_read and
 * part_commit three (begin, the reads, the writes with the commit),
 * whatever n. */
Test(pg_part, round_trips_per_batch)
{
    long nb0, nb1;
    long before = batch_round_trips(1, &nb0);
    long after = batch_round_trips(0, &nb1);
    cr_assert_geq(before, 4 * NBATCH, "%ld", before);
    cr_assert_leq(after, 3 * nb1, "%ld round trips for %d commands in %ld",
                  after, NBATCH, nb1);
}

/* On a slow server (every answer 2 ms late), the ticks of a 1 ms timer on
 * the participant's loop while it works through NBATCH commands. */
static void slow_ticks(int old)
{
    world w;
    world_start(&w, NBATCH, old);
    drain(&w, 4);
    atomic_store(&w.px.delay_ms, 2);
    w.ticks = 0;
    w.max_gap_ns = 0;
    w.last_ns = 0;
    long r0 = atomic_load(&w.px.rtt);
    uint64_t t0 = uv_hrtime();
    drain(&w, NBATCH);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    long rtt = atomic_load(&w.px.rtt) - r0;
    fprintf(stderr,
            "pg_part: %s, slow server (2 ms per answer): %d commands in "
            "%.0f ms, %ld round trips, %d ticks of a 1 ms timer, longest "
            "gap %.0f ms\n",
            old ? "slot by slot" : "part_read/part_commit", NBATCH, ms, rtt,
            w.ticks, (double)w.max_gap_ns / 1e6);
    cr_log_info("slow server: %d ticks, longest gap %.0f ms", w.ticks,
                (double)w.max_gap_ns / 1e6);
    atomic_store(&w.px.delay_ms, 0);
    world_stop(&w);
}

Test(pg_part, loop_ticks_during_a_batch_on_a_slow_server)
{
    slow_ticks(1);
    slow_ticks(0);
}

/* The answer to a batch's commit is lost (swallowed, then the connection
 * closed): no reply is released, no delivery acked. The commit did happen,
 * so the batch's retry finds every claim taken (read back from the inbox)
 * and sends the replies recorded there, without calling a handler again:
 * one reply per command, each handler called once. */
Test(pg_part, a_commit_whose_answer_was_lost_releases_no_reply)
{
    world w;
    world_start(&w, NBATCH, 0);
    drain(&w, 4);
    for (int i = 0; i < 100; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
    /* begin, the reads, then the commit: its answer is swallowed. */
    atomic_store(&w.px.drop_at, atomic_load(&w.px.rtt) + 3);
    int start = w.replies, early = 0;
    for (int i = start; i < start + NBATCH; i++)
        send_cmd(&w, i);
    for (int i = 0; i < 200000 && w.replies < start + NBATCH; i++) {
        uv_run(&w.loop, UV_RUN_ONCE);
        if (atomic_load(&w.px.cuts) == 0 && w.replies > start)
            early = 1;
    }
    cr_assert_eq(atomic_load(&w.px.cuts), 1, "the answer was lost");
    cr_assert_eq(early, 0, "a reply was released before the commit was known");
    cr_assert_eq(w.replies, start + NBATCH);
    int dups = 0;
    for (int i = 0; i < start + NBATCH; i++)
        dups += w.answered[i] > 1;
    cr_assert_eq(dups, 0);
    cr_assert_eq(w.handled, 4 + NBATCH, "each handler ran once (%d)",
                 w.handled);
    saga_participant_counters c = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(w.P, &c), SAGA_OK);
    cr_assert_eq(c.duplicates, NBATCH, "the claims were read back");
    cr_assert_geq(c.commit_failures, 1);
    world_stop(&w);
}

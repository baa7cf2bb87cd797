/*
 * test_participant_retention.c — a participant purges inbox entries and
 * barrier rows older than its retention (issue 7, item 7), driven by the
 * injected clock; pending deferred commands are kept. Before, its database
 * only grew.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

#include "fixture.h"

#define HOUR (3600LL * 1000)

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T;
static int64_t now_ms;
static int nreplies;
static saga_deferred *held;

static int64_t fake_clock(void *arg)
{
    (void)arg;
    return now_ms;
}

static int h_cmd(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)p, (void)arg;
    if (strncmp(c->saga_id, "pending", 7) == 0)
        return saga_reply_defer(r, &held);
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)buf, (void)len, (void)arg;
    nreplies++;
    t->ack(t, d);
}

static void pump(void) { fx_pump(&loop, 50); }

static void send_cmd(const char *saga, int comp)
{
    fx_send(T, "inventory", &(fx_msg){.saga = saga, .comp = comp});
}

static void setup(void)
{
    now_ms = 1700000000000LL;
    nreplies = 0;
    held = NULL;
    saga_transport *pt;
    fx_inmem_open(&loop, &bus, &T, "tester", on_reply, &pt);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.clock = fake_clock;
    o.housekeeping_interval_ms = 1; /* real ms; ages come from the clock */
    P = fx_participant(&loop, fx_memory_store(), pt, &o, "reserve", h_cmd);
}

static void teardown(void)
{
    saga_deferred_abandon(held);
    fx_inmem_close(&loop, P, T, bus, 50);
}

TestSuite(participant_retention, .init = setup, .fini = teardown);

static int barrier_exists(const char *saga)
{
    saga_store *s = saga_participant_store(P);
    char key[300];
    snprintf(key, sizeof key, "b/%s/0", saga);
    int rc = s->kv_get(s, key, NULL, NULL);
    cr_assert(rc == SAGA_OK || rc == SAGA_ENOTFOUND);
    return rc == SAGA_OK;
}

static int inbox_has(const char *msg_id)
{
    saga_store *s = saga_participant_store(P);
    cr_assert_eq(s->begin(s), SAGA_OK);
    int rc = s->inbox_claim(s, msg_id, now_ms, NULL, NULL);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    return rc == SAGA_EDUP;
}

Test(participant_retention, old_rows_purged_recent_and_pending_kept)
{
    send_cmd("old-1", 0);
    send_cmd("old-2", 1); /* a null compensation: an 'N' row */
    send_cmd("pending-1", 0);
    pump();
    cr_assert_eq(nreplies, 2);
    cr_assert(barrier_exists("old-1") && barrier_exists("old-2"));
    cr_assert(barrier_exists("pending-1"));
    now_ms += 23 * HOUR;
    send_cmd("recent", 0);
    pump();
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(barrier_exists("old-1"), "not old enough yet");
    now_ms += 2 * HOUR; /* old-* are 25 h old, recent 2 h */
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(!barrier_exists("old-1"));
    cr_assert(!barrier_exists("old-2"));
    cr_assert(!inbox_has("old-1.0.1.a"));
    cr_assert(barrier_exists("recent"));
    cr_assert(inbox_has("recent.0.1.a"));
    cr_assert(barrier_exists("pending-1"), "pending commands are kept");
    /* (Its inbox claim is purged by age: a redelivery now would be
     * answered RETRY by the pending barrier, not run twice.) */
    send_cmd("pending-1", 0);
    pump();
    cr_assert_eq(nreplies, 4); /* old-1, old-2, recent, this RETRY */
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.barriers_purged, 2);
    /* The pending one is answered long after: it is still sent. */
    cr_assert_eq(saga_deferred_reply(held, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    held = NULL;
    pump();
    cr_assert_eq(nreplies, 5, "the answer is not taken for the RETRY");
    saga_participant_counters st2 = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st2), SAGA_OK);
    cr_assert_eq(st2.pending_retried, 1);
    /* Its row now ages from the answer: kept 24 h, then purged. */
    now_ms += 23 * HOUR;
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(barrier_exists("pending-1"));
    now_ms += 2 * HOUR;
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(!barrier_exists("pending-1"));
    cr_assert(!barrier_exists("recent"));
}

static void noop_cb(uv_timer_t *t) { (void)t; }

/* The timer runs the pass by itself; the ages come from the clock. */
Test(participant_retention, housekeeping_timer_purges)
{
    send_cmd("old-1", 0);
    pump();
    cr_assert(barrier_exists("old-1"));
    now_ms += 25 * HOUR;
    /* A service's transport keeps its loop alive; here a timer does (the
     * housekeeping timer itself does not). */
    static uv_timer_t alive;
    uv_timer_init(&loop, &alive);
    uv_timer_start(&alive, noop_cb, 1000, 1000);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    for (int i = 0; i < 2000 && st.barriers_purged == 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(100);
        cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    }
    uv_close((uv_handle_t *)&alive, NULL);
    cr_assert_eq(st.barriers_purged, 1);
    cr_assert(!barrier_exists("old-1"));
}

/* Rows written before 0.2 carry no time: stamped now, purged a retention
 * later, never at once. */
Test(participant_retention, rows_without_time_are_stamped_first)
{
    saga_store *s = saga_participant_store(P);
    cr_assert_eq(s->kv_put(s, "b/legacy/0", "A\x80", 2), SAGA_OK);
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(barrier_exists("legacy"));
    now_ms += 25 * HOUR;
    cr_assert_eq(saga_participant_housekeep(P), SAGA_OK);
    cr_assert(!barrier_exists("legacy"));
}

/* A legacy row still works as a barrier: a retried action gets the
 * recorded output, not a second call. */
Test(participant_retention, legacy_row_is_read)
{
    saga_store *s = saga_participant_store(P);
    cr_assert_eq(s->kv_put(s, "b/legacy/0", "N", 1), SAGA_OK);
    send_cmd("legacy", 0);
    pump();
    cr_assert_eq(nreplies, 1);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    cr_assert_eq(st.hanging_refused, 1);
}

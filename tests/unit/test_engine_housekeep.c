/*
 * test_engine_housekeep.c — housekeeping (issue 7 item 8): a program that
 * polls with saga_engine_run(NOWAIT) and has no active saga still purges,
 * and a purge never removes a saga whose id saga_start() has just returned
 * with existed=1.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "harness.h"

static harness H;

static void setup(void) { h_init(&H); }
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0, "loop has open handles");
}

static void short_retention(saga_engine_options *o)
{
    o->retention_ms = 1000;
    o->housekeeping_interval_ms = 500;
}

static void boot(void)
{
    cr_assert_eq(h_engine(&H, NULL, short_retention), SAGA_OK);
    saga_def *d = h_def(&H, "c", NULL);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
}

TestSuite(housekeep, .init = setup, .fini = teardown);

static uint64_t purged(void)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    return st.purged;
}

Test(housekeep, polling_with_nowait_and_no_active_saga_still_purges)
{
    boot();
    char a[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, a, NULL, NULL), SAGA_OK);
    for (int i = 0; i < 5; i++)
        saga_engine_run(H.e, SAGA_RUN_NOWAIT);
    cr_assert_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    /* Past the interval but not the retention: a pass runs, keeps it. */
    H.now += 600;
    saga_engine_run(H.e, SAGA_RUN_NOWAIT);
    cr_expect_eq(purged(), 0u);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    /* Past both: the saga is gone, with nothing keeping the loop alive. */
    H.now += 1000;
    saga_engine_run(H.e, SAGA_RUN_NOWAIT);
    cr_expect_eq(purged(), 1u, "housekeeping never ran");
    cr_expect_eq(h_state(&H, a), (saga_state)0);
}

static int cb_calls, cb_existed, cb_found;
static char cb_id[SAGA_ID_SIZE];
static void on_started(saga_engine *e, int st, const char *id, int existed,
                       void *arg)
{
    (void)arg;
    cr_expect_eq(st, SAGA_OK);
    cb_calls++;
    cb_existed = existed;
    snprintf(cb_id, sizeof cb_id, "%s", id);
    saga_info *i;
    if (saga_get(e, id, &i) == SAGA_OK) {
        cb_found++;
        saga_info_free(i);
    }
}

/* A saga "k" that ended at H.now, and the clock moved by @p ms. */
static void ended_saga(char *id, int64_t ms)
{
    boot();
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    cr_assert_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    H.now += ms;
    cb_calls = cb_existed = cb_found = 0;
}

Test(housekeep, a_returned_existing_id_survives_a_purge_in_the_same_turn)
{
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    ended_saga(a, 999); /* not expired yet */
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, b, on_started, NULL),
                 SAGA_OK);
    cr_expect_str_eq(a, b);
    /* Same turn: the clock passes the retention and a purge runs. */
    H.now += 10;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, b), SAGA_STATE_COMPLETED,
                 "purged while the caller holds its id");
    h_pump(&H);
    cr_expect_eq(cb_calls, 1);
    cr_expect_eq(cb_existed, 1);
    cr_expect_eq(cb_found, 1, "the start callback got an id already gone");
    /* After the start was released, retention applies again. */
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, a), (saga_state)0);
}

Test(housekeep, an_expired_key_starts_a_new_saga_instead_of_a_dying_one)
{
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    ended_saga(a, 1001); /* expired, not purged yet */
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, b, on_started, NULL),
                 SAGA_OK);
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(cb_calls, 1);
    cr_expect_str_eq(cb_id, b);
    cr_expect_eq(cb_found, 1, "the start callback got an id already gone");
    cr_expect_str_neq(a, b);
    cr_expect_eq(cb_existed, 0);
    cr_expect_eq(h_state(&H, b), SAGA_STATE_COMPLETED);
}

Test(housekeep, a_pin_without_a_callback_does_not_outlive_its_turn)
{
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    ended_saga(a, 999);
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, b, NULL, NULL), SAGA_OK);
    cr_expect_str_eq(a, b);
    h_pump(&H);
    H.now += 10;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, a), (saga_state)0, "a stale pin kept it");
}

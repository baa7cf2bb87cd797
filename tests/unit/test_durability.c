/*
 * test_durability.c — what survives: a store failing mid-transaction (the
 * fault-injecting wrapper, and real SQLite I/O errors through a VFS shim),
 * recovery of in-flight and compensating sagas, durable timers.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault_store.h"
#include "fault_vfs.h"
#include "harness.h"

static harness H;
static char dir[64], path[128], buf[2048];

static void setup(void)
{
    h_init(&H);
    strcpy(dir, "/tmp/saga-dur-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
}
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(durability, .init = setup, .fini = teardown);

static void boot(saga_store *s, const char *kinds, const saga_step_options *o)
{
    cr_assert_eq(h_engine(&H, s, NULL), SAGA_OK);
    saga_def *d = h_def(&H, kinds, o);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK, "%s",
                 saga_engine_errmsg(H.e));
}

static saga_store *sqlite_store(const char *vfs)
{
    saga_store *s;
    saga_sqlite_options o = SAGA_SQLITE_OPTIONS_INIT;
    o.vfs = vfs;
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_OK);
    return s;
}

/* Close the engine (and its store), keeping the loop and the file. */
static void restart(void)
{
    h_fini(&H);
    H.ncalls = 0;
    H.done_count = 0;
}

static int started;
static void on_started(saga_engine *e, int st, const char *id, int ex, void *a)
{
    (void)e, (void)st, (void)id, (void)ex, (void)a;
    started++;
}

Test(durability, failed_commit_releases_nothing_and_is_retried)
{
    saga_store *inner, *s;
    fault_store *fs;
    cr_assert_eq(saga_store_memory_new(&inner), SAGA_OK);
    cr_assert_eq(fault_store_new(&s, inner, &fs), SAGA_OK);
    boot(s, "ccc", NULL);
    fault_store_fail_always(fs, FAULT_COMMIT, 1);
    char ids[5][SAGA_ID_SIZE];
    started = 0;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, ids[i], on_started,
                                NULL),
                     SAGA_OK);
    h_pump(&H);
    cr_expect_eq(H.ncalls, 0, "an action ran on an uncommitted start");
    cr_expect_eq(started, 0, "a start callback ran before its commit");
    cr_expect(strstr(H.log, "SAGA_ESTORE") != NULL, "not logged:\n%s", H.log);
    saga_info *i;
    cr_expect_eq(saga_get(H.e, ids[0], &i), SAGA_ENOTFOUND,
                 "a rolled-back batch left a saga behind");
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    cr_expect_geq(st.commit_failures, 1u);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_ESTORE);
    fault_store_clear(fs);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(started, 5);
    for (int k = 0; k < 5; k++) {
        cr_expect_eq(h_state(&H, ids[k]), SAGA_STATE_COMPLETED);
        h_journal(&H, ids[k], buf, sizeof buf);
        cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 STEP_OK:2 "
                              "COMPLETED");
    }
}

Test(durability, write_failing_mid_batch_rolls_back_whole_batch)
{
    saga_store *inner, *s;
    fault_store *fs;
    cr_assert_eq(saga_store_memory_new(&inner), SAGA_OK);
    cr_assert_eq(fault_store_new(&s, inner, &fs), SAGA_OK);
    boot(s, "cc", NULL);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", "ka", NULL, 0, a, NULL, NULL), SAGA_OK);
    cr_assert_eq(saga_start(H.e, "t", "kb", NULL, 0, b, NULL, NULL), SAGA_OK);
    /* The second saga insert fails: the first must not stay behind. */
    fault_store_fail_nth(fs, FAULT_SAGA_PUT,
                         fault_store_calls(fs, FAULT_SAGA_PUT) + 2);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_ESTORE);
    saga_info *i;
    cr_expect_eq(saga_get(H.e, a, &i), SAGA_ENOTFOUND);
    char id[SAGA_ID_SIZE];
    cr_expect_eq(fault_store_inner(fs)->idem_get(fault_store_inner(fs), "ka",
                                                 id),
                 SAGA_ENOTFOUND);
    cr_expect_eq(H.ncalls, 0);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    cr_expect_eq(h_state(&H, b), SAGA_STATE_COMPLETED);
}

Test(durability, sqlite_io_error_and_full_disk_are_survived)
{
    cr_assert_eq(fault_vfs_register(), 0);
    boot(sqlite_store(FAULT_VFS_NAME), "cc", NULL);
    char a[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    fault_vfs_fail_sync(0, 10 /* SQLITE_IOERR */);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_ESTORE);
    cr_expect_eq(H.ncalls, 0);
    fault_vfs_clear();
    fault_vfs_fail_write(0, 13 /* SQLITE_FULL */);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_ESTORE);
    cr_expect_eq(H.ncalls, 0);
    fault_vfs_clear();
    cr_expect_eq(saga_engine_flush(H.e), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    h_journal(&H, a, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 COMPLETED");
    cr_expect_geq(fault_vfs_injected(), 2u);
}

Test(durability, recovery_reruns_in_flight_step_with_same_attempt)
{
    H.script[1] = "h";
    boot(sqlite_store(NULL), "ccc", NULL);
    char ids[3][SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, ids[i], NULL, NULL),
                     SAGA_OK);
    h_pump(&H);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 0 0 1 1 1");
    restart();
    H.script[1] = "o";
    boot(sqlite_store(NULL), "ccc", NULL);
    h_pump(&H);
    h_calls(&H, buf, sizeof buf);
    /* Step 0 is durable and not run again; step 1 is. */
    cr_expect_str_eq(buf, "1 1 1 2 2 2");
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(H.calls[i].attempt, 1u);
        cr_expect_eq(h_state(&H, ids[i]), SAGA_STATE_COMPLETED);
        h_journal(&H, ids[i], buf, sizeof buf);
        cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 STEP_OK:2 "
                              "COMPLETED");
    }
}

Test(durability, recovery_resumes_compensation)
{
    H.script[2] = "f";
    H.comp_script[1] = "h";
    boot(sqlite_store(NULL), "ccc", NULL);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATING);
    restart();
    H.comp_script[1] = "o";
    boot(sqlite_store(NULL), "ccc", NULL);
    h_pump(&H);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "c1 c0");
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
}

Test(durability, retry_timer_survives_restart)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.initial_backoff_ms = 10000;
    o.retry.jitter = SAGA_JITTER_NONE;
    H.script[0] = "ro";
    boot(sqlite_store(NULL), "c", &o);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    restart();
    H.now += 5000; /* down for 5 s */
    boot(sqlite_store(NULL), "c", &o);
    h_pump(&H);
    cr_expect_eq(H.ncalls, 0, "the retry ran before its time");
    h_advance(&H, 4999);
    cr_expect_eq(H.ncalls, 0, "the retry ran before its time");
    h_advance(&H, 1);
    cr_expect_eq(H.ncalls, 1, "the durable retry timer was lost");
    cr_expect_eq(H.calls[0].attempt, 2u);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

Test(durability, deadline_survives_restart)
{
    H.script[0] = "h";
    cr_assert_eq(h_engine(&H, sqlite_store(NULL), NULL), SAGA_OK);
    saga_def *d = h_def(&H, "cc", NULL);
    saga_def_set_deadline(d, 60000);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    restart();
    cr_assert_eq(h_engine(&H, sqlite_store(NULL), NULL), SAGA_OK);
    d = h_def(&H, "cc", NULL);
    saga_def_set_deadline(d, 60000);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    h_pump(&H); /* re-invokes step 0, which hangs again */
    h_advance(&H, 59999);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
    h_advance(&H, 1);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
}

Test(durability, saga_of_unknown_definition_is_left_alone)
{
    H.script[0] = "h";
    boot(sqlite_store(NULL), "c", NULL);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    restart();
    cr_assert_eq(h_engine(&H, sqlite_store(NULL), NULL), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    cr_expect(strstr(H.log, "not registered") != NULL, "%s", H.log);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
}

static void fast_store_retry(saga_engine_options *o) { o->store_retry_ms = 1; }

Test(durability, failed_commit_is_retried_by_the_engine_itself)
{
    saga_store *inner, *s;
    fault_store *fs;
    cr_assert_eq(saga_store_memory_new(&inner), SAGA_OK);
    cr_assert_eq(fault_store_new(&s, inner, &fs), SAGA_OK);
    cr_assert_eq(h_engine(&H, s, fast_store_retry), SAGA_OK);
    saga_def *d = h_def(&H, "cc", NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    fault_store_fail_always(fs, FAULT_COMMIT, 1);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    uint64_t tries = fault_store_calls(fs, FAULT_COMMIT);
    /* Let the retry timer fire a few times while the store still fails. */
    for (int i = 0; i < 6; i++)
        uv_run(&H.loop, UV_RUN_ONCE);
    cr_expect_gt(fault_store_calls(fs, FAULT_COMMIT), tries,
                 "the engine did not retry the commit by itself");
    cr_expect_eq(H.ncalls, 0);
    fault_store_clear(fs);
    for (int i = 0; i < 2000 && h_state(&H, id) != SAGA_STATE_COMPLETED; i++)
        uv_run(&H.loop, UV_RUN_ONCE);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

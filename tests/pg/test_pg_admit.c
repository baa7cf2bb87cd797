/*
 * test_pg_admit.c — the engine's admission limit (max_active) on the
 * PostgreSQL store, which looks idempotency keys up on the loop: a keyed
 * start whose key is not in memory is staged and the commit decides, so
 * that staged start counts until its commit (or the key's saga answers
 * it); a key the store holds (an ended saga's) is not known when
 * saga_start() returns, so at the limit it is refused like a new saga, and
 * answered with its saga once there is room.
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL). Each test works in a schema of
 * its own.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "saga/engine.h"
#include "saga/postgres.h"

typedef struct rig {
    uv_loop_t loop;
    saga_engine *e;
    saga_step_ref held[8]; /* the hanging attempts, in order */
    int nheld;
    int cb_calls, cb_existed;
    char cb_id[SAGA_ID_SIZE];
} rig;

static rig R;

static void act_hold(saga_engine *e, const saga_step_ref *ref, const void *d,
                     size_t n, void *arg)
{
    (void)e, (void)d, (void)n, (void)arg;
    if (R.nheld < 8)
        R.held[R.nheld++] = *ref;
}

static void on_started(saga_engine *e, int st, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)arg;
    cr_expect_eq(st, SAGA_OK);
    R.cb_calls++;
    R.cb_existed += existed;
    snprintf(R.cb_id, sizeof R.cb_id, "%s", id);
}

static void rig_open(size_t max_active)
{
    memset(&R, 0, sizeof R);
    static int n;
    char schema[64];
    snprintf(schema, sizeof schema, "adm_%d_%d", (int)getpid(), n++);
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = schema;
    so.connect_timeout_s = 5;
    saga_store *s = NULL;
    cr_assert_eq(saga_store_postgres_open(&s, getenv("SAGA_PG_URL"), &so),
                 SAGA_OK, "%s", saga_store_postgres_open_errmsg());
    cr_assert_eq(uv_loop_init(&R.loop), 0);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &R.loop;
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    o.max_active = max_active;
    cr_assert_eq(saga_engine_new(&R.e, s, NULL, &o), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "t", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", act_hold, NULL, NULL, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(R.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(R.e), SAGA_OK, "%s",
                 saga_engine_errmsg(R.e));
}

static void rig_close(void)
{
    saga_engine_free(R.e);
    uv_run(&R.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&R.loop), 0);
}

static uint64_t active(void)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(R.e, &st), SAGA_OK);
    return st.active;
}

/* Run the loop until @p calls start callbacks ran and @p held attempts
 * hang (bounded: the server answers on the loop). */
static void run_until(int calls, int held)
{
    for (int i = 0; i < 20000 && (R.cb_calls < calls || R.nheld < held); i++)
        uv_run(&R.loop, UV_RUN_ONCE);
    cr_assert_geq(R.cb_calls, calls, "start callbacks");
    cr_assert_geq(R.nheld, held, "hanging attempts");
}

static int start(const char *key, char id[SAGA_ID_SIZE])
{
    return saga_start(R.e, "t", key, NULL, 0, id, on_started, NULL);
}

Test(pg_admit, staged_keyed_starts_count_until_their_commit)
{
    rig_open(2);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE], c[SAGA_ID_SIZE];
    /* Keys not in memory: staged, the commit decides; both count now. */
    cr_assert_eq(start("k-a", a), SAGA_OK);
    cr_assert_eq(start("k-b", b), SAGA_OK);
    cr_expect_eq(active(), 2u);
    cr_expect_eq(start("k-c", c), SAGA_EFULL);
    /* A key in memory is known: answered. */
    cr_expect_eq(start("k-a", c), SAGA_OK);
    cr_expect_str_eq(c, a);
    run_until(3, 2);
    cr_expect_eq(R.cb_existed, 1);
    cr_expect_eq(active(), 2u);
    cr_expect_eq(start("k-c", c), SAGA_EFULL);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(R.e, &st), SAGA_OK);
    cr_expect_eq(st.starts_refused, 2u);
    rig_close();
}

Test(pg_admit, a_key_only_the_store_holds_waits_for_room)
{
    rig_open(2);
    char done[SAGA_ID_SIZE], a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    char id[SAGA_ID_SIZE];
    /* One saga that ends: its key is then only in the store. */
    cr_assert_eq(start("k-done", done), SAGA_OK);
    run_until(1, 1);
    cr_assert_eq(saga_step_complete(R.e, &R.held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    for (int i = 0; i < 20000 && active() > 0; i++)
        uv_run(&R.loop, UV_RUN_ONCE);
    cr_assert_eq(active(), 0u);
    cr_assert_eq(start("k-a", a), SAGA_OK);
    cr_assert_eq(start("k-b", b), SAGA_OK);
    run_until(3, 3);
    /* Not in memory: not known when saga_start() returns, refused. */
    cr_expect_eq(start("k-done", id), SAGA_EFULL);
    /* Room: staged, and the commit answers it with the ended saga; the
     * staged saga is dropped and stops counting. */
    cr_assert_eq(saga_step_complete(R.e, &R.held[1], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    for (int i = 0; i < 20000 && active() > 1; i++)
        uv_run(&R.loop, UV_RUN_ONCE);
    cr_assert_eq(active(), 1u);
    R.cb_existed = 0;
    cr_assert_eq(start("k-done", id), SAGA_OK, "%s", saga_engine_errmsg(R.e));
    cr_expect_eq(active(), 2u, "the staged start counts");
    run_until(4, 3);
    cr_expect_eq(R.cb_existed, 1);
    cr_expect_str_eq(R.cb_id, done);
    for (int i = 0; i < 20000 && active() > 1; i++)
        uv_run(&R.loop, UV_RUN_ONCE);
    cr_expect_eq(active(), 1u, "the dropped start stopped counting");
    cr_expect_eq(R.nheld, 3, "nothing ran for the answered key");
    rig_close();
}

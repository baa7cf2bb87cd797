/*
 * test_engine_async.c — the engine on a store that commits asynchronously
 * (store version 4, submit_batch; tests/fakes/async_store.c): sagas run to
 * their end; while a batch is in flight the next is staged and submitted
 * after it (never two in flight, never a write through the synchronous
 * slots meanwhile); a failed or refused commit releases nothing and is
 * written again, together with what was staged since; close waits for the
 * batch in flight.
 */
#include <criterion/criterion.h>
#include <string.h>

#include <saga/store.h>

#include "async_store.h"
#include "harness.h"

typedef struct fixture {
    harness h;
    async_store *as;
    int started;
    char started_ids[8][SAGA_ID_SIZE];
    int closed;
} fixture;

static fixture *F;

static void quiet_retry(saga_engine_options *o)
{
    o->log_level = SAGA_LOG_ERROR;
    o->store_retry_ms = 1;
}

static void setup(void)
{
    F = calloc(1, sizeof *F);
    h_init(&F->h);
    saga_store *mem, *st;
    cr_assert_eq(saga_store_memory_new(&mem), SAGA_OK);
    cr_assert_eq(async_store_new(&st, mem, &F->as), SAGA_OK);
    cr_assert_eq(h_engine(&F->h, st, quiet_retry), SAGA_OK);
    saga_def *d = h_def(&F->h, "ccc", NULL);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(F->h.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(F->h.e), SAGA_OK);
}

static void teardown(void)
{
    h_fini(&F->h);
    cr_expect_eq(uv_loop_close(&F->h.loop), 0);
    free(F);
}

static void on_started(saga_engine *e, int rc, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)arg;
    cr_expect_eq(rc, SAGA_OK);
    cr_expect_eq(existed, 0);
    if (F->started < 8)
        memcpy(F->started_ids[F->started], id, SAGA_ID_SIZE);
    F->started++;
}

static void start(char id[SAGA_ID_SIZE])
{
    cr_assert_eq(saga_start(F->h.e, "t", NULL, NULL, 0, id, on_started, NULL),
                 SAGA_OK);
}

static async_store_stats stats(void)
{
    async_store_stats s;
    async_store_stats_get(F->as, &s);
    return s;
}

/* Whether the inner (committed) store has saga @p id. */
static int committed(const char *id)
{
    saga_info *i;
    int rc = saga_get(F->h.e, id, &i);
    if (rc == SAGA_OK)
        saga_info_free(i);
    return rc == SAGA_OK;
}

Test(engine_async, sagas_complete, .init = setup, .fini = teardown)
{
    char ids[20][SAGA_ID_SIZE];
    for (int i = 0; i < 20; i++)
        start(ids[i]);
    for (int i = 0; i < 200 && F->h.done_count < 20; i++)
        h_pump(&F->h);
    cr_assert_eq(F->h.done_count, 20);
    for (int i = 0; i < 20; i++)
        cr_expect_eq(h_state(&F->h, ids[i]), SAGA_STATE_COMPLETED);
    async_store_stats s = stats();
    cr_expect(s.attached);
    cr_expect_gt(s.committed, 1);
    cr_expect_eq(s.failed, 0);
    cr_expect_eq(s.max_queued, 1, "more than one batch in flight");
    cr_expect_eq(s.sync_writes_in_flight, 0);
    saga_engine_counters es = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(F->h.e, &es);
    cr_expect_eq(es.completed, 20);
    cr_expect_eq(es.active, 0);
}

Test(engine_async, next_batch_is_staged_while_one_is_in_flight, .init = setup,
     .fini = teardown)
{
    async_store_hold(F->as, 1);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    start(a);
    h_pump(&F->h);
    cr_assert_eq(async_store_queued(F->as), 1);
    cr_assert_eq(async_store_head_sagas(F->as), 1);
    /* In flight: nothing released yet. */
    cr_expect_eq(F->started, 0);
    cr_expect_eq(F->h.ncalls, 0);
    cr_expect(!committed(a));
    /* Staged meanwhile, not submitted beside it. */
    start(b);
    h_pump(&F->h);
    cr_expect_eq(async_store_queued(F->as), 1);
    cr_expect_eq(F->started, 0);

    cr_assert_eq(async_store_complete(F->as, SAGA_OK), 1);
    /* A's batch released: its start callback and first action ran; the
     * next batch holds B's start and A's step outcome. */
    cr_expect_eq(F->started, 1);
    cr_expect_str_eq(F->started_ids[0], a);
    cr_expect_eq(F->h.ncalls, 1);
    cr_expect(committed(a));
    cr_expect(!committed(b));
    h_pump(&F->h);
    cr_assert_eq(async_store_queued(F->as), 1);
    cr_expect_eq(async_store_head_sagas(F->as), 2);

    async_store_hold(F->as, 0);
    for (int i = 0; i < 100 && F->h.done_count < 2; i++)
        h_pump(&F->h);
    cr_expect_eq(F->started, 2);
    cr_expect_eq(h_state(&F->h, a), SAGA_STATE_COMPLETED);
    cr_expect_eq(h_state(&F->h, b), SAGA_STATE_COMPLETED);
    async_store_stats s = stats();
    cr_expect_eq(s.max_queued, 1);
    cr_expect_eq(s.sync_writes_in_flight, 0);
}

Test(engine_async, failed_commit_releases_nothing_and_is_written_again,
     .init = setup, .fini = teardown)
{
    async_store_hold(F->as, 1);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    start(a);
    h_pump(&F->h);
    cr_assert_eq(async_store_queued(F->as), 1);
    start(b); /* staged while A's batch is in flight */
    cr_assert_eq(async_store_complete(F->as, SAGA_ESTORE), 1);
    cr_expect_eq(F->started, 0, "a failed commit released a start");
    cr_expect_eq(F->h.ncalls, 0, "a failed commit invoked an action");
    cr_expect(!committed(a));
    saga_engine_counters es = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(F->h.e, &es);
    cr_expect_eq(es.commit_failures, 1);

    /* Written again, A's batch and B's as one, in staging order. */
    cr_assert_eq(saga_engine_flush(F->h.e), SAGA_OK);
    cr_assert_eq(async_store_queued(F->as), 1);
    cr_expect_eq(async_store_head_sagas(F->as), 2);
    cr_assert_eq(async_store_complete(F->as, SAGA_OK), 1);
    cr_expect_eq(F->started, 2);
    cr_expect_str_eq(F->started_ids[0], a);
    cr_expect_str_eq(F->started_ids[1], b);
    cr_expect(committed(a) && committed(b));

    async_store_hold(F->as, 0);
    for (int i = 0; i < 100 && F->h.done_count < 2; i++)
        h_pump(&F->h);
    cr_expect_eq(h_state(&F->h, a), SAGA_STATE_COMPLETED);
    cr_expect_eq(h_state(&F->h, b), SAGA_STATE_COMPLETED);
}

Test(engine_async, refused_submit_is_retried, .init = setup, .fini = teardown)
{
    async_store_refuse_next(F->as, 1);
    char a[SAGA_ID_SIZE];
    start(a);
    uv_run(&F->h.loop, UV_RUN_NOWAIT); /* the check handle submits */
    cr_expect_eq(stats().refused, 1);
    cr_expect_eq(F->started, 0);
    /* The retry timer (1 ms) submits it again. */
    for (int i = 0; i < 1000 && F->h.done_count < 1; i++)
        uv_run(&F->h.loop, UV_RUN_ONCE);
    cr_expect_eq(F->started, 1);
    cr_expect_eq(h_state(&F->h, a), SAGA_STATE_COMPLETED);
}

/* The async failure loop: every batch fails once, then goes through. */
Test(engine_async, every_batch_failing_once_still_ends_every_saga,
     .init = setup, .fini = teardown)
{
    char ids[6][SAGA_ID_SIZE];
    for (int i = 0; i < 6; i++)
        start(ids[i]);
    for (int i = 0; i < 2000 && F->h.done_count < 6; i++) {
        if (async_store_queued(F->as) == 0 &&
            stats().failed <= stats().committed)
            async_store_fail_next(F->as, 1);
        uv_run(&F->h.loop, UV_RUN_ONCE);
    }
    cr_expect_eq(F->h.done_count, 6);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(h_state(&F->h, ids[i]), SAGA_STATE_COMPLETED);
    cr_expect_gt(stats().failed, 0);
    cr_expect_eq(stats().max_queued, 1);
}

static void on_closed(void *arg)
{
    (void)arg;
    F->closed = 1;
}

Test(engine_async, close_waits_for_the_batch_in_flight, .init = setup)
{
    async_store_hold(F->as, 1);
    char a[SAGA_ID_SIZE];
    start(a);
    h_pump(&F->h);
    cr_assert_eq(async_store_queued(F->as), 1);
    saga_engine_close(F->h.e, on_closed, NULL);
    h_pump(&F->h);
    cr_expect_eq(F->closed, 0, "closed with a batch in flight");
    cr_expect_eq(async_store_queued(F->as), 1);
    cr_assert_eq(async_store_complete(F->as, SAGA_OK), 1);
    async_store_stats s = stats(); /* the store is freed with the engine */
    cr_expect_eq(s.committed, 1);
    cr_expect_eq(F->started, 1, "the committed start was not released");
    cr_expect_eq(F->h.ncalls, 0, "a closing engine invoked an action");
    for (int i = 0; i < 100 && !F->closed; i++)
        uv_run(&F->h.loop, UV_RUN_ONCE);
    cr_expect_eq(F->closed, 1);
    F->h.e = NULL;
    uv_run(&F->h.loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&F->h.loop), 0);
    free(F);
}

Test(engine_async, close_with_nothing_in_flight_submits_and_waits,
     .init = setup)
{
    char a[SAGA_ID_SIZE];
    start(a); /* staged, not yet submitted */
    async_store_hold(F->as, 1);
    saga_engine_close(F->h.e, on_closed, NULL);
    cr_assert_eq(async_store_queued(F->as), 1, "close did not submit");
    h_pump(&F->h);
    cr_expect_eq(F->closed, 0);
    cr_assert_eq(async_store_complete(F->as, SAGA_OK), 1);
    cr_expect_eq(F->started, 1);
    for (int i = 0; i < 100 && !F->closed; i++)
        uv_run(&F->h.loop, UV_RUN_ONCE);
    cr_expect_eq(F->closed, 1);
    F->h.e = NULL;
    uv_run(&F->h.loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&F->h.loop), 0);
    free(F);
}

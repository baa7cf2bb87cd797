/*
 * test_alloc_fail.c — the allocation-failure loop (issue 7, "Also"): every
 * allocation made through saga's allocator fails in turn (number 1, 2, 3,
 * ... until a run makes no failing call) over the public constructors and
 * over saga_start() plus running the sagas to their end. Each failure must
 * give SAGA_ENOMEM (or be absorbed), leak nothing and crash nothing; and
 * inside a running engine every saga must still end.
 *
 * SQLite's own allocations do not go through saga's allocator: they are
 * not failed here. libuv's neither.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include <saga/participant.h>
#include <saga/tcp.h>

#include "async_store.h"
#include "failalloc.h"
#include "harness.h"
#include "tmpdir.h"

#define MAX_RUNS 20000

/* Run @p body with allocation n failing, n = 1, 2, ... until a run sees no
 * failure; after each run nothing saga allocated may be left. */
#define ALLOC_LOOP(n, ...)                                                     \
    do {                                                                       \
        fa_install();                                                          \
        long n;                                                                \
        for (n = 1; n < MAX_RUNS; n++) {                                       \
            fa_arm(n, 0);                                                      \
            __VA_ARGS__;                                                       \
            cr_assert_eq(FA.live, 0,                                           \
                         "allocation %ld failing leaked %ld "                  \
                         "blocks",                                             \
                         n, FA.live);                                          \
            if (FA.failed == 0)                                                \
                break;                                                         \
        }                                                                      \
        cr_assert_lt(n, MAX_RUNS);                                             \
        cr_log_info("%s: %ld allocations", __func__, n - 1);                   \
    } while (0)

#define OK_OR_NOMEM(rc, n)                                                     \
    cr_assert((rc) == SAGA_OK || (rc) == SAGA_ENOMEM,                          \
              "allocation %ld failing gave %s", n, saga_err_name(rc))

static void quiet(saga_log_level l, const char *id, int step, const char *m,
                  void *a)
{
    (void)l, (void)id, (void)step, (void)m, (void)a;
}

static void ok_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                      size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

/* --- constructors --------------------------------------------------------- */

Test(alloc_fail, engine_new_with_a_memory_store)
{
    ALLOC_LOOP(n, {
        saga_engine *e = NULL;
        saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
        o.log = quiet;
        int rc = saga_engine_new(&e, NULL, NULL, &o);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK)
            saga_engine_free(e);
        else
            cr_assert_null(e);
    });
}

Test(alloc_fail, engine_new_with_a_sqlite_store)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    ALLOC_LOOP(n, {
        saga_store *s = NULL;
        int rc = saga_store_sqlite_open(&s, tmpdir_path(&td, "a.db"), NULL);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK) {
            saga_engine *e = NULL;
            saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
            o.log = quiet;
            rc = saga_engine_new(&e, s, NULL, &o);
            OK_OR_NOMEM(rc, n);
            if (rc == SAGA_OK)
                saga_engine_free(e);
            else
                saga_store_free(s);
        }
    });
    tmpdir_remove(&td);
}

Test(alloc_fail, def_new_and_add_step)
{
    ALLOC_LOOP(n, {
        saga_def *d = NULL;
        int rc = saga_def_new(&d, "order", 1);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK) {
            saga_step_options r = SAGA_STEP_OPTIONS_INIT;
            r.service = "stock";
            r.command = "reserve";
            r.comp_command = "release";
            const char *names[] = {"a", "b", "c", "d", "e", "f"};
            for (int i = 0; i < 6 && rc == SAGA_OK; i++) {
                rc = i % 2
                         ? saga_def_add_step(d, names[i], NULL, NULL, &r, NULL)
                         : saga_def_add_step(d, names[i], ok_action, ok_action,
                                             NULL, NULL);
                OK_OR_NOMEM(rc, n);
            }
            if (rc == SAGA_ENOMEM)
                cr_assert_lt(saga_def_step_count(d), 6u);
            saga_def_free(d);
        } else {
            cr_assert_null(d);
        }
    });
}

Test(alloc_fail, inmem_bus_transport_and_participant)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    ALLOC_LOOP(n, {
        saga_inmem_bus *bus = NULL;
        saga_transport *t = NULL;
        saga_store *s = NULL;
        saga_participant *p = NULL;
        int rc = saga_inmem_bus_new(&bus, &loop);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK) {
            rc = saga_transport_inmem_new(&t, bus);
            OK_OR_NOMEM(rc, n);
        }
        if (rc == SAGA_OK) {
            rc = saga_store_memory_new(&s);
            OK_OR_NOMEM(rc, n);
        }
        if (rc == SAGA_OK) {
            saga_participant_options po = SAGA_PARTICIPANT_OPTIONS_INIT;
            po.service = "stock";
            po.log = quiet;
            rc = saga_participant_new(&p, &loop, s, t, &po);
            OK_OR_NOMEM(rc, n);
            if (rc != SAGA_OK)
                cr_assert_null(p);
        }
        if (p != NULL) {
            saga_participant_close(p, NULL, NULL);
        } else {
            saga_store_free(s);
            saga_transport_free(t);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        saga_inmem_bus_free(bus);
    });
    cr_expect_eq(uv_loop_close(&loop), 0);
}

Test(alloc_fail, tcp_transport)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_tcp_peer peer = {"stock", "127.0.0.1:1"};
    ALLOC_LOOP(n, {
        saga_transport *t = NULL;
        saga_tcp_options o;
        saga_tcp_options_init(&o, SAGA_TCP_OPTIONS_VERSION);
        o.service = "orchestrator";
        o.peers = &peer;
        o.npeers = 1;
        int rc = saga_transport_tcp_new(&t, &loop, &o);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK)
            saga_transport_free(t);
        else
            cr_assert_null(t);
        uv_run(&loop, UV_RUN_DEFAULT);
    });
    cr_expect_eq(uv_loop_close(&loop), 0);
}

/* --- saga_start and running the sagas to their end ----------------------- */

static void step_timeouts(saga_engine_options *o)
{
    o->log = quiet;
    o->store_retry_ms = 10;
}

static saga_state state_of(harness *h, const char *id)
{
    /* The query allocates too: ask again if that allocation failed. */
    for (int i = 0; i < 3; i++) {
        saga_info *info;
        int rc = saga_get(h->e, id, &info);
        if (rc == SAGA_OK) {
            saga_state st = saga_info_state(info);
            saga_info_free(info);
            return st;
        }
        /* ENOTFOUND: its start is not committed yet. */
        if (rc == SAGA_ENOTFOUND)
            break;
        cr_assert(rc == SAGA_ENOMEM || rc == SAGA_ESTORE, "saga_get: %s",
                  saga_err_name(rc));
    }
    return (saga_state)0;
}

static int ended(saga_state st)
{
    return st == SAGA_STATE_COMPLETED || st == SAGA_STATE_COMPENSATED ||
           st == SAGA_STATE_FAILED;
}

/* One run with allocation @p n failing: set up, start @p nsagas sagas
 * (step 0 following @p script), run them to the end, tear down. */
static int use_async; /* run_sagas: the memory store behind async_store */

static void run_sagas(long n, const char *db, int nsagas, const char *script)
{
    harness *h = calloc(1, sizeof *h);
    cr_assert_not_null(h);
    h_init(h);
    h->script[0] = script;
    saga_store *s = NULL;
    int rc = SAGA_OK;
    if (db != NULL) {
        saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
        so.synchronous = 2; /* OFF: nothing here is about durability */
        rc = saga_store_sqlite_open(&s, db, &so);
        OK_OR_NOMEM(rc, n);
    } else if (use_async) {
        saga_store *mem = NULL;
        rc = saga_store_memory_new(&mem);
        OK_OR_NOMEM(rc, n);
        if (rc == SAGA_OK && async_store_new(&s, mem, NULL) != SAGA_OK)
            cr_assert_fail("async_store_new");
    }
    if (rc == SAGA_OK) {
        rc = h_engine(h, s, step_timeouts);
        OK_OR_NOMEM(rc, n);
        if (rc != SAGA_OK)
            saga_store_free(s);
    }
    saga_def *d = NULL;
    if (rc == SAGA_OK) {
        saga_step_options o = SAGA_STEP_OPTIONS_INIT;
        o.timeout_ms = 1000;
        d = h_def(h, "cpr", &o);
        rc = d != NULL ? saga_engine_register(h->e, d) : SAGA_ENOMEM;
        OK_OR_NOMEM(rc, n);
        if (rc != SAGA_OK)
            saga_def_free(d);
    }
    if (rc == SAGA_OK) {
        rc = saga_engine_start(h->e);
        OK_OR_NOMEM(rc, n);
    }
    char(*ids)[SAGA_ID_SIZE] = calloc((size_t)nsagas, sizeof *ids);
    int started = 0;
    for (int i = 0; rc == SAGA_OK && i < nsagas; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i % 3); /* k0 twice */
        int src = saga_start(h->e, "t", i % 2 ? NULL : key, NULL, 0,
                             ids[started], NULL, NULL);
        OK_OR_NOMEM(src, n);
        if (src == SAGA_OK)
            started++;
    }
    if (rc == SAGA_OK) {
        int all = 0;
        for (int round = 0; round < 100 && !all; round++) {
            /* A commit that failed waits for a retry timer on the real
             * clock: flush instead of waiting for it. */
            saga_engine_flush(h->e);
            h_pump(h);
            all = 1;
            for (int i = 0; i < started; i++)
                all &= ended(state_of(h, ids[i]));
            if (!all) {
                h->now += 1000;
                saga_engine_advance(h->e);
            }
        }
        for (int i = 0; i < started; i++)
            cr_assert(ended(state_of(h, ids[i])),
                      "allocation %ld failing: saga %s never ended (%s)\n%s", n,
                      ids[i], saga_state_name(state_of(h, ids[i])), h->log);
    }
    h_fini(h);
    cr_assert_eq(uv_loop_close(&h->loop), 0);
    free(ids);
    free(h);
}

Test(alloc_fail, start_and_run_to_the_end_memory_store)
{
    ALLOC_LOOP(n, run_sagas(n, NULL, 4, "o"));
}

/* More sagas than fit the release path's old stack list (64), whose first
 * step times out once: an allocation failing as a batch is released must
 * not lose a timer. */
Test(alloc_fail, many_sagas_with_timeouts_memory_store, .timeout = 240)
{
    ALLOC_LOOP(n, run_sagas(n, NULL, 70, "ho"));
}

/* The asynchronous commit (submit_batch): a batch that cannot be taken,
 * described or put back after a failure is written again later. */
Test(alloc_fail, start_and_run_to_the_end_async_store, .timeout = 240)
{
    use_async = 1;
    ALLOC_LOOP(n, run_sagas(n, NULL, 6, "ho"));
}

Test(alloc_fail, start_and_run_to_the_end_sqlite_store)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    ALLOC_LOOP(n, {
        char db[64];
        snprintf(db, sizeof db, "run%ld.db", n);
        run_sagas(n, tmpdir_path(&td, db), 4, "o");
    });
    tmpdir_remove(&td);
}

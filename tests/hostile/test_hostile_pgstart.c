/*
 * test_hostile_pgstart.c — the engine's asynchronous start on PostgreSQL
 * attacked from the public API (issue 10, redteam): with a lease, start
 * returns before the first lease is taken and saga_start() calls wait in
 * memory. Here saga_start(), saga_engine_close() and saga_engine_free() are
 * called in odd orders before that lease exists, while the server refuses
 * every connection or is silent, and from the start callbacks once it is
 * taken. Run under ASan + UBSan by the sanitizer pass (label conformance).
 *
 * The server is reached through the proxy of tests/pg (pg_proxy.h): stopped
 * (connections refused), or holding (accepted, silent). Run by
 * tests/pg/with-pg.sh (SAGA_PG_URL); each test has a schema of its own.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <libpq-fe.h>
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

#include "saga/engine.h"
#include "saga/postgres.h"

#include "../pg/pg_proxy.h"

static char g_schema[64];
static proxy g_px;
static int g_px_up;

/* The number of rows of @p sql (a count) in the test's schema, read
 * directly from the server. */
static long count_rows(const char *sql)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char q[256];
    snprintf(q, sizeof q, "SET search_path TO %s", g_schema);
    PQclear(PQexec(c, q));
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql,
                 PQerrorMessage(c));
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Callbacks that count, and some that misbehave                             */

typedef struct counts {
    int started_ok, started_err, closed, acted;
    char ids[8][SAGA_ID_SIZE];
    int existed[8];
} counts;

static counts g_n;
static saga_engine *g_e;

static void act_ok(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    g_n.acted++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void start_cb(saga_engine *e, int rc, const char *id, int existed,
                     void *arg)
{
    (void)e;
    int i = (int)(intptr_t)arg;
    if (rc == SAGA_OK)
        g_n.started_ok++;
    else
        g_n.started_err++;
    if (i >= 0 && i < 8) {
        memcpy(g_n.ids[i], id ? id : "", id ? SAGA_ID_SIZE : 1);
        g_n.existed[i] = existed;
    }
}

static void closed_cb(void *arg)
{
    (void)arg;
    g_n.closed++;
}

/* ------------------------------------------------------------------------ */
/* An engine on a store through the proxy                                    */

typedef struct rig {
    uv_loop_t loop;
    uv_timer_t ticker; /* keeps the caller's loop alive while polled */
    int own_loop;      /* the engine runs its own loop */
    saga_store *s;
    saga_engine *e;
} rig;

static void tick_cb(uv_timer_t *t) { (void)t; }

static void rig_open(rig *r, const char *tag, int own_loop)
{
    memset(r, 0, sizeof *r);
    memset(&g_n, 0, sizeof g_n);
    proxy_start(&g_px);
    g_px_up = 1;
    char url[128];
    snprintf(url, sizeof url,
             "postgresql://saga@127.0.0.1:%d/postgres?connect_timeout=2",
             g_px.port);
    snprintf(g_schema, sizeof g_schema, "hs_%s_%d", tag, (int)getpid());
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    so.connect_timeout_s = 2;
    so.lease_ms = 1000;
    so.owner_id = "hostile";
    cr_assert_eq(saga_store_postgres_open(&r->s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    r->own_loop = own_loop;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    if (!own_loop) {
        uv_loop_init(&r->loop);
        o.loop = &r->loop;
        uv_timer_init(&r->loop, &r->ticker);
        uv_timer_start(&r->ticker, tick_cb, 5, 5);
    }
    o.log_level = getenv("HS_DEBUG") ? SAGA_LOG_DEBUG : SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    cr_assert_eq(saga_engine_new(&r->e, r->s, NULL, &o), SAGA_OK);
    g_e = r->e;
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "hs", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", act_ok, NULL, &sto, r), SAGA_OK);
    cr_assert_eq(saga_engine_register(r->e, d), SAGA_OK);
}

/* The server becomes unreachable: every connection cut and new ones
 * refused (the proxy's port closed). */
static void server_gone(void)
{
    if (g_px_up)
        proxy_stop(&g_px);
    g_px_up = 0;
}

/* Run the caller's loop until @p until() holds, at most @p ms (wall). */
static void run_until(rig *r, int (*until)(void), int ms)
{
    int64_t end = proxy_now_ms() + ms;
    while (!until() && proxy_now_ms() < end)
        uv_run(&r->loop, UV_RUN_NOWAIT), usleep(1000);
}

static void rig_end(rig *r)
{
    if (!r->own_loop) {
        uv_close((uv_handle_t *)&r->ticker, NULL);
        /* whatever the engine left must close by itself (bounded) */
        int64_t end = proxy_now_ms() + 10000;
        while (uv_run(&r->loop, UV_RUN_NOWAIT) != 0 && proxy_now_ms() < end)
            usleep(1000);
        cr_assert_eq(uv_loop_close(&r->loop), 0,
                     "the engine left handles on the caller's loop");
    }
    server_gone();
}

static int is_closed(void) { return g_n.closed > 0; }

/* ------------------------------------------------------------------------ */
/* 1. The server refuses every connection from before the start             */

/* The setup of the cases below: an engine on a server that refuses every
 * connection, started, with @p n unkeyed starts accepted (start_cb gets
 * 0..n-1). */
static void start_gone(rig *r, const char *tag, int own_loop, int n)
{
    rig_open(r, tag, own_loop);
    server_gone();
    cr_assert_eq(saga_engine_start(r->e), SAGA_OK, "%s",
                 saga_engine_errmsg(r->e));
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < n; i++)
        cr_assert_eq(saga_start(r->e, "hs", NULL, NULL, 0, id, start_cb,
                                (void *)(intptr_t)i),
                     SAGA_OK, "%s", saga_engine_errmsg(r->e));
}

/* Run @p l without waiting for @p ms (lease requests fail meanwhile). */
static void spin(uv_loop_t *l, int ms)
{
    int64_t end = proxy_now_ms() + ms;
    while (proxy_now_ms() < end)
        uv_run(l, UV_RUN_NOWAIT), usleep(2000);
}

Test(hostile_pgstart, free_before_the_lease_with_the_server_gone)
{
    rig r;
    start_gone(&r, "free", 1, 4);
    cr_assert_eq(saga_engine_start(r.e), SAGA_EBUSY);
    char id[SAGA_ID_SIZE], id2[SAGA_ID_SIZE];
    /* A keyed start: nothing in memory, the store unreachable. Either it
     * is refused (ESTORE, its callback never runs) or it waits too. */
    int krc = saga_start(r.e, "hs", "k1", NULL, 0, id, start_cb, (void *)4);
    cr_assert(krc == SAGA_OK || krc == SAGA_ESTORE, "keyed start: %d", krc);
    if (krc == SAGA_OK) {
        cr_assert_eq(saga_start(r.e, "hs", "k1", NULL, 0, id2, start_cb,
                                (void *)5),
                     SAGA_OK);
        cr_assert_str_eq(id, id2, "one key, one saga while it waits");
    }
    /* Let a few lease requests fail (every 250 ms). */
    spin(saga_engine_loop(r.e), 700);
    cr_assert_eq(g_n.started_ok, 0, "nothing is durable without a lease");
    saga_engine_free(r.e);
    cr_assert_eq(g_n.started_ok, 0,
                 "a start dropped by the close is not "
                 "reported durable");
    cr_assert_eq(g_n.acted, 0, "no action without a lease");
    rig_end(&r);
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 0);
}

Test(hostile_pgstart, close_then_free_before_the_lease_with_the_server_gone)
{
    rig r;
    start_gone(&r, "clfree", 1, 1);
    char id[SAGA_ID_SIZE];
    saga_engine_close(r.e, closed_cb, NULL);
    cr_assert_eq(saga_start(r.e, "hs", NULL, NULL, 0, id, start_cb, (void *)1),
                 SAGA_ECLOSED, "a verb after close");
    saga_engine_free(r.e); /* finishes the close */
    cr_assert_eq(g_n.closed, 1, "the close callback ran once");
    cr_assert_eq(g_n.started_ok, 0);
    rig_end(&r);
}

Test(hostile_pgstart, close_on_the_callers_loop_before_the_lease)
{
    rig r;
    start_gone(&r, "clloop", 0, 3);
    /* a failed lease request or two, then the close */
    spin(&r.loop, 400);
    saga_engine_close(r.e, closed_cb, NULL);
    run_until(&r, is_closed, 10000);
    cr_assert_eq(g_n.closed, 1, "the close ended without the server");
    cr_assert_eq(g_n.started_ok, 0);
    rig_end(&r);
}

Test(hostile_pgstart, close_before_start_and_start_after_close)
{
    rig r;
    rig_open(&r, "noclose", 0);
    server_gone();
    saga_engine_close(r.e, closed_cb, NULL);
    cr_assert_eq(saga_engine_start(r.e), SAGA_ECLOSED);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r.e, "hs", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_ECLOSED);
    run_until(&r, is_closed, 10000);
    cr_assert_eq(g_n.closed, 1);
    rig_end(&r);
}

/* An application on the engine's own loop starts sagas and runs the loop
 * until they are done (saga_engine_run(SAGA_RUN_DEFAULT)), as it would on
 * SQLite, while the server is briefly unreachable: the run must not return
 * with the sagas still waiting for the lease and their callbacks never run
 * (it did: the lease timer does not keep the loop alive, and with the first
 * lease request failed nothing else did). */
Test(hostile_pgstart, run_default_returns_once_the_waiting_starts_are_done)
{
    rig r;
    rig_open(&r, "rundef", 1);
    atomic_store(&g_px.hold_ms, 700);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(r.e, "hs", NULL, NULL, 0, id, start_cb,
                                (void *)(intptr_t)i),
                     SAGA_OK);
    int64_t t0 = proxy_now_ms();
    saga_engine_run(r.e, SAGA_RUN_DEFAULT);
    cr_log_info("run returned after %lld ms", (long long)(proxy_now_ms() - t0));
    cr_assert_eq(g_n.started_ok, 3,
                 "saga_engine_run() returned with %d of 3 starts done",
                 g_n.started_ok);
    cr_assert_eq(g_n.acted, 3, "and their steps ran (%d)", g_n.acted);
    saga_engine_free(r.e);
    rig_end(&r);
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 3);
}

/* ------------------------------------------------------------------------ */
/* 2. The server silent while the first lease request is out                */

/* The close of an engine whose first lease request is lost in a silent
 * partition ends, bounded (its release cannot be sent: it has no lease). */
Test(hostile_pgstart, close_while_the_first_lease_request_is_unanswered)
{
    rig r;
    rig_open(&r, "silent", 0);
    atomic_store(&g_px.freeze, 1);
    atomic_store(&g_px.hold_ms, 4000);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r.e, "hs", NULL, NULL, 0, id, start_cb, (void *)0),
                 SAGA_OK, "%s", saga_engine_errmsg(r.e));
    spin(&r.loop, 300);
    int64_t t0 = proxy_now_ms();
    saga_engine_close(r.e, closed_cb, NULL);
    run_until(&r, is_closed, 12000);
    cr_assert_eq(g_n.closed, 1, "the close ended during the partition");
    cr_log_info("close took %lld ms, %d starts reported durable",
                (long long)(proxy_now_ms() - t0), g_n.started_ok);
    rig_end(&r);
    cr_log_info("rows %ld, owned %ld, owners %ld, state-1 %ld",
                count_rows("SELECT count(*) FROM sagas"),
                count_rows(
                    "SELECT count(*) FROM sagas WHERE owner IS NOT NULL"),
                count_rows("SELECT count(*) FROM owners"),
                count_rows("SELECT count(*) FROM sagas WHERE state = 1"));
    /* a start reported durable is in the store, and only those */
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), g_n.started_ok);
}

/* ------------------------------------------------------------------------ */
/* 3. From the start callbacks once the lease is taken                       */

static int g_mode;              /* what the first start callback does */
static int g_inner_rc, g_keyed; /* the keyed starts were accepted */
static char g_inner_id[SAGA_ID_SIZE];

static void misbehaving_cb(saga_engine *e, int rc, const char *id, int existed,
                           void *arg)
{
    start_cb(e, rc, id, existed, arg);
    if ((int)(intptr_t)arg != 0)
        return;
    switch (g_mode) {
    case 0: /* start another with a key already waiting: the same saga */
        g_inner_rc = saga_start(e, "hs", "dup", NULL, 0, g_inner_id, start_cb,
                                (void *)6);
        break;
    case 1:
        saga_engine_close(e, closed_cb, NULL);
        g_inner_rc = saga_start(e, "hs", NULL, NULL, 0, g_inner_id, start_cb,
                                (void *)6);
        break;
    case 2:
        saga_engine_free(e); /* deferred: closes now, freed later */
        break;
    }
}

/* Every start answered: the ones made before the lease and, in mode 0,
 * the keyed one made from the first callback (since the keyed start of a
 * store that looks keys up on the loop, its answer may come a turn after
 * the others). */
static int all_five(void)
{
    int want = (g_keyed ? 5 : 3) + (g_mode == 0 && g_inner_rc == SAGA_OK);
    return g_n.started_ok + g_n.started_err >= want &&
           (g_mode != 0 || g_n.acted >= 4);
}

/* Five starts wait for the lease behind a 600 ms outage (two share a key);
 * the first start callback then does g_mode's thing. */
static void from_callback(rig *r, const char *tag, int mode)
{
    rig_open(r, tag, 0);
    g_mode = mode;
    g_inner_rc = -1;
    g_keyed = 0;
    atomic_store(&g_px.hold_ms, 600);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
    cr_assert_eq(saga_engine_start(r->e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(r->e, "hs", NULL, NULL, 0, id, misbehaving_cb,
                                (void *)(intptr_t)i),
                     SAGA_OK, "%s", saga_engine_errmsg(r->e));
    /* Keyed starts need the store's answer about the key (nothing in
     * memory): during the outage they may be refused at once (ESTORE, as
     * engine.h documents) or wait with the others. */
    int krc = saga_start(r->e, "hs", "dup", NULL, 0, id, misbehaving_cb,
                         (void *)3);
    cr_assert(krc == SAGA_OK || krc == SAGA_ESTORE, "keyed start: %d", krc);
    g_keyed = krc == SAGA_OK;
    if (g_keyed) {
        char id2[SAGA_ID_SIZE];
        cr_assert_eq(saga_start(r->e, "hs", "dup", NULL, 0, id2, misbehaving_cb,
                                (void *)4),
                     SAGA_OK, "%s", saga_engine_errmsg(r->e));
        cr_assert_str_eq(id, id2, "one key, one saga while it waits");
    }
}

Test(hostile_pgstart, a_start_from_a_start_callback_after_the_lease)
{
    rig r;
    from_callback(&r, "cbstart", 0);
    run_until(&r, all_five, 15000);
    int want = g_keyed ? 5 : 3;
    cr_assert_eq(g_n.started_ok, want + (g_inner_rc == SAGA_OK),
                 "every waiting start became durable (%d ok, %d failed)",
                 g_n.started_ok, g_n.started_err);
    cr_assert_eq(g_inner_rc, SAGA_OK, "a keyed start from a start callback");
    if (g_keyed) {
        cr_assert_str_eq(g_n.ids[3], g_n.ids[4], "one key, one saga");
        cr_assert_str_eq(g_inner_id, g_n.ids[3],
                         "the key again, from a callback");
        cr_assert(g_n.existed[4] && !g_n.existed[3]);
    }
    saga_engine_close(r.e, closed_cb, NULL);
    run_until(&r, is_closed, 10000);
    rig_end(&r);
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 4,
                 "three sagas and one keyed one");
    cr_assert_eq(count_rows("SELECT count(*) FROM idem"), 1);
}

Test(hostile_pgstart, close_from_the_first_start_callback)
{
    rig r;
    from_callback(&r, "cbclose", 1);
    run_until(&r, is_closed, 15000);
    cr_assert_eq(g_n.closed, 1);
    cr_assert_eq(g_inner_rc, SAGA_ECLOSED, "a start after the close");
    rig_end(&r);
    /* whatever was reported durable is in the store */
    cr_assert_geq(count_rows("SELECT count(*) FROM sagas"),
                  g_n.started_ok > 0 ? 1 : 0);
}

static int freed_or_done(void) { return g_n.started_ok + g_n.started_err > 0; }

Test(hostile_pgstart, free_from_the_first_start_callback)
{
    rig r;
    from_callback(&r, "cbfree", 2);
    run_until(&r, freed_or_done, 15000);
    cr_assert_geq(g_n.started_ok, 1);
    rig_end(&r); /* runs the loop until the deferred free is done */
}

/*
 * test_hostile_pgkeys.c — keyed saga_start() on PostgreSQL attacked from
 * the public API (issue 10, redteam). On a store that looks keys up on
 * the loop, a key not in memory is not looked up before saga_start()
 * returns: the saga is staged, the commit's unique index refuses a key
 * the store holds, and the start callback then names the holder
 * (docs/api/engine.md, saga_start: "take the id from cb"). Here: the same
 * stored key many times in one batch, with new keys and unkeyed starts
 * beside it; a key another engine runs; the key again while its batch is
 * in flight; close and free while the key is being looked up; and the
 * same key, close and free from the callbacks that answer it. Every start
 * is answered once, with one id per key; nothing is left in the store for
 * a start that was not reported durable. Run under ASan + UBSan by the
 * sanitizer pass (label conformance).
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL); each test has a schema of its
 * own, reached through the proxy of tests/pg (pg_proxy.h) where the test
 * slows the server down.
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
/* Starts and their answers                                                  */

#define NSTART 32

typedef struct answer {
    int calls, rc, existed;
    char id[SAGA_ID_SIZE];
} answer;

static answer g_ans[NSTART];
static int g_acted, g_closed;
static uv_loop_t g_loop;
static uv_timer_t g_ticker;

/* What a start callback does besides recording its answer (g_hook). */
typedef void (*hook_fn)(saga_engine *e, int i);
static hook_fn g_hook;

static void act_ok(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    g_acted++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

/* Never answers: the saga stays RUNNING (in its engine's memory). */
static void act_hang(saga_engine *e, const saga_step_ref *ref, const void *d,
                     size_t l, void *arg)
{
    (void)e, (void)ref, (void)d, (void)l, (void)arg;
    g_acted++;
}

static void start_cb(saga_engine *e, int rc, const char *id, int existed,
                     void *arg)
{
    int i = (int)(intptr_t)arg;
    cr_assert(i >= 0 && i < NSTART);
    answer *a = &g_ans[i];
    a->calls++;
    a->rc = rc;
    a->existed = existed;
    snprintf(a->id, sizeof a->id, "%s", rc == SAGA_OK && id ? id : "");
    if (g_hook != NULL)
        g_hook(e, i);
}

static void closed_cb(void *arg)
{
    (void)arg;
    g_closed++;
}

static void tick_cb(uv_timer_t *t) { (void)t; }

static void loop_open(void)
{
    memset(g_ans, 0, sizeof g_ans);
    g_acted = g_closed = 0;
    g_hook = NULL;
    cr_assert_eq(uv_loop_init(&g_loop), 0);
    uv_timer_init(&g_loop, &g_ticker);
    uv_timer_start(&g_ticker, tick_cb, 5, 5);
}

static void loop_end(void)
{
    uv_close((uv_handle_t *)&g_ticker, NULL);
    int64_t end = proxy_now_ms() + 10000;
    while (uv_run(&g_loop, UV_RUN_NOWAIT) != 0 && proxy_now_ms() < end)
        usleep(1000);
    cr_assert_eq(uv_loop_close(&g_loop), 0,
                 "an engine left handles on the caller's loop");
    if (g_px_up)
        proxy_stop(&g_px);
    g_px_up = 0;
}

/* An engine on the caller's loop, on the test's schema: directly, or
 * through the proxy. Definition "hs": one step, act (act_ok or
 * act_hang). */
static saga_engine *engine(const char *owner, int via_proxy, saga_action_fn act)
{
    char url[512];
    if (via_proxy) {
        if (!g_px_up)
            proxy_start(&g_px);
        g_px_up = 1;
        snprintf(url, sizeof url,
                 "postgresql://saga@127.0.0.1:%d/postgres?connect_timeout=2",
                 g_px.port);
    } else {
        snprintf(url, sizeof url, "%s", getenv("SAGA_PG_URL"));
    }
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    so.connect_timeout_s = 2;
    so.lease_ms = 2000;
    so.owner_id = owner;
    saga_store *s;
    cr_assert_eq(saga_store_postgres_open(&s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &g_loop;
    o.log_level = getenv("HS_DEBUG") ? SAGA_LOG_DEBUG : SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    saga_engine *e;
    cr_assert_eq(saga_engine_new(&e, s, NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "hs", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", act, NULL, &sto, NULL), SAGA_OK);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK, "%s", saga_engine_errmsg(e));
    return e;
}

static void schema(const char *tag)
{
    snprintf(g_schema, sizeof g_schema, "hk_%s_%d", tag, (int)getpid());
}

static int g_want; /* answers wanted by answered() */

static int answered(void)
{
    int n = 0;
    for (int i = 0; i < NSTART; i++)
        n += g_ans[i].calls > 0;
    return n >= g_want;
}

static int is_closed(void) { return g_closed > 0; }

static void run_until(int (*until)(void), int ms)
{
    int64_t end = proxy_now_ms() + ms;
    while (!until() && proxy_now_ms() < end)
        uv_run(&g_loop, UV_RUN_NOWAIT), usleep(1000);
}

static void run_for(int ms)
{
    int64_t end = proxy_now_ms() + ms;
    while (proxy_now_ms() < end)
        uv_run(&g_loop, UV_RUN_NOWAIT), usleep(1000);
}

static void start(saga_engine *e, const char *key, int i)
{
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "hs", key, NULL, 0, id, start_cb,
                            (void *)(intptr_t)i),
                 SAGA_OK, "start %d (%s): %s", i, key ? key : "-",
                 saga_engine_errmsg(e));
}

static void close_engine(saga_engine *e)
{
    saga_engine_close(e, closed_cb, NULL);
    run_until(is_closed, 10000);
    cr_assert_eq(g_closed, 1, "the close ended (and freed the engine)");
    g_closed = 0;
}

/* A saga with key @p key started, durable and ended on @p e: its id. */
static void ended_holder(saga_engine *e, const char *key,
                         char out[SAGA_ID_SIZE])
{
    g_want = 1;
    start(e, key, NSTART - 1);
    run_until(answered, 15000);
    cr_assert_eq(g_ans[NSTART - 1].rc, SAGA_OK);
    int64_t end = proxy_now_ms() + 15000;
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    do {
        uv_run(&g_loop, UV_RUN_NOWAIT), usleep(1000);
        cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    } while (st.active > 0 && proxy_now_ms() < end);
    cr_assert_eq(st.active, 0, "the holder ended");
    memcpy(out, g_ans[NSTART - 1].id, SAGA_ID_SIZE);
    memset(&g_ans[NSTART - 1], 0, sizeof g_ans[0]);
}

/* ------------------------------------------------------------------------ */
/* 1. The same key many times in one batch                                   */

/* Eight starts of a key that an ended saga holds in the store (not in
 * memory), with two starts of a new key and two unkeyed ones in the same
 * loop turn: the eight all name the holder (existed), the new key makes
 * one saga, the unkeyed ones two, and the refusal of the first key fails
 * none of the others. */
Test(hostile_pgkeys, a_stored_key_many_times_in_one_batch, .timeout = 120)
{
    schema("many");
    loop_open();
    saga_engine *e = engine("a", 0, act_ok);
    char holder[SAGA_ID_SIZE];
    ended_holder(e, "k", holder);
    for (int i = 0; i < 4; i++)
        start(e, "k", i);
    start(e, NULL, 4);
    start(e, "k2", 5);
    for (int i = 6; i < 10; i++)
        start(e, "k", i);
    start(e, "k2", 10);
    start(e, NULL, 11);
    g_want = 12;
    run_until(answered, 20000);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(g_ans[i].calls, 1, "start %d answered %d times", i,
                     g_ans[i].calls);
    for (int i = 0; i < 12; i++) {
        if (i == 4 || i == 5 || i == 10 || i == 11)
            continue;
        cr_assert_eq(g_ans[i].rc, SAGA_OK, "start %d: %d", i, g_ans[i].rc);
        cr_assert_str_eq(g_ans[i].id, holder, "start %d named %s, not %s", i,
                         g_ans[i].id, holder);
        cr_assert(g_ans[i].existed, "start %d: existed", i);
    }
    cr_assert_eq(g_ans[5].rc, SAGA_OK);
    cr_assert_str_eq(g_ans[5].id, g_ans[10].id, "one new key, one saga");
    cr_assert_eq(g_ans[4].rc, SAGA_OK);
    cr_assert_eq(g_ans[11].rc, SAGA_OK);
    cr_assert_str_neq(g_ans[4].id, g_ans[11].id);
    run_for(200);
    close_engine(e);
    loop_end();
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 4,
                 "the holder, k2's saga and two unkeyed");
    cr_assert_eq(count_rows("SELECT count(*) FROM idem"), 2);
}

/* A key that a saga of another engine holds (running there): six starts
 * in one batch of the second engine all name it. */
Test(hostile_pgkeys, a_key_another_engine_runs, .timeout = 120)
{
    schema("other");
    loop_open();
    saga_engine *e1 = engine("a", 0, act_hang);
    g_want = 1;
    start(e1, "shared", 0);
    run_until(answered, 15000);
    cr_assert_eq(g_ans[0].rc, SAGA_OK);
    saga_engine *e2 = engine("b", 0, act_hang);
    for (int i = 1; i <= 6; i++)
        start(e2, "shared", i);
    start(e2, NULL, 7);
    g_want = 8;
    run_until(answered, 20000);
    for (int i = 1; i <= 6; i++) {
        cr_assert_eq(g_ans[i].calls, 1, "start %d: %d calls", i,
                     g_ans[i].calls);
        cr_assert_eq(g_ans[i].rc, SAGA_OK);
        cr_assert_str_eq(g_ans[i].id, g_ans[0].id, "start %d", i);
        cr_assert(g_ans[i].existed);
    }
    cr_assert_eq(g_ans[7].rc, SAGA_OK, "the unkeyed start of the batch");
    close_engine(e2);
    close_engine(e1);
    loop_end();
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 2);
}

/* Two engines start the same new keys in the same loop turns, five
 * rounds: each key one saga, both engines' callbacks name it. */
Test(hostile_pgkeys, two_engines_race_for_new_keys, .timeout = 120)
{
    schema("race");
    loop_open();
    saga_engine *e1 = engine("a", 0, act_ok);
    saga_engine *e2 = engine("b", 0, act_ok);
    char key[16];
    for (int r = 0; r < 5; r++) {
        snprintf(key, sizeof key, "race%d", r);
        start(e1, key, 3 * r);
        start(e2, key, 3 * r + 1);
        start(r % 2 ? e1 : e2, key, 3 * r + 2);
    }
    g_want = 15;
    run_until(answered, 30000);
    for (int r = 0; r < 5; r++) {
        int existed = 0;
        for (int j = 0; j < 3; j++) {
            answer *a = &g_ans[3 * r + j];
            cr_assert_eq(a->calls, 1, "round %d start %d: %d calls", r, j,
                         a->calls);
            cr_assert_eq(a->rc, SAGA_OK);
            cr_assert_str_eq(a->id, g_ans[3 * r].id, "round %d start %d", r, j);
            existed += a->existed;
        }
        cr_assert_eq(existed, 2, "round %d: one start made the saga", r);
    }
    run_for(200);
    close_engine(e2);
    close_engine(e1);
    loop_end();
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 5);
    cr_assert_eq(count_rows("SELECT count(*) FROM idem"), 5);
}

/* The key again while the batch that carries it is in flight (a slow
 * server), and again after its refusal while its holder is looked up. */
Test(hostile_pgkeys, the_key_again_while_its_batch_is_in_flight, .timeout = 120)
{
    schema("flight");
    loop_open();
    saga_engine *e = engine("a", 1, act_ok);
    char holder[SAGA_ID_SIZE];
    ended_holder(e, "k", holder);
    atomic_store(&g_px.delay_ms, 150);
    int n = 0;
    for (int round = 0; round < 6; round++) {
        start(e, "k", n++);
        if (round == 2)
            start(e, "k3", n++);
        run_for(60); /* the batch goes out, is refused, is looked up */
    }
    g_want = n;
    run_until(answered, 30000);
    atomic_store(&g_px.delay_ms, 0);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(g_ans[i].calls, 1, "start %d: %d calls", i,
                     g_ans[i].calls);
        cr_assert_eq(g_ans[i].rc, SAGA_OK, "start %d: %d", i, g_ans[i].rc);
        if (i == 3)
            continue;
        cr_assert_str_eq(g_ans[i].id, holder, "start %d named %s", i,
                         g_ans[i].id);
    }
    close_engine(e);
    loop_end();
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 2);
    cr_assert_eq(count_rows("SELECT count(*) FROM idem"), 2);
}

/* ------------------------------------------------------------------------ */
/* 2. Close and free while a key is looked up                                */

static void during_lookup(const char *tag, int how)
{
    schema(tag);
    loop_open();
    saga_engine *e = engine("a", 1, act_ok);
    char holder[SAGA_ID_SIZE];
    ended_holder(e, "k", holder);
    /* Each answer 200 ms late: the batch is refused at ~200 ms, the key's
     * lookup answered at ~400 ms, its holder read at ~600 ms. */
    atomic_store(&g_px.delay_ms, 200);
    for (int i = 0; i < 3; i++)
        start(e, "k", i);
    start(e, NULL, 3);
    run_for(how == 0 ? 300 : 500);
    if (how == 2) {
        saga_engine_free(e);
        e = NULL;
    } else {
        saga_engine_close(e, closed_cb, NULL);
        cr_assert_eq(saga_start(e, "hs", "k", NULL, 0, (char[SAGA_ID_SIZE]){0},
                                start_cb, (void *)4),
                     SAGA_ECLOSED);
        run_until(is_closed, 15000);
        cr_assert_eq(g_closed, 1, "the close ended (and freed the engine)");
    }
    atomic_store(&g_px.delay_ms, 0);
    loop_end();
    for (int i = 0; i < 4; i++)
        cr_assert_leq(g_ans[i].calls, 1, "start %d answered %d times", i,
                      g_ans[i].calls);
    for (int i = 0; i < 3; i++)
        if (g_ans[i].calls && g_ans[i].rc == SAGA_OK)
            cr_assert_str_eq(g_ans[i].id, holder);
    cr_assert_eq(g_ans[4].calls, 0, "a start refused at once is not called");
    /* What was reported durable is in the store, and nothing else. */
    long want = 1 + (g_ans[3].calls && g_ans[3].rc == SAGA_OK);
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), want);
    cr_assert_eq(count_rows("SELECT count(*) FROM idem"), 1);
}

Test(hostile_pgkeys, close_while_the_refused_batch_is_answered, .timeout = 120)
{
    during_lookup("clref", 0);
}

Test(hostile_pgkeys, close_while_the_key_is_looked_up, .timeout = 120)
{
    during_lookup("cllook", 1);
}

Test(hostile_pgkeys, free_while_the_key_is_looked_up, .timeout = 120)
{
    during_lookup("frlook", 2);
}

/* ------------------------------------------------------------------------ */
/* 3. From the callbacks that answer a stored key                            */

static saga_engine *g_e;
static int g_inner_rc = -1;

/* The first answer starts the key again; the second closes the engine;
 * the third frees it (deferred until the close ends). */
static void key_hook(saga_engine *e, int i)
{
    char id[SAGA_ID_SIZE];
    if (i == 0)
        g_inner_rc = saga_start(e, "hs", "k", NULL, 0, id, start_cb,
                                (void *)(intptr_t)20);
    else if (i == 1)
        saga_engine_close(e, closed_cb, NULL);
    else if (i == 2)
        saga_engine_free(e);
}

Test(hostile_pgkeys, the_key_close_and_free_from_its_answers, .timeout = 120)
{
    schema("cbs");
    loop_open();
    g_e = engine("a", 0, act_ok);
    char holder[SAGA_ID_SIZE];
    ended_holder(g_e, "k", holder);
    g_hook = key_hook;
    for (int i = 0; i < 4; i++)
        start(g_e, "k", i);
    g_want = 3;
    run_until(answered, 20000);
    run_until(is_closed, 15000);
    loop_end();
    cr_assert_eq(g_ans[0].calls, 1);
    cr_assert_str_eq(g_ans[0].id, holder);
    cr_assert(g_inner_rc == SAGA_OK || g_inner_rc == SAGA_ECLOSED,
              "the key again from its answer: %d", g_inner_rc);
    for (int i = 0; i < NSTART; i++) {
        cr_assert_leq(g_ans[i].calls, 1, "start %d answered %d times", i,
                      g_ans[i].calls);
        if (g_ans[i].calls && g_ans[i].rc == SAGA_OK)
            cr_assert_str_eq(g_ans[i].id, holder, "start %d", i);
    }
    cr_assert_eq(g_closed, 1);
    cr_assert_eq(count_rows("SELECT count(*) FROM sagas"), 1);
}

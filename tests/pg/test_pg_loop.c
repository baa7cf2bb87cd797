/*
 * test_pg_loop.c — the engine's rare PostgreSQL round trips never stop its
 * loop (issue 10): the first lease and claim at saga_engine_start(), the
 * own_check after a fenced commit, the release of the lease at close, the
 * lookup of an idempotency key another engine took, and the saga_get of a
 * saga_on_done() waiter whose saga moved. Each test makes the server
 * silent (a partition: the open connections carry nothing, no reset) at the
 * moment the engine sends that request, through a slot hook on the store,
 * and counts the loop's 5 ms ticks during the 1.5 s outage: a loop blocked
 * in a synchronous slot gets none (before store interface version 8 it
 * did just that).
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL). Each test has a schema of its
 * own.
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

#include "saga/admin.h"
#include "saga/engine.h"
#include "saga/postgres.h"

#include "pg_outage.h"

static char g_schema[64];

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path TO %s", g_schema);
    PQclear(PQexec(c, sql));
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK ||
                  PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* ------------------------------------------------------------------------ */
/* Slot hooks: the first call of a hooked slot once armed starts the silent
 * partition (and waits until the proxy holds), then runs the store's own
 * slot. Both the synchronous slot and its version-8 (or 6) submit form are
 * hooked, so the same test runs against either engine.                     */

static saga_store g_orig; /* the store's slots before hooking */

static int h_own_renew(saga_store *s, int fresh, uint32_t *out)
{
    pg_partition();
    return g_orig.own_renew(s, fresh, out);
}
static int h_own_renew_submit(saga_store *s, int fresh, saga_own_renewed_cb d,
                              void *a)
{
    pg_partition();
    return g_orig.own_renew_submit(s, fresh, d, a);
}
static int h_own_check(saga_store *s, const char *const *ids, size_t n,
                       unsigned char *lost)
{
    pg_partition();
    return g_orig.own_check(s, ids, n, lost);
}
static int h_own_check_submit(saga_store *s, const char *const *ids, size_t n,
                              saga_own_checked_cb d, void *a)
{
    pg_partition();
    return g_orig.own_check_submit(s, ids, n, d, a);
}
static int h_own_release(saga_store *s)
{
    pg_partition();
    return g_orig.own_release(s);
}
static int h_own_release_submit(saga_store *s, saga_store_done_cb d, void *a)
{
    pg_partition();
    return g_orig.own_release_submit(s, d, a);
}
static int h_idem_get(saga_store *s, const char *key, char out[SAGA_ID_SIZE])
{
    pg_partition();
    return g_orig.idem_get(s, key, out);
}
static int h_idem_get_submit(saga_store *s, const char *key, saga_idem_got_cb d,
                             void *a)
{
    pg_partition();
    return g_orig.idem_get_submit(s, key, d, a);
}
static int h_saga_get(saga_store *s, const char *id, saga_record_cb cb,
                      void *arg)
{
    pg_partition();
    return g_orig.saga_get(s, id, cb, arg);
}
static int h_saga_get_submit(saga_store *s, const char *id,
                             saga_record_got_cb d, void *a)
{
    pg_partition();
    return g_orig.saga_get_submit(s, id, d, a);
}

static int h_purge(saga_store *s, int64_t before, uint64_t *out)
{
    pg_partition();
    return g_orig.purge(s, before, out);
}
static int h_purge_submit(saga_store *s, int64_t before, saga_purged_cb d,
                          void *a)
{
    pg_partition();
    return g_orig.purge_submit(s, before, d, a);
}

/* Key-value writes (store version 13): the synchronous path's first
 * calls (begin, kv_get), and a batch of key-value writes only (the other
 * batches pass). */
static int h_begin(saga_store *s)
{
    pg_partition();
    return g_orig.begin(s);
}
static int h_kv_get(saga_store *s, const char *key, saga_blob_cb cb, void *a)
{
    pg_partition();
    return g_orig.kv_get(s, key, cb, a);
}
static int h_submit_batch(saga_store *s, const saga_batch_writes *w,
                          saga_store_done_cb d, void *a)
{
    if (w->nkv > 0)
        pg_partition();
    return g_orig.submit_batch(s, w, d, a);
}

enum hook { H_RENEW, H_CHECK, H_RELEASE, H_IDEM, H_GET, H_PURGE, H_KV };

/* The synchronous slot and, when the store has it, its submit form. */
#define HOOK(sync, sub)                                                        \
    do {                                                                       \
        s->sync = h_##sync;                                                    \
        if (s->sub != NULL)                                                    \
            s->sub = h_##sub;                                                  \
    } while (0)

static void hook(saga_store *s, enum hook which)
{
    g_orig = *s;
    switch (which) {
    case H_RENEW:
        HOOK(own_renew, own_renew_submit);
        break;
    case H_CHECK:
        HOOK(own_check, own_check_submit);
        break;
    case H_RELEASE:
        HOOK(own_release, own_release_submit);
        break;
    case H_IDEM:
        HOOK(idem_get, idem_get_submit);
        break;
    case H_GET:
        HOOK(saga_get, saga_get_submit);
        break;
    case H_PURGE:
        HOOK(purge, purge_submit);
        break;
    case H_KV:
        s->begin = h_begin;
        s->kv_get = h_kv_get;
        s->submit_batch = h_submit_batch;
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* An engine on a store through the proxy, and a 5 ms ticker                */

typedef struct rig {
    uv_loop_t loop;
    saga_store *s;
    saga_engine *e;
    ticker k;
    int nheld;
    saga_step_ref held[16];
    int rc; /* a trigger's result */
} rig;

static void act_ok(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void act_hold(saga_engine *e, const saga_step_ref *ref, const void *d,
                     size_t l, void *arg)
{
    (void)e, (void)d, (void)l;
    rig *r = arg;
    if (r->nheld < 16)
        r->held[r->nheld++] = *ref;
}

static uint64_t g_retention_ms;
static uint32_t g_lease_ms; /* 0: 1000 */

static void rig_open(rig *r, const char *tag, int holding, enum hook which)
{
    memset(r, 0, sizeof *r);
    pg_outage_proxy_start();
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             g_px.port);
    snprintf(g_schema, sizeof g_schema, "l_%s_%d", tag, (int)getpid());
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    so.connect_timeout_s = 5; /* longer than the outage */
    so.lease_ms = g_lease_ms ? g_lease_ms : 1000;
    so.owner_id = "loop";
    cr_assert_eq(saga_store_postgres_open(&r->s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    hook(r->s, which);
    uv_loop_init(&r->loop);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &r->loop;
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    o.retention_ms = g_retention_ms; /* 0: the default */
    cr_assert_eq(saga_engine_new(&r->e, r->s, NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "own", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", holding ? act_hold : act_ok, NULL,
                                   &sto, r),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(r->e, d), SAGA_OK);
    ticker_start(&r->k, &r->loop);
}

static int active(saga_engine *e)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    return (int)st.active;
}

/* The rig's form of pg_outage() (pg_outage.h). */
static void (*g_trigger)(rig *r);
static int (*g_until)(rig *r);
static void rig_trigger(void *arg)
{
    if (g_trigger != NULL)
        g_trigger(arg);
}
static int rig_until(void *arg) { return g_until(arg); }

static void run_until(rig *r, int (*until)(rig *r))
{
    g_until = until;
    pg_run_until(&r->loop, &r->k, rig_until, r);
}

static void outage(rig *r, void (*trigger)(rig *r), int (*until)(rig *r))
{
    g_trigger = trigger;
    g_until = until;
    pg_outage(&r->loop, &r->k, rig_trigger, rig_until, r);
}

static void rig_close(rig *r)
{
    ticker_stop(&r->k);
    if (r->e != NULL)
        saga_engine_free(r->e);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&r->loop), 0);
    proxy_stop(&g_px);
}

static int none_active(rig *r) { return active(r->e) == 0; }

/* ------------------------------------------------------------------------ */
/* 1. The first lease and claim at saga_engine_start()                      */

static int started_all;
static void start_cb(saga_engine *e, int rc, const char *id, int existed,
                     void *arg)
{
    (void)e, (void)id, (void)existed, (void)arg;
    if (rc == SAGA_OK)
        started_all++;
}
static int all_started(rig *r) { return started_all == 5 && none_active(r); }

/* The server goes silent as the lease request goes out: start returns at
 * once, and sagas started meanwhile wait for the lease. */
static void start_five(rig *r)
{
    r->rc = saga_engine_start(r->e);
    for (int i = 0; r->rc == SAGA_OK && i < 5; i++) {
        char id[SAGA_ID_SIZE];
        cr_assert_eq(saga_start(r->e, "own", NULL, NULL, 0, id, start_cb, NULL),
                     SAGA_OK, "%s", saga_engine_errmsg(r->e));
    }
}

Test(pg_loop, the_first_lease_at_start_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "start", 0, H_RENEW);
    started_all = 0;
    outage(&r, start_five, all_started);
    cr_assert_eq(r.rc, SAGA_OK, "start: %s", saga_engine_errmsg(r.e));
    cr_assert_eq(started_all, 5, "the sagas started during the outage ran");
    cr_assert_eq(active(r.e), 0);
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 2. own_check after a fenced commit                                       */

static int one_left(rig *r) { return active(r->e) == 2; }

static void complete_first(rig *r)
{
    cr_assert_eq(saga_step_complete(r->e, &r->held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
}

Test(pg_loop, the_check_after_a_fenced_commit_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "check", 1, H_CHECK);
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    char id[3][SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(r.e, "own", NULL, NULL, 0, id[i], NULL, NULL),
                     SAGA_OK);
    for (int i = 0; i < 300 && r.nheld < 3; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(r.nheld, 3);
    /* Another (live) owner takes the first saga behind the engine's back:
     * the engine's next write of it is fenced. */
    PGconn *c = admin();
    exec_ok(c, "INSERT INTO owners VALUES ('thief', 7, now_ms() + 600000)");
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE sagas SET owner = 'thief', epoch = 7 WHERE id = '%s'",
             r.held[0].saga_id);
    exec_ok(c, sql);
    PQfinish(c);
    outage(&r, complete_first, one_left);
    cr_assert_eq(active(r.e), 2, "the fenced saga left the engine");
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 3. The release of the lease at close                                     */

static int closed;
static void close_cb(void *arg)
{
    (void)arg;
    closed = 1;
}
static int is_closed(rig *r)
{
    (void)r;
    return closed;
}
static void close_engine(rig *r) { saga_engine_close(r->e, close_cb, NULL); }

Test(pg_loop, the_release_at_close_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "release", 0, H_RELEASE);
    closed = 0;
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r.e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    /* The lease is taken once a saga ran through. */
    for (int i = 0; i < 300 && active(r.e) > 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(active(r.e), 0);
    outage(&r, close_engine, is_closed);
    cr_assert_eq(closed, 1, "the close ended (without the release's answer)");
    r.e = NULL; /* closed and freed */
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 4a. A key another engine took between saga_start() and the commit       */

static char answered_id[SAGA_ID_SIZE];
static int answered_existed;
static void key_cb(saga_engine *e, int rc, const char *id, int existed,
                   void *arg)
{
    (void)e, (void)arg;
    if (rc == SAGA_OK) {
        snprintf(answered_id, sizeof answered_id, "%s", id);
        answered_existed = existed;
    }
}
static int key_answered(rig *r)
{
    (void)r;
    return answered_id[0] != '\0';
}

Test(pg_loop, a_key_taken_by_another_engine_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "key", 0, H_IDEM);
    answered_id[0] = '\0';
    answered_existed = 0;
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    /* The lease first (the start's sagas commit once it is taken). */
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r.e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    for (int i = 0; i < 300 && active(r.e) > 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(saga_start(r.e, "own", "k1", NULL, 0, id, key_cb, NULL),
                 SAGA_OK);
    /* Another engine commits the key before this one's batch does. */
    PGconn *c = admin();
    exec_ok(c, "INSERT INTO idem VALUES ('k1', 'the-other-saga', 0)");
    PQfinish(c);
    outage(&r, NULL, key_answered);
    cr_assert_str_eq(answered_id, "the-other-saga");
    cr_assert_eq(answered_existed, 1);
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 4b. A saga_on_done() waiter of a saga another engine owns                */

static int waited_calls;
static saga_state waited_st;
static void waited_cb(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e, (void)id, (void)arg;
    waited_calls++;
    waited_st = st;
}
static int waiter_called(rig *r)
{
    (void)r;
    return waited_calls > 0;
}

static int partition_over;
static void end_saga_after_outage(uv_timer_t *t)
{
    /* Once the outage ended, the other engine ends the saga. */
    if (atomic_load(&g_px.outages) == 0 || partition_over)
        return;
    partition_over = 1;
    PGconn *c = admin();
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE sagas SET state = %d WHERE id = '%s'",
             (int)SAGA_STATE_COMPLETED, (const char *)t->data);
    exec_ok(c, sql);
    PQfinish(c);
}

Test(pg_loop, a_waiter_of_a_moved_saga_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "moved", 1, H_GET);
    waited_calls = 0;
    partition_over = 0;
    cr_assert_eq(saga_engine_start(r.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r.e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    for (int i = 0; i < 300 && r.nheld < 1; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(r.nheld, 1);
    /* The saga moves to a live owner; the engine learns it when its write
     * is fenced, drops the saga, and its waiter asks the store. */
    PGconn *c = admin();
    exec_ok(c, "INSERT INTO owners VALUES ('thief', 7, now_ms() + 600000)");
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE sagas SET owner = 'thief', epoch = 7 WHERE id = '%s'", id);
    exec_ok(c, sql);
    PQfinish(c);
    cr_assert_eq(saga_on_done(r.e, id, waited_cb, NULL), SAGA_OK);
    cr_assert_eq(saga_step_complete(r.e, &r.held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    for (int i = 0; i < 600 && active(r.e) > 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(active(r.e), 0, "the fenced saga left the engine");
    uv_timer_t ender;
    uv_timer_init(&r.loop, &ender);
    ender.data = id;
    uv_timer_start(&ender, end_saga_after_outage, 5, 5);
    outage(&r, NULL, waiter_called); /* the next lease tick's saga_get */
    cr_assert_eq(waited_calls, 1);
    cr_assert_eq(waited_st, SAGA_STATE_COMPLETED);
    uv_close((uv_handle_t *)&ender, NULL);
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 5. A keyed start whose key is not in memory (store interface version 8:
 *    no lookup before saga_start() returns; the commit's unique key
 *    decides, and the lookup of a key it refused goes out on the loop)    */

typedef struct keyed {
    int calls, existed, status;
    char id[SAGA_ID_SIZE];
} keyed;

static keyed g_first, g_again, g_fresh;

static void keyed_cb(saga_engine *e, int rc, const char *id, int existed,
                     void *arg)
{
    (void)e;
    keyed *k = arg;
    k->calls++;
    k->status = rc;
    k->existed = existed;
    snprintf(k->id, sizeof k->id, "%s", id);
}

/* A saga with key "k-old" runs to its end and leaves memory. */
static void run_keyed_saga(rig *r)
{
    memset(&g_first, 0, sizeof g_first);
    memset(&g_again, 0, sizeof g_again);
    memset(&g_fresh, 0, sizeof g_fresh);
    cr_assert_eq(saga_engine_start(r->e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(r->e, "own", "k-old", NULL, 0, id, keyed_cb,
                            &g_first),
                 SAGA_OK);
    for (int i = 0; i < 600 && (g_first.calls == 0 || active(r->e) > 0); i++)
        uv_run(&r->loop, UV_RUN_ONCE);
    cr_assert_eq(g_first.calls, 1);
    cr_assert_eq(g_first.existed, 0);
    cr_assert_str_eq(g_first.id, id);
    cr_assert_eq(active(r->e), 0, "the saga ended and left memory");
}

static void start_old_key(rig *r)
{
    char id[SAGA_ID_SIZE];
    r->rc = saga_start(r->e, "own", "k-old", NULL, 0, id, keyed_cb, &g_again);
}

static int old_key_answered(rig *r)
{
    (void)r;
    return g_again.calls > 0;
}

static long sagas_in_store(void)
{
    PGconn *c = admin();
    PGresult *res = PQexec(c, "SELECT count(*) FROM sagas");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return n;
}

Test(pg_loop, a_keyed_start_of_an_ended_saga_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "kstart", 0, H_IDEM);
    run_keyed_saga(&r);
    /* The key is in the store only: its lookup (before version 8 a
     * synchronous idem_get inside saga_start()) meets a silent server. */
    outage(&r, start_old_key, old_key_answered);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    cr_assert_eq(g_again.calls, 1);
    cr_assert_eq(g_again.status, SAGA_OK);
    cr_assert_str_eq(g_again.id, g_first.id, "the key's saga");
    cr_assert_eq(g_again.existed, 1);
    cr_assert_eq(sagas_in_store(), 1, "no second saga");
    rig_close(&r);
}

/* The connections are cut and new ones held (a server that restarts):
 * the store reconnects with backoff meanwhile. */
static void cut_server(rig *r)
{
    (void)r;
    g_partitions++;
    atomic_store(&g_px.freeze, 0);
    atomic_store(&g_px.hold_ms, 1500);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
}

static char g_fresh_out[SAGA_ID_SIZE];
static int both_answered(rig *r)
{
    (void)r;
    return g_again.calls > 0 && g_fresh.calls > 0;
}

Test(pg_loop, a_keyed_start_during_a_reconnect_gets_its_saga)
{
    rig r;
    rig_open(&r, "kreconn", 0, H_IDEM);
    run_keyed_saga(&r);
    cut_server(&r);
    /* Until the lease renewals have met the cut (the store reconnects on
     * the loop, backing off): then a synchronous lookup failed at once
     * with SAGA_ESTORE (the checkout answered 503). */
    while (r.k.held_ticks < 100 && atomic_load(&g_px.holding))
        uv_run(&r.loop, UV_RUN_ONCE);
    start_old_key(&r);
    cr_assert_eq(r.rc, SAGA_OK, "a key in the store: %s",
                 saga_engine_errmsg(r.e));
    cr_assert_eq(saga_start(r.e, "own", "k-new", NULL, 0, g_fresh_out, keyed_cb,
                            &g_fresh),
                 SAGA_OK, "a new key: %s", saga_engine_errmsg(r.e));
    run_until(&r, both_answered);
    pg_assert_ticked(&r.k);
    cr_assert_eq(g_again.status, SAGA_OK);
    cr_assert_str_eq(g_again.id, g_first.id, "the key's saga");
    cr_assert_eq(g_again.existed, 1);
    cr_assert_eq(g_fresh.status, SAGA_OK);
    cr_assert_str_eq(g_fresh.id, g_fresh_out, "the new key's saga");
    cr_assert_eq(g_fresh.existed, 0);
    for (int i = 0; i < 600 && active(r.e) > 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(sagas_in_store(), 2, "one saga per key");
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 6. saga_on_done() of a saga not in memory (an ended one): asked of the
 *    store on the loop (saga_get_submit), answered from there             */

static void wait_ended(rig *r)
{
    waited_calls = 0;
    r->rc = saga_on_done(r->e, g_first.id, waited_cb, NULL);
}

Test(pg_loop, a_waiter_of_an_ended_saga_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "ended", 0, H_GET);
    run_keyed_saga(&r);
    outage(&r, wait_ended, waiter_called);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    cr_assert_eq(waited_calls, 1);
    cr_assert_eq(waited_st, SAGA_STATE_COMPLETED);
    /* An unknown id: asked too, and its waiter is never called. */
    waited_calls = 0;
    cr_assert_eq(saga_on_done(r.e, "no-such-saga", waited_cb, NULL), SAGA_OK);
    for (int i = 0; i < 100; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(waited_calls, 0);
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 7. The housekeeping purge (store interface version 12: purge_submit)    */

static uint64_t purged(saga_engine *e)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    return st.purged;
}

static void housekeep(rig *r) { r->rc = saga_engine_housekeep(r->e); }
static int outage_over(rig *r)
{
    (void)r;
    return 1;
}

Test(pg_loop, the_housekeeping_purge_never_stops_the_loop)
{
    rig r;
    g_retention_ms = 1; /* the ended saga is past it at once */
    rig_open(&r, "purge", 0, H_PURGE);
    g_retention_ms = 0;
    run_keyed_saga(&r);
    outage(&r, housekeep, outage_over);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    /* The purge in flight was lost with the partition's connections (the
     * next pass does it): passes until the saga is gone. */
    for (int i = 0; i < 1000 && purged(r.e) == 0; i++) {
        if (i % 50 == 0)
            housekeep(&r);
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    cr_assert_eq(purged(r.e), 1);
    cr_assert_eq(sagas_in_store(), 0, "the ended saga is purged");
    rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 8. Store interface version 13: the definitions' shapes at start, a
 *    saga_get_async() snapshot, an operator action and the control queue
 *    of a saga not in memory                                              */

static long count_rows(const char *sql)
{
    PGconn *c = admin();
    PGresult *res = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return n;
}

static void engine_start(rig *r) { r->rc = saga_engine_start(r->e); }
static int shapes_recorded(rig *r)
{
    (void)r;
    /* Asked of the server (a blocking query of the test's own) only once
     * the outage is over: the loop's ticks meanwhile are what counts. */
    if (atomic_load(&g_px.holding) || atomic_load(&g_px.outages) < g_partitions)
        return 0;
    return count_rows("SELECT count(*) FROM kv WHERE key IN ('saga.defs', "
                      "'saga.def/own/1')") == 2;
}

/* Before version 13 the shapes were one synchronous transaction in
 * saga_engine_start(), which waited for the silent server. */
Test(pg_loop, the_definitions_shapes_at_start_never_stop_the_loop)
{
    rig r;
    rig_open(&r, "shapes", 0, H_KV);
    outage(&r, engine_start, shapes_recorded);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    saga_shape *sh = NULL;
    cr_assert_eq(saga_shape_load(&sh, r.s, "own", 1), SAGA_OK);
    cr_assert_eq(saga_shape_step_count(sh), 1);
    saga_shape_free(sh);
    rig_close(&r);
}

static char g_listed[256];
static int list_cb(const char *name, uint32_t version, void *arg)
{
    (void)arg;
    size_t n = strlen(g_listed);
    snprintf(g_listed + n, sizeof g_listed - n, "%s/%u ", name, version);
    return 0;
}

/* A second engine's definitions join the index written by the first (the
 * index is written expecting what was read). */
Test(pg_loop, the_shapes_index_keeps_every_engines_definitions)
{
    rig r;
    rig_open(&r, "shapes2", 0, H_KV);
    engine_start(&r);
    for (int i = 0; i < 600 && !shapes_recorded(&r); i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert(shapes_recorded(&r));
    PGconn *c = admin();
    /* As if another engine had recorded another definition meanwhile. */
    exec_ok(c, "UPDATE kv SET val = '\\x9292a36f776e0192a56f7468657201'::bytea "
               "WHERE key = 'saga.defs'");
    PQfinish(c);
    saga_engine *e2;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &r.loop;
    o.log_level = SAGA_LOG_ERROR;
    saga_store *s2;
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             g_px.port);
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    cr_assert_eq(saga_store_postgres_open(&s2, url, &so), SAGA_OK);
    cr_assert_eq(saga_engine_new(&e2, s2, NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "own", 2), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", act_ok, NULL, &sto, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(e2, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e2), SAGA_OK);
    for (int i = 0; i < 600 && count_rows("SELECT count(*) FROM kv WHERE key = "
                                          "'saga.def/own/2'") == 0;
         i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    /* The index names the other one's definition and both of ours. */
    g_listed[0] = '\0';
    cr_assert_eq(saga_shape_list(r.s, list_cb, NULL), SAGA_OK);
    cr_assert_str_eq(g_listed, "own/1 other/1 own/2 ");
    saga_engine_free(e2);
    rig_close(&r);
}

/* A saga that ran to its end here (so it left memory). */
static void run_one_saga(rig *r, char id[SAGA_ID_SIZE])
{
    cr_assert_eq(saga_engine_start(r->e), SAGA_OK);
    cr_assert_eq(saga_start(r->e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    for (int i = 0; i < 600 && active(r->e) > 0; i++)
        uv_run(&r->loop, UV_RUN_ONCE);
    cr_assert_eq(active(r->e), 0, "the saga ended and left memory");
}

static char g_id[SAGA_ID_SIZE];
static int g_info_calls, g_info_rc;
static saga_state g_info_state;
static size_t g_info_journal;
static void info_cb(saga_engine *e, int rc, saga_info *info, void *arg)
{
    (void)e, (void)arg;
    g_info_calls++;
    g_info_rc = rc;
    if (info != NULL) {
        g_info_state = saga_info_state(info);
        g_info_journal = saga_info_journal_count(info);
        cr_assert_str_eq(saga_info_id(info), g_id);
        cr_assert_str_eq(saga_info_step_name(info) ? saga_info_step_name(info)
                                                   : "one",
                         "one");
    }
    saga_info_free(info);
}
static void get_async(rig *r)
{
    g_info_calls = 0;
    r->rc = saga_get_async(r->e, g_id, info_cb, NULL);
}
static int info_answered(rig *r)
{
    (void)r;
    return g_info_calls > 0;
}

/* Its old path: saga_get(), which waited for the silent server. The
 * read in flight is lost with the partition's connections: its callback
 * says SAGA_ESTORE; asked again, it answers. */
Test(pg_loop, a_saga_get_async_never_stops_the_loop)
{
    rig r;
    rig_open(&r, "getasync", 0, H_GET);
    run_one_saga(&r, g_id);
    outage(&r, get_async, info_answered);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    cr_assert_eq(g_info_calls, 1);
    cr_assert(g_info_rc == SAGA_OK || g_info_rc == SAGA_ESTORE, "%d",
              g_info_rc);
    get_async(&r);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    for (int i = 0; i < 600 && g_info_calls == 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(g_info_calls, 1);
    cr_assert_eq(g_info_rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    cr_assert_eq(g_info_state, SAGA_STATE_COMPLETED);
    cr_assert_geq(g_info_journal, 3, "started, step ok, completed");
    /* An unknown saga: SAGA_ENOTFOUND through the callback. */
    g_info_calls = 0;
    cr_assert_eq(saga_get_async(r.e, "no-such-saga", info_cb, NULL), SAGA_OK);
    for (int i = 0; i < 600 && g_info_calls == 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(g_info_rc, SAGA_ENOTFOUND);
    rig_close(&r);
}

/* The saga made FAILED in the store, as an exhausted compensation leaves
 * it (FAILED sagas belong to no engine). */
static void make_failed(const char *id)
{
    PGconn *c = admin();
    char sql[256];
    snprintf(sql, sizeof sql,
             "UPDATE sagas SET state = 5, owner = NULL, epoch = 0 WHERE id = "
             "'%s'",
             id);
    exec_ok(c, sql);
    PQfinish(c);
}

static saga_state stored_state_of(const char *id)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT state FROM sagas WHERE id = '%s'", id);
    return (saga_state)count_rows(sql);
}

static int g_op_calls, g_op_rc;
static void op_cb(saga_engine *e, int rc, const char *id, void *arg)
{
    (void)e, (void)arg;
    cr_assert_str_eq(id, g_id);
    g_op_calls++;
    g_op_rc = rc;
}
static void resolve_async(rig *r)
{
    saga_op_request q = {SAGA_OP_RESOLVE, g_id, SAGA_STATE_COMPLETED,
                         "fixed by hand", "test"};
    g_op_calls = 0;
    r->rc = saga_op_async(r->e, &q, op_cb, NULL);
}
static int op_answered(rig *r)
{
    (void)r;
    return g_op_calls > 0;
}

/* Its old path: saga_resolve() of a saga not in memory, which read and
 * loaded it with the synchronous slots. */
Test(pg_loop, an_operator_action_on_a_saga_not_in_memory_never_stops_the_loop)
{
    rig r;
    g_lease_ms = 5000; /* outlives the outage: no saga is lost with it */
    rig_open(&r, "opasync", 0, H_GET);
    g_lease_ms = 0;
    run_one_saga(&r, g_id);
    make_failed(g_id);
    outage(&r, resolve_async, op_answered);
    cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    cr_assert_eq(g_op_calls, 1);
    /* The read in flight was lost with the partition's connections. */
    if (g_op_rc == SAGA_ESTORE) {
        resolve_async(&r);
        cr_assert_eq(r.rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
        for (int i = 0; i < 600 && g_op_calls == 0; i++)
            uv_run(&r.loop, UV_RUN_ONCE);
    }
    cr_assert_eq(g_op_rc, SAGA_OK, "%s", saga_engine_errmsg(r.e));
    for (int i = 0; i < 600 && stored_state_of(g_id) != SAGA_STATE_COMPLETED;
         i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(stored_state_of(g_id), SAGA_STATE_COMPLETED);
    /* A second one finds it COMPLETED: SAGA_EBUSY through the callback. */
    resolve_async(&r);
    cr_assert_eq(r.rc, SAGA_OK);
    for (int i = 0; i < 600 && g_op_calls == 0; i++)
        uv_run(&r.loop, UV_RUN_ONCE);
    cr_assert_eq(g_op_rc, SAGA_EBUSY);
    /* Completions and cancels of a saga not in memory ask nothing. */
    saga_step_ref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.saga_id, sizeof ref.saga_id, "%s", g_id);
    cr_assert_eq(saga_step_complete(r.e, &ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ESTALE);
    cr_assert_eq(saga_cancel(r.e, g_id, "late"), SAGA_EBUSY);
    rig_close(&r);
}

/* The control queue: an operator's request through saga_op_run() from
 * another thread (as sagactl does from another process). */
typedef struct op_thread {
    pthread_t th;
    atomic_int done;
    int rc;
    saga_op_by by;
    char msg[256];
} op_thread;
static op_thread g_opt;

static void *op_run_main(void *arg)
{
    op_thread *t = arg;
    saga_store *s;
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    cr_assert_eq(saga_store_postgres_open(&s, getenv("SAGA_PG_URL"), &so),
                 SAGA_OK);
    saga_op_request q = {SAGA_OP_RESOLVE, g_id, SAGA_STATE_COMPENSATED,
                         "refunded by hand", "ops"};
    t->rc = saga_op_run(s, &q, 10000, 1, t->msg, sizeof t->msg, &t->by);
    saga_store_free(s);
    atomic_store(&t->done, 1);
    return NULL;
}
static void queue_request(rig *r)
{
    (void)r;
    memset(&g_opt, 0, sizeof g_opt);
    cr_assert_eq(pthread_create(&g_opt.th, NULL, op_run_main, &g_opt), 0);
}
static int request_answered(rig *r)
{
    (void)r;
    return atomic_load(&g_opt.done) != 0;
}

/* Its old path: the queue taken, applied and answered with the synchronous
 * slots (begin, kv_get, kv_put, commit) once the poll found a request. */
Test(pg_loop, the_control_queue_never_stops_the_loop)
{
    rig r;
    g_lease_ms = 5000; /* outlives the outage: no saga is lost with it */
    rig_open(&r, "ctlq", 0, H_KV);
    g_lease_ms = 0;
    run_one_saga(&r, g_id);
    make_failed(g_id);
    cr_assert_eq(saga_engine_set_control_poll(r.e, 50), SAGA_OK);
    outage(&r, queue_request, request_answered);
    pthread_join(g_opt.th, NULL);
    cr_assert_eq(g_opt.rc, SAGA_OK, "%s", g_opt.msg);
    cr_assert_eq(g_opt.by, SAGA_OP_BY_ENGINE, "the engine took it");
    cr_assert_eq(stored_state_of(g_id), SAGA_STATE_COMPENSATED);
    cr_assert_eq(count_rows("SELECT length(val) FROM kv WHERE key = "
                            "'saga.ctl.queue'"),
                 1, "the queue is empty again");
    rig_close(&r);
}

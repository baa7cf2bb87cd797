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

#include "saga/engine.h"
#include "saga/postgres.h"

#include "pg_proxy.h"

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

static proxy g_px;
static atomic_int g_armed;
static int g_partitions;

static void partition(void)
{
    if (!atomic_exchange(&g_armed, 0))
        return;
    g_partitions++;
    atomic_store(&g_px.hold_ms, 1500);
    while (!atomic_load(&g_px.holding))
        usleep(1000);
}

static saga_store g_orig; /* the store's slots before hooking */

static int h_own_renew(saga_store *s, int fresh, uint32_t *out)
{
    partition();
    return g_orig.own_renew(s, fresh, out);
}
static int h_own_renew_submit(saga_store *s, int fresh, saga_own_renewed_cb d,
                              void *a)
{
    partition();
    return g_orig.own_renew_submit(s, fresh, d, a);
}
static int h_own_check(saga_store *s, const char *const *ids, size_t n,
                       unsigned char *lost)
{
    partition();
    return g_orig.own_check(s, ids, n, lost);
}
static int h_own_check_submit(saga_store *s, const char *const *ids, size_t n,
                              saga_own_checked_cb d, void *a)
{
    partition();
    return g_orig.own_check_submit(s, ids, n, d, a);
}
static int h_own_release(saga_store *s)
{
    partition();
    return g_orig.own_release(s);
}
static int h_own_release_submit(saga_store *s, saga_store_done_cb d, void *a)
{
    partition();
    return g_orig.own_release_submit(s, d, a);
}
static int h_idem_get(saga_store *s, const char *key, char out[SAGA_ID_SIZE])
{
    partition();
    return g_orig.idem_get(s, key, out);
}
static int h_idem_get_submit(saga_store *s, const char *key, saga_idem_got_cb d,
                             void *a)
{
    partition();
    return g_orig.idem_get_submit(s, key, d, a);
}
static int h_saga_get(saga_store *s, const char *id, saga_record_cb cb,
                      void *arg)
{
    partition();
    return g_orig.saga_get(s, id, cb, arg);
}
static int h_saga_get_submit(saga_store *s, const char *id,
                             saga_record_got_cb d, void *a)
{
    partition();
    return g_orig.saga_get_submit(s, id, d, a);
}

enum hook { H_RENEW, H_CHECK, H_RELEASE, H_IDEM, H_GET };

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
    }
}

/* ------------------------------------------------------------------------ */
/* An engine on a store through the proxy, and a 5 ms ticker                */

typedef struct ticker {
    uv_timer_t t;
    int ticks, held_ticks;
} ticker;

static void tick_cb(uv_timer_t *t)
{
    ticker *k = t->data;
    k->ticks++;
    if (atomic_load(&g_px.holding))
        k->held_ticks++;
}

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

static void rig_open(rig *r, const char *tag, int holding, enum hook which)
{
    memset(r, 0, sizeof *r);
    proxy_start(&g_px);
    atomic_store(&g_px.freeze, 1);
    atomic_store(&g_armed, 0);
    g_partitions = 0;
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             g_px.port);
    snprintf(g_schema, sizeof g_schema, "l_%s_%d", tag, (int)getpid());
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    so.connect_timeout_s = 5; /* longer than the outage */
    so.lease_ms = 1000;
    so.owner_id = "loop";
    cr_assert_eq(saga_store_postgres_open(&r->s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    hook(r->s, which);
    uv_loop_init(&r->loop);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &r->loop;
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    cr_assert_eq(saga_engine_new(&r->e, r->s, NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "own", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", holding ? act_hold : act_ok, NULL,
                                   &sto, r),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(r->e, d), SAGA_OK);
    uv_timer_init(&r->loop, &r->k.t);
    r->k.t.data = &r->k;
    uv_timer_start(&r->k.t, tick_cb, 5, 5);
}

static int active(saga_engine *e)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    return (int)st.active;
}

/* Run the loop until @p until(r) holds and the outage is over (bounded:
 * 3000 ticks, 15 s). */
static void run_until(rig *r, int (*until)(rig *r))
{
    while (r->k.ticks < 3000 &&
           !(until(r) && atomic_load(&g_px.outages) >= g_partitions))
        uv_run(&r->loop, UV_RUN_ONCE);
}

/* The loop ticked through the outage: 1.5 s of 5 ms ticks is 300; a loop
 * blocked in a synchronous slot gets none (the machine is shared: 40% is
 * plenty). */
static void assert_ticked(rig *r)
{
    cr_assert_eq(g_partitions, 1, "the hooked request was sent");
    cr_assert_eq(atomic_load(&g_px.outages), 1, "the outage happened");
    cr_log_info("%d ticks during the outage, %d in all", r->k.held_ticks,
                r->k.ticks);
    cr_assert_geq(r->k.held_ticks, 120,
                  "the loop ticked %d times during the outage (%d in all)",
                  r->k.held_ticks, r->k.ticks);
}

/* The outage: arm the hook (the next hooked request makes the server
 * silent for 1.5 s), run @p trigger (NULL: the engine's own timers send
 * the request), run the loop until @p until holds and the outage is over,
 * and assert that the loop ticked through it. */
static void outage(rig *r, void (*trigger)(rig *r), int (*until)(rig *r))
{
    atomic_store(&g_armed, 1);
    if (trigger != NULL)
        trigger(r);
    run_until(r, until);
    assert_ticked(r);
}

static void rig_close(rig *r)
{
    uv_timer_stop(&r->k.t);
    uv_close((uv_handle_t *)&r->k.t, NULL);
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

/*
 * test_pg_outbox.c — the shared outbox with several engines on one
 * PostgreSQL schema (schema version 6, store interface version 10): each
 * outbox row is published by one engine, the one that owns its saga under
 * a live lease; rows of an engine whose lease ended are taken over with
 * its sagas; a stale engine publishes and deletes nothing; a version-5
 * database keeps its rows through the migration; and the start's outbox
 * scan on the loop never stops it while the server is silent.
 *
 * Every engine here has a loop of its own, so that one can be paused (its
 * loop not run) while the others go on. The transport records, for every
 * command handed to it, the message id and the engine that sent it.
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

#include "saga/codec.h"
#include "saga/engine.h"
#include "saga/postgres.h"

#include "pg_outage.h"

static char schema[64];

static void new_schema(const char *tag)
{
    static int n;
    snprintf(schema, sizeof schema, "ob_%s_%d_%d", tag, (int)getpid(), n++);
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char sql[256];
    snprintf(sql, sizeof sql, "SET search_path TO %s", schema);
    PQclear(PQexec(c, sql));
    return c;
}

static long long q1(const char *sql)
{
    PGconn *c = admin();
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK ||
                  PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    long long v = PQntuples(r) > 0 ? atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* ------------------------------------------------------------------------ */
/* A recording transport: refuses every send (SAGA_EFULL: the broker is
 * full, the row stays pending) or records it and confirms it from the
 * loop.                                                                    */

#define MAX_SENDS 256
static struct {
    char id[256];
    int who;
} sends[MAX_SENDS];
static int nsends;

typedef struct pend {
    struct pend *next;
    saga_sent_cb cb;
    void *arg;
} pend;

typedef struct rtrans {
    saga_transport base;
    uv_timer_t timer;
    int who, refuse, sent;
    pend *pending;
} rtrans;

static void confirm_cb(uv_timer_t *t)
{
    rtrans *r = t->data;
    pend *p = r->pending;
    r->pending = NULL;
    while (p != NULL) {
        pend *nx = p->next;
        p->cb(&r->base, SAGA_OK, p->arg);
        free(p);
        p = nx;
    }
}

static int rt_send(saga_transport *self, const char *topic, const char *key,
                   const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    (void)topic, (void)key;
    rtrans *r = (rtrans *)self;
    if (r->refuse)
        return SAGA_EFULL;
    saga_envelope env;
    cr_assert_lt(nsends, MAX_SENDS);
    /* A command's id; a row not written by an engine is just "raw". */
    snprintf(sends[nsends].id, sizeof sends[nsends].id, "%s",
             saga_envelope_decode(&env, buf, len, 0, NULL) == SAGA_OK
                 ? env.msg_id
                 : "raw");
    sends[nsends++].who = r->who;
    r->sent++;
    if (cb != NULL) {
        pend *p = malloc(sizeof *p);
        p->cb = cb;
        p->arg = arg;
        p->next = r->pending;
        r->pending = p;
        uv_timer_start(&r->timer, confirm_cb, 0, 0);
    }
    return SAGA_OK;
}

static int rt_subscribe(saga_transport *self, const char *topic,
                        const char *group, saga_recv_cb cb, void *arg)
{
    (void)self, (void)topic, (void)group, (void)cb, (void)arg;
    return SAGA_OK;
}

static int rt_ack(saga_transport *self, saga_delivery *d)
{
    (void)self, (void)d;
    return SAGA_OK;
}

static const char *rt_errmsg(saga_transport *self)
{
    (void)self;
    return "refused";
}

static void rt_closed(uv_handle_t *h) { free(h->data); }

static void rt_close(saga_transport *self)
{
    rtrans *r = (rtrans *)self;
    pend *p = r->pending;
    r->pending = NULL;
    while (p != NULL) {
        pend *nx = p->next;
        p->cb(&r->base, SAGA_ECLOSED, p->arg);
        free(p);
        p = nx;
    }
    uv_close((uv_handle_t *)&r->timer, rt_closed);
}

static rtrans *rt_new(uv_loop_t *loop, int who, int refuse)
{
    rtrans *r = calloc(1, sizeof *r);
    saga_transport_init(&r->base, SAGA_TRANSPORT_VERSION);
    r->base.send = rt_send;
    r->base.subscribe = rt_subscribe;
    r->base.ack = rt_ack;
    r->base.errmsg = rt_errmsg;
    r->base.close = rt_close;
    r->who = who;
    r->refuse = refuse;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    return r;
}

/* How many times @p id was sent, by anyone. */
static int sent_times(const char *id)
{
    int n = 0;
    for (int i = 0; i < nsends; i++)
        n += strcmp(sends[i].id, id) == 0;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Engines, each on a loop of its own; the store's outbox_scan_submit is
 * hooked to count the answers each engine got.                            */

typedef struct eng {
    uv_loop_t loop;
    uv_timer_t guard;
    saga_store *s;
    saga_engine *e;
    rtrans *t;
    int paused, closed;
    int scans; /* outbox scans answered */
} eng;

#define NENG 3
static eng *engs[NENG];
static saga_store orig; /* the PostgreSQL store's slots */

typedef struct scan_req {
    eng *g;
    saga_outbox_got_cb done;
    void *arg;
} scan_req;

static void h_scan_done(void *arg, int rc, const saga_message *m, size_t n)
{
    scan_req *q = arg;
    if (rc == SAGA_OK)
        q->g->scans++;
    q->done(q->arg, rc, m, n);
    free(q);
}

static int h_scan_submit(saga_store *s, uint32_t limit, saga_outbox_got_cb d,
                         void *a)
{
    eng *g = NULL;
    for (int i = 0; i < NENG; i++)
        if (engs[i] != NULL && engs[i]->s == s)
            g = engs[i];
    cr_assert_not_null(g);
    scan_req *q = malloc(sizeof *q);
    q->g = g;
    q->done = d;
    q->arg = a;
    int rc = orig.outbox_scan_submit(s, limit, h_scan_done, q);
    if (rc != SAGA_OK)
        free(q);
    return rc;
}

static void step_cb(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t l, void *arg)
{
    (void)e, (void)ref, (void)d, (void)l, (void)arg;
}

static void eng_open(eng *g, int who, const char *owner, int refuse)
{
    memset(g, 0, sizeof *g);
    engs[who] = g;
    uv_loop_init(&g->loop);
    uv_timer_init(&g->loop, &g->guard);
    saga_pg_options po = SAGA_PG_OPTIONS_INIT;
    po.schema = schema;
    po.lease_ms = 1000;
    po.owner_id = owner;
    cr_assert_eq(saga_store_postgres_open(&g->s, NULL, &po), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    cr_assert_geq(g->s->version, 10u);
    cr_assert_not_null(g->s->outbox_scan_submit);
    orig = *g->s;
    g->s->outbox_scan_submit = h_scan_submit;
    g->t = rt_new(&g->loop, who, refuse);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &g->loop;
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    cr_assert_eq(saga_engine_new(&g->e, g->s, &g->t->base, &o), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "remote", 1), SAGA_OK);
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.service = "svc";
    so.command = "do";
    so.timeout_ms = SAGA_TIMEOUT_NONE; /* in flight until the test ends */
    cr_assert_eq(saga_def_add_step(d, "one", NULL, NULL, &so, NULL), SAGA_OK);
    saga_step_options lo = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_add_step(d, "two", step_cb, NULL, &lo, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(g->e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(g->e), SAGA_OK, "%s",
                 saga_engine_errmsg(g->e));
}

static void guard_cb(uv_timer_t *t) { (void)t; }

/* One turn of every engine that is not paused: each loop runs once,
 * waiting for I/O at most 5 ms. */
static void turn(void)
{
    for (int i = 0; i < NENG; i++) {
        eng *g = engs[i];
        if (g == NULL || g->paused || g->closed)
            continue;
        uv_timer_start(&g->guard, guard_cb, 5, 0);
        uv_run(&g->loop, UV_RUN_ONCE);
    }
}

/* Turn until @p cond holds, at most @p max turns; whether it held. */
#define TURN_UNTIL(cond, max)                                                  \
    ({                                                                         \
        int ok_ = 0;                                                           \
        for (int t_ = 0; t_ < (max) && !(ok_ = (cond)); t_++)                  \
            turn();                                                            \
        ok_;                                                                   \
    })

static void eng_close(eng *g)
{
    if (!g->closed) {
        saga_engine_free(g->e);
        g->closed = 1;
    }
    uv_close((uv_handle_t *)&g->guard, NULL);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&g->loop), 0);
    for (int i = 0; i < NENG; i++)
        if (engs[i] == g)
            engs[i] = NULL;
}

static long long rows_of(const char *owner)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE owner = '%s'",
             owner);
    return q1(sql);
}

/* Every command of the test's sagas, sent exactly once in all. */
static void assert_once_each(char ids[][SAGA_ID_SIZE], int n)
{
    for (int i = 0; i < n; i++) {
        char mid[256];
        int k = 0;
        for (int j = 0; j < nsends; j++)
            if (strncmp(sends[j].id, ids[i], strlen(ids[i])) == 0 &&
                sends[j].id[strlen(ids[i])] == '.') {
                memcpy(mid, sends[j].id, sizeof mid);
                k++;
            }
        cr_assert_eq(k, 1, "saga %s: its command was sent %d times", ids[i], k);
        cr_assert_eq(sent_times(mid), 1);
    }
}

Test(pg_outbox, each_row_is_published_once_while_leases_move)
{
    new_schema("move");
    nsends = 0;
    eng a, b, c;
    enum { N = 8, M = 4 };
    char ids[N + M][SAGA_ID_SIZE];
    /* A's broker refuses everything: its rows stay pending, its own. */
    eng_open(&a, 0, "a", 1);
    for (int i = 0; i < N; i++)
        cr_assert_eq(saga_start(a.e, "remote", NULL, NULL, 0, ids[i], NULL,
                                NULL),
                     SAGA_OK);
    cr_assert(TURN_UNTIL(rows_of("a") == N, 2000), "A's %d rows committed", N);
    /* B and C start while A lives: their start's scan and every claim
     * round after it take none of A's rows. */
    eng_open(&b, 1, "b", 0);
    eng_open(&c, 2, "c", 0);
    cr_assert(TURN_UNTIL(b.scans >= 3 && c.scans >= 3, 4000),
              "B and C scanned (%d, %d)", b.scans, c.scans);
    cr_assert_eq(nsends, 0, "nobody published A's rows while A lives");
    cr_assert_eq(rows_of("a"), N);
    /* A stops (a process paused past its lease): B and C claim its sagas
     * and take their rows with them; each row is published once, by the
     * engine that took it, and deleted after the confirmation. */
    a.paused = 1;
    cr_assert(TURN_UNTIL(nsends >= N && q1("SELECT count(*) FROM outbox") == 0,
                         4000),
              "A's rows published by the others (%d sends)", nsends);
    assert_once_each(ids, N);
    cr_assert_eq(a.t->sent, 0);
    cr_assert_eq(q1("SELECT count(*) FROM sagas WHERE owner = 'a'"), 0);
    /* A wakes up with its broker accepting and its commands still queued
     * in its relay: a stale epoch publishes nothing (its lease is not
     * surely live, then it is a new epoch's) and deletes nothing. */
    long long old_epoch = q1("SELECT epoch FROM owners WHERE owner = 'a'");
    a.t->refuse = 0;
    a.paused = 0;
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM owners WHERE owner = 'a' AND epoch > %lld "
             "AND lease_until > now_ms()",
             old_epoch);
    int scans0 = a.scans;
    cr_assert(TURN_UNTIL(q1(sql) == 1 && a.scans >= scans0 + 2, 4000),
              "A took a new epoch and scanned");
    cr_assert_eq(a.t->sent, 0, "the stale engine published nothing");
    cr_assert_eq(nsends, N);
    /* The lease moves again, by a clean close this time: B's new rows (its
     * broker now refuses) go to the engines that claim its sagas. */
    b.t->refuse = 1;
    for (int i = N; i < N + M; i++)
        cr_assert_eq(saga_start(b.e, "remote", NULL, NULL, 0, ids[i], NULL,
                                NULL),
                     SAGA_OK);
    cr_assert(TURN_UNTIL(rows_of("b") == M, 2000), "B's rows committed");
    cr_assert_eq(nsends, N);
    saga_engine_free(b.e);
    b.closed = 1;
    cr_assert(TURN_UNTIL(nsends >= N + M &&
                             q1("SELECT count(*) FROM outbox") == 0,
                         4000),
              "B's rows published by A and C (%d sends)", nsends);
    assert_once_each(ids, N + M);
    eng_close(&a);
    eng_close(&b);
    eng_close(&c);
}

/* ------------------------------------------------------------------------ */
/* The store: a stale epoch deletes no row another epoch took over          */

static void scanned_cb(void *arg, int rc, const saga_message *m, size_t n)
{
    int *out = arg;
    out[0] = rc;
    out[1] = (int)n;
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(m[i].key, "S1");
}

static saga_store *open_owner(const char *owner)
{
    saga_pg_options po = SAGA_PG_OPTIONS_INIT;
    po.schema = schema;
    po.lease_ms = 1000;
    po.owner_id = owner;
    saga_store *s = NULL;
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &po), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    return s;
}

static int count_cb(const saga_record *x, void *arg)
{
    (void)x;
    (*(int *)arg)++;
    return 0;
}

/* Run the loop until the scan answered. */
static void scan_now(uv_loop_t *loop, saga_store *s, int *out)
{
    out[0] = -1000;
    cr_assert_eq(s->outbox_scan_submit(s, 0, scanned_cb, out), SAGA_OK, "%s",
                 s->errmsg(s));
    while (out[0] == -1000)
        uv_run(loop, UV_RUN_ONCE);
}

Test(pg_outbox, a_stale_epoch_neither_takes_nor_deletes_another_epochs_rows)
{
    new_schema("stale");
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *a = open_owner("a"), *b = open_owner("b");
    cr_assert_eq(a->attach(a, &loop), SAGA_OK);
    cr_assert_eq(b->attach(b, &loop), SAGA_OK);
    uint32_t lease;
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK);
    cr_assert_eq(b->own_renew(b, 1, &lease), SAGA_OK);
    /* A writes a saga and its command. */
    saga_record r;
    memset(&r, 0, sizeof r);
    r.id = "S1";
    r.def_name = "d";
    r.def_version = 1;
    r.state = SAGA_STATE_RUNNING;
    r.data = "\x80";
    r.data_len = 1;
    unsigned flags = SAGA_PUT_INSERT | SAGA_PUT_DATA;
    saga_message m = {"S1.0.1.a.1", "svc", "S1", "x", 1, 1};
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.sagas = &r;
    w.put_flags = &flags;
    w.nsagas = 1;
    w.outbox = &m;
    w.noutbox = 1;
    cr_assert_eq(a->write_batch(a, &w), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(q1("SELECT count(*) FROM outbox WHERE owner = 'a'"), 1);
    /* B takes nothing while A lives. */
    int got[2];
    scan_now(&loop, b, got);
    cr_assert_eq(got[0], SAGA_OK);
    cr_assert_eq(got[1], 0);
    /* A's lease ends; B claims the saga, then takes its row. */
    q1("UPDATE owners SET lease_until = 0 WHERE owner = 'a'");
    size_t claimed = 0;
    int n = 0;
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK);
    cr_assert_eq(claimed, 1u);
    scan_now(&loop, b, got);
    cr_assert_eq(got[0], SAGA_OK);
    cr_assert_eq(got[1], 1, "B took the row with the saga");
    scan_now(&loop, b, got);
    cr_assert_eq(got[1], 0, "a row is handed once");
    /* A, stale: its scan is fenced, its delete in its old epoch is fenced
     * by the batch's lease check, and with a new epoch it deletes nothing
     * of B's. */
    scan_now(&loop, a, got);
    cr_assert_eq(got[0], SAGA_EFENCED);
    const char *done_id = m.id;
    saga_batch_writes d;
    memset(&d, 0, sizeof d);
    d.done_ids = &done_id;
    d.ndone = 1;
    cr_assert_eq(a->write_batch(a, &d), SAGA_EFENCED);
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK);
    cr_assert_eq(a->write_batch(a, &d), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(q1("SELECT count(*) FROM outbox WHERE owner = 'b'"), 1,
                 "B's row is still there");
    scan_now(&loop, a, got);
    cr_assert_eq(got[1], 0, "A's new epoch takes nothing of B's");
    /* B deletes it after publishing. */
    cr_assert_eq(b->write_batch(b, &d), SAGA_OK, "%s", b->errmsg(b));
    cr_assert_eq(q1("SELECT count(*) FROM outbox"), 0);
    saga_store_free(a);
    saga_store_free(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------------------------ */
/* Migration: a version-5 database keeps its outbox rows                    */

static void mig_cb(void *arg, int rc, const saga_message *m, size_t n)
{
    int *o = arg;
    o[0] = rc;
    o[1] = (int)n;
    cr_assert(n < 1 || strcmp(m[0].id, "m1") == 0, "oldest first");
}

Test(pg_outbox, a_version_5_database_migrates_to_6_with_its_rows)
{
    new_schema("mig");
    /* A version-5 schema: the library's, with the step to 6 undone (the
     * outbox as version 5 had it), and rows written then. */
    saga_store *s = open_owner("old");
    saga_store_free(s);
    q1("ALTER TABLE outbox DROP COLUMN owner, DROP COLUMN epoch");
    q1("UPDATE schema_version SET v = 5");
    q1("INSERT INTO outbox(id, topic, key, payload, created_ms) VALUES "
       "('m1', 'svc', 'S1', '\\x01', 1), ('m2', 'svc', NULL, '\\x02', 2)");
    /* Opened by this library: migrated in place, rows kept, no owner. */
    s = open_owner("a");
    cr_assert_geq(q1("SELECT v FROM schema_version"), 6);
    cr_assert_eq(q1("SELECT count(*) FROM outbox WHERE owner IS NULL AND "
                    "epoch = 0"),
                 2);
    cr_assert_eq(q1("SELECT count(*) FROM outbox WHERE id = 'm1' AND payload "
                    "= '\\x01' AND key = 'S1' AND created_ms = 1"),
                 1);
    /* An engine with a lease takes them (no owner: no live lease). */
    uv_loop_t loop;
    uv_loop_init(&loop);
    cr_assert_eq(s->attach(s, &loop), SAGA_OK);
    uint32_t lease;
    cr_assert_eq(s->own_renew(s, 1, &lease), SAGA_OK);
    int got[2];
    got[0] = -1000;
    cr_assert_eq(s->outbox_scan_submit(s, 0, mig_cb, got), SAGA_OK);
    while (got[0] == -1000)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(got[0], SAGA_OK);
    cr_assert_eq(got[1], 2);
    cr_assert_eq(q1("SELECT count(*) FROM outbox WHERE owner = 'a'"), 2);
    saga_store_free(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------------------------ */
/* The start's outbox scan through a silent server: the loop keeps ticking */

static int h_silent_scan_submit(saga_store *s, uint32_t limit,
                                saga_outbox_got_cb d, void *a)
{
    pg_partition();
    return orig.outbox_scan_submit(s, limit, d, a);
}
static int h_silent_scan(saga_store *s, uint32_t limit, saga_message_cb cb,
                         void *a)
{
    pg_partition();
    return orig.outbox_scan(s, limit, cb, a);
}

static rtrans *g_silent_t;
static int scan_published(void *arg)
{
    (void)arg;
    return g_silent_t->sent == 1 && g_partitions == 1;
}
static void start_engine(void *arg)
{
    saga_engine *e = arg;
    cr_assert_eq(saga_engine_start(e), SAGA_OK, "%s", saga_engine_errmsg(e));
}

static void silent_scan_at_start(const char *tag, uint32_t lease_ms)
{
    pg_outage_proxy_start();
    new_schema(tag);
    /* A row left by a past run, for the scan to find. */
    saga_store *s0 = open_owner("past");
    saga_store_free(s0);
    q1("INSERT INTO outbox(id, topic, key, payload, created_ms) VALUES "
       "('left', 'svc', NULL, '\\x01', 1)");
    char url[256];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             g_px.port);
    saga_pg_options po = SAGA_PG_OPTIONS_INIT;
    po.schema = schema;
    po.connect_timeout_s = 5; /* longer than the outage */
    po.lease_ms = lease_ms;
    po.owner_id = "loop";
    saga_store *s;
    cr_assert_eq(saga_store_postgres_open(&s, url, &po), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    orig = *s;
    s->outbox_scan_submit = h_silent_scan_submit;
    s->outbox_scan = h_silent_scan;
    uv_loop_t loop;
    uv_loop_init(&loop);
    nsends = 0;
    rtrans *t = rt_new(&loop, 0, 0);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.log_level = SAGA_LOG_ERROR;
    saga_engine *e;
    cr_assert_eq(saga_engine_new(&e, s, &t->base, &o), SAGA_OK);
    ticker k;
    ticker_start(&k, &loop);
    g_silent_t = t;
    pg_outage(&loop, &k, start_engine, scan_published, e);
    cr_assert_eq(t->sent, 1, "the row left was published after the outage");
    ticker_stop(&k);
    saga_engine_free(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    proxy_stop(&g_px);
}

Test(pg_outbox, the_outbox_scan_at_start_never_stops_the_loop)
{
    silent_scan_at_start("silent", 0);
}

Test(pg_outbox, the_outbox_scan_after_the_lease_never_stops_the_loop)
{
    silent_scan_at_start("silentl", 1000);
}

/*
 * test_pg_owner.c — several engines on one PostgreSQL schema: leases,
 * fencing tokens, claiming with SKIP LOCKED, and idempotency keys raced by
 * two engines. Each test uses a schema of its own; the engines share one
 * loop, each with its own store connection.
 *
 * Run by tests/pg/with-pg.sh (a throwaway server, SAGA_PG_URL).
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "saga/engine.h"
#include "saga/postgres.h"

static char schema[64];

static void new_schema(const char *tag)
{
    static int n;
    snprintf(schema, sizeof schema, "own_%s_%d_%d", tag, (int)getpid(), n++);
}

static uint32_t lease_ms = 1000;

static saga_store *open_owner(const char *owner)
{
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = schema;
    o.lease_ms = lease_ms;
    o.owner_id = owner;
    saga_store *s = NULL;
    int rc = saga_store_postgres_open(&s, NULL, &o);
    cr_assert_eq(rc, SAGA_OK, "open: %s (%s)", saga_strerror(rc),
                 saga_store_postgres_open_errmsg());
    return s;
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path TO %s", schema);
    PQclear(PQexec(c, sql));
    return c;
}

/* Run @p sql; the first column of the first row as a number (0 if none). */
static long long q1(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK ||
                  PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    long long v = PQntuples(r) > 0 ? atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

static void expire(const char *owner)
{
    PGconn *c = admin();
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE owners SET lease_until = 0 WHERE owner = '%s'", owner);
    q1(c, sql);
    PQfinish(c);
}

static saga_record rec(const char *id, uint32_t attempt)
{
    saga_record r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.def_name = "d";
    r.def_version = 1;
    r.state = SAGA_STATE_RUNNING;
    r.attempt = attempt;
    r.created_ms = r.updated_ms = 1;
    r.data = "\x80";
    r.data_len = 1;
    return r;
}

static int write_one(saga_store *s, const saga_record *r, unsigned flags,
                     uint32_t seq)
{
    saga_journal_entry j;
    memset(&j, 0, sizeof j);
    j.saga_id = r->id;
    j.seq = seq;
    j.kind = seq == 1 ? SAGA_JOURNAL_STARTED : SAGA_JOURNAL_STEP_RETRY;
    j.step = seq == 1 ? -1 : 0;
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.sagas = r;
    w.put_flags = &flags;
    w.nsagas = 1;
    w.journal = &j;
    w.njournal = 1;
    return s->write_batch(s, &w);
}

static int count_cb(const saga_record *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The store slots                                                          */

Test(pg_owner, a_late_write_of_an_old_owner_is_fenced)
{
    new_schema("fence");
    saga_store *a = open_owner("a"), *b = open_owner("b");
    uint32_t lease = 0;
    cr_assert_geq(a->version, 5u);
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(lease, 1000u);
    cr_assert_eq(b->own_renew(b, 1, &lease), SAGA_OK);
    saga_record r = rec("S1", 1);
    cr_assert_eq(write_one(a, &r, SAGA_PUT_INSERT | SAGA_PUT_DATA, 1), SAGA_OK,
                 "%s", a->errmsg(a));
    /* B claims nothing while A's lease is live. */
    int n = 0;
    size_t claimed = 9;
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(claimed, 0u);
    /* A pauses past its lease; B claims its saga with a new epoch. */
    expire("a");
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK, "%s",
                 b->errmsg(b));
    cr_assert_eq(n, 1);
    /* A wakes up and writes: fenced, and nothing of the batch remains. */
    r.attempt = 2;
    cr_assert_eq(write_one(a, &r, 0, 2), SAGA_EFENCED, "%s", a->errmsg(a));
    PGconn *c = admin();
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal WHERE saga_id = 'S1'"), 1);
    cr_assert_eq(q1(c, "SELECT attempt FROM sagas WHERE id = 'S1'"), 1);
    /* The new owner writes; the journal says who wrote what. */
    cr_assert_eq(write_one(b, &r, 0, 2), SAGA_OK, "%s", b->errmsg(b));
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal j JOIN owners o ON "
                       "o.owner = j.owner AND o.epoch = j.epoch WHERE "
                       "j.saga_id = 'S1' AND j.seq = 2 AND o.owner = 'b'"),
                 1);
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal WHERE saga_id = 'S1' "
                       "AND seq = 1 AND owner = 'a'"),
                 1);
    /* A learns that its lease is gone, and which sagas it lost. */
    const char *ids[] = {"S1"};
    unsigned char lost[1] = {0};
    cr_assert_eq(a->own_check(a, ids, 1, lost), SAGA_EFENCED);
    cr_assert_eq(lost[0], 1);
    cr_assert_eq(a->own_renew(a, 0, &lease), SAGA_EFENCED);
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK);
    lost[0] = 0;
    cr_assert_eq(a->own_check(a, ids, 1, lost), SAGA_OK);
    cr_assert_eq(lost[0], 1);
    lost[0] = 1;
    cr_assert_eq(b->own_check(b, ids, 1, lost), SAGA_OK);
    cr_assert_eq(lost[0], 0);
    /* A FAILED saga is nobody's: an operator's action on any live engine
     * writes it, and that engine owns it from then on. */
    r.state = SAGA_STATE_FAILED;
    cr_assert_eq(write_one(b, &r, 0, 3), SAGA_OK, "%s", b->errmsg(b));
    r.state = SAGA_STATE_RUNNING;
    r.attempt = 3;
    cr_assert_eq(write_one(a, &r, 0, 4), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE id = 'S1' AND "
                       "owner = 'a' AND state = 1"),
                 1);
    cr_assert_eq(write_one(b, &r, 0, 5), SAGA_EFENCED);
    /* A new saga of A under its new epoch is A's; released, it is
     * claimable at once. */
    saga_record r2 = rec("S2", 1);
    cr_assert_eq(write_one(a, &r2, SAGA_PUT_INSERT | SAGA_PUT_DATA, 1), SAGA_OK,
                 "%s", a->errmsg(a));
    cr_assert_eq(a->own_release(a), SAGA_OK);
    cr_assert_eq(write_one(a, &r2, 0, 2), SAGA_EFENCED);
    n = 0;
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK);
    cr_assert_eq(n, 2, "S1 and S2, both A's");
    PQfinish(c);
    saga_store_free(a);
    saga_store_free(b);
}

/* A batch of BULK rows per kind goes out as array statements: the fencing
 * check holds for each row as it does row by row. */
#define BULK 6

static int write_many(saga_store *s, saga_record *rs, size_t n, unsigned flags,
                      uint32_t seq)
{
    saga_journal_entry j[BULK];
    unsigned fl[BULK];
    memset(j, 0, sizeof j);
    for (size_t i = 0; i < n; i++) {
        fl[i] = flags;
        j[i].saga_id = rs[i].id;
        j[i].seq = seq;
        j[i].kind = seq == 1 ? SAGA_JOURNAL_STARTED : SAGA_JOURNAL_STEP_RETRY;
        j[i].step = seq == 1 ? -1 : 0;
    }
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.sagas = rs;
    w.put_flags = fl;
    w.nsagas = n;
    w.journal = j;
    w.njournal = n;
    return s->write_batch(s, &w);
}

Test(pg_owner, array_writes_are_fenced_row_by_row)
{
    new_schema("bulk");
    saga_store *a = open_owner("a"), *b = open_owner("b");
    uint32_t lease = 0;
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(b->own_renew(b, 1, &lease), SAGA_OK);
    static const char *const ids[BULK] = {"B0", "B1", "B2", "B3", "B4", "B5"};
    saga_record rs[BULK];
    for (int i = 0; i < BULK; i++)
        rs[i] = rec(ids[i], 1);
    /* Inserted as one array statement each, with A's token on every row. */
    cr_assert_eq(write_many(a, rs, BULK, SAGA_PUT_INSERT | SAGA_PUT_DATA, 1),
                 SAGA_OK, "%s", a->errmsg(a));
    PGconn *c = admin();
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas s JOIN owners o ON "
                       "o.owner = s.owner AND o.epoch = s.epoch WHERE "
                       "o.owner = 'a'"),
                 BULK);
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal j JOIN owners o ON "
                       "o.owner = j.owner AND o.epoch = j.epoch WHERE "
                       "o.owner = 'a'"),
                 BULK);
    /* Updates of A's own rows, with and without data. */
    for (int i = 0; i < BULK; i++)
        rs[i].attempt = 2;
    cr_assert_eq(write_many(a, rs, BULK, 0, 2), SAGA_OK, "%s", a->errmsg(a));
    for (int i = 0; i < BULK; i++)
        rs[i].attempt = 3;
    cr_assert_eq(write_many(a, rs, BULK, SAGA_PUT_DATA, 3), SAGA_OK, "%s",
                 a->errmsg(a));
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE attempt = 3"), BULK);
    /* B takes one of them (as a claim after A's lease ran out would); A's
     * next batch of all six is fenced as a whole, and nothing of it
     * remains. */
    q1(c, "UPDATE sagas SET owner = 'b', epoch = (SELECT epoch FROM owners "
          "WHERE owner = 'b') WHERE id = 'B3'");
    for (int i = 0; i < BULK; i++)
        rs[i].attempt = 4;
    cr_assert_eq(write_many(a, rs, BULK, 0, 4), SAGA_EFENCED, "%s",
                 a->errmsg(a));
    cr_assert(strstr(a->errmsg(a), "B3") != NULL, "%s", a->errmsg(a));
    cr_assert_eq(write_many(a, rs, BULK, SAGA_PUT_DATA, 4), SAGA_EFENCED);
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE attempt = 4"), 0);
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal WHERE seq = 4"), 0);
    /* own_check names the lost one; the rest goes through. */
    unsigned char lost[BULK];
    cr_assert_eq(a->own_check(a, (const char **)ids, BULK, lost), SAGA_OK);
    for (int i = 0; i < BULK; i++)
        cr_assert_eq(lost[i], i == 3, "%s", ids[i]);
    saga_record rest[BULK - 1];
    for (int i = 0, k = 0; i < BULK; i++)
        if (i != 3)
            rest[k++] = rs[i];
    cr_assert_eq(write_many(a, rest, BULK - 1, 0, 4), SAGA_OK, "%s",
                 a->errmsg(a));
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE attempt = 4 AND "
                       "owner = 'a'"),
                 BULK - 1);
    /* A FAILED row is nobody's: A's array update takes it. */
    q1(c, "UPDATE sagas SET state = 5 WHERE id = 'B3'");
    for (int i = 0; i < BULK; i++)
        rs[i].attempt = 5;
    cr_assert_eq(write_many(a, rs, BULK, 0, 5), SAGA_OK, "%s", a->errmsg(a));
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE owner = 'a' AND "
                       "attempt = 5"),
                 BULK);
    /* A row that does not exist: SAGA_ENOTFOUND, as row by row. */
    rs[4].id = "nope";
    cr_assert_eq(write_many(a, rs, BULK, 0, 6), SAGA_ENOTFOUND, "%s",
                 a->errmsg(a));
    cr_assert_eq(q1(c, "SELECT count(*) FROM journal WHERE seq = 6"), 0);
    /* Once A's lease is gone, its whole batch is fenced. */
    rs[4].id = ids[4];
    expire("a");
    cr_assert_eq(write_many(a, rs, BULK, 0, 6), SAGA_EFENCED);
    PQfinish(c);
    saga_store_free(a);
    saga_store_free(b);
}

Test(pg_owner, claiming_skips_rows_another_claimer_holds)
{
    new_schema("skip");
    saga_store *a = open_owner("a"), *b = open_owner("b");
    uint32_t lease;
    cr_assert_eq(a->own_renew(a, 1, &lease), SAGA_OK);
    cr_assert_eq(b->own_renew(b, 1, &lease), SAGA_OK);
    char id[8];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "K%d", i);
        saga_record r = rec(id, 1);
        cr_assert_eq(write_one(a, &r, SAGA_PUT_INSERT | SAGA_PUT_DATA, 1),
                     SAGA_OK);
    }
    expire("a");
    /* Another claimer holds K0's row in an open transaction. */
    PGconn *c = admin();
    q1(c, "BEGIN");
    q1(c, "SELECT 1 FROM sagas WHERE id = 'K0' FOR UPDATE");
    int n = 0;
    size_t claimed = 0;
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK, "%s",
                 b->errmsg(b));
    cr_assert_eq(n, 3, "claimed %d: the locked row must be skipped", n);
    q1(c, "COMMIT");
    n = 0;
    cr_assert_eq(b->own_claim(b, 10, count_cb, &n, &claimed), SAGA_OK);
    cr_assert_eq(n, 1);
    PQfinish(c);
    saga_store_free(a);
    saga_store_free(b);
}

Test(pg_owner, bad_options_are_refused)
{
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    saga_store *s = NULL;
    o.lease_ms = 10;
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &o), SAGA_EINVAL);
    o.lease_ms = 2000;
    o.owner_id = "";
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &o), SAGA_EINVAL);
    cr_assert_null(s);
    /* Without a lease the store has no version-5 slots. */
    o.lease_ms = 0;
    o.owner_id = NULL;
    new_schema("plain");
    o.schema = schema;
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &o), SAGA_OK);
    cr_assert_null(s->own_renew);
    saga_store_free(s);
}

/* ------------------------------------------------------------------------ */
/* Engines                                                                  */

typedef struct eng {
    saga_engine *e;
    saga_step_ref held[64];
    int nheld;
    int invoked;
} eng;

/* The action reports later: it is held until the test completes it. */
static void hold(saga_engine *e, const saga_step_ref *ref, const void *d,
                 size_t l, void *arg)
{
    (void)e, (void)d, (void)l;
    eng *g = arg;
    g->invoked++;
    if (g->nheld < 64)
        g->held[g->nheld++] = *ref;
}

static void quick(saga_engine *e, const saga_step_ref *ref, const void *d,
                  size_t l, void *arg)
{
    (void)d, (void)l;
    ((eng *)arg)->invoked++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void new_engine(eng *g, uv_loop_t *loop, const char *owner,
                       saga_action_fn fn)
{
    memset(g, 0, sizeof *g);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = loop;
    o.log_level = SAGA_LOG_ERROR;
    cr_assert_eq(saga_engine_new(&g->e, open_owner(owner), NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "own", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", fn, NULL, &so, g), SAGA_OK);
    cr_assert_eq(saga_engine_register(g->e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(g->e), SAGA_OK, "%s",
                 saga_engine_errmsg(g->e));
}

/* Loop turns. The store commits asynchronously (submit_batch): a commit's
 * answer comes through the loop, so each turn also waits for I/O, bounded
 * by a short guard timer, and a "turn" here is ten of the loop's. */
static void guard_cb(uv_timer_t *t) { (void)t; }

static void spin(uv_loop_t *loop, int turns)
{
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    for (int i = 0; i < turns * 10; i++) {
        uv_timer_start(&guard, guard_cb, 10, 0);
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static int active(saga_engine *e)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    return (int)st.active;
}

Test(pg_owner, an_engine_fenced_out_drops_the_saga_and_the_new_owner_ends_it)
{
    new_schema("eng");
    /* Long leases: no renewal tells A of its lost lease before its commit
     * does (the test expires it by hand). */
    lease_ms = 60000;
    uv_loop_t loop;
    uv_loop_init(&loop);
    eng a, b;
    new_engine(&a, &loop, "a", hold);
    char id[SAGA_ID_SIZE], id2[SAGA_ID_SIZE];
    lease_ms = 1000;
    cr_assert_eq(saga_start(a.e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    spin(&loop, 3);
    cr_assert_eq(a.nheld, 1);
    /* A stalls past its lease; B starts and claims the saga. */
    expire("a");
    new_engine(&b, &loop, "b", hold);
    /* B's first lease and claim go out on the loop (store version 8):
     * start returned at once. A stays stalled until B has the saga: A and
     * B share this loop, and A, finding its lease gone, takes a new epoch
     * and may claim its own saga back first (a race the test does not
     * mean to decide). */
    for (int i = 0; i < 100 && b.nheld == 0; i++) {
        expire("a");
        spin(&loop, 1);
    }
    cr_assert_eq(b.nheld, 1, "B resumed the claimed saga");
    cr_assert_str_eq(b.held[0].saga_id, id);
    /* A's late completion is fenced: A drops the saga, writes the rest of
     * its batch (a new saga started meanwhile) and keeps working. */
    cr_assert_eq(saga_start(a.e, "own", NULL, NULL, 0, id2, NULL, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_step_complete(a.e, &a.held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    spin(&loop, 5);
    cr_assert_eq(active(a.e), 1, "A keeps only its new saga: %d", active(a.e));
    PGconn *c = admin();
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT state FROM sagas WHERE id = '%s' AND owner = 'b'", id);
    cr_assert_eq(q1(c, sql), SAGA_STATE_RUNNING, "A wrote nothing to it");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM sagas WHERE id = '%s' AND owner = 'a'", id2);
    cr_assert_eq(q1(c, sql), 1, "the rest of A's batch was written");
    /* The new owner finishes it. */
    cr_assert_eq(saga_step_complete(b.e, &b.held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    spin(&loop, 5);
    snprintf(sql, sizeof sql, "SELECT state FROM sagas WHERE id = '%s'", id);
    cr_assert_eq(q1(c, sql), SAGA_STATE_COMPLETED);
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT epoch) FROM journal WHERE saga_id = '%s'",
             id);
    cr_assert_eq(q1(c, sql), 2, "the journal records both owners' epochs");
    PQfinish(c);
    saga_engine_free(a.e);
    saga_engine_free(b.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(pg_owner, a_closed_engine_releases_its_sagas_to_the_others)
{
    new_schema("rel");
    uv_loop_t loop;
    uv_loop_init(&loop);
    eng a, b;
    new_engine(&a, &loop, "a", hold);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(saga_start(a.e, "own", NULL, NULL, 0, id, NULL, NULL),
                     SAGA_OK);
    spin(&loop, 3);
    cr_assert_eq(a.nheld, 5);
    saga_engine_free(a.e);
    new_engine(&b, &loop, "b", quick);
    spin(&loop, 10);
    cr_assert_eq(b.invoked, 5, "B resumed every saga A left at once");
    PGconn *c = admin();
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE state = 3"), 5);
    PQfinish(c);
    saga_engine_free(b.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

typedef struct answer {
    char id[SAGA_ID_SIZE];
    int existed, status, calls;
} answer;

static void started(saga_engine *e, int status, const char *id, int existed,
                    void *arg)
{
    (void)e;
    answer *a = arg;
    a->calls++;
    a->status = status;
    a->existed = existed;
    snprintf(a->id, sizeof a->id, "%s", id);
}

#define NKEYS 40

Test(pg_owner, two_engines_racing_on_keys_make_one_saga_per_key)
{
    new_schema("idem");
    uv_loop_t loop;
    uv_loop_init(&loop);
    eng a, b;
    new_engine(&a, &loop, "a", quick);
    new_engine(&b, &loop, "b", quick);
    static answer ra[NKEYS], rb[NKEYS];
    memset(ra, 0, sizeof ra);
    memset(rb, 0, sizeof rb);
    char key[32], id[SAGA_ID_SIZE];
    /* Both engines start every even key in the same loop turn (neither has
     * committed: both miss in the store); B also starts odd keys that only
     * it has, in the same batch, which must not fail with the others. */
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        if (i % 2 == 0)
            cr_assert_eq(saga_start(a.e, "own", key, NULL, 0, id, started,
                                    &ra[i]),
                         SAGA_OK);
        cr_assert_eq(saga_start(b.e, "own", key, NULL, 0, id, started, &rb[i]),
                     SAGA_OK);
    }
    spin(&loop, 10);
    for (int i = 0; i < NKEYS; i++) {
        cr_assert_eq(rb[i].calls, 1, "key %d answered once", i);
        cr_assert_eq(rb[i].status, SAGA_OK);
        if (i % 2 == 0) {
            cr_assert_eq(ra[i].calls, 1);
            cr_assert_str_eq(ra[i].id, rb[i].id,
                             "key %d: both callers get the one saga", i);
            cr_assert_eq(ra[i].existed + rb[i].existed, 1);
        } else {
            cr_assert_eq(rb[i].existed, 0);
        }
    }
    PGconn *c = admin();
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas"), NKEYS);
    cr_assert_eq(q1(c, "SELECT count(*) FROM idem"), NKEYS);
    cr_assert_eq(q1(c, "SELECT count(*) FROM sagas WHERE state = 3"), NKEYS);
    cr_assert_eq(a.invoked + b.invoked, NKEYS, "each saga ran once");
    /* A start with a key taken by the other engine, later: found in the
     * store, not started again. */
    answer late;
    memset(&late, 0, sizeof late);
    cr_assert_eq(saga_start(a.e, "own", "key-1", NULL, 0, id, started, &late),
                 SAGA_OK);
    spin(&loop, 3);
    cr_assert_eq(late.existed, 1);
    cr_assert_str_eq(late.id, rb[1].id);
    PQfinish(c);
    saga_engine_free(a.e);
    saga_engine_free(b.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(pg_owner, a_url_gives_the_lease_and_the_owner)
{
    new_schema("url");
    char url[512];
    snprintf(url, sizeof url, "%s?schema=%s&lease_ms=2000&owner=u1",
             getenv("SAGA_PG_URL"), schema);
    saga_store *s = NULL;
    cr_assert_eq(saga_store_open(&s, url), SAGA_OK, "%s", saga_open_errmsg());
    cr_assert_not_null(s->own_renew);
    uint32_t lease = 0;
    cr_assert_eq(s->own_renew(s, 1, &lease), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_eq(lease, 2000u);
    PGconn *c = admin();
    cr_assert_eq(q1(c, "SELECT count(*) FROM owners WHERE owner = 'u1'"), 1);
    PQfinish(c);
    saga_store_free(s);
    snprintf(url, sizeof url, "%s?schema=%s&lease_ms=soon",
             getenv("SAGA_PG_URL"), schema);
    cr_assert_eq(saga_store_open(&s, url), SAGA_EINVAL);
    cr_assert(strstr(saga_open_errmsg(), "lease_ms") != NULL);
}

typedef struct waited {
    int calls;
    saga_state st;
} waited;

static void done_cb(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e, (void)id;
    waited *w = arg;
    w->calls++;
    w->st = st;
}

/* saga_on_done() on the engine that lost the saga: the waiter follows the
 * saga to the store (asked at every lease tick) and is called once, with
 * the state it ended in on the other engine; so is a waiter registered
 * there after the saga left. */
Test(pg_owner, on_done_follows_a_saga_that_moved_to_another_engine)
{
    new_schema("done");
    uv_loop_t loop;
    uv_loop_init(&loop);
    eng a, b;
    new_engine(&a, &loop, "a", hold);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(a.e, "own", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    spin(&loop, 3);
    cr_assert_eq(a.nheld, 1);
    waited before = {0, 0}, after = {0, 0};
    cr_assert_eq(saga_on_done(a.e, id, done_cb, &before), SAGA_OK);
    /* A stalls past its lease; B claims the saga at its start. */
    expire("a");
    new_engine(&b, &loop, "b", hold);
    /* B's first lease and claim go out on the loop (store version 8):
     * start returned at once. A stays stalled until B has the saga: A and
     * B share this loop, and A, finding its lease gone, takes a new epoch
     * and may claim its own saga back first (a race the test does not
     * mean to decide). */
    for (int i = 0; i < 100 && b.nheld == 0; i++) {
        expire("a");
        spin(&loop, 1);
    }
    cr_assert_eq(b.nheld, 1, "B resumed the claimed saga");
    /* A's next tick finds its lease gone and drops the saga; the waiter
     * stays with the store. */
    for (int i = 0; i < 100 && active(a.e) > 0; i++)
        spin(&loop, 1);
    cr_assert_eq(active(a.e), 0, "A dropped the saga");
    cr_assert_eq(before.calls, 0, "not ended yet");
    cr_assert_eq(saga_on_done(a.e, id, done_cb, &after), SAGA_OK,
                 "a saga another engine owns can be waited for: %s",
                 saga_engine_errmsg(a.e));
    /* B ends it; A learns of it at a later tick. */
    cr_assert_eq(saga_step_complete(b.e, &b.held[0], SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    for (int i = 0; i < 100 && (before.calls == 0 || after.calls == 0); i++)
        spin(&loop, 1);
    cr_assert_eq(before.calls, 1);
    cr_assert_eq(after.calls, 1);
    cr_assert_eq(before.st, SAGA_STATE_COMPLETED);
    cr_assert_eq(after.st, SAGA_STATE_COMPLETED);
    spin(&loop, 3);
    cr_assert_eq(before.calls, 1, "once");
    saga_engine_free(a.e);
    saga_engine_free(b.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

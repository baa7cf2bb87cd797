/*
 * test_pg_async.c — the PostgreSQL store's asynchronous commit (store
 * interface version 4: attach, submit_batch), driven directly on a libuv
 * loop: completion order, done never inside submit_batch, a failed batch
 * leaving nothing, reads while a batch is in flight, and a lost connection
 * resolved by reading the batch log back (a commit whose answer was lost
 * is OK; a batch killed before its commit is SAGA_ESTORE).
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL). Each test works in a schema of
 * its own. Lost answers are made by a small TCP proxy in this file between
 * the store and the server, which can swallow the server's answers and
 * then cut the connection.
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
#include "store_suite.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static char g_schema[64];

static saga_store *open_at(const char *url, uv_loop_t *loop)
{
    static int n;
    snprintf(g_schema, sizeof g_schema, "a_%d_%d", (int)getpid(), n++);
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = g_schema;
    o.connect_timeout_s = 5;
    saga_store *s = NULL;
    int rc = saga_store_postgres_open(&s, url, &o);
    cr_assert_eq(rc, SAGA_OK, "open: %s (%s)", saga_strerror(rc),
                 saga_store_postgres_open_errmsg());
    cr_assert_geq(s->version, 4u);
    cr_assert_not_null(s->attach);
    cr_assert_not_null(s->submit_batch);
    cr_assert_eq(s->attach(s, loop), SAGA_OK, "%s", s->errmsg(s));
    return s;
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
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

/* The first column of the first row of @p sql, as an integer (-1: none). */
static long query_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql,
                 PQerrorMessage(c));
    long v = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

/* Wait (bounded: 20 s) until @p sql answers a positive number. */
static void wait_until(PGconn *c, const char *sql)
{
    for (int i = 0; i < 2000; i++) {
        if (query_int(c, sql) > 0)
            return;
        usleep(10000);
    }
    cr_assert_fail("never true: %s", sql);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* One batch: sagas to insert (new) or to update (state only), journal
 * entries for each, all owned by the struct. */
typedef struct tbatch {
    saga_record recs[8];
    unsigned int flags[8];
    saga_journal_entry jes[8];
    size_t n;
} tbatch;

static void tb_add(tbatch *b, const char *id, saga_state st, int insert,
                   uint32_t jseq)
{
    size_t i = b->n++;
    b->recs[i] = ssc_rec(id, st, 100 + (int64_t)i);
    b->flags[i] = insert ? (SAGA_PUT_INSERT | SAGA_PUT_DATA) : 0;
    saga_journal_entry e = {id,
                            jseq,
                            insert ? SAGA_JOURNAL_STARTED
                                   : SAGA_JOURNAL_COMPLETED,
                            -1,
                            0,
                            0,
                            10 * (int64_t)jseq,
                            NULL};
    b->jes[i] = e;
}

static saga_batch_writes tb_writes(tbatch *b)
{
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.sagas = b->recs;
    w.put_flags = b->flags;
    w.nsagas = b->n;
    w.journal = b->jes;
    w.njournal = b->n;
    return w;
}

/* Completions, in the order they ran. */
typedef struct done_log {
    int in_submit; /* set around submit_batch: done must not run there */
    int n;
    int tag[16];
    int rc[16];
} done_log;

typedef struct done_arg {
    done_log *log;
    int tag;
} done_arg;

static void on_done(void *arg, int rc)
{
    done_arg *a = arg;
    cr_assert(!a->log->in_submit, "done ran inside submit_batch");
    cr_assert_lt(a->log->n, 16);
    a->log->tag[a->log->n] = a->tag;
    a->log->rc[a->log->n] = rc;
    a->log->n++;
}

static void submit(saga_store *s, tbatch *b, done_arg *a)
{
    saga_batch_writes w = tb_writes(b);
    a->log->in_submit = 1;
    int rc = s->submit_batch(s, &w, on_done, a);
    a->log->in_submit = 0;
    cr_assert_eq(rc, SAGA_OK, "submit_batch: %s", s->errmsg(s));
    /* The caller's batch may go at once: the store copied what it needs. */
    memset(b, 0xa5, sizeof *b);
}

/* Run the loop until @p n completions were logged (bounded: 30 s). */
static void run_until(uv_loop_t *loop, done_log *log, int n)
{
    for (int i = 0; i < 3000 && log->n < n; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (log->n < n)
            sleep_ms(10);
    }
    cr_assert_eq(log->n, n, "completions: %d of %d", log->n, n);
}

static void close_all(saga_store *s, uv_loop_t *loop)
{
    saga_store_free(s);
    uv_run(loop, UV_RUN_DEFAULT); /* the store's handles close */
    cr_assert_eq(uv_loop_close(loop), 0, "the store left handles open");
}

static int has(saga_store *s, const char *id)
{
    int rc = s->saga_get(s, id, NULL, NULL);
    cr_assert(rc == SAGA_OK || rc == SAGA_ENOTFOUND, "saga_get %s: %s", id,
              s->errmsg(s));
    return rc == SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Order, failure, reads in flight                                          */

Test(pg_async, batches_complete_in_order_on_the_loop)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(NULL, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2}, a3 = {&log, 3};
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "X1", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "X2", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a1);
    /* Two more behind it, before the first is answered: each depends on
     * the one before (an update of X1, then of X2). */
    memset(&b, 0, sizeof b);
    tb_add(&b, "X1", SAGA_STATE_COMPLETED, 0, 2);
    submit(s, &b, &a2);
    memset(&b, 0, sizeof b);
    tb_add(&b, "X2", SAGA_STATE_FAILED, 0, 2);
    tb_add(&b, "X3", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a3);
    cr_assert_eq(log.n, 0, "nothing completes before the loop runs");
    run_until(&loop, &log, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(log.tag[i], i + 1, "completion %d was batch %d", i,
                     log.tag[i]);
        cr_assert_eq(log.rc[i], SAGA_OK, "batch %d: %s", i + 1,
                     saga_strerror(log.rc[i]));
    }
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_BIT(SAGA_STATE_COMPLETED), &t),
                     "X1 ");
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_BIT(SAGA_STATE_FAILED), &t), "X2 ");
    cr_assert_str_eq(ssc_jscan(s, "X1", &t),
                     "X1/1:1:-1:0:0:10:- X1/2:9:-1:0:0:20:- ");
    /* The synchronous slots still work between flights. */
    cr_assert_eq(s->begin(s), SAGA_OK, "%s", s->errmsg(s));
    ssc_insert(s, "X4", SAGA_STATE_RUNNING, 5);
    cr_assert_eq(s->commit(s), SAGA_OK, "%s", s->errmsg(s));
    cr_assert(has(s, "X4"));
    close_all(s, &loop);
}

Test(pg_async, a_failed_batch_leaves_nothing_and_the_next_goes_on)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(NULL, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2}, a3 = {&log, 3};
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "D", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a1);
    /* E is new, D exists: the whole batch fails with SAGA_EDUP. */
    memset(&b, 0, sizeof b);
    tb_add(&b, "E", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "D", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a2);
    /* An update of a saga that does not exist: SAGA_ENOTFOUND. */
    memset(&b, 0, sizeof b);
    tb_add(&b, "F", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "nobody", SAGA_STATE_COMPLETED, 0, 2);
    submit(s, &b, &a3);
    run_until(&loop, &log, 3);
    cr_assert_eq(log.rc[0], SAGA_OK);
    cr_assert_eq(log.rc[1], SAGA_EDUP, "%s", saga_strerror(log.rc[1]));
    cr_assert_eq(log.rc[2], SAGA_ENOTFOUND, "%s", saga_strerror(log.rc[2]));
    cr_assert(!has(s, "E"), "nothing of the failed batch remains");
    cr_assert(!has(s, "F"), "nothing of the failed batch remains");
    ssc_text t;
    cr_assert_str_eq(ssc_jscan(s, "E", &t), "");
    cr_assert_str_eq(ssc_jscan(s, "D", &t), "D/1:1:-1:0:0:10:- ");
    /* And the store goes on. */
    done_arg a4 = {&log, 4};
    memset(&b, 0, sizeof b);
    tb_add(&b, "G", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a4);
    run_until(&loop, &log, 4);
    cr_assert_eq(log.rc[3], SAGA_OK);
    cr_assert(has(s, "G"));
    close_all(s, &loop);
}

Test(pg_async, bad_batches_are_refused_at_once)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(NULL, &loop);
    done_log log = {0};
    done_arg a = {&log, 1};
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.nsagas = 1; /* and no array */
    cr_assert_eq(s->submit_batch(s, &w, on_done, &a), SAGA_EINVAL);
    cr_assert_eq(s->submit_batch(s, NULL, on_done, &a), SAGA_EINVAL);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(log.n, 0, "a refused batch has no completion");
    close_all(s, &loop);
}

Test(pg_async, reads_during_a_flight_see_committed_data_only)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(NULL, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2};
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "Q", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a1);
    run_until(&loop, &log, 1);

    /* Another session inserts R without committing: the store's batch
     * that inserts R too waits on it, in flight. */
    PGconn *c = admin();
    char sql[512];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO %s.sagas(id, def_name, def_version, state, "
             "step, attempt, flags, created_ms, updated_ms, due_ms, "
             "deadline_ms, data) VALUES ('R', 'x', 1, 1, 0, 0, 0, 0, 0, 0, 0, "
             "'')",
             g_schema);
    exec_ok(c, sql);
    memset(&b, 0, sizeof b);
    tb_add(&b, "P", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "R", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a2);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
             "'Lock' AND application_name = 'libsaga'");
    wait_until(c, sql);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(log.n, 1, "the second batch is still in flight");

    /* Every reading slot answers, from committed data. */
    ssc_copy q;
    cr_assert_eq(ssc_get(s, "Q", &q), SAGA_OK, "%s", s->errmsg(s));
    free(q.data);
    cr_assert(!has(s, "P"), "P is not committed yet");
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "Q ");
    cr_assert_str_eq(ssc_jscan(s, "Q", &t), "Q/1:1:-1:0:0:10:- ");
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "");
    char id[SAGA_ID_SIZE];
    cr_assert_eq(s->idem_get(s, "k", id), SAGA_ENOTFOUND);
    cr_assert_eq(s->kv_get(s, "k", NULL, NULL), SAGA_ENOTFOUND);

    /* The other session gives up: the batch commits. */
    exec_ok(c, "ROLLBACK");
    run_until(&loop, &log, 2);
    cr_assert_eq(log.rc[1], SAGA_OK, "%s", saga_strerror(log.rc[1]));
    cr_assert(has(s, "P") && has(s, "R"));
    PQfinish(c);
    close_all(s, &loop);
}

/* ------------------------------------------------------------------------ */
/* Lost connections                                                         */

Test(pg_async, a_batch_killed_before_its_commit_is_read_back_as_failed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(NULL, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2};
    PGconn *c = admin();
    char sql[512];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO %s.sagas(id, def_name, def_version, state, "
             "step, attempt, flags, created_ms, updated_ms, due_ms, "
             "deadline_ms, data) VALUES ('K', 'x', 1, 1, 0, 0, 0, 0, 0, 0, 0, "
             "'')",
             g_schema);
    exec_ok(c, sql);
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "M", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "K", SAGA_STATE_RUNNING, 1, 1);
    int pid = PQbackendPID(s->native_handle(s));
    submit(s, &b, &a1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
             "'Lock' AND pid = %d",
             pid);
    wait_until(c, sql);
    /* Mid-commit: the store's backend dies while its batch waits. */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    exec_ok(c, sql);
    exec_ok(c, "ROLLBACK");
    run_until(&loop, &log, 1);
    cr_assert_eq(log.rc[0], SAGA_ESTORE, "%s", saga_strerror(log.rc[0]));
    cr_assert(strstr(s->errmsg(s), "read back") != NULL, "%s", s->errmsg(s));
    cr_assert(!has(s, "M") && !has(s, "K"), "nothing of it remains");

    /* Reconnected, statements prepared again: the next batch commits. */
    memset(&b, 0, sizeof b);
    tb_add(&b, "N", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a2);
    run_until(&loop, &log, 2);
    cr_assert_eq(log.rc[1], SAGA_OK, "%s", saga_strerror(log.rc[1]));
    cr_assert(has(s, "N"));
    cr_assert_neq(PQbackendPID(s->native_handle(s)), pid);
    PQfinish(c);
    close_all(s, &loop);
}

#include "pg_proxy.h"

Test(pg_async, a_commit_whose_answer_was_lost_is_read_back_as_done)
{
    proxy px;
    proxy_start(&px);
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             px.port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(url, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2}, a3 = {&log, 3};
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "L0", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a1);
    run_until(&loop, &log, 1);
    cr_assert_eq(log.rc[0], SAGA_OK);

    /* The server commits the next batch; its answer never arrives. */
    atomic_store(&px.drop_answers, 1);
    memset(&b, 0, sizeof b);
    tb_add(&b, "L1", SAGA_STATE_RUNNING, 1, 1);
    tb_add(&b, "L0", SAGA_STATE_COMPLETED, 0, 2);
    submit(s, &b, &a2);
    PGconn *c = admin();
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.sagas WHERE id = 'L1'",
             g_schema);
    wait_until(c, sql);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(log.n, 1, "no answer yet");
    /* Then the connection breaks. */
    atomic_store(&px.drop_answers, 0);
    atomic_store(&px.cut, 1);
    run_until(&loop, &log, 2);
    cr_assert_eq(log.rc[1], SAGA_OK, "a committed batch is done: %s (%s)",
                 saga_strerror(log.rc[1]), s->errmsg(s));
    cr_assert(strstr(s->errmsg(s), "connection lost") != NULL,
              "the answer came through the read-back: %s", s->errmsg(s));
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_BIT(SAGA_STATE_COMPLETED), &t),
                     "L0 ");
    cr_assert_str_eq(ssc_jscan(s, "L0", &t),
                     "L0/1:1:-1:0:0:10:- L0/2:9:-1:0:0:20:- ");

    /* The store goes on over a new connection. */
    memset(&b, 0, sizeof b);
    tb_add(&b, "L2", SAGA_STATE_RUNNING, 1, 1);
    submit(s, &b, &a3);
    run_until(&loop, &log, 3);
    cr_assert_eq(log.rc[2], SAGA_OK, "%s", s->errmsg(s));
    cr_assert(has(s, "L2"));
    PQfinish(c);
    close_all(s, &loop);
    proxy_stop(&px);
}

Test(pg_async, a_lost_connection_while_idle_is_a_store_error_then_recovers)
{
    proxy px;
    proxy_start(&px);
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             px.port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *s = open_at(url, &loop);
    done_log log = {0};
    done_arg a1 = {&log, 1}, a2 = {&log, 2};
    /* The connection dies between batches: the next batch finds out. */
    atomic_store(&px.cut, 1);
    sleep_ms(100);
    tbatch b;
    memset(&b, 0, sizeof b);
    tb_add(&b, "I1", SAGA_STATE_RUNNING, 1, 1);
    saga_batch_writes w = tb_writes(&b);
    log.in_submit = 1;
    int rc = s->submit_batch(s, &w, on_done, &a1);
    log.in_submit = 0;
    int expect = 1;
    if (rc != SAGA_OK) {
        cr_assert_eq(rc, SAGA_ESTORE, "%s", saga_strerror(rc));
        expect = 0;
    } else {
        run_until(&loop, &log, 1);
        /* Never sent, or sent and lost: the read-back says which. */
        cr_assert(log.rc[0] == SAGA_ESTORE || log.rc[0] == SAGA_OK, "%d",
                  log.rc[0]);
        cr_assert_eq(has(s, "I1"), log.rc[0] == SAGA_OK);
    }
    /* The store reconnects (capped backoff) and the next batch commits. */
    for (int i = 0; i < 100; i++) {
        memset(&b, 0, sizeof b);
        tb_add(&b, "I2", SAGA_STATE_RUNNING, 1, 1);
        w = tb_writes(&b);
        rc = s->submit_batch(s, &w, on_done, &a2);
        if (rc == SAGA_OK)
            break;
        cr_assert_eq(rc, SAGA_ESTORE);
        sleep_ms(50);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    cr_assert_eq(rc, SAGA_OK, "%s", s->errmsg(s));
    run_until(&loop, &log, expect + 1);
    cr_assert_eq(log.rc[expect], SAGA_OK, "%s", s->errmsg(s));
    cr_assert(has(s, "I2"));
    close_all(s, &loop);
    proxy_stop(&px);
}

/* ------------------------------------------------------------------------ */
/* Many rows per statement                                                  */

/* Six sagas with every field set differently (NULLs, empty and binary
 * data), @p round 0: inserts; 1: updates, half with data. */
static void six(saga_record *r, unsigned *fl, saga_journal_entry *j, int round,
                char ids[6][8], char errs[6][32])
{
    static const unsigned char blob[] = {0x81, 0xa1, 'k', 0x00};
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], 8, "B%d", i);
        snprintf(errs[i], 32, "err %d/%d", i, round);
        r[i] = ssc_rec(ids[i],
                       round ? SAGA_STATE_COMPENSATING : SAGA_STATE_RUNNING,
                       1000 + i);
        r[i].step = i + round;
        r[i].attempt = (uint32_t)(i * 3);
        r[i].flags = (uint32_t)i;
        r[i].updated_ms = 2000 + i + round;
        r[i].due_ms = i % 2 ? 0 : 3000 + i;
        r[i].deadline_ms = -1 - i;
        r[i].idem_key = i % 3 == 0 ? NULL : ids[i];
        r[i].error = i % 2 ? errs[i] : NULL;
        if (i == 2 && round == 0) {
            r[i].data = blob;
            r[i].data_len = sizeof blob; /* with a NUL byte inside */
        }
        fl[i] = round == 0 ? (SAGA_PUT_INSERT | SAGA_PUT_DATA)
                : i % 2    ? SAGA_PUT_DATA
                           : 0;
        saga_journal_entry e = {ids[i],
                                (uint32_t)round + 1,
                                round ? SAGA_JOURNAL_STEP_FAIL
                                      : SAGA_JOURNAL_STARTED,
                                i - 1,
                                (uint32_t)i,
                                5 * i,
                                7 * i,
                                i % 2 ? errs[i] : NULL};
        j[i] = e;
    }
}

static void dump(saga_store *s, char *out, size_t n)
{
    ssc_text t;
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, ssc_full_cb, &t),
                 SAGA_OK);
    for (int i = 0; i < 6; i++) {
        char id[8];
        snprintf(id, sizeof id, "B%d", i);
        cr_assert_eq(s->journal_scan(s, id, ssc_journal_cb, &t), SAGA_OK);
    }
    snprintf(out, n, "%s", t.buf);
}

Test(pg_async, many_rows_per_statement_write_what_single_rows_write)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *one = open_at(NULL, &loop); /* row by row, via the slots */
    uv_loop_t loop2;
    uv_loop_init(&loop2);
    saga_store *bulk = open_at(NULL, &loop2);
    done_log log = {0};
    done_arg a[4] = {{&log, 1}, {&log, 2}, {&log, 3}, {&log, 4}};
    for (int round = 0; round < 2; round++) {
        saga_record r[6];
        unsigned fl[6];
        saga_journal_entry j[6];
        char ids[6][8], errs[6][32];
        six(r, fl, j, round, ids, errs);
        cr_assert_eq(one->begin(one), SAGA_OK);
        for (int i = 0; i < 6; i++) {
            cr_assert_eq(one->saga_put(one, &r[i], fl[i]), SAGA_OK, "%s",
                         one->errmsg(one));
            cr_assert_eq(one->journal_append(one, &j[i]), SAGA_OK);
        }
        cr_assert_eq(one->commit(one), SAGA_OK);
        saga_batch_writes w;
        memset(&w, 0, sizeof w);
        w.sagas = r;
        w.put_flags = fl;
        w.nsagas = 6;
        w.journal = j;
        w.njournal = 6;
        cr_assert_eq(bulk->submit_batch(bulk, &w, on_done, &a[round]), SAGA_OK);
        run_until(&loop2, &log, round + 1);
        cr_assert_eq(log.rc[round], SAGA_OK, "%s", bulk->errmsg(bulk));
        static char d1[16384], d2[16384];
        dump(one, d1, sizeof d1);
        dump(bulk, d2, sizeof d2);
        cr_assert_str_eq(d2, d1, "round %d", round);
    }
    /* A missing saga among many updates: SAGA_ENOTFOUND, nothing written;
     * an existing one among many inserts: SAGA_EDUP. */
    saga_record r[6];
    unsigned fl[6];
    saga_journal_entry j[6];
    char ids[6][8], errs[6][32];
    static char before[16384], after[16384];
    dump(bulk, before, sizeof before);
    six(r, fl, j, 1, ids, errs);
    r[4].id = "nobody";
    for (int i = 0; i < 6; i++)
        j[i].seq = 9;
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.sagas = r;
    w.put_flags = fl;
    w.nsagas = 6;
    w.journal = j;
    w.njournal = 6;
    cr_assert_eq(bulk->submit_batch(bulk, &w, on_done, &a[2]), SAGA_OK);
    six(r, fl, j, 0, ids, errs);
    r[0].id = "C0";
    r[1].id = "C1";
    r[3].id = "C3"; /* B2, B4, B5 exist */
    for (int i = 0; i < 6; i++)
        j[i].seq = 10;
    cr_assert_eq(bulk->submit_batch(bulk, &w, on_done, &a[3]), SAGA_OK);
    run_until(&loop2, &log, 4);
    cr_assert_eq(log.rc[2], SAGA_ENOTFOUND, "%s", saga_strerror(log.rc[2]));
    cr_assert_eq(log.rc[3], SAGA_EDUP, "%s", saga_strerror(log.rc[3]));
    dump(bulk, after, sizeof after);
    cr_assert_str_eq(after, before, "nothing of the failed batches remains");
    saga_store_free(one);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    close_all(bulk, &loop2);
}

/* ------------------------------------------------------------------------ */
/* Reconnecting never blocks the loop                                       */

typedef struct ticker {
    uv_timer_t t;
    proxy *px;
    saga_engine *e;
    int ticks, held_ticks, started, want, failed_starts;
    uint64_t last, max_gap_ns; /* reported, not asserted */
} ticker;

static void step_ok(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

/* Every 5 ms: count, start a saga (the first want ticks), and at tick 20
 * make the server unreachable for 1.5 s (the proxy's clock). */
static void tick_cb(uv_timer_t *t)
{
    ticker *k = t->data;
    k->ticks++;
    uint64_t now = uv_hrtime();
    if (k->last && now - k->last > k->max_gap_ns)
        k->max_gap_ns = now - k->last;
    k->last = now;
    if (atomic_load(&k->px->holding))
        k->held_ticks++;
    if (k->ticks == 20)
        atomic_store(&k->px->hold_ms, 1500);
    if (k->started < k->want) {
        char id[SAGA_ID_SIZE];
        if (saga_start(k->e, "tick", NULL, NULL, 0, id, NULL, NULL) == SAGA_OK)
            k->started++;
        else
            k->failed_starts++;
    }
}

static int engine_active(saga_engine *e)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(e, &st), SAGA_OK);
    return (int)st.active;
}

/* Sagas flow through an engine on the loop while the server becomes
 * unreachable for 1.5 s: @p lease_ms 0, no lease, and the connections are
 * closed (reset) at the outage's start; else the engine holds a lease of
 * that length (shorter than the outage: it runs out) and the partition is
 * silent (the renewal in flight gets no answer until the end). */
/* @p poll_ms: the control queue's poll (0: off with a lease, the default
 * without). */
static void outage(uint32_t lease_ms, uint32_t poll_ms)
{
    proxy px;
    proxy_start(&px);
    atomic_store(&px.freeze, lease_ms > 0);
    char url[128];
    snprintf(url, sizeof url, "postgresql://saga@127.0.0.1:%d/postgres",
             px.port);
    static int n;
    snprintf(g_schema, sizeof g_schema, "a_loop_%d_%d", (int)getpid(), n++);
    saga_pg_options so = SAGA_PG_OPTIONS_INIT;
    so.schema = g_schema;
    /* Longer than the outage: a blocking connect would wait it out. */
    so.connect_timeout_s = 5;
    so.lease_ms = lease_ms;
    so.owner_id = lease_ms ? "loop" : NULL;
    saga_store *s = NULL;
    cr_assert_eq(saga_store_postgres_open(&s, url, &so), SAGA_OK, "%s",
                 saga_store_postgres_open_errmsg());
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.log_level = SAGA_LOG_ERROR;
    o.store_retry_ms = 20;
    ticker k;
    memset(&k, 0, sizeof k);
    k.px = &px;
    k.want = 100;
    cr_assert_eq(saga_engine_new(&k.e, s, NULL, &o), SAGA_OK);
    saga_def *d;
    saga_step_options sto = SAGA_STEP_OPTIONS_INIT;
    cr_assert_eq(saga_def_new(&d, "tick", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "one", step_ok, NULL, &sto, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "two", step_ok, NULL, &sto, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(k.e, d), SAGA_OK);
    /* The control queue's poll (admin.c) reads on the loop too (store
     * version 7, kv_get_submit): on, every 20 ms, through the silent
     * partition in a_silent_partition_with_the_control_poll_...; before,
     * it was a synchronous read that waited for the server. */
    if (lease_ms || poll_ms)
        cr_assert_eq(saga_engine_set_control_poll(k.e, poll_ms), SAGA_OK);
    cr_assert_eq(saga_engine_start(k.e), SAGA_OK, "%s",
                 saga_engine_errmsg(k.e));
    uv_timer_init(&loop, &k.t);
    k.t.data = &k;
    uv_timer_start(&k.t, tick_cb, 5, 5);
    /* Until every saga ended after the outage (bounded: 6000 ticks). */
    while (k.ticks < 6000 &&
           (k.started < k.want || atomic_load(&px.outages) == 0 ||
            engine_active(k.e) > 0))
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(atomic_load(&px.outages), 1, "the outage happened");
    cr_log_info("%d ticks during the outage, %d in all, longest gap %.1f ms",
                k.held_ticks, k.ticks, (double)k.max_gap_ns / 1e6);
    /* 1.5 s of 5 ms ticks is 300; a loop blocked in a connect gets none
     * (the machine is shared: 40% is plenty). */
    cr_assert_geq(k.held_ticks, 120,
                  "the loop ticked %d times during the outage (%d in all)",
                  k.held_ticks, k.ticks);
    cr_assert_eq(k.started, k.want, "%d starts failed", k.failed_starts);
    cr_assert_eq(engine_active(k.e), 0, "every saga ended (%d ticks)", k.ticks);
    PGconn *c = admin();
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.sagas WHERE state = %d",
             g_schema, (int)SAGA_STATE_COMPLETED);
    cr_assert_eq(query_int(c, sql), k.want,
                 "every saga completed in the "
                 "store");
    PQfinish(c);
    uv_timer_stop(&k.t);
    uv_close((uv_handle_t *)&k.t, NULL);
    saga_engine_free(k.e);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    proxy_stop(&px);
}

Test(pg_async, a_server_unreachable_for_a_while_never_stops_the_loop)
{
    outage(0, 0);
}

/* The lease's renewals and claims go out on the loop too: a silent
 * partition longer than the lease stalls no timer, and the engine still
 * ends every saga (under a new epoch). */
Test(pg_async, a_silent_partition_past_the_lease_never_stops_the_loop)
{
    outage(1000, 0);
}

/* The same with the engine polling its control queue every 20 ms: the
 * poll's read goes out on the loop and is answered there (it waited for
 * the server before: no tick ran while the partition lasted). */
Test(pg_async, a_silent_partition_with_the_control_poll_never_stops_the_loop)
{
    outage(1000, 20);
}

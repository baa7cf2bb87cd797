/*
 * test_checkout_pgtxn.c — the checkout's SQL layer on PostgreSQL
 * (examples/checkout/db.h): a transaction whose connection is lost is
 * lost. Its statements fail until ck_rollback(), and ck_commit() fails,
 * instead of running on a new connection, each committed on its own, and
 * the COMMIT of nothing there answering success. Before the fix an item
 * added to a new cart was answered 201 while its cart row was lost with
 * the transaction, and the checkout then got 404 cart_not_found
 * (hostile_killloop_distributed_pg, the connections cut).
 *
 * Run by tests/pg/with-pg.sh (SAGA_PG_URL); a schema of its own per run.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"

static ck_db *db;

static void setup(void)
{
    const char *url = getenv("SAGA_PG_URL");
    cr_assert_not_null(url, "run under tests/pg/with-pg.sh");
    char schema[64];
    snprintf(schema, sizeof schema, "ckt_%d", (int)getpid());
    db = ck_db_connect(NULL, url, schema);
    cr_assert_not_null(db);
    cr_assert_eq(ck_exec(db, "CREATE TABLE t (k TEXT PRIMARY KEY, n "
                             "INTEGER NOT NULL)"),
                 CK_OK);
}

static void teardown(void) { ck_db_close(db); }

/* The backend of the connection @p db runs on now. */
static int backend(void)
{
    ck_stmt *st = ck_prep(db, "SELECT pg_backend_pid()");
    cr_assert_not_null(st);
    cr_assert_eq(ck_step(st), CK_ROW);
    int pid = (int)ck_col_int(st, 0);
    ck_done(st);
    return pid;
}

/* Ends backend @p pid from a connection of our own (as
 * pg_terminate_backend from an operator, or a restart, would). */
static void cut(int pid)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d), pg_sleep(0.2)",
             pid);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQfinish(c);
}

static int put(const char *k, int n)
{
    ck_stmt *st = ck_prep(db, "INSERT INTO t (k, n) VALUES (?, ?)");
    if (st == NULL)
        return CK_ERR;
    ck_bind_text(st, 1, k);
    ck_bind_int(st, 2, n);
    int rc = ck_step(st);
    ck_done(st);
    return rc;
}

static long rows(void)
{
    ck_stmt *st = ck_prep(db, "SELECT COUNT(*) FROM t");
    cr_assert_not_null(st);
    cr_assert_eq(ck_step(st), CK_ROW);
    long n = (long)ck_col_int(st, 0);
    ck_done(st);
    return n;
}

TestSuite(checkout_pgtxn, .init = setup, .fini = teardown);

Test(checkout_pgtxn, a_transaction_lost_with_its_connection_commits_nothing)
{
    cr_assert_eq(ck_begin(db), CK_OK);
    cr_assert_eq(put("a", 1), CK_DONE);
    cut(backend());
    /* The rest of the transaction fails, on no other connection. */
    cr_assert_neq(put("b", 2), CK_DONE);
    cr_assert_neq(put("c", 3), CK_DONE);
    cr_assert_neq(ck_commit(db), CK_OK, "the commit of a lost transaction");
    cr_assert_eq(ck_rollback(db), CK_OK);
    /* Nothing of it was written; the next statements run again. */
    cr_assert_eq(rows(), 0);
    cr_assert_eq(put("d", 4), CK_DONE);
    cr_assert_eq(rows(), 1);
}

Test(checkout_pgtxn, a_failed_transaction_does_not_commit)
{
    cr_assert_eq(put("a", 1), CK_DONE);
    cr_assert_eq(ck_begin(db), CK_OK);
    cr_assert_eq(put("b", 2), CK_DONE);
    cr_assert_eq(put("a", 3), CK_CONSTRAINT); /* aborts the transaction */
    cr_assert_neq(ck_commit(db), CK_OK, "COMMIT answered ROLLBACK");
    cr_assert_eq(ck_rollback(db), CK_OK);
    cr_assert_eq(rows(), 1);
}

Test(checkout_pgtxn, a_transaction_commits)
{
    cr_assert_eq(ck_begin(db), CK_OK);
    cr_assert_eq(put("a", 1), CK_DONE);
    cr_assert_eq(put("b", 2), CK_DONE);
    cr_assert_eq(ck_commit(db), CK_OK);
    cr_assert_eq(rows(), 2);
}

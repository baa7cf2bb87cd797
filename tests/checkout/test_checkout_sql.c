/*
 * test_checkout_sql.c — the checkout's SQL layer (examples/checkout/db.h):
 * the PostgreSQL dialect it writes (parameters, DDL words, literals left
 * alone), and its SQLite implementation (binding, NULLs, blobs, constraint
 * errors, changes, RETURNING, statements given back and prepared again).
 * The PostgreSQL implementation runs in checkout_*_distributed_pg.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

static void dialect(const char *sql, const char *want, int want_n)
{
    int n = -1;
    char *got = ck_sql_pg(sql, &n);
    cr_assert_not_null(got);
    cr_expect_str_eq(got, want, "%s", sql);
    cr_expect_eq(n, want_n, "%s: %d parameters", sql, n);
    free(got);
}

Test(checkout_sql, parameters_become_numbered)
{
    dialect("SELECT a FROM t WHERE b = ? AND c = ?",
            "SELECT a FROM t WHERE b = $1 AND c = $2", 2);
    dialect("UPDATE t SET a = ?2 WHERE b = ?1 AND c >= ?2",
            "UPDATE t SET a = $2 WHERE b = $1 AND c >= $2", 2);
    dialect("SELECT 1 WHERE a = ? AND (CAST(?2 AS TEXT) IS NULL OR b = ?2)",
            "SELECT 1 WHERE a = $1 AND (CAST($2 AS TEXT) IS NULL OR b = $2)",
            2);
    dialect("VALUES (?12)", "VALUES ($12)", 12);
    dialect("SELECT 1", "SELECT 1", 0);
}

Test(checkout_sql, literals_are_left_alone)
{
    dialect("SELECT '?' || 'INTEGER' FROM t WHERE a = ? AND b = 'it''s ?'",
            "SELECT '?' || 'INTEGER' FROM t WHERE a = $1 AND b = 'it''s ?'", 1);
}

Test(checkout_sql, ddl_words_become_postgres_types)
{
    dialect(
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT "
        "NULL, b BLOB, "
        "big_INTEGER TEXT, INTEGERS TEXT)",
        "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, b BYTEA, "
        "big_INTEGER TEXT, INTEGERS TEXT)",
        0);
}

static sqlite3 *lite;
static ck_db *db;

static void setup(void)
{
    cr_assert_eq(sqlite3_open(":memory:", &lite), SQLITE_OK);
    db = ck_db_sqlite(lite);
    cr_assert_not_null(db);
    cr_assert_eq(
        ck_schema(db, "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL "
                      "CHECK (n >= 0), s TEXT, b BLOB, id INTEGER UNIQUE)"),
        CK_OK);
}

static void teardown(void)
{
    ck_db_close(db);
    cr_assert_eq(sqlite3_close(lite), SQLITE_OK);
}

static int insert(const char *k, int64_t n, const char *s)
{
    ck_stmt *st = ck_prep(db, "INSERT INTO t (k, n, s, b) VALUES (?, ?, ?, ?)");
    cr_assert_not_null(st);
    ck_bind_text(st, 1, k);
    ck_bind_int(st, 2, n);
    ck_bind_text(st, 3, s); /* NULL: SQL NULL */
    ck_bind_blob(st, 4, "\0\1\2", 3);
    int rc = ck_step(st);
    ck_done(st);
    return rc;
}

TestSuite(checkout_sql_sqlite, .init = setup, .fini = teardown);

Test(checkout_sql_sqlite, binds_reads_and_counts)
{
    cr_assert_eq(insert("a", 1, "x"), CK_DONE);
    cr_assert_eq(insert("b", 2, NULL), CK_DONE);
    cr_assert_eq(ck_changes(db), 1);
    ck_stmt *st = ck_prep(db, "SELECT k, n, s, b FROM t ORDER BY k");
    cr_assert_eq(ck_step(st), CK_ROW);
    cr_assert_str_eq(ck_col_text(st, 0), "a");
    cr_assert_eq(ck_col_int(st, 1), 1);
    cr_assert_not(ck_col_null(st, 2));
    size_t n;
    const unsigned char *b = ck_col_blob(st, 3, &n);
    cr_assert_eq(n, 3);
    cr_assert(b[0] == 0 && b[1] == 1 && b[2] == 2);
    cr_assert_eq(ck_step(st), CK_ROW);
    cr_assert(ck_col_null(st, 2));
    cr_assert_null(ck_col_text(st, 2));
    cr_assert_eq(ck_step(st), CK_DONE);
    ck_done(st);
    st = ck_prep(db, "UPDATE t SET n = n + ?1 WHERE n >= ?1");
    ck_bind_int(st, 1, 1);
    cr_assert_eq(ck_step(st), CK_DONE);
    ck_done(st);
    cr_assert_eq(ck_changes(db), 2);
}

Test(checkout_sql_sqlite,
     constraints_are_reported_and_the_statement_is_reusable)
{
    cr_assert_eq(insert("a", 1, "x"), CK_DONE);
    cr_assert_eq(insert("a", 1, "x"), CK_CONSTRAINT);
    cr_assert_eq(insert("c", -1, "x"), CK_CONSTRAINT);
    cr_assert_eq(insert("c", 3, "x"), CK_DONE);
}

Test(checkout_sql_sqlite, upsert_returning_and_transactions)
{
    static const char *const up =
        "INSERT INTO t (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET "
        "n = t.n + excluded.n RETURNING n";
    for (int i = 1; i <= 3; i++) {
        ck_stmt *st = ck_prep(db, up);
        ck_bind_text(st, 1, "k");
        ck_bind_int(st, 2, 10);
        cr_assert_eq(ck_step(st), CK_ROW);
        cr_assert_eq(ck_col_int(st, 0), 10 * i);
        ck_done(st);
    }
    cr_assert_eq(ck_begin(db), CK_OK);
    cr_assert_eq(insert("r", 1, NULL), CK_DONE);
    cr_assert_eq(ck_rollback(db), CK_OK);
    ck_stmt *st = ck_prep(db, "SELECT COUNT(*) FROM t WHERE k = 'r'");
    cr_assert_eq(ck_step(st), CK_ROW);
    cr_assert_eq(ck_col_int(st, 0), 0);
    ck_done(st);
    cr_assert_null(ck_prep(db, "SELECT nope FROM nowhere"));
}

Test(checkout_sql_sqlite, one_text_prepared_twice_at_once)
{
    static const char *const q = "SELECT k FROM t ORDER BY k";
    cr_assert_eq(insert("a", 1, NULL), CK_DONE);
    ck_stmt *s1 = ck_prep(db, q), *s2 = ck_prep(db, q);
    cr_assert_eq(ck_step(s1), CK_ROW);
    cr_assert_eq(ck_step(s2), CK_ROW);
    ck_done(s2);
    ck_done(s1);
    s1 = ck_prep(db, q);
    cr_assert_eq(ck_step(s1), CK_ROW);
    ck_done(s1);
}

/*
 * test_stores.c — the store conformance suite on the built-in stores, plus
 * what only one of them has: the SQLite file surviving a reopen, schema
 * versioning and options; the memory store at 100k sagas.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_suite.h"
#include "tmpdir.h"

/* ------------------------------------------------------------------------ */
/* The suite on both stores                                                 */

static int memory_setup(saga_store **out) { return saga_store_memory_new(out); }

SAGA_STORE_CONFORMANCE(store_memory, memory_setup)

static tmpdir T;

static int sqlite_setup(saga_store **out)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    return saga_store_sqlite_open(out, tmpdir_path(&T, "store.db"), NULL);
}

static void sqlite_teardown(void) { tmpdir_remove(&T); }

SAGA_STORE_CONFORMANCE_EX(store_sqlite, sqlite_setup, sqlite_teardown)

/* The same suite with synchronous = OFF: the setting must not change
 * behaviour, only durability. */
static int sqlite_nosync_setup(saga_store **out)
{
    saga_sqlite_options o;
    cr_assert_eq(saga_sqlite_options_init(&o, SAGA_SQLITE_OPTIONS_VERSION),
                 SAGA_OK);
    o.synchronous = 2;
    cr_assert_eq(tmpdir_make(&T), 0);
    return saga_store_sqlite_open(out, tmpdir_path(&T, "store.db"), &o);
}

SAGA_STORE_CONFORMANCE_EX(store_sqlite_nosync, sqlite_nosync_setup,
                          sqlite_teardown)

/* ------------------------------------------------------------------------ */
/* SQLite only                                                              */

TestSuite(sqlite, .init = NULL, .fini = sqlite_teardown);

static saga_store *open_path(const char *path)
{
    saga_store *s = NULL;
    int rc = saga_store_sqlite_open(&s, path, NULL);
    cr_assert_eq(rc, SAGA_OK, "open %s: %s", path, saga_strerror(rc));
    return s;
}

Test(sqlite, data_survives_close_and_reopen)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    const char *path = tmpdir_path(&T, "s.db");
    saga_store *s = open_path(path);
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "kept", SAGA_STATE_RUNNING, 1);
    ssc_journal(s, "kept", 1, SAGA_JOURNAL_STARTED);
    ssc_msg(s, "o1", "payload");
    cr_assert_eq(s->kv_put(s, "k", "v", 1), SAGA_OK);
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "lost", SAGA_STATE_RUNNING, 2);
    saga_store_free(s); /* closing with an open transaction rolls it back */

    s = open_path(path);
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "kept ");
    cr_assert_str_eq(ssc_jscan(s, "kept", &t), "kept/1:1:0:1:0:10:- ");
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "o1:order-events:k:payload:7 ");
    cr_assert_eq(s->kv_get(s, "k", NULL, NULL), SAGA_OK);
    saga_store_free(s);
}

Test(sqlite, uses_wal_and_exposes_handle)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    saga_store *s = open_path(tmpdir_path(&T, "s.db"));
    sqlite3 *db = s->native_handle(s);
    cr_assert_not_null(db);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* A service's own table, written in the store's transaction. */
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE orders(id TEXT)", 0, 0, 0),
                 SQLITE_OK);
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO orders VALUES('o')", 0, 0, 0),
                 SQLITE_OK);
    ssc_insert(s, "a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM orders", -1, &st,
                                    NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 0, "rolled back together");
    sqlite3_finalize(st);
    saga_store_free(s);
}

static void set_user_version(const char *path, int v)
{
    sqlite3 *db;
    char sql[64];
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v);
    cr_assert_eq(sqlite3_exec(db, sql, 0, 0, 0), SQLITE_OK);
    sqlite3_close(db);
}

Test(sqlite, newer_schema_is_eversion)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    const char *path = tmpdir_path(&T, "s.db");
    saga_store_free(open_path(path));
    set_user_version(path, 1000);
    saga_store *s = (saga_store *)1;
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_EVERSION);
    cr_assert_null(s, "*out is NULL on failure");
    /* A fresh file of a newer library, never opened by us, too. */
    const char *p2 = tmpdir_path(&T, "new.db");
    set_user_version(p2, 7);
    cr_assert_eq(saga_store_sqlite_open(&s, p2, NULL), SAGA_EVERSION);
}

Test(sqlite, reopen_keeps_schema_version)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    const char *path = tmpdir_path(&T, "s.db");
    saga_store *s = open_path(path);
    sqlite3_stmt *st;
    sqlite3 *db = s->native_handle(s);
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    cr_assert_gt(v, 0);
    saga_store_free(s);
    saga_store_free(open_path(path)); /* migrating twice is a no-op */
}

Test(sqlite, foreign_file_is_estore)
{
    cr_assert_eq(tmpdir_make(&T), 0);
    const char *path = tmpdir_path(&T, "junk.db");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 4096; i++)
        fputc('x', f);
    fclose(f);
    saga_store *s = NULL;
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_ESTORE);
    cr_assert_null(s);
}

Test(sqlite, options_are_checked)
{
    saga_sqlite_options o;
    saga_store *s = NULL;
    cr_assert_eq(saga_sqlite_options_init(NULL, 1), SAGA_EINVAL);
    cr_assert_eq(saga_sqlite_options_init(&o, 0), SAGA_EVERSION);
    cr_assert_eq(saga_sqlite_options_init(&o, 99), SAGA_EVERSION);
    cr_assert_eq(saga_sqlite_options_init(&o, SAGA_SQLITE_OPTIONS_VERSION),
                 SAGA_OK);
    cr_assert(o.synchronous == 0 && o.busy_timeout_ms == 0 && o.vfs == NULL);
    cr_assert_eq(tmpdir_make(&T), 0);
    const char *path = tmpdir_path(&T, "s.db");
    o.synchronous = 3;
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_EINVAL);
    o.synchronous = 1;
    o.busy_timeout_ms = -1;
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_EINVAL);
    o.busy_timeout_ms = 10;
    o.vfs = "no-such-vfs";
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_ESTORE);
    o.vfs = NULL;
    o.version = 0;
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_EVERSION);
    cr_assert_eq(saga_store_sqlite_open(&s, NULL, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_store_sqlite_open(NULL, path, NULL), SAGA_EINVAL);
    o.version = SAGA_SQLITE_OPTIONS_VERSION;
    cr_assert_eq(saga_store_sqlite_open(&s, path, &o), SAGA_OK);
    saga_store_free(s);
}

Test(sqlite, in_memory_database_works)
{
    saga_store *s = open_path(":memory:");
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->saga_get(s, "a", NULL, NULL), SAGA_OK);
    saga_store_free(s);
}

/* ------------------------------------------------------------------------ */
/* Memory only                                                              */

static int count_cb(const saga_record *r, void *arg)
{
    ++*(int *)arg;
    return 0;
}

Test(memory, hundred_thousand_sagas)
{
    enum { N = 100000 };
    saga_store *s;
    char id[SAGA_ID_SIZE], key[32];
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    cr_assert_eq(s->begin(s), SAGA_OK);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%032d", i);
        snprintf(key, sizeof key, "key-%d", i);
        ssc_insert(s, id, SAGA_STATE_RUNNING, i / 10);
        cr_assert_eq(s->idem_put(s, key, id, i), SAGA_OK);
    }
    cr_assert_eq(s->commit(s), SAGA_OK);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%032d", i);
        snprintf(key, sizeof key, "key-%d", i);
        cr_assert_eq(s->saga_get(s, id, NULL, NULL), SAGA_OK);
        char got[SAGA_ID_SIZE];
        cr_assert_eq(s->idem_get(s, key, got), SAGA_OK);
        cr_assert_str_eq(got, id);
    }
    int n = 0;
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, count_cb, &n), SAGA_OK);
    cr_assert_eq(n, N);
    saga_store_free(s);
}

Test(memory, native_handle_is_null)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    cr_assert_null(s->native_handle(s));
    cr_assert_eq(saga_store_memory_new(NULL), SAGA_EINVAL);
    saga_store_free(s);
    saga_store_free(NULL);
}

/*
 * store_sqlite.c — the SQLite store: options, open, schema migrations,
 * transactions and error mapping. The data slots are in sqlite_ops.c.
 *
 * One connection, used from the engine's loop thread only, in WAL mode so
 * that readers (sagactl) never block the engine. Every statement is
 * prepared once at open and reset after each use, and parameters are
 * bound SQLITE_STATIC: the write path allocates nothing of its own.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "saga/saga.h"
#include "sqlite_int.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */

/* Migration i takes the schema from user_version i to i + 1. Steps are
 * append-only: a released step is never edited, a change is a new step. */
static const char *const migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE sagas("
    " id TEXT PRIMARY KEY NOT NULL,"
    " def_name TEXT NOT NULL,"
    " def_version INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " step INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " due_ms INTEGER NOT NULL,"
    " deadline_ms INTEGER NOT NULL,"
    " idem_key TEXT,"
    " error TEXT,"
    " data BLOB NOT NULL);"
    "CREATE INDEX sagas_state ON sagas(state, created_ms);"
    /* A journal is read per saga, in seq order: cluster it that way. */
    "CREATE TABLE journal("
    " saga_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " event INTEGER NOT NULL,"
    " step INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL,"
    " at_ms INTEGER NOT NULL,"
    " error TEXT,"
    " PRIMARY KEY(saga_id, seq)) WITHOUT ROWID;"
    "CREATE TABLE idem("
    " key TEXT PRIMARY KEY NOT NULL,"
    " saga_id TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    /* seq is the rowid: the queue order, without AUTOINCREMENT's extra
     * table write per message. */
    "CREATE TABLE outbox("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " topic TEXT NOT NULL,"
    " key TEXT,"
    " payload BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE inbox("
    " msg_id TEXT PRIMARY KEY NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " reply BLOB NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE kv("
    " key TEXT PRIMARY KEY NOT NULL,"
    " val BLOB NOT NULL) WITHOUT ROWID;",
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

int saga__sq_failf(sqlite_store *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

int saga__sq_fail(sqlite_store *s, int src, const char *what)
{
    int rc;
    if (src == SQLITE_CONSTRAINT_PRIMARYKEY || src == SQLITE_CONSTRAINT_UNIQUE)
        rc = SAGA_EDUP;
    else if ((src & 0xff) == SQLITE_NOMEM)
        rc = SAGA_ENOMEM;
    else
        rc = SAGA_ESTORE;
    /* sqlite3_errmsg() may describe a later call than @p src (it is per
     * connection), so print both. */
    return saga__sq_failf(s, rc, "%s: %s (%s)", what, sqlite3_errmsg(s->db),
                          sqlite3_errstr(src));
}

void saga__sq_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

int saga__sq_exec(sqlite_store *s, enum sq_stmt which, const char *what)
{
    sqlite3_stmt *st = s->st[which];
    int src = sqlite3_step(st);
    int rc = src == SQLITE_DONE ? SAGA_OK : saga__sq_fail(s, src, what);
    saga__sq_done(st);
    return rc;
}

int saga__sq_check_txn(sqlite_store *s)
{
    if (s->in_txn && sqlite3_get_autocommit(s->db))
        return saga__sq_failf(s, SAGA_ESTORE,
                              "the transaction was rolled back by an earlier "
                              "error; roll back and retry the batch");
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                             */

int saga__sq_begin(saga_store *self)
{
    sqlite_store *s = (sqlite_store *)self;
    if (s->in_txn || !sqlite3_get_autocommit(s->db))
        return saga__sq_failf(s, SAGA_ESTORE,
                              "begin: a transaction is already open");
    /* IMMEDIATE takes the write lock now: a deferred transaction that
     * reads first could fail to upgrade later without the busy handler
     * being consulted. */
    int rc = saga__sq_exec(s, SQ_BEGIN, "begin");
    if (rc == SAGA_OK)
        s->in_txn = 1;
    return rc == SAGA_OK ? rc : SAGA_ESTORE;
}

int saga__sq_commit(saga_store *self)
{
    sqlite_store *s = (sqlite_store *)self;
    if (!s->in_txn)
        return saga__sq_failf(s, SAGA_ESTORE, "commit: no open transaction");
    int rc = saga__sq_check_txn(s);
    if (rc == SAGA_OK)
        rc = saga__sq_exec(s, SQ_COMMIT, "commit");
    s->in_txn = 0;
    s->in_sp = 0;
    if (rc != SAGA_OK) {
        /* A failed COMMIT may leave the transaction open (SQLITE_BUSY) or
         * SQLite may have rolled it back already (I/O errors). Either way
         * nothing of the batch may remain. */
        if (!sqlite3_get_autocommit(s->db)) {
            sqlite3_step(s->st[SQ_ROLLBACK]);
            saga__sq_done(s->st[SQ_ROLLBACK]);
        }
        return SAGA_ESTORE;
    }
    return SAGA_OK;
}

int saga__sq_rollback(saga_store *self)
{
    sqlite_store *s = (sqlite_store *)self;
    /* Rolling back nothing is fine: the engine rolls back after a failed
     * commit, which has already dropped the transaction. */
    if (!s->in_txn)
        return SAGA_OK;
    s->in_txn = 0;
    s->in_sp = 0;
    if (sqlite3_get_autocommit(s->db))
        return SAGA_OK;
    int rc = saga__sq_exec(s, SQ_ROLLBACK, "rollback");
    return rc == SAGA_OK ? rc : SAGA_ESTORE;
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */

int saga_sqlite_options_init(saga_sqlite_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_SQLITE_OPTIONS_VERSION);
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static int exec_sql(sqlite_store *s, const char *sql, const char *what)
{
    int src = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return src == SQLITE_OK ? SAGA_OK : saga__sq_fail(s, src, what);
}

static int user_version(sqlite_store *s, int *out)
{
    sqlite3_stmt *st;
    int src = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
    if (src != SQLITE_OK)
        return saga__sq_fail(s, src, "read schema version");
    src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    int rc = src == SQLITE_ROW ? SAGA_OK
                               : saga__sq_fail(s, src, "read schema version");
    sqlite3_finalize(st);
    return rc;
}

/* Bring the schema to SCHEMA_VERSION in one transaction, so a crash
 * mid-migration leaves the old schema; reading the version inside it keeps
 * two processes opening one new file from both creating the tables. */
static int migrate(sqlite_store *s)
{
    int rc = exec_sql(s, "BEGIN IMMEDIATE", "migrate: begin");
    if (rc)
        return SAGA_ESTORE;
    int v = 0;
    rc = user_version(s, &v);
    if (rc == SAGA_OK && v > SCHEMA_VERSION)
        rc = saga__sq_failf(s, SAGA_EVERSION,
                            "schema version %d is newer than this library "
                            "supports (%d)",
                            v, SCHEMA_VERSION);
    if (rc == SAGA_OK && v < 0)
        rc = saga__sq_failf(s, SAGA_ECORRUPT, "bad schema version %d", v);
    for (; rc == SAGA_OK && v < SCHEMA_VERSION; v++)
        rc = exec_sql(s, migrations[v], "migrate");
    if (rc == SAGA_OK) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
        rc = exec_sql(s, sql, "migrate: set version");
    }
    if (rc == SAGA_OK)
        rc = exec_sql(s, "COMMIT", "migrate: commit");
    if (rc != SAGA_OK) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc == SAGA_EVERSION || rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    return SAGA_OK;
}

static int configure(sqlite_store *s, const saga_sqlite_options *o)
{
    static const char *const sync_sql[] = {"PRAGMA synchronous = FULL",
                                           "PRAGMA synchronous = NORMAL",
                                           "PRAGMA synchronous = OFF"};
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, o->busy_timeout_ms ? o->busy_timeout_ms : 5000);
    /* An in-memory database answers "memory" here, and that is fine. */
    int rc = exec_sql(s, "PRAGMA journal_mode = WAL", "set WAL mode");
    if (rc == SAGA_OK)
        rc = exec_sql(s, sync_sql[o->synchronous], "set synchronous");
    /* The sub-journal of a savepoint (the participant opens one per message)
     * in memory: with the default (a temporary file once it passes 64 KiB)
     * every page a message changed was also written to /var/tmp, one
     * pwrite each, for the rest of the batch. It is truncated at each
     * RELEASE, so it holds one message's pages at most. */
    if (rc == SAGA_OK)
        rc = exec_sql(s, "PRAGMA temp_store = MEMORY", "set temp_store");
    /* Debian builds SQLite with SECURE_DELETE: every page that a delete
     * frees (the outbox's, once its messages are published; purged inbox
     * and barrier rows) was overwritten with zeros, and so written to the
     * WAL once more. FAST still zeroes deleted content on pages that are
     * written anyway, but writes no page for it: the checkout wrote 48
     * pwrites per order with it on, 38 with FAST (bench/checkout/cpu.sh,
     * strace -c). */
    if (rc == SAGA_OK)
        rc = exec_sql(s, "PRAGMA secure_delete = FAST", "set secure_delete");
    return rc;
}

static int prepare_all(sqlite_store *s)
{
    for (int i = 0; i < SQ__COUNT; i++) {
        int src = sqlite3_prepare_v3(s->db, saga__sq_sql[i], -1,
                                     SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                     NULL);
        if (src != SQLITE_OK)
            return saga__sq_fail(s, src, "prepare");
    }
    return SAGA_OK;
}

void *saga__sq_native_handle(saga_store *self)
{
    return ((sqlite_store *)self)->db;
}

const char *saga__sq_errmsg(saga_store *self)
{
    return ((sqlite_store *)self)->err;
}

void saga__sq_close(saga_store *self)
{
    sqlite_store *s = (sqlite_store *)self;
    if (s == NULL)
        return;
    if (s->db) {
        saga__sq_rollback(self);
        for (int i = 0; i < SQ__COUNT; i++)
            sqlite3_finalize(s->st[i]);
        /* _v2: statements a service prepared through native_handle() may
         * still exist; the connection then closes when they are gone. */
        sqlite3_close_v2(s->db);
    }
    saga_free(s);
}

int saga_store_sqlite_open(saga_store **out, const char *path,
                           const saga_sqlite_options *opts)
{
    saga_sqlite_options defaults = SAGA_SQLITE_OPTIONS_INIT;
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (path == NULL) {
        saga_open_errmsg_set("sqlite: no path");
        return SAGA_EINVAL;
    }
    if (saga__check_version(opts, SAGA_SQLITE_OPTIONS_VERSION) != SAGA_OK) {
        saga_open_errmsg_set("sqlite: options version %u not supported "
                             "(1..%d)",
                             opts->version, SAGA_SQLITE_OPTIONS_VERSION);
        return SAGA_EVERSION;
    }
    if (opts == NULL)
        opts = &defaults;
    if (opts->synchronous < 0 || opts->synchronous > 2 ||
        opts->busy_timeout_ms < 0) {
        saga_open_errmsg_set("sqlite: synchronous must be 0..2 and "
                             "busy_timeout_ms not negative");
        return SAGA_EINVAL;
    }

    sqlite_store *s = saga_malloc(sizeof *s);
    if (s == NULL) {
        saga_open_errmsg_set("sqlite: out of memory");
        return SAGA_ENOMEM;
    }
    memset(s, 0, sizeof *s);
    s->base = saga__sq_store_ops;

    /* NOMUTEX: the connection belongs to the engine's loop thread. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                SQLITE_OPEN_NOMUTEX;
    int src = sqlite3_open_v2(path, &s->db, flags, opts->vfs);
    int rc = SAGA_OK;
    if (src != SQLITE_OK)
        rc = s->db ? saga__sq_fail(s, src, "open") : SAGA_ENOMEM;
    if (rc == SAGA_OK)
        rc = configure(s, opts);
    if (rc == SAGA_OK)
        rc = migrate(s);
    if (rc == SAGA_OK)
        rc = prepare_all(s);
    if (rc != SAGA_OK) {
        /* The store dies with its message: keep it for the caller. */
        saga_open_errmsg_set("sqlite: %s: %s", path,
                             s->err[0] ? s->err : saga_strerror(rc));
        saga__sq_close(&s->base);
        return rc == SAGA_EVERSION || rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    *out = &s->base;
    return SAGA_OK;
}

/*
 * db.h — the checkout's SQL layer: each service's queries are written once
 * and run on SQLite (its own file, DIR/<service>.db) or on PostgreSQL (its
 * own schema, named after the service, in one database).
 *
 * A service's business rows go in the same transaction as its inbox
 * record: the ck_db of a service is bound to its participant's store and
 * runs on that store's native handle (sqlite3 *, or the PGconn * of the
 * store's open transaction, fetched on every call: the PostgreSQL store
 * reconnects after a lost connection). ck_open_db() gives a connection of
 * its own, for the HTTP front that reads another service's tables.
 *
 * SQL is written in the dialect both accept (ON CONFLICT upserts,
 * RETURNING, UPDATE ... FROM, table-qualified columns in DO UPDATE). On
 * PostgreSQL the layer rewrites what differs, outside string literals:
 * parameters ? and ?N become $N; in DDL, INTEGER becomes BIGINT (times are
 * ms since the epoch), INTEGER PRIMARY KEY AUTOINCREMENT becomes
 * BIGSERIAL PRIMARY KEY and BLOB becomes BYTEA. Parameters are typed by
 * their first binding (text, int8, bytea; NULL lets the server infer);
 * results are read as text (int8 parsed, booleans 't'/'f' as 1/0, bytea
 * unescaped). Statements are prepared once per connection and cached.
 *
 * Everything runs on the loop thread.
 */
#ifndef CK_DB_H
#define CK_DB_H

#include <saga/saga.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ck_db ck_db;
typedef struct ck_stmt ck_stmt;

/* Results (equal to SQLite's codes, so that either may be compared). */
#define CK_OK 0
#define CK_ERR 1
#define CK_CONSTRAINT 19 /* a unique, check or foreign key violation */
#define CK_ROW 100
#define CK_DONE 101

/* A database on a SQLite handle that stays the caller's (tests). */
ck_db *ck_db_sqlite(sqlite3 *h);
/* The database of a participant's store: its native handle, in the
 * transaction the participant has open. @p schema: the PostgreSQL store's
 * schema, NULL for a SQLite store. */
ck_db *ck_db_participant(saga_participant *p, const char *schema);
/* A connection of its own to service @p svc's tables: the SQLite file
 * @p path, or (when @p pg_url is not NULL) schema @p schema of that
 * PostgreSQL database (created if missing). NULL on failure (logged). */
ck_db *ck_db_connect(const char *path, const char *pg_url, const char *schema);
/* Free @p db (its statements; its connection if it owns one). */
void ck_db_close(ck_db *db);
int ck_db_is_pg(const ck_db *db);

/* SQL without results (several statements allowed); 0 or CK_ERR (logged).
 * On PostgreSQL the DDL rewrites apply. */
int ck_exec(ck_db *db, const char *sql);
/* Create a service's tables: ck_exec, on PostgreSQL in one transaction
 * under the advisory lock the store takes for the schema, so that two
 * processes creating one schema's tables at once do not race. */
int ck_schema(ck_db *db, const char *ddl);
/* Transactions outside a handler (a handler runs in the participant's).
 * SQLite: BEGIN IMMEDIATE (the writer lock at once). */
int ck_begin(ck_db *db);
int ck_commit(ck_db *db);
int ck_rollback(ck_db *db);

/* Prepare @p sql (a string literal, or text that stays unchanged while
 * cached: the cache is keyed by its address and checked by content).
 * NULL on error (logged). Give it back with ck_done(). */
ck_stmt *ck_prep(ck_db *db, const char *sql);
/* Bind parameter @p i (1-based); a NULL text is SQL NULL. Copied. */
void ck_bind_text(ck_stmt *st, int i, const char *v);
void ck_bind_int(ck_stmt *st, int i, int64_t v);
void ck_bind_blob(ck_stmt *st, int i, const void *v, size_t n);
void ck_bind_null(ck_stmt *st, int i);
/* Run (first call) or advance: CK_ROW, CK_DONE, CK_CONSTRAINT, CK_ERR. */
int ck_step(ck_stmt *st);
/* Ready to run again (bindings cleared). */
void ck_reset(ck_stmt *st);
/* Column @p i (0-based) of the current row; text NULL for SQL NULL. Valid
 * until the next step, reset or done. */
const char *ck_col_text(ck_stmt *st, int i);
int64_t ck_col_int(ck_stmt *st, int i);
const void *ck_col_blob(ck_stmt *st, int i, size_t *n);
int ck_col_null(ck_stmt *st, int i);
void ck_done(ck_stmt *st);
/* Rows changed by the last INSERT, UPDATE or DELETE on @p db. */
int64_t ck_changes(ck_db *db);
/* Drop @p db's cached statements. */
void ck_db_forget(ck_db *db);
/* The PostgreSQL dialect of @p sql, as the layer runs it (malloc'd; NULL
 * without memory); @p nparams gets the highest parameter number. */
char *ck_sql_pg(const char *sql, int *nparams);

#endif /* CK_DB_H */

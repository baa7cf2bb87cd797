/*
 * sqlite_int.h — state of the SQLite store, shared by store_sqlite.c (open,
 * schema migrations, transactions, errors) and sqlite_ops.c (the data
 * slots). Internal to stores/sqlite.
 */
#ifndef SAGA_SQLITE_INT_H
#define SAGA_SQLITE_INT_H

#include <sqlite3.h>

#include "saga/saga.h"

/* Every statement the store runs, prepared once at open. */
enum sq_stmt {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_SAGA_INSERT,
    SQ_SAGA_UPDATE,
    SQ_SAGA_UPDATE_DATA,
    SQ_SAGA_GET,
    SQ_SAGA_SCAN,
    SQ_JOURNAL_INSERT,
    SQ_JOURNAL_SCAN,
    SQ_IDEM_INSERT,
    SQ_IDEM_GET,
    SQ_PURGE_JOURNAL,
    SQ_PURGE_IDEM,
    SQ_PURGE_SAGAS,
    SQ_PURGE_INBOX,
    SQ_OUTBOX_INSERT,
    SQ_OUTBOX_SCAN,
    SQ_OUTBOX_DONE,
    SQ_INBOX_INSERT,
    SQ_INBOX_GET,
    SQ_INBOX_REPLY,
    SQ_KV_GET,
    SQ_KV_PUT,
    SQ_KV_SCAN,
    SQ_KV_DEL,
    SQ_SAVEPOINT,
    SQ_SP_ROLLBACK,
    SQ_SP_RELEASE,
    SQ__COUNT
};

typedef struct sqlite_store {
    saga_store base;
    sqlite3 *db;
    sqlite3_stmt *st[SQ__COUNT];
    int in_txn; /* between our begin and commit/rollback */
    int in_sp;  /* a savepoint is open in it */
    char err[512];
} sqlite_store;

/* The SQL of each statement, indexed by enum sq_stmt (sqlite_ops.c). */
extern const char *const saga__sq_sql[SQ__COUNT];

/** Record a failure: @p src is a SQLite result code, mapped to SAGA_EDUP
 * (unique or primary key), SAGA_ENOMEM or SAGA_ESTORE. */
int saga__sq_fail(sqlite_store *s, int src, const char *what);
/** Record a failure that has no SQLite code behind it. */
int saga__sq_failf(sqlite_store *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Reset a statement and drop its (static) bindings. */
void saga__sq_done(sqlite3_stmt *st);
/** Step a statement that returns no row, then reset it. */
int saga__sq_exec(sqlite_store *s, enum sq_stmt which, const char *what);
/** SAGA_ESTORE if SQLite rolled our transaction back after an error:
 * writing on in autocommit would silently break atomicity. */
int saga__sq_check_txn(sqlite_store *s);

int saga__sq_begin(saga_store *self);
int saga__sq_commit(saga_store *self);
int saga__sq_rollback(saga_store *self);

/* sqlite_ops.c */
/* store_sqlite.c's slots, for the ops table in sqlite_ops.c */
void *saga__sq_native_handle(saga_store *self);
const char *saga__sq_errmsg(saga_store *self);
void saga__sq_close(saga_store *self);
/* The vtable every SQLite store starts from. */
extern const saga_store saga__sq_store_ops;

#endif /* SAGA_SQLITE_INT_H */

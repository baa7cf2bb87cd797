/*
 * pg_int.h — state of the PostgreSQL store, shared by store_postgres.c
 * (connect, schema, transactions, errors) and pg_ops.c (the data slots).
 * Internal to stores/postgres.
 */
#ifndef SAGA_PG_INT_H
#define SAGA_PG_INT_H

#include <libpq-fe.h>

#include "saga/postgres.h"

/* Every statement the store runs, prepared once per connection. */
enum pg_stmt {
    PG_SAGA_INSERT,
    PG_SAGA_UPDATE,
    PG_SAGA_UPDATE_DATA,
    PG_SAGA_GET,
    PG_SAGA_SCAN,
    PG_JOURNAL_INSERT,
    PG_JOURNAL_SCAN,
    PG_IDEM_INSERT,
    PG_IDEM_GET,
    PG_PURGE_JOURNAL,
    PG_PURGE_IDEM,
    PG_PURGE_SAGAS,
    PG_PURGE_INBOX,
    PG_OUTBOX_INSERT,
    PG_OUTBOX_SCAN,
    PG_OUTBOX_DONE,
    PG_INBOX_INSERT,
    PG_INBOX_GET,
    PG_INBOX_REPLY,
    PG_KV_GET,
    PG_KV_PUT,
    PG_KV_SCAN,
    PG_KV_DEL,
    /* Strict variants for a pipelined batch: a conflict or a missing row
     * raises an error, which aborts the transaction (there is no turning
     * back once COMMIT is queued behind them). */
    PG_SAGA_INSERT_X,
    PG_SAGA_UPDATE_X,
    PG_SAGA_UPDATE_DATA_X,
    PG_IDEM_INSERT_X,
    PG_OUTBOX_INSERT_X,
    PG_JOURNAL_INSERT_X,
    /* Ownership (a store with a lease, pg_own.c): the owned variants of
     * the saga and journal writes carry (owner, epoch) as their last two
     * parameters; a saga write whose fencing check fails raises SG001. */
    PG_SAGA_INSERT_O,
    PG_SAGA_UPDATE_O,
    PG_SAGA_UPDATE_DATA_O,
    PG_JOURNAL_INSERT_O,
    PG_JOURNAL_INSERT_OX,
    PG_OWN_FRESH,
    PG_OWN_RENEW,
    PG_OWN_LIVE,
    PG_OWN_CLAIM,
    PG_OWN_CHECK,
    PG_OWN_RELEASE,
    PG_OWN_FENCE,
    PG__COUNT
};

/* One statement: its SQL and the types of its parameters (Oids), 0-ended.
 * Every parameter is sent in binary. */
typedef struct pg_stmt_def {
    const char *sql;
    unsigned int types[16];
} pg_stmt_def;

extern const pg_stmt_def saga__pg_stmts[PG__COUNT];

typedef struct pg_store {
    saga_store base;
    PGconn *conn;
    char *conninfo;
    char schema[64];
    int connect_timeout_s;
    int in_txn;   /* between our begin and commit/rollback */
    int aborted;  /* a statement failed inside the transaction */
    int in_sp;    /* a savepoint is open */
    /* Ownership: on when lease_ms > 0 (pg_own.c). epoch 0: no lease yet. */
    uint32_t lease_ms;
    char owner[128];
    int64_t epoch;
    char err[512];
} pg_store;

/* Parameters of one statement call, all binary. */
typedef struct pg_params {
    int n;
    const char *val[16];
    int len[16];
    int fmt[16];
    char ints[16][8]; /* storage for int8 values in network order */
} pg_params;

void saga__pg_text(pg_params *p, const char *v);
void saga__pg_blob(pg_params *p, const void *v, size_t len);
void saga__pg_int(pg_params *p, int64_t v);

/* Read the columns of a binary result. */
int64_t saga__pg_col_int(const PGresult *r, int row, int col);
const char *saga__pg_col_text(const PGresult *r, int row, int col);
const void *saga__pg_col_blob(const PGresult *r, int row, int col,
                              size_t *len);

/** Record a failure with its own text. */
int saga__pg_failf(pg_store *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Run a prepared statement. On SAGA_OK *out holds its result (PQclear it);
 * a unique violation is SAGA_EDUP, anything else SAGA_ESTORE with errmsg
 * set. @p out may be NULL for statements without rows. */
int saga__pg_run(pg_store *s, enum pg_stmt which, const pg_params *p,
                 PGresult **out, const char *what);
/** Make sure the connection is up (reconnecting outside a transaction). */
int saga__pg_ensure_conn(pg_store *s);
/** The message of a failed result (or of the connection), trimmed. */
int saga__pg_fail_res(pg_store *s, const PGresult *res, const char *what);

/* pg_batch.c: the pipelined write_batch slot. */
int saga__pg_write_batch(saga_store *self, const saga_batch_writes *w);

/* Parameters of the data statements, shared by the slots and the batch. */
void saga__pg_saga_params(pg_params *p, const saga_record *r,
                          enum pg_stmt which);
void saga__pg_journal_params(pg_params *p, const saga_journal_entry *e);
void saga__pg_outbox_params(pg_params *p, const saga_message *m);
/** SAGA_ESTORE if a statement of the open transaction failed: PostgreSQL
 * then refuses every further statement until the rollback. */
int saga__pg_check_txn(pg_store *s);

int saga__pg_begin(saga_store *self);
int saga__pg_commit(saga_store *self);
int saga__pg_rollback(saga_store *self);
void saga__pg_close(saga_store *self);
int saga__pg_savepoint(saga_store *self);
int saga__pg_savepoint_rollback(saga_store *self);
int saga__pg_savepoint_release(saga_store *self);

/* pg_ops.c */
extern const saga_store saga__pg_ops;

/* pg_own.c: ownership. The statement for a batch's saga write (strict),
 * its journal write, and the (owner, epoch) parameters that the owned
 * variants take last (nothing when the store has no lease). */
enum pg_stmt saga__pg_put_stmt(const pg_store *s, unsigned int put_flags);
enum pg_stmt saga__pg_journal_stmt(const pg_store *s, int strict);
void saga__pg_own_params(const pg_store *s, pg_params *p);
/** With a lease: the parameters of PG_OWN_FENCE, the statement a batch
 * sends first (right after BEGIN), and 1; without: 0. */
int saga__pg_fence_params(const pg_store *s, pg_params *p);
/** Set the version-5 slots on a store with a lease. */
void saga__pg_own_init(pg_store *s);
#define PG_SQLSTATE_FENCED "SG001"

#endif /* SAGA_PG_INT_H */

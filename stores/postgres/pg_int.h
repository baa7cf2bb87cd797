/*
 * pg_int.h — state of the PostgreSQL store, shared by store_postgres.c
 * (connect, schema, transactions, errors) and pg_ops.c (the data slots).
 * Internal to stores/postgres.
 */
#ifndef SAGA_PG_INT_H
#define SAGA_PG_INT_H

#include <libpq-fe.h>

#include "saga/postgres.h"

#include <time.h>

/* The wall clock in ms (the batch log's time stamps). */
static inline int64_t saga__pg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    /* The batch log: each asynchronous batch records its number in the
     * same transaction, so that a commit whose answer was lost is
     * resolved by reading it back. */
    PG_BATCH_LOG,
    PG_BATCH_READ,
    /* Many rows in one statement (arrays, unnest): a batch's saga inserts,
     * updates and journal entries as one statement per kind instead of
     * one per row, with or without a lease. Same errors as the strict
     * variants. */
    PG_SAGA_INSERT_N,
    PG_SAGA_UPDATE_N,
    PG_SAGA_UPDATE_DATA_N,
    PG_JOURNAL_INSERT_N,
    /* Ownership (a store with a lease, pg_own.c). The strict saga writes,
     * the journal writes and their array forms take (owner, epoch) as
     * their last two parameters (NULL without a lease); a saga update
     * whose fencing check fails raises SG001. */
    PG_OWN_FRESH,
    PG_OWN_RENEW,
    PG_OWN_LIVE,
    PG_OWN_CLAIM,
    PG_OWN_CHECK,
    PG_OWN_RELEASE,
    PG_OWN_FENCE,
    /* saga_scan of active states only (the partial index). */
    PG_SAGA_SCAN_ACTIVE,
    /* A participant's inbox claim with the recorded reply (pg_part.c). */
    PG_PART_CLAIM,
    /* Outbox rows with an owner (migration 6, pg_outbox.c): the delete of
     * a published row by its owner, and the take-over of rows whose
     * writer's lease is not live. */
    PG_OUTBOX_DONE_X,
    PG_OUTBOX_TAKE,
    /* A batch's key-value write with SAGA_KV_EXPECT (migration 7, store
     * version 13): locks the key's row and raises SG002 unless it holds
     * the value expected (NULL: absent). */
    PG_KV_EXPECT,
    /* kv_get inside a transaction: the row locked until it ends, so that a
     * read-modify-write (a tool queueing or taking back an operator
     * request) and a batch's expectation on that key serialize. */
    PG_KV_GET_LOCK,
    PG__COUNT
};

/* The most parameters a statement takes. */
#define PG_MAXP 20

/* One statement: its SQL and the types of its parameters (Oids), 0-ended.
 * Every parameter is sent in binary. */
typedef struct pg_stmt_def {
    const char *sql;
    unsigned int types[PG_MAXP];
} pg_stmt_def;

extern const pg_stmt_def saga__pg_stmts[PG__COUNT];

struct pg_abatch;
struct pg_store;
struct uv_poll_s;
struct uv_timer_s;

typedef struct pg_store {
    saga_store base;
    PGconn *conn;
    /* Asynchronous commit (pg_async.c). */
    struct uv_loop_s *loop; /* set by attach */
    PGconn *rconn;          /* reads while a batch is in flight */
    PGconn *aconn;          /* the application's own (app_handle, pg_part.c) */
    struct uv_poll_s *poll; /* conn's socket while in pipeline mode */
    struct uv_timer_s *timer; /* reconnect backoff, deferred completions */
    int pipeline;             /* conn is in pipeline mode */
    int poll_events;          /* what poll watches now */
    int lost;                 /* conn lost with batches unresolved */
    int in_dispatch;          /* calling done callbacks */
    int close_pending;        /* close was called from a done callback */
    int backoff_ms;           /* next reconnect delay */
    int64_t next_connect_ms;  /* no reconnect before (monotonic ms) */
    /* Reconnect on the loop (pg_async.c): nconn is being connected
     * (reconn 1: PQconnectPoll) or set up (reconn 2: search path, the
     * statements prepared and the batch log read, pipelined), watched by
     * poll on poll_fd; it becomes conn once ready. */
    PGconn *nconn;
    int reconn;
    int reconn_nres;            /* setup results still expected */
    int poll_fd;                /* the socket poll watches */
    int64_t reconn_deadline_ms; /* give the attempt up then (monotonic) */
    int64_t reconn_seq;         /* the batch log's number, read back */
    uint64_t reconnects;        /* reconnections made on the loop */
    char log_writer[40];        /* this open's name in the batch log */
    int64_t batch_seq;          /* the last batch number given */
    struct pg_abatch *q_head, *q_tail; /* submitted, unresolved, in order */
    struct pg_abatch *f_head, *f_tail; /* resolved, done not yet called */

    char *conninfo;
    char schema[64];
    int connect_timeout_s;
    int in_txn;  /* between our begin and commit/rollback */
    int aborted; /* a statement failed inside the transaction */
    int in_sp;   /* a savepoint is open */
    /* Ownership: on when lease_ms > 0 (pg_own.c). epoch 0: no lease yet. */
    uint32_t lease_ms;
    char owner[128];
    int64_t epoch;
    int epoch_pending; /* a fresh renewal is in flight: batches wait */
    char err[512];
} pg_store;

/* What the pipeline answers, in submission order (pg_async.c): a batch
 * (fin NULL: done gets its result), or an ownership request (pg_own.c:
 * fin turns its results into the caller's answer). */
typedef void (*pg_fin_fn)(pg_store *s, struct pg_abatch *b);
typedef struct pg_abatch {
    struct pg_abatch *next;
    int64_t seq; /* a batch's number in the batch log */
    saga_store_done_cb done;
    void *arg;
    int rc;       /* first failure seen */
    int xsyncs;   /* sync results to come before its last (a participant's
                     commit: the writes, a sync, COMMIT, a sync) */
    int definite; /* rc came from a statement: the batch cannot commit */
    pg_fin_fn fin;
    void (*cb)(void); /* the caller's callback, for fin */
    PGresult *res[2]; /* the request's results with rows, in order */
    int nres;
    int64_t x; /* fin's own (fresh, limit) */
} pg_abatch;

/* Parameters of one statement call, all binary. */
typedef struct pg_params {
    int n;
    const char *val[PG_MAXP];
    int len[PG_MAXP];
    int fmt[PG_MAXP];
    char ints[PG_MAXP][8]; /* storage for int8 values in network order */
} pg_params;

void saga__pg_text(pg_params *p, const char *v);
void saga__pg_blob(pg_params *p, const void *v, size_t len);
void saga__pg_int(pg_params *p, int64_t v);

/* Read the columns of a binary result. */
int64_t saga__pg_col_int(const PGresult *r, int row, int col);
const char *saga__pg_col_text(const PGresult *r, int row, int col);
const void *saga__pg_col_blob(const PGresult *r, int row, int col, size_t *len);
/** Fill every field of @p r from a row in SAGA_COLS order (borrowed from
 * @p res). */
void saga__pg_read_record(const PGresult *res, int row, saga_record *r);

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
/** SAGA_OK, or SAGA_EINVAL with errmsg set for a malformed batch. */
int saga__pg_check_writes(pg_store *s, const saga_batch_writes *w);
/** Queue every statement of @p w on s->conn (prepared, binary), calling
 * @p after (may be NULL) after each; *nsent counts them. -1 on failure. */
int saga__pg_send_writes(pg_store *s, const saga_batch_writes *w,
                         int (*after)(void *), void *arg, size_t *nsent);
/** A failed statement's SQLSTATE as a slot result. */
int saga__pg_map_state(const char *st);

/* The journal entries packed in a saga row (sagas.jrn, migration 5): per
 * entry seq, event, step, attempt (int4), started_ms, at_ms, epoch (int8),
 * owner and error (an int4 length, -1 for NULL, then the bytes and a NUL),
 * all big-endian. */
#define PG_JRN_FIXED 40
/** Bytes that saga__pg_jrn_pack writes for @p e with @p owner. */
size_t saga__pg_jrn_size(const saga_journal_entry *e, const char *owner);
/** Write @p e (with the fencing token @p owner, @p epoch; NULL, 0 without
 * a lease) at @p out, which has saga__pg_jrn_size() bytes. */
void saga__pg_jrn_pack(unsigned char *out, const saga_journal_entry *e,
                       const char *owner, int64_t epoch);
/** Read the entry at *off of @p b (@p len bytes) into @p e (its strings
 * point into @p b; saga_id is @p saga_id) and advance *off. 0, or -1 if
 * the bytes are malformed. */
int saga__pg_jrn_next(const unsigned char *b, size_t len, size_t *off,
                      const char *saga_id, saga_journal_entry *e);

/* pg_async.c: attach, submit_batch, the read connection. */
int saga__pg_attach(saga_store *self, struct uv_loop_s *loop);
int saga__pg_submit_batch(saga_store *self, const saga_batch_writes *w,
                          saga_store_done_cb done, void *arg);
/** Before a synchronous use of conn: wait for the batches in flight
 * (their done callbacks run later, from the loop) and leave pipeline
 * mode. SAGA_OK or SAGA_ESTORE. */
int saga__pg_quiesce(pg_store *s);
/** The connection a read statement should use: the read connection while
 * batches are in flight outside a transaction, else conn. */
PGconn *saga__pg_reader(pg_store *s, int *rc);
/** This open's batch number in the batch log (0: none) into *seq, on
 * conn. SAGA_OK or SAGA_ESTORE. */
int saga__pg_read_log(pg_store *s, int64_t *seq);
/** On a store attached to a loop, whether a synchronous slot may connect
 * now: SAGA_ESTORE (errmsg set) while the loop reconnects or backs off
 * (a blocking connect to an unreachable server would stall the loop),
 * else SAGA_OK. Always SAGA_OK without a loop. */
int saga__pg_no_connect(pg_store *s);
/** A synchronous connect failed: back off (attached stores). */
void saga__pg_connect_failed(pg_store *s);
/** Send an ownership request on the loop: @p n statements (at most 2)
 * and a sync, one implicit transaction; @p fin answers it on the loop
 * (b->rc, b->res) exactly once, also with SAGA_ESTORE when the answer was
 * lost or the store closes first. SAGA_OK, or the refusal (fin never
 * runs). */
int saga__pg_submit_own(pg_store *s, const enum pg_stmt *which,
                        const pg_params *p, int n, pg_fin_fn fin,
                        void (*cb)(void), void *arg, int64_t x);
/** A read (or a take) on the loop, as saga__pg_submit_own sends it: the
 * @p n statements @p which with their parameters @p p, then @p fin turns
 * the results into the caller's answer (@p done, @p arg; @p x is fin's
 * own). @p what names the slot in messages. */
typedef struct pg_read {
    const enum pg_stmt *which;
    const pg_params *p;
    int n;
    pg_fin_fn fin;
    void (*done)(void);
    void *arg;
    int64_t x;
    const char *what;
} pg_read;
/** Submit @p r (pg_own.c): SAGA_EINVAL (NULL done), else as
 * saga__pg_submit_own. */
int saga__pg_submit_read(pg_store *s, const pg_read *r);
/** Whether @p w holds key-value writes only (store version 13): such a
 * batch writes nothing a lease owns, so it carries no lease check and is
 * not held back while a new lease is taken (pg_batch.c). */
int saga__pg_kv_only(const saga_batch_writes *w);
/** The journal entries of @p saga_id in a PG_JOURNAL_SCAN result, in seq
 * order, into *@p out (saga_malloc'd; strings point into @p res).
 * SAGA_OK, SAGA_ECORRUPT, SAGA_ENOMEM (pg_ops.c). */
int saga__pg_journal_entries(pg_store *s, const PGresult *res,
                             const char *saga_id, saga_journal_entry **out,
                             size_t *n);
/** pg_outbox.c: the version-10 outbox_scan_submit slot (every store). */
void saga__pg_outbox_init(pg_store *s);
/** pg_own.c: the version-7 kv_get_submit slot (every store). */
void saga__pg_kv_async_init(pg_store *s);
/** Release the loop handles (close). */
void saga__pg_async_close(pg_store *s);
/** The parameter count of statement @p i, its types into @p types. */
int saga__pg_stmt_types(int i, unsigned int types[PG_MAXP]);
/** Open a connection with the schema's search path and every statement
 * prepared; @p migrate also brings the schema up to date. */
int saga__pg_open_conn(pg_store *s, PGconn **out, int migrate);
/* Every connection's first parameters: TCP keepalives and a user timeout,
 * so that a silent partition (a peer gone without a reset) breaks the
 * connection in about 20 s, and the store reconnects, instead of after the
 * kernel's retransmissions (about 15 min). They come before "dbname": the
 * connection string's own values win. */
#define PG_TCP_KEYS                                                            \
    "keepalives", "keepalives_idle", "keepalives_interval",                    \
        "keepalives_count", "tcp_user_timeout"
#define PG_TCP_VALS "1", "10", "3", "3", "20000"

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

/* pg_part.c: a participant's batch reads and commit (version 9). */
int saga__pg_part_read(saga_store *self, int64_t now_ms,
                       const saga_part_read *r, size_t n, saga_part_read_cb cb,
                       void *arg);
int saga__pg_part_commit(saga_store *self, const saga_part_write *w, size_t n);
/* Version 11: the commit on the loop, the application's connection. */
int saga__pg_part_commit_submit(saga_store *self, const saga_part_write *w,
                                size_t n, saga_store_done_cb done, void *arg);
void *saga__pg_app_handle(saga_store *self);
/** pg_async.c: commit the open transaction on the loop: pipeline mode,
 * the batch-log row and what @p send queues, a sync, then COMMIT and a
 * sync (so that the connection leaves the transaction whatever failed),
 * answered like a batch (@p done; a lost answer read back from the batch
 * log). SAGA_OK (submitted: the transaction is no longer the slots'), or
 * the refusal (the transaction is rolled back; @p done never runs). */
/** pg_async.c: wait until the batches in flight on the main connection
 * are answered (blocking; their done callbacks run later, from the loop),
 * staying in pipeline mode. SAGA_OK, or SAGA_ESTORE when the connection
 * is lost (the loop's reconnection reads them back) or not answered
 * within @p limit_ms. */
int saga__pg_settle(pg_store *s, int64_t limit_ms);
int saga__pg_submit_txn(pg_store *s, int (*send)(pg_store *, void *), void *ctx,
                        saga_store_done_cb done, void *arg);

/* pg_ops.c */
extern const saga_store saga__pg_ops;

/** The strict statement (pg_batch.c, saga_put with a lease) for a saga
 * write with @p put_flags. */
enum pg_stmt saga__pg_put_stmt(unsigned int put_flags);
/** The fencing token, the last two parameters of the strict saga writes,
 * the journal writes and their array forms: (owner, epoch) with a lease,
 * (NULL, NULL) without. */
void saga__pg_own_params(const pg_store *s, pg_params *p);

/* pg_own.c: ownership. */
/** With a lease: the parameters of PG_OWN_FENCE, the statement a batch
 * sends first (right after BEGIN), and 1; without: 0. */
int saga__pg_fence_params(const pg_store *s, pg_params *p);
/** Set the version-5 slots on a store with a lease. */
void saga__pg_own_init(pg_store *s);
#define PG_SQLSTATE_FENCED "SG001"
/* A key-value write whose expectation failed (kv_changed(), migration 7). */
#define PG_SQLSTATE_KV_CHANGED "SG002"

#endif /* SAGA_PG_INT_H */

/*
 * pg_batch.c — the write_batch slot: one engine batch as one pipelined
 * round trip (libpq pipeline mode). BEGIN, every statement, COMMIT and a
 * sync go out together; the results come back in order. The first failed
 * statement aborts the transaction, so the COMMIT behind it answers
 * ROLLBACK and nothing of the batch remains. The strict statement variants
 * turn a conflict or a missing row into such an error.
 *
 * The connection is non-blocking while the pipeline runs: a batch larger
 * than the socket buffers would otherwise deadlock (we block writing while
 * the server blocks writing results we do not read).
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "pg_int.h"

typedef struct pipe_state {
    pg_store *s;
    size_t sent;     /* queries sent (BEGIN and COMMIT included) */
    size_t done;     /* results read */
    int rc;          /* first failure */
    int committed;   /* the COMMIT's result said COMMIT */
    int synced;      /* the sync is queued */
} pipe_state;

/* Map a failed statement's SQLSTATE to the slot contract. */
static int map_state(const char *st)
{
    if (st == NULL)
        return SAGA_ESTORE;
    if (strcmp(st, "23505") == 0)
        return SAGA_EDUP;
    if (strcmp(st, "22012") == 0)
        return SAGA_ENOTFOUND; /* the strict update found no row */
    if (strcmp(st, PG_SQLSTATE_FENCED) == 0)
        return SAGA_EFENCED; /* an owned write failed its fencing check */
    return SAGA_ESTORE;
}

/* Read every result that is ready without blocking. Returns 1 when the
 * pipeline's sync has been read (all done), 0 if more is to come, -1 if
 * the connection broke. */
static int read_ready(pipe_state *ps)
{
    PGconn *c = ps->s->conn;
    if (!PQconsumeInput(c))
        return -1;
    while (!PQisBusy(c)) {
        PGresult *res = PQgetResult(c);
        if (res == NULL) {
            /* The end of one query's results. With every query answered
             * and no sync queued yet, there is nothing more to read now
             * (and libpq would keep answering NULL). */
            if (!ps->synced && ps->done >= ps->sent)
                break;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            return 1;
        }
        size_t i = ps->done++;
        if (st == PGRES_FATAL_ERROR && ps->rc == SAGA_OK) {
            int rc = map_state(PQresultErrorField(res, PG_DIAG_SQLSTATE));
            saga__pg_fail_res(ps->s, res, "write_batch");
            ps->rc = rc;
        } else if (st == PGRES_PIPELINE_ABORTED && ps->rc == SAGA_OK) {
            ps->rc = saga__pg_failf(ps->s, SAGA_ESTORE,
                                    "write_batch: pipeline aborted");
        }
        if (i + 1 == ps->sent && st == PGRES_COMMAND_OK &&
            strcmp(PQcmdStatus(res), "COMMIT") == 0)
            ps->committed = 1;
        PQclear(res);
    }
    return 0;
}

/* Wait until the socket can be written (or read: results to drain). */
static int wait_io(PGconn *c, int want_write)
{
    struct pollfd p = {PQsocket(c), (short)(POLLIN | (want_write ? POLLOUT : 0)),
                       0};
    return poll(&p, 1, 30000) > 0 ? 0 : -1;
}

/* Flush what libpq buffered, reading results meanwhile. */
static int flush(pipe_state *ps)
{
    PGconn *c = ps->s->conn;
    for (;;) {
        int f = PQflush(c);
        if (f == 0)
            return 0;
        if (f < 0 || wait_io(c, 1) != 0 || read_ready(ps) < 0)
            return -1;
    }
}

static int send_one(pipe_state *ps, enum pg_stmt which, const pg_params *p)
{
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)which);
    if (!PQsendQueryPrepared(ps->s->conn, name, p->n, p->val, p->len, p->fmt,
                             1))
        return -1;
    ps->sent++;
    /* Keep the output buffer small: flush every few statements. */
    return (ps->sent & 63) == 0 ? flush(ps) : 0;
}

static int send_sql(pipe_state *ps, const char *sql)
{
    if (!PQsendQueryParams(ps->s->conn, sql, 0, NULL, NULL, NULL, NULL, 1))
        return -1;
    ps->sent++;
    return 0;
}

static int send_all(pipe_state *ps, const saga_batch_writes *w)
{
    if (send_sql(ps, "BEGIN") != 0)
        return -1;
    pg_params fence = {0};
    if (saga__pg_fence_params(ps->s, &fence) &&
        send_one(ps, PG_OWN_FENCE, &fence) != 0)
        return -1; /* with a lease: fenced unless it is live */
    for (size_t i = 0; i < w->nsagas; i++) {
        enum pg_stmt which = saga__pg_put_stmt(ps->s, w->put_flags[i]);
        pg_params p = {0};
        saga__pg_saga_params(&p, &w->sagas[i], which);
        saga__pg_own_params(ps->s, &p);
        if (send_one(ps, which, &p) != 0)
            return -1;
    }
    for (size_t i = 0; i < w->nidem; i++) {
        pg_params p = {0};
        saga__pg_text(&p, w->idem[i].key);
        saga__pg_text(&p, w->idem[i].saga_id);
        saga__pg_int(&p, w->idem[i].created_ms);
        if (send_one(ps, PG_IDEM_INSERT_X, &p) != 0)
            return -1;
    }
    for (size_t i = 0; i < w->noutbox; i++) {
        pg_params p = {0};
        saga__pg_outbox_params(&p, &w->outbox[i]);
        if (send_one(ps, PG_OUTBOX_INSERT_X, &p) != 0)
            return -1;
    }
    for (size_t i = 0; i < w->ndone; i++) {
        pg_params p = {0};
        saga__pg_text(&p, w->done_ids[i]);
        if (send_one(ps, PG_OUTBOX_DONE, &p) != 0)
            return -1;
    }
    for (size_t i = 0; i < w->njournal; i++) {
        pg_params p = {0};
        saga__pg_journal_params(&p, &w->journal[i]);
        saga__pg_own_params(ps->s, &p);
        if (send_one(ps, saga__pg_journal_stmt(ps->s, 1), &p) != 0)
            return -1;
    }
    if (send_sql(ps, "COMMIT") != 0 || !PQpipelineSync(ps->s->conn))
        return -1;
    ps->synced = 1;
    return flush(ps);
}

static int check_writes(pg_store *s, const saga_batch_writes *w)
{
    if (w == NULL || (w->nsagas && (w->sagas == NULL || w->put_flags == NULL)) ||
        (w->nidem && w->idem == NULL) || (w->noutbox && w->outbox == NULL) ||
        (w->ndone && w->done_ids == NULL) ||
        (w->njournal && w->journal == NULL))
        return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad arguments");
    for (size_t i = 0; i < w->nsagas; i++) {
        const saga_record *r = &w->sagas[i];
        if (r->id == NULL || r->def_name == NULL || strlen(r->id) == 0 ||
            strlen(r->id) > SAGA_ID_LEN ||
            (r->data == NULL && r->data_len > 0))
            return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad saga");
    }
    for (size_t i = 0; i < w->nidem; i++)
        if (w->idem[i].key == NULL || w->idem[i].saga_id == NULL)
            return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad key");
    for (size_t i = 0; i < w->noutbox; i++)
        if (w->outbox[i].id == NULL || w->outbox[i].topic == NULL)
            return saga__pg_failf(s, SAGA_EINVAL,
                                  "write_batch: bad message");
    for (size_t i = 0; i < w->njournal; i++)
        if (w->journal[i].saga_id == NULL)
            return saga__pg_failf(s, SAGA_EINVAL,
                                  "write_batch: bad journal entry");
    return SAGA_OK;
}

int saga__pg_write_batch(saga_store *self, const saga_batch_writes *w)
{
    pg_store *s = (pg_store *)self;
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "write_batch: a transaction is open");
    int rc = check_writes(s, w);
    if (rc)
        return rc;
    if ((rc = saga__pg_ensure_conn(s)) != SAGA_OK)
        return SAGA_ESTORE;
    PGconn *c = s->conn;
    if (!PQenterPipelineMode(c) || PQsetnonblocking(c, 1) != 0) {
        PQexitPipelineMode(c);
        return saga__pg_fail_res(s, NULL, "write_batch: pipeline mode");
    }
    pipe_state ps = {s, 0, 0, SAGA_OK, 0, 0};
    int io = send_all(&ps, w);
    /* Read up to the sync, however the sending went: libpq must leave
     * pipeline mode with nothing pending. */
    while (io == 0) {
        int r = read_ready(&ps);
        if (r == 1)
            break;
        if (r < 0 || wait_io(c, 0) != 0)
            io = -1;
    }
    PQsetnonblocking(c, 0);
    if (io != 0) {
        /* A broken connection: whether the COMMIT landed is unknown. The
         * caller reads back (the engine's recovery does); the next call
         * reconnects. */
        rc = saga__pg_fail_res(s, NULL, "write_batch");
        PQfinish(s->conn);
        s->conn = NULL;
        return SAGA_ESTORE;
    }
    PQexitPipelineMode(c);
    if (ps.rc == SAGA_OK && !ps.committed)
        ps.rc = saga__pg_failf(s, SAGA_ESTORE,
                               "write_batch: the commit did not succeed");
    if (ps.rc != SAGA_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
    return ps.rc;
}

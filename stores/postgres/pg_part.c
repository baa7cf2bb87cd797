/*
 * pg_part.c — a participant's batch in few round trips (store interface
 * version 9): part_read sends the inbox claims and barrier reads of every
 * message of a batch, and part_commit the batch's own writes and the
 * COMMIT, each as one pipeline on the main connection inside the open
 * transaction (BEGIN was sent by begin), with one sync: one round trip
 * each instead of one per statement.
 *
 * part_commit_submit (version 11) sends the same writes and the COMMIT
 * on the loop without waiting (pg_async.c, saga__pg_submit_txn). The
 * participant's handlers run inside the transaction, on the main
 * connection; the application's SQL outside them goes to a connection of
 * its own (app_handle), so that a commit in flight never collides with
 * it.
 *
 * part_read and part_commit wait for their answer (poll on the socket):
 * they are synchronous slots, called inside the participant's transaction, which its handlers'
 * own SQL shares (a plain PQexec on the native handle), so the connection
 * leaves pipeline mode before they return. A sync inside an explicit
 * transaction commits nothing; a failed statement aborts the rest of the
 * pipeline and leaves the transaction failed: the caller rolls back
 * (part_read) or the slot does (part_commit).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pg_int.h"

/* No answer in this long: the connection is given up (a silent server). */
#define PIPE_LIMIT_MS 60000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The connection broke (or stopped answering) inside the transaction:
 * the transaction is lost; the next begin reconnects. */
static int pipe_lost(pg_store *s, const char *what)
{
    int rc = saga__pg_fail_res(s, NULL, what);
    (void)rc;
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->in_txn = 0;
    s->aborted = 0;
    s->in_sp = 0;
    return SAGA_ESTORE;
}

static int send_stmt(pg_store *s, enum pg_stmt which, const pg_params *p)
{
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)which);
    return PQsendQueryPrepared(s->conn, name, p->n, p->val, p->len, p->fmt, 1);
}

static int enter(pg_store *s, const char *what)
{
    if (!s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: no open transaction", what);
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK)
        return pipe_lost(s, what);
    if (!PQenterPipelineMode(s->conn) || PQsetnonblocking(s->conn, 1) != 0) {
        PQexitPipelineMode(s->conn);
        return saga__pg_fail_res(s, NULL, what);
    }
    return SAGA_OK;
}

/* Send what libpq holds and read every result up to the sync's into
 * @p res (up to @p nres; the rest are cleared), waiting on the socket.
 * SAGA_OK with the connection out of pipeline mode again, or SAGA_ESTORE
 * if it broke or went silent (the transaction is lost). */
static int exchange(pg_store *s, PGresult **res, int nres, const char *what)
{
    PGconn *c = s->conn;
    if (!PQpipelineSync(c))
        return pipe_lost(s, what);
    int64_t limit = mono_ms() + PIPE_LIMIT_MS;
    int got = 0, nulls = 0;
    for (;;) {
        int f = PQflush(c);
        if (f < 0)
            return pipe_lost(s, what);
        int synced = 0;
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (r == NULL) {
                if (++nulls > 1)
                    break;
                continue;
            }
            nulls = 0;
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                synced = 1;
                break;
            }
            if (got < nres)
                res[got] = r;
            else
                PQclear(r);
            got++;
        }
        if (synced)
            break;
        if (PQstatus(c) == CONNECTION_BAD)
            return pipe_lost(s, what);
        int64_t left = limit - mono_ms();
        if (left <= 0)
            return pipe_lost(s, what);
        struct pollfd pf = {PQsocket(c),
                            (short)(POLLIN | (f == 1 ? POLLOUT : 0)), 0};
        int pr = poll(&pf, 1, left > 1000 ? 1000 : (int)left);
        if (pr < 0 && errno != EINTR)
            return pipe_lost(s, what);
        if (pr > 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR)) &&
            !PQconsumeInput(c))
            return pipe_lost(s, what);
        nulls = 0;
    }
    if (!PQexitPipelineMode(c))
        return pipe_lost(s, what);
    PQsetnonblocking(c, 0);
    return SAGA_OK;
}

/* The first failed result among @p res: its error recorded, the
 * transaction marked failed. SAGA_OK if none failed. */
static int first_failure(pg_store *s, PGresult **res, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        ExecStatusType st = res[i] ? PQresultStatus(res[i]) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
            continue;
        if (st == PGRES_PIPELINE_ABORTED)
            continue; /* after the failure itself */
        saga__pg_fail_res(s, res[i], what);
        s->aborted = 1;
        return res[i] ? SAGA_ESTORE : SAGA_ENOMEM;
    }
    return SAGA_OK;
}

static void clear_all(PGresult **res, int n)
{
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    saga_free(res);
}

int saga__pg_part_read(saga_store *self, int64_t now_ms,
                       const saga_part_read *r, size_t n, saga_part_read_cb cb,
                       void *arg)
{
    pg_store *s = (pg_store *)self;
    if ((r == NULL && n > 0) || cb == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "part_read: NULL argument");
    if (n == 0)
        return SAGA_OK;
    if (n > 65536)
        return saga__pg_failf(s, SAGA_EINVAL, "part_read: %zu requests", n);
    int rc = enter(s, "part_read");
    if (rc)
        return rc;
    int nres = 0;
    for (size_t i = 0; i < n; i++)
        nres += (r[i].claim_id != NULL) + (r[i].kv_key != NULL);
    PGresult **res = saga_malloc((size_t)(nres ? nres : 1) * sizeof *res);
    if (res == NULL) {
        PQexitPipelineMode(s->conn);
        PQsetnonblocking(s->conn, 0);
        return saga__pg_failf(s, SAGA_ENOMEM, "part_read: out of memory");
    }
    memset(res, 0, (size_t)(nres ? nres : 1) * sizeof *res);
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        if (r[i].claim_id != NULL) {
            pg_params p = {0};
            saga__pg_text(&p, r[i].claim_id);
            saga__pg_int(&p, now_ms);
            ok = send_stmt(s, PG_PART_CLAIM, &p);
        }
        if (ok && r[i].kv_key != NULL) {
            pg_params p = {0};
            saga__pg_text(&p, r[i].kv_key);
            ok = send_stmt(s, PG_KV_GET, &p);
        }
    }
    rc = ok ? exchange(s, res, nres, "part_read")
            : pipe_lost(s, "part_read: sending");
    if (rc == SAGA_OK)
        rc = first_failure(s, res, nres, "part_read");
    for (int k = 0; rc == SAGA_OK && k < nres; k++)
        if (PQresultStatus(res[k]) != PGRES_TUPLES_OK ||
            PQntuples(res[k]) > 1 || PQnfields(res[k]) < 1) {
            rc = saga__pg_failf(s, SAGA_ESTORE, "part_read: unexpected answer");
            s->aborted = 1;
        }
    int k = 0;
    for (size_t i = 0; rc == SAGA_OK && i < n; i++) {
        int claim_rc = SAGA_OK, kv_rc = SAGA_ENOTFOUND;
        const void *reply = NULL, *val = NULL;
        size_t reply_len = 0, val_len = 0;
        if (r[i].claim_id != NULL) {
            PGresult *c = res[k++];
            if (PQntuples(c) == 1 && saga__pg_col_int(c, 0, 0) == 0) {
                claim_rc = SAGA_EDUP;
                if (PQnfields(c) > 1 && !PQgetisnull(c, 0, 1))
                    reply = saga__pg_col_blob(c, 0, 1, &reply_len);
            }
        }
        if (r[i].kv_key != NULL) {
            PGresult *g = res[k++];
            if (PQntuples(g) == 1) {
                kv_rc = SAGA_OK;
                val = saga__pg_col_blob(g, 0, 0, &val_len);
            }
        }
        cb(arg, i, claim_rc, reply, reply_len, kv_rc, val, val_len);
    }
    clear_all(res, nres);
    return rc;
}

static int check_write(const saga_part_write *w)
{
    if (w->key == NULL && w->op != SAGA_PART_OUTBOX_PUT)
        return 0;
    switch (w->op) {
    case SAGA_PART_KV_PUT:
    case SAGA_PART_INBOX_REPLY:
        return w->val != NULL || w->len == 0;
    case SAGA_PART_KV_DEL:
    case SAGA_PART_OUTBOX_DONE:
        return 1;
    case SAGA_PART_OUTBOX_PUT:
        return w->msg != NULL && w->msg->id != NULL && w->msg->topic != NULL &&
               (w->msg->payload != NULL || w->msg->len == 0);
    }
    return 0;
}

typedef struct wctx {
    const saga_part_write *w;
    size_t n;
} wctx;

/* Queue the statements of the writes; 0 if libpq refused one. */
static int send_writes(pg_store *s, void *arg)
{
    const wctx *c = arg;
    const saga_part_write *w = c->w;
    size_t n = c->n;
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        pg_params p = {0};
        enum pg_stmt which;
        switch (w[i].op) {
        case SAGA_PART_KV_PUT:
            saga__pg_text(&p, w[i].key);
            saga__pg_blob(&p, w[i].val, w[i].len);
            which = PG_KV_PUT;
            break;
        case SAGA_PART_KV_DEL:
            saga__pg_text(&p, w[i].key);
            which = PG_KV_DEL;
            break;
        case SAGA_PART_INBOX_REPLY:
            saga__pg_text(&p, w[i].key);
            saga__pg_blob(&p, w[i].val, w[i].len);
            which = PG_INBOX_REPLY;
            break;
        case SAGA_PART_OUTBOX_PUT:
            saga__pg_outbox_params(&p, w[i].msg);
            which = PG_OUTBOX_INSERT;
            break;
        default: /* SAGA_PART_OUTBOX_DONE (checked above) */
            saga__pg_text(&p, w[i].key);
            which = PG_OUTBOX_DONE;
            break;
        }
        ok = send_stmt(s, which, &p);
    }
    return ok;
}

/* SAGA_OK, or SAGA_EINVAL with errmsg set for malformed writes. */
static int check_writes(pg_store *s, const saga_part_write *w, size_t n,
                        const char *what)
{
    if (w == NULL && n > 0)
        return saga__pg_failf(s, SAGA_EINVAL, "%s: NULL writes", what);
    if (n > 1000000)
        return saga__pg_failf(s, SAGA_EINVAL, "%s: %zu writes", what, n);
    for (size_t i = 0; i < n; i++)
        if (!check_write(&w[i]))
            return saga__pg_failf(s, SAGA_EINVAL, "%s: write %zu is malformed",
                                  what, i);
    return SAGA_OK;
}

int saga__pg_part_commit(saga_store *self, const saga_part_write *w, size_t n)
{
    pg_store *s = (pg_store *)self;
    int rc = check_writes(s, w, n, "part_commit");
    if (rc)
        return rc;
    rc = enter(s, "part_commit");
    if (rc) {
        saga__pg_rollback(self);
        return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    int nres = (int)n + 1;
    PGresult **res = saga_malloc((size_t)nres * sizeof *res);
    if (res == NULL) {
        PQexitPipelineMode(s->conn);
        PQsetnonblocking(s->conn, 0);
        saga__pg_rollback(self);
        return saga__pg_failf(s, SAGA_ENOMEM, "part_commit: out of memory");
    }
    memset(res, 0, (size_t)nres * sizeof *res);
    wctx c = {w, n};
    int ok = send_writes(s, &c);
    ok = ok &&
         PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    rc = ok ? exchange(s, res, nres, "part_commit")
            : pipe_lost(s, "part_commit: sending");
    if (rc == SAGA_OK)
        rc = first_failure(s, res, nres, "part_commit");
    /* A transaction that failed earlier answers COMMIT with ROLLBACK. */
    if (rc == SAGA_OK && (PQresultStatus(res[n]) != PGRES_COMMAND_OK ||
                          strcmp(PQcmdStatus(res[n]), "COMMIT") != 0))
        rc = saga__pg_fail_res(s, res[n], "part_commit: commit");
    clear_all(res, nres);
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
    s->in_txn = 0;
    s->aborted = 0;
    s->in_sp = 0;
    return rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE;
}

int saga__pg_part_commit_submit(saga_store *self, const saga_part_write *w,
                                size_t n, saga_store_done_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "part_commit_submit: NULL done");
    int rc = check_writes(s, w, n, "part_commit_submit");
    if (rc)
        return rc;
    wctx c = {w, n};
    return saga__pg_submit_txn(s, send_writes, &c, done, arg);
}

/* ------------------------------------------------------------------------ */
/* The application's connection (app_handle)                                */

static PGconn *app_connect(pg_store *s)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", s->connect_timeout_s);
    const char *keys[] = {PG_TCP_KEYS, "dbname", "connect_timeout",
                          "application_name", NULL};
    const char *vals[] = {PG_TCP_VALS, s->conninfo, timeout, "libsaga-app",
                          NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        saga__pg_failf(s, SAGA_ESTORE, "app_handle: connect: %s",
                       c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", s->schema);
    PGresult *res = PQexec(c, sql);
    int ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) {
        saga__pg_failf(s, SAGA_ESTORE, "app_handle: set search_path: %s",
                       PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* How long asking for the application's connection waits for a commit in
 * flight (saga_participant_store_handle() outside handlers). */
#define APP_WAIT_MS 1000

void *saga__pg_app_handle(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    /* The application sees what was committed before it asked, the
     * commits in flight included (a participant's handlers wrote them: a
     * deferred answer's timer may update their rows), and its statements
     * never wait for locks of a commit that is half sent: wait for their
     * answers first, for at most APP_WAIT_MS: a server slower than that
     * (or silent: a partition) gets the application no handle (NULL, as
     * when it cannot connect; try again later) rather than the loop
     * standing still for it. A connection lost meanwhile: the loop reads
     * them back, and they stay unknown to the application until then. */
    if (s->q_head != NULL && saga__pg_settle(s, APP_WAIT_MS) != SAGA_OK &&
        s->q_head != NULL && !s->lost && !s->reconn)
        return NULL;
    if (s->aconn != NULL && PQstatus(s->aconn) == CONNECTION_OK)
        return s->aconn;
    /* Connecting blocks: only while the server is known to be reachable
     * (no reconnection of the store's own under way or backing off). */
    if (saga__pg_no_connect(s) != SAGA_OK)
        return s->aconn;
    PGconn *c = app_connect(s);
    if (c == NULL) {
        saga__pg_connect_failed(s);
        return s->aconn;
    }
    if (s->aconn != NULL)
        PQfinish(s->aconn);
    s->aconn = c;
    return c;
}

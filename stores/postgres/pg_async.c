/*
 * pg_async.c — the asynchronous commit (store interface version 4): attach
 * and submit_batch on the engine's libuv loop, without blocking it.
 *
 * A batch goes out at once on the main connection in libpq's pipeline
 * mode: its batch-log upsert, every statement (prepared, binary) and a
 * sync, with no BEGIN/COMMIT: the statements between two syncs form one
 * implicit transaction that the server commits when it reaches the sync,
 * or rolls back entirely if one of them failed (the strict statement
 * variants turn a conflict or a missing row into such a failure). libpq
 * copies the parameters into its output buffer, so nothing of the caller's
 * batch is kept. The socket is watched with uv_poll (readable; writable
 * too while libpq holds unsent data), results are read with
 * PQconsumeInput/PQisBusy/PQgetResult, and a batch is answered when its
 * sync's result (PGRES_PIPELINE_SYNC) arrives: the server sends it after
 * the commit is durable. Batches are answered in the order they were
 * submitted; done callbacks run from the poll or timer callback, never
 * from inside submit_batch.
 *
 * A lost connection: every batch without its sync result is unresolved.
 * The store reconnects on the loop, without blocking it (from a timer,
 * with capped backoff: 50 ms doubling to 2 s): PQconnectStartParams and
 * PQconnectPoll driven by uv_poll on the new socket, bounded by
 * connect_timeout_s on a uv_timer; then, pipelined in one round trip, the
 * search path, every statement prepared again and its row of the batch
 * log read: each batch wrote its number there in its own transaction, so
 * a batch whose number is there committed (OK), and one whose number is
 * not did not (its statement error if the server reported one before the
 * connection died, else SAGA_ESTORE). Nothing is guessed. A submit_batch
 * that finds the connection gone starts the same reconnection and is
 * refused with SAGA_ESTORE (the engine retries the batch with backoff).
 * Only the first connect, in saga_store_postgres_open, blocks (and a host
 * name, not an address, is resolved with a blocking lookup by libpq).
 *
 * A participant's commit (part_commit_submit, store version 11) goes the
 * same way: its open transaction's writes and batch-log row, a sync, then
 * COMMIT and a sync (saga__pg_submit_txn), answered at the second sync.
 *
 * Reading slots called while batches are in flight use a second, lazily
 * opened connection and see committed data only. A synchronous write slot
 * (begin, purge, kv_put, write_batch...) called meanwhile first waits for
 * the batches in flight (quiesce), giving up a reconnection under way for
 * a blocking one; their done callbacks then run from the loop, later.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "pg_int.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define QUIESCE_LIMIT_MS 60000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void free_handle(uv_handle_t *h) { saga_free(h); }

static void close_poll(pg_store *s)
{
    if (s->poll == NULL)
        return;
    uv_poll_stop(s->poll);
    uv_close((uv_handle_t *)s->poll, free_handle);
    s->poll = NULL;
    s->poll_events = 0;
    s->poll_fd = -1;
}

/* Watch @p fd for @p ev with @p cb, making the handle anew when the socket
 * changed (libpq may try several addresses while connecting). */
static int watch(pg_store *s, int fd, int ev, uv_poll_cb cb)
{
    if (s->poll != NULL && s->poll_fd != fd)
        close_poll(s);
    if (s->poll == NULL) {
        uv_poll_t *p = saga_malloc(sizeof *p);
        if (p == NULL)
            return SAGA_ENOMEM;
        if (uv_poll_init(s->loop, p, fd) != 0) {
            saga_free(p);
            return SAGA_ESTORE;
        }
        p->data = s;
        s->poll = p;
        s->poll_fd = fd;
        s->poll_events = 0;
    }
    if (uv_poll_start(s->poll, ev, cb) != 0)
        return SAGA_ESTORE;
    s->poll_events = ev;
    return SAGA_OK;
}

static void close_timer(pg_store *s)
{
    if (s->timer == NULL)
        return;
    uv_timer_stop(s->timer);
    uv_close((uv_handle_t *)s->timer, free_handle);
    s->timer = NULL;
}

static void timer_cb(uv_timer_t *t);

static void arm_timer(pg_store *s, int64_t ms)
{
    if (s->loop == NULL)
        return;
    if (s->timer == NULL) {
        uv_timer_t *t = saga_malloc(sizeof *t);
        if (t == NULL)
            return; /* the next poll or slot call picks the work up */
        uv_timer_init(s->loop, t);
        t->data = s;
        s->timer = t;
    }
    uv_timer_start(s->timer, timer_cb, ms < 0 ? 0 : (uint64_t)ms, 0);
}

static void push_finished(pg_store *s, pg_abatch *b)
{
    b->next = NULL;
    if (s->f_tail)
        s->f_tail->next = b;
    else
        s->f_head = b;
    s->f_tail = b;
}

static pg_abatch *pop_queued(pg_store *s)
{
    pg_abatch *b = s->q_head;
    if (b) {
        s->q_head = b->next;
        if (s->q_head == NULL)
            s->q_tail = NULL;
    }
    return b;
}

static void free_op(pg_abatch *b)
{
    for (int i = 0; i < b->nres; i++)
        PQclear(b->res[i]);
    saga_free(b);
}

/* The store closes with @p b unanswered (or its answer not yet given): a
 * batch is dropped (close is never called with one in flight), an
 * ownership request is answered SAGA_ESTORE, so that its caller frees what
 * it gave as the argument. */
static void drop_op(pg_store *s, pg_abatch *b)
{
    if (b->fin != NULL) {
        b->rc = SAGA_ESTORE;
        b->fin(s, b);
    }
    free_op(b);
}

/* Run the done callbacks of answered batches, in order. Returns 1 if a
 * callback closed the store (it is freed now: touch nothing). */
static int dispatch(pg_store *s)
{
    if (s->in_dispatch)
        return 0; /* the outer call goes on with the rest */
    s->in_dispatch = 1;
    while (s->f_head && !s->close_pending) {
        pg_abatch *b = s->f_head;
        s->f_head = b->next;
        if (s->f_head == NULL)
            s->f_tail = NULL;
        if (b->fin != NULL) {
            b->fin(s, b);
            free_op(b);
            continue;
        }
        saga_store_done_cb done = b->done;
        void *arg = b->arg;
        int rc = b->rc;
        saga_free(b);
        done(arg, rc);
    }
    s->in_dispatch = 0;
    if (s->close_pending) {
        for (pg_abatch *b = s->f_head, *nx; b; b = nx) {
            nx = b->next;
            drop_op(s, b);
        }
        saga_free(s);
        return 1;
    }
    return 0;
}

static void backoff(pg_store *s);

int saga__pg_no_connect(pg_store *s)
{
    if (s->loop == NULL)
        return SAGA_OK;
    if (s->lost || s->reconn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "the connection was lost; reconnecting on the "
                              "loop");
    int64_t now = mono_ms();
    if (now < s->next_connect_ms)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "not connected (next attempt in %lld ms)",
                              (long long)(s->next_connect_ms - now));
    return SAGA_OK;
}

void saga__pg_connect_failed(pg_store *s)
{
    if (s->loop != NULL)
        backoff(s);
}

static void backoff(pg_store *s)
{
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    s->next_connect_ms = mono_ms() + s->backoff_ms;
}

/* The main connection broke. Batches without their answer wait for the
 * read-back, which the timer starts. */
static void conn_lost(pg_store *s, const char *what)
{
    const char *msg = s->conn ? PQerrorMessage(s->conn) : "not connected";
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    saga__pg_failf(s, SAGA_ESTORE, "%s: connection lost: %.*s", what, (int)n,
                   msg);
    close_poll(s);
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
    s->pipeline = 0;
    if (s->q_head) {
        s->lost = 1;
        arm_timer(s, 0);
    }
}

/* Reconnect (blocking) and resolve every unresolved batch by reading the
 * batch log back. SAGA_OK when resolved, else SAGA_ESTORE (try later). */
int saga__pg_read_log(pg_store *s, int64_t *seq)
{
    const char *val[1] = {s->log_writer};
    int len[1] = {(int)strlen(s->log_writer)};
    int fmt[1] = {1};
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)PG_BATCH_READ);
    PGresult *res = PQexecPrepared(s->conn, name, 1, val, len, fmt, 1);
    int rc = SAGA_OK;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
        *seq = PQntuples(res) ? saga__pg_col_int(res, 0, 0) : 0;
    else
        rc = saga__pg_fail_res(s, res, "read back the batch log");
    PQclear(res);
    return rc;
}

/* The batch log says @p seq: every unresolved batch up to it committed,
 * every later one did not. */
static void resolve_queued(pg_store *s, int64_t seq)
{
    s->backoff_ms = 0;
    s->next_connect_ms = 0;
    s->lost = 0;
    pg_abatch *b;
    while ((b = pop_queued(s)) != NULL) {
        if (b->fin != NULL) {
            /* An ownership request is in no batch log: lost. */
            if (!b->definite)
                b->rc = saga__pg_failf(s, SAGA_ESTORE,
                                       "the connection was lost before "
                                       "the answer");
        } else if (b->seq <= seq) {
            b->rc = SAGA_OK; /* committed: its answer was lost */
        } else if (!b->definite) {
            b->rc = saga__pg_failf(
                s, SAGA_ESTORE,
                "submit_batch: the connection was lost and batch %lld was "
                "not committed (read back)",
                (long long)b->seq);
        }
        push_finished(s, b);
    }
}

/* Reconnect (blocking: a synchronous slot waits for it) and resolve every
 * unresolved batch by reading the batch log back. SAGA_OK when resolved,
 * else SAGA_ESTORE (try later). */
static int resolve_lost(pg_store *s)
{
    int64_t seq = -1;
    if (saga__pg_open_conn(s, &s->conn, 1) != SAGA_OK ||
        saga__pg_read_log(s, &seq) != SAGA_OK)
        seq = -1;
    if (seq < 0) {
        if (s->conn)
            PQfinish(s->conn);
        s->conn = NULL;
        backoff(s);
        return SAGA_ESTORE;
    }
    resolve_queued(s, seq);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Reconnecting on the loop                                                 */

static void poll_cb(uv_poll_t *h, int status, int events);
static void rpoll_cb(uv_poll_t *h, int status, int events);

static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Drop the reconnection under way (no backoff: the caller decides). */
static void abort_reconnect(pg_store *s)
{
    if (!s->reconn)
        return;
    close_poll(s);
    if (s->nconn)
        PQfinish(s->nconn);
    s->nconn = NULL;
    s->reconn = 0;
}

/* The attempt failed: say why, back off, and try again from the timer
 * while batches wait for their read-back (else the next submit_batch
 * after the backoff starts the next attempt). */
static void reconnect_failed(pg_store *s, const char *what)
{
    const char *msg = s->nconn ? PQerrorMessage(s->nconn) : "";
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    saga__pg_failf(s, SAGA_ESTORE, "reconnect: %s%s%.*s", what, n ? ": " : "",
                   (int)n, msg);
    abort_reconnect(s);
    backoff(s);
    if (s->lost)
        arm_timer(s, s->next_connect_ms - mono_ms());
}

static void start_reconnect(pg_store *s)
{
    if (s->reconn || s->loop == NULL)
        return;
    const char *keys[] = {PG_TCP_KEYS, "dbname", "application_name", NULL};
    const char *vals[] = {PG_TCP_VALS, s->conninfo, "libsaga", NULL};
    s->nconn = PQconnectStartParams(keys, vals, 1);
    s->reconn = 1;
    s->reconn_deadline_ms = mono_ms() + (int64_t)s->connect_timeout_s * 1000;
    if (s->nconn == NULL || PQstatus(s->nconn) == CONNECTION_BAD ||
        PQsocket(s->nconn) < 0) {
        reconnect_failed(s, "cannot start a connection");
        return;
    }
    PQsetNoticeProcessor(s->nconn, ignore_notice, NULL);
    /* As if PQconnectPoll had answered PGRES_POLLING_WRITING. */
    if (watch(s, PQsocket(s->nconn), UV_WRITABLE, rpoll_cb) != SAGA_OK) {
        reconnect_failed(s, "cannot watch the socket");
        return;
    }
    arm_timer(s, s->reconn_deadline_ms - mono_ms());
}

/* Connected: send the setup in one pipeline (search path, every statement
 * prepared, the batch log read back) and a sync. */
static void send_setup(pg_store *s)
{
    PGconn *c = s->nconn;
    char sql[128], name[16];
    snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", s->schema);
    int ok = PQsetnonblocking(c, 1) == 0 && PQenterPipelineMode(c) &&
             PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    s->reconn_nres = 1;
    for (int i = 0; ok && i < PG__COUNT; i++) {
        Oid types[PG_MAXP];
        int n = saga__pg_stmt_types(i, types);
        snprintf(name, sizeof name, "s%d", i);
        ok = PQsendPrepare(c, name, saga__pg_stmts[i].sql, n, types);
        s->reconn_nres++;
    }
    if (ok) {
        const char *val[1] = {s->log_writer};
        int len[1] = {(int)strlen(s->log_writer)};
        int fmt[1] = {1};
        snprintf(name, sizeof name, "s%d", (int)PG_BATCH_READ);
        ok = PQsendQueryPrepared(c, name, 1, val, len, fmt, 1) &&
             PQpipelineSync(c);
        s->reconn_nres++;
    }
    int f = ok ? PQflush(c) : -1;
    if (f < 0) {
        reconnect_failed(s, "setup");
        return;
    }
    s->reconn = 2;
    s->reconn_seq = 0;
    if (watch(s, PQsocket(c), UV_READABLE | (f == 1 ? UV_WRITABLE : 0),
              rpoll_cb) != SAGA_OK)
        reconnect_failed(s, "cannot watch the socket");
}

/* The new connection is ready: it becomes the main one, in pipeline mode
 * with its socket watched, and the batches waiting for their read-back
 * are answered (from the timer). */
static void reconnected(pg_store *s)
{
    s->conn = s->nconn;
    s->nconn = NULL;
    s->reconn = 0;
    s->pipeline = 1;
    s->reconnects++;
    s->backoff_ms = 0;
    s->next_connect_ms = 0;
    if (s->lost)
        resolve_queued(s, s->reconn_seq);
    /* Idle until the next batch (set_poll restarts it with poll_cb). */
    if (s->poll != NULL) {
        uv_poll_stop(s->poll);
        s->poll_events = 0;
    }
    arm_timer(s, 0); /* stops the deadline; dispatches from the timer */
}

/* The next result that can be read without blocking, or NULL. A NULL from
 * PQgetResult() ends one statement's results; two in a row (counted in
 * *nulls across calls): nothing more to read now. */
static PGresult *next_result(PGconn *c, int *nulls)
{
    while (!PQisBusy(c)) {
        PGresult *r = PQgetResult(c);
        if (r != NULL) {
            *nulls = 0;
            return r;
        }
        if (++*nulls > 1)
            break;
    }
    return NULL;
}

/* The setup's answers: one per statement, then the sync. */
static void read_setup(pg_store *s, int events)
{
    PGconn *c = s->nconn;
    if (events & UV_WRITABLE) {
        int f = PQflush(c);
        if (f < 0) {
            reconnect_failed(s, "setup");
            return;
        }
        if (f == 0 && watch(s, PQsocket(c), UV_READABLE, rpoll_cb) != SAGA_OK) {
            reconnect_failed(s, "cannot watch the socket");
            return;
        }
    }
    if ((events & (UV_READABLE | UV_DISCONNECT)) && !PQconsumeInput(c)) {
        reconnect_failed(s, "setup");
        return;
    }
    int nulls = 0;
    PGresult *r;
    while ((r = next_result(c, &nulls)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (s->reconn_nres != 0) {
                reconnect_failed(s, "setup: answers missing");
                return;
            }
            reconnected(s);
            return;
        }
        if (st == PGRES_TUPLES_OK && s->reconn_nres == 1) {
            s->reconn_seq = PQntuples(r) ? saga__pg_col_int(r, 0, 0) : 0;
            s->reconn_nres--;
        } else if (st == PGRES_COMMAND_OK && s->reconn_nres > 1) {
            s->reconn_nres--;
        } else {
            const char *m = PQresultErrorMessage(r);
            size_t n = m ? strlen(m) : 0;
            while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
                n--;
            char what[256];
            snprintf(what, sizeof what, "setup failed (%s)%s%.*s",
                     PQresStatus(st), n ? ": " : "", (int)n, n ? m : "");
            PQclear(r);
            /* The connection's own message says nothing more. */
            PGconn *keep = s->nconn;
            s->nconn = NULL;
            reconnect_failed(s, what);
            PQfinish(keep);
            return;
        }
        PQclear(r);
    }
    if (PQstatus(c) == CONNECTION_BAD)
        reconnect_failed(s, "setup");
}

static void rpoll_cb(uv_poll_t *h, int status, int events)
{
    pg_store *s = h->data;
    if (s->reconn == 1) {
        /* A poll error is seen by PQconnectPoll too. */
        (void)status;
        PostgresPollingStatusType st = PQconnectPoll(s->nconn);
        if (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
            if (watch(s, PQsocket(s->nconn),
                      st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE,
                      rpoll_cb) != SAGA_OK)
                reconnect_failed(s, "cannot watch the socket");
        } else if (st == PGRES_POLLING_OK) {
            send_setup(s);
        } else {
            reconnect_failed(s, "connect");
        }
        return;
    }
    if (s->reconn == 2) {
        if (status < 0)
            reconnect_failed(s, "setup: socket error");
        else
            read_setup(s, events);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events);

/* Watch the socket for reading, and for writing while libpq holds unsent
 * data. */
static void set_poll(pg_store *s, int want_write)
{
    int ev = UV_READABLE | (want_write ? UV_WRITABLE : 0);
    if (s->poll && ev != s->poll_events) {
        uv_poll_start(s->poll, ev, poll_cb);
        s->poll_events = ev;
    }
}

/* Read and write what the socket allows; answer the batches whose sync
 * came back. -1 if the connection broke (conn_lost has run). */
static int pump(pg_store *s, int readable, int writable)
{
    PGconn *c = s->conn;
    if (writable || (s->poll_events & UV_WRITABLE)) {
        int f = PQflush(c);
        if (f < 0)
            goto lost;
        set_poll(s, f == 1);
    }
    if (readable && !PQconsumeInput(c))
        goto lost;
    int nulls = 0;
    PGresult *r;
    while (s->q_head && (r = next_result(c, &nulls)) != NULL) {
        pg_abatch *b = s->q_head;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            /* The server answers the sync after the implicit transaction
             * committed, or rolled back after a failed statement. A
             * participant's commit ends at its second sync (after the
             * COMMIT). */
            if (b->xsyncs > 0)
                b->xsyncs--;
            else
                push_finished(s, pop_queued(s));
        } else if (st == PGRES_COMMAND_OK &&
                   strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
            /* A COMMIT of a transaction that failed answers ROLLBACK. */
            if (b->rc == SAGA_OK) {
                b->rc = saga__pg_failf(s, SAGA_ESTORE,
                                       "part_commit_submit: the transaction "
                                       "was rolled back");
                b->definite = 1;
            }
        } else if (st == PGRES_FATAL_ERROR) {
            if (b->rc == SAGA_OK) {
                b->rc = saga__pg_map_state(
                    PQresultErrorField(r, PG_DIAG_SQLSTATE));
                /* A statement's ERROR aborts the transaction: no commit.
                 * A FATAL (the backend going away) proves nothing: the
                 * commit may have happened; the read-back decides. */
                const char *sev = PQresultErrorField(
                    r, PG_DIAG_SEVERITY_NONLOCALIZED);
                b->definite = sev != NULL && strcmp(sev, "ERROR") == 0;
                saga__pg_fail_res(s, r, "submit_batch");
            }
        } else if (st == PGRES_PIPELINE_ABORTED) {
            if (b->rc == SAGA_OK) {
                b->rc = saga__pg_failf(s, SAGA_ESTORE,
                                       "submit_batch: pipeline aborted");
                b->definite = 1;
            }
        } else if (b->fin != NULL && st == PGRES_TUPLES_OK && b->nres < 2) {
            b->res[b->nres++] = r; /* fin reads it */
            continue;
        }
        PQclear(r);
    }
    if (PQstatus(c) == CONNECTION_BAD)
        goto lost;
    return 0;
lost:
    conn_lost(s, "submit_batch");
    return -1;
}

/* Leave pipeline mode once nothing is in flight: the synchronous slots
 * need the connection as it was. */
static void leave_pipeline(pg_store *s)
{
    if (!s->pipeline || s->q_head)
        return;
    close_poll(s);
    s->pipeline = 0;
    if (s->conn == NULL)
        return;
    if (!PQexitPipelineMode(s->conn)) {
        /* Something is left unread: drop the connection rather than
         * leave it in a state nobody expects (the next use reconnects). */
        PQfinish(s->conn);
        s->conn = NULL;
        return;
    }
    PQsetnonblocking(s->conn, 0);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    pg_store *s = h->data;
    if (status < 0)
        conn_lost(s, "submit_batch");
    else
        pump(s, events & (UV_READABLE | UV_DISCONNECT), events & UV_WRITABLE);
    if (dispatch(s))
        return;
    /* Idle: stop watching, but stay in pipeline mode with the handle kept,
     * for the engine's next batch (a synchronous slot leaves it). */
    if (s->q_head == NULL && s->poll && s->poll_events) {
        uv_poll_stop(s->poll);
        s->poll_events = 0;
    }
}

static void timer_cb(uv_timer_t *t)
{
    pg_store *s = t->data;
    int64_t now = mono_ms();
    if (s->reconn) {
        if (now >= s->reconn_deadline_ms) {
            char what[64];
            snprintf(what, sizeof what, "no connection in %d s",
                     s->connect_timeout_s);
            reconnect_failed(s, what);
        } else {
            arm_timer(s, s->reconn_deadline_ms - now);
        }
    } else if (s->lost) {
        if (now < s->next_connect_ms)
            arm_timer(s, s->next_connect_ms - now);
        else
            start_reconnect(s);
    } else {
        close_timer(s);
    }
    dispatch(s);
}

static int enter_pipeline(pg_store *s)
{
    if (s->pipeline)
        return SAGA_OK;
    uv_poll_t *p = saga_malloc(sizeof *p);
    if (p == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "submit_batch: out of memory");
    if (!PQenterPipelineMode(s->conn) || PQsetnonblocking(s->conn, 1) != 0) {
        PQexitPipelineMode(s->conn);
        saga_free(p);
        return saga__pg_fail_res(s, NULL, "submit_batch: pipeline mode");
    }
    if (uv_poll_init(s->loop, p, PQsocket(s->conn)) != 0) {
        PQexitPipelineMode(s->conn);
        PQsetnonblocking(s->conn, 0);
        saga_free(p);
        return saga__pg_failf(s, SAGA_ESTORE,
                              "submit_batch: cannot watch the socket");
    }
    p->data = s;
    s->poll = p;
    s->poll_fd = PQsocket(s->conn);
    s->poll_events = 0;
    s->pipeline = 1;
    set_poll(s, 0);
    return SAGA_OK;
}

int saga__pg_attach(saga_store *self, struct uv_loop_s *loop)
{
    pg_store *s = (pg_store *)self;
    if (loop == NULL)
        return saga__pg_failf(s, SAGA_ESTORE, "attach: NULL loop");
    if (s->loop != NULL && s->loop != loop)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "attach: the store is bound to another loop");
    s->loop = loop;
    return SAGA_OK;
}

/* The main connection in pipeline mode, or why not (a reconnection on
 * the loop is started when it is gone). */
static int ready(pg_store *s, const char *what)
{
    if (s->loop == NULL)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "%s: the store is not attached to a loop", what);
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: a transaction is open",
                              what);
    if (s->lost || s->reconn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "%s: the connection was lost; reconnecting",
                              what);
    if (!s->pipeline &&
        (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK)) {
        int64_t now = mono_ms();
        if (now < s->next_connect_ms)
            return saga__pg_failf(s, SAGA_ESTORE,
                                  "%s: not connected (next attempt in %lld "
                                  "ms)",
                                  what, (long long)(s->next_connect_ms - now));
        /* Reconnect on the loop; the caller tries again later. */
        if (s->conn != NULL)
            PQfinish(s->conn);
        s->conn = NULL;
        start_reconnect(s);
        return saga__pg_failf(s, SAGA_ESTORE, "%s: not connected; reconnecting",
                              what);
    }
    return enter_pipeline(s);
}

static void enqueue(pg_store *s, pg_abatch *b)
{
    if (s->q_tail)
        s->q_tail->next = b;
    else
        s->q_head = b;
    s->q_tail = b;
}

/* The end of a submission: flush what @p ok says was queued. A failure
 * loses the connection; whatever reached the server, the read-back on the
 * reconnection decides, and the requests are answered then. */
static int sent(pg_store *s, int ok, const char *what)
{
    int f = ok ? PQflush(s->conn) : -1;
    if (f < 0) {
        conn_lost(s, what);
        return SAGA_OK;
    }
    set_poll(s, f == 1);
    return SAGA_OK;
}

int saga__pg_submit_own(pg_store *s, const enum pg_stmt *which,
                        const pg_params *p, int n, pg_fin_fn fin,
                        void (*cb)(void), void *arg, int64_t x)
{
    int rc = ready(s, "ownership");
    if (rc != SAGA_OK)
        return rc;
    pg_abatch *b = saga_malloc(sizeof *b);
    if (b == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "ownership: out of memory");
    memset(b, 0, sizeof *b);
    b->fin = fin;
    b->cb = cb;
    b->arg = arg;
    b->x = x;
    enqueue(s, b);
    char name[16];
    int ok = 1;
    for (int i = 0; ok && i < n; i++) {
        snprintf(name, sizeof name, "s%d", (int)which[i]);
        ok = PQsendQueryPrepared(s->conn, name, p[i].n, p[i].val, p[i].len,
                                 p[i].fmt, 1);
    }
    ok = ok && PQpipelineSync(s->conn);
    return sent(s, ok, "ownership");
}

int saga__pg_submit_batch(saga_store *self, const saga_batch_writes *w,
                          saga_store_done_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    int rc = saga__pg_check_writes(s, w);
    if (rc)
        return rc;
    if (done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "submit_batch: NULL done");
    if (s->loop == NULL)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "submit_batch: the store is not attached to "
                              "a loop");
    if (s->epoch_pending && !saga__pg_kv_only(w))
        return saga__pg_failf(s, SAGA_ESTORE,
                              "submit_batch: a new lease is being taken");
    if ((rc = ready(s, "submit_batch")) != SAGA_OK)
        return rc;
    pg_abatch *b = saga_malloc(sizeof *b);
    if (b == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "submit_batch: out of memory");
    memset(b, 0, sizeof *b);
    b->seq = ++s->batch_seq;
    b->done = done;
    b->arg = arg;
    enqueue(s, b);

    /* The batch log first: if it is there after a lost answer, all of the
     * batch is. */
    pg_params p = {0};
    saga__pg_text(&p, s->log_writer);
    saga__pg_int(&p, b->seq);
    saga__pg_int(&p, saga__pg_wall_ms());
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)PG_BATCH_LOG);
    size_t n = 0;
    int ok = PQsendQueryPrepared(s->conn, name, p.n, p.val, p.len, p.fmt, 1) &&
             saga__pg_send_writes(s, w, NULL, NULL, &n) == 0 &&
             PQpipelineSync(s->conn);
    return sent(s, ok, "submit_batch");
}

int saga__pg_submit_txn(pg_store *s, int (*send)(pg_store *, void *), void *ctx,
                        saga_store_done_cb done, void *arg)
{
    int rc = SAGA_OK;
    if (s->loop == NULL)
        rc = saga__pg_failf(s, SAGA_ESTORE,
                            "part_commit_submit: the store is not attached "
                            "to a loop");
    else if (!s->in_txn)
        rc = saga__pg_failf(s, SAGA_ESTORE,
                            "part_commit_submit: no open transaction");
    else if (s->q_head || s->lost || s->reconn)
        rc = saga__pg_failf(s, SAGA_ESTORE,
                            "part_commit_submit: a batch is in flight");
    else if ((rc = saga__pg_check_txn(s)) == SAGA_OK)
        rc = enter_pipeline(s);
    if (rc != SAGA_OK) {
        saga__pg_rollback(&s->base);
        return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    pg_abatch *b = saga_malloc(sizeof *b);
    if (b == NULL) {
        leave_pipeline(s);
        saga__pg_rollback(&s->base);
        return saga__pg_failf(s, SAGA_ENOMEM,
                              "part_commit_submit: out of memory");
    }
    memset(b, 0, sizeof *b);
    b->seq = ++s->batch_seq;
    b->done = done;
    b->arg = arg;
    b->xsyncs = 1;
    enqueue(s, b);
    /* The transaction goes with the pipeline: the COMMIT after the first
     * sync ends it either way (committed, or, after a failed statement,
     * rolled back: the connection is idle again at the second sync). */
    s->in_txn = 0;
    s->aborted = 0;
    s->in_sp = 0;
    pg_params p = {0};
    saga__pg_text(&p, s->log_writer);
    saga__pg_int(&p, b->seq);
    saga__pg_int(&p, saga__pg_wall_ms());
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)PG_BATCH_LOG);
    int ok = PQsendQueryPrepared(s->conn, name, p.n, p.val, p.len, p.fmt, 1) &&
             send(s, ctx) && PQpipelineSync(s->conn) &&
             PQsendQueryParams(s->conn, "COMMIT", 0, NULL, NULL, NULL, NULL,
                               0) &&
             PQpipelineSync(s->conn);
    return sent(s, ok, "part_commit_submit");
}

/* One wait of at most a second for the batches in flight (the slots that
 * must wait: settle, quiesce): their answers are read as they come.
 * @return SAGA_OK, or SAGA_ESTORE past @p limit or when poll fails. */
static int wait_answers(pg_store *s, int64_t limit)
{
    int64_t left = limit - mono_ms();
    if (left < 0)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "the batches in flight were not answered "
                              "in time");
    struct pollfd pf = {PQsocket(s->conn),
                        (short)(POLLIN |
                                ((s->poll_events & UV_WRITABLE) ? POLLOUT : 0)),
                        0};
    int r = poll(&pf, 1, left < 1000 ? (int)left + 1 : 1000);
    if (r < 0 && errno != EINTR)
        return saga__pg_failf(s, SAGA_ESTORE, "poll: %s", strerror(errno));
    if (r > 0)
        pump(s, pf.revents & (POLLIN | POLLHUP | POLLERR),
             pf.revents & POLLOUT);
    return SAGA_OK;
}

int saga__pg_settle(pg_store *s, int64_t limit_ms)
{
    if (s->lost || s->reconn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "the connection was lost; reconnecting on the "
                              "loop");
    int64_t limit = mono_ms() + limit_ms;
    while (s->q_head && !s->lost) {
        int rc = wait_answers(s, limit);
        if (rc != SAGA_OK)
            return rc;
    }
    /* Answered: their callbacks run from the loop, not from inside this
     * call (a lost connection: the loop's read-back answers them). */
    if (s->f_head && !s->in_dispatch)
        arm_timer(s, 0);
    return s->lost ? SAGA_ESTORE : SAGA_OK;
}

int saga__pg_quiesce(pg_store *s)
{
    int64_t limit = mono_ms() + QUIESCE_LIMIT_MS;
    /* The loop reconnects and reads the batches back: a synchronous slot
     * does not wait for it (nor connects on the loop itself). */
    if (saga__pg_no_connect(s) != SAGA_OK && (s->lost || s->reconn))
        return SAGA_ESTORE;
    while (s->q_head || s->lost) {
        if (s->lost) {
            if (s->loop != NULL)
                return saga__pg_failf(s, SAGA_ESTORE,
                                      "the connection was lost; "
                                      "reconnecting on the loop");
            if (resolve_lost(s) != SAGA_OK)
                return SAGA_ESTORE;
            continue;
        }
        int rc = wait_answers(s, limit);
        if (rc != SAGA_OK)
            return rc;
    }
    leave_pipeline(s);
    /* The answered batches' callbacks run from the loop, not from inside
     * this slot. */
    if (s->f_head && !s->in_dispatch)
        arm_timer(s, 0);
    return SAGA_OK;
}

PGconn *saga__pg_reader(pg_store *s, int *rc)
{
    *rc = SAGA_OK;
    if ((s->q_head || s->lost || s->reconn) && !s->in_txn) {
        if (s->rconn == NULL || PQstatus(s->rconn) != CONNECTION_OK) {
            /* Connecting blocks: only while the server is known to be
             * reachable (the main connection is up, no backoff). */
            if ((*rc = saga__pg_no_connect(s)) != SAGA_OK)
                return NULL;
            if (saga__pg_open_conn(s, &s->rconn, 0) != SAGA_OK) {
                saga__pg_connect_failed(s);
                *rc = SAGA_ESTORE;
                return NULL;
            }
        }
        return s->rconn;
    }
    *rc = saga__pg_ensure_conn(s);
    return s->conn;
}

void saga__pg_async_close(pg_store *s)
{
    abort_reconnect(s);
    close_poll(s);
    close_timer(s);
    /* close is not called with batches in flight; drop any left anyway
     * (their callbacks never run: the caller said it was done); ownership
     * requests are answered SAGA_ESTORE. */
    for (pg_abatch *b = s->q_head, *nx; b; b = nx) {
        nx = b->next;
        drop_op(s, b);
    }
    s->q_head = s->q_tail = NULL;
    if (s->in_dispatch) {
        s->close_pending = 1;
        return;
    }
    for (pg_abatch *b = s->f_head, *nx; b; b = nx) {
        nx = b->next;
        drop_op(s, b);
    }
    s->f_head = s->f_tail = NULL;
}

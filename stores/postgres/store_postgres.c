/*
 * store_postgres.c — the PostgreSQL store: options, connect, schema
 * migrations, transactions, parameters and error mapping. The data slots
 * are in pg_ops.c.
 *
 * Durability is PostgreSQL's: a COMMIT that returned is durable with the
 * server's synchronous_commit (on by default). A COMMIT whose answer was
 * lost (the connection broke after sending it) cannot be guessed: the
 * store reports SAGA_ESTORE and the caller resolves it by reading back, as
 * the engine does on recovery.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pg_int.h"

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */

/* Migration i takes the schema from version i to i + 1. Steps are
 * append-only: a released step is never edited, a change is a new step.
 * Every table is keyed by saga id where it has one, so that a distributed
 * PostgreSQL could shard by it (docs/stores.md). */
static const char *const migrations[] = {
    /* 0 -> 1: the initial schema. */
    "CREATE TABLE sagas("
    " id text PRIMARY KEY,"
    " seq bigserial NOT NULL,"
    " def_name text NOT NULL,"
    " def_version bigint NOT NULL,"
    " state bigint NOT NULL,"
    " step bigint NOT NULL,"
    " attempt bigint NOT NULL,"
    " flags bigint NOT NULL,"
    " created_ms bigint NOT NULL,"
    " updated_ms bigint NOT NULL,"
    " due_ms bigint NOT NULL,"
    " deadline_ms bigint NOT NULL,"
    " idem_key text,"
    " error text,"
    " data bytea NOT NULL);"
    "CREATE INDEX sagas_state ON sagas(state, created_ms, seq);"
    "CREATE TABLE journal("
    " saga_id text NOT NULL,"
    " seq bigint NOT NULL,"
    " event bigint NOT NULL,"
    " step bigint NOT NULL,"
    " attempt bigint NOT NULL,"
    " started_ms bigint NOT NULL,"
    " at_ms bigint NOT NULL,"
    " error text,"
    " PRIMARY KEY(saga_id, seq));"
    "CREATE TABLE idem("
    " key text PRIMARY KEY,"
    " saga_id text NOT NULL,"
    " created_ms bigint NOT NULL);"
    "CREATE INDEX idem_saga ON idem(saga_id);"
    "CREATE TABLE outbox("
    " seq bigserial PRIMARY KEY,"
    " id text NOT NULL UNIQUE,"
    " topic text NOT NULL,"
    " key text,"
    " payload bytea NOT NULL,"
    " created_ms bigint NOT NULL);"
    "CREATE TABLE inbox("
    " msg_id text PRIMARY KEY,"
    " created_ms bigint NOT NULL,"
    " reply bytea NOT NULL);"
    "CREATE INDEX inbox_created ON inbox(created_ms);"
    "CREATE TABLE kv("
    " key text PRIMARY KEY,"
    " val bytea NOT NULL);",
    /* 1 -> 2: ownership by several engines (pg_own.c). Each saga row and
     * journal entry carries the (owner, epoch) that wrote it; owners holds
     * each engine's lease, in the server's clock (ms). */
    "ALTER TABLE sagas ADD COLUMN owner text,"
    " ADD COLUMN epoch bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE journal ADD COLUMN owner text,"
    " ADD COLUMN epoch bigint NOT NULL DEFAULT 0;"
    "CREATE TABLE owners("
    " owner text PRIMARY KEY,"
    " epoch bigint NOT NULL,"
    " lease_until bigint NOT NULL);"
    "CREATE SEQUENCE owner_epoch;"
    "CREATE FUNCTION now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS"
    " $$SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint$$;"
    "CREATE FUNCTION lease_live(o text, ep bigint) RETURNS boolean"
    " LANGUAGE sql VOLATILE AS $$SELECT EXISTS (SELECT 1 FROM owners"
    " WHERE owner = o AND epoch = ep AND lease_until > now_ms())$$;"
    /* Why an owned write changed no row: fenced (SG001), or no such saga
     * (22012, as the strict statements without a lease). */
    "CREATE FUNCTION not_written(saga text, ins boolean) RETURNS int"
    " LANGUAGE plpgsql VOLATILE AS $$ BEGIN"
    " IF ins OR EXISTS (SELECT 1 FROM sagas WHERE id = saga) THEN"
    " RAISE EXCEPTION 'saga % is fenced: owned by another engine, or this"
    " engine''s lease ran out', saga USING ERRCODE = 'SG001';"
    " END IF;"
    " RAISE EXCEPTION 'no saga %', saga USING ERRCODE = '22012';"
    " END $$;"
    "CREATE FUNCTION lease_lost(o text, ep bigint) RETURNS int"
    " LANGUAGE plpgsql VOLATILE AS $$ BEGIN"
    " RAISE EXCEPTION 'fenced: the lease of % epoch % is not live', o, ep"
    " USING ERRCODE = 'SG001';"
    " END $$;",
    /* 2 -> 3: the batch log. Each open of the store names itself (writer)
     * and every asynchronous batch sets its row to the batch's number in
     * the batch's own transaction: after a lost answer, the row says
     * whether the commit happened. One row per open, not per batch. */
    "CREATE TABLE batch_log("
    " writer text PRIMARY KEY,"
    " seq bigint NOT NULL,"
    " at_ms bigint NOT NULL);"
    /* A saga row is updated at every step: room on its page lets most of
     * those updates be HOT (no index entries; measured 1.4x faster
     * batches by bench/run scaleout's floor). */
    "ALTER TABLE sagas SET (fillfactor = 70);",
    /* 3 -> 4: less server work per saga (profiled with bench/run
     * scaleout). A batch updates every saga in flight once; at 70 half of
     * the updates found no room on their page and were not HOT (new
     * entries in both indexes): at 45 a page has room for one new
     * version of each of its rows (the last update, which changes state,
     * is never HOT). Saga ids compare bytewise (COLLATE "C"): a locale's
     * collation costs a strcoll per index comparison, and nothing orders
     * saga ids for their meaning. Both apply to rows written from now
     * on; the ALTER COLUMNs rebuild the indexes of those columns. */
    "ALTER TABLE sagas SET (fillfactor = 45);"
    "ALTER TABLE sagas ALTER COLUMN id TYPE text COLLATE \"C\";"
    "ALTER TABLE journal ALTER COLUMN saga_id TYPE text COLLATE \"C\";"
    "ALTER TABLE idem ALTER COLUMN saga_id TYPE text COLLATE \"C\";",
    /* 4 -> 5: fewer rows and index entries per transition (profiled with
     * bench/run scaleout: the journal's rows were half the server's time).
     * A batch that writes a saga's row carries that saga's journal entries
     * in the row itself, appended to jrn (packed, saga__pg_jrn_pack in
     * pg_batch.c: per entry seq, event, step, attempt as int4, started_ms,
     * at_ms, epoch as int8, then owner and error each as an int4 length,
     * -1 for NULL, and the bytes and a NUL; all big-endian): no journal
     * row, no index entry, and the row's own fencing check covers them.
     * Entries written otherwise (the journal_append slot, a saga not in
     * the batch) stay rows, in journal_rows (the former journal); the
     * view journal shows both, one row per entry with the columns of
     * before, for the admin queries. The state index holds active sagas
     * only: a saga leaves it when it ends (its last update adds no
     * entry), and it stays as small as the sagas in flight. The rows
     * grow by their entries: at fillfactor 30 every update but the
     * completing one stays HOT again (at 45: 55000 of 80000 for 20000
     * 4-step sagas, at 30: 60000, the most, as the completing update
     * changes the indexed state). */
    "ALTER TABLE journal RENAME TO journal_rows;"
    "ALTER TABLE sagas SET (fillfactor = 30);"
    "ALTER TABLE sagas ADD COLUMN jrn bytea NOT NULL DEFAULT '';"
    /* The entries of a packed journal as rows (for the view). Integers
     * are read with get_byte in plpgsql's simple expressions (a SQL
     * function per field was 100x slower); u4 is unsigned, i4 signed. */
    "CREATE FUNCTION jrn_u4(b bytea, o int) RETURNS bigint"
    " LANGUAGE sql IMMUTABLE STRICT AS $$SELECT (get_byte(b, o)::bigint"
    " << 24) | (get_byte(b, o + 1) << 16) | (get_byte(b, o + 2) << 8) |"
    " get_byte(b, o + 3)$$;"
    "CREATE FUNCTION jrn_entries(b bytea) RETURNS TABLE(seq bigint,"
    " event bigint, step bigint, attempt bigint, started_ms bigint,"
    " at_ms bigint, error text, owner text, epoch bigint)"
    " LANGUAGE plpgsql IMMUTABLE STRICT SET search_path FROM CURRENT"
    " AS $$ DECLARE o int := 0; n bigint; len int := length(b);"
    " BEGIN WHILE o < len LOOP"
    " seq := jrn_u4(b, o); event := jrn_u4(b, o + 4);"
    " step := jrn_u4(b, o + 8); attempt := jrn_u4(b, o + 12);"
    " IF event >= 2147483648 THEN event := event - 4294967296; END IF;"
    " IF step >= 2147483648 THEN step := step - 4294967296; END IF;"
    " started_ms := (jrn_u4(b, o + 16) << 32) | jrn_u4(b, o + 20);"
    " at_ms := (jrn_u4(b, o + 24) << 32) | jrn_u4(b, o + 28);"
    " epoch := (jrn_u4(b, o + 32) << 32) | jrn_u4(b, o + 36);"
    " o := o + 40; n := jrn_u4(b, o); o := o + 4; owner := NULL;"
    " IF n < 4294967295 THEN owner := convert_from(substring(b FROM o + 1"
    " FOR n::int), getdatabaseencoding()); o := o + n::int + 1; END IF;"
    " n := jrn_u4(b, o); o := o + 4; error := NULL;"
    " IF n < 4294967295 THEN error := convert_from(substring(b FROM o + 1"
    " FOR n::int), getdatabaseencoding()); o := o + n::int + 1; END IF;"
    " RETURN NEXT; END LOOP; END $$;"
    /* How many entries a packed journal holds (counts, without the view). */
    "CREATE FUNCTION jrn_count(b bytea) RETURNS bigint"
    " LANGUAGE plpgsql IMMUTABLE STRICT SET search_path FROM CURRENT"
    " AS $$ DECLARE o int := 0; c bigint := 0; n bigint;"
    " len int := length(b); BEGIN WHILE o < len LOOP o := o + 40;"
    " FOR k IN 1 .. 2 LOOP n := jrn_u4(b, o); o := o + 4;"
    " IF n < 4294967295 THEN o := o + n::int + 1; END IF; END LOOP;"
    " c := c + 1; END LOOP; RETURN c; END $$;"
    "CREATE VIEW journal AS"
    " SELECT saga_id, seq, event, step, attempt, started_ms, at_ms, error,"
    " owner, epoch FROM journal_rows UNION ALL"
    " SELECT s.id, j.seq, j.event, j.step, j.attempt, j.started_ms, j.at_ms,"
    " j.error, j.owner, j.epoch FROM sagas s"
    " CROSS JOIN LATERAL jrn_entries(s.jrn) j;"
    "DROP INDEX sagas_state;"
    "CREATE INDEX sagas_active ON sagas(state, created_ms, seq)"
    " WHERE state IN (1, 2);",
    /* 5 -> 6: outbox rows have an owner (pg_outbox.c). A row written by a
     * store with a lease carries its (owner, epoch); only that epoch's
     * relay publishes and deletes it while its lease is live. A row whose
     * writer's lease is not live (expired, released, a dead epoch, or no
     * owner: rows written before this version or without a lease) is
     * taken over by the engine that owns its saga, or by any live engine
     * if its saga is not active. Existing rows keep their content and get
     * no owner. */
    ("ALTER TABLE outbox ADD COLUMN owner text,"
     " ADD COLUMN epoch bigint NOT NULL DEFAULT 0;"),
    /* 6 -> 7: a batch's key-value write that expects the key's value
     * (store interface version 13, SAGA_KV_EXPECT) raises SG002 when the
     * key holds something else, aborting the batch (SAGA_EBUSY). */
    ("CREATE OR REPLACE FUNCTION kv_changed(k text) RETURNS int"
     " LANGUAGE plpgsql VOLATILE AS $$ BEGIN"
     " RAISE EXCEPTION 'key % does not hold the value expected', k"
     " USING ERRCODE = 'SG002';"
     " END $$;"),
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ------------------------------------------------------------------------ */
/* Parameters and columns                                                   */

void saga__pg_text(pg_params *p, const char *v)
{
    int i = p->n++;
    p->val[i] = v;
    p->len[i] = v ? (int)strlen(v) : 0;
    p->fmt[i] = 1;
}

void saga__pg_blob(pg_params *p, const void *v, size_t len)
{
    int i = p->n++;
    /* An empty bytea is not NULL: give libpq a non-NULL pointer. */
    p->val[i] = len ? (const char *)v : "";
    p->len[i] = (int)len;
    p->fmt[i] = 1;
}

void saga__pg_int(pg_params *p, int64_t v)
{
    int i = p->n++;
    uint64_t u = (uint64_t)v;
    for (int b = 7; b >= 0; b--, u >>= 8)
        p->ints[i][b] = (char)(u & 0xff);
    p->val[i] = p->ints[i];
    p->len[i] = 8;
    p->fmt[i] = 1;
}

int64_t saga__pg_col_int(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return 0;
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, row, col);
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | b[i];
    return (int64_t)u;
}

/* libpq terminates every value with a NUL, binary ones included. */
const char *saga__pg_col_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

const void *saga__pg_col_blob(const PGresult *r, int row, int col, size_t *len)
{
    *len = (size_t)PQgetlength(r, row, col);
    return PQgetvalue(r, row, col);
}

/* ------------------------------------------------------------------------ */
/* Errors and statements                                                    */

int saga__pg_failf(pg_store *s, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

/* A failure reported by the server or libpq. The message ends with a
 * newline: drop it. */
int saga__pg_fail_res(pg_store *s, const PGresult *res, const char *what)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (msg == NULL || msg[0] == '\0')
        msg = s->conn ? PQerrorMessage(s->conn) : "no connection";
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    if (s->in_txn)
        s->aborted = 1;
    return saga__pg_failf(s, SAGA_ESTORE, "%s: %.*s", what, (int)n, msg);
}

int saga__pg_check_txn(pg_store *s)
{
    if (s->conn == NULL)
        return saga__pg_failf(s, SAGA_ESTORE, "not connected");
    if (s->in_txn && s->aborted)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "the transaction failed on an earlier error; "
                              "roll back and retry the batch");
    return SAGA_OK;
}

static int connect_db(pg_store *s);

/* Outside a transaction, a broken connection is re-opened before the next
 * statement. Inside one, the transaction is lost: the error says so and the
 * caller rolls back; the next begin reconnects. */
int saga__pg_ensure_conn(pg_store *s)
{
    /* Batches in flight first: the connection is theirs until answered. */
    if ((s->pipeline || s->q_head || s->lost || s->reconn) &&
        saga__pg_quiesce(s) != SAGA_OK)
        return SAGA_ESTORE;
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return SAGA_OK;
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "the connection was lost in a transaction");
    /* On a loop: no blocking connect while the server is known to be
     * unreachable (the loop's own reconnection is under way or backing
     * off). The first one after a connection found broken is allowed. */
    if (saga__pg_no_connect(s) != SAGA_OK)
        return SAGA_ESTORE;
    int rc = connect_db(s);
    if (rc != SAGA_OK)
        saga__pg_connect_failed(s);
    return rc;
}

/* Statements that only read: while a batch is in flight they go to the
 * read connection, which sees committed data only. */
static int is_read(enum pg_stmt which)
{
    switch (which) {
    case PG_SAGA_GET:
    case PG_SAGA_SCAN:
    case PG_SAGA_SCAN_ACTIVE:
    case PG_JOURNAL_SCAN:
    case PG_IDEM_GET:
    case PG_OUTBOX_SCAN:
    case PG_KV_GET:
    case PG_KV_SCAN:
        return 1;
    default:
        return 0;
    }
}

int saga__pg_run(pg_store *s, enum pg_stmt which, const pg_params *p,
                 PGresult **out, const char *what)
{
    if (out)
        *out = NULL;
    int rc = SAGA_OK;
    PGconn *c;
    PGresult *res;
    ExecStatusType st;
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)which);
    for (int tries = 0;; tries++) {
        if (is_read(which)) {
            c = saga__pg_reader(s, &rc);
        } else {
            rc = saga__pg_ensure_conn(s);
            c = s->conn;
        }
        if (rc)
            return rc;
        res = PQexecPrepared(c, name, p->n, p->val, p->len, p->fmt, 1);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        /* A connection the server dropped while idle (a restart, a
         * failover, pg_terminate_backend) is found broken only by the next
         * statement. A read outside a transaction changed nothing: open a
         * new connection and read again, once. */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && tries == 0 &&
            is_read(which) && !s->in_txn && PQstatus(c) == CONNECTION_BAD) {
            PQclear(res);
            continue;
        }
        break;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                                : NULL;
        if (c != s->conn) {
            const char *m = res ? PQresultErrorMessage(res) : "";
            if (m == NULL || m[0] == '\0')
                m = PQerrorMessage(c);
            size_t n = strlen(m);
            while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
                n--;
            rc = saga__pg_failf(s, SAGA_ESTORE, "%s: %.*s", what, (int)n, m);
        } else {
            rc = saga__pg_fail_res(s, res, what);
        }
        if (state && strcmp(state, "23505") == 0)
            rc = SAGA_EDUP;
        else if (state && strcmp(state, PG_SQLSTATE_FENCED) == 0)
            rc = SAGA_EFENCED;
        else if (state && strcmp(state, "22012") == 0)
            rc = SAGA_ENOTFOUND;
        else if (res == NULL)
            rc = SAGA_ENOMEM;
        PQclear(res);
        return rc;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return SAGA_OK;
}

/* A plain command without parameters. */
static int exec_sql(pg_store *s, const char *sql, const char *what)
{
    PGresult *res = PQexec(s->conn, sql);
    int rc = SAGA_OK;
    if (res == NULL || (PQresultStatus(res) != PGRES_COMMAND_OK &&
                        PQresultStatus(res) != PGRES_TUPLES_OK))
        rc = saga__pg_fail_res(s, res, what);
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                             */

int saga__pg_begin(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "begin: a transaction is already open");
    int rc = saga__pg_ensure_conn(s);
    if (rc == SAGA_OK)
        rc = exec_sql(s, "BEGIN", "begin");
    if (rc != SAGA_OK)
        return SAGA_ESTORE;
    s->in_txn = 1;
    s->aborted = 0;
    return SAGA_OK;
}

int saga__pg_commit(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    if (!s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE, "commit: no open transaction");
    int rc = saga__pg_check_txn(s);
    if (rc == SAGA_OK) {
        PGresult *res = PQexec(s->conn, "COMMIT");
        /* A transaction that failed earlier answers COMMIT with ROLLBACK
         * and a success status: look at the command tag too. */
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK ||
            strcmp(PQcmdStatus(res), "COMMIT") != 0)
            rc = saga__pg_fail_res(s, res, "commit");
        PQclear(res);
    }
    if (rc != SAGA_OK && s->conn && PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec(s->conn, "ROLLBACK");
        PQclear(res);
    }
    s->in_txn = 0;
    s->aborted = 0;
    s->in_sp = 0;
    return rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE;
}

int saga__pg_rollback(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    /* Rolling back nothing is fine: the engine rolls back after a failed
     * commit, which has already dropped the transaction. */
    if (!s->in_txn)
        return SAGA_OK;
    s->in_txn = 0;
    s->aborted = 0;
    s->in_sp = 0;
    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK)
        return SAGA_OK; /* the server dropped it with the connection */
    return exec_sql(s, "ROLLBACK", "rollback") == SAGA_OK ? SAGA_OK
                                                          : SAGA_ESTORE;
}

/* One level of savepoint. ROLLBACK TO also clears an error raised after
 * the savepoint, so the transaction is usable again. */
int saga__pg_savepoint(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    if (!s->in_txn || s->in_sp)
        return saga__pg_failf(s, SAGA_ESTORE, "savepoint: %s",
                              s->in_txn ? "one is open already"
                                        : "no open transaction");
    int rc = saga__pg_check_txn(s);
    if (rc == SAGA_OK)
        rc = exec_sql(s, "SAVEPOINT saga_sp", "savepoint");
    if (rc == SAGA_OK)
        s->in_sp = 1;
    return rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE;
}

static int savepoint_end(pg_store *s, int undo)
{
    const char *what = undo ? "savepoint_rollback" : "savepoint_release";
    if (!s->in_txn || !s->in_sp)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: no open savepoint", what);
    s->in_sp = 0;
    if (s->conn == NULL)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: not connected", what);
    int rc;
    if (undo) {
        s->aborted = 0;
        rc = exec_sql(s,
                      "ROLLBACK TO SAVEPOINT saga_sp; "
                      "RELEASE SAVEPOINT saga_sp",
                      what);
    } else {
        rc = saga__pg_check_txn(s);
        if (rc == SAGA_OK)
            rc = exec_sql(s, "RELEASE SAVEPOINT saga_sp", what);
    }
    return rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE;
}

int saga__pg_savepoint_rollback(saga_store *self)
{
    return savepoint_end((pg_store *)self, 1);
}

int saga__pg_savepoint_release(saga_store *self)
{
    return savepoint_end((pg_store *)self, 0);
}

/* ------------------------------------------------------------------------ */
/* Connect and migrate                                                      */

static int schema_version(pg_store *s, int *out)
{
    PGresult *res = PQexec(s->conn, "SELECT v FROM schema_version");
    int rc = SAGA_OK;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
        *out = PQntuples(res) ? atoi(PQgetvalue(res, 0, 0)) : 0;
    else
        rc = saga__pg_fail_res(s, res, "read schema version");
    PQclear(res);
    return rc;
}

/* Bring the schema to SCHEMA_VERSION in one transaction, under an advisory
 * lock named after the schema: a second process opening the same new
 * database waits, then finds the schema made. */
static int migrate_schema(pg_store *s)
{
    char sql[256];
    int rc = exec_sql(s, "BEGIN", "migrate: begin");
    if (rc)
        return rc;
    s->in_txn = 1;
    snprintf(sql, sizeof sql,
             "SELECT pg_advisory_xact_lock(hashtext('saga schema %s'))",
             s->schema);
    rc = exec_sql(s, sql, "migrate: lock");
    if (rc == SAGA_OK) {
        snprintf(sql, sizeof sql,
                 "CREATE SCHEMA IF NOT EXISTS \"%s\"; "
                 "SET LOCAL search_path TO \"%s\"; "
                 "CREATE TABLE IF NOT EXISTS schema_version(v int NOT NULL)",
                 s->schema, s->schema);
        rc = exec_sql(s, sql, "migrate: create schema");
    }
    int v = 0;
    if (rc == SAGA_OK)
        rc = schema_version(s, &v);
    if (rc == SAGA_OK && v > SCHEMA_VERSION)
        rc = saga__pg_failf(s, SAGA_EVERSION,
                            "schema version %d is newer than this library "
                            "supports (%d)",
                            v, SCHEMA_VERSION);
    int from = v;
    for (; rc == SAGA_OK && v < SCHEMA_VERSION; v++)
        rc = exec_sql(s, migrations[v], "migrate");
    if (rc == SAGA_OK && from < SCHEMA_VERSION) {
        snprintf(sql, sizeof sql,
                 "DELETE FROM schema_version; "
                 "INSERT INTO schema_version(v) VALUES (%d)",
                 SCHEMA_VERSION);
        rc = exec_sql(s, sql, "migrate: set version");
    }
    s->in_txn = 0;
    s->aborted = 0;
    if (rc == SAGA_OK)
        rc = exec_sql(s, "COMMIT", "migrate: commit");
    else
        PQclear(PQexec(s->conn, "ROLLBACK"));
    return rc;
}

int saga__pg_stmt_types(int i, unsigned int types[PG_MAXP])
{
    const pg_stmt_def *d = &saga__pg_stmts[i];
    int n = 0;
    /* The parameter count is the highest $N in the SQL; a 0 type lets
     * the server infer it (from a cast). */
    for (const char *p = d->sql; (p = strchr(p, '$')) != NULL; p++) {
        int k = atoi(p + 1);
        if (k > n)
            n = k;
    }
    for (int k = 0; k < n && k < PG_MAXP; k++)
        types[k] = d->types[k];
    return n;
}

static int prepare_all(pg_store *s, PGconn *c)
{
    for (int i = 0; i < PG__COUNT; i++) {
        Oid types[PG_MAXP];
        int n = saga__pg_stmt_types(i, types);
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        PGresult *res = PQprepare(c, name, saga__pg_stmts[i].sql, n, types);
        int rc = SAGA_OK;
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = saga__pg_failf(s, SAGA_ESTORE, "prepare: %s",
                                PQerrorMessage(c));
        PQclear(res);
        if (rc)
            return rc;
    }
    return SAGA_OK;
}

static void ignore_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Open a connection (a new one in *out, replacing what was there): the
 * schema's search path and every statement prepared; @p migrate brings
 * the schema up to date first (the main connection; the read connection
 * finds it done). */
int saga__pg_open_conn(pg_store *s, PGconn **out, int migrate)
{
    if (*out)
        PQfinish(*out);
    *out = NULL;
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", s->connect_timeout_s);
    const char *keys[] = {PG_TCP_KEYS, "dbname", "connect_timeout",
                          "application_name", NULL};
    const char *vals[] = {PG_TCP_VALS, s->conninfo, timeout, "libsaga", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "connect: out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = saga__pg_failf(s, SAGA_ESTORE, "connect: %s",
                                PQerrorMessage(c));
        size_t n = strlen(s->err);
        while (n > 0 && (s->err[n - 1] == '\n' || s->err[n - 1] == ' '))
            s->err[--n] = '\0';
        PQfinish(c);
        return rc;
    }
    /* The server's notices (schema exists, ...) are not errors. */
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", s->schema);
    int rc = SAGA_OK;
    if (migrate) {
        /* migrate() and exec_sql() work on s->conn. */
        PGconn *keep = s->conn;
        s->conn = c;
        rc = migrate_schema(s);
        s->conn = keep;
    }
    if (rc == SAGA_OK) {
        PGresult *res = PQexec(c, sql);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = saga__pg_failf(s, SAGA_ESTORE, "set search_path: %s",
                                PQerrorMessage(c));
        PQclear(res);
    }
    if (rc == SAGA_OK)
        rc = prepare_all(s, c);
    if (rc != SAGA_OK) {
        PQfinish(c);
        return rc;
    }
    *out = c;
    return SAGA_OK;
}

static int connect_db(pg_store *s)
{
    return saga__pg_open_conn(s, &s->conn, 1);
}

void saga__pg_close(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    if (s == NULL)
        return;
    saga__pg_async_close(s);
    if (s->conn)
        PQfinish(s->conn); /* an open transaction is rolled back */
    if (s->rconn)
        PQfinish(s->rconn);
    if (s->aconn)
        PQfinish(s->aconn);
    saga_free(s->conninfo);
    s->conninfo = NULL;
    if (s->close_pending)
        return; /* freed by the dispatch loop that called done */
    saga_free(s);
}

int saga_pg_options_init(saga_pg_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    if (version == 0 || version > SAGA_PG_OPTIONS_VERSION)
        return SAGA_EVERSION;
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static _Thread_local char open_err[512];

const char *saga_store_postgres_open_errmsg(void) { return open_err; }

static int valid_schema(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Randomness for this open's batch-log name: the OS's, or the clock's and
 * the process's when /dev/urandom cannot be read. */
static uint64_t writer_seed(void)
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        if (fread(&v, sizeof v, 1, f) != 1)
            v = 0;
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return v ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^
           ((uint64_t)getpid() << 48);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int saga_store_postgres_open(saga_store **out, const char *conninfo,
                             const saga_pg_options *opts)
{
    saga_pg_options defaults = SAGA_PG_OPTIONS_INIT;
    open_err[0] = '\0';
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (opts->version == 0 || opts->version > SAGA_PG_OPTIONS_VERSION)
        return SAGA_EVERSION;
    if (conninfo == NULL)
        conninfo = getenv("SAGA_PG_URL");
    if (conninfo == NULL || conninfo[0] == '\0') {
        snprintf(open_err, sizeof open_err,
                 "no connection string (and SAGA_PG_URL is not set)");
        return SAGA_EINVAL;
    }
    uint32_t lease_ms = opts->version >= 2 ? opts->lease_ms : 0;
    const char *owner_id = opts->version >= 2 ? opts->owner_id : NULL;
    if (lease_ms != 0 && (lease_ms < 1000 || lease_ms > 3600000)) {
        snprintf(open_err, sizeof open_err,
                 "lease_ms %u is outside 1000..3600000", lease_ms);
        return SAGA_EINVAL;
    }
    if (owner_id != NULL && (owner_id[0] == '\0' || strlen(owner_id) > 127)) {
        snprintf(open_err, sizeof open_err, "owner_id must be 1..127 bytes");
        return SAGA_EINVAL;
    }
    const char *schema = opts->schema ? opts->schema : "saga";
    if (!valid_schema(schema) || opts->connect_timeout_s < 0) {
        snprintf(open_err, sizeof open_err,
                 "bad schema name \"%s\" (1-63 of a-z, 0-9, _)", schema);
        return SAGA_EINVAL;
    }
    pg_store *s = saga_malloc(sizeof *s);
    if (s == NULL)
        return SAGA_ENOMEM;
    memset(s, 0, sizeof *s);
    s->poll_fd = -1;
    s->base = saga__pg_ops;
    snprintf(s->schema, sizeof s->schema, "%s", schema);
    s->connect_timeout_s = opts->connect_timeout_s ? opts->connect_timeout_s
                                                   : 10;
    if (lease_ms) {
        s->lease_ms = lease_ms;
        if (owner_id != NULL) {
            snprintf(s->owner, sizeof s->owner, "%s", owner_id);
        } else {
            char host[64] = "host";
            gethostname(host, sizeof host - 1);
            host[sizeof host - 1] = '\0';
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            unsigned r = (unsigned)ts.tv_nsec ^
                         (unsigned)ts.tv_sec * 2654435761u ^
                         (unsigned)(uintptr_t)s;
            snprintf(s->owner, sizeof s->owner, "%s:%ld:%08x", host,
                     (long)getpid(), r);
        }
        saga__pg_own_init(s);
    }
    saga__pg_kv_async_init(s);
    saga__pg_outbox_init(s);
    size_t n = strlen(conninfo) + 1;
    s->conninfo = saga_malloc(n);
    if (s->conninfo == NULL) {
        saga_free(s);
        return SAGA_ENOMEM;
    }
    memcpy(s->conninfo, conninfo, n);
    /* This open's name in the batch log: random, so that two processes
     * (or two opens in one) never share a row. */
    uint64_t seed = writer_seed() ^ (uint64_t)(uintptr_t)s;
    uint64_t a = splitmix64(&seed), b = splitmix64(&seed);
    snprintf(s->log_writer, sizeof s->log_writer, "%016llx%016llx",
             (unsigned long long)a, (unsigned long long)b);
    int rc = connect_db(s);
    if (rc == SAGA_OK) {
        /* Rows of opens gone for a week are of no use to anyone. */
        char sql[128];
        snprintf(sql, sizeof sql, "DELETE FROM batch_log WHERE at_ms < %lld",
                 (long long)(saga__pg_wall_ms() - 7LL * 24 * 3600 * 1000));
        PQclear(PQexec(s->conn, sql));
    }
    if (rc != SAGA_OK) {
        snprintf(open_err, sizeof open_err, "%s", s->err);
        saga__pg_close(&s->base);
        return rc == SAGA_EVERSION || rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    }
    *out = &s->base;
    return SAGA_OK;
}

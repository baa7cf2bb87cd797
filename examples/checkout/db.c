/*
 * db.c — the checkout's SQL layer on SQLite and PostgreSQL (see db.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

#ifdef CK_WITH_PG
#include <libpq-fe.h>
#endif

#define CK_MAX_PARAMS 16

struct ck_db {
    int pg;
    sqlite3 *lite;          /* SQLite */
    saga_participant *part; /* PostgreSQL: the participant's store, or */
    void *own;              /* a PGconn * of our own */
    int own_lite;           /* lite is ours to close */
    int64_t changes;        /* PostgreSQL: rows of the last command */
    char schema[64];        /* PostgreSQL: the service's schema */
    int txn, txn_pid;       /* PostgreSQL: ck_begin()'s, on that backend */
};

struct ck_stmt {
    ck_db *db;
    sqlite3_stmt *lite;
    struct cslot *cached; /* SQLite: its cache slot, NULL if uncached */
#ifdef CK_WITH_PG
    struct pgslot *slot; /* NULL: unnamed (not cached) */
    char *sql;           /* unnamed: the rewritten SQL */
    int nparams;
    char *val[CK_MAX_PARAMS];
    int len[CK_MAX_PARAMS];
    int fmt[CK_MAX_PARAMS];
    Oid type[CK_MAX_PARAMS];
    PGresult *res;
    int row;
    unsigned char *blob; /* the last unescaped bytea */
#endif
};

static void log_err(const char *what, const char *msg, const char *sql)
{
    fprintf(stderr, "saga-checkout: %s: %s (%.80s)\n", what, msg, sql);
}

int ck_db_is_pg(const ck_db *db) { return db != NULL && db->pg; }

ck_db *ck_db_sqlite(sqlite3 *h)
{
    ck_db *db = calloc(1, sizeof *db);
    if (db != NULL)
        db->lite = h;
    return db;
}

ck_db *ck_db_participant(saga_participant *p, const char *schema)
{
    ck_db *db = calloc(1, sizeof *db);
    if (db == NULL)
        return NULL;
    db->part = p;
    db->pg = schema != NULL;
    if (schema != NULL)
        snprintf(db->schema, sizeof db->schema, "%s", schema);
    else
        db->lite = saga_participant_store_handle(p);
    return db;
}

/* ------------------------------------------------------------------------ */
/* PostgreSQL                                                               */

/* The PostgreSQL dialect of @p sql (malloc'd); *nparams the highest $N.
 * Room: a "?" becomes at most "$" and 6 digits; the words do not grow by
 * more than one character in four. */
char *ck_sql_pg(const char *sql, int *nparams)
{
    size_t n = strlen(sql);
    char *out = malloc(7 * n + 16);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    int next = 0, max = 0;
    static const struct {
        const char *from, *to;
    } words[] = {{"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"},
                 {"INTEGER", "BIGINT"},
                 {"BLOB", "BYTEA"}};
    for (size_t i = 0; i < n;) {
        char c = sql[i];
        if (c == '\'') { /* a literal, copied as is ('' inside) */
            out[o++] = sql[i++];
            while (i < n && sql[i] != '\'')
                out[o++] = sql[i++];
            if (i < n)
                out[o++] = sql[i++];
            continue;
        }
        if (c == '?') {
            int k;
            i++;
            if (isdigit((unsigned char)sql[i])) {
                k = 0;
                while (isdigit((unsigned char)sql[i]))
                    if ((k = k * 10 + (sql[i++] - '0')) > 99999)
                        k = 99999;
            } else {
                k = ++next;
            }
            if (k > next)
                next = k;
            if (k > max)
                max = k;
            o += (size_t)sprintf(out + o, "$%d", k);
            continue;
        }
        int word_start = i == 0 || !(isalnum((unsigned char)sql[i - 1]) ||
                                     sql[i - 1] == '_');
        size_t w;
        for (w = 0; word_start && w < sizeof words / sizeof words[0]; w++) {
            size_t l = strlen(words[w].from);
            if (strncmp(sql + i, words[w].from, l) == 0 &&
                !(isalnum((unsigned char)sql[i + l]) || sql[i + l] == '_')) {
                size_t t = strlen(words[w].to);
                memcpy(out + o, words[w].to, t);
                o += t;
                i += l;
                break;
            }
        }
        if (word_start && w < sizeof words / sizeof words[0])
            continue;
        out[o++] = sql[i++];
    }
    out[o] = '\0';
    *nparams = max;
    return out;
}

#ifdef CK_WITH_PG

static void ignore_blob(const void *buf, size_t len, void *arg)
{
    (void)buf, (void)len, (void)arg;
}

/* The connection to use now. A lost one is replaced: the participant's
 * store reconnects on its next call outside a transaction (a read of a
 * key nobody writes; inside a transaction it fails and changes nothing),
 * a connection of our own is reset here. The next statement then runs on
 * a new backend, where it is prepared again. */
static PGconn *txn_conn(ck_db *db, const char *sql);

static PGconn *conn_of(ck_db *db)
{
    if (db->txn)
        return txn_conn(db, NULL);
    if (db->own == NULL) {
        PGconn *c = saga_participant_store_handle(db->part);
        if (c == NULL || PQstatus(c) == CONNECTION_BAD) {
            saga_store *s = saga_participant_store(db->part);
            if (s != NULL && s->kv_get != NULL)
                s->kv_get(s, "ck.reconnect", ignore_blob, NULL);
            c = saga_participant_store_handle(db->part);
        }
        return c;
    }
    if (PQstatus(db->own) == CONNECTION_BAD) {
        PQreset(db->own);
        if (PQstatus(db->own) != CONNECTION_OK)
            return db->own; /* the statement fails: tried again later */
        char sql[128];
        snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", db->schema);
        PGresult *res = PQexec(db->own, sql);
        PQclear(res);
    }
    return db->own;
}

/* Inside ck_begin()'s transaction: its connection, or NULL (logged
 * unless @p sql is NULL) if that connection was lost. Its statements then
 * fail until ck_rollback(), instead of running on a new connection, each
 * committed on its own, and the COMMIT of nothing answering "no
 * transaction in progress" with success: an item added to a new cart was
 * answered 201 while its cart row was lost with the transaction (the
 * UPDATE after the INSERTs had failed), and the checkout then got 404
 * cart_not_found (hostile_killloop_distributed_pg). */
static PGconn *txn_conn(ck_db *db, const char *sql)
{
    PGconn *c = db->own != NULL ? db->own
                                : saga_participant_store_handle(db->part);
    if (c != NULL && PQstatus(c) == CONNECTION_OK &&
        PQbackendPID(c) == db->txn_pid) {
        PGTransactionStatusType t = PQtransactionStatus(c);
        if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR)
            return c;
    }
    if (sql != NULL)
        log_err("sql", "the transaction was lost with its connection", sql);
    return NULL;
}

static int pg_exec(ck_db *db, const char *sql);

static int pg_begin(ck_db *db)
{
    db->txn = 0;
    int rc = pg_exec(db, "BEGIN");
    PGconn *c = rc == CK_OK ? conn_of(db) : NULL;
    if (c == NULL || PQtransactionStatus(c) != PQTRANS_INTRANS)
        return CK_ERR;
    db->txn = 1;
    db->txn_pid = PQbackendPID(c);
    return CK_OK;
}

/* COMMIT on the transaction's own connection; a transaction that failed
 * earlier answers COMMIT with ROLLBACK (and success): not committed. */
static int pg_commit(ck_db *db)
{
    PGconn *c = db->txn ? txn_conn(db, "COMMIT") : NULL;
    db->txn = 0;
    if (c == NULL)
        return CK_ERR;
    PGresult *res = PQexec(c, "COMMIT");
    int ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK &&
             strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!ok)
        log_err("commit",
                res && PQresultStatus(res) == PGRES_COMMAND_OK
                    ? "the transaction had failed: rolled back"
                    : PQerrorMessage(c),
                "COMMIT");
    PQclear(res);
    return ok ? CK_OK : CK_ERR;
}

static int pg_rollback(ck_db *db)
{
    PGconn *c = db->txn ? txn_conn(db, NULL) : NULL;
    db->txn = 0;
    if (c != NULL) {
        PGresult *res = PQexec(c, "ROLLBACK");
        PQclear(res);
    }
    return CK_OK;
}

/* Prepared statements: one slot per (connection, SQL text); a slot whose
 * connection was replaced (same address, other backend) is prepared
 * again. A full cache runs statements unnamed. */
typedef struct pgslot {
    PGconn *conn;
    int pid;
    const char *key;
    char *orig, *sql;
    int nparams, prepared;
    char name[16];
} pgslot;
#define PG_SLOTS 2048
static pgslot pg_slots[PG_SLOTS];
static int pg_named;

static pgslot *pg_slot(PGconn *c, const char *sql)
{
    uintptr_t h = ((uintptr_t)sql >> 3) * 31u ^ ((uintptr_t)c >> 4);
    for (int k = 0; k < 64; k++) {
        pgslot *s = &pg_slots[(h + (uintptr_t)k) % PG_SLOTS];
        if (s->key == NULL) {
            int np;
            s->sql = ck_sql_pg(sql, &np);
            s->orig = strdup(sql);
            if (s->sql == NULL || s->orig == NULL) {
                free(s->sql);
                free(s->orig);
                s->sql = s->orig = NULL;
                return NULL;
            }
            s->conn = c;
            s->key = sql;
            s->nparams = np;
            snprintf(s->name, sizeof s->name, "ck%d", ++pg_named);
            return s;
        }
        if (s->conn == c && s->key == sql && strcmp(s->orig, sql) == 0)
            return s;
    }
    return NULL;
}

static int pg_fail(const char *what, PGresult *res, PGconn *c, const char *sql)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strncmp(state, "23", 2) == 0)
        return CK_CONSTRAINT;
    log_err(what, res ? PQresultErrorMessage(res) : PQerrorMessage(c), sql);
    return CK_ERR;
}

static int pg_exec_on(PGconn *c, const char *sql);

/* A statement that failed because the connection was lost while no
 * transaction was open is run once more on a new connection. */
static int lost_idle(PGconn *c, int was_idle)
{
    return was_idle && PQstatus(c) == CONNECTION_BAD;
}

static int pg_exec(ck_db *db, const char *sql)
{
    for (int again = 0;; again++) {
        PGconn *c = conn_of(db);
        if (c == NULL) {
            log_err("sql", "no connection", sql);
            return CK_ERR;
        }
        int idle = PQtransactionStatus(c) == PQTRANS_IDLE;
        int rc = pg_exec_on(c, sql);
        if (rc == CK_OK || again || !lost_idle(c, idle))
            return rc;
    }
}

static int pg_exec_on(PGconn *c, const char *sql)
{
    int np;
    char *q = ck_sql_pg(sql, &np);
    if (q == NULL)
        return CK_ERR;
    PGresult *res = PQexec(c, q);
    int rc = CK_OK;
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        pg_fail("sql", res, c, sql);
        rc = CK_ERR;
    }
    PQclear(res);
    free(q);
    return rc;
}

static void pg_clear(ck_stmt *st)
{
    for (int i = 0; i < CK_MAX_PARAMS; i++) {
        free(st->val[i]);
        st->val[i] = NULL;
        st->len[i] = 0;
        st->fmt[i] = 0;
    }
    PQclear(st->res);
    st->res = NULL;
    st->row = -1;
    PQfreemem(st->blob);
    st->blob = NULL;
}

static ck_stmt *pg_prep(ck_db *db, const char *sql)
{
    PGconn *c = conn_of(db);
    if (c == NULL) {
        log_err("prepare", "no connection", sql);
        return NULL;
    }
    ck_stmt *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->db = db;
    st->row = -1;
    st->slot = pg_slot(c, sql);
    if (st->slot != NULL) {
        st->nparams = st->slot->nparams;
    } else {
        st->sql = ck_sql_pg(sql, &st->nparams);
        if (st->sql == NULL) {
            free(st);
            return NULL;
        }
    }
    if (st->nparams > CK_MAX_PARAMS) {
        log_err("prepare", "too many parameters", sql);
        free(st->sql);
        free(st);
        return NULL;
    }
    return st;
}

static void pg_bind(ck_stmt *st, int i, char *v, int len, int fmt, Oid type)
{
    if (i < 1 || i > CK_MAX_PARAMS) {
        free(v);
        return;
    }
    free(st->val[i - 1]);
    st->val[i - 1] = v;
    st->len[i - 1] = len;
    st->fmt[i - 1] = fmt;
    st->type[i - 1] = type;
}

static int pg_run_on(ck_stmt *st, PGconn *c);

static int pg_run(ck_stmt *st)
{
    for (int again = 0;; again++) {
        PGconn *c = conn_of(st->db);
        if (c == NULL)
            return CK_ERR;
        int idle = PQtransactionStatus(c) == PQTRANS_IDLE;
        int rc = pg_run_on(st, c);
        if (rc == CK_OK || again || !lost_idle(c, idle))
            return rc;
    }
}

static int pg_run_on(ck_stmt *st, PGconn *c)
{
    pgslot *s = st->slot;
    PGresult *res;
    if (s != NULL &&
        (s->conn != c || s->pid != PQbackendPID(c) || !s->prepared)) {
        /* Types from this first binding: text, int8, bytea; NULL: the
         * server infers it. */
        res = PQprepare(c, s->name, s->sql, s->nparams, st->type);
        ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (t != PGRES_COMMAND_OK) {
            const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
                                    : NULL;
            /* 42P05: prepared on this backend already (a connection
             * reused at the same address). */
            if (state == NULL || strcmp(state, "42P05") != 0) {
                int rc = pg_fail("prepare", res, c, s->orig);
                PQclear(res);
                return rc == CK_CONSTRAINT ? CK_ERR : rc;
            }
        }
        PQclear(res);
        s->conn = c;
        s->pid = PQbackendPID(c);
        s->prepared = 1;
    }
    const char *const *vals = (const char *const *)st->val;
    if (s != NULL)
        res = PQexecPrepared(c, s->name, st->nparams, vals, st->len, st->fmt,
                             0);
    else
        res = PQexecParams(c, st->sql, st->nparams, st->type, vals, st->len,
                           st->fmt, 0);
    ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (t == PGRES_TUPLES_OK || t == PGRES_COMMAND_OK) {
        const char *ct = PQcmdTuples(res);
        if (ct != NULL && ct[0] != '\0')
            st->db->changes = strtoll(ct, NULL, 10);
        st->res = res;
        st->row = -1;
        return CK_OK;
    }
    int rc = pg_fail("sql", res, c, s ? s->orig : st->sql);
    PQclear(res);
    return rc;
}

static int pg_step(ck_stmt *st)
{
    if (st->res == NULL) {
        int rc = pg_run(st);
        if (rc != CK_OK)
            return rc;
    }
    PQfreemem(st->blob);
    st->blob = NULL;
    if (PQresultStatus(st->res) != PGRES_TUPLES_OK)
        return CK_DONE;
    if (st->row + 1 >= PQntuples(st->res)) {
        st->row = PQntuples(st->res);
        return CK_DONE;
    }
    st->row++;
    return CK_ROW;
}

static const char *pg_col(ck_stmt *st, int i)
{
    if (st->res == NULL || st->row < 0 || st->row >= PQntuples(st->res) ||
        i < 0 || i >= PQnfields(st->res) || PQgetisnull(st->res, st->row, i))
        return NULL;
    return PQgetvalue(st->res, st->row, i);
}

static ck_db *pg_connect(const char *url, const char *schema)
{
    PGconn *c = PQconnectdb(url);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "saga-checkout: cannot connect to %s: %s", url,
                c ? PQerrorMessage(c) : "out of memory\n");
        PQfinish(c);
        return NULL;
    }
    ck_db *db = calloc(1, sizeof *db);
    if (db == NULL) {
        PQfinish(c);
        return NULL;
    }
    db->pg = 1;
    db->own = c;
    snprintf(db->schema, sizeof db->schema, "%s", schema);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SET client_min_messages = warning;"
             "BEGIN;"
             "SELECT pg_advisory_xact_lock(hashtext('saga schema %s'));"
             "CREATE SCHEMA IF NOT EXISTS \"%s\";"
             "COMMIT;"
             "SET search_path TO \"%s\"",
             schema, schema, schema);
    if (pg_exec(db, sql) != CK_OK) {
        ck_db_close(db);
        return NULL;
    }
    return db;
}
#endif /* CK_WITH_PG */

/* ------------------------------------------------------------------------ */
/* SQLite: a small cache of prepared statements, keyed by the SQL text's
 * address (the queries are string literals) and checked by content. A
 * statement in use is "busy": preparing the same text again meanwhile gives
 * a fresh, uncached statement. */

#define CK_STMT_CACHE 512
typedef struct cslot {
    sqlite3 *db;
    const char *key;
    sqlite3_stmt *st;
    int busy;
} cslot;
/* Per thread: serve runs services on several loops, one thread each, and
 * a connection is used on one thread only. */
static _Thread_local cslot stmt_cache[CK_STMT_CACHE];

static cslot *slot_of(sqlite3 *db, const char *sql)
{
    uintptr_t h = ((uintptr_t)sql >> 3) ^ ((uintptr_t)db >> 5) * 31u;
    return &stmt_cache[h % CK_STMT_CACHE];
}

static sqlite3_stmt *lite_prep(sqlite3 *db, const char *sql, cslot **slot)
{
    cslot *c = slot_of(db, sql);
    *slot = NULL;
    if (c->st != NULL && !c->busy && c->db == db && c->key == sql &&
        strcmp(sqlite3_sql(c->st), sql) == 0) {
        c->busy = 1;
        *slot = c;
        return c->st;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_err("prepare", sqlite3_errmsg(db), sql);
        sqlite3_finalize(st);
        return NULL;
    }
    if (!c->busy) {
        if (c->st != NULL)
            sqlite3_finalize(c->st);
        c->db = db;
        c->key = sql;
        c->st = st;
        c->busy = 1;
        *slot = c;
    }
    return st;
}

static void lite_done(sqlite3_stmt *st, cslot *slot)
{
    if (st == NULL)
        return;
    if (slot != NULL && slot->st == st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        slot->busy = 0;
        return;
    }
    sqlite3_finalize(st);
}

/* ------------------------------------------------------------------------ */
/* The interface                                                            */

ck_db *ck_db_connect(const char *path, const char *pg_url, const char *schema)
{
    if (pg_url != NULL) {
#ifdef CK_WITH_PG
        return pg_connect(pg_url, schema);
#else
        (void)schema;
        fprintf(stderr, "saga-checkout: built without PostgreSQL\n");
        return NULL;
#endif
    }
    sqlite3 *h = NULL;
    /* NOMUTEX: a connection of ours is used by one thread only (the loop
     * that opened it), as the stores' connections are. */
    if (sqlite3_open_v2(path, &h,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        fprintf(stderr, "saga-checkout: cannot open %s\n", path);
        sqlite3_close(h);
        return NULL;
    }
    sqlite3_busy_timeout(h, 5000);
    ck_db *db = ck_db_sqlite(h);
    if (db == NULL) {
        sqlite3_close(h);
        return NULL;
    }
    db->own_lite = 1;
    ck_exec(db, "PRAGMA journal_mode = WAL");
    /* As the SQLite store does: no page written only to zero freed ones. */
    ck_exec(db, "PRAGMA secure_delete = FAST");
    return db;
}

void ck_db_close(ck_db *db)
{
    if (db == NULL)
        return;
    ck_db_forget(db);
#ifdef CK_WITH_PG
    if (db->own != NULL)
        PQfinish(db->own);
#endif
    if (db->own_lite)
        sqlite3_close(db->lite);
    free(db);
}

int ck_exec(ck_db *db, const char *sql)
{
#ifdef CK_WITH_PG
    if (db->pg)
        return pg_exec(db, sql);
#endif
    char *err = NULL;
    int rc = sqlite3_exec(db->lite, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        log_err("sql", err ? err : sqlite3_errmsg(db->lite), sql);
        sqlite3_free(err);
        return CK_ERR;
    }
    return CK_OK;
}

int ck_schema(ck_db *db, const char *ddl)
{
    if (!db->pg)
        return ck_exec(db, ddl);
    char lock[200];
    snprintf(lock, sizeof lock,
             "SELECT pg_advisory_xact_lock(hashtext('saga schema %s'))",
             db->schema);
    if (ck_exec(db, "BEGIN") != CK_OK)
        return CK_ERR;
    if (ck_exec(db, lock) != CK_OK || ck_exec(db, ddl) != CK_OK) {
        ck_exec(db, "ROLLBACK");
        return CK_ERR;
    }
    return ck_exec(db, "COMMIT");
}

int ck_begin(ck_db *db)
{
#ifdef CK_WITH_PG
    if (db->pg)
        return pg_begin(db);
#endif
    return ck_exec(db, "BEGIN IMMEDIATE");
}

int ck_commit(ck_db *db)
{
#ifdef CK_WITH_PG
    if (db->pg)
        return pg_commit(db);
#endif
    return ck_exec(db, "COMMIT");
}

int ck_rollback(ck_db *db)
{
#ifdef CK_WITH_PG
    if (db->pg)
        return pg_rollback(db);
#endif
    return ck_exec(db, "ROLLBACK");
}

ck_stmt *ck_prep(ck_db *db, const char *sql)
{
    if (db == NULL)
        return NULL;
#ifdef CK_WITH_PG
    if (db->pg)
        return pg_prep(db, sql);
#endif
    cslot *slot;
    sqlite3_stmt *s = lite_prep(db->lite, sql, &slot);
    if (s == NULL)
        return NULL;
    ck_stmt *st = calloc(1, sizeof *st);
    if (st == NULL) {
        lite_done(s, slot);
        return NULL;
    }
    st->db = db;
    st->lite = s;
    st->cached = slot;
    return st;
}

void ck_bind_text(ck_stmt *st, int i, const char *v)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        char *c = v ? strdup(v) : NULL;
        pg_bind(st, i, c, 0, 0, v ? 25 /* text */ : 0);
        return;
    }
#endif
    if (v == NULL)
        sqlite3_bind_null(st->lite, i);
    else
        sqlite3_bind_text(st->lite, i, v, -1, SQLITE_TRANSIENT);
}

void ck_bind_int(ck_stmt *st, int i, int64_t v)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        char *c = malloc(24);
        if (c != NULL)
            snprintf(c, 24, "%lld", (long long)v);
        pg_bind(st, i, c, 0, 0, 20 /* int8 */);
        return;
    }
#endif
    sqlite3_bind_int64(st->lite, i, v);
}

void ck_bind_blob(ck_stmt *st, int i, const void *v, size_t n)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        char *c = malloc(n ? n : 1);
        if (c != NULL && n > 0)
            memcpy(c, v, n);
        pg_bind(st, i, c, (int)n, 1, 17 /* bytea, binary */);
        return;
    }
#endif
    sqlite3_bind_blob(st->lite, i, v, (int)n, SQLITE_TRANSIENT);
}

void ck_bind_null(ck_stmt *st, int i)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        pg_bind(st, i, NULL, 0, 0, 0);
        return;
    }
#endif
    sqlite3_bind_null(st->lite, i);
}

int ck_step(ck_stmt *st)
{
    if (st == NULL)
        return CK_ERR;
#ifdef CK_WITH_PG
    if (st->db->pg)
        return pg_step(st);
#endif
    int rc = sqlite3_step(st->lite);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc;
    return (rc & 0xff) == SQLITE_CONSTRAINT ? CK_CONSTRAINT : CK_ERR;
}

void ck_reset(ck_stmt *st)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        pg_clear(st);
        return;
    }
#endif
    sqlite3_reset(st->lite);
    sqlite3_clear_bindings(st->lite);
}

const char *ck_col_text(ck_stmt *st, int i)
{
#ifdef CK_WITH_PG
    if (st->db->pg)
        return pg_col(st, i);
#endif
    return (const char *)sqlite3_column_text(st->lite, i);
}

int64_t ck_col_int(ck_stmt *st, int i)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        const char *v = pg_col(st, i);
        if (v == NULL)
            return 0;
        if (v[0] == 't')
            return 1;
        return strtoll(v, NULL, 10);
    }
#endif
    return sqlite3_column_int64(st->lite, i);
}

const void *ck_col_blob(ck_stmt *st, int i, size_t *n)
{
#ifdef CK_WITH_PG
    if (st->db->pg) {
        const char *v = pg_col(st, i);
        *n = 0;
        if (v == NULL)
            return NULL;
        if (PQftype(st->res, i) != 17 /* bytea */) {
            *n = strlen(v);
            return v;
        }
        PQfreemem(st->blob);
        st->blob = PQunescapeBytea((const unsigned char *)v, n);
        return st->blob;
    }
#endif
    *n = (size_t)sqlite3_column_bytes(st->lite, i);
    return sqlite3_column_blob(st->lite, i);
}

int ck_col_null(ck_stmt *st, int i)
{
#ifdef CK_WITH_PG
    if (st->db->pg)
        return pg_col(st, i) == NULL;
#endif
    return sqlite3_column_type(st->lite, i) == SQLITE_NULL;
}

void ck_done(ck_stmt *st)
{
    if (st == NULL)
        return;
#ifdef CK_WITH_PG
    if (st->db->pg) {
        pg_clear(st);
        free(st->sql);
        free(st);
        return;
    }
#endif
    lite_done(st->lite, st->cached);
    free(st);
}

int64_t ck_changes(ck_db *db)
{
    if (db->pg)
        return db->changes;
    return sqlite3_changes(db->lite);
}

void ck_db_forget(ck_db *db)
{
    if (db == NULL)
        return;
#ifdef CK_WITH_PG
    if (db->pg) {
        /* Statements die with their connection; the slots stay (a slot
         * of a replaced connection is prepared again on use). */
        return;
    }
#endif
    for (size_t i = 0; i < CK_STMT_CACHE; i++)
        if (stmt_cache[i].db == db->lite && stmt_cache[i].st != NULL) {
            sqlite3_finalize(stmt_cache[i].st);
            memset(&stmt_cache[i], 0, sizeof stmt_cache[i]);
        }
}

/*
 * sqlite_ops.c — the SQLite store's data slots: sagas, journal,
 * idempotency keys, purge, outbox, inbox and key-value space.
 *
 * Every slot binds its parameters SQLITE_STATIC (the caller's memory lives
 * for the call), steps a cached statement, and resets it before returning.
 * Rows handed to callbacks point into SQLite's column buffers, which stay
 * valid until the next step; the callback runs before that.
 */
#include <string.h>

#include "util.h"
#include "saga/saga.h"
#include "sqlite_int.h"

_Static_assert(SAGA_STATE_COMPLETED == 3 && SAGA_STATE_COMPENSATED == 4,
               "the purge SQL below hard-codes the terminal states");

#define SAGA_COLS                                                              \
    "id, def_name, def_version, state, step, attempt, flags, created_ms, "     \
    "updated_ms, due_ms, deadline_ms, idem_key, error, data"
#define PURGE_VICTIMS                                                          \
    "SELECT id FROM sagas WHERE state IN (3, 4) AND updated_ms < ?1"

const char *const saga__sq_sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_SAGA_INSERT] = "INSERT INTO sagas(" SAGA_COLS ") VALUES "
                       "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                       "?13, ?14)",
    /* A plain update writes every column but idem_key and data. */
    [SQ_SAGA_UPDATE] = "UPDATE sagas SET def_name = ?2, def_version = ?3, "
                       "state = ?4, step = ?5, attempt = ?6, flags = ?7, "
                       "created_ms = ?8, updated_ms = ?9, due_ms = ?10, "
                       "deadline_ms = ?11, error = ?13 WHERE id = ?1",
    [SQ_SAGA_UPDATE_DATA] = "UPDATE sagas SET def_name = ?2, "
                            "def_version = ?3, state = ?4, step = ?5, "
                            "attempt = ?6, flags = ?7, created_ms = ?8, "
                            "updated_ms = ?9, due_ms = ?10, deadline_ms = "
                            "?11, idem_key = ?12, error = ?13, data = ?14 "
                            "WHERE id = ?1",
    [SQ_SAGA_GET] = "SELECT " SAGA_COLS " FROM sagas WHERE id = ?1",
    /* Unused IN slots are bound to 0, which is no state. */
    [SQ_SAGA_SCAN] = "SELECT " SAGA_COLS " FROM sagas WHERE state IN "
                     "(?1, ?2, ?3, ?4, ?5) ORDER BY created_ms, rowid",
    [SQ_JOURNAL_INSERT] = "INSERT INTO journal(saga_id, seq, event, step, "
                          "attempt, started_ms, at_ms, error) VALUES "
                          "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [SQ_JOURNAL_SCAN] = "SELECT saga_id, seq, event, step, attempt, "
                        "started_ms, at_ms, error FROM journal "
                        "WHERE saga_id = ?1 ORDER BY seq",
    [SQ_IDEM_INSERT] = "INSERT INTO idem(key, saga_id, created_ms) "
                       "VALUES (?1, ?2, ?3)",
    [SQ_IDEM_GET] = "SELECT saga_id FROM idem WHERE key = ?1",
    [SQ_PURGE_JOURNAL] = "DELETE FROM journal WHERE saga_id IN "
                         "(" PURGE_VICTIMS ")",
    [SQ_PURGE_IDEM] = "DELETE FROM idem WHERE saga_id IN (" PURGE_VICTIMS ")",
    [SQ_PURGE_SAGAS] = "DELETE FROM sagas WHERE state IN (3, 4) "
                       "AND updated_ms < ?1",
    [SQ_PURGE_INBOX] = "DELETE FROM inbox WHERE created_ms < ?1",
    /* OR FAIL, not the default ABORT: one row, whose constraints are
     * checked before anything is written, so there is nothing to undo on a
     * duplicate id; ABORT made SQLite open a statement journal (a copy of
     * each page the insert touches) on every outbox row, ~20% of its cost. */
    [SQ_OUTBOX_INSERT] = "INSERT OR FAIL INTO outbox(id, topic, key, "
                         "payload, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    [SQ_OUTBOX_SCAN] = "SELECT id, topic, key, payload, created_ms "
                       "FROM outbox ORDER BY seq LIMIT ?1",
    [SQ_OUTBOX_DONE] = "DELETE FROM outbox WHERE id = ?1",
    [SQ_INBOX_INSERT] = "INSERT OR IGNORE INTO inbox(msg_id, created_ms, "
                        "reply) VALUES (?1, ?2, X'')",
    [SQ_INBOX_GET] = "SELECT reply FROM inbox WHERE msg_id = ?1",
    [SQ_INBOX_REPLY] = "UPDATE inbox SET reply = ?2 WHERE msg_id = ?1",
    [SQ_KV_GET] = "SELECT val FROM kv WHERE key = ?1",
    [SQ_KV_PUT] = "INSERT OR REPLACE INTO kv(key, val) VALUES (?1, ?2)",
    /* ?2: the first key past the prefix, NULL for no upper bound. */
    [SQ_KV_SCAN] = "SELECT key, val FROM kv WHERE key >= ?1 "
                   "AND (?2 IS NULL OR key < ?2)",
    [SQ_KV_DEL] = "DELETE FROM kv WHERE key = ?1",
    [SQ_SAVEPOINT] = "SAVEPOINT saga_sp",
    [SQ_SP_ROLLBACK] = "ROLLBACK TO saga_sp",
    [SQ_SP_RELEASE] = "RELEASE saga_sp",
};

#define SELF sqlite_store *s = (sqlite_store *)self

/* Zero-length blobs: SQLite binds a NULL pointer as SQL NULL, and returns
 * NULL for an empty blob; both sides use this instead. */
static const char empty[1] = "";

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_blob(sqlite3_stmt *st, int i, const void *v, size_t len)
{
    sqlite3_bind_blob64(st, i, len ? v : empty, len, SQLITE_STATIC);
}

static const void *col_blob(sqlite3_stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(st, i);
    *len = (size_t)sqlite3_column_bytes(st, i);
    return p ? p : empty;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* A statement that is mid-iteration (a callback calling the same slot)
 * must not be reset under its caller. */
static int busy(sqlite_store *s, sqlite3_stmt *st, const char *what)
{
    if (sqlite3_stmt_busy(st))
        return saga__sq_failf(s, SAGA_EBUSY, "%s: called from its own callback",
                              what);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Sagas                                                                    */

static int check_record(sqlite_store *s, const saga_record *r, unsigned fl)
{
    if (r == NULL || r->id == NULL || r->def_name == NULL)
        return saga__sq_failf(s, SAGA_EINVAL,
                              "saga_put: record, id and def_name required");
    size_t idlen = strlen(r->id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__sq_failf(s, SAGA_EINVAL,
                              "saga_put: id must be 1..%d characters",
                              SAGA_ID_LEN);
    if ((int)r->state < SAGA_STATE_RUNNING || (int)r->state > SAGA_STATE_FAILED)
        return saga__sq_failf(s, SAGA_EINVAL, "saga_put: bad state %d",
                              (int)r->state);
    if (r->data == NULL && r->data_len > 0)
        return saga__sq_failf(s, SAGA_EINVAL, "saga_put: NULL data");
    if (fl & ~(SAGA_PUT_INSERT | SAGA_PUT_DATA))
        return saga__sq_failf(s, SAGA_EINVAL, "saga_put: unknown flags");
    return saga__sq_check_txn(s);
}

static int sq_saga_put(saga_store *self, const saga_record *r,
                       unsigned int flags)
{
    SELF;
    int rc = check_record(s, r, flags);
    if (rc)
        return rc;
    enum sq_stmt which = (flags & SAGA_PUT_INSERT) ? SQ_SAGA_INSERT
                         : (flags & SAGA_PUT_DATA) ? SQ_SAGA_UPDATE_DATA
                                                   : SQ_SAGA_UPDATE;
    sqlite3_stmt *st = s->st[which];
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->def_name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->def_version);
    sqlite3_bind_int(st, 4, (int)r->state);
    sqlite3_bind_int(st, 5, r->step);
    sqlite3_bind_int64(st, 6, r->attempt);
    sqlite3_bind_int64(st, 7, r->flags);
    sqlite3_bind_int64(st, 8, r->created_ms);
    sqlite3_bind_int64(st, 9, r->updated_ms);
    sqlite3_bind_int64(st, 10, r->due_ms);
    sqlite3_bind_int64(st, 11, r->deadline_ms);
    bind_text(st, 13, r->error);
    if (which != SQ_SAGA_UPDATE) {
        bind_text(st, 12, r->idem_key);
        bind_blob(st, 14, r->data, r->data_len);
    }
    rc = saga__sq_exec(s, which, "saga_put");
    if (rc == SAGA_OK && which != SQ_SAGA_INSERT && sqlite3_changes(s->db) == 0)
        rc = saga__sq_failf(s, SAGA_ENOTFOUND, "saga_put: no saga %s", r->id);
    return rc;
}

/* Column order of SAGA_COLS. */
static void read_record(sqlite3_stmt *st, saga_record *r)
{
    r->id = col_text(st, 0);
    r->def_name = col_text(st, 1);
    r->def_version = (uint32_t)sqlite3_column_int64(st, 2);
    r->state = (saga_state)sqlite3_column_int(st, 3);
    r->step = sqlite3_column_int(st, 4);
    r->attempt = (uint32_t)sqlite3_column_int64(st, 5);
    r->flags = (uint32_t)sqlite3_column_int64(st, 6);
    r->created_ms = sqlite3_column_int64(st, 7);
    r->updated_ms = sqlite3_column_int64(st, 8);
    r->due_ms = sqlite3_column_int64(st, 9);
    r->deadline_ms = sqlite3_column_int64(st, 10);
    r->idem_key = col_text(st, 11);
    r->error = col_text(st, 12);
    r->data = col_blob(st, 13, &r->data_len);
}

static int sq_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                       void *arg)
{
    SELF;
    sqlite3_stmt *st = s->st[SQ_SAGA_GET];
    if (id == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "saga_get: NULL id");
    int rc = busy(s, st, "saga_get");
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        saga_record r;
        read_record(st, &r);
        if (cb)
            cb(&r, arg);
    } else if (src == SQLITE_DONE) {
        rc = saga__sq_failf(s, SAGA_ENOTFOUND, "no saga %s", id);
    } else {
        rc = saga__sq_fail(s, src, "saga_get");
    }
    saga__sq_done(st);
    return rc;
}

static int sq_saga_scan(saga_store *self, unsigned int mask, saga_record_cb cb,
                        void *arg)
{
    SELF;
    sqlite3_stmt *st = s->st[SQ_SAGA_SCAN];
    if (cb == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "saga_scan: NULL callback");
    int rc = busy(s, st, "saga_scan");
    if (rc)
        return rc;
    for (int i = 1; i <= 5; i++)
        sqlite3_bind_int(st, i, (mask & SAGA_STATE_BIT(i)) ? i : 0);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        saga_record r;
        read_record(st, &r);
        if (cb(&r, arg) != 0)
            break;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = saga__sq_fail(s, src, "saga_scan");
    saga__sq_done(st);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Journal and idempotency keys                                             */

static int sq_journal_append(saga_store *self, const saga_journal_entry *e)
{
    SELF;
    if (e == NULL || e->saga_id == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "journal_append: NULL entry");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = s->st[SQ_JOURNAL_INSERT];
    sqlite3_bind_text(st, 1, e->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, e->seq);
    sqlite3_bind_int(st, 3, (int)e->kind);
    sqlite3_bind_int(st, 4, e->step);
    sqlite3_bind_int64(st, 5, e->attempt);
    sqlite3_bind_int64(st, 6, e->started_ms);
    sqlite3_bind_int64(st, 7, e->at_ms);
    bind_text(st, 8, e->error);
    return saga__sq_exec(s, SQ_JOURNAL_INSERT, "journal_append");
}

static int sq_journal_scan(saga_store *self, const char *saga_id,
                           saga_journal_cb cb, void *arg)
{
    SELF;
    sqlite3_stmt *st = s->st[SQ_JOURNAL_SCAN];
    if (saga_id == NULL || cb == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "journal_scan: NULL argument");
    int rc = busy(s, st, "journal_scan");
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, saga_id, -1, SQLITE_STATIC);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        saga_journal_entry e;
        e.saga_id = col_text(st, 0);
        e.seq = (uint32_t)sqlite3_column_int64(st, 1);
        e.kind = (saga_journal_kind)sqlite3_column_int(st, 2);
        e.step = sqlite3_column_int(st, 3);
        e.attempt = (uint32_t)sqlite3_column_int64(st, 4);
        e.started_ms = sqlite3_column_int64(st, 5);
        e.at_ms = sqlite3_column_int64(st, 6);
        e.error = col_text(st, 7);
        if (cb(&e, arg) != 0)
            break;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = saga__sq_fail(s, src, "journal_scan");
    saga__sq_done(st);
    return rc;
}

static int sq_idem_put(saga_store *self, const char *key, const char *saga_id,
                       int64_t created_ms)
{
    SELF;
    if (key == NULL || saga_id == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "idem_put: NULL argument");
    size_t idlen = strlen(saga_id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__sq_failf(s, SAGA_EINVAL,
                              "idem_put: saga id must be 1..%d characters",
                              SAGA_ID_LEN);
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = s->st[SQ_IDEM_INSERT];
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, saga_id, (int)idlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, created_ms);
    return saga__sq_exec(s, SQ_IDEM_INSERT, "idem_put");
}

static int sq_idem_get(saga_store *self, const char *key,
                       char saga_id_out[SAGA_ID_SIZE])
{
    SELF;
    sqlite3_stmt *st = s->st[SQ_IDEM_GET];
    if (key == NULL || saga_id_out == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "idem_get: NULL argument");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = SAGA_OK, src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const char *id = col_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if (id == NULL || n > SAGA_ID_LEN) {
            rc = saga__sq_failf(s, SAGA_ECORRUPT,
                                "idem_get: bad saga id for key %s", key);
        } else {
            memcpy(saga_id_out, id, n);
            saga_id_out[n] = '\0';
        }
    } else if (src == SQLITE_DONE) {
        rc = saga__sq_failf(s, SAGA_ENOTFOUND, "no idempotency key %s", key);
    } else {
        rc = saga__sq_fail(s, src, "idem_get");
    }
    saga__sq_done(st);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Purge                                                                    */

static int purge_step(sqlite_store *s, enum sq_stmt which, int64_t before)
{
    sqlite3_bind_int64(s->st[which], 1, before);
    return saga__sq_exec(s, which, "purge");
}

static int sq_purge(saga_store *self, int64_t before_ms, uint64_t *out)
{
    SELF;
    if (out)
        *out = 0;
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    /* Without a caller's transaction, run in one of our own: a purge
     * stopped half-way must not leave journals without their saga. */
    int own = !s->in_txn;
    if (own && (rc = saga__sq_begin(self)) != SAGA_OK)
        return rc;
    /* Journals and keys first: they find their sagas through the sagas
     * table, so it is cleared last. */
    rc = purge_step(s, SQ_PURGE_JOURNAL, before_ms);
    if (rc == SAGA_OK)
        rc = purge_step(s, SQ_PURGE_IDEM, before_ms);
    if (rc == SAGA_OK)
        rc = purge_step(s, SQ_PURGE_SAGAS, before_ms);
    uint64_t n = rc == SAGA_OK ? (uint64_t)sqlite3_changes(s->db) : 0;
    if (rc == SAGA_OK)
        rc = purge_step(s, SQ_PURGE_INBOX, before_ms);
    if (own)
        rc = rc == SAGA_OK ? saga__sq_commit(self)
                           : (saga__sq_rollback(self), rc);
    if (rc == SAGA_OK && out)
        *out = n;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Outbox                                                                   */

static int sq_outbox_put(saga_store *self, const saga_message *m)
{
    SELF;
    if (m == NULL || m->id == NULL || m->topic == NULL ||
        (m->payload == NULL && m->len > 0))
        return saga__sq_failf(s, SAGA_EINVAL,
                              "outbox_put: message, id and topic required");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = s->st[SQ_OUTBOX_INSERT];
    sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->topic, -1, SQLITE_STATIC);
    bind_text(st, 3, m->key);
    bind_blob(st, 4, m->payload, m->len);
    sqlite3_bind_int64(st, 5, m->created_ms);
    return saga__sq_exec(s, SQ_OUTBOX_INSERT, "outbox_put");
}

static int sq_outbox_scan(saga_store *self, uint32_t limit, saga_message_cb cb,
                          void *arg)
{
    SELF;
    sqlite3_stmt *st = s->st[SQ_OUTBOX_SCAN];
    if (cb == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "outbox_scan: NULL callback");
    int rc = busy(s, st, "outbox_scan");
    if (rc)
        return rc;
    /* 0 means no limit, as LIMIT -1 does. */
    sqlite3_bind_int64(st, 1, limit ? (sqlite3_int64)limit : -1);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        saga_message m;
        m.id = col_text(st, 0);
        m.topic = col_text(st, 1);
        m.key = col_text(st, 2);
        m.payload = col_blob(st, 3, &m.len);
        m.created_ms = sqlite3_column_int64(st, 4);
        if (cb(&m, arg) != 0)
            break;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = saga__sq_fail(s, src, "outbox_scan");
    saga__sq_done(st);
    return rc;
}

static int sq_outbox_done(saga_store *self, const char *msg_id)
{
    SELF;
    if (msg_id == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "outbox_done: NULL id");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_bind_text(s->st[SQ_OUTBOX_DONE], 1, msg_id, -1, SQLITE_STATIC);
    return saga__sq_exec(s, SQ_OUTBOX_DONE, "outbox_done");
}

/* ------------------------------------------------------------------------ */
/* Inbox and key-value space                                                */

/* Run a one-row, one-blob SELECT keyed by ?1 and hand the blob to @p cb. */
static int get_blob(sqlite_store *s, enum sq_stmt which, const char *key,
                    saga_blob_cb cb, void *arg, const char *what)
{
    sqlite3_stmt *st = s->st[which];
    int rc = busy(s, st, what);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        size_t len;
        const void *p = col_blob(st, 0, &len);
        if (cb)
            cb(p, len, arg);
    } else if (src == SQLITE_DONE) {
        rc = saga__sq_failf(s, SAGA_ENOTFOUND, "%s: no entry %s", what, key);
    } else {
        rc = saga__sq_fail(s, src, what);
    }
    saga__sq_done(st);
    return rc;
}

static int sq_inbox_claim(saga_store *self, const char *msg_id, int64_t now_ms,
                          saga_blob_cb cb, void *arg)
{
    SELF;
    if (msg_id == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "inbox_claim: NULL id");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    /* New messages are the common case: one INSERT decides. */
    sqlite3_stmt *st = s->st[SQ_INBOX_INSERT];
    sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = saga__sq_exec(s, SQ_INBOX_INSERT, "inbox_claim");
    if (rc != SAGA_OK || sqlite3_changes(s->db) == 1)
        return rc;
    rc = get_blob(s, SQ_INBOX_GET, msg_id, cb, arg, "inbox_claim");
    return rc == SAGA_OK ? SAGA_EDUP : rc;
}

static int sq_inbox_reply(saga_store *self, const char *msg_id,
                          const void *reply, size_t len)
{
    SELF;
    if (msg_id == NULL || (reply == NULL && len > 0))
        return saga__sq_failf(s, SAGA_EINVAL, "inbox_reply: NULL argument");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = s->st[SQ_INBOX_REPLY];
    sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
    bind_blob(st, 2, reply, len);
    rc = saga__sq_exec(s, SQ_INBOX_REPLY, "inbox_reply");
    if (rc == SAGA_OK && sqlite3_changes(s->db) == 0)
        rc = saga__sq_failf(s, SAGA_ENOTFOUND,
                            "inbox_reply: message %s not claimed", msg_id);
    return rc;
}

static int sq_kv_get(saga_store *self, const char *key, saga_blob_cb cb,
                     void *arg)
{
    SELF;
    if (key == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "kv_get: NULL key");
    return get_blob(s, SQ_KV_GET, key, cb, arg, "kv_get");
}

static int sq_kv_put(saga_store *self, const char *key, const void *val,
                     size_t len)
{
    SELF;
    if (key == NULL || (val == NULL && len > 0))
        return saga__sq_failf(s, SAGA_EINVAL, "kv_put: NULL argument");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_stmt *st = s->st[SQ_KV_PUT];
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    bind_blob(st, 2, val, len);
    return saga__sq_exec(s, SQ_KV_PUT, "kv_put");
}

static int sq_kv_scan(saga_store *self, const char *prefix, saga_kv_cb cb,
                      void *arg)
{
    SELF;
    if (prefix == NULL || cb == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "kv_scan: NULL argument");
    sqlite3_stmt *st = s->st[SQ_KV_SCAN];
    int rc = busy(s, st, "kv_scan");
    if (rc)
        return rc;
    /* The upper bound: the prefix with its last byte incremented (keys
     * compare as bytes); none if it is empty or ends in 0xff. */
    size_t n = strlen(prefix);
    char *hi = NULL;
    if (n > 0 && (unsigned char)prefix[n - 1] != 0xff) {
        hi = saga_malloc(n + 1);
        if (hi == NULL)
            return saga__sq_failf(s, SAGA_ENOMEM, "kv_scan: out of memory");
        memcpy(hi, prefix, n + 1);
        hi[n - 1] = (char)((unsigned char)hi[n - 1] + 1);
    }
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    bind_text(st, 2, hi);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        size_t len;
        const char *key = col_text(st, 0);
        const void *val = col_blob(st, 1, &len);
        if (key == NULL || strncmp(key, prefix, n) != 0)
            continue;
        if (cb(key, val, len, arg) != 0)
            break;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = saga__sq_fail(s, src, "kv_scan");
    saga__sq_done(st);
    saga_free(hi);
    return rc;
}

static int sq_kv_del(saga_store *self, const char *key)
{
    SELF;
    if (key == NULL)
        return saga__sq_failf(s, SAGA_EINVAL, "kv_del: NULL key");
    int rc = saga__sq_check_txn(s);
    if (rc)
        return rc;
    sqlite3_bind_text(s->st[SQ_KV_DEL], 1, key, -1, SQLITE_STATIC);
    return saga__sq_exec(s, SQ_KV_DEL, "kv_del");
}

static int sq_savepoint(saga_store *self)
{
    SELF;
    if (!s->in_txn || s->in_sp)
        return saga__sq_failf(s, SAGA_ESTORE, "savepoint: %s",
                              s->in_sp ? "one is already open"
                                       : "no open transaction");
    int rc = saga__sq_check_txn(s);
    if (rc == SAGA_OK)
        rc = saga__sq_exec(s, SQ_SAVEPOINT, "savepoint");
    if (rc == SAGA_OK)
        s->in_sp = 1;
    return rc == SAGA_OK ? rc : SAGA_ESTORE;
}

static int sq_savepoint_end(saga_store *self, int undo)
{
    SELF;
    const char *what = undo ? "savepoint_rollback" : "savepoint_release";
    if (!s->in_txn || !s->in_sp)
        return saga__sq_failf(s, SAGA_ESTORE, "%s: no open savepoint", what);
    s->in_sp = 0;
    int rc = saga__sq_check_txn(s);
    /* ROLLBACK TO keeps the savepoint on SQLite's stack: release it too. */
    if (rc == SAGA_OK && undo)
        rc = saga__sq_exec(s, SQ_SP_ROLLBACK, what);
    if (rc == SAGA_OK)
        rc = saga__sq_exec(s, SQ_SP_RELEASE, what);
    return rc == SAGA_OK ? rc : SAGA_ESTORE;
}

static int sq_savepoint_rollback(saga_store *self)
{
    return sq_savepoint_end(self, 1);
}

static int sq_savepoint_release(saga_store *self)
{
    return sq_savepoint_end(self, 0);
}

/* Version 3, with the version-13 key-value part: by this store's own
 * slots, in one transaction (lib/plugins.c). */
static int sq_write_batch(saga_store *self, const saga_batch_writes *w)
{
    return saga__store_write_by_slots(self, w);
}

/* The SQLite store's vtable: one constant table, copied into each store
 * (SQLite's own sqlite3_io_methods, nng's ops tables). */
const saga_store saga__sq_store_ops = {
    .version = SAGA_STORE_VERSION,
    /* version 1 */
    .begin = saga__sq_begin,
    .commit = saga__sq_commit,
    .rollback = saga__sq_rollback,
    .saga_put = sq_saga_put,
    .saga_get = sq_saga_get,
    .saga_scan = sq_saga_scan,
    .journal_append = sq_journal_append,
    .journal_scan = sq_journal_scan,
    .idem_put = sq_idem_put,
    .idem_get = sq_idem_get,
    .purge = sq_purge,
    .outbox_put = sq_outbox_put,
    .outbox_scan = sq_outbox_scan,
    .outbox_done = sq_outbox_done,
    .inbox_claim = sq_inbox_claim,
    .inbox_reply = sq_inbox_reply,
    .kv_get = sq_kv_get,
    .kv_put = sq_kv_put,
    .native_handle = saga__sq_native_handle,
    .errmsg = saga__sq_errmsg,
    .close = saga__sq_close,
    /* version 2 */
    .kv_scan = sq_kv_scan,
    .kv_del = sq_kv_del,
    .savepoint = sq_savepoint,
    .savepoint_rollback = sq_savepoint_rollback,
    .savepoint_release = sq_savepoint_release,
    /* version 3 */
    .write_batch = sq_write_batch,
};

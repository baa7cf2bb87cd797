/*
 * pg_ops.c — the PostgreSQL store's data slots: sagas, journal,
 * idempotency keys, purge, outbox, inbox and key-value space.
 *
 * Every slot runs one prepared statement with binary parameters and binary
 * results. Rows handed to callbacks point into the PGresult, which is
 * cleared after the callbacks: a callback may call any other slot.
 * Inserts that may collide use ON CONFLICT DO NOTHING and report SAGA_EDUP
 * from the row count: a unique violation would abort the whole
 * transaction in PostgreSQL, where SQLite keeps it open.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

#define T_INT8 20u
#define T_TEXT 25u
#define T_BYTEA 17u
#define A_TEXT 1009u
#define A_INT8 1016u
#define A_BYTEA 1001u

_Static_assert(SAGA_STATE_COMPLETED == 3 && SAGA_STATE_COMPENSATED == 4,
               "the purge SQL below hard-codes the terminal states");

#define SAGA_COLS                                                              \
    "id, def_name, def_version, state, step, attempt, flags, created_ms, "     \
    "updated_ms, due_ms, deadline_ms, idem_key, error, data"
#define SAGA_TYPES                                                             \
    T_TEXT, T_TEXT, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8,    \
        T_INT8, T_INT8, T_TEXT, T_TEXT, T_BYTEA
#define SAGA_ARRAY_TYPES                                                       \
    A_TEXT, A_TEXT, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8,    \
        A_INT8, A_INT8, A_TEXT, A_TEXT, A_BYTEA
#define UPDATE_TYPES                                                           \
    T_TEXT, T_TEXT, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8,    \
        T_INT8, T_INT8, T_TEXT
#define UPDATE_ARRAY_TYPES                                                     \
    A_TEXT, A_TEXT, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8,    \
        A_INT8, A_INT8, A_TEXT
#define JOURNAL_COLS                                                           \
    "saga_id, seq, event, step, attempt, started_ms, at_ms, error"
#define JOURNAL_TYPES                                                          \
    T_TEXT, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8, T_TEXT
#define JOURNAL_ARRAY_TYPES                                                    \
    A_TEXT, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_INT8, A_TEXT
/* The fencing token (owner, epoch): NULL and NULL without a lease. */
#define OWN_TYPES T_TEXT, T_INT8
#define EPOCH(e) "coalesce(" e ", 0)"
/* A saga update keeps the row's owner without a lease, takes it with one. */
#define OWN_SET(o, e)                                                          \
    "owner = coalesce(" o ", s.owner), epoch = coalesce(" e ", s.epoch)"
#define FENCE(o, e)                                                            \
    "(" o "::text IS NULL OR (s.owner = " o " AND s.epoch = " e ") OR "        \
    "s.state = 5)"
/* The columns an update sets from $2..$11, and from v (an unnest). */
#define UPDATE_SET                                                             \
    "def_name = $2, def_version = $3, state = $4, step = $5, attempt = $6, "   \
    "flags = $7, created_ms = $8, updated_ms = $9, due_ms = $10, "             \
    "deadline_ms = $11"
#define UPDATE_SET_V                                                           \
    "def_name = v.def_name, def_version = v.def_version, state = v.state, "    \
    "step = v.step, attempt = v.attempt, flags = v.flags, created_ms = "       \
    "v.created_ms, updated_ms = v.updated_ms, due_ms = v.due_ms, "             \
    "deadline_ms = v.deadline_ms"
/* After a strict update (u: the rows written): one row written, or the
 * error of not_written() for the saga that was not. */
#define NOT_WRITTEN_1                                                          \
    "SELECT CASE WHEN (SELECT count(*) FROM u) = 1 THEN 1 ELSE "               \
    "not_written($1, false) END"
/* The array forms read their rows with unnest() in the select list (a
 * ProjectSet: the arrays in lockstep, row by row), not FROM unnest(...): a
 * set-returning function in FROM is first copied into a tuplestore, which
 * perf showed at a fifth of the backend's time for batches of 4096. */
#define UNNEST_SAGA                                                            \
    "unnest($1), unnest($2), unnest($3), unnest($4), unnest($5), "             \
    "unnest($6), unnest($7), unnest($8), unnest($9), unnest($10), "            \
    "unnest($11), unnest($12), unnest($13), unnest($14)"
#define UNNEST_HEAD                                                            \
    "unnest($1) AS id, unnest($2) AS def_name, unnest($3) AS def_version, "    \
    "unnest($4) AS state, unnest($5) AS step, unnest($6) AS attempt, "         \
    "unnest($7) AS flags, unnest($8) AS created_ms, unnest($9) AS "            \
    "updated_ms, unnest($10) AS due_ms, unnest($11) AS deadline_ms, "
#define UNNEST_UPDATE UNNEST_HEAD "unnest($12) AS error, unnest($15) AS jrn"
#define UNNEST_SAGA_AS                                                         \
    UNNEST_HEAD "unnest($12) AS idem_key, unnest($13) AS error, unnest($14) "  \
                "AS data, unnest($17) AS jrn"
#define UNNEST_JOURNAL                                                         \
    "unnest($1), unnest($2), unnest($3), unnest($4), unnest($5), "             \
    "unnest($6), unnest($7), unnest($8)"
/* An array update (rows v, fencing token o, e): every row written, or the
 * error of not_written() for the first row (in batch order) that was
 * not. The ids are distinct (the batch code checks). */
#define UPDATE_N(rows, set, o, e)                                              \
    "WITH u AS (UPDATE sagas s SET " UPDATE_SET_V set                          \
    ", jrn = s.jrn || v.jrn, " OWN_SET(                                        \
        o, e) " FROM (SELECT " rows                                            \
              ") v WHERE s.id = v.id AND " FENCE(                              \
                  o, e) " RETURNING s.id) SELECT CASE WHEN (SELECT "           \
                        "count(*) FROM u) = "                                  \
                        "cardinality($1) THEN 1 ELSE "                         \
                        "not_written((SELECT x.id FROM unnest($1) "            \
                        "WITH ORDINALITY AS x(id, n) WHERE x.id NOT "          \
                        "IN (SELECT id FROM u) ORDER "                         \
                        "BY x.n LIMIT 1), false) END"
#define PURGE_VICTIMS                                                          \
    "SELECT id FROM sagas WHERE state IN (3, 4) AND updated_ms < $1"

const pg_stmt_def saga__pg_stmts[PG__COUNT] = {
    [PG_SAGA_INSERT] = {"INSERT INTO sagas(" SAGA_COLS ") VALUES ($1, $2, "
                        "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
                        "$14) ON CONFLICT (id) DO NOTHING",
                        {SAGA_TYPES}},
    [PG_SAGA_UPDATE] = {"UPDATE sagas SET def_name = $2, def_version = $3, "
                        "state = $4, step = $5, attempt = $6, flags = $7, "
                        "created_ms = $8, updated_ms = $9, due_ms = $10, "
                        "deadline_ms = $11, error = $12 WHERE id = $1",
                        {T_TEXT, T_TEXT, T_INT8, T_INT8, T_INT8, T_INT8, T_INT8,
                         T_INT8, T_INT8, T_INT8, T_INT8, T_TEXT}},
    [PG_SAGA_UPDATE_DATA] = {"UPDATE sagas SET def_name = $2, def_version = "
                             "$3, state = $4, step = $5, attempt = $6, "
                             "flags = $7, created_ms = $8, updated_ms = $9, "
                             "due_ms = $10, deadline_ms = $11, idem_key = "
                             "$12, error = $13, data = $14 WHERE id = $1",
                             {SAGA_TYPES}},
    [PG_SAGA_GET] = {"SELECT " SAGA_COLS " FROM sagas WHERE id = $1", {T_TEXT}},
    /* seq (a bigserial) keeps insertion order among equal creation times,
     * as SQLite's rowid does. */
    [PG_SAGA_SCAN] = {"SELECT " SAGA_COLS " FROM sagas WHERE state = "
                      "ANY($1::int8[]) ORDER BY created_ms, seq",
                      {0}},
    /* The same for active states only: the literal IN (1, 2) lets the
     * generic plan use the partial index sagas_active (migration 5). */
    [PG_SAGA_SCAN_ACTIVE] = {"SELECT " SAGA_COLS " FROM sagas WHERE state IN "
                             "(1, 2) AND state = ANY($1::int8[]) ORDER BY "
                             "created_ms, seq",
                             {0}},
    /* The journal entry of the slot (owner, epoch: the fencing token,
     * NULL without a lease). */
    /* A row of journal_rows, unless the entry exists there or packed in
     * the saga's row (jrn, migration 5). */
    [PG_JOURNAL_INSERT] = {"INSERT INTO journal_rows(" JOURNAL_COLS
                           ", owner, epoch) SELECT $1, $2, $3, $4, $5, $6, "
                           "$7, $8, $9, " EPOCH(
                               "$10") " WHERE NOT EXISTS (SELECT 1 FROM "
                                      "sagas s, jrn_entries(s.jrn) j WHERE "
                                      "s.id = $1 AND s.jrn <> '' AND j.seq = "
                                      "$2) ON CONFLICT (saga_id, seq) DO "
                                      "NOTHING",
                           {JOURNAL_TYPES, OWN_TYPES}},
    /* A saga's journal: its rows, then its packed entries (one row with
     * jrn set), in one snapshot; journal_scan merges them by seq. */
    [PG_JOURNAL_SCAN] = {"SELECT seq, event, step, attempt, started_ms, "
                         "at_ms, error, NULL::bytea FROM journal_rows WHERE "
                         "saga_id = $1 UNION ALL SELECT NULL, NULL, NULL, "
                         "NULL, NULL, NULL, NULL, jrn FROM sagas WHERE id = "
                         "$1 AND jrn <> ''",
                         {T_TEXT}},
    [PG_IDEM_INSERT] = {"INSERT INTO idem(key, saga_id, created_ms) VALUES "
                        "($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                        {T_TEXT, T_TEXT, T_INT8}},
    [PG_IDEM_GET] = {"SELECT saga_id FROM idem WHERE key = $1", {T_TEXT}},
    [PG_PURGE_JOURNAL] = {"DELETE FROM journal_rows WHERE saga_id IN "
                          "(" PURGE_VICTIMS ")",
                          {T_INT8}},
    [PG_PURGE_IDEM] = {"DELETE FROM idem WHERE saga_id IN (" PURGE_VICTIMS ")",
                       {T_INT8}},
    /* A row with the count, so that the purge on the loop reads it
     * (purge_submit keeps results with rows only). */
    [PG_PURGE_SAGAS] = {"WITH d AS (DELETE FROM sagas WHERE state IN (3, 4) "
                        "AND updated_ms < $1 RETURNING 1) SELECT count(*) "
                        "FROM d",
                        {T_INT8}},
    [PG_PURGE_INBOX] = {"DELETE FROM inbox WHERE created_ms < $1", {T_INT8}},
    [PG_OUTBOX_INSERT] = {"INSERT INTO outbox(id, topic, key, payload, "
                          "created_ms) VALUES ($1, $2, $3, $4, $5) ON "
                          "CONFLICT (id) DO NOTHING",
                          {T_TEXT, T_TEXT, T_TEXT, T_BYTEA, T_INT8}},
    /* LIMIT NULL is no limit. */
    [PG_OUTBOX_SCAN] = {"SELECT id, topic, key, payload, created_ms FROM "
                        "outbox ORDER BY seq LIMIT $1",
                        {T_INT8}},
    [PG_OUTBOX_DONE] = {"DELETE FROM outbox WHERE id = $1", {T_TEXT}},
    /* A published row, deleted by its owner only (a row another engine
     * took over meanwhile stays for it); without a lease, any row. */
    [PG_OUTBOX_DONE_X] = {"DELETE FROM outbox WHERE id = $1 AND ($2::text "
                          "IS NULL OR (owner = $2 AND epoch = $3))",
                          {T_TEXT, OWN_TYPES}},
    /* Rows that are now this epoch's to publish (pg_outbox.c): pending
     * rows whose writer's lease is not live, of a saga this epoch owns or
     * of no active saga, taken over in one statement (SKIP LOCKED: two
     * engines taking at once split them), while this epoch's own lease is
     * live. Rows it holds already (its lease is live) are not returned. */
    [PG_OUTBOX_TAKE] = {"WITH c AS (SELECT o.seq FROM outbox o LEFT JOIN "
                        "sagas s ON s.id = o.key WHERE (SELECT "
                        "lease_live($1, $2)) AND NOT EXISTS (SELECT 1 FROM "
                        "owners w WHERE w.owner = o.owner AND w.epoch = "
                        "o.epoch AND w.lease_until > now_ms()) AND (s.id IS "
                        "NULL OR s.state NOT IN (1, 2) OR (s.owner = $1 AND "
                        "s.epoch = $2)) ORDER BY o.seq LIMIT $3 FOR UPDATE "
                        "OF o SKIP LOCKED) UPDATE outbox o SET owner = $1, "
                        "epoch = $2 FROM c WHERE o.seq = c.seq RETURNING "
                        "o.id, o.topic, o.key, o.payload, o.created_ms, "
                        "o.seq",
                        {T_TEXT, T_INT8, T_INT8}},
    [PG_INBOX_INSERT] = {"INSERT INTO inbox(msg_id, created_ms, reply) "
                         "VALUES ($1, $2, '') ON CONFLICT (msg_id) DO "
                         "NOTHING",
                         {T_TEXT, T_INT8}},
    [PG_INBOX_GET] = {"SELECT reply FROM inbox WHERE msg_id = $1", {T_TEXT}},
    [PG_INBOX_REPLY] = {"UPDATE inbox SET reply = $2 WHERE msg_id = $1",
                        {T_TEXT, T_BYTEA}},
    [PG_KV_GET] = {"SELECT val FROM kv WHERE key = $1", {T_TEXT}},
    [PG_KV_PUT] = {"INSERT INTO kv(key, val) VALUES ($1, $2) ON CONFLICT "
                   "(key) DO UPDATE SET val = EXCLUDED.val",
                   {T_TEXT, T_BYTEA}},
    [PG_KV_SCAN] = {"SELECT key, val FROM kv WHERE starts_with(key, $1)",
                    {T_TEXT}},
    [PG_KV_DEL] = {"DELETE FROM kv WHERE key = $1", {T_TEXT}},
    [PG_KV_GET_LOCK] = {"SELECT val FROM kv WHERE key = $1 FOR UPDATE",
                        {T_TEXT}},
    [PG_KV_EXPECT] = {"WITH c AS (SELECT val FROM kv WHERE key = $1 FOR "
                      "UPDATE) SELECT CASE WHEN (SELECT val FROM c) IS NOT "
                      "DISTINCT FROM $2 THEN 0 ELSE kv_changed($1) END",
                      {T_TEXT, T_BYTEA}},
    /* The strict writes of a batch (and of saga_put with a lease). Each
     * takes the fencing token (owner, epoch) as its last two parameters:
     * NULL for a store without a lease, which then writes no owner and
     * checks none. With a lease, a saga update writes a row only if it is
     * owned by (owner, epoch) or FAILED (state 5: nobody's; any live engine
     * may write it, an operator's retry, compensate or resolve, and owns
     * it from then on); a row not written raises not_written(): SG001
     * (fenced) if the saga exists, 22012 (no such saga, SAGA_ENOTFOUND)
     * if not, aborting the batch. A batch with a lease starts with
     * PG_OWN_FENCE, which raises SG001 unless the lease is live in the
     * server's clock; inserts need no other check. */
    [PG_SAGA_INSERT_X] = {"INSERT INTO sagas(" SAGA_COLS ", owner, epoch) "
                          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                          "$11, $12, $13, $14, $15, " EPOCH("$16") ")",
                          {SAGA_TYPES, OWN_TYPES}},
    [PG_SAGA_UPDATE_X] =
        {"WITH u AS (UPDATE sagas s SET " UPDATE_SET
         ", " OWN_SET("$13", "$14") " WHERE s.id = $1 AND " FENCE(
             "$13", "$14") " RETURNING 1) " NOT_WRITTEN_1,
         {UPDATE_TYPES, OWN_TYPES}},
    [PG_SAGA_UPDATE_DATA_X] =
        {"WITH u AS (UPDATE sagas s SET " UPDATE_SET
         ", idem_key = $12, error = $13, data = $14, " OWN_SET(
             "$15",
             "$16") " WHERE s.id = $1 AND " FENCE("$15",
                                                  "$16") " RETURNING "
                                                         "1) " NOT_WRITTEN_1,
         {SAGA_TYPES, OWN_TYPES}},
    [PG_IDEM_INSERT_X] = {"INSERT INTO idem(key, saga_id, created_ms) "
                          "VALUES ($1, $2, $3)",
                          {T_TEXT, T_TEXT, T_INT8}},
    /* The row's owner: the writer's fencing token (migration 6); the
     * batch's lease check covers it. */
    [PG_OUTBOX_INSERT_X] = {"INSERT INTO outbox(id, topic, key, payload, "
                            "created_ms, owner, epoch) VALUES ($1, $2, $3, "
                            "$4, $5, $6, " EPOCH("$7") ")",
                            {T_TEXT, T_TEXT, T_TEXT, T_BYTEA, T_INT8,
                             OWN_TYPES}},
    [PG_JOURNAL_INSERT_X] = {"INSERT INTO journal_rows(" JOURNAL_COLS
                             ", owner, "
                             "epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                             "$9, " EPOCH("$10") ")",
                             {JOURNAL_TYPES, OWN_TYPES}},
    [PG_BATCH_LOG] = {"INSERT INTO batch_log(writer, seq, at_ms) VALUES ($1, "
                      "$2, $3) ON CONFLICT (writer) DO UPDATE SET seq = "
                      "EXCLUDED.seq, at_ms = EXCLUDED.at_ms",
                      {T_TEXT, T_INT8, T_INT8}},
    [PG_BATCH_READ] = {"SELECT seq FROM batch_log WHERE writer = $1", {T_TEXT}},
    /* Many rows per statement: the same writes with one array per column
     * (unnest) and the fencing token as two scalars, with the same
     * errors: the first row (in batch order) not written names it. */
    [PG_SAGA_INSERT_N] = {"INSERT INTO sagas(" SAGA_COLS ", owner, epoch, "
                          "jrn) SELECT " UNNEST_SAGA
                          ", $15, " EPOCH("$16") ", unnest($17)",
                          {SAGA_ARRAY_TYPES, OWN_TYPES, A_BYTEA}},
    [PG_SAGA_UPDATE_N] = {UPDATE_N(UNNEST_UPDATE, ", error = v.error", "$13",
                                   "$14"),
                          {UPDATE_ARRAY_TYPES, OWN_TYPES, A_BYTEA}},
    [PG_SAGA_UPDATE_DATA_N] = {UPDATE_N(UNNEST_SAGA_AS,
                                        ", idem_key = v.idem_key, error = "
                                        "v.error, data = v.data",
                                        "$15", "$16"),
                               {SAGA_ARRAY_TYPES, OWN_TYPES, A_BYTEA}},
    [PG_JOURNAL_INSERT_N] = {"INSERT INTO journal_rows(" JOURNAL_COLS
                             ", owner, "
                             "epoch) SELECT " UNNEST_JOURNAL
                             ", $9, " EPOCH("$10"),
                             {JOURNAL_ARRAY_TYPES, OWN_TYPES}},
    /* A new epoch from the sequence; an owner id seen before (a restarted
     * process) gets a new one, which fences its previous incarnation. */
    [PG_OWN_FRESH] = {"INSERT INTO owners(owner, epoch, lease_until) VALUES "
                      "($1, nextval('owner_epoch'), now_ms() + $2) ON "
                      "CONFLICT (owner) DO UPDATE SET epoch = EXCLUDED.epoch, "
                      "lease_until = EXCLUDED.lease_until RETURNING epoch",
                      {T_TEXT, T_INT8}},
    /* Only a live lease is extended: once expired, an epoch stays dead. */
    [PG_OWN_RENEW] = {"UPDATE owners SET lease_until = now_ms() + $3 WHERE "
                      "owner = $1 AND epoch = $2 AND lease_until > now_ms() "
                      "RETURNING epoch",
                      {T_TEXT, T_INT8, T_INT8}},
    [PG_OWN_LIVE] = {"SELECT lease_live($1, $2)::int::int8", {T_TEXT, T_INT8}},
    [PG_OWN_CLAIM] = {"WITH c AS (SELECT s.id FROM sagas s WHERE s.state IN "
                      "(1, 2) AND NOT lease_live(s.owner, s.epoch) AND "
                      "lease_live($1, $2) ORDER BY s.due_ms, s.created_ms, "
                      "s.seq LIMIT $3 FOR UPDATE OF s SKIP LOCKED) "
                      "UPDATE sagas s SET owner = $1, epoch = $2 FROM c "
                      "WHERE s.id = c.id RETURNING s.id, s.def_name, "
                      "s.def_version, s.state, s.step, s.attempt, s.flags, "
                      "s.created_ms, s.updated_ms, s.due_ms, s.deadline_ms, "
                      "s.idem_key, s.error, s.data",
                      {T_TEXT, T_INT8, T_INT8}},
    [PG_OWN_CHECK] = {"SELECT id FROM sagas WHERE id = ANY($1::text[]) AND "
                      "owner = $2 AND epoch = $3",
                      {0, T_TEXT, T_INT8}},
    /* The lease check, once per batch, inline (a SQL function call per
     * statement cost a third of the throughput). */
    [PG_OWN_FENCE] = {"SELECT CASE WHEN EXISTS (SELECT 1 FROM owners WHERE "
                      "owner = $1 AND epoch = $2 AND lease_until > "
                      "(extract(epoch FROM clock_timestamp()) * 1000)::int8) "
                      "THEN 1 ELSE lease_lost($1, $2) END",
                      {T_TEXT, T_INT8}},
    [PG_OWN_RELEASE] = {"UPDATE owners SET lease_until = 0 WHERE owner = $1 "
                        "AND epoch = $2",
                        {T_TEXT, T_INT8}},
    /* A participant's claim that also answers what inbox_get would
     * (pg_part.c): the count inserted (1: new), and the recorded reply of
     * an existing entry (the subquery sees the snapshot before the
     * insert: NULL for a new one). */
    [PG_PART_CLAIM] = {"WITH ins AS (INSERT INTO inbox(msg_id, created_ms, "
                       "reply) VALUES ($1, $2, '') ON CONFLICT (msg_id) DO "
                       "NOTHING RETURNING 1) SELECT (SELECT count(*) FROM "
                       "ins), (SELECT reply FROM inbox WHERE msg_id = $1)",
                       {T_TEXT, T_INT8}},
};

#define SELF pg_store *s = (pg_store *)self

static int changed(const PGresult *r)
{
    const char *n = PQcmdTuples((PGresult *)r);
    return n[0] != '\0' && strcmp(n, "0") != 0;
}

/* ------------------------------------------------------------------------ */
/* Sagas                                                                    */

static int check_record(pg_store *s, const saga_record *r, unsigned fl)
{
    if (r == NULL || r->id == NULL || r->def_name == NULL)
        return saga__pg_failf(s, SAGA_EINVAL,
                              "saga_put: record, id and def_name required");
    size_t idlen = strlen(r->id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__pg_failf(s, SAGA_EINVAL,
                              "saga_put: id must be 1..%d characters",
                              SAGA_ID_LEN);
    if ((int)r->state < SAGA_STATE_RUNNING || (int)r->state > SAGA_STATE_FAILED)
        return saga__pg_failf(s, SAGA_EINVAL, "saga_put: bad state %d",
                              (int)r->state);
    if (r->data == NULL && r->data_len > 0)
        return saga__pg_failf(s, SAGA_EINVAL, "saga_put: NULL data");
    if (fl & ~(SAGA_PUT_INSERT | SAGA_PUT_DATA))
        return saga__pg_failf(s, SAGA_EINVAL, "saga_put: unknown flags");
    return saga__pg_check_txn(s);
}

static int pg_saga_put(saga_store *self, const saga_record *r,
                       unsigned int flags)
{
    SELF;
    int rc = check_record(s, r, flags);
    if (rc)
        return rc;
    /* With a lease the strict statement, whose fencing check raises what
     * a row count tells without one. */
    enum pg_stmt which = s->lease_ms                 ? saga__pg_put_stmt(flags)
                         : (flags & SAGA_PUT_INSERT) ? PG_SAGA_INSERT
                         : (flags & SAGA_PUT_DATA)   ? PG_SAGA_UPDATE_DATA
                                                     : PG_SAGA_UPDATE;
    pg_params p = {0};
    saga__pg_saga_params(&p, r, which);
    if (s->lease_ms)
        saga__pg_own_params(s, &p);
    PGresult *res;
    rc = saga__pg_run(s, which, &p, &res, "saga_put");
    if (rc == SAGA_OK && s->lease_ms) {
        PQclear(res);
        return SAGA_OK;
    }
    if (rc)
        return rc;
    if (!changed(res))
        rc = which == PG_SAGA_INSERT
                 ? saga__pg_failf(s, SAGA_EDUP, "saga_put: saga %s exists",
                                  r->id)
                 : saga__pg_failf(s, SAGA_ENOTFOUND, "saga_put: no saga %s",
                                  r->id);
    PQclear(res);
    return rc;
}

enum pg_stmt saga__pg_put_stmt(unsigned int fl)
{
    return (fl & SAGA_PUT_INSERT) ? PG_SAGA_INSERT_X
           : (fl & SAGA_PUT_DATA) ? PG_SAGA_UPDATE_DATA_X
                                  : PG_SAGA_UPDATE_X;
}

void saga__pg_own_params(const pg_store *s, pg_params *p)
{
    saga__pg_text(p, s->lease_ms ? s->owner : NULL);
    if (s->lease_ms)
        saga__pg_int(p, s->epoch);
    else
        saga__pg_text(p, NULL); /* a NULL int8 */
}

void saga__pg_saga_params(pg_params *p, const saga_record *r,
                          enum pg_stmt which)
{
    saga__pg_text(p, r->id);
    saga__pg_text(p, r->def_name);
    saga__pg_int(p, r->def_version);
    saga__pg_int(p, (int64_t)r->state);
    saga__pg_int(p, r->step);
    saga__pg_int(p, r->attempt);
    saga__pg_int(p, r->flags);
    saga__pg_int(p, r->created_ms);
    saga__pg_int(p, r->updated_ms);
    saga__pg_int(p, r->due_ms);
    saga__pg_int(p, r->deadline_ms);
    if (which == PG_SAGA_UPDATE || which == PG_SAGA_UPDATE_X) {
        saga__pg_text(p, r->error);
    } else {
        saga__pg_text(p, r->idem_key);
        saga__pg_text(p, r->error);
        saga__pg_blob(p, r->data, r->data_len);
    }
}

/* Column order of SAGA_COLS. */
void saga__pg_read_record(const PGresult *res, int row, saga_record *r)
{
    r->id = saga__pg_col_text(res, row, 0);
    r->def_name = saga__pg_col_text(res, row, 1);
    r->def_version = (uint32_t)saga__pg_col_int(res, row, 2);
    r->state = (saga_state)saga__pg_col_int(res, row, 3);
    r->step = (int32_t)saga__pg_col_int(res, row, 4);
    r->attempt = (uint32_t)saga__pg_col_int(res, row, 5);
    r->flags = (uint32_t)saga__pg_col_int(res, row, 6);
    r->created_ms = saga__pg_col_int(res, row, 7);
    r->updated_ms = saga__pg_col_int(res, row, 8);
    r->due_ms = saga__pg_col_int(res, row, 9);
    r->deadline_ms = saga__pg_col_int(res, row, 10);
    r->idem_key = saga__pg_col_text(res, row, 11);
    r->error = saga__pg_col_text(res, row, 12);
    r->data = saga__pg_col_blob(res, row, 13, &r->data_len);
}

static int pg_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                       void *arg)
{
    SELF;
    if (id == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "saga_get: NULL id");
    pg_params p = {0};
    saga__pg_text(&p, id);
    PGresult *res;
    int rc = saga__pg_run(s, PG_SAGA_GET, &p, &res, "saga_get");
    if (rc)
        return rc;
    if (PQntuples(res) == 0) {
        rc = saga__pg_failf(s, SAGA_ENOTFOUND, "no saga %s", id);
    } else if (cb) {
        saga_record r;
        saga__pg_read_record(res, 0, &r);
        cb(&r, arg);
    }
    PQclear(res);
    return rc;
}

static int pg_saga_scan(saga_store *self, unsigned int mask, saga_record_cb cb,
                        void *arg)
{
    SELF;
    if (cb == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "saga_scan: NULL callback");
    /* The states as an array literal, sent as text. */
    char states[32] = "{0";
    for (int i = 1; i <= 5; i++)
        if (mask & SAGA_STATE_BIT(i)) {
            size_t n = strlen(states);
            states[n] = ',';
            states[n + 1] = (char)('0' + i);
            states[n + 2] = '\0';
        }
    strcat(states, "}");
    pg_params p = {0};
    saga__pg_text(&p, states);
    p.fmt[0] = 0; /* text: the statement casts it to int8[] */
    PGresult *res;
    enum pg_stmt which = (mask & SAGA_STATE_MASK_ALL & ~SAGA_STATE_MASK_ACTIVE)
                             ? PG_SAGA_SCAN
                             : PG_SAGA_SCAN_ACTIVE;
    int rc = saga__pg_run(s, which, &p, &res, "saga_scan");
    if (rc)
        return rc;
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        saga_record r;
        saga__pg_read_record(res, i, &r);
        if (cb(&r, arg) != 0)
            break;
    }
    PQclear(res);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Journal and idempotency keys                                             */

/* Run a write and clear its result; @p dup_what (NULL: none) names what a
 * row count of 0 means (SAGA_EDUP). */
static int write(pg_store *s, enum pg_stmt which, const pg_params *p,
                 const char *what, const char *dup_what)
{
    PGresult *res;
    int rc = saga__pg_run(s, which, p, &res, what);
    if (rc)
        return rc;
    if (dup_what && !changed(res))
        rc = saga__pg_failf(s, SAGA_EDUP, "%s: %s exists", what, dup_what);
    PQclear(res);
    return rc;
}

void saga__pg_journal_params(pg_params *p, const saga_journal_entry *e)
{
    saga__pg_text(p, e->saga_id);
    saga__pg_int(p, e->seq);
    saga__pg_int(p, (int64_t)e->kind);
    saga__pg_int(p, e->step);
    saga__pg_int(p, e->attempt);
    saga__pg_int(p, e->started_ms);
    saga__pg_int(p, e->at_ms);
    saga__pg_text(p, e->error);
}

static int pg_journal_append(saga_store *self, const saga_journal_entry *e)
{
    SELF;
    if (e == NULL || e->saga_id == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "journal_append: NULL entry");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_journal_params(&p, e);
    saga__pg_own_params(s, &p);
    return write(s, PG_JOURNAL_INSERT, &p, "journal_append", "entry");
}

static int grow_entries(pg_store *s, saga_journal_entry **es, size_t *cap)
{
    size_t nc = *cap ? *cap * 2 : 16;
    saga_journal_entry *ne = saga_realloc(*es, nc * sizeof *ne);
    if (ne == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "journal_scan: out of memory");
    *es = ne;
    *cap = nc;
    return SAGA_OK;
}

static int cmp_seq(const void *x, const void *y)
{
    const saga_journal_entry *a = x, *b = y;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

int saga__pg_journal_entries(pg_store *s, const PGresult *res,
                             const char *saga_id, saga_journal_entry **out,
                             size_t *nout)
{
    /* The rows, then the packed entries of the saga's row: all of them
     * into one array, ordered by seq. */
    int rc = SAGA_OK;
    size_t n = 0, cap = 0;
    saga_journal_entry *es = NULL;
    for (int i = 0, nr = PQntuples(res); i < nr && rc == SAGA_OK; i++) {
        if (PQgetisnull(res, i, 7)) {
            if (n == cap && (rc = grow_entries(s, &es, &cap)) != SAGA_OK)
                break;
            saga_journal_entry *e = &es[n++];
            e->saga_id = saga_id;
            e->seq = (uint32_t)saga__pg_col_int(res, i, 0);
            e->kind = (saga_journal_kind)saga__pg_col_int(res, i, 1);
            e->step = (int32_t)saga__pg_col_int(res, i, 2);
            e->attempt = (uint32_t)saga__pg_col_int(res, i, 3);
            e->started_ms = saga__pg_col_int(res, i, 4);
            e->at_ms = saga__pg_col_int(res, i, 5);
            e->error = saga__pg_col_text(res, i, 6);
            continue;
        }
        size_t len;
        const unsigned char *b = saga__pg_col_blob(res, i, 7, &len);
        size_t off = 0;
        while (off < len && rc == SAGA_OK) {
            if (n == cap && (rc = grow_entries(s, &es, &cap)) != SAGA_OK)
                break;
            if (saga__pg_jrn_next(b, len, &off, saga_id, &es[n]) != 0)
                rc = saga__pg_failf(s, SAGA_ECORRUPT,
                                    "journal_scan: bad packed journal of "
                                    "saga %s",
                                    saga_id);
            else
                n++;
        }
    }
    if (rc != SAGA_OK) {
        saga_free(es);
        return rc;
    }
    if (n > 0)
        qsort(es, n, sizeof *es, cmp_seq);
    *out = es;
    *nout = n;
    return SAGA_OK;
}

static int pg_journal_scan(saga_store *self, const char *saga_id,
                           saga_journal_cb cb, void *arg)
{
    SELF;
    if (saga_id == NULL || cb == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "journal_scan: NULL argument");
    pg_params p = {0};
    saga__pg_text(&p, saga_id);
    PGresult *res;
    int rc = saga__pg_run(s, PG_JOURNAL_SCAN, &p, &res, "journal_scan");
    if (rc)
        return rc;
    saga_journal_entry *es = NULL;
    size_t n = 0;
    rc = saga__pg_journal_entries(s, res, saga_id, &es, &n);
    for (size_t i = 0; rc == SAGA_OK && i < n; i++)
        if (cb(&es[i], arg) != 0)
            break;
    saga_free(es);
    PQclear(res);
    return rc;
}

static int pg_idem_put(saga_store *self, const char *key, const char *saga_id,
                       int64_t created_ms)
{
    SELF;
    if (key == NULL || saga_id == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "idem_put: NULL argument");
    size_t idlen = strlen(saga_id);
    if (idlen == 0 || idlen > SAGA_ID_LEN)
        return saga__pg_failf(s, SAGA_EINVAL,
                              "idem_put: saga id must be 1..%d characters",
                              SAGA_ID_LEN);
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, key);
    saga__pg_text(&p, saga_id);
    saga__pg_int(&p, created_ms);
    return write(s, PG_IDEM_INSERT, &p, "idem_put", "key");
}

static int pg_idem_get(saga_store *self, const char *key,
                       char saga_id_out[SAGA_ID_SIZE])
{
    SELF;
    if (key == NULL || saga_id_out == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "idem_get: NULL argument");
    pg_params p = {0};
    saga__pg_text(&p, key);
    PGresult *res;
    int rc = saga__pg_run(s, PG_IDEM_GET, &p, &res, "idem_get");
    if (rc)
        return rc;
    if (PQntuples(res) == 0) {
        rc = saga__pg_failf(s, SAGA_ENOTFOUND, "no idempotency key %s", key);
    } else {
        const char *id = saga__pg_col_text(res, 0, 0);
        size_t n = id ? strlen(id) : 0;
        if (id == NULL || n > SAGA_ID_LEN)
            rc = saga__pg_failf(s, SAGA_ECORRUPT,
                                "idem_get: bad saga id for key %s", key);
        else
            memcpy(saga_id_out, id, n + 1);
    }
    PQclear(res);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Purge                                                                    */

static int pg_purge(saga_store *self, int64_t before_ms, uint64_t *out)
{
    SELF;
    if (out)
        *out = 0;
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    /* Without a caller's transaction, run in one of our own: a purge
     * stopped half-way must not leave journals without their saga. */
    int own = !s->in_txn;
    if (own && (rc = saga__pg_begin(self)) != SAGA_OK)
        return rc;
    pg_params p = {0};
    saga__pg_int(&p, before_ms);
    /* Journals and keys first: they find their sagas through the sagas
     * table, so it is cleared last. */
    rc = write(s, PG_PURGE_JOURNAL, &p, "purge", NULL);
    if (rc == SAGA_OK)
        rc = write(s, PG_PURGE_IDEM, &p, "purge", NULL);
    uint64_t n = 0;
    if (rc == SAGA_OK) {
        PGresult *res;
        rc = saga__pg_run(s, PG_PURGE_SAGAS, &p, &res, "purge");
        if (rc == SAGA_OK) {
            n = (uint64_t)saga__pg_col_int(res, 0, 0);
            PQclear(res);
        }
    }
    if (rc == SAGA_OK)
        rc = write(s, PG_PURGE_INBOX, &p, "purge", NULL);
    if (own)
        rc = rc == SAGA_OK ? saga__pg_commit(self)
                           : (saga__pg_rollback(self), rc);
    if (rc == SAGA_OK && out)
        *out = n;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Outbox                                                                   */

void saga__pg_outbox_params(pg_params *p, const saga_message *m)
{
    saga__pg_text(p, m->id);
    saga__pg_text(p, m->topic);
    saga__pg_text(p, m->key);
    saga__pg_blob(p, m->payload, m->len);
    saga__pg_int(p, m->created_ms);
}

static int pg_outbox_put(saga_store *self, const saga_message *m)
{
    SELF;
    if (m == NULL || m->id == NULL || m->topic == NULL ||
        (m->payload == NULL && m->len > 0))
        return saga__pg_failf(s, SAGA_EINVAL,
                              "outbox_put: message, id and topic required");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_outbox_params(&p, m);
    return write(s, PG_OUTBOX_INSERT, &p, "outbox_put", "message");
}

static int pg_outbox_scan(saga_store *self, uint32_t limit, saga_message_cb cb,
                          void *arg)
{
    SELF;
    if (cb == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "outbox_scan: NULL callback");
    pg_params p = {0};
    if (limit)
        saga__pg_int(&p, limit);
    else
        saga__pg_text(&p, NULL); /* LIMIT NULL: no limit */
    PGresult *res;
    int rc = saga__pg_run(s, PG_OUTBOX_SCAN, &p, &res, "outbox_scan");
    if (rc)
        return rc;
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        saga_message m;
        m.id = saga__pg_col_text(res, i, 0);
        m.topic = saga__pg_col_text(res, i, 1);
        m.key = saga__pg_col_text(res, i, 2);
        m.payload = saga__pg_col_blob(res, i, 3, &m.len);
        m.created_ms = saga__pg_col_int(res, i, 4);
        if (cb(&m, arg) != 0)
            break;
    }
    PQclear(res);
    return SAGA_OK;
}

static int pg_outbox_done(saga_store *self, const char *msg_id)
{
    SELF;
    if (msg_id == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "outbox_done: NULL id");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, msg_id);
    saga__pg_own_params(s, &p);
    return write(s, PG_OUTBOX_DONE_X, &p, "outbox_done", NULL);
}

/* ------------------------------------------------------------------------ */
/* Inbox and key-value space                                                */

/* Run a one-row, one-blob SELECT keyed by $1 and hand the blob to @p cb. */
static int get_blob(pg_store *s, enum pg_stmt which, const char *key,
                    saga_blob_cb cb, void *arg, const char *what)
{
    pg_params p = {0};
    saga__pg_text(&p, key);
    PGresult *res;
    int rc = saga__pg_run(s, which, &p, &res, what);
    if (rc)
        return rc;
    if (PQntuples(res) == 0) {
        rc = saga__pg_failf(s, SAGA_ENOTFOUND, "%s: no entry %s", what, key);
    } else if (cb) {
        size_t len;
        const void *v = saga__pg_col_blob(res, 0, 0, &len);
        cb(v, len, arg);
    }
    PQclear(res);
    return rc;
}

static int pg_inbox_claim(saga_store *self, const char *msg_id, int64_t now_ms,
                          saga_blob_cb cb, void *arg)
{
    SELF;
    if (msg_id == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "inbox_claim: NULL id");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, msg_id);
    saga__pg_int(&p, now_ms);
    PGresult *res;
    rc = saga__pg_run(s, PG_INBOX_INSERT, &p, &res, "inbox_claim");
    if (rc)
        return rc;
    int fresh = changed(res);
    PQclear(res);
    if (fresh)
        return SAGA_OK;
    rc = get_blob(s, PG_INBOX_GET, msg_id, cb, arg, "inbox_claim");
    return rc == SAGA_OK ? SAGA_EDUP : rc;
}

static int pg_inbox_reply(saga_store *self, const char *msg_id,
                          const void *reply, size_t len)
{
    SELF;
    if (msg_id == NULL || (reply == NULL && len > 0))
        return saga__pg_failf(s, SAGA_EINVAL, "inbox_reply: NULL argument");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, msg_id);
    saga__pg_blob(&p, reply, len);
    PGresult *res;
    rc = saga__pg_run(s, PG_INBOX_REPLY, &p, &res, "inbox_reply");
    if (rc)
        return rc;
    if (!changed(res))
        rc = saga__pg_failf(s, SAGA_ENOTFOUND,
                            "inbox_reply: message %s not claimed", msg_id);
    PQclear(res);
    return rc;
}

static int pg_kv_get(saga_store *self, const char *key, saga_blob_cb cb,
                     void *arg)
{
    SELF;
    if (key == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "kv_get: NULL key");
    return get_blob(s, s->in_txn ? PG_KV_GET_LOCK : PG_KV_GET, key, cb, arg,
                    "kv_get");
}

static int pg_kv_put(saga_store *self, const char *key, const void *val,
                     size_t len)
{
    SELF;
    if (key == NULL || (val == NULL && len > 0))
        return saga__pg_failf(s, SAGA_EINVAL, "kv_put: NULL argument");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, key);
    saga__pg_blob(&p, val, len);
    return write(s, PG_KV_PUT, &p, "kv_put", NULL);
}

static int pg_kv_scan(saga_store *self, const char *prefix, saga_kv_cb cb,
                      void *arg)
{
    SELF;
    if (prefix == NULL || cb == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "kv_scan: NULL argument");
    pg_params p = {0};
    saga__pg_text(&p, prefix);
    PGresult *res;
    int rc = saga__pg_run(s, PG_KV_SCAN, &p, &res, "kv_scan");
    if (rc)
        return rc;
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        size_t len;
        const void *v = saga__pg_col_blob(res, i, 1, &len);
        if (cb(saga__pg_col_text(res, i, 0), v, len, arg) != 0)
            break;
    }
    PQclear(res);
    return SAGA_OK;
}

static int pg_kv_del(saga_store *self, const char *key)
{
    SELF;
    if (key == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "kv_del: NULL key");
    int rc = saga__pg_check_txn(s);
    if (rc)
        return rc;
    pg_params p = {0};
    saga__pg_text(&p, key);
    return write(s, PG_KV_DEL, &p, "kv_del", NULL);
}

static void *pg_native_handle(saga_store *self)
{
    return ((pg_store *)self)->conn;
}

static const char *pg_errmsg(saga_store *self)
{
    return ((pg_store *)self)->err;
}

const saga_store saga__pg_ops = {
    .version = SAGA_STORE_VERSION,
    .begin = saga__pg_begin,
    .commit = saga__pg_commit,
    .rollback = saga__pg_rollback,
    .saga_put = pg_saga_put,
    .saga_get = pg_saga_get,
    .saga_scan = pg_saga_scan,
    .journal_append = pg_journal_append,
    .journal_scan = pg_journal_scan,
    .idem_put = pg_idem_put,
    .idem_get = pg_idem_get,
    .purge = pg_purge,
    .outbox_put = pg_outbox_put,
    .outbox_scan = pg_outbox_scan,
    .outbox_done = pg_outbox_done,
    .inbox_claim = pg_inbox_claim,
    .inbox_reply = pg_inbox_reply,
    .kv_get = pg_kv_get,
    .kv_put = pg_kv_put,
    .native_handle = pg_native_handle,
    .errmsg = pg_errmsg,
    .close = saga__pg_close,
    .kv_scan = pg_kv_scan,
    .kv_del = pg_kv_del,
    .savepoint = saga__pg_savepoint,
    .savepoint_rollback = saga__pg_savepoint_rollback,
    .savepoint_release = saga__pg_savepoint_release,
    .write_batch = saga__pg_write_batch,
    .attach = saga__pg_attach,
    .submit_batch = saga__pg_submit_batch,
    .part_read = saga__pg_part_read,
    .part_commit = saga__pg_part_commit,
    /* version 11 */
    .part_commit_submit = saga__pg_part_commit_submit,
    .app_handle = saga__pg_app_handle,
};

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
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

typedef struct pipe_state {
    pg_store *s;
    size_t sent;   /* queries sent (BEGIN and COMMIT included) */
    size_t done;   /* results read */
    int rc;        /* first failure */
    int committed; /* the COMMIT's result said COMMIT */
    int synced;    /* the sync is queued */
    int64_t seq;   /* the batch's number in the batch log */
} pipe_state;

/* Map a failed statement's SQLSTATE to the slot contract. */
int saga__pg_map_state(const char *st)
{
    if (st == NULL)
        return SAGA_ESTORE;
    if (strcmp(st, "23505") == 0)
        return SAGA_EDUP;
    if (strcmp(st, "22012") == 0)
        return SAGA_ENOTFOUND; /* the strict update found no row */
    if (strcmp(st, PG_SQLSTATE_FENCED) == 0)
        return SAGA_EFENCED; /* an owned write failed its fencing check */
    if (strcmp(st, PG_SQLSTATE_KV_CHANGED) == 0)
        return SAGA_EBUSY; /* a key-value write's expectation failed */
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
            int rc = saga__pg_map_state(
                PQresultErrorField(res, PG_DIAG_SQLSTATE));
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
    struct pollfd p = {PQsocket(c),
                       (short)(POLLIN | (want_write ? POLLOUT : 0)), 0};
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

/* After each statement of write_batch: count it, and keep the output
 * buffer small by flushing every few statements. */
static int after_send(void *arg)
{
    pipe_state *ps = arg;
    ps->sent++;
    return (ps->sent & 63) == 0 ? flush(ps) : 0;
}

static int send_sql(pipe_state *ps, const char *sql)
{
    if (!PQsendQueryParams(ps->s->conn, sql, 0, NULL, NULL, NULL, NULL, 1))
        return -1;
    ps->sent++;
    return 0;
}

static int send_prepared(PGconn *c, enum pg_stmt which, const pg_params *p)
{
    char name[16];
    snprintf(name, sizeof name, "s%d", (int)which);
    return PQsendQueryPrepared(c, name, p->n, p->val, p->len, p->fmt, 1) ? 0
                                                                         : -1;
}

/* ------------------------------------------------------------------------ */
/* Many rows per statement                                                  */

/* A one-dimensional array parameter in PostgreSQL's binary format: ndim,
 * has-nulls flag, element type, length, lower bound, then each element as
 * a 4-byte length (-1: NULL) and its bytes; all big-endian. */
typedef struct pg_arr {
    char *buf;
    size_t len, cap;
    int failed;
} pg_arr;

static void arr_bytes(pg_arr *a, const void *v, size_t n)
{
    if (a->failed)
        return;
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->len + n)
            cap *= 2;
        char *nb = saga_realloc(a->buf, cap);
        if (nb == NULL) {
            a->failed = 1;
            return;
        }
        a->buf = nb;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, v, n);
    a->len += n;
}

/* Room for @p n bytes at the end of @p a (NULL: out of memory). */
static unsigned char *arr_space(pg_arr *a, size_t n)
{
    static const unsigned char zero[64];
    size_t at = a->len;
    while (n > 0 && !a->failed) {
        size_t k = n < sizeof zero ? n : sizeof zero;
        arr_bytes(a, zero, k);
        n -= k;
    }
    return a->failed ? NULL : (unsigned char *)a->buf + at;
}

static void arr_u32(pg_arr *a, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    arr_bytes(a, b, 4);
}

static void arr_start(pg_arr *a, uint32_t elem_oid, size_t n)
{
    a->len = 0;
    a->failed = 0;
    arr_u32(a, 1); /* ndim */
    arr_u32(a, 1); /* may hold NULLs */
    arr_u32(a, elem_oid);
    arr_u32(a, (uint32_t)n);
    arr_u32(a, 1); /* lower bound */
}

static void arr_blob(pg_arr *a, const void *v, size_t n)
{
    arr_u32(a, (uint32_t)n);
    arr_bytes(a, v, n);
}

static void arr_text(pg_arr *a, const char *v)
{
    if (v == NULL)
        arr_u32(a, 0xffffffffu); /* NULL */
    else
        arr_blob(a, v, strlen(v));
}

static void arr_int(pg_arr *a, int64_t v)
{
    arr_u32(a, 8);
    arr_u32(a, (uint32_t)((uint64_t)v >> 32));
    arr_u32(a, (uint32_t)v);
}

/* A saga of the batch by id: its id and its index in w->sagas. */
typedef struct id_ix {
    const char *id;
    size_t i;
} id_ix;

static int cmp_id(const void *x, const void *y)
{
    return strcmp(((const id_ix *)x)->id, ((const id_ix *)y)->id);
}

/* The journal entries that ride in their saga's row (the array
 * statements): for saga i, jorder[jstart[i] .. jstart[i + 1]) are the
 * indexes in w->journal of its entries, in batch order, and jbytes[i]
 * their packed size; loose[0 .. nloose) are the entries of sagas not in
 * the batch, written as journal rows. */
typedef struct jplan {
    size_t *jstart, *jorder, *jbytes, *loose;
    size_t nloose;
} jplan;

static void jplan_free(jplan *jp)
{
    saga_free(jp->jstart);
    saga_free(jp->jorder);
    saga_free(jp->jbytes);
    saga_free(jp->loose);
}

/* 1 if no saga id appears twice in the batch (then the bulk statements
 * give exactly the per-row result, and @p jp says where each journal
 * entry goes), 0 if one does, -1 out of memory. */
static int plan_bulk(const pg_store *s, const saga_batch_writes *w, jplan *jp)
{
    memset(jp, 0, sizeof *jp);
    size_t ns = w->nsagas, nj = w->njournal;
    id_ix *ids = saga_malloc(ns * sizeof *ids);
    size_t *of = saga_malloc((nj ? nj : 1) * sizeof *of);
    jp->jstart = saga_malloc((ns + 1) * sizeof *jp->jstart);
    jp->jbytes = saga_malloc((ns ? ns : 1) * sizeof *jp->jbytes);
    jp->jorder = saga_malloc((nj ? nj : 1) * sizeof *jp->jorder);
    jp->loose = saga_malloc((nj ? nj : 1) * sizeof *jp->loose);
    if (ids == NULL || of == NULL || jp->jstart == NULL || jp->jbytes == NULL ||
        jp->jorder == NULL || jp->loose == NULL) {
        saga_free(ids);
        saga_free(of);
        jplan_free(jp);
        return -1;
    }
    memset(jp->jstart, 0, (ns + 1) * sizeof *jp->jstart);
    memset(jp->jbytes, 0, (ns ? ns : 1) * sizeof *jp->jbytes);
    for (size_t i = 0; i < ns; i++)
        ids[i] = (id_ix){w->sagas[i].id, i};
    qsort(ids, ns, sizeof *ids, cmp_id);
    int ok = 1;
    for (size_t i = 1; i < ns && ok; i++)
        ok = strcmp(ids[i - 1].id, ids[i].id) != 0;
    const char *owner = s->lease_ms ? s->owner : NULL;
    for (size_t j = 0; ok && j < nj; j++) {
        id_ix key = {w->journal[j].saga_id, 0};
        const id_ix *hit = bsearch(&key, ids, ns, sizeof *ids, cmp_id);
        of[j] = hit ? hit->i : (size_t)-1;
        if (hit) {
            jp->jstart[hit->i + 1]++;
            jp->jbytes[hit->i] += saga__pg_jrn_size(&w->journal[j], owner);
        } else {
            jp->loose[jp->nloose++] = j;
        }
    }
    if (ok) {
        for (size_t i = 0; i < ns; i++)
            jp->jstart[i + 1] += jp->jstart[i];
        /* Fill each saga's slice in batch order. */
        size_t *at = ns ? saga_malloc(ns * sizeof *at) : NULL;
        if (ns && at == NULL) {
            saga_free(ids);
            saga_free(of);
            jplan_free(jp);
            return -1;
        }
        for (size_t i = 0; i < ns; i++)
            at[i] = jp->jstart[i];
        for (size_t j = 0; j < nj; j++)
            if (of[j] != (size_t)-1)
                jp->jorder[at[of[j]]++] = j;
        saga_free(at);
    }
    saga_free(ids);
    saga_free(of);
    if (!ok)
        jplan_free(jp);
    return ok;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_i64(unsigned char *p, int64_t v)
{
    put_u32(p, (uint32_t)((uint64_t)v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static int64_t get_i64(const unsigned char *p)
{
    return (int64_t)((uint64_t)get_u32(p) << 32 | get_u32(p + 4));
}

size_t saga__pg_jrn_size(const saga_journal_entry *e, const char *owner)
{
    return PG_JRN_FIXED + 4 + (owner ? strlen(owner) + 1 : 0) + 4 +
           (e->error ? strlen(e->error) + 1 : 0);
}

/* A string as an int4 length (-1: NULL), its bytes and a NUL. */
static unsigned char *put_str(unsigned char *p, const char *v)
{
    if (v == NULL) {
        put_u32(p, 0xffffffffu);
        return p + 4;
    }
    size_t n = strlen(v);
    put_u32(p, (uint32_t)n);
    memcpy(p + 4, v, n + 1);
    return p + 4 + n + 1;
}

void saga__pg_jrn_pack(unsigned char *out, const saga_journal_entry *e,
                       const char *owner, int64_t epoch)
{
    put_u32(out, e->seq);
    put_u32(out + 4, (uint32_t)e->kind);
    put_u32(out + 8, (uint32_t)e->step);
    put_u32(out + 12, e->attempt);
    put_i64(out + 16, e->started_ms);
    put_i64(out + 24, e->at_ms);
    put_i64(out + 32, epoch);
    put_str(put_str(out + PG_JRN_FIXED, owner), e->error);
}

/* The string at *off: NULL, or its bytes (NUL-ended in @p b). */
static int get_str(const unsigned char *b, size_t len, size_t *off,
                   const char **v)
{
    if (len - *off < 4)
        return -1;
    uint32_t n = get_u32(b + *off);
    *off += 4;
    if (n == 0xffffffffu) {
        *v = NULL;
        return 0;
    }
    if (len - *off < (size_t)n + 1 || b[*off + n] != '\0' ||
        memchr(b + *off, '\0', n) != NULL)
        return -1;
    *v = (const char *)b + *off;
    *off += (size_t)n + 1;
    return 0;
}

int saga__pg_jrn_next(const unsigned char *b, size_t len, size_t *off,
                      const char *saga_id, saga_journal_entry *e)
{
    if (*off > len || len - *off < PG_JRN_FIXED)
        return -1;
    const unsigned char *p = b + *off;
    e->saga_id = saga_id;
    e->seq = get_u32(p);
    e->kind = (saga_journal_kind)(int32_t)get_u32(p + 4);
    e->step = (int32_t)get_u32(p + 8);
    e->attempt = get_u32(p + 12);
    e->started_ms = get_i64(p + 16);
    e->at_ms = get_i64(p + 24);
    *off += PG_JRN_FIXED;
    const char *owner;
    return get_str(b, len, off, &owner) || get_str(b, len, off, &e->error) ? -1
                                                                           : 0;
}

#define T_TEXT_OID 25u
#define T_INT8_OID 20u
#define T_BYTEA_OID 17u

/* The sagas of @p w whose put flags select @p which (one of the three
 * kinds), as one statement. */
static int send_sagas_n(pg_store *s, const saga_batch_writes *w,
                        const jplan *jp, enum pg_stmt which, size_t count,
                        size_t *nsent)
{
    const char *owner = s->lease_ms ? s->owner : NULL;
    int64_t epoch = s->lease_ms ? s->epoch : 0;
    pg_arr jrn = {0};
    arr_start(&jrn, T_BYTEA_OID, count);
    enum pg_stmt one = which == PG_SAGA_INSERT_N   ? PG_SAGA_INSERT_X
                       : which == PG_SAGA_UPDATE_N ? PG_SAGA_UPDATE_X
                                                   : PG_SAGA_UPDATE_DATA_X;
    int ncols = one == PG_SAGA_UPDATE_X ? 12 : 14;
    pg_arr arr[14];
    memset(arr, 0, sizeof arr);
    static const uint32_t oids[14] = {T_TEXT_OID, T_TEXT_OID, T_INT8_OID,
                                      T_INT8_OID, T_INT8_OID, T_INT8_OID,
                                      T_INT8_OID, T_INT8_OID, T_INT8_OID,
                                      T_INT8_OID, T_INT8_OID, T_TEXT_OID,
                                      T_TEXT_OID, T_BYTEA_OID};
    for (int k = 0; k < ncols; k++)
        arr_start(&arr[k], k == 11 && ncols == 12 ? T_TEXT_OID : oids[k],
                  count);
    for (size_t i = 0; i < w->nsagas; i++) {
        unsigned fl = w->put_flags[i];
        enum pg_stmt kind = (fl & SAGA_PUT_INSERT) ? PG_SAGA_INSERT_X
                            : (fl & SAGA_PUT_DATA) ? PG_SAGA_UPDATE_DATA_X
                                                   : PG_SAGA_UPDATE_X;
        if (kind != one)
            continue;
        const saga_record *r = &w->sagas[i];
        arr_text(&arr[0], r->id);
        arr_text(&arr[1], r->def_name);
        arr_int(&arr[2], r->def_version);
        arr_int(&arr[3], (int64_t)r->state);
        arr_int(&arr[4], r->step);
        arr_int(&arr[5], r->attempt);
        arr_int(&arr[6], r->flags);
        arr_int(&arr[7], r->created_ms);
        arr_int(&arr[8], r->updated_ms);
        arr_int(&arr[9], r->due_ms);
        arr_int(&arr[10], r->deadline_ms);
        if (ncols == 12) {
            arr_text(&arr[11], r->error);
        } else {
            arr_text(&arr[11], r->idem_key);
            arr_text(&arr[12], r->error);
            arr_blob(&arr[13], r->data_len ? r->data : "", r->data_len);
        }
        /* The saga's journal entries of this batch, packed. */
        arr_u32(&jrn, (uint32_t)jp->jbytes[i]);
        unsigned char *out = arr_space(&jrn, jp->jbytes[i]);
        for (size_t k = jp->jstart[i]; out && k < jp->jstart[i + 1]; k++) {
            const saga_journal_entry *e = &w->journal[jp->jorder[k]];
            saga__pg_jrn_pack(out, e, owner, epoch);
            out += saga__pg_jrn_size(e, owner);
        }
    }
    pg_params p = {0};
    int rc = 0;
    for (int k = 0; k < ncols; k++) {
        if (arr[k].failed)
            rc = -1;
        saga__pg_blob(&p, arr[k].buf, arr[k].len);
    }
    saga__pg_own_params(s, &p);
    if (jrn.failed)
        rc = -1;
    saga__pg_blob(&p, jrn.buf, jrn.len);
    if (rc == 0)
        rc = send_prepared(s->conn, which, &p);
    for (int k = 0; k < ncols; k++)
        saga_free(arr[k].buf);
    saga_free(jrn.buf);
    if (rc == 0)
        ++*nsent;
    return rc;
}

/* The journal entries sel[0 .. nsel) of @p w (all if sel is NULL) as
 * rows, one statement. */
static int send_journal_n(pg_store *s, const saga_batch_writes *w,
                          const size_t *sel, size_t nsel, size_t *nsent)
{
    pg_arr arr[8];
    memset(arr, 0, sizeof arr);
    for (int k = 0; k < 8; k++)
        arr_start(&arr[k], k == 0 || k == 7 ? T_TEXT_OID : T_INT8_OID, nsel);
    for (size_t i = 0; i < nsel; i++) {
        const saga_journal_entry *e = &w->journal[sel ? sel[i] : i];
        arr_text(&arr[0], e->saga_id);
        arr_int(&arr[1], e->seq);
        arr_int(&arr[2], (int64_t)e->kind);
        arr_int(&arr[3], e->step);
        arr_int(&arr[4], e->attempt);
        arr_int(&arr[5], e->started_ms);
        arr_int(&arr[6], e->at_ms);
        arr_text(&arr[7], e->error);
    }
    pg_params p = {0};
    int rc = 0;
    for (int k = 0; k < 8; k++) {
        if (arr[k].failed)
            rc = -1;
        saga__pg_blob(&p, arr[k].buf, arr[k].len);
    }
    saga__pg_own_params(s, &p);
    if (rc == 0)
        rc = send_prepared(s->conn, PG_JOURNAL_INSERT_N, &p);
    for (int k = 0; k < 8; k++)
        saga_free(arr[k].buf);
    if (rc == 0)
        ++*nsent;
    return rc;
}

/* From this many rows of a kind on, one array statement carries them. */
#define BULK_MIN 4

int saga__pg_send_writes(pg_store *s, const saga_batch_writes *w,
                         int (*after)(void *), void *arg, size_t *nsent)
{
    PGconn *c = s->conn;
#define SEND(which, p)                                                         \
    do {                                                                       \
        if (send_prepared(c, which, p) != 0)                                   \
            return -1;                                                         \
        ++*nsent;                                                              \
        if (after != NULL && after(arg) != 0)                                  \
            return -1;                                                         \
    } while (0)
#define SENT_ONE()                                                             \
    do {                                                                       \
        if (after != NULL && after(arg) != 0)                                  \
            return -1;                                                         \
    } while (0)
    /* With a lease: the batch is fenced unless the lease is live (checked
     * once per batch, pg_own.c). */
    pg_params fence = {0};
    if (!saga__pg_kv_only(w) && saga__pg_fence_params(s, &fence))
        SEND(PG_OWN_FENCE, &fence);
    size_t nk[3] = {0, 0, 0}; /* inserts, updates, updates with data */
    for (size_t i = 0; i < w->nsagas; i++) {
        unsigned fl = w->put_flags[i];
        nk[(fl & SAGA_PUT_INSERT) ? 0 : (fl & SAGA_PUT_DATA) ? 2 : 1]++;
    }
    /* Every write carries the fencing token (owner, epoch; NULL without
     * a lease), checked row by row in the array statements too. */
    jplan jp;
    int bulk = w->nsagas >= BULK_MIN ? plan_bulk(s, w, &jp) : 0;
    if (bulk < 0)
        return -1;
    if (bulk) {
        /* The journal entries of the sagas written here ride in their
         * rows; the others (loose) are rows of journal_rows below. */
        static const enum pg_stmt kinds[3] = {PG_SAGA_INSERT_N,
                                              PG_SAGA_UPDATE_N,
                                              PG_SAGA_UPDATE_DATA_N};
        int rc = 0;
        for (int k = 0; k < 3 && rc == 0; k++) {
            if (nk[k] == 0)
                continue;
            rc = send_sagas_n(s, w, &jp, kinds[k], nk[k], nsent);
            if (rc == 0 && after != NULL)
                rc = after(arg);
        }
        if (rc == 0 && jp.nloose >= BULK_MIN) {
            rc = send_journal_n(s, w, jp.loose, jp.nloose, nsent);
            if (rc == 0 && after != NULL)
                rc = after(arg);
        } else {
            for (size_t i = 0; rc == 0 && i < jp.nloose; i++) {
                pg_params p = {0};
                saga__pg_journal_params(&p, &w->journal[jp.loose[i]]);
                saga__pg_own_params(s, &p);
                rc = send_prepared(c, PG_JOURNAL_INSERT_X, &p);
                if (rc == 0)
                    ++*nsent;
                if (rc == 0 && after != NULL)
                    rc = after(arg);
            }
        }
        jplan_free(&jp);
        if (rc != 0)
            return -1;
    } else {
        for (size_t i = 0; i < w->nsagas; i++) {
            enum pg_stmt which = saga__pg_put_stmt(w->put_flags[i]);
            pg_params p = {0};
            saga__pg_saga_params(&p, &w->sagas[i], which);
            saga__pg_own_params(s, &p);
            SEND(which, &p);
        }
    }
    for (size_t i = 0; i < w->nidem; i++) {
        pg_params p = {0};
        saga__pg_text(&p, w->idem[i].key);
        saga__pg_text(&p, w->idem[i].saga_id);
        saga__pg_int(&p, w->idem[i].created_ms);
        SEND(PG_IDEM_INSERT_X, &p);
    }
    for (size_t i = 0; i < w->noutbox; i++) {
        pg_params p = {0};
        saga__pg_outbox_params(&p, &w->outbox[i]);
        saga__pg_own_params(s, &p);
        SEND(PG_OUTBOX_INSERT_X, &p);
    }
    for (size_t i = 0; i < w->ndone; i++) {
        pg_params p = {0};
        saga__pg_text(&p, w->done_ids[i]);
        saga__pg_own_params(s, &p);
        SEND(PG_OUTBOX_DONE_X, &p);
    }
    if (bulk) {
        /* Written above, in the saga rows and as loose rows. */
    } else if (w->njournal >= BULK_MIN) {
        if (send_journal_n(s, w, NULL, w->njournal, nsent) != 0)
            return -1;
        SENT_ONE();
    } else {
        for (size_t i = 0; i < w->njournal; i++) {
            pg_params p = {0};
            saga__pg_journal_params(&p, &w->journal[i]);
            saga__pg_own_params(s, &p);
            SEND(PG_JOURNAL_INSERT_X, &p);
        }
    }
    /* Version 13: the key-value writes, last, in order. */
    for (size_t i = 0; i < w->nkv; i++) {
        const saga_kv_write *k = &w->kv[i];
        pg_params p = {0};
        saga__pg_text(&p, k->key);
        if (k->flags & SAGA_KV_EXPECT) {
            pg_params e = p;
            if (k->expect != NULL)
                saga__pg_blob(&e, k->expect, k->expect_len);
            else
                saga__pg_text(&e, NULL);
            SEND(PG_KV_EXPECT, &e);
        }
        if (k->val != NULL) {
            saga__pg_blob(&p, k->val, k->len);
            SEND(PG_KV_PUT, &p);
        } else {
            SEND(PG_KV_DEL, &p);
        }
    }
#undef SEND
#undef SENT_ONE
    return 0;
}

static int send_all(pipe_state *ps, const saga_batch_writes *w)
{
    size_t n = 0;
    /* The batch log, as submit_batch writes it: a COMMIT whose answer is
     * lost is resolved by reading it back. */
    pg_params p = {0};
    saga__pg_text(&p, ps->s->log_writer);
    saga__pg_int(&p, ps->seq);
    saga__pg_int(&p, saga__pg_wall_ms());
    if (send_sql(ps, "BEGIN") != 0 ||
        send_prepared(ps->s->conn, PG_BATCH_LOG, &p) != 0 ||
        after_send(ps) != 0 ||
        saga__pg_send_writes(ps->s, w, after_send, ps, &n) != 0)
        return -1;
    if (send_sql(ps, "COMMIT") != 0 || !PQpipelineSync(ps->s->conn))
        return -1;
    ps->synced = 1;
    return flush(ps);
}

int saga__pg_kv_only(const saga_batch_writes *w)
{
    return w->nkv > 0 && !w->nsagas && !w->nidem && !w->noutbox && !w->ndone &&
           !w->njournal;
}

int saga__pg_check_writes(pg_store *s, const saga_batch_writes *w)
{
    if (w == NULL ||
        (w->nsagas && (w->sagas == NULL || w->put_flags == NULL)) ||
        (w->nidem && w->idem == NULL) || (w->noutbox && w->outbox == NULL) ||
        (w->ndone && w->done_ids == NULL) ||
        (w->njournal && w->journal == NULL) || (w->nkv && w->kv == NULL))
        return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad arguments");
    for (size_t i = 0; i < w->nsagas; i++) {
        const saga_record *r = &w->sagas[i];
        if (r->id == NULL || r->def_name == NULL || strlen(r->id) == 0 ||
            strlen(r->id) > SAGA_ID_LEN || (r->data == NULL && r->data_len > 0))
            return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad saga");
    }
    for (size_t i = 0; i < w->nidem; i++)
        if (w->idem[i].key == NULL || w->idem[i].saga_id == NULL)
            return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad key");
    for (size_t i = 0; i < w->noutbox; i++)
        if (w->outbox[i].id == NULL || w->outbox[i].topic == NULL)
            return saga__pg_failf(s, SAGA_EINVAL, "write_batch: bad message");
    for (size_t i = 0; i < w->njournal; i++)
        if (w->journal[i].saga_id == NULL)
            return saga__pg_failf(s, SAGA_EINVAL,
                                  "write_batch: bad journal entry");
    for (size_t i = 0; i < w->nkv; i++) {
        const saga_kv_write *k = &w->kv[i];
        if (k->key == NULL || (k->val == NULL && k->len > 0) ||
            (k->expect == NULL && k->expect_len > 0))
            return saga__pg_failf(s, SAGA_EINVAL,
                                  "write_batch: bad key-value write");
    }
    return SAGA_OK;
}

int saga__pg_write_batch(saga_store *self, const saga_batch_writes *w)
{
    pg_store *s = (pg_store *)self;
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE,
                              "write_batch: a transaction is open");
    int rc = saga__pg_check_writes(s, w);
    if (rc)
        return rc;
    if ((rc = saga__pg_ensure_conn(s)) != SAGA_OK)
        return SAGA_ESTORE;
    PGconn *c = s->conn;
    if (!PQenterPipelineMode(c) || PQsetnonblocking(c, 1) != 0) {
        PQexitPipelineMode(c);
        return saga__pg_fail_res(s, NULL, "write_batch: pipeline mode");
    }
    pipe_state ps = {s, 0, 0, SAGA_OK, 0, 0, ++s->batch_seq};
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
        /* A broken connection: whether the COMMIT landed is not known
         * from here. Reconnect once and read the batch log back: the
         * batch's number is there if and only if it committed. If that
         * fails too, SAGA_ESTORE (the engine's recovery reads the sagas
         * back). */
        rc = saga__pg_fail_res(s, NULL, "write_batch");
        PQfinish(s->conn);
        s->conn = NULL;
        int64_t seq = -1;
        if (saga__pg_open_conn(s, &s->conn, 1) == SAGA_OK &&
            saga__pg_read_log(s, &seq) == SAGA_OK && seq >= ps.seq)
            return SAGA_OK; /* committed; only the answer was lost */
        if (seq >= 0)
            saga__pg_failf(s, SAGA_ESTORE,
                           "write_batch: the connection was lost and the "
                           "batch was not committed (read back)");
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

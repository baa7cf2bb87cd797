/*
 * pg_own.c — several engines on one schema: leases, fencing tokens and
 * claiming (the store interface's version-5 slots).
 *
 * A store opened with a lease (saga_pg_options.lease_ms > 0) is an owner:
 * a row in `owners` (owner id, epoch, lease_until in the server's clock).
 * own_renew(fresh) takes a new epoch from a sequence; own_renew(0) extends
 * the lease only while it is live, so an epoch whose lease ran out stays
 * dead. Every saga this store inserts or claims carries (owner, epoch), and
 * every saga write checks both in the same statement (the fencing token);
 * every batch also checks first that the lease is live. A paused or
 * partitioned old owner's late write raises SG001, which aborts its whole
 * batch (SAGA_EFENCED), instead of overwriting what the new owner wrote.
 * (A claimer waits for no row a batch holds: SKIP LOCKED takes it on a
 * later round, after that batch committed or failed.) Journal entries record the
 * (owner, epoch) that wrote them.
 *
 * own_renew_submit and own_claim_submit (version 6) send the same
 * statements on the loop, pipelined beside the batches (pg_async.c), and
 * answer from the loop.
 *
 * own_claim takes active sagas whose owner's lease is not live (expired,
 * released, or a dead epoch) with FOR UPDATE SKIP LOCKED, so that engines
 * claiming at once split them instead of waiting for each other, and gives
 * them this store's epoch, in one statement.
 */
#include <stdio.h>
#include <string.h>

#include "pg_int.h"

int saga__pg_fence_params(const pg_store *s, pg_params *p)
{
    if (!s->lease_ms)
        return 0;
    saga__pg_text(p, s->owner);
    saga__pg_int(p, s->epoch);
    return 1;
}

/* Run a statement outside a transaction (the ownership slots commit on
 * their own: one statement each). */
static int run_own(pg_store *s, enum pg_stmt which, const pg_params *p,
                   PGresult **out, const char *what)
{
    if (s->in_txn)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: a transaction is open",
                              what);
    return saga__pg_run(s, which, p, out, what);
}

static int pg_own_renew(saga_store *self, int fresh, uint32_t *lease_ms_out)
{
    pg_store *s = (pg_store *)self;
    if (lease_ms_out)
        *lease_ms_out = s->lease_ms;
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    PGresult *res;
    int rc;
    if (!fresh && s->epoch != 0) {
        saga__pg_int(&p, s->epoch);
        saga__pg_int(&p, s->lease_ms);
        rc = run_own(s, PG_OWN_RENEW, &p, &res, "own_renew");
        if (rc != SAGA_OK)
            return SAGA_ESTORE;
        int live = PQntuples(res) == 1;
        PQclear(res);
        if (live)
            return SAGA_OK;
        return saga__pg_failf(s, SAGA_EFENCED,
                              "own_renew: the lease of %s epoch %lld ran "
                              "out",
                              s->owner, (long long)s->epoch);
    }
    saga__pg_int(&p, s->lease_ms);
    rc = run_own(s, PG_OWN_FRESH, &p, &res, "own_renew");
    if (rc != SAGA_OK)
        return SAGA_ESTORE;
    int64_t epoch = PQntuples(res) == 1 ? saga__pg_col_int(res, 0, 0) : 0;
    PQclear(res);
    if (epoch <= 0)
        return saga__pg_failf(s, SAGA_ESTORE, "own_renew: no epoch");
    s->epoch = epoch;
    return SAGA_OK;
}

static int lease_live(pg_store *s, int *live)
{
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    saga__pg_int(&p, s->epoch);
    PGresult *res;
    int rc = run_own(s, PG_OWN_LIVE, &p, &res, "own_check");
    if (rc != SAGA_OK)
        return SAGA_ESTORE;
    *live = PQntuples(res) == 1 && saga__pg_col_int(res, 0, 0) != 0;
    PQclear(res);
    return SAGA_OK;
}

static int pg_own_claim(saga_store *self, uint32_t limit, saga_record_cb cb,
                        void *arg, size_t *claimed_out)
{
    pg_store *s = (pg_store *)self;
    if (claimed_out)
        *claimed_out = 0;
    if (cb == NULL || limit == 0)
        return saga__pg_failf(s, SAGA_EINVAL, "own_claim: bad arguments");
    if (s->epoch == 0)
        return saga__pg_failf(s, SAGA_EFENCED, "own_claim: no lease taken");
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    saga__pg_int(&p, s->epoch);
    saga__pg_int(&p, limit);
    PGresult *res;
    int rc = run_own(s, PG_OWN_CLAIM, &p, &res, "own_claim");
    if (rc != SAGA_OK)
        return SAGA_ESTORE;
    int n = PQntuples(res);
    if (n == 0) {
        /* Nothing to claim, or no live lease of our own: tell them apart
         * so that the engine learns it lost its lease. */
        PQclear(res);
        int live = 0;
        if ((rc = lease_live(s, &live)) != SAGA_OK)
            return rc;
        return live ? SAGA_OK
                    : saga__pg_failf(s, SAGA_EFENCED,
                                     "own_claim: the lease of %s epoch %lld "
                                     "is not live",
                                     s->owner, (long long)s->epoch);
    }
    for (int i = 0; i < n; i++) {
        saga_record r;
        saga__pg_read_record(res, i, &r); /* RETURNING SAGA_COLS */
        if (cb(&r, arg) != 0)
            break;
    }
    PQclear(res);
    if (claimed_out)
        *claimed_out = (size_t)n;
    return SAGA_OK;
}

/* The ids as an array literal, sent as text; saga ids are checked for
 * their characters so that none needs quoting (one that fails is left
 * out: not a saga id we could own, so lost). NULL: out of memory. */
static char *ids_literal(const char *const *ids, size_t n)
{
    size_t cap = n * (SAGA_ID_LEN + 1) + 3;
    char *arr = saga_malloc(cap);
    if (arr == NULL)
        return NULL;
    size_t len = 0;
    arr[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        const char *id = ids[i];
        size_t k = id ? strnlen(id, SAGA_ID_LEN + 1) : 0;
        int ok = k > 0 && k <= SAGA_ID_LEN;
        for (size_t j = 0; ok && j < k; j++)
            ok = (id[j] >= '0' && id[j] <= '9') ||
                 (id[j] >= 'a' && id[j] <= 'z') ||
                 (id[j] >= 'A' && id[j] <= 'Z') || id[j] == '-' || id[j] == '_';
        if (!ok)
            continue;
        if (len > 1)
            arr[len++] = ',';
        memcpy(arr + len, id, k);
        len += k;
    }
    arr[len++] = '}';
    arr[len] = '\0';
    return arr;
}

static int pg_own_check(saga_store *self, const char *const *ids, size_t n,
                        unsigned char *lost)
{
    pg_store *s = (pg_store *)self;
    if ((n > 0 && (ids == NULL || lost == NULL)))
        return saga__pg_failf(s, SAGA_EINVAL, "own_check: bad arguments");
    for (size_t i = 0; i < n; i++)
        lost[i] = 1;
    int live = 0;
    int rc = lease_live(s, &live);
    if (rc != SAGA_OK)
        return rc;
    if (!live)
        return saga__pg_failf(s, SAGA_EFENCED,
                              "own_check: the lease of %s epoch %lld is not "
                              "live",
                              s->owner, (long long)s->epoch);
    if (n == 0)
        return SAGA_OK;
    char *arr = ids_literal(ids, n);
    if (arr == NULL)
        return SAGA_ENOMEM;
    pg_params p = {0};
    saga__pg_text(&p, arr);
    p.fmt[0] = 0;
    saga__pg_text(&p, s->owner);
    saga__pg_int(&p, s->epoch);
    PGresult *res;
    rc = run_own(s, PG_OWN_CHECK, &p, &res, "own_check");
    saga_free(arr);
    if (rc != SAGA_OK)
        return SAGA_ESTORE;
    for (int r = 0, nr = PQntuples(res); r < nr; r++) {
        const char *id = saga__pg_col_text(res, r, 0);
        for (size_t i = 0; id && i < n; i++)
            if (ids[i] && strcmp(ids[i], id) == 0)
                lost[i] = 0;
    }
    PQclear(res);
    return SAGA_OK;
}

static int pg_own_release(saga_store *self)
{
    pg_store *s = (pg_store *)self;
    if (s->epoch == 0)
        return SAGA_OK;
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    saga__pg_int(&p, s->epoch);
    int rc = run_own(s, PG_OWN_RELEASE, &p, NULL, "own_release");
    return rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE;
}

/* ------------------------------------------------------------------------ */
/* The same round trips on the loop (version 6)                             */

/* A request's result: the first failure, or SAGA_ESTORE if fewer than
 * the @p nres results with rows it asked for came back. */
static int answer_rc(pg_store *s, const pg_abatch *b, int nres,
                     const char *what)
{
    if (b->rc == SAGA_OK && b->nres != nres)
        return saga__pg_failf(s, SAGA_ESTORE, "%s: no answer", what);
    return b->rc;
}

static void renew_fin(pg_store *s, pg_abatch *b)
{
    saga_own_renewed_cb done = (saga_own_renewed_cb)b->cb;
    int fresh = b->x != 0, rc = answer_rc(s, b, 1, "own_renew");
    if (fresh)
        s->epoch_pending = 0;
    if (rc == SAGA_OK && fresh) {
        int64_t epoch = PQntuples(b->res[0]) == 1
                            ? saga__pg_col_int(b->res[0], 0, 0)
                            : 0;
        if (epoch <= 0)
            rc = saga__pg_failf(s, SAGA_ESTORE, "own_renew: no epoch");
        else
            s->epoch = epoch;
    } else if (rc == SAGA_OK && PQntuples(b->res[0]) != 1) {
        rc = saga__pg_failf(s, SAGA_EFENCED,
                            "own_renew: the lease of %s epoch %lld ran out",
                            s->owner, (long long)s->epoch);
    } else if (rc != SAGA_OK && rc != SAGA_EFENCED) {
        rc = SAGA_ESTORE;
    }
    done(b->arg, rc, s->lease_ms);
}

static int pg_own_renew_submit(saga_store *self, int fresh,
                               saga_own_renewed_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "own_renew: NULL done");
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    enum pg_stmt which;
    fresh = fresh || s->epoch == 0;
    if (!fresh) {
        saga__pg_int(&p, s->epoch);
        which = PG_OWN_RENEW;
    } else {
        which = PG_OWN_FRESH;
    }
    saga__pg_int(&p, s->lease_ms);
    int rc = saga__pg_submit_own(s, &which, &p, 1, renew_fin,
                                 (void (*)(void))done, arg, fresh);
    if (rc == SAGA_OK && fresh)
        s->epoch_pending = 1;
    return rc;
}

static void claim_fin(pg_store *s, pg_abatch *b)
{
    saga_own_claimed_cb done = (saga_own_claimed_cb)b->cb;
    int rc = answer_rc(s, b, 2, "own_claim");
    if (rc != SAGA_OK) {
        done(b->arg, rc == SAGA_EFENCED ? rc : SAGA_ESTORE, NULL, 0);
        return;
    }
    int n = PQntuples(b->res[0]);
    if (n == 0) {
        /* Nothing to claim, or no live lease of our own (the second
         * statement says which). */
        int live = PQntuples(b->res[1]) == 1 &&
                   saga__pg_col_int(b->res[1], 0, 0) != 0;
        if (!live)
            rc = saga__pg_failf(s, SAGA_EFENCED,
                                "own_claim: the lease of %s epoch %lld is "
                                "not live",
                                s->owner, (long long)s->epoch);
        done(b->arg, rc, NULL, 0);
        return;
    }
    saga_record *recs = saga_malloc((size_t)n * sizeof *recs);
    if (recs == NULL) {
        /* Claimed and unknown here: the caller gives its lease up. */
        done(b->arg, saga__pg_failf(s, SAGA_ESTORE, "own_claim: out of memory"),
             NULL, 0);
        return;
    }
    for (int i = 0; i < n; i++)
        saga__pg_read_record(b->res[0], i, &recs[i]); /* RETURNING */
    done(b->arg, SAGA_OK, recs, (size_t)n);
    saga_free(recs);
}

static int pg_own_claim_submit(saga_store *self, uint32_t limit,
                               saga_own_claimed_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL || limit == 0)
        return saga__pg_failf(s, SAGA_EINVAL, "own_claim: bad arguments");
    if (s->epoch == 0 || s->epoch_pending)
        return saga__pg_failf(s, SAGA_EFENCED, "own_claim: no lease taken");
    /* The claim, then whether the lease is live (to tell "nothing to
     * claim" from "not ours to claim"), in one round trip. */
    pg_params p[2] = {{0}, {0}};
    saga__pg_text(&p[0], s->owner);
    saga__pg_int(&p[0], s->epoch);
    saga__pg_int(&p[0], limit);
    saga__pg_text(&p[1], s->owner);
    saga__pg_int(&p[1], s->epoch);
    enum pg_stmt which[2] = {PG_OWN_CLAIM, PG_OWN_LIVE};
    return saga__pg_submit_own(s, which, p, 2, claim_fin, (void (*)(void))done,
                               arg, limit);
}

/* ------------------------------------------------------------------------ */
/* Reads on the loop: kv_get (version 7), idem_get and saga_get (version 8) */

/* The answer of a one-statement read: SAGA_OK (a row), SAGA_ENOTFOUND (no
 * row) or SAGA_ESTORE (failed, or no answer). */
static int read_answer(pg_store *s, const pg_abatch *b, const char *what)
{
    if (answer_rc(s, b, 1, what) != SAGA_OK)
        return SAGA_ESTORE;
    return PQntuples(b->res[0]) == 0 ? SAGA_ENOTFOUND : SAGA_OK;
}

int saga__pg_submit_read(pg_store *s, const pg_read *r)
{
    if (r->done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "%s: NULL done", r->what);
    return saga__pg_submit_own(s, r->which, r->p, r->n, r->fin, r->done, r->arg,
                               r->x);
}

/* Send the read @p which, whose one parameter is the text @p key, on the
 * loop; @p fin turns its result into @p done's answer. */
static int submit_key_read(pg_store *s, enum pg_stmt which, const char *key,
                           pg_fin_fn fin, void (*done)(void), void *arg,
                           const char *what)
{
    if (key == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "%s: NULL key", what);
    pg_params p = {0};
    saga__pg_text(&p, key);
    pg_read r = {&which, &p, 1, fin, done, arg, 0, what};
    return saga__pg_submit_read(s, &r);
}

static void kv_fin(pg_store *s, pg_abatch *b)
{
    saga_kv_got_cb done = (saga_kv_got_cb)b->cb;
    int rc = read_answer(s, b, "kv_get");
    size_t len = 0;
    const void *v = rc == SAGA_OK ? saga__pg_col_blob(b->res[0], 0, 0, &len)
                                  : NULL;
    done(b->arg, rc, v, len);
}

static int pg_kv_get_submit(saga_store *self, const char *key,
                            saga_kv_got_cb done, void *arg)
{
    return submit_key_read((pg_store *)self, PG_KV_GET, key, kv_fin,
                           (void (*)(void))done, arg, "kv_get");
}

/* ------------------------------------------------------------------------ */
/* The engine's last round trips on the loop (version 8)                    */

/* What an own_check_submit needs back: the ids asked (a copy), the
 * caller's callback. Freed by check_fin, which runs exactly once. */
typedef struct pg_check_req {
    saga_own_checked_cb done;
    void *arg;
    size_t n;
    unsigned char *lost;
    char ids[]; /* n ids, SAGA_ID_SIZE each */
} pg_check_req;

static void check_fin(pg_store *s, pg_abatch *b)
{
    pg_check_req *q = b->arg;
    int rc = answer_rc(s, b, 2, "own_check");
    for (size_t i = 0; i < q->n; i++)
        q->lost[i] = 1;
    if (rc == SAGA_OK) {
        int live = PQntuples(b->res[0]) == 1 &&
                   saga__pg_col_int(b->res[0], 0, 0) != 0;
        if (!live) {
            rc = saga__pg_failf(s, SAGA_EFENCED,
                                "own_check: the lease of %s epoch %lld is "
                                "not live",
                                s->owner, (long long)s->epoch);
        } else {
            for (int r = 0, nr = PQntuples(b->res[1]); r < nr; r++) {
                const char *id = saga__pg_col_text(b->res[1], r, 0);
                for (size_t i = 0; id && i < q->n; i++)
                    if (strcmp(q->ids + i * SAGA_ID_SIZE, id) == 0)
                        q->lost[i] = 0;
            }
        }
    } else if (rc != SAGA_EFENCED) {
        rc = SAGA_ESTORE;
    }
    q->done(q->arg, rc, rc == SAGA_OK || rc == SAGA_EFENCED ? q->lost : NULL,
            q->n);
    saga_free(q);
}

static int pg_own_check_submit(saga_store *self, const char *const *ids,
                               size_t n, saga_own_checked_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL || (n > 0 && ids == NULL) || n > (1u << 20))
        return saga__pg_failf(s, SAGA_EINVAL, "own_check: bad arguments");
    if (s->epoch == 0 || s->epoch_pending)
        return saga__pg_failf(s, SAGA_ESTORE, "own_check: no lease taken");
    pg_check_req *q = saga_malloc(sizeof *q + n * SAGA_ID_SIZE + n + 1);
    char *arr = ids_literal(ids, n);
    if (q == NULL || arr == NULL) {
        saga_free(q);
        saga_free(arr);
        return saga__pg_failf(s, SAGA_ENOMEM, "own_check: out of memory");
    }
    q->done = done;
    q->arg = arg;
    q->n = n;
    q->lost = (unsigned char *)q->ids + n * SAGA_ID_SIZE;
    for (size_t i = 0; i < n; i++)
        snprintf(q->ids + i * SAGA_ID_SIZE, SAGA_ID_SIZE, "%s",
                 ids[i] ? ids[i] : "");
    /* Whether the lease is live, then which of the ids are still ours, in
     * one round trip. */
    pg_params p[2] = {{0}, {0}};
    saga__pg_text(&p[0], s->owner);
    saga__pg_int(&p[0], s->epoch);
    saga__pg_text(&p[1], arr);
    p[1].fmt[0] = 0;
    saga__pg_text(&p[1], s->owner);
    saga__pg_int(&p[1], s->epoch);
    enum pg_stmt which[2] = {PG_OWN_LIVE, PG_OWN_CHECK};
    int rc = saga__pg_submit_own(s, which, p, 2, check_fin, NULL, q, 0);
    saga_free(arr); /* libpq copied it */
    if (rc != SAGA_OK)
        saga_free(q);
    return rc;
}

static void release_fin(pg_store *s, pg_abatch *b)
{
    (void)s;
    saga_store_done_cb done = (saga_store_done_cb)b->cb;
    done(b->arg, b->rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE);
}

static int pg_own_release_submit(saga_store *self, saga_store_done_cb done,
                                 void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "own_release: NULL done");
    pg_params p = {0};
    saga__pg_text(&p, s->owner);
    saga__pg_int(&p, s->epoch);
    enum pg_stmt which = PG_OWN_RELEASE;
    return saga__pg_submit_own(s, &which, &p, 1, release_fin,
                               (void (*)(void))done, arg, 0);
}

static void idem_fin(pg_store *s, pg_abatch *b)
{
    saga_idem_got_cb done = (saga_idem_got_cb)b->cb;
    int rc = read_answer(s, b, "idem_get");
    const char *id = rc == SAGA_OK ? saga__pg_col_text(b->res[0], 0, 0) : NULL;
    if (rc == SAGA_OK && (id == NULL || strlen(id) > SAGA_ID_LEN)) {
        saga__pg_failf(s, SAGA_ECORRUPT, "idem_get: bad saga id");
        rc = SAGA_ESTORE;
    }
    done(b->arg, rc, rc == SAGA_OK ? id : NULL);
}

static int pg_idem_get_submit(saga_store *self, const char *key,
                              saga_idem_got_cb done, void *arg)
{
    return submit_key_read((pg_store *)self, PG_IDEM_GET, key, idem_fin,
                           (void (*)(void))done, arg, "idem_get");
}

static void get_fin(pg_store *s, pg_abatch *b)
{
    saga_record_got_cb done = (saga_record_got_cb)b->cb;
    int rc = read_answer(s, b, "saga_get");
    saga_record r;
    if (rc == SAGA_OK)
        saga__pg_read_record(b->res[0], 0, &r);
    done(b->arg, rc, rc == SAGA_OK ? &r : NULL);
}

static int pg_saga_get_submit(saga_store *self, const char *id,
                              saga_record_got_cb done, void *arg)
{
    return submit_key_read((pg_store *)self, PG_SAGA_GET, id, get_fin,
                           (void (*)(void))done, arg, "saga_get");
}

/* ------------------------------------------------------------------------ */
/* A saga's journal on the loop (version 13)                                */

/* What a journal_scan_submit needs back: the caller's callback and the
 * saga id the entries point at. Freed by jscan_fin, which runs once. */
typedef struct pg_jscan_req {
    saga_journal_got_cb done;
    void *arg;
    char id[SAGA_ID_SIZE];
} pg_jscan_req;

static void jscan_fin(pg_store *s, pg_abatch *b)
{
    pg_jscan_req *q = b->arg;
    saga_journal_entry *es = NULL;
    size_t n = 0;
    int rc = answer_rc(s, b, 1, "journal_scan");
    if (rc == SAGA_OK)
        rc = saga__pg_journal_entries(s, b->res[0], q->id, &es, &n);
    q->done(q->arg, rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE, es, n);
    saga_free(es);
    saga_free(q);
}

static void jscan_unused(void) {}

static int pg_journal_scan_submit(saga_store *self, const char *saga_id,
                                  saga_journal_got_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (saga_id == NULL || done == NULL || strlen(saga_id) > SAGA_ID_LEN)
        return saga__pg_failf(s, SAGA_EINVAL, "journal_scan: bad argument");
    pg_jscan_req *q = saga_malloc(sizeof *q);
    if (q == NULL)
        return saga__pg_failf(s, SAGA_ENOMEM, "journal_scan: out of memory");
    q->done = done;
    q->arg = arg;
    memcpy(q->id, saga_id, strlen(saga_id) + 1);
    enum pg_stmt which = PG_JOURNAL_SCAN;
    pg_params p = {0};
    saga__pg_text(&p, q->id);
    pg_read r = {&which, &p, 1, jscan_fin, jscan_unused, q, 0, "journal_scan"};
    int rc = saga__pg_submit_read(s, &r);
    if (rc != SAGA_OK)
        saga_free(q);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The purge on the loop (version 12)                                       */

static void purge_fin(pg_store *s, pg_abatch *b)
{
    saga_purged_cb done = (saga_purged_cb)b->cb;
    int rc = answer_rc(s, b, 1, "purge");
    uint64_t n = 0;
    if (rc == SAGA_OK && PQntuples(b->res[0]) == 1)
        n = (uint64_t)saga__pg_col_int(b->res[0], 0, 0);
    done(b->arg, rc == SAGA_OK ? SAGA_OK : SAGA_ESTORE, n);
}

static int pg_purge_submit(saga_store *self, int64_t before_ms,
                           saga_purged_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    if (done == NULL)
        return saga__pg_failf(s, SAGA_EINVAL, "purge: NULL done");
    /* The statements of pg_purge, between two syncs: one implicit
     * transaction, rolled back whole if one fails. Journals and keys
     * first: they find their sagas through the sagas table. */
    pg_params p[4] = {{0}, {0}, {0}, {0}};
    for (int i = 0; i < 4; i++)
        saga__pg_int(&p[i], before_ms);
    enum pg_stmt which[4] = {PG_PURGE_JOURNAL, PG_PURGE_IDEM, PG_PURGE_SAGAS,
                             PG_PURGE_INBOX};
    return saga__pg_submit_own(s, which, p, 4, purge_fin, (void (*)(void))done,
                               arg, 0);
}

void saga__pg_kv_async_init(pg_store *s)
{
    s->base.kv_get_submit = pg_kv_get_submit;
    s->base.idem_get_submit = pg_idem_get_submit;
    s->base.saga_get_submit = pg_saga_get_submit;
    s->base.purge_submit = pg_purge_submit;
    s->base.journal_scan_submit = pg_journal_scan_submit;
}

void saga__pg_own_init(pg_store *s)
{
    s->base.own_renew_submit = pg_own_renew_submit;
    s->base.own_claim_submit = pg_own_claim_submit;
    s->base.own_renew = pg_own_renew;
    s->base.own_claim = pg_own_claim;
    s->base.own_check = pg_own_check;
    s->base.own_release = pg_own_release;
    s->base.own_check_submit = pg_own_check_submit;
    s->base.own_release_submit = pg_own_release_submit;
}

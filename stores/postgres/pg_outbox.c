/*
 * pg_outbox.c — the relay's outbox scan on the loop (store interface
 * version 10, outbox_scan_submit), and who publishes an outbox row when
 * several engines share one schema.
 *
 * Since schema version 6 an outbox row carries the (owner, epoch) of the
 * store that wrote it (NULL, 0 without a lease). With a lease:
 *   - a batch's rows are its epoch's from their commit, and its engine
 *     publishes them then; a batch deletes a published row only while it
 *     is still its epoch's (PG_OUTBOX_DONE_X), and every batch first checks
 *     that its lease is live (PG_OWN_FENCE);
 *   - outbox_scan_submit takes over (PG_OUTBOX_TAKE) the rows whose
 *     writer's lease is not live and whose saga this epoch owns (claimed
 *     just before) or is not active, with FOR UPDATE SKIP LOCKED, and
 *     hands exactly those: a row is handed to one live epoch at a time,
 *     never to two engines at once.
 * Without a lease the store is alone on its schema and hands every
 * pending row, as outbox_scan.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_int.h"

/* Rows in the order they were written (seq, the last column of the
 * take's RETURNING, which has no order of its own). */
typedef struct row_ord {
    int row;
    int64_t seq;
} row_ord;

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const row_ord *)a)->seq, y = ((const row_ord *)b)->seq;
    return x < y ? -1 : x > y;
}

static void scan_fin(pg_store *s, pg_abatch *b)
{
    saga_outbox_got_cb done = (saga_outbox_got_cb)b->cb;
    int take = b->x != 0;
    int rc = b->rc;
    if (rc == SAGA_OK && b->nres != (take ? 2 : 1))
        rc = saga__pg_failf(s, SAGA_ESTORE, "outbox_scan: no answer");
    if (rc != SAGA_OK) {
        done(b->arg, rc == SAGA_EFENCED ? rc : SAGA_ESTORE, NULL, 0);
        return;
    }
    PGresult *res = b->res[0];
    int n = PQntuples(res);
    if (take && n == 0) {
        /* Nothing to take, or no live lease of our own (the second
         * statement says which). */
        int live = PQntuples(b->res[1]) == 1 &&
                   saga__pg_col_int(b->res[1], 0, 0) != 0;
        if (!live)
            rc = saga__pg_failf(s, SAGA_EFENCED,
                                "outbox_scan: the lease of %s epoch %lld is "
                                "not live",
                                s->owner, (long long)s->epoch);
        done(b->arg, rc, NULL, 0);
        return;
    }
    saga_message *m = saga_malloc((size_t)(n ? n : 1) * sizeof *m);
    row_ord *ord = saga_malloc((size_t)(n ? n : 1) * sizeof *ord);
    if (m == NULL || ord == NULL) {
        saga_free(m);
        saga_free(ord);
        /* Taken and unknown here: as a lost answer. */
        done(b->arg,
             saga__pg_failf(s, SAGA_ESTORE, "outbox_scan: out of memory"), NULL,
             0);
        return;
    }
    for (int i = 0; i < n; i++) {
        ord[i].row = i;
        ord[i].seq = take ? saga__pg_col_int(res, i, 5) : i;
    }
    if (take)
        qsort(ord, (size_t)n, sizeof *ord, by_seq);
    for (int i = 0; i < n; i++) {
        int r = ord[i].row;
        m[i].id = saga__pg_col_text(res, r, 0);
        m[i].topic = saga__pg_col_text(res, r, 1);
        m[i].key = saga__pg_col_text(res, r, 2);
        m[i].payload = saga__pg_col_blob(res, r, 3, &m[i].len);
        m[i].created_ms = saga__pg_col_int(res, r, 4);
    }
    saga_free(ord);
    done(b->arg, SAGA_OK, m, (size_t)n);
    saga_free(m);
}

static int pg_outbox_scan_submit(saga_store *self, uint32_t limit,
                                 saga_outbox_got_cb done, void *arg)
{
    pg_store *s = (pg_store *)self;
    pg_params p[2] = {{0}, {0}};
    enum pg_stmt which[2] = {PG_OUTBOX_SCAN, PG_OWN_LIVE};
    pg_read r = {which,        p, 1, scan_fin, (void (*)(void))done, arg, 0,
                 "outbox_scan"};
    if (s->lease_ms) {
        if (s->epoch == 0 || s->epoch_pending)
            return saga__pg_failf(s, SAGA_EFENCED,
                                  "outbox_scan: no lease taken");
        /* The take, then whether the lease is live (to tell "nothing to
         * take" from "not ours to take"), in one round trip. */
        which[0] = PG_OUTBOX_TAKE;
        r.n = 2;
        r.x = 1;
        saga__pg_text(&p[0], s->owner);
        saga__pg_int(&p[0], s->epoch);
        saga__pg_text(&p[1], s->owner);
        saga__pg_int(&p[1], s->epoch);
    }
    if (limit)
        saga__pg_int(&p[0], limit);
    else
        saga__pg_text(&p[0], NULL); /* LIMIT NULL: no limit */
    return saga__pg_submit_read(s, &r);
}

void saga__pg_outbox_init(pg_store *s)
{
    s->base.outbox_scan_submit = pg_outbox_scan_submit;
}

/*
 * store_suite_txn.h — conformance cases for retention and transactions:
 * rollback must undo every kind of write, commit must keep them, and a
 * transaction must read its own writes. Included by store_suite.h only.
 */
#ifndef SAGA_TESTS_STORE_SUITE_TXN_H
#define SAGA_TESTS_STORE_SUITE_TXN_H

static void ssc_purge_only_old_terminal(saga_store *s)
{
    ssc_insert(s, "t1", SAGA_STATE_COMPLETED, 100);
    ssc_insert(s, "t2", SAGA_STATE_COMPENSATED, 100);
    ssc_insert(s, "t3", SAGA_STATE_COMPLETED, 300); /* too recent */
    ssc_insert(s, "t4", SAGA_STATE_COMPLETED, 200); /* not before 200 */
    ssc_insert(s, "f", SAGA_STATE_FAILED, 100);     /* needs an operator */
    ssc_insert(s, "r", SAGA_STATE_RUNNING, 100);
    ssc_insert(s, "c", SAGA_STATE_COMPENSATING, 100);
    const char *ids[] = {"t1", "t2", "t3", "t4", "f", "r", "c"};
    for (int i = 0; i < 7; i++) {
        ssc_journal(s, ids[i], 1, SAGA_JOURNAL_STARTED);
        ssc_journal(s, ids[i], 2, SAGA_JOURNAL_STEP_OK);
    }
    cr_assert_eq(s->idem_put(s, "K1", "t1", 100), SAGA_OK);
    cr_assert_eq(s->idem_put(s, "K2", "t2", 100), SAGA_OK);
    cr_assert_eq(s->idem_put(s, "K3", "t3", 100), SAGA_OK);
    cr_assert_eq(s->idem_put(s, "KR", "r", 100), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "i1", 100, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "i2", 200, NULL, NULL), SAGA_OK);
    ssc_msg(s, "o1", "kept");

    uint64_t n = 99;
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->purge(s, 200, &n), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(n, 2);

    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "f r c t4 t3 ");
    cr_assert_str_eq(ssc_jscan(s, "t1", &t), "");
    cr_assert_str_eq(ssc_jscan(s, "t2", &t), "");
    cr_assert_str_eq(ssc_jscan(s, "t3", &t), "t3/1:1:0:1:0:10:- "
                                             "t3/2:2:1:1:0:20:- ");
    cr_assert_str_eq(ssc_jscan(s, "r", &t), "r/1:1:0:1:0:10:- "
                                            "r/2:2:1:1:0:20:- ");
    char id[SAGA_ID_SIZE];
    cr_assert_eq(s->idem_get(s, "K1", id), SAGA_ENOTFOUND);
    cr_assert_eq(s->idem_get(s, "K2", id), SAGA_ENOTFOUND);
    cr_assert_eq(s->idem_get(s, "K3", id), SAGA_OK);
    cr_assert_eq(s->idem_get(s, "KR", id), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "i1", 300, NULL, NULL), SAGA_OK,
                 "old inbox entry purged");
    cr_assert_eq(s->inbox_claim(s, "i2", 300, NULL, NULL), SAGA_EDUP);
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "o1:order-events:k:kept:7 ");
    /* Outside a transaction purge runs in its own; NULL count is fine. */
    cr_assert_eq(s->purge(s, 200, &n), SAGA_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(s->purge(s, INT64_MAX, NULL), SAGA_OK);
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "f r c ",
                     "non-terminal sagas are never purged");
}

/* The committed baseline of the transaction cases. */
static void ssc_seed(saga_store *s)
{
    saga_record a = ssc_rec("A", SAGA_STATE_RUNNING, 5);
    a.idem_key = "KA";
    a.data = "alpha";
    a.data_len = 5;
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->saga_put(s, &a, SAGA_PUT_INSERT), SAGA_OK);
    ssc_insert(s, "T", SAGA_STATE_COMPLETED, 1);
    ssc_journal(s, "A", 1, SAGA_JOURNAL_STARTED);
    ssc_journal(s, "T", 1, SAGA_JOURNAL_STARTED);
    ssc_journal(s, "T", 2, SAGA_JOURNAL_COMPLETED);
    cr_assert_eq(s->idem_put(s, "KA", "A", 5), SAGA_OK);
    cr_assert_eq(s->idem_put(s, "KT", "T", 1), SAGA_OK);
    ssc_msg(s, "o1", "first");
    cr_assert_eq(s->inbox_claim(s, "i1", 1, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->inbox_reply(s, "i1", "r1", 2), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k1", "v1", 2), SAGA_OK);
    cr_assert_eq(s->commit(s), SAGA_OK, "%s", s->errmsg(s));
}

/* One write of every kind, over the seeded baseline. */
static void ssc_write_all(saga_store *s)
{
    uint64_t n = 0;
    ssc_insert(s, "B", SAGA_STATE_RUNNING, 7);
    saga_record a = ssc_rec("A", SAGA_STATE_COMPENSATING, 5);
    a.data = "changed";
    a.data_len = 7;
    cr_assert_eq(s->saga_put(s, &a, SAGA_PUT_DATA), SAGA_OK);
    a.error = "then again";
    cr_assert_eq(s->saga_put(s, &a, 0), SAGA_OK);
    ssc_journal(s, "A", 2, SAGA_JOURNAL_STEP_FAIL);
    ssc_journal(s, "B", 1, SAGA_JOURNAL_STARTED);
    cr_assert_eq(s->idem_put(s, "KB", "B", 7), SAGA_OK);
    ssc_msg(s, "o2", "second");
    cr_assert_eq(s->outbox_done(s, "o1"), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "i2", 50, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->inbox_reply(s, "i1", "r1-changed", 10), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k1", "v1-changed", 10), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k2", "new", 3), SAGA_OK);
    cr_assert_eq(s->purge(s, 10, &n), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_eq(n, 1, "T is purged, with its journal, key and i1");
}

static void ssc_txn_rollback_undoes_everything(saga_store *s)
{
    static ssc_text before, during, after;
    ssc_seed(s);
    ssc_dump(s, &before);
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_write_all(s);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    ssc_dump(s, &after);
    cr_assert_str_eq(after.buf, before.buf);
    /* The same writes, committed, do change the dump. */
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_write_all(s);
    cr_assert_eq(s->commit(s), SAGA_OK);
    ssc_dump(s, &during);
    cr_assert_str_neq(during.buf, before.buf);
}

static void ssc_txn_commit_persists(saga_store *s)
{
    static ssc_text t, again;
    ssc_seed(s);
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_write_all(s);
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->rollback(s), SAGA_OK, "nothing left to roll back");
    ssc_dump(s, &t);
    cr_assert_str_eq(
        t.buf, "[A checkout 1 2 0 0 0 5 5 0 0 - then again 7:4629e89b]"
               "[B checkout 1 1 0 0 0 7 7 0 0 - - 1:850b939f]"
               "A/1:1:0:1:0:10:- A/2:3:1:1:0:20:- |KA=A"
               "B/1:1:0:1:0:10:- |KB=B|KT=SAGA_ENOTFOUND|KX=SAGA_ENOTFOUND"
               "|outbox o2:order-events:k:second:7 |k1=v1-changed|k2=new"
               "|i1=(SAGA_OK)|i2=(SAGA_EDUP)|i3=(SAGA_OK)");
    ssc_dump(s, &again);
    cr_assert_str_eq(again.buf, t.buf, "a dump changes nothing");
}

static void ssc_txn_reads_own_writes(saga_store *s)
{
    ssc_text t;
    char id[SAGA_ID_SIZE];
    ssc_seed(s);
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "X", SAGA_STATE_RUNNING, 2);
    cr_assert_eq(s->saga_get(s, "X", NULL, NULL), SAGA_OK);
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ACTIVE, &t), "X A ");
    ssc_journal(s, "X", 1, SAGA_JOURNAL_STARTED);
    cr_assert_str_eq(ssc_jscan(s, "X", &t), "X/1:1:0:1:0:10:- ");
    cr_assert_eq(s->idem_put(s, "KX", "X", 2), SAGA_OK);
    cr_assert_eq(s->idem_get(s, "KX", id), SAGA_OK);
    cr_assert_str_eq(id, "X");
    ssc_msg(s, "o9", "nine");
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "o1:order-events:k:first:7 "
                                          "o9:order-events:k:nine:7 ");
    cr_assert_eq(s->inbox_claim(s, "i3", 2, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "i3", 2, NULL, NULL), SAGA_EDUP);
    cr_assert_eq(s->kv_put(s, "k2", "mine", 4), SAGA_OK);
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->kv_get(s, "k2", ssc_blob_cb, &t), SAGA_OK);
    cr_assert_str_eq(t.buf, "mine");
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->saga_get(s, "X", NULL, NULL), SAGA_OK);
}

static void ssc_txn_rollback_chained_writes(saga_store *s)
{
    static ssc_text before, after;
    ssc_seed(s);
    ssc_dump(s, &before);
    cr_assert_eq(s->begin(s), SAGA_OK);
    for (int i = 0; i < 3; i++) {
        saga_record a = ssc_rec("A", SAGA_STATE_RUNNING, 5);
        a.step = i;
        a.data = "xyz";
        a.data_len = (size_t)i;
        cr_assert_eq(s->saga_put(s, &a, i % 2 ? 0 : SAGA_PUT_DATA), SAGA_OK);
        cr_assert_eq(s->kv_put(s, "k1", "v", (size_t)i % 2), SAGA_OK);
    }
    ssc_insert(s, "B", SAGA_STATE_RUNNING, 1);
    saga_record b = ssc_rec("B", SAGA_STATE_FAILED, 1);
    cr_assert_eq(s->saga_put(s, &b, 0), SAGA_OK);
    ssc_msg(s, "o2", "x");
    cr_assert_eq(s->outbox_done(s, "o2"), SAGA_OK);
    ssc_msg(s, "o2", "y");
    cr_assert_eq(s->outbox_done(s, "o1"), SAGA_OK);
    ssc_msg(s, "o1", "requeued");
    cr_assert_eq(s->inbox_reply(s, "i1", "a", 1), SAGA_OK);
    cr_assert_eq(s->inbox_reply(s, "i1", "bb", 2), SAGA_OK);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    ssc_dump(s, &after);
    cr_assert_str_eq(after.buf, before.buf);
    /* The store is usable after a rollback: B can be inserted for real. */
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "B", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->saga_get(s, "B", NULL, NULL), SAGA_OK);
}

static void ssc_txn_purge_rolls_back(saga_store *s)
{
    static ssc_text before, after;
    uint64_t n = 0;
    ssc_seed(s);
    ssc_dump(s, &before);
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->purge(s, 1000, &n), SAGA_OK);
    cr_assert_eq(n, 1);
    ssc_journal(s, "T", 3, SAGA_JOURNAL_OPERATOR_RETRY); /* after its purge */
    cr_assert_eq(s->idem_put(s, "KT", "X", 3), SAGA_OK, "key freed");
    cr_assert_eq(s->rollback(s), SAGA_OK);
    ssc_dump(s, &after);
    cr_assert_str_eq(after.buf, before.buf);
}

static void ssc_txn_misuse_is_reported(saga_store *s)
{
    cr_assert_neq(s->commit(s), SAGA_OK, "commit without begin");
    cr_assert_str_neq(s->errmsg(s), "");
    cr_assert_eq(s->rollback(s), SAGA_OK, "rollback without begin: no-op");
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_neq(s->begin(s), SAGA_OK, "nested begin");
    ssc_insert(s, "a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->commit(s), SAGA_OK, "the open transaction survives");
    cr_assert_eq(s->saga_get(s, "a", NULL, NULL), SAGA_OK);
}

typedef struct ssc_writer {
    saga_store *s;
    int visits;
} ssc_writer;

static int ssc_writer_rec_cb(const saga_record *r, void *arg)
{
    ssc_writer *w = arg;
    saga_record u = *r;
    char id[SAGA_ID_SIZE];
    snprintf(id, sizeof id, "%s", r->id);
    u.id = id;
    u.flags = 42;
    u.error = "touched";
    w->visits++;
    cr_assert_eq(w->s->saga_put(w->s, &u, 0), SAGA_OK, "%s",
                 w->s->errmsg(w->s));
    ssc_journal(w->s, id, 1, SAGA_JOURNAL_STARTED);
    cr_assert_eq(w->s->saga_get(w->s, "s0", NULL, NULL), SAGA_OK);
    return 0;
}

static int ssc_writer_msg_cb(const saga_message *m, void *arg)
{
    ssc_writer *w = arg;
    char id[64];
    snprintf(id, sizeof id, "%s", m->id);
    w->visits++;
    cr_assert_eq(w->s->outbox_done(w->s, id), SAGA_OK);
    return 0;
}

/* The engine's relay and recovery may write from a scan callback. */
static void ssc_writes_from_scan_callbacks(saga_store *s)
{
    char id[8];
    ssc_text t;
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "s%d", i);
        ssc_insert(s, id, SAGA_STATE_RUNNING, i);
        ssc_msg(s, id, "p");
    }
    ssc_writer w = {s, 0};
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, ssc_writer_rec_cb, &w),
                 SAGA_OK, "%s", s->errmsg(s));
    cr_assert_eq(w.visits, 5, "each saga visited once");
    w.visits = 0;
    cr_assert_eq(s->outbox_scan(s, 0, ssc_writer_msg_cb, &w), SAGA_OK);
    cr_assert_eq(w.visits, 5);
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "");
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "s4", &c), SAGA_OK);
    cr_assert_eq(c.r.flags, 42);
    cr_assert_str_eq(c.err, "touched");
    free(c.data);
    cr_assert_str_eq(ssc_jscan(s, "s3", &t), "s3/1:1:0:1:0:10:- ");
}

static int ssc_count_cb(const saga_record *r, void *arg)
{
    ++*(int *)arg;
    return 0;
}

static void ssc_many_sagas(saga_store *s)
{
    enum { N = 20000 };
    char id[SAGA_ID_SIZE];
    cr_assert_eq(s->begin(s), SAGA_OK);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "%08x%024d", (unsigned)i * 2654435761u, i);
        ssc_insert(s, id, i % 3 ? SAGA_STATE_RUNNING : SAGA_STATE_COMPLETED,
                   N - i);
        ssc_journal(s, id, 1, SAGA_JOURNAL_STARTED);
    }
    cr_assert_eq(s->commit(s), SAGA_OK);
    int n = 0;
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ACTIVE, ssc_count_cb, &n),
                 SAGA_OK);
    cr_assert_eq(n, N - (N + 2) / 3);
    for (int i = 0; i < N; i += 997) {
        snprintf(id, sizeof id, "%08x%024d", (unsigned)i * 2654435761u, i);
        ssc_copy c;
        cr_assert_eq(ssc_get(s, id, &c), SAGA_OK);
        cr_assert_eq(c.r.created_ms, N - i);
        free(c.data);
    }
}

#endif /* SAGA_TESTS_STORE_SUITE_TXN_H */

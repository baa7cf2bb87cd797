/*
 * store_suite_cases.h — conformance cases for each slot on its own.
 * Included by store_suite.h only.
 */
#ifndef SAGA_TESTS_STORE_SUITE_CASES_H
#define SAGA_TESTS_STORE_SUITE_CASES_H

static void ssc_has_every_slot(saga_store *s)
{
    cr_assert_eq(s->version, SAGA_STORE_VERSION);
    cr_assert(s->begin && s->commit && s->rollback && s->saga_put &&
              s->saga_get && s->saga_scan && s->journal_append &&
              s->journal_scan && s->idem_put && s->idem_get && s->purge &&
              s->outbox_put && s->outbox_scan && s->outbox_done &&
              s->inbox_claim && s->inbox_reply && s->kv_get && s->kv_put &&
              s->native_handle && s->errmsg && s->close);
    cr_assert_not_null(s->errmsg(s), "errmsg is never NULL");
}

static void ssc_put_get_every_field(saga_store *s)
{
    static const unsigned char data[] = {0x81, 0xa1, 'k', 0xa1, 'v', 0, 7};
    saga_record r = {"0123456789abcdef0123456789abcdef",
                     "checkout",
                     7,
                     SAGA_STATE_COMPENSATING,
                     -1,
                     4,
                     SAGA_REC_BACKWARD | 1,
                     -5,
                     1700000000123,
                     1700000009999,
                     INT64_MAX,
                     "idem-1",
                     "payment declined",
                     data,
                     sizeof data};
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_OK);
    ssc_copy c;
    cr_assert_eq(ssc_get(s, r.id, &c), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_eq(c.n, 1);
    cr_assert_str_eq(c.id, r.id);
    cr_assert_str_eq(c.def, "checkout");
    cr_assert_eq(c.r.def_version, 7);
    cr_assert_eq(c.r.state, SAGA_STATE_COMPENSATING);
    cr_assert_eq(c.r.step, -1);
    cr_assert_eq(c.r.attempt, 4);
    cr_assert_eq(c.r.flags, SAGA_REC_BACKWARD | 1);
    cr_assert_eq(c.r.created_ms, -5);
    cr_assert_eq(c.r.updated_ms, 1700000000123);
    cr_assert_eq(c.r.due_ms, 1700000009999);
    cr_assert_eq(c.r.deadline_ms, INT64_MAX);
    cr_assert_str_eq(c.idem, "idem-1");
    cr_assert_str_eq(c.err, "payment declined");
    cr_assert_eq(c.r.data_len, sizeof data);
    cr_assert_arr_eq(c.data, data, sizeof data);
    free(c.data);
    /* Unsigned fields keep their full range. */
    r.id = "u";
    r.def_version = UINT32_MAX;
    r.attempt = UINT32_MAX;
    r.flags = UINT32_MAX;
    r.step = INT32_MIN;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_OK);
    cr_assert_eq(ssc_get(s, "u", &c), SAGA_OK);
    cr_assert(c.r.def_version == UINT32_MAX && c.r.attempt == UINT32_MAX &&
              c.r.flags == UINT32_MAX && c.r.step == INT32_MIN);
    free(c.data);
}

static void ssc_put_get_null_strings_empty_data(saga_store *s)
{
    saga_record r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    r.data = NULL;
    r.data_len = 0;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_OK);
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "a", &c), SAGA_OK);
    cr_assert_null(c.r.idem_key);
    cr_assert_null(c.r.error);
    cr_assert_eq(c.r.data_len, 0);
    free(c.data);
    /* A NULL callback is allowed: an existence check. */
    cr_assert_eq(s->saga_get(s, "a", NULL, NULL), SAGA_OK);
    cr_assert_eq(s->saga_get(s, "nope", NULL, NULL), SAGA_ENOTFOUND);
    cr_assert_eq(ssc_get(s, "nope", &c), SAGA_ENOTFOUND);
    cr_assert_eq(c.n, 0, "no callback on error");
}

static void ssc_put_get_large_data(saga_store *s)
{
    size_t n = 3u << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)(i * 31 + (i >> 11));
    saga_record r = ssc_rec("big", SAGA_STATE_RUNNING, 1);
    r.data = big;
    r.data_len = n;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_OK);
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "big", &c), SAGA_OK);
    cr_assert_eq(c.r.data_len, n);
    cr_assert(memcmp(c.data, big, n) == 0);
    free(c.data);
    free(big);
}

static void ssc_put_rejects_bad_input(saga_store *s)
{
    saga_record r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->saga_put(s, NULL, SAGA_PUT_INSERT), SAGA_EINVAL);
    r.state = (saga_state)9;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_EINVAL);
    cr_assert_str_neq(s->errmsg(s), "", "a failure sets errmsg");
    r = ssc_rec("0123456789abcdef0123456789abcdef0", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_EINVAL, "id > 32");
    r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    r.def_name = NULL;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_EINVAL);
    r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    r.data = NULL;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_EINVAL);
    cr_assert_eq(s->saga_get(s, "a", NULL, NULL), SAGA_ENOTFOUND);
    cr_assert_eq(s->idem_put(s, "k", "0123456789abcdef0123456789abcdef0", 1),
                 SAGA_EINVAL, "an id idem_get could not return");
}

static void ssc_insert_existing_is_dup(saga_store *s)
{
    ssc_insert(s, "a", SAGA_STATE_RUNNING, 1);
    saga_record r = ssc_rec("a", SAGA_STATE_FAILED, 2);
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_EDUP);
    cr_assert_str_neq(s->errmsg(s), "");
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "a", &c), SAGA_OK);
    cr_assert_eq(c.r.state, SAGA_STATE_RUNNING, "the first insert stays");
    free(c.data);
}

static void ssc_update_missing_is_notfound(saga_store *s)
{
    saga_record r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->saga_put(s, &r, 0), SAGA_ENOTFOUND);
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_DATA), SAGA_ENOTFOUND);
    cr_assert_eq(s->saga_get(s, "a", NULL, NULL), SAGA_ENOTFOUND);
}

static void ssc_update_without_data_keeps_data_and_key(saga_store *s)
{
    saga_record r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    r.idem_key = "key-1";
    r.data = "one";
    r.data_len = 3;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT), SAGA_OK);
    r.state = SAGA_STATE_COMPENSATING;
    r.step = 2;
    r.attempt = 3;
    r.updated_ms = 50;
    r.error = "boom";
    r.idem_key = "key-2";
    r.data = "two!";
    r.data_len = 4;
    cr_assert_eq(s->saga_put(s, &r, 0), SAGA_OK, "%s", s->errmsg(s));
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "a", &c), SAGA_OK);
    cr_assert_eq(c.r.state, SAGA_STATE_COMPENSATING);
    cr_assert_eq(c.r.step, 2);
    cr_assert_eq(c.r.attempt, 3);
    cr_assert_eq(c.r.updated_ms, 50);
    cr_assert_str_eq(c.err, "boom");
    cr_assert_str_eq(c.idem, "key-1", "update without DATA keeps idem_key");
    cr_assert_eq(c.r.data_len, 3);
    cr_assert_arr_eq(c.data, "one", 3);
    r.error = NULL;
    free(c.data);
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_DATA), SAGA_OK);
    cr_assert_eq(ssc_get(s, "a", &c), SAGA_OK);
    cr_assert_null(c.r.error, "error cleared");
    cr_assert_str_eq(c.idem, "key-2");
    cr_assert_eq(c.r.data_len, 4);
    cr_assert_arr_eq(c.data, "two!", 4);
    free(c.data);
}

static void ssc_scan_by_mask_oldest_first(saga_store *s)
{
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "", "empty");
    ssc_insert(s, "c30", SAGA_STATE_RUNNING, 30);
    ssc_insert(s, "d10", SAGA_STATE_COMPLETED, 10);
    ssc_insert(s, "a20", SAGA_STATE_COMPENSATING, 20);
    ssc_insert(s, "z20", SAGA_STATE_RUNNING, 20); /* tie: insertion order */
    ssc_insert(s, "b20", SAGA_STATE_FAILED, 20);
    ssc_insert(s, "e05", SAGA_STATE_COMPENSATED, 5);
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t),
                     "e05 d10 a20 z20 b20 c30 ");
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ACTIVE, &t), "a20 z20 c30 ");
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_BIT(SAGA_STATE_RUNNING), &t),
                     "z20 c30 ");
    cr_assert_str_eq(ssc_scan(s,
                              SAGA_STATE_BIT(SAGA_STATE_COMPLETED) |
                                  SAGA_STATE_BIT(SAGA_STATE_COMPENSATED) |
                                  SAGA_STATE_BIT(SAGA_STATE_FAILED),
                              &t),
                     "e05 d10 b20 ");
    cr_assert_str_eq(ssc_scan(s, 0, &t), "");
}

static void ssc_scan_order_survives_updates_and_stops(saga_store *s)
{
    ssc_insert(s, "x", SAGA_STATE_RUNNING, 5);
    ssc_insert(s, "y", SAGA_STATE_RUNNING, 5);
    ssc_insert(s, "w", SAGA_STATE_RUNNING, 5);
    saga_record r = ssc_rec("x", SAGA_STATE_COMPENSATING, 5);
    r.updated_ms = 99;
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_DATA), SAGA_OK);
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ACTIVE, &t), "x y w ");
    memset(&t, 0, sizeof t);
    t.stop_after = 2;
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, ssc_id_cb, &t), SAGA_OK,
                 "stopping early is not an error");
    cr_assert_str_eq(t.buf, "x y ");
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, NULL, NULL), SAGA_EINVAL);
}

static void ssc_journal_in_seq_order_and_dup(saga_store *s)
{
    ssc_text t;
    cr_assert_str_eq(ssc_jscan(s, "A", &t), "", "unknown id: nothing");
    ssc_journal(s, "A", 2, SAGA_JOURNAL_STEP_OK);
    ssc_journal(s, "B", 1, SAGA_JOURNAL_STARTED);
    ssc_journal(s, "A", 1, SAGA_JOURNAL_STARTED);
    saga_journal_entry e = {"A", 3,   SAGA_JOURNAL_STEP_FAIL, 1, 2,
                            100, 250, "card declined"};
    cr_assert_eq(s->journal_append(s, &e), SAGA_OK);
    cr_assert_str_eq(ssc_jscan(s, "A", &t), "A/1:1:0:1:0:10:- A/2:2:1:1:0:20:- "
                                            "A/3:3:1:2:100:250:card declined ");
    cr_assert_str_eq(ssc_jscan(s, "B", &t), "B/1:1:0:1:0:10:- ");
    e.kind = SAGA_JOURNAL_COMPLETED;
    cr_assert_eq(s->journal_append(s, &e), SAGA_EDUP);
    cr_assert_str_neq(s->errmsg(s), "");
    cr_assert_str_eq(ssc_jscan(s, "A", &t),
                     "A/1:1:0:1:0:10:- A/2:2:1:1:0:20:- "
                     "A/3:3:1:2:100:250:card declined ",
                     "a duplicate changes nothing");
    memset(&t, 0, sizeof t);
    t.stop_after = 1;
    cr_assert_eq(s->journal_scan(s, "A", ssc_journal_cb, &t), SAGA_OK);
    cr_assert_eq(t.visits, 1);
}

static void ssc_idem_put_get_dup(saga_store *s)
{
    char id[SAGA_ID_SIZE];
    cr_assert_eq(s->idem_get(s, "k", id), SAGA_ENOTFOUND);
    cr_assert_eq(s->idem_put(s, "k", "0123456789abcdef0123456789abcdef", 5),
                 SAGA_OK);
    cr_assert_eq(s->idem_put(s, "k2", "b", 5), SAGA_OK);
    cr_assert_eq(s->idem_put(s, "k", "other", 6), SAGA_EDUP);
    cr_assert_eq(s->idem_put(s, "k", "0123456789abcdef0123456789abcdef", 6),
                 SAGA_EDUP, "even to the same saga");
    cr_assert_eq(s->idem_get(s, "k", id), SAGA_OK);
    cr_assert_str_eq(id, "0123456789abcdef0123456789abcdef");
    cr_assert_eq(s->idem_get(s, "k2", id), SAGA_OK);
    cr_assert_str_eq(id, "b");
}

static void ssc_outbox_order_limit_done(saga_store *s)
{
    ssc_text t;
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "");
    ssc_msg(s, "m3", "three");
    ssc_msg(s, "m1", "one");
    saga_message m = {"m2", "payment-events", NULL, NULL, 0, 9};
    cr_assert_eq(s->outbox_put(s, &m), SAGA_OK, "NULL key, empty payload");
    m.payload = "x";
    m.len = 1;
    m.id = "m1";
    cr_assert_eq(s->outbox_put(s, &m), SAGA_EDUP);
    cr_assert_str_eq(ssc_oscan(s, 2, &t),
                     "m3:order-events:k:three:7 m1:order-events:k:one:7 ");
    cr_assert_str_eq(ssc_oscan(s, 0, &t),
                     "m3:order-events:k:three:7 m1:order-events:k:one:7 "
                     "m2:payment-events:-::9 ",
                     "limit 0 is no limit");
    cr_assert_eq(s->outbox_done(s, "m1"), SAGA_OK);
    cr_assert_eq(s->outbox_done(s, "unknown"), SAGA_OK);
    cr_assert_str_eq(ssc_oscan(s, 10, &t),
                     "m3:order-events:k:three:7 m2:payment-events:-::9 ");
    ssc_msg(s, "m1", "again"); /* done ids may be queued again, at the end */
    cr_assert_str_eq(ssc_oscan(s, 0, &t),
                     "m3:order-events:k:three:7 m2:payment-events:-::9 "
                     "m1:order-events:k:again:7 ");
    memset(&t, 0, sizeof t);
    t.stop_after = 1;
    cr_assert_eq(s->outbox_scan(s, 0, ssc_msg_cb, &t), SAGA_OK);
    cr_assert_eq(t.visits, 1);
}

static void ssc_inbox_claim_and_reply(saga_store *s)
{
    ssc_text t;
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->inbox_reply(s, "m1", "r", 1), SAGA_ENOTFOUND);
    cr_assert_eq(s->inbox_claim(s, "m1", 10, ssc_blob_cb, &t), SAGA_OK);
    cr_assert_str_eq(t.buf, "", "no callback for a new message");
    cr_assert_eq(s->inbox_claim(s, "m1", 11, ssc_blob_cb, &t), SAGA_EDUP);
    cr_assert_str_eq(t.buf, "", "claimed with an empty reply");
    cr_assert_eq(s->inbox_reply(s, "m1", "{\"ok\":true}", 11), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "m1", 12, ssc_blob_cb, &t), SAGA_EDUP);
    cr_assert_str_eq(t.buf, "{\"ok\":true}");
    cr_assert_eq(s->inbox_claim(s, "m1", 13, NULL, NULL), SAGA_EDUP);
    cr_assert_eq(s->inbox_claim(s, "m2", 13, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->inbox_reply(s, "m2", NULL, 0), SAGA_OK);
}

static void ssc_kv_get_put_overwrite(saga_store *s)
{
    ssc_text t;
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->kv_get(s, "k", ssc_blob_cb, &t), SAGA_ENOTFOUND);
    cr_assert_eq(s->kv_put(s, "k", "hello", 5), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "k", ssc_blob_cb, &t), SAGA_OK);
    cr_assert_str_eq(t.buf, "hello");
    cr_assert_eq(s->kv_put(s, "k", "a much longer value", 19), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "e", NULL, 0), SAGA_OK);
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->kv_get(s, "k", ssc_blob_cb, &t), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "e", ssc_blob_cb, &t), SAGA_OK);
    cr_assert_str_eq(t.buf, "a much longer value");
    cr_assert_eq(s->kv_get(s, "k", NULL, NULL), SAGA_OK);
}

/* Version 2 (optional slots): kv_scan by prefix, kv_del. Entries come in
 * no particular order, so count them and sum their value lengths. */
typedef struct ssc_kvsum {
    int n;
    size_t bytes;
    int stop_after;
    char seen[8][16];
} ssc_kvsum;

static int ssc_kv_cb(const char *key, const void *val, size_t len, void *arg)
{
    ssc_kvsum *k = arg;
    cr_assert_not_null(key);
    cr_assert_not_null(val, "values are never NULL");
    if (k->n < 8)
        snprintf(k->seen[k->n], sizeof k->seen[0], "%s", key);
    k->n++;
    k->bytes += len;
    return k->stop_after && k->n >= k->stop_after;
}

static void ssc_kv_scan_prefix_and_del(saga_store *s)
{
    if (s->kv_scan == NULL || s->kv_del == NULL)
        return; /* optional */
    cr_assert_eq(s->kv_put(s, "b/1", "ab", 2), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "b/2", "cde", 3), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "b", "x", 1), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "c/1", "yyyy", 4), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "b/3", NULL, 0), SAGA_OK);
    ssc_kvsum k = {0};
    cr_assert_eq(s->kv_scan(s, "b/", ssc_kv_cb, &k), SAGA_OK);
    cr_assert_eq(k.n, 3);
    cr_assert_eq(k.bytes, 5);
    memset(&k, 0, sizeof k);
    cr_assert_eq(s->kv_scan(s, "", ssc_kv_cb, &k), SAGA_OK);
    cr_assert_eq(k.n, 5);
    memset(&k, 0, sizeof k);
    k.stop_after = 2;
    cr_assert_eq(s->kv_scan(s, "", ssc_kv_cb, &k), SAGA_OK);
    cr_assert_eq(k.n, 2, "the callback stops the scan");
    cr_assert_eq(s->kv_scan(s, NULL, ssc_kv_cb, &k), SAGA_EINVAL);
    /* Deleting: in a transaction (undone by rollback) and without. */
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->kv_del(s, "b/1"), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "b/1", NULL, NULL), SAGA_ENOTFOUND);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "b/1", NULL, NULL), SAGA_OK);
    cr_assert_eq(s->kv_del(s, "b/1"), SAGA_OK);
    cr_assert_eq(s->kv_del(s, "nope"), SAGA_OK, "unknown keys are fine");
    memset(&k, 0, sizeof k);
    cr_assert_eq(s->kv_scan(s, "b/", ssc_kv_cb, &k), SAGA_OK);
    cr_assert_eq(k.n, 2);
    cr_assert_eq(s->kv_get(s, "b/1", NULL, NULL), SAGA_ENOTFOUND);
}

/* Version 2: one level of savepoint inside a transaction. */
static void ssc_savepoint_rollback_and_release(saga_store *s)
{
    if (s->savepoint == NULL || s->savepoint_rollback == NULL ||
        s->savepoint_release == NULL)
        return; /* optional */
    cr_assert_eq(s->savepoint(s), SAGA_ESTORE, "no transaction");
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k1", "before", 6), SAGA_OK);
    cr_assert_eq(s->savepoint(s), SAGA_OK);
    cr_assert_eq(s->savepoint(s), SAGA_ESTORE, "one level only");
    cr_assert_eq(s->kv_put(s, "k1", "inside", 6), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k2", "inside", 6), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "m-sp", 1, NULL, NULL), SAGA_OK);
    saga_message m = {"o-sp", "t", NULL, "p", 1, 1};
    cr_assert_eq(s->outbox_put(s, &m), SAGA_OK);
    cr_assert_eq(s->savepoint_rollback(s), SAGA_OK);
    cr_assert_eq(s->savepoint_rollback(s), SAGA_ESTORE, "dropped");
    ssc_text t;
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->kv_get(s, "k1", ssc_blob_cb, &t), SAGA_OK);
    cr_assert_str_eq(t.buf, "before");
    cr_assert_eq(s->kv_get(s, "k2", NULL, NULL), SAGA_ENOTFOUND);
    /* A second savepoint, released: its writes stay. */
    cr_assert_eq(s->savepoint(s), SAGA_OK);
    cr_assert_eq(s->kv_put(s, "k3", "kept", 4), SAGA_OK);
    cr_assert_eq(s->savepoint_release(s), SAGA_OK);
    cr_assert_eq(s->savepoint_release(s), SAGA_ESTORE, "dropped");
    cr_assert_eq(s->commit(s), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "k3", NULL, NULL), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "k1", NULL, NULL), SAGA_OK);
    cr_assert_eq(s->kv_get(s, "k2", NULL, NULL), SAGA_ENOTFOUND);
    /* The rolled-back claim and message are gone after the commit. */
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->inbox_claim(s, "m-sp", 1, NULL, NULL), SAGA_OK);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    memset(&t, 0, sizeof t);
    cr_assert_eq(s->outbox_scan(s, 0, ssc_msg_cb, &t), SAGA_OK);
    cr_assert_eq(t.len, 0, "outbox: %s", t.buf);
    /* A whole-transaction rollback also ends an open savepoint. */
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->savepoint(s), SAGA_OK);
    cr_assert_eq(s->rollback(s), SAGA_OK);
    cr_assert_eq(s->begin(s), SAGA_OK);
    cr_assert_eq(s->savepoint(s), SAGA_OK);
    cr_assert_eq(s->savepoint_release(s), SAGA_OK);
    cr_assert_eq(s->commit(s), SAGA_OK);
}

/* Version 3 (optional): a whole batch in one call, all or nothing. */
static void ssc_write_batch_whole_or_nothing(saga_store *s)
{
    if (s->version < 3 || s->write_batch == NULL)
        return; /* optional */
    ssc_insert(s, "old", SAGA_STATE_RUNNING, 1);
    saga_record recs[2] = {ssc_rec("new", SAGA_STATE_RUNNING, 2),
                           ssc_rec("old", SAGA_STATE_COMPLETED, 1)};
    unsigned int flags[2] = {SAGA_PUT_INSERT, 0};
    saga_idem_entry idem = {"key-new", "new", 2};
    saga_message msg = {"m1", "topic", "new", "p", 1, 2};
    saga_journal_entry je = {"new", 1, SAGA_JOURNAL_STARTED, -1, 0, 0, 2, NULL};
    saga_batch_writes w = {recs, flags, 2,   &idem, 1,    &msg, 1,
                           NULL, 0,     &je, 1,     NULL, 0};
    cr_assert_eq(s->write_batch(s, &w), SAGA_OK, "%s", s->errmsg(s));
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "new", &c), SAGA_OK);
    free(c.data);
    cr_assert_eq(ssc_get(s, "old", &c), SAGA_OK);
    cr_assert_eq(c.r.state, SAGA_STATE_COMPLETED);
    free(c.data);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(s->idem_get(s, "key-new", id), SAGA_OK);
    ssc_text t;
    cr_assert_str_eq(ssc_jscan(s, "new", &t), "new/1:1:-1:0:0:2:- ");
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "m1:topic:new:p:2 ");

    /* A duplicate key fails the whole batch: the other saga, its message
     * and its journal entry are not written either. */
    saga_record r2 = ssc_rec("other", SAGA_STATE_RUNNING, 3);
    unsigned int f2 = SAGA_PUT_INSERT;
    saga_idem_entry dup = {"key-new", "other", 3};
    saga_message m2 = {"m2", "topic", "other", "q", 1, 3};
    const char *done[] = {"m1"};
    saga_journal_entry j2 = {"other", 1,   SAGA_JOURNAL_STARTED, -1, 0, 0,
                             3,       NULL};
    saga_batch_writes w2 = {&r2,  &f2, 1,   &dup, 1,    &m2, 1,
                            done, 1,   &j2, 1,    NULL, 0};
    cr_assert_eq(s->write_batch(s, &w2), SAGA_EDUP);
    cr_assert_eq(ssc_get(s, "other", &c), SAGA_ENOTFOUND);
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "m1:topic:new:p:2 ",
                     "nothing of it remains");

    /* An update of a missing saga: SAGA_ENOTFOUND, nothing written. */
    saga_record r3 = ssc_rec("ghost", SAGA_STATE_RUNNING, 4);
    unsigned int f3 = 0;
    w2 = (saga_batch_writes){&r3,  &f3, 1,    NULL, 0,    NULL, 0,
                             done, 1,   NULL, 0,    NULL, 0};
    cr_assert_eq(s->write_batch(s, &w2), SAGA_ENOTFOUND);
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "m1:topic:new:p:2 ");
    /* The store is usable afterwards, and done ids remove messages. */
    w2 = (saga_batch_writes){NULL, NULL, 0,    NULL, 0,    NULL, 0,
                             done, 1,    NULL, 0,    NULL, 0};
    cr_assert_eq(s->write_batch(s, &w2), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_str_eq(ssc_oscan(s, 0, &t), "");
}

/* The value of @p key as text ("<none>" when absent). */
static const char *ssc_kv_text(saga_store *s, const char *key, ssc_text *t)
{
    memset(t, 0, sizeof *t);
    int rc = s->kv_get(s, key, ssc_blob_cb, t);
    if (rc == SAGA_ENOTFOUND)
        ssc_cat(t, "<none>");
    else
        cr_assert_eq(rc, SAGA_OK, "%s", s->errmsg(s));
    return t->buf;
}

/* Version 13: a batch's key-value writes (put, delete, expectations),
 * all or nothing with the rest of the batch. */
static void ssc_write_batch_kv(saga_store *s)
{
    if (s->version < 13 || s->write_batch == NULL)
        return; /* optional */
    ssc_text t;
    saga_record r = ssc_rec("kv1", SAGA_STATE_RUNNING, 1);
    unsigned int f = SAGA_PUT_INSERT;
    saga_kv_write kv[2] = {{"a", "1", 1, 0, NULL, 0},
                           {"b", "2", 1, 0, NULL, 0}};
    saga_batch_writes w = {&r,   &f, 1,    NULL, 0,  NULL, 0,
                           NULL, 0,  NULL, 0,    kv, 2};
    cr_assert_eq(s->write_batch(s, &w), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_str_eq(ssc_kv_text(s, "a", &t), "1");
    cr_assert_str_eq(ssc_kv_text(s, "b", &t), "2");

    /* A delete (val NULL), and a put expected to find the key absent. */
    saga_kv_write k2[2] = {{"b", NULL, 0, 0, NULL, 0},
                           {"c", "3", 1, SAGA_KV_EXPECT, NULL, 0}};
    w = (saga_batch_writes){NULL, NULL, 0,    NULL, 0,  NULL, 0,
                            NULL, 0,    NULL, 0,    k2, 2};
    cr_assert_eq(s->write_batch(s, &w), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_str_eq(ssc_kv_text(s, "b", &t), "<none>");
    cr_assert_str_eq(ssc_kv_text(s, "c", &t), "3");

    /* An expectation not met fails the whole batch: the saga, the other
     * key-value writes, nothing remains. */
    saga_record r2 = ssc_rec("kv2", SAGA_STATE_RUNNING, 2);
    saga_kv_write k3[3] = {{"d", "4", 1, 0, NULL, 0},
                           {"a", "5", 1, SAGA_KV_EXPECT, "9", 1},
                           {"c", NULL, 0, 0, NULL, 0}};
    w = (saga_batch_writes){&r2,  &f, 1,    NULL, 0,  NULL, 0,
                            NULL, 0,  NULL, 0,    k3, 3};
    cr_assert_eq(s->write_batch(s, &w), SAGA_EBUSY);
    ssc_copy c;
    cr_assert_eq(ssc_get(s, "kv2", &c), SAGA_ENOTFOUND,
                 "nothing of it remains");
    cr_assert_str_eq(ssc_kv_text(s, "a", &t), "1");
    cr_assert_str_eq(ssc_kv_text(s, "c", &t), "3");
    cr_assert_str_eq(ssc_kv_text(s, "d", &t), "<none>");
    /* Expecting absence of a key that exists fails too. */
    saga_kv_write k4 = {"a", "6", 1, SAGA_KV_EXPECT, NULL, 0};
    w = (saga_batch_writes){NULL, NULL, 0,    NULL, 0,   NULL, 0,
                            NULL, 0,    NULL, 0,    &k4, 1};
    cr_assert_eq(s->write_batch(s, &w), SAGA_EBUSY);
    cr_assert_str_eq(ssc_kv_text(s, "a", &t), "1");

    /* The expectation met: written. */
    saga_kv_write k5 = {"a", "7", 1, SAGA_KV_EXPECT, "1", 1};
    w = (saga_batch_writes){NULL, NULL, 0,    NULL, 0,   NULL, 0,
                            NULL, 0,    NULL, 0,    &k5, 1};
    cr_assert_eq(s->write_batch(s, &w), SAGA_OK, "%s", s->errmsg(s));
    cr_assert_str_eq(ssc_kv_text(s, "a", &t), "7");
    /* A malformed write: SAGA_EINVAL, nothing written. */
    saga_kv_write k6 = {NULL, "8", 1, 0, NULL, 0};
    w = (saga_batch_writes){NULL, NULL, 0,    NULL, 0,   NULL, 0,
                            NULL, 0,    NULL, 0,    &k6, 1};
    cr_assert_eq(s->write_batch(s, &w), SAGA_EINVAL);
    cr_assert_str_eq(ssc_kv_text(s, "a", &t), "7");
}

#endif /* SAGA_TESTS_STORE_SUITE_CASES_H */

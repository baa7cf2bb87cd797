/*
 * store_suite.h — the store conformance suite. Every store plug-in must
 * pass it, as every nng transport passes NUTS_DECLARE_TRAN_TESTS:
 *
 *   static int my_setup(saga_store **out) { return my_store_new(out); }
 *   SAGA_STORE_CONFORMANCE(my_store, my_setup)
 *
 * expands to one Criterion Test(my_store, <case>) per case below, each on
 * a fresh store that is closed after the test. A store that needs cleanup
 * after close (a temp file) uses SAGA_STORE_CONFORMANCE_EX(name, setup,
 * teardown), where teardown is `void teardown(void)`.
 *
 * The cases are plain functions taking the store (cases in this file and
 * in store_suite_txn.h), so a failure points at the line of the case.
 */
#ifndef SAGA_TESTS_STORE_SUITE_H
#define SAGA_TESTS_STORE_SUITE_H

#include <criterion/criterion.h>
#include <saga/saga.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*ssc_setup_fn)(saga_store **out);

/* Files that include this header for its helpers (ssc_seed, ssc_dump)
 * without instantiating the suite leave cases unused: that is fine. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static saga_record ssc_rec(const char *id, saga_state state, int64_t created)
{
    saga_record r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.def_name = "checkout";
    r.def_version = 1;
    r.state = state;
    r.created_ms = created;
    r.updated_ms = created;
    r.data = "\x80"; /* an empty msgpack map */
    r.data_len = 1;
    return r;
}

static void ssc_insert(saga_store *s, const char *id, saga_state st,
                       int64_t created)
{
    saga_record r = ssc_rec(id, st, created);
    cr_assert_eq(s->saga_put(s, &r, SAGA_PUT_INSERT | SAGA_PUT_DATA), SAGA_OK,
                 "insert %s: %s", id, s->errmsg(s));
}

static void ssc_journal(saga_store *s, const char *id, uint32_t seq,
                        saga_journal_kind ev)
{
    saga_journal_entry e = {id, seq, ev,       (int32_t)seq - 1,
                            1,  0,   seq * 10, NULL};
    cr_assert_eq(s->journal_append(s, &e), SAGA_OK, "journal %s/%u: %s", id,
                 seq, s->errmsg(s));
}

static void ssc_msg(saga_store *s, const char *id, const char *payload)
{
    saga_message m = {id, "order-events", "k", payload, strlen(payload), 7};
    cr_assert_eq(s->outbox_put(s, &m), SAGA_OK, "outbox %s: %s", id,
                 s->errmsg(s));
}

/* A deep copy of one record, for assertions after the callback. */
typedef struct ssc_copy {
    int n;
    saga_record r;
    char id[SAGA_ID_SIZE + 1], def[64], idem[64], err[256];
    unsigned char *data;
} ssc_copy;

static int ssc_copy_cb(const saga_record *r, void *arg)
{
    ssc_copy *c = arg;
    c->n++;
    c->r = *r;
    snprintf(c->id, sizeof c->id, "%s", r->id);
    snprintf(c->def, sizeof c->def, "%s", r->def_name);
    snprintf(c->idem, sizeof c->idem, "%s", r->idem_key ? r->idem_key : "");
    snprintf(c->err, sizeof c->err, "%s", r->error ? r->error : "");
    free(c->data);
    cr_assert_not_null(r->data, "data is never NULL");
    c->data = malloc(r->data_len + 1);
    memcpy(c->data, r->data, r->data_len);
    c->r.data = c->data;
    return 0;
}

static int ssc_get(saga_store *s, const char *id, ssc_copy *c)
{
    memset(c, 0, sizeof *c);
    return s->saga_get(s, id, ssc_copy_cb, c);
}

/* Text accumulator: scans and dumps render what they visit. */
typedef struct ssc_text {
    char buf[16384];
    size_t len;
    int stop_after; /* callbacks return 1 after this many visits; 0 = never */
    int visits;
} ssc_text;

static void ssc_cat(ssc_text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < sizeof t->buf - t->len, "text overflow");
    t->len += (size_t)n;
}

static int ssc_visit(ssc_text *t)
{
    t->visits++;
    return t->stop_after && t->visits >= t->stop_after;
}

static uint32_t ssc_sum(const void *p, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 16777619u;
    return h;
}

static int ssc_id_cb(const saga_record *r, void *arg)
{
    ssc_cat(arg, "%s ", r->id);
    return ssc_visit(arg);
}

static int ssc_full_cb(const saga_record *r, void *arg)
{
    ssc_cat(arg, "[%s %s %u %d %d %u %u %lld %lld %lld %lld %s %s %zu:%08x]",
            r->id, r->def_name, r->def_version, (int)r->state, r->step,
            r->attempt, r->flags, (long long)r->created_ms,
            (long long)r->updated_ms, (long long)r->due_ms,
            (long long)r->deadline_ms, r->idem_key ? r->idem_key : "-",
            r->error ? r->error : "-", r->data_len,
            ssc_sum(r->data, r->data_len));
    return ssc_visit(arg);
}

static int ssc_journal_cb(const saga_journal_entry *e, void *arg)
{
    ssc_cat(arg, "%s/%u:%d:%d:%u:%lld:%lld:%s ", e->saga_id, e->seq,
            (int)e->kind, e->step, e->attempt, (long long)e->started_ms,
            (long long)e->at_ms, e->error ? e->error : "-");
    return ssc_visit(arg);
}

static int ssc_msg_cb(const saga_message *m, void *arg)
{
    cr_assert_not_null(m->payload);
    ssc_cat(arg, "%s:%s:%s:%.*s:%lld ", m->id, m->topic, m->key ? m->key : "-",
            (int)m->len, (const char *)m->payload, (long long)m->created_ms);
    return ssc_visit(arg);
}

static void ssc_blob_cb(const void *buf, size_t len, void *arg)
{
    cr_assert_not_null(buf, "blobs are never NULL");
    ssc_cat(arg, "%.*s", (int)len, (const char *)buf);
}

static const char *ssc_scan(saga_store *s, unsigned mask, ssc_text *t)
{
    memset(t, 0, sizeof *t);
    cr_assert_eq(s->saga_scan(s, mask, ssc_id_cb, t), SAGA_OK);
    return t->buf;
}

static const char *ssc_jscan(saga_store *s, const char *id, ssc_text *t)
{
    memset(t, 0, sizeof *t);
    cr_assert_eq(s->journal_scan(s, id, ssc_journal_cb, t), SAGA_OK);
    return t->buf;
}

static const char *ssc_oscan(saga_store *s, uint32_t limit, ssc_text *t)
{
    memset(t, 0, sizeof *t);
    cr_assert_eq(s->outbox_scan(s, limit, ssc_msg_cb, t), SAGA_OK);
    return t->buf;
}

/* Everything visible through the vtable, for the names the transaction
 * cases use. Inbox entries can only be seen by claiming them, so that
 * part runs in a transaction that is rolled back. */
static void ssc_dump(saga_store *s, ssc_text *t)
{
    static const char *const ids[] = {"A", "B", "T", "X"};
    static const char *const keys[] = {"KA", "KB", "KT", "KX"};
    static const char *const msgs[] = {"i1", "i2", "i3"};
    static const char *const kvs[] = {"k1", "k2"};
    memset(t, 0, sizeof *t);
    cr_assert_eq(s->saga_scan(s, SAGA_STATE_MASK_ALL, ssc_full_cb, t), SAGA_OK);
    for (int i = 0; i < 4; i++) {
        char id[SAGA_ID_SIZE] = "";
        cr_assert_eq(s->journal_scan(s, ids[i], ssc_journal_cb, t), SAGA_OK);
        int rc = s->idem_get(s, keys[i], id);
        ssc_cat(t, "|%s=%s", keys[i], rc == SAGA_OK ? id : saga_err_name(rc));
    }
    ssc_cat(t, "|outbox ");
    cr_assert_eq(s->outbox_scan(s, 0, ssc_msg_cb, t), SAGA_OK);
    for (int i = 0; i < 2; i++) {
        ssc_cat(t, "|%s=", kvs[i]);
        int rc = s->kv_get(s, kvs[i], ssc_blob_cb, t);
        ssc_cat(t, "%s", rc == SAGA_OK ? "" : saga_err_name(rc));
    }
    cr_assert_eq(s->begin(s), SAGA_OK);
    for (int i = 0; i < 3; i++) {
        ssc_cat(t, "|%s=", msgs[i]);
        int rc = s->inbox_claim(s, msgs[i], 1, ssc_blob_cb, t);
        ssc_cat(t, "(%s)", saga_err_name(rc));
    }
    cr_assert_eq(s->rollback(s), SAGA_OK);
}

#include "store_suite_cases.h"
#include "store_suite_txn.h"

#pragma GCC diagnostic pop

/* ------------------------------------------------------------------------ */
/* The macro                                                                */

#define SSC__CASES(T, name)                                                    \
    T(name, has_every_slot)                                                    \
    T(name, put_get_every_field)                                               \
    T(name, put_get_null_strings_empty_data)                                   \
    T(name, put_get_large_data)                                                \
    T(name, put_rejects_bad_input)                                             \
    T(name, insert_existing_is_dup)                                            \
    T(name, update_missing_is_notfound)                                        \
    T(name, update_without_data_keeps_data_and_key)                            \
    T(name, scan_by_mask_oldest_first)                                         \
    T(name, scan_order_survives_updates_and_stops)                             \
    T(name, journal_in_seq_order_and_dup)                                      \
    T(name, idem_put_get_dup)                                                  \
    T(name, purge_only_old_terminal)                                           \
    T(name, outbox_order_limit_done)                                           \
    T(name, inbox_claim_and_reply)                                             \
    T(name, kv_get_put_overwrite)                                              \
    T(name, kv_scan_prefix_and_del)                                            \
    T(name, savepoint_rollback_and_release)                                    \
    T(name, write_batch_whole_or_nothing)                                      \
    T(name, write_batch_kv)                                                    \
    T(name, txn_commit_persists)                                               \
    T(name, txn_reads_own_writes)                                              \
    T(name, txn_rollback_undoes_everything)                                    \
    T(name, txn_rollback_chained_writes)                                       \
    T(name, txn_purge_rolls_back)                                              \
    T(name, txn_misuse_is_reported)                                            \
    T(name, writes_from_scan_callbacks)                                        \
    T(name, many_sagas)

#define SSC__TEST(name, c)                                                     \
    Test(name, c, .init = name##__ssc_init, .fini = name##__ssc_fini)          \
    {                                                                          \
        ssc_##c(name##__ssc_store);                                            \
    }

#define SAGA_STORE_CONFORMANCE_EX(name, setup_fn, teardown_fn)                 \
    static saga_store *name##__ssc_store;                                      \
    static void name##__ssc_init(void)                                         \
    {                                                                          \
        int rc_ = (setup_fn)(&name##__ssc_store);                              \
        cr_assert_eq(rc_, SAGA_OK, "store setup: %s", saga_strerror(rc_));     \
        cr_assert_not_null(name##__ssc_store);                                 \
    }                                                                          \
    static void name##__ssc_fini(void)                                         \
    {                                                                          \
        saga_store_free(name##__ssc_store);                                    \
        name##__ssc_store = NULL;                                              \
        teardown_fn();                                                         \
    }                                                                          \
    SSC__CASES(SSC__TEST, name)

static inline void ssc_no_teardown(void) {}

#define SAGA_STORE_CONFORMANCE(name, setup_fn)                                 \
    SAGA_STORE_CONFORMANCE_EX(name, setup_fn, ssc_no_teardown)

#endif /* SAGA_TESTS_STORE_SUITE_H */

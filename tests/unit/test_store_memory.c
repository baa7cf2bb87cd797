/*
 * test_store_memory.c — the in-memory store under allocation failure, in
 * the manner of jansson's test_chaos: fail the Nth allocation for every N
 * until a whole transaction gets through. Each failing slot must return
 * SAGA_ENOMEM, change nothing that a rollback cannot undo, and leak
 * nothing (the ASan build checks that).
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "conformance/store_suite.h"

static long g_left = -1; /* allocations that still succeed; -1 = all */

static void *chaos_malloc(size_t n)
{
    if (g_left == 0)
        return NULL;
    if (g_left > 0)
        g_left--;
    return malloc(n);
}

static void *chaos_realloc(void *p, size_t n)
{
    if (g_left == 0)
        return NULL;
    if (g_left > 0)
        g_left--;
    return realloc(p, n);
}

/* Criterion runs each test in its own process, so swapping the allocator
 * here affects this test only; both wrap malloc, so memory moves freely
 * between them. */
static void init(void)
{
    cr_assert_eq(saga_replace_allocator(chaos_malloc, chaos_realloc, free),
                 SAGA_OK);
}

TestSuite(memory_chaos, .init = init);

#define TRY(call)                                                              \
    do {                                                                       \
        if ((rc = (call)) != SAGA_OK)                                          \
            goto out;                                                          \
    } while (0)

static int count_rec(const saga_record *r, void *arg)
{
    ++*(int *)arg;
    return 0;
}
static int count_j(const saga_journal_entry *e, void *arg)
{
    ++*(int *)arg;
    return 0;
}
static int count_m(const saga_message *m, void *arg)
{
    ++*(int *)arg;
    return 0;
}

/* One transaction with a write of every kind, and reads inside it. */
static int workload(saga_store *s)
{
    uint64_t n;
    int rc, seen = 0;
    saga_record b = ssc_rec("B", SAGA_STATE_RUNNING, 7);
    saga_record a = ssc_rec("A", SAGA_STATE_COMPENSATING, 5);
    a.data = "changed";
    a.data_len = 7;
    saga_journal_entry j = {"B", 1, SAGA_JOURNAL_STARTED, -1, 0, 0, 1, "why"};
    saga_journal_entry j2 = {"A", 2, SAGA_JOURNAL_STEP_OK, 0, 1, 0, 2, NULL};
    saga_message m = {"o2", "t", NULL, "p", 1, 3};
    TRY(s->begin(s));
    TRY(s->saga_put(s, &b, SAGA_PUT_INSERT));
    TRY(s->saga_put(s, &a, SAGA_PUT_DATA));
    TRY(s->journal_append(s, &j));
    TRY(s->journal_append(s, &j2));
    TRY(s->idem_put(s, "KB", "B", 7));
    TRY(s->outbox_put(s, &m));
    TRY(s->outbox_done(s, "o1"));
    TRY(s->inbox_claim(s, "i2", 50, NULL, NULL));
    TRY(s->inbox_reply(s, "i1", "r1-changed", 10));
    TRY(s->kv_put(s, "k1", "v1-changed", 10));
    TRY(s->kv_put(s, "k2", "new", 3));
    TRY(s->saga_scan(s, SAGA_STATE_MASK_ALL, count_rec, &seen));
    TRY(s->journal_scan(s, "A", count_j, &seen));
    TRY(s->outbox_scan(s, 0, count_m, &seen));
    TRY(s->purge(s, 10, &n));
    return s->commit(s);
out:
    s->rollback(s);
    return rc;
}

Test(memory_chaos, every_allocation_fails_once)
{
    static ssc_text before, after, done;
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    ssc_seed(s);
    ssc_dump(s, &before);
    long n;
    for (n = 0; n < 10000; n++) {
        g_left = n;
        int rc = workload(s);
        g_left = -1;
        if (rc == SAGA_OK)
            break;
        cr_assert_eq(rc, SAGA_ENOMEM, "n=%ld: %s", n, saga_strerror(rc));
        cr_assert_str_neq(s->errmsg(s), "");
        ssc_dump(s, &after);
        cr_assert_str_eq(after.buf, before.buf, "n=%ld", n);
    }
    cr_assert_gt(n, 5, "the workload allocates");
    cr_assert_lt(n, 10000);
    ssc_dump(s, &done);
    cr_assert_str_neq(done.buf, before.buf, "and finally commits");
    saga_store_free(s);
}

Test(memory_chaos, constructor_and_autocommit_writes)
{
    saga_store *s = NULL;
    g_left = 0;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_ENOMEM);
    cr_assert_null(s);
    g_left = -1;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    /* Outside a transaction each write stands alone: it either happens
     * whole or returns SAGA_ENOMEM and changes nothing. */
    for (long n = 0; n < 64; n++) {
        char key[16];
        snprintf(key, sizeof key, "k%ld", n);
        g_left = n % 3;
        int rc = s->kv_put(s, key, "v", 1);
        g_left = -1;
        cr_assert(rc == SAGA_OK || rc == SAGA_ENOMEM);
        cr_assert_eq(s->kv_get(s, key, NULL, NULL),
                     rc == SAGA_OK ? SAGA_OK : SAGA_ENOTFOUND, "n=%ld", n);
    }
    saga_store_free(s);
}

/*
 * test_store_faults.c — stores under injected faults.
 *
 * The fault_store wrapper must be transparent when no fault is armed (it
 * passes the whole conformance suite) and must honour the commit contract
 * when one is. The SQLite store, run over the fault VFS, must turn a real
 * failed write or fsync into SAGA_ESTORE with nothing of the batch left,
 * and stay usable once the disk "recovers".
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "fault_store.h"
#include "fault_vfs.h"
#include "store_suite.h"
#include "tmpdir.h"

/* ------------------------------------------------------------------------ */
/* fault_store                                                              */

static int wrapped_setup(saga_store **out)
{
    saga_store *inner;
    int rc = saga_store_memory_new(&inner);
    if (rc == SAGA_OK && (rc = fault_store_new(out, inner, NULL)) != SAGA_OK)
        saga_store_free(inner);
    return rc;
}

SAGA_STORE_CONFORMANCE(fault_wrapper, wrapped_setup)

static saga_store *S;
static fault_store *F;
static tmpdir T;

static void wrap_memory(void)
{
    saga_store *inner;
    cr_assert_eq(saga_store_memory_new(&inner), SAGA_OK);
    cr_assert_eq(fault_store_new(&S, inner, &F), SAGA_OK);
}

static void fini(void)
{
    saga_store_free(S);
    S = NULL;
    tmpdir_remove(&T);
}

TestSuite(fault_store, .init = wrap_memory, .fini = fini);

Test(fault_store, counts_and_fails_nth_call)
{
    fault_store_fail_nth(F, FAULT_SAGA_PUT, 2);
    saga_record r = ssc_rec("a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(S->saga_put(S, &r, SAGA_PUT_INSERT), SAGA_OK);
    r.id = "b";
    cr_assert_eq(S->saga_put(S, &r, SAGA_PUT_INSERT), SAGA_ESTORE);
    cr_assert_str_eq(S->errmsg(S), "injected I/O error (saga_put)");
    cr_assert_eq(S->saga_get(S, "b", NULL, NULL), SAGA_ENOTFOUND,
                 "an injected failure does not reach the inner store");
    cr_assert_eq(S->saga_put(S, &r, SAGA_PUT_INSERT), SAGA_OK, "one-shot");
    cr_assert_eq(S->saga_put(S, &r, SAGA_PUT_INSERT), SAGA_EDUP);
    cr_assert_str_neq(S->errmsg(S), "injected I/O error (saga_put)",
                      "later errors come from the inner store");
    cr_assert_eq(fault_store_calls(F, FAULT_SAGA_PUT), 4);
    cr_assert_eq(fault_store_calls(F, FAULT_SAGA_GET), 1);
    cr_assert_eq(fault_store_injected(F), 1);
    cr_assert_null(S->native_handle(S));
    cr_assert_not_null(fault_store_inner(F));
}

Test(fault_store, failed_commit_leaves_nothing)
{
    cr_assert_eq(S->begin(S), SAGA_OK);
    ssc_insert(S, "a", SAGA_STATE_RUNNING, 1);
    ssc_journal(S, "a", 1, SAGA_JOURNAL_STARTED);
    ssc_msg(S, "o1", "x");
    fault_store_fail_always(F, FAULT_COMMIT, 1);
    cr_assert_eq(S->commit(S), SAGA_ESTORE);
    cr_assert_eq(S->rollback(S), SAGA_OK, "rollback after a failed commit");
    ssc_text t;
    cr_assert_eq(S->saga_get(S, "a", NULL, NULL), SAGA_ENOTFOUND);
    cr_assert_str_eq(ssc_jscan(S, "a", &t), "");
    cr_assert_str_eq(ssc_oscan(S, 0, &t), "");
    /* Every commit fails until cleared. */
    cr_assert_eq(S->begin(S), SAGA_OK);
    cr_assert_eq(S->commit(S), SAGA_ESTORE);
    fault_store_clear(F);
    cr_assert_eq(S->begin(S), SAGA_OK);
    ssc_insert(S, "a", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(S->commit(S), SAGA_OK);
    cr_assert_eq(S->saga_get(S, "a", NULL, NULL), SAGA_OK);
    cr_assert_eq(fault_store_calls(F, FAULT_COMMIT), 3);
}

Test(fault_store, fail_all_slots_until_cleared)
{
    fault_store_fail_always(F, FAULT_ALL, 1);
    cr_assert_eq(S->begin(S), SAGA_ESTORE);
    cr_assert_eq(S->kv_put(S, "k", "v", 1), SAGA_ESTORE);
    cr_assert_eq(S->inbox_claim(S, "m", 1, NULL, NULL), SAGA_ESTORE);
    fault_store_fail_always(F, FAULT_KV_PUT, 0);
    cr_assert_eq(S->kv_put(S, "k", "v", 1), SAGA_OK);
    cr_assert_eq(S->kv_get(S, "k", NULL, NULL), SAGA_ESTORE);
    fault_store_clear(F);
    cr_assert_eq(S->kv_get(S, "k", NULL, NULL), SAGA_OK);
    cr_assert_eq(fault_store_injected(F), 4);
}

/* ------------------------------------------------------------------------ */
/* The SQLite store over the fault VFS                                      */

static saga_store *open_vfs(const char *path)
{
    saga_sqlite_options o;
    saga_sqlite_options_init(&o, SAGA_SQLITE_OPTIONS_VERSION);
    o.vfs = FAULT_VFS_NAME;
    saga_store *s = NULL;
    int rc = saga_store_sqlite_open(&s, path, &o);
    cr_assert_eq(rc, SAGA_OK, "open: %s", saga_strerror(rc));
    return s;
}

static void vfs_init(void)
{
    cr_assert_eq(fault_vfs_register(), SQLITE_OK);
    cr_assert_eq(tmpdir_make(&T), 0);
    S = open_vfs(tmpdir_path(&T, "f.db"));
    ssc_seed(S);
}

TestSuite(fault_vfs, .init = vfs_init, .fini = fini);

/* The seeded baseline plus what the batch below would add. */
static void batch(saga_store *s)
{
    ssc_insert(s, "B", SAGA_STATE_RUNNING, 7);
    ssc_journal(s, "B", 1, SAGA_JOURNAL_STARTED);
    cr_assert_eq(s->idem_put(s, "KB", "B", 7), SAGA_OK);
    ssc_msg(s, "o2", "second");
    cr_assert_eq(s->kv_put(s, "k2", "new", 3), SAGA_OK);
}

/* Arm a fault, commit a batch, expect SAGA_ESTORE and an unchanged store,
 * then check that the store works again once the fault is cleared. */
static void commit_fails_cleanly(void (*arm)(void))
{
    static ssc_text before, after;
    ssc_dump(S, &before);
    cr_assert_eq(S->begin(S), SAGA_OK);
    batch(S);
    uint64_t injected = fault_vfs_injected();
    arm();
    cr_assert_eq(S->commit(S), SAGA_ESTORE);
    cr_assert_gt(fault_vfs_injected(), injected, "the VFS failed the I/O");
    cr_assert_str_neq(S->errmsg(S), "");
    cr_assert_eq(S->rollback(S), SAGA_OK);
    fault_vfs_clear();
    ssc_dump(S, &after);
    cr_assert_str_eq(after.buf, before.buf, "nothing of the batch remains");
    /* Usable again: the same batch now commits. */
    cr_assert_eq(S->begin(S), SAGA_OK, "%s", S->errmsg(S));
    batch(S);
    cr_assert_eq(S->commit(S), SAGA_OK, "%s", S->errmsg(S));
    cr_assert_eq(S->saga_get(S, "B", NULL, NULL), SAGA_OK);
    /* And it is on disk: a fresh connection sees it. */
    saga_store_free(S);
    S = open_vfs(tmpdir_path(&T, "f.db"));
    ssc_text t;
    cr_assert_str_eq(ssc_scan(S, SAGA_STATE_MASK_ALL, &t), "T A B ");
    cr_assert_str_eq(ssc_oscan(S, 0, &t), "o1:order-events:k:first:7 "
                                          "o2:order-events:k:second:7 ");
}

static void arm_sync_ioerr(void) { fault_vfs_fail_sync(0, SQLITE_IOERR); }
static void arm_write_full(void) { fault_vfs_fail_write(0, SQLITE_FULL); }
static void arm_write_ioerr(void) { fault_vfs_fail_write(0, SQLITE_IOERR); }
static void arm_second_write(void) { fault_vfs_fail_write(1, SQLITE_IOERR); }

Test(fault_vfs, commit_with_failing_fsync)
{
    commit_fails_cleanly(arm_sync_ioerr);
}

Test(fault_vfs, commit_with_disk_full) { commit_fails_cleanly(arm_write_full); }

Test(fault_vfs, commit_with_write_error)
{
    commit_fails_cleanly(arm_write_ioerr);
}

Test(fault_vfs, commit_failing_after_first_page)
{
    commit_fails_cleanly(arm_second_write);
}

/* A write that fails inside the transaction (a large blob spills the page
 * cache to the WAL) can make SQLite roll the whole transaction back at
 * once. The store must then refuse further writes in it rather than let
 * them commit one by one, and the commit must fail. */
Test(fault_vfs, failure_inside_transaction_never_half_commits)
{
    static ssc_text before, after;
    static unsigned char big[8u << 20];
    ssc_dump(S, &before);
    cr_assert_eq(S->begin(S), SAGA_OK);
    ssc_insert(S, "B", SAGA_STATE_RUNNING, 7);
    fault_vfs_fail_write(0, SQLITE_FULL);
    saga_record r = ssc_rec("C", SAGA_STATE_RUNNING, 8);
    r.data = big;
    r.data_len = sizeof big;
    cr_assert_eq(S->saga_put(S, &r, SAGA_PUT_INSERT), SAGA_ESTORE);
    fault_vfs_clear();
    /* SQLite rolls back on SQLITE_FULL; B's insert is gone with it, so
     * the store must refuse to go on in autocommit. */
    saga_journal_entry e = {"B", 1, SAGA_JOURNAL_STARTED, -1, 0, 0, 1, NULL};
    cr_assert_eq(S->journal_append(S, &e), SAGA_ESTORE);
    cr_assert(strstr(S->errmsg(S), "rolled back") != NULL, "%s", S->errmsg(S));
    cr_assert_eq(S->commit(S), SAGA_ESTORE);
    cr_assert_eq(S->rollback(S), SAGA_OK);
    ssc_dump(S, &after);
    cr_assert_str_eq(after.buf, before.buf);
    cr_assert_eq(S->begin(S), SAGA_OK, "usable: %s", S->errmsg(S));
    ssc_insert(S, "D", SAGA_STATE_RUNNING, 9);
    cr_assert_eq(S->commit(S), SAGA_OK);
}

/* Fail the Nth write of a commit for every N until the commit succeeds
 * (jansson's test_chaos, for I/O): each time all-or-nothing. */
Test(fault_vfs, every_write_of_a_commit_fails_once)
{
    static ssc_text before, after;
    ssc_dump(S, &before);
    int n;
    for (n = 0; n < 200; n++) {
        cr_assert_eq(S->begin(S), SAGA_OK, "n=%d: %s", n, S->errmsg(S));
        batch(S);
        fault_vfs_fail_write(n, SQLITE_IOERR);
        int rc = S->commit(S);
        fault_vfs_clear();
        if (rc == SAGA_OK)
            break;
        cr_assert_eq(rc, SAGA_ESTORE);
        ssc_dump(S, &after);
        cr_assert_str_eq(after.buf, before.buf, "n=%d", n);
    }
    cr_assert_gt(n, 0, "the commit writes at least once");
    cr_assert_lt(n, 200);
    cr_assert_eq(S->saga_get(S, "B", NULL, NULL), SAGA_OK);
}

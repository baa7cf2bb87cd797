/*
 * test_admin.c — definition shapes in the store, operator actions on a
 * running engine (retry, compensate, resolve, journaled with reason and
 * actor), and saga_op_run() applying a request to the store when no engine
 * takes it. The engine-takes-it path across processes is in
 * tests/operate/cli.sh.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "harness.h"

static harness H;

static void setup(void) { h_init(&H); }
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0);
}
TestSuite(admin, .init = setup, .fini = teardown);

static void boot(const char *kinds)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.comp_retry.max_attempts = 2;
    o.comp_retry.jitter = SAGA_JITTER_NONE;
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, kinds, &o);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
}

/* Drive a saga until it stops moving (timers included). */
static void settle(void)
{
    for (int i = 0; i < 20; i++) {
        h_pump(&H);
        h_advance(&H, 60000);
    }
}

static const saga_journal_entry *
last_event(const char *id, saga_journal_kind ev, saga_info **keep)
{
    cr_assert_eq(saga_get(H.e, id, keep), SAGA_OK);
    const saga_journal_entry *found = NULL;
    for (size_t i = 0; i < saga_info_journal_count(*keep); i++)
        if (saga_info_journal(*keep, i)->kind == ev)
            found = saga_info_journal(*keep, i);
    return found;
}

static int list_cb(const char *name, uint32_t version, void *arg)
{
    cr_expect_str_eq(name, "t");
    cr_expect_eq(version, 1);
    (*(int *)arg)++;
    return 0;
}

Test(admin, start_records_the_shape)
{
    boot("cpr");
    saga_store *s = saga_engine_store(H.e);
    saga_shape *sh;
    cr_assert_eq(saga_shape_load(&sh, s, "t", 0), SAGA_OK);
    cr_expect_str_eq(saga_shape_name(sh), "t");
    cr_expect_eq(saga_shape_version(sh), 1);
    cr_assert_eq(saga_shape_step_count(sh), 3);
    saga_shape_step_info st;
    cr_assert_eq(saga_shape_step(sh, 0, &st), SAGA_OK);
    cr_expect_str_eq(st.name, "s0");
    cr_expect_eq(st.kind, SAGA_STEP_COMPENSATABLE);
    cr_expect_eq(st.has_compensation, 1);
    cr_expect_eq(st.comp_max_attempts, 2);
    cr_assert_eq(saga_shape_step(sh, 1, &st), SAGA_OK);
    cr_expect_eq(st.kind, SAGA_STEP_PIVOT);
    cr_expect_eq(st.has_compensation, 0);
    cr_assert_eq(saga_shape_step(sh, 2, &st), SAGA_OK);
    cr_expect_eq(st.kind, SAGA_STEP_RETRIABLE);
    cr_expect_eq(saga_shape_step(sh, 3, &st), SAGA_ENOTFOUND);
    saga_shape_free(sh);
    cr_expect_eq(saga_shape_load(&sh, s, "t", 2), SAGA_ENOTFOUND);
    cr_expect_eq(saga_shape_load(&sh, s, "nope", 0), SAGA_ENOTFOUND);
    int n = 0;
    cr_expect_eq(saga_shape_list(s, list_cb, &n), SAGA_OK);
    cr_expect_eq(n, 1);
}

/* s0 OK, s1 FAIL, the compensation of s0 fails twice: FAILED. */
static void make_failed(char id[SAGA_ID_SIZE])
{
    H.script[0] = "o";
    H.script[1] = "f";
    H.comp_script[0] = "ff";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    settle();
    cr_assert_eq(h_state(&H, id), SAGA_STATE_FAILED);
}

Test(admin, retry_op_journals_who_and_why)
{
    boot("cc");
    char id[SAGA_ID_SIZE];
    make_failed(id);
    H.comp_script[0] = "o";
    cr_assert_eq(saga_retry_op(H.e, id, "warehouse is back", "alice"), SAGA_OK);
    settle();
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    saga_info *i;
    const saga_journal_entry *j = last_event(id, SAGA_JOURNAL_OPERATOR_RETRY,
                                             &i);
    cr_assert_not_null(j);
    cr_expect_str_eq(j->error, "by alice: warehouse is back");
    saga_info_free(i);
    cr_expect_eq(saga_retry_op(H.e, id, NULL, NULL), SAGA_EBUSY);
    cr_expect_eq(saga_retry_op(H.e, "0123456789abcdef0123456789abcdef", NULL,
                               NULL),
                 SAGA_ENOTFOUND);
}

Test(admin, resolve_closes_a_failed_saga)
{
    boot("cc");
    char id[SAGA_ID_SIZE];
    make_failed(id);
    cr_expect_eq(saga_resolve(H.e, id, SAGA_STATE_RUNNING, "x", "bob"),
                 SAGA_EINVAL);
    cr_assert_eq(saga_resolve(H.e, id, SAGA_STATE_COMPLETED, "refunded", "bob"),
                 SAGA_OK);
    settle();
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    saga_info *i;
    const saga_journal_entry *j = last_event(id, SAGA_JOURNAL_OPERATOR_RESOLVE,
                                             &i);
    cr_assert_not_null(j);
    cr_expect_str_eq(j->error, "by bob: refunded");
    size_t n = saga_info_journal_count(i);
    cr_expect_eq(saga_info_journal(i, n - 1)->kind, SAGA_JOURNAL_COMPLETED);
    saga_info_free(i);
    cr_expect_eq(saga_resolve(H.e, id, SAGA_STATE_COMPENSATED, "x", "bob"),
                 SAGA_EBUSY);
}

Test(admin, compensate_a_running_saga_before_its_pivot)
{
    boot("cp");
    H.script[0] = "h";
    H.comp_script[0] = "o";
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    cr_assert_eq(saga_compensate(H.e, id, "customer called", "carol"), SAGA_OK);
    settle();
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    /* The step was in flight: it may have run, so it was undone. */
    saga_info *i;
    cr_expect_not_null(last_event(id, SAGA_JOURNAL_COMP_OK, &i));
    saga_info_free(i);
    cr_expect_not_null(last_event(id, SAGA_JOURNAL_OPERATOR_COMPENSATE, &i));
    saga_info_free(i);
    cr_expect_eq(saga_compensate(H.e, id, "again", "carol"), SAGA_EBUSY);
}

Test(admin, compensate_a_failed_saga)
{
    boot("cc");
    char id[SAGA_ID_SIZE];
    make_failed(id);
    H.comp_script[0] = "o";
    cr_assert_eq(saga_compensate(H.e, id, "undo", "dave"), SAGA_OK);
    settle();
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
}

Test(admin, op_run_applies_to_the_store_when_no_engine_takes_it)
{
    boot("cc");
    char id[SAGA_ID_SIZE], done[SAGA_ID_SIZE];
    make_failed(id);
    H.script[1] = "o";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, done, NULL, NULL),
                 SAGA_OK);
    settle();
    cr_assert_eq(h_state(&H, done), SAGA_STATE_COMPLETED);
    /* This engine does not poll: the request comes back to the caller. */
    cr_assert_eq(saga_engine_set_control_poll(H.e, 0), SAGA_OK);
    saga_store *s = saga_engine_store(H.e);
    saga_op_request q = {SAGA_OP_RETRY, id, 0, "try again", "erin"};
    char msg[256];
    saga_op_by by = 0;
    cr_assert_eq(saga_op_run(s, &q, 0, 1000, msg, sizeof msg, &by), SAGA_OK,
                 "%s", msg);
    cr_expect_eq(by, SAGA_OP_BY_CALLER);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATING);
    saga_info *i;
    const saga_journal_entry *j = last_event(id, SAGA_JOURNAL_OPERATOR_RETRY,
                                             &i);
    cr_assert_not_null(j);
    cr_expect_str_eq(j->error, "by erin: try again");
    saga_info_free(i);
    /* Wrong state, unknown saga, a bad request. */
    q.saga_id = done;
    cr_expect_eq(saga_op_run(s, &q, 0, 1000, msg, sizeof msg, &by), SAGA_EBUSY);
    cr_expect(strstr(msg, "COMPLETED") != NULL, "%s", msg);
    q.saga_id = "0123456789abcdef0123456789abcdef";
    cr_expect_eq(saga_op_run(s, &q, 0, 1000, msg, sizeof msg, &by),
                 SAGA_ENOTFOUND);
    q.op = SAGA_OP_RESOLVE;
    q.as = SAGA_STATE_FAILED;
    cr_expect_eq(saga_op_run(s, &q, 0, 1000, msg, sizeof msg, &by),
                 SAGA_EINVAL);
    cr_expect_str_eq(saga_op_name(SAGA_OP_COMPENSATE), "compensate");
}

Test(admin, op_run_compensate_and_resolve_offline)
{
    boot("cc");
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    make_failed(a);
    make_failed(b);
    cr_assert_eq(saga_engine_set_control_poll(H.e, 0), SAGA_OK);
    saga_store *s = saga_engine_store(H.e);
    char msg[256];
    saga_op_request q = {SAGA_OP_COMPENSATE, a, 0, "undo", "frank"};
    cr_assert_eq(saga_op_run(s, &q, 0, 1000, msg, sizeof msg, NULL), SAGA_OK,
                 "%s", msg);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_COMPENSATING);
    saga_op_request r = {SAGA_OP_RESOLVE, b, SAGA_STATE_COMPENSATED, "done",
                         "frank"};
    cr_assert_eq(saga_op_run(s, &r, 0, 1000, msg, sizeof msg, NULL), SAGA_OK,
                 "%s", msg);
    cr_expect_eq(h_state(&H, b), SAGA_STATE_COMPENSATED);
}

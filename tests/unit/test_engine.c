/*
 * test_engine.c — the saga state machine of DESIGN §3, on the memory store
 * with a fake clock: every transition has a test that fails if it breaks.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "harness.h"

static harness H;
static char buf[2048];

static void setup(void) { h_init(&H); }
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0, "loop has open handles");
}

/* Start engine + definition, start one saga, pump. */
static void run1(const char *kinds, const saga_step_options *o, char *id)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, kinds, o);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
}

TestSuite(engine, .init = setup, .fini = teardown);

Test(engine, all_steps_ok_completes_in_order)
{
    char id[SAGA_ID_SIZE];
    run1("ccc", NULL, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 2");
    h_journal(&H, id, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 STEP_OK:2 COMPLETED");
    cr_expect_eq(H.done_count, 1);
    cr_expect_eq(H.last_state, SAGA_STATE_COMPLETED);
}

Test(engine, async_completion_from_later_callback)
{
    char id[SAGA_ID_SIZE];
    H.script[0] = "a";
    H.script[1] = "a";
    run1("cc", NULL, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

Test(engine, fail_compensates_completed_steps_in_reverse)
{
    char id[SAGA_ID_SIZE];
    H.script[2] = "f";
    run1("cccc", NULL, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    /* Step 2 said no: it did not apply, so it is not compensated; step 3
     * never ran. */
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 2 c1 c0");
    h_journal(&H, id, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 STEP_FAIL:2 "
                          "COMPENSATING COMP_OK:1 COMP_OK:0 COMPENSATED");
    cr_expect_eq(H.last_state, SAGA_STATE_COMPENSATED);
}

Test(engine, first_step_fail_compensates_nothing)
{
    char id[SAGA_ID_SIZE];
    H.script[0] = "f";
    run1("cc", NULL, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0");
}

Test(engine, timeout_compensates_the_step_that_may_have_run)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.timeout_ms = 1000;
    o.retry.max_attempts = 1;
    H.script[1] = "h";
    run1("ccc", &o, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
    h_advance(&H, 999);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING, "fired early");
    h_advance(&H, 1);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 c1 c0");
    h_journal(&H, id, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_TIMEOUT:1 COMPENSATING "
                          "COMP_OK:1 COMP_OK:0 COMPENSATED");
    /* The late answer of the timed-out attempt is stale. */
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_ESTALE);
}

Test(engine, retry_waits_for_backoff_then_succeeds)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.max_attempts = 5;
    o.retry.initial_backoff_ms = 100;
    o.retry.multiplier = 2.0;
    o.retry.jitter = SAGA_JITTER_NONE;
    H.script[0] = "rro";
    run1("c", &o, id);
    cr_expect_eq(H.ncalls, 1);
    h_advance(&H, 99);
    cr_expect_eq(H.ncalls, 1, "retried before the backoff");
    h_advance(&H, 1);
    cr_expect_eq(H.ncalls, 2);
    cr_expect_eq(H.calls[1].attempt, 2u);
    h_advance(&H, 199); /* second delay doubles */
    cr_expect_eq(H.ncalls, 2);
    h_advance(&H, 1);
    cr_expect_eq(H.ncalls, 3);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    h_journal(&H, id, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_RETRY:0 STEP_RETRY:0 STEP_OK:0 "
                          "COMPLETED");
}

Test(engine, backoff_is_capped_and_jittered_within_bounds)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.max_attempts = 20;
    o.retry.initial_backoff_ms = 100;
    o.retry.max_backoff_ms = 400;
    o.retry.multiplier = 3.0;
    o.retry.jitter = 0.5;
    H.script[0] = "rrrrrro";
    run1("c", &o, id);
    /* Each wait is within [0.5, 1.5] x min(400, 100 * 3^(n-1)). */
    int64_t expect[] = {100, 300, 400, 400, 400, 400};
    for (int n = 0; n < 6; n++) {
        int before = H.ncalls;
        int64_t lo = expect[n] / 2, hi = expect[n] * 3 / 2, waited = 0;
        while (H.ncalls == before && waited <= hi) {
            h_advance(&H, 1);
            waited++;
        }
        cr_expect_eq(H.ncalls, before + 1, "attempt %d never ran (seed %llu)",
                     n + 2, (unsigned long long)saga_engine_seed(H.e));
        cr_expect(waited >= lo && waited <= hi,
                  "wait %d was %lld ms, not in [%lld, %lld] (seed %llu)", n,
                  (long long)waited, (long long)lo, (long long)hi,
                  (unsigned long long)saga_engine_seed(H.e));
    }
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

Test(engine, retries_exhausted_before_pivot_compensate)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.max_attempts = 3;
    o.retry.jitter = SAGA_JITTER_NONE;
    H.script[1] = "r";
    run1("ccc", &o, id);
    h_advance(&H, 100);
    h_advance(&H, 200);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    /* RETRY means "not applied": step 1 is not compensated. */
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 1 1 c0");
}

Test(engine, after_pivot_retriable_steps_retry_and_never_compensate)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.jitter = SAGA_JITTER_NONE;
    o.retry.max_backoff_ms = 100;
    H.script[2] = "rrrrrrrrrro"; /* the default policy is "forever" */
    run1("cpr", &o, id);
    for (int i = 0; i < 10; i++)
        h_advance(&H, 100);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    h_calls(&H, buf, sizeof buf);
    cr_expect(strstr(buf, "c") == NULL, "compensated after pivot: %s", buf);
}

Test(engine, pivot_fail_compensates_steps_before_it)
{
    char id[SAGA_ID_SIZE];
    H.script[1] = "f";
    run1("cpr", NULL, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 c0");
}

Test(engine, retriable_fail_is_retried_until_it_succeeds)
{
    /* Past the pivot the saga can only move forward: FAIL from a
     * retriable step is retried under its policy (forever by default). */
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.jitter = SAGA_JITTER_NONE;
    o.retry.max_backoff_ms = 100;
    H.script[2] = "fffo";
    run1("cpr", &o, id);
    for (int i = 0; i < 5; i++)
        h_advance(&H, 100);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 2 2 2 2");
    h_journal(&H, id, buf, sizeof buf);
    cr_expect_str_eq(buf, "STARTED STEP_OK:0 STEP_OK:1 STEP_FAIL:2 "
                          "STEP_FAIL:2 STEP_FAIL:2 STEP_OK:2 COMPLETED");
}

Test(engine, retriable_fail_exhausting_a_finite_policy_goes_failed)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.max_attempts = 2;
    o.retry.jitter = SAGA_JITTER_NONE;
    H.script[2] = "f";
    run1("cpr", &o, id);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING, "FAILED after one try");
    h_advance(&H, 100);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_FAILED);
    cr_expect_eq(H.last_state, SAGA_STATE_FAILED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 2 2", "never compensated: %s", buf);
    saga_info *i;
    cr_assert_eq(saga_get(H.e, id, &i), SAGA_OK);
    cr_expect(strstr(saga_info_error(i), "gave up after 2 attempts") != NULL,
              "%s", saga_info_error(i));
    saga_info_free(i);
}

Test(engine, pivot_timing_out_goes_failed_not_compensated)
{
    /* The pivot may have applied: neither direction is safe. */
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.timeout_ms = 50;
    o.retry.max_attempts = 1;
    H.script[1] = "h";
    run1("cpr", &o, id);
    h_advance(&H, 50);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_FAILED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1");
}

Test(engine, compensation_exhausting_policy_fails_then_operator_retry)
{
    char id[SAGA_ID_SIZE];
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.comp_retry.max_attempts = 2;
    o.comp_retry.jitter = SAGA_JITTER_NONE;
    H.script[2] = "f";
    H.comp_script[0] = "rro"; /* fails twice, then would succeed */
    run1("ccc", &o, id);
    h_advance(&H, 100);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_FAILED);
    cr_expect_eq(H.done_count, 1);
    /* Stays FAILED: nothing runs until an operator acts. */
    int calls = H.ncalls;
    h_advance(&H, 100000);
    cr_expect_eq(H.ncalls, calls);
    cr_expect_eq(saga_retry(H.e, id), SAGA_OK);
    h_pump(&H);
    /* A fresh budget: attempt 1 of the new round is script 'r' again. */
    h_advance(&H, 100);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_FAILED);
    cr_expect_eq(saga_retry(H.e, id), SAGA_OK);
    H.comp_script[0] = "o";
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_journal(&H, id, buf, sizeof buf);
    cr_expect(strstr(buf, "OPERATOR_RETRY") != NULL, "%s", buf);
    cr_expect_eq(saga_retry(H.e, id), SAGA_EBUSY);
}

Test(engine, deadline_compensates_in_flight_step)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    H.script[1] = "h";
    saga_def *d = h_def(&H, "ccc", NULL);
    saga_def_set_deadline(d, 5000);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    h_advance(&H, 4999);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
    h_advance(&H, 1);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 c1 c0");
}

Test(engine, deadline_at_pivot_finishes_forward)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    H.script[1] = "h";
    saga_def *d = h_def(&H, "cpr", NULL);
    saga_def_set_deadline(d, 100);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    h_advance(&H, 200);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

Test(engine, cancel_before_pivot_and_refusals)
{
    char id[SAGA_ID_SIZE];
    H.script[1] = "h";
    run1("ccpr", NULL, id);
    cr_expect_eq(saga_cancel(H.e, "0123456789abcdef0123456789abcdef", "x"),
                 SAGA_ENOTFOUND);
    cr_expect_eq(saga_cancel(H.e, id, "customer asked"), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    h_calls(&H, buf, sizeof buf);
    cr_expect_str_eq(buf, "0 1 c1 c0");
    cr_expect_eq(saga_cancel(H.e, id, "again"), SAGA_EBUSY);
    /* The hanging attempt answers late: stale. */
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_ESTALE);
}

Test(engine, cancel_past_pivot_is_refused)
{
    char id[SAGA_ID_SIZE];
    H.script[2] = "h";
    run1("cpr", NULL, id);
    cr_expect_eq(saga_cancel(H.e, id, "too late"), SAGA_EBUSY);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_RUNNING);
}

Test(engine, double_completion_is_stale)
{
    char id[SAGA_ID_SIZE];
    H.script[0] = "h";
    run1("cc", NULL, id);
    saga_step_ref ref = H.pending;
    cr_expect_eq(saga_step_complete(H.e, &ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    cr_expect_eq(saga_step_complete(H.e, &ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ESTALE);
    ref.attempt = 7;
    cr_expect_eq(saga_step_complete(H.e, &ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ESTALE);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    cr_expect_eq(st.stale_completions, 2u);
    cr_expect(strstr(H.log, "stale") != NULL, "stale not logged:\n%s", H.log);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

Test(engine, cancel_before_the_first_action_ran_compensates_nothing)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, "cc", NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    /* Same loop turn: the start is not even committed. */
    cr_assert_eq(saga_cancel(H.e, id, "changed my mind"), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPENSATED);
    cr_expect_eq(H.ncalls, 0, "an action or compensation ran");
}

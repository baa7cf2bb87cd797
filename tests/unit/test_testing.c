/*
 * test_testing.c — the saga test kit (saga/testing.h): exploration,
 * expected outcomes, remote-step stubs, faults that do not apply, and a
 * user check that fails.
 */
#include <criterion/criterion.h>
#include <saga/saga.h>
#include <stdio.h>
#include <string.h>

static int calls[8], comps[8];

static void act(saga_engine *e, const saga_step_ref *ref, const void *d,
                size_t n, void *arg)
{
    (void)d, (void)n;
    calls[(intptr_t)arg]++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void comp(saga_engine *e, const saga_step_ref *ref, const void *d,
                 size_t n, void *arg)
{
    (void)d, (void)n;
    comps[(intptr_t)arg]++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

/* a (comp) -> b (remote, comp) -> p (pivot) -> r (retriable) */
static saga_def *def4(void)
{
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "t", 1), SAGA_OK);
    saga_step_options o;
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.timeout_ms = 5000;
    cr_assert_eq(saga_def_add_step(d, "a", act, comp, &o, (void *)0), SAGA_OK);
    saga_step_options rem = o;
    rem.service = "payments";
    rem.command = "charge";
    rem.comp_command = "refund";
    cr_assert_eq(saga_def_add_step(d, "b", NULL, NULL, &rem, NULL), SAGA_OK);
    o.kind = SAGA_STEP_PIVOT;
    cr_assert_eq(saga_def_add_step(d, "p", act, NULL, &o, (void *)2), SAGA_OK);
    o.kind = SAGA_STEP_RETRIABLE;
    cr_assert_eq(saga_def_add_step(d, "r", act, NULL, &o, (void *)3), SAGA_OK);
    cr_assert_eq(saga_def_validate(d), SAGA_OK);
    return d;
}

Test(testing, explore_all_runs_hold)
{
    saga_def *d = def4();
    saga_test_report *r;
    cr_assert_eq(saga_test_explore(d, NULL, 0, NULL, &r), SAGA_OK);
    char text[16384];
    saga_test_report_format(r, text, sizeof text);
    cr_assert_eq(r->nfailed, 0, "%s", text);
    /* 1 clean + 4 fails + 4 timeouts + 2 comp-fails + 2 cancels */
    cr_assert_eq(r->nruns, 13, "%s", text);
    const saga_test_run *run = saga_test_report_find(r, "'p' fails");
    cr_assert_not_null(run);
    cr_assert_str_eq(run->journal,
                     "STARTED STEP_OK(a) STEP_OK(b) STEP_FAIL(p) COMPENSATING "
                     "COMP_OK(b) COMP_OK(a) COMPENSATED");
    cr_assert_str_eq(run->compensated, "b a");
    run = saga_test_report_find(r, "'p' times out");
    cr_assert_eq(run->state, SAGA_STATE_FAILED);
    cr_assert_str_eq(run->compensated, "");
    run = saga_test_report_find(r, "'r' fails"); /* retried past the pivot */
    cr_assert_eq(run->state, SAGA_STATE_COMPLETED, "%s", run->journal);
    run = saga_test_report_find(r, "'a' times out");
    cr_assert_str_eq(run->compensated, "a", "%s", run->journal);
    run = saga_test_report_find(r, "cancelled at 'b'");
    cr_assert_str_eq(run->compensated, "b a", "%s", run->journal);
    cr_assert_null(saga_test_report_find(r, "no such run"));
    saga_test_report_free(r);
    saga_def_free(d);
}

Test(testing, faults_that_do_not_apply)
{
    saga_def *d = def4();
    saga_test_run run;
    saga_test_fault f = {SAGA_TEST_CANCEL, 2, 0};
    cr_assert_eq(saga_test_run_one(d, NULL, 0, &f, NULL, &run), SAGA_EINVAL);
    cr_assert(strstr(run.why, "not compensatable") != NULL, "%s", run.why);
    f.kind = SAGA_TEST_STEP_FAILS;
    f.step = 9;
    cr_assert_eq(saga_test_run_one(d, NULL, 0, &f, NULL, &run), SAGA_EINVAL);
    f.kind = SAGA_TEST_COMP_FAILS;
    f.step = 2;
    cr_assert_eq(saga_test_run_one(d, NULL, 0, &f, NULL, &run), SAGA_EINVAL);
    saga_test_options o;
    saga_test_options_init(&o, SAGA_TEST_OPTIONS_VERSION);
    o.version = 99;
    cr_assert_eq(saga_test_run_one(d, NULL, 0, NULL, &o, &run), SAGA_EVERSION);
    cr_assert_eq(saga_test_options_init(NULL, 1), SAGA_EINVAL);
    saga_def_free(d);
}

Test(testing, compensation_out_of_attempts_is_failed)
{
    saga_def *d;
    saga_def_new(&d, "c", 1);
    saga_step_options o;
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.comp_retry.max_attempts = 2;
    saga_def_add_step(d, "x", act, comp, &o, (void *)0);
    saga_def_add_step(d, "y", act, comp, NULL, (void *)1);
    memset(comps, 0, sizeof comps);
    saga_test_fault f = {SAGA_TEST_COMP_FAILS, 0, 2};
    saga_test_run run;
    cr_assert_eq(saga_test_run_one(d, NULL, 0, &f, NULL, &run), SAGA_OK);
    cr_assert_eq(run.expected, SAGA_STATE_FAILED);
    cr_assert(run.ok, "%s: %s", run.why, run.journal);
    cr_assert_eq(comps[0], 0);
    f.times = 1;
    cr_assert_eq(saga_test_run_one(d, NULL, 0, &f, NULL, &run), SAGA_OK);
    cr_assert(run.ok, "%s: %s", run.why, run.journal);
    cr_assert_eq(run.state, SAGA_STATE_COMPENSATED);
    cr_assert_eq(comps[0], 1);
    saga_def_free(d);
}

static int resets;
static void reset(void *arg)
{
    (void)arg;
    resets++;
}
static int check_no(const saga_test_run *run, char *why, size_t n, void *arg)
{
    (void)arg;
    if (run->state != SAGA_STATE_COMPENSATED)
        return 1;
    snprintf(why, n, "stock left reserved");
    return 0;
}

Test(testing, user_check_is_reported)
{
    saga_def *d = def4();
    saga_test_options o;
    saga_test_options_init(&o, SAGA_TEST_OPTIONS_VERSION);
    o.reset = reset;
    o.check = check_no;
    saga_test_report *r;
    resets = 0;
    cr_assert_eq(saga_test_explore(d, NULL, 0, &o, &r), SAGA_OK);
    cr_assert_eq((size_t)resets, r->nruns);
    cr_assert_gt(r->nfailed, 0);
    const saga_test_run *run = saga_test_report_find(r, "'a' fails");
    cr_assert_not(run->ok);
    cr_assert_str_eq(run->why, "check: stock left reserved");
    char small[8];
    size_t need = saga_test_report_format(r, small, sizeof small);
    cr_assert_gt(need, sizeof small);
    cr_assert_eq(strlen(small), sizeof small - 1);
    saga_test_report_free(r);
    saga_def_free(d);
}

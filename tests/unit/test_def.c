/*
 * test_def.c — definitions: every invalid shape is refused with SAGA_EINVAL
 * and a message naming the problem.
 */
#include <criterion/criterion.h>
#include <string.h>

#include <saga/saga.h>

static void act(saga_engine *e, const saga_step_ref *r, const void *d, size_t l,
                void *a)
{
    (void)e, (void)r, (void)d, (void)l, (void)a;
}

static saga_def *D;
static void setup(void) { cr_assert_eq(saga_def_new(&D, "checkout", 1), 0); }
static void teardown(void) { saga_def_free(D); }
TestSuite(def, .init = setup, .fini = teardown);

static saga_step_options kind(saga_step_kind k)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.kind = k;
    return o;
}

#define EXPECT_REFUSED(call, needle)                                           \
    do {                                                                       \
        cr_expect_eq((call), SAGA_EINVAL);                                     \
        cr_expect(strstr(saga_def_errmsg(D), needle) != NULL,                  \
                  "message '%s' lacks '%s'", saga_def_errmsg(D), needle);      \
    } while (0)

Test(def, bad_definition_names_and_versions)
{
    saga_def *d = NULL;
    cr_expect_eq(saga_def_new(&d, "", 1), SAGA_EINVAL);
    cr_expect_eq(saga_def_new(&d, NULL, 1), SAGA_EINVAL);
    cr_expect_eq(saga_def_new(&d, "has space", 1), SAGA_EINVAL);
    cr_expect_eq(saga_def_new(&d, "ok", 0), SAGA_EINVAL);
    cr_expect_null(d);
    cr_expect_eq(saga_def_new(NULL, "ok", 1), SAGA_EINVAL);
    saga_def_free(NULL);
}

Test(def, empty_step_name)
{
    EXPECT_REFUSED(saga_def_add_step(D, "", act, act, NULL, NULL),
                   "empty name");
}

Test(def, duplicate_step)
{
    cr_assert_eq(saga_def_add_step(D, "reserve", act, act, NULL, NULL), 0);
    EXPECT_REFUSED(saga_def_add_step(D, "reserve", act, act, NULL, NULL),
                   "duplicate step 'reserve'");
}

Test(def, no_action)
{
    EXPECT_REFUSED(saga_def_add_step(D, "x", NULL, act, NULL, NULL),
                   "no action");
}

Test(def, compensation_on_retriable_step)
{
    saga_step_options r = kind(SAGA_STEP_RETRIABLE);
    EXPECT_REFUSED(saga_def_add_step(D, "notify", act, act, &r, NULL),
                   "retriable step has no compensation");
}

Test(def, compensatable_after_pivot)
{
    saga_step_options p = kind(SAGA_STEP_PIVOT);
    cr_assert_eq(saga_def_add_step(D, "charge", act, NULL, &p, NULL), 0);
    EXPECT_REFUSED(saga_def_add_step(D, "reserve", act, act, NULL, NULL),
                   "compensatable step after the pivot 'charge'");
}

Test(def, second_pivot_and_pivot_with_compensation)
{
    saga_step_options p = kind(SAGA_STEP_PIVOT);
    EXPECT_REFUSED(saga_def_add_step(D, "charge", act, act, &p, NULL),
                   "pivot has no compensation");
    cr_assert_eq(saga_def_add_step(D, "charge", act, NULL, &p, NULL), 0);
    EXPECT_REFUSED(saga_def_add_step(D, "charge2", act, NULL, &p, NULL),
                   "second pivot");
}

Test(def, retriable_after_compensatable_without_pivot)
{
    saga_step_options r = kind(SAGA_STEP_RETRIABLE);
    cr_assert_eq(saga_def_add_step(D, "reserve", act, act, NULL, NULL), 0);
    EXPECT_REFUSED(saga_def_add_step(D, "notify", act, NULL, &r, NULL),
                   "needs a pivot");
}

Test(def, bad_policies)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.multiplier = 0.5;
    EXPECT_REFUSED(saga_def_add_step(D, "a", act, act, &o, NULL), "multiplier");
    o = (saga_step_options)SAGA_STEP_OPTIONS_INIT;
    o.retry.jitter = 1.5;
    EXPECT_REFUSED(saga_def_add_step(D, "a", act, act, &o, NULL), "jitter");
    o = (saga_step_options)SAGA_STEP_OPTIONS_INIT;
    o.comp_retry.initial_backoff_ms = 5000;
    o.comp_retry.max_backoff_ms = 10;
    EXPECT_REFUSED(saga_def_add_step(D, "a", act, act, &o, NULL),
                   "initial backoff exceeds");
    o = (saga_step_options)SAGA_STEP_OPTIONS_INIT;
    o.version = 99;
    /* A bad options version is SAGA_EVERSION, as everywhere. */
    cr_expect_eq(saga_def_add_step(D, "a", act, act, &o, NULL), SAGA_EVERSION);
    cr_expect_neq(strstr(saga_def_errmsg(D), "version"), NULL);
}

Test(def, remote_step_rules)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.service = "payment";
    EXPECT_REFUSED(saga_def_add_step(D, "a", NULL, NULL, &o, NULL),
                   "valid service and command");
    o.command = "charge";
    EXPECT_REFUSED(saga_def_add_step(D, "a", act, NULL, &o, NULL),
                   "both a local action and a remote service");
    EXPECT_REFUSED(saga_def_add_step(D, "a", NULL, act, &o, NULL),
                   "comp_command");
    o.comp_command = "refund";
    cr_expect_eq(saga_def_add_step(D, "a", NULL, NULL, &o, NULL), SAGA_OK);
    cr_expect(saga_def_step_has_compensation(D, 0));
}

Test(def, empty_definition_fails_validation)
{
    EXPECT_REFUSED(saga_def_validate(D), "no steps");
}

Test(def, defaults_are_filled_and_readable)
{
    saga_step_options r = kind(SAGA_STEP_RETRIABLE), p = kind(SAGA_STEP_PIVOT);
    cr_assert_eq(saga_def_add_step(D, "reserve", act, act, NULL, NULL), 0);
    cr_assert_eq(saga_def_add_step(D, "charge", act, NULL, &p, NULL), 0);
    cr_assert_eq(saga_def_add_step(D, "ship", act, NULL, &r, NULL), 0);
    cr_expect_eq(saga_def_validate(D), SAGA_OK);
    cr_expect_eq(saga_def_step_count(D), 3u);
    cr_expect_str_eq(saga_def_step_name(D, 1), "charge");
    cr_expect_null(saga_def_step_name(D, 3));
    saga_step_options o;
    cr_assert_eq(saga_def_step_options(D, 0, &o), SAGA_OK);
    cr_expect_eq(o.timeout_ms, 30000u);
    cr_expect_eq(o.retry.max_attempts, 3u);
    cr_expect_eq(o.comp_retry.max_attempts, SAGA_RETRY_FOREVER);
    cr_expect_eq(o.retry.initial_backoff_ms, 100u);
    cr_assert_eq(saga_def_step_options(D, 2, &o), SAGA_OK);
    cr_expect_eq(o.retry.max_attempts, SAGA_RETRY_FOREVER);
    cr_expect_eq(saga_def_step_options(D, 3, &o), SAGA_ENOTFOUND);
    cr_expect(saga_def_step_has_compensation(D, 0));
    cr_expect(!saga_def_step_has_compensation(D, 1));
    cr_expect_eq(saga_def_set_deadline(D, 60000), SAGA_OK);
    cr_expect_eq(saga_def_deadline(D), 60000u);
    cr_expect_str_eq(saga_def_name(D), "checkout");
    cr_expect_eq(saga_def_version(D), 1u);
}

Test(common, strerror_and_names)
{
    cr_expect_str_eq(saga_strerror(SAGA_ENOTFOUND), "not found");
    cr_expect_str_eq(saga_err_name(SAGA_ESTORE), "SAGA_ESTORE");
    cr_expect_str_eq(saga_strerror(-999), "unknown error");
    cr_expect_str_eq(saga_err_name(0), "SAGA_OK");
    cr_expect_eq(saga_version(), SAGA_VERSION_NUMBER);
    cr_expect_str_eq(saga_version_string(), SAGA_VERSION_STRING);
    cr_expect_str_eq(saga_state_name(SAGA_STATE_FAILED), "FAILED");
    cr_expect_str_eq(saga_journal_kind_name(SAGA_JOURNAL_COMP_OK), "COMP_OK");
    cr_expect_str_eq(saga_journal_kind_name((saga_journal_kind)99), "UNKNOWN");
}

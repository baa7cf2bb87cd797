/*
 * test_engine_close.c — closing and freeing an engine (issue 7 items 9 and
 * 14): saga_engine_close() on the engine's own loop finishes, and
 * saga_engine_free() from inside a step action is deferred, not a
 * use-after-free. A counting allocator checks that everything is freed.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "failalloc.h"
#include "harness.h"

static void ok_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                      size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static int close_calls;
static void on_closed(void *arg)
{
    (void)arg;
    close_calls++;
}

/* An engine on its own loop with definition "x" (a, b) and one saga run. */
static saga_engine *own_engine(saga_action_fn second)
{
    saga_engine *e;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.log_level = SAGA_LOG_ERROR;
    cr_assert_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "x", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "a", ok_action, ok_action, NULL, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "b", second, NULL, NULL, NULL), SAGA_OK);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK);
    return e;
}

/* --- item 9: close on the engine's own loop ------------------------------ */

Test(own_loop_close, close_then_run_finishes_and_frees)
{
    fa_install();
    close_calls = 0;
    saga_engine *e = own_engine(ok_action);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "x", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    saga_engine_close(e, on_closed, NULL);
    cr_expect_eq(close_calls, 0, "the callback ran inside close");
    cr_expect_eq(saga_engine_run(e, SAGA_RUN_DEFAULT), 0);
    cr_expect_eq(close_calls, 1, "close never finished");
    cr_expect_eq(FA.live, 0, "%ld blocks leaked", FA.live);
}

Test(own_loop_close, close_then_free_finishes_and_frees)
{
    fa_install();
    close_calls = 0;
    saga_engine *e = own_engine(ok_action);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "x", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    saga_engine_run(e, SAGA_RUN_NOWAIT);
    saga_engine_close(e, on_closed, NULL);
    saga_engine_free(e);
    cr_expect_eq(close_calls, 1, "close never finished");
    cr_expect_eq(FA.live, 0, "%ld blocks leaked", FA.live);
}

static void closing_action(saga_engine *e, const saga_step_ref *ref,
                           const void *d, size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
    saga_engine_close(e, on_closed, NULL);
}

Test(own_loop_close, close_from_an_action_finishes_when_run_returns)
{
    fa_install();
    close_calls = 0;
    saga_engine *e = own_engine(closing_action);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(e, "x", NULL, NULL, 0, id, NULL, NULL),
                     SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    cr_expect_eq(close_calls, 1, "close never finished");
    cr_expect_eq(FA.live, 0, "%ld blocks leaked", FA.live);
}

/* --- item 14: saga_engine_free() inside a step action -------------------- */

static int after_free;
static void freeing_action(saga_engine *e, const saga_step_ref *ref,
                           const void *d, size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_engine_free(e);
    /* Deferred: the engine is closing but still there for this call. */
    cr_expect_eq(saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ECLOSED);
    after_free++;
}

Test(free_in_action, own_loop_is_deferred_until_run_returns)
{
    fa_install();
    after_free = 0;
    saga_engine *e = own_engine(freeing_action);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(e, "x", NULL, NULL, 0, id, NULL, NULL),
                     SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    /* One action freed it; the closing engine ran no other action. */
    cr_expect_eq(after_free, 1);
    cr_expect_eq(FA.live, 0, "%ld blocks leaked", FA.live);
}

Test(free_in_action, caller_loop_is_deferred_until_the_loop_runs)
{
    fa_install();
    after_free = 0;
    harness *h = calloc(1, sizeof *h);
    h_init(h);
    cr_assert_eq(h_engine(h, NULL, NULL), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "x", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "a", freeing_action, NULL, NULL, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(h->e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(h->e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_start(h->e, "x", NULL, NULL, 0, id, NULL, NULL),
                     SAGA_OK);
    h->e = NULL; /* freed by its action */
    h_pump(h);
    cr_expect_eq(after_free, 1);
    cr_expect_eq(uv_loop_close(&h->loop), 0, "engine handles still open");
    cr_expect_eq(FA.live, 0, "%ld blocks leaked", FA.live);
    free(h);
}

/*
 * test_hostile_api.c — the public API misused from outside (run under ASan
 * and UBSan by the test command): NULL arguments, wrong versions, calls
 * after close, a registered definition freed by its caller, reentrancy from
 * callbacks, outcomes that do not exist. Every misuse must give its
 * documented error (or be a documented no-op), never a crash or a leak.
 * Only <saga/saga.h> is used, with the engine on its own loop.
 */
#include <criterion/criterion.h>
#include <saga/saga.h>
#include <string.h>

static void ok_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                      size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static saga_step_ref held;
static int nheld;
static void hold_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                        size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    held = *ref;
    nheld++;
}

static saga_def *def_of(saga_action_fn a)
{
    saga_def *d = NULL;
    cr_assert_eq(saga_def_new(&d, "t", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "s0", a, ok_action, NULL, NULL), SAGA_OK);
    return d;
}

static saga_engine *engine_with(saga_action_fn a, saga_done_cb done, void *arg)
{
    saga_engine_options o;
    cr_assert_eq(saga_engine_options_init(&o, SAGA_ENGINE_OPTIONS_VERSION),
                 SAGA_OK);
    o.on_done = done;
    o.on_done_arg = arg;
    o.log_level = SAGA_LOG_ERROR;
    saga_engine *e = NULL;
    cr_assert_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_OK);
    cr_assert_eq(saga_engine_register(e, def_of(a)), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK);
    return e;
}

Test(hostile_api, null_arguments_are_einval)
{
    saga_engine *e = engine_with(ok_action, NULL, NULL);
    char id[SAGA_ID_SIZE];
    saga_info *info = NULL;
    saga_step_ref ref;
    memset(&ref, 0, sizeof ref);
    cr_expect_eq(saga_start(NULL, "t", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_start(e, NULL, NULL, NULL, 0, id, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_start(e, "t", NULL, NULL, 0, NULL, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_start(e, "t", NULL, NULL, 7, id, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_start(e, "nope", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_ENOTFOUND);
    cr_expect_eq(saga_start(e, "t", "", NULL, 0, id, NULL, NULL), SAGA_EINVAL);
    unsigned char junk[4] = {0xc1, 0xc1, 0xc1, 0xc1};
    cr_expect_eq(saga_start(e, "t", NULL, junk, sizeof junk, id, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_step_complete(NULL, &ref, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_step_complete(e, NULL, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_cancel(NULL, "x", NULL), SAGA_EINVAL);
    cr_expect_eq(saga_cancel(e, NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_retry(NULL, "x"), SAGA_EINVAL);
    cr_expect_eq(saga_retry(e, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_on_done(e, NULL, NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_get(e, NULL, &info), SAGA_EINVAL);
    cr_expect_eq(saga_get(e, "x", NULL), SAGA_EINVAL);
    cr_expect_eq(saga_get(NULL, "x", &info), SAGA_EINVAL);
    cr_expect_eq(saga_get(e, "no-such-saga", &info), SAGA_ENOTFOUND);
    cr_expect_eq(saga_list(e, SAGA_STATE_MASK_ALL, NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_list(NULL, SAGA_STATE_MASK_ALL, NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_register(e, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_register(NULL, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_start(NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_stats(e, NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_run(NULL, SAGA_RUN_NOWAIT), SAGA_EINVAL);
    cr_expect_eq(saga_engine_flush(NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_advance(NULL), SAGA_EINVAL);
    cr_expect_eq(saga_engine_housekeep(NULL), SAGA_EINVAL);
    saga_engine_counters c = SAGA_ENGINE_COUNTERS_INIT;
    c.version = 99;
    cr_expect_eq(saga_engine_stats(e, &c), SAGA_EVERSION);
    cr_expect_eq(saga_engine_new(NULL, NULL, NULL, NULL), SAGA_EINVAL);
    saga_info_free(NULL);
    saga_engine_free(NULL);
    saga_engine_close(NULL, NULL, NULL);
    saga_def_free(NULL);
    saga_engine_free(e);
}

Test(hostile_api, wrong_versions_are_eversion)
{
    saga_engine_options o;
    memset(&o, 0, sizeof o);
    saga_engine *e = NULL;
    o.version = 0;
    cr_expect_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_EVERSION);
    o.version = SAGA_ENGINE_OPTIONS_VERSION + 1;
    cr_expect_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_EVERSION);
    cr_expect_null(e);
    saga_step_options so;
    memset(&so, 0, sizeof so);
    so.version = 77;
    saga_def *d = NULL;
    cr_assert_eq(saga_def_new(&d, "t", 1), SAGA_OK);
    cr_expect_eq(saga_def_add_step(d, "s", ok_action, NULL, &so, NULL),
                 SAGA_EVERSION);
    saga_def_free(d);
    saga_participant_options po;
    cr_expect_eq(saga_participant_options_init(&po, 0), SAGA_EVERSION);
    cr_expect_eq(saga_participant_options_init(&po, 1000), SAGA_EVERSION);
    saga_tcp_options to;
    cr_expect_eq(saga_tcp_options_init(&to, 1000), SAGA_EVERSION);
}

Test(hostile_api, zero_and_huge_sizes)
{
    saga_engine *e = engine_with(ok_action, NULL, NULL);
    char id[SAGA_ID_SIZE];
    /* An empty map (one byte) and a map larger than max_data_size. */
    const unsigned char empty[1] = {0x80};
    cr_expect_eq(saga_start(e, "t", NULL, empty, 1, id, NULL, NULL), SAGA_OK);
    saga_map *m = NULL;
    cr_assert_eq(saga_map_new(&m), SAGA_OK);
    size_t big = 2u * 1024 * 1024;
    char *blob = calloc(1, big);
    cr_assert_eq(saga_map_set_bin(m, "b", blob, big), SAGA_OK);
    const void *data;
    size_t len;
    cr_assert_eq(saga_map_encode(m, &data, &len), SAGA_OK);
    cr_expect_eq(saga_start(e, "t", NULL, data, len, id, NULL, NULL),
                 SAGA_EINVAL);
    saga_map_free(m);
    free(blob);
    char key[4096];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    int rc = saga_start(e, "t", key, NULL, 0, id, NULL, NULL);
    cr_expect(rc == SAGA_OK || rc == SAGA_EINVAL, "long key: %s",
              saga_err_name(rc));
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    saga_engine_free(e);
}

Test(hostile_api, outcomes_that_do_not_exist_are_einval)
{
    nheld = 0;
    saga_engine *e = engine_with(hold_action, NULL, NULL);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    while (nheld == 0)
        saga_engine_run(e, SAGA_RUN_ONCE);
    cr_expect_eq(saga_step_complete(e, &held, (saga_outcome)3, NULL, 0, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_step_complete(e, &held, (saga_outcome)-1, NULL, 0, NULL),
                 SAGA_EINVAL);
    /* A ref that was never handed out. */
    saga_step_ref forged = held;
    forged.step = 1000;
    int rc = saga_step_complete(e, &forged, SAGA_OUTCOME_OK, NULL, 0, NULL);
    cr_expect(rc == SAGA_ESTALE || rc == SAGA_ENOTFOUND || rc == SAGA_EINVAL,
              "forged step: %s", saga_err_name(rc));
    forged = held;
    memset(forged.saga_id, 'z', sizeof forged.saga_id); /* no terminator */
    rc = saga_step_complete(e, &forged, SAGA_OUTCOME_OK, NULL, 0, NULL);
    cr_expect(rc == SAGA_ENOTFOUND || rc == SAGA_EINVAL,
              "unterminated saga id: %s", saga_err_name(rc));
    /* The real attempt is still current. */
    cr_expect_eq(saga_step_complete(e, &held, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    saga_info *info = NULL;
    cr_assert_eq(saga_get(e, id, &info), SAGA_OK);
    cr_expect_eq(saga_info_state(info), SAGA_STATE_COMPLETED);
    saga_info_free(info);
    saga_engine_free(e);
}

Test(hostile_api, verbs_after_close_are_eclosed)
{
    saga_engine *e = engine_with(ok_action, NULL, NULL);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    saga_engine_close(e, NULL, NULL);
    cr_expect_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_ECLOSED);
    cr_expect_eq(saga_cancel(e, id, NULL), SAGA_ECLOSED);
    saga_def *d = def_of(ok_action);
    cr_expect_eq(saga_engine_register(e, d), SAGA_ECLOSED);
    saga_def_free(d);    /* refused: still the caller's */
    saga_engine_free(e); /* finishes the close */
}

Test(hostile_api, registered_definition_is_the_engines)
{
    saga_engine *e = engine_with(hold_action, NULL, NULL);
    saga_def *d = def_of(ok_action);
    cr_assert_eq(saga_def_set_deadline(d, 5), SAGA_OK);
    saga_def *d2 = NULL;
    cr_assert_eq(saga_def_new(&d2, "u", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d2, "s", ok_action, NULL, NULL, NULL),
                 SAGA_OK);
    /* After start: EBUSY, and the caller keeps it. */
    cr_expect_eq(saga_engine_register(e, d2), SAGA_EBUSY);
    saga_def_free(d2);
    saga_def_free(d);
    saga_engine_free(e);
}

/* A definition freed by its caller after the engine took it, while a saga
 * of it runs: the engine owns it, so the free must not pull it away. */
Test(hostile_api, freeing_a_registered_definition_is_a_no_op)
{
    nheld = 0;
    saga_engine_options o;
    saga_engine_options_init(&o, SAGA_ENGINE_OPTIONS_VERSION);
    o.log_level = SAGA_LOG_ERROR;
    saga_engine *e = NULL;
    cr_assert_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_OK);
    saga_def *d = def_of(hold_action);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    while (nheld == 0)
        saga_engine_run(e, SAGA_RUN_ONCE);
    saga_def_free(d); /* misuse: the engine owns d */
    cr_expect_str_eq(saga_def_name(d), "t");
    cr_expect_eq(saga_step_complete(e, &held, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    saga_info *info = NULL;
    cr_assert_eq(saga_get(e, id, &info), SAGA_OK);
    cr_expect_eq(saga_info_state(info), SAGA_STATE_COMPLETED);
    saga_info_free(info);
    saga_engine_free(e);
}

/* Reentrancy: a done callback that starts the next saga, up to 5, then one
 * that closes the engine. */
typedef struct chain {
    int done;
    int start_rc;
    int closed;
} chain;

static void chain_done(saga_engine *e, const char *id, saga_state s, void *arg)
{
    (void)id;
    chain *c = arg;
    cr_expect_eq(s, SAGA_STATE_COMPLETED);
    if (++c->done < 5) {
        char next[SAGA_ID_SIZE];
        c->start_rc = saga_start(e, "t", NULL, NULL, 0, next, NULL, NULL);
        cr_expect_eq(c->start_rc, SAGA_OK);
    } else if (!c->closed) {
        c->closed = 1;
        saga_engine_close(e, NULL, NULL);
        /* Closing: a start from here is refused, not crashed. */
        char next[SAGA_ID_SIZE];
        c->start_rc = saga_start(e, "t", NULL, NULL, 0, next, NULL, NULL);
    }
}

Test(hostile_api, start_and_close_from_the_done_callback)
{
    chain c = {0, 0, 0};
    saga_engine *e = engine_with(ok_action, chain_done, &c);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    saga_engine_run(e,
                    SAGA_RUN_DEFAULT); /* returns 0 once the engine is gone */
    cr_expect_eq(c.done, 5);
    cr_expect_eq(c.start_rc, SAGA_ECLOSED);
    /* e was freed by the close: run() finished it. */
}

static void free_in_done(saga_engine *e, const char *id, saga_state s,
                         void *arg)
{
    (void)id, (void)s;
    *(int *)arg += 1;
    saga_engine_free(e); /* deferred until run() returns */
}

Test(hostile_api, free_from_the_done_callback)
{
    int n = 0;
    saga_engine *e = engine_with(ok_action, free_in_done, &n);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    cr_expect_eq(n, 1);
}

/* saga_on_done's callback starting a saga and asking for its end again. */
static int nested;
static void on_done_again(saga_engine *e, const char *id, saga_state s,
                          void *arg)
{
    (void)id, (void)s, (void)arg;
    if (++nested < 3) {
        char next[SAGA_ID_SIZE];
        cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, next, NULL, NULL),
                     SAGA_OK);
        cr_expect_eq(saga_on_done(e, next, on_done_again, NULL), SAGA_OK);
    }
}

Test(hostile_api, on_done_from_on_done)
{
    nested = 0;
    saga_engine *e = engine_with(ok_action, NULL, NULL);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    cr_assert_eq(saga_on_done(e, id, on_done_again, NULL), SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    cr_expect_eq(nested, 3);
    saga_engine_free(e);
}

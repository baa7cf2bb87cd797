/*
 * test_engine_api.c — the engine's verbs around the state machine:
 * idempotent start, retention, group commit, release-after-commit, data
 * merging and limits, listing, and an engine on its own loop.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "harness.h"

static harness H;

static void setup(void) { h_init(&H); }
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0, "loop has open handles");
}

static void boot(const char *kinds, void (*tweak)(saga_engine_options *))
{
    cr_assert_eq(h_engine(&H, NULL, tweak), SAGA_OK);
    saga_def *d = h_def(&H, kinds, NULL);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
}

TestSuite(api, .init = setup, .fini = teardown);

/* --- idempotency and retention ------------------------------------------ */

static int started_calls, started_existed;
static char started_id[2][SAGA_ID_SIZE];
static void on_started(saga_engine *e, int st, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)arg;
    cr_expect_eq(st, SAGA_OK);
    /* Released only after the start is durable: the store has it. */
    saga_info *i;
    cr_expect_eq(saga_get(e, id, &i), SAGA_OK, "start cb before commit");
    saga_info_free(i);
    if (started_calls < 2)
        strcpy(started_id[started_calls], id);
    started_calls++;
    started_existed += existed;
}

Test(api, same_key_returns_same_saga_atomically)
{
    H.script[0] = "h";
    boot("c", NULL);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE], c[SAGA_ID_SIZE];
    started_calls = started_existed = 0;
    /* Both in one loop turn, before either is committed. */
    cr_assert_eq(saga_start(H.e, "t", "key-1", NULL, 0, a, on_started, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_start(H.e, "t", "key-1", NULL, 0, b, on_started, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_start(H.e, "t", "key-2", NULL, 0, c, NULL, NULL),
                 SAGA_OK);
    cr_expect_str_eq(a, b);
    cr_expect_str_neq(a, c);
    cr_expect_eq(started_calls, 0, "callback ran inside saga_start");
    h_pump(&H);
    cr_expect_eq(started_calls, 2);
    cr_expect_eq(started_existed, 1);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(H.e, &st), SAGA_OK);
    cr_expect_eq(st.started, 2u);
    saga_engine_counters bad = {0};
    cr_expect_eq(saga_engine_stats(H.e, &bad), SAGA_EVERSION);
    bad.version = SAGA_ENGINE_COUNTERS_VERSION + 1;
    cr_expect_eq(saga_engine_stats(H.e, &bad), SAGA_EVERSION);
    /* Only one action ran for key-1 (plus one for key-2). */
    cr_expect_eq(H.ncalls, 2);
}

Test(api, key_of_ended_saga_is_kept_for_retention_then_purged)
{
    boot("c", NULL);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE], c[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", "order-9", NULL, 0, a, NULL, NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_assert_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    /* Ended and out of memory: the key is answered from the store. */
    cr_assert_eq(saga_start(H.e, "t", "order-9", NULL, 0, b, NULL, NULL),
                 SAGA_OK);
    cr_expect_str_eq(a, b);
    h_pump(&H);
    H.now += 24LL * 3600 * 1000 - 1;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_COMPLETED, "purged too early");
    H.now += 2;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    saga_info *i;
    cr_expect_eq(saga_get(H.e, a, &i), SAGA_ENOTFOUND);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    cr_expect_eq(st.purged, 1u);
    cr_assert_eq(saga_start(H.e, "t", "order-9", NULL, 0, c, NULL, NULL),
                 SAGA_OK);
    cr_expect_str_neq(a, c, "a purged key must start a new saga");
    h_pump(&H);
}

static void short_retention(saga_engine_options *o) { o->retention_ms = 1000; }

Test(api, retention_is_configurable_and_spares_active_sagas)
{
    H.script[0] = "h";
    boot("c", short_retention);
    char a[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", "k", NULL, 0, a, NULL, NULL), SAGA_OK);
    h_pump(&H);
    H.now += 10 * 1000;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, a), SAGA_STATE_RUNNING);
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    h_pump(&H);
    H.now += 1001;
    cr_expect_eq(saga_engine_housekeep(H.e), SAGA_OK);
    cr_expect_eq(h_state(&H, a), (saga_state)0);
}

/* --- group commit and release after commit ------------------------------ */

static saga_engine *check_e;
static int checked;
static void action_sees_committed(saga_engine *e, const saga_step_ref *ref,
                                  const void *d, size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    /* The transition that scheduled this attempt is committed: the store
     * shows this step in flight. */
    saga_info *i;
    cr_expect_eq(saga_get(check_e, ref->saga_id, &i), SAGA_OK);
    cr_expect_eq(saga_info_step(i), (int)ref->step);
    cr_expect(saga_info_flags(i) & SAGA_REC_INFLIGHT);
    saga_info_free(i);
    checked++;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static int done_ok;
static void done_sees_committed(saga_engine *e, const char *id, saga_state st,
                                void *arg)
{
    (void)arg;
    saga_info *i;
    cr_expect_eq(saga_get(e, id, &i), SAGA_OK);
    cr_expect_eq(saga_info_state(i), st, "done before the end was durable");
    saga_info_free(i);
    done_ok++;
}

Test(api, one_commit_per_wave_and_nothing_released_before_it)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    check_e = H.e;
    checked = done_ok = 0;
    saga_def *d;
    saga_def_new(&d, "t", 1);
    for (int i = 0; i < 3; i++) {
        char n[8] = {'s', (char)('0' + i), 0};
        cr_assert_eq(saga_def_add_step(d, n, action_sees_committed, NULL, NULL,
                                       NULL),
                     SAGA_OK);
    }
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char ids[100][SAGA_ID_SIZE];
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, ids[i], NULL, NULL),
                     SAGA_OK);
        cr_assert_eq(saga_on_done(H.e, ids[i], done_sees_committed, NULL),
                     SAGA_OK);
    }
    h_pump(&H);
    cr_expect_eq(checked, 300);
    cr_expect_eq(done_ok, 100);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    /* 100 sagas x (start + 3 steps) = 400 transitions in 4 commits. */
    cr_expect_eq(st.commits, 4u, "commits: %llu",
                 (unsigned long long)st.commits);
    cr_expect_eq(st.completed, 100u);
    cr_expect_eq(st.active, 0u);
}

Test(api, on_done_for_an_ended_saga_runs_on_a_later_turn)
{
    boot("c", NULL);
    char a[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    h_pump(&H);
    done_ok = 0;
    cr_expect_eq(saga_on_done(H.e, a, done_sees_committed, NULL), SAGA_OK);
    cr_expect_eq(done_ok, 0, "ran inside saga_on_done");
    h_pump(&H);
    cr_expect_eq(done_ok, 1);
    cr_expect_eq(saga_on_done(H.e, "0123456789abcdef0123456789abcdef",
                              done_sees_committed, NULL),
                 SAGA_ENOTFOUND);
}

/* --- data ---------------------------------------------------------------- */

static char comp_saw[64];
static void put_tx(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_map *m;
    const void *b;
    size_t n;
    saga_map_new(&m);
    saga_map_set_str(m, "tx", "T-77");
    saga_map_set_str(m, "item", "overwritten");
    saga_map_encode(m, &b, &n);
    cr_expect_eq(saga_step_complete(e, ref, SAGA_OUTCOME_OK, b, n, NULL),
                 SAGA_OK);
    saga_map_free(m);
}
static void undo_tx(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t l, void *arg)
{
    (void)arg;
    const char *s;
    size_t n;
    if (saga_data_get_str(d, l, "tx", &s, &n) == SAGA_OK)
        snprintf(comp_saw, sizeof comp_saw, "%.*s", (int)n, s);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}
static void say_no(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    static const unsigned char not_a_map[] = {0x93, 1, 2, 3};
    cr_expect_eq(saga_step_complete(e, ref, SAGA_OUTCOME_OK, not_a_map,
                                    sizeof not_a_map, NULL),
                 SAGA_EINVAL);
    saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0, "declined");
}

Test(api, step_output_is_merged_and_seen_by_compensation)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d;
    saga_def_new(&d, "pay", 1);
    saga_def_add_step(d, "charge", put_tx, undo_tx, NULL, NULL);
    saga_def_add_step(d, "ship", say_no, NULL, NULL, NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    saga_map *m;
    const void *b;
    size_t n;
    saga_map_new(&m);
    saga_map_set_str(m, "item", "kettle");
    saga_map_set_int(m, "qty", 2);
    saga_map_encode(m, &b, &n);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "pay", NULL, b, n, id, NULL, NULL), SAGA_OK);
    saga_map_free(m);
    comp_saw[0] = 0;
    h_pump(&H);
    cr_expect_str_eq(comp_saw, "T-77");
    saga_info *i;
    cr_assert_eq(saga_get(H.e, id, &i), SAGA_OK);
    cr_expect_eq(saga_info_state(i), SAGA_STATE_COMPENSATED);
    size_t dl;
    const void *data = saga_info_data(i, &dl);
    const char *s;
    int64_t q;
    cr_expect_eq(saga_data_get_str(data, dl, "item", &s, &n), SAGA_OK);
    cr_expect_eq(n, strlen("overwritten"));
    cr_expect_eq(saga_data_get_int(data, dl, "qty", &q), SAGA_OK);
    cr_expect_eq(q, 2);
    cr_expect_str_eq(saga_info_step_name(i), "charge");
    saga_info_free(i);
}

static void tiny_data(saga_engine_options *o) { o->max_data_size = 64; }

Test(api, bad_input_is_refused_with_clear_errors)
{
    boot("c", tiny_data);
    char id[SAGA_ID_SIZE];
    unsigned char big[65] = {0};
    cr_expect_eq(saga_start(H.e, "t", NULL, big, sizeof big, id, NULL, NULL),
                 SAGA_EINVAL);
    cr_expect(strstr(saga_engine_errmsg(H.e), "exceeds") != NULL);
    static const unsigned char arr[] = {0x91, 0x01};
    cr_expect_eq(saga_start(H.e, "t", NULL, arr, sizeof arr, id, NULL, NULL),
                 SAGA_EINVAL);
    static const unsigned char trunc[] = {0x81, 0xa1};
    cr_expect_eq(saga_start(H.e, "t", NULL, trunc, sizeof trunc, id, NULL,
                            NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_start(H.e, "nope", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_ENOTFOUND);
    cr_expect_eq(saga_start(H.e, "t", "", NULL, 0, id, NULL, NULL),
                 SAGA_EINVAL);
    char longkey[300];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[299] = 0;
    cr_expect_eq(saga_start(H.e, "t", longkey, NULL, 0, id, NULL, NULL),
                 SAGA_EINVAL);
    saga_info *i;
    cr_expect_eq(saga_get(H.e, "0123456789abcdef0123456789abcdef", &i),
                 SAGA_ENOTFOUND);
    cr_expect_eq(saga_get(H.e, "garbage", &i), SAGA_ENOTFOUND);
    saga_step_ref r;
    memset(&r, 0, sizeof r);
    strcpy(r.saga_id, "0123456789abcdef0123456789abcdef");
    cr_expect_eq(saga_step_complete(H.e, &r, SAGA_OUTCOME_OK, NULL, 0, NULL),
                 SAGA_ENOTFOUND);
    cr_expect_eq(saga_step_complete(H.e, &r, (saga_outcome)9, NULL, 0, NULL),
                 SAGA_EINVAL);
    cr_expect_eq(saga_retry(H.e, "0123456789abcdef0123456789abcdef"),
                 SAGA_ENOTFOUND);
    /* Nothing was started by any of that. */
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    cr_expect_eq(st.started, 0u);
}

Test(api, start_before_engine_start_and_register_after)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, "c", NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_expect_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_EBUSY);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    cr_expect_eq(saga_engine_start(H.e), SAGA_EBUSY);
    saga_def *d2 = h_def(&H, "c", NULL);
    cr_expect_eq(saga_engine_register(H.e, d2), SAGA_EBUSY);
    saga_def_free(d2);
}

Test(api, several_versions_start_the_highest)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *v1 = h_def(&H, "c", NULL), *v2;
    saga_def_new(&v2, "t", 2);
    saga_def_add_step(v2, "only", NULL, NULL, NULL, NULL); /* refused */
    cr_assert_eq(saga_def_add_step(v2, "a", (saga_action_fn)0, NULL, NULL,
                                   NULL),
                 SAGA_EINVAL);
    saga_def_free(v2);
    v2 = h_def(&H, "cc", NULL);
    /* h_def names it "t" v1: a duplicate. */
    cr_assert_eq(saga_engine_register(H.e, v1), SAGA_OK);
    cr_expect_eq(saga_engine_register(H.e, v2), SAGA_EDUP);
    saga_def_free(v2);
}

/* --- listing ------------------------------------------------------------- */

static int count_cb(const char *id, saga_state st, const char *def, void *arg)
{
    (void)id, (void)st;
    cr_expect_str_eq(def, "t");
    (*(int *)arg)++;
    return 0;
}

Test(api, list_by_state)
{
    H.script[1] = "f";
    boot("cc", NULL);
    char a[SAGA_ID_SIZE];
    H.script[0] = "o";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    h_pump(&H);
    H.script[1] = "o";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    h_pump(&H);
    H.script[0] = "h";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    h_pump(&H);
    int n = 0;
    cr_expect_eq(saga_list(H.e, SAGA_STATE_BIT(SAGA_STATE_COMPENSATED),
                           count_cb, &n),
                 SAGA_OK);
    cr_expect_eq(n, 1);
    n = 0;
    saga_list(H.e, SAGA_STATE_MASK_ALL, count_cb, &n);
    cr_expect_eq(n, 3);
    n = 0;
    saga_list(H.e, SAGA_STATE_MASK_ACTIVE, count_cb, &n);
    cr_expect_eq(n, 1);
    cr_expect_eq(saga_list(H.e, 0, count_cb, &n), SAGA_EINVAL);
}

/* --- own loop ------------------------------------------------------------ */

static void ok_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                      size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

Test(own_loop, run_returns_when_all_sagas_end)
{
    saga_engine *e;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.seed = 7;
    cr_assert_eq(saga_engine_new(&e, NULL, NULL, &o), SAGA_OK);
    cr_expect_eq(saga_engine_seed(e), 7u);
    saga_def *d;
    saga_def_new(&d, "x", 1);
    saga_def_add_step(d, "a", ok_action, ok_action, NULL, NULL);
    saga_def_add_step(d, "b", ok_action, NULL, NULL, NULL);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 10; i++)
        cr_assert_eq(saga_start(e, "x", NULL, NULL, 0, id, NULL, NULL),
                     SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(e, &st);
    cr_expect_eq(st.completed, 10u);
    saga_engine_free(e);
    saga_engine_free(NULL);
}

/*
 * test_admit.c — the engine's admission limit (saga_engine_options
 * .max_active, options version 3): a new saga_start() past the limit is
 * refused with SAGA_EFULL and nothing is staged or recorded; starts not
 * yet committed count; a known idempotency key is still answered; a saga
 * that ends makes room; recovery is never refused and may exceed the
 * limit; the count and the refusals are in saga_engine_stats().
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async_store.h"
#include "harness.h"

static harness H;
static char dir[64], path[128];

static void setup(void)
{
    h_init(&H);
    strcpy(dir, "/tmp/saga-admit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
}
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0, "loop has open handles");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
TestSuite(admit, .init = setup, .fini = teardown);

static size_t limit;
static void set_limit(saga_engine_options *o) { o->max_active = limit; }

/* An engine on @p s (NULL: memory) with max_active = @p max, one
 * compensatable step whose action hangs unless the script says else. */
static void boot_def(saga_store *s, size_t max, const char *kinds,
                     const saga_step_options *so)
{
    limit = max;
    cr_assert_eq(h_engine(&H, s, set_limit), SAGA_OK);
    saga_def *d = h_def(&H, kinds, so);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK, "%s",
                 saga_engine_errmsg(H.e));
}

static void boot(saga_store *s, size_t max)
{
    H.script[0] = "h";
    boot_def(s, max, "c", NULL);
}

static saga_engine_counters stats(void)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    cr_assert_eq(saga_engine_stats(H.e, &st), SAGA_OK);
    return st;
}

static int cb_calls, cb_existed;
static char cb_id[SAGA_ID_SIZE];
static void on_started(saga_engine *e, int st, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)arg;
    cr_expect_eq(st, SAGA_OK);
    cb_calls++;
    cb_existed += existed;
    snprintf(cb_id, sizeof cb_id, "%s", id);
}

static int start(const char *key, char id[SAGA_ID_SIZE])
{
    return saga_start(H.e, "t", key, NULL, 0, id, on_started, NULL);
}

static int count_cb(const char *id, saga_state st, const char *def, void *arg)
{
    (void)id, (void)st, (void)def;
    ++*(int *)arg;
    return 0;
}

/* Sagas the store holds, in any state. */
static int stored(void)
{
    int n = 0;
    cr_assert_eq(saga_list(H.e, SAGA_STATE_MASK_ALL, count_cb, &n), SAGA_OK);
    return n;
}

Test(admit, refused_at_the_limit_counting_starts_not_yet_committed)
{
    boot(NULL, 3);
    char id[4][SAGA_ID_SIZE];
    cb_calls = 0;
    /* Three starts in one loop turn: none is committed yet, all count. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(start(NULL, id[i]), SAGA_OK);
    cr_expect_eq(stats().active, 3u);
    cr_expect_eq(start(NULL, id[3]), SAGA_EFULL);
    cr_expect_eq(start("new-key", id[3]), SAGA_EFULL);
    cr_expect_neq(strstr(saga_engine_errmsg(H.e), "max_active"), NULL, "%s",
                  saga_engine_errmsg(H.e));
    cr_expect_str_eq(saga_strerror(SAGA_EFULL), "queue full, try again later");
    h_pump(&H);
    /* Nothing of the refused starts was staged, recorded or called. */
    cr_expect_eq(cb_calls, 3);
    cr_expect_eq(H.ncalls, 3);
    cr_expect_eq(stored(), 3);
    saga_engine_counters st = stats();
    cr_expect_eq(st.active, 3u);
    cr_expect_eq(st.started, 3u);
    cr_expect_eq(st.starts_refused, 2u);
    /* Still full after the commit. */
    cr_expect_eq(start(NULL, id[3]), SAGA_EFULL);
    cr_expect_eq(stats().starts_refused, 3u);
}

Test(admit, accepted_again_once_a_saga_has_ended)
{
    boot(NULL, 2);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE], c[SAGA_ID_SIZE];
    cr_assert_eq(start("k-a", a), SAGA_OK);
    cr_assert_eq(start("k-b", b), SAGA_OK);
    h_pump(&H);
    cr_assert_eq(start("k-c", c), SAGA_EFULL);
    /* Cancelled: compensated, and out of memory once that is committed;
     * until then it still counts. */
    cr_assert_eq(saga_cancel(H.e, a, "test"), SAGA_OK);
    cr_expect_eq(start("k-c", c), SAGA_EFULL);
    h_pump(&H);
    cr_assert_eq(h_state(&H, a), SAGA_STATE_COMPENSATED);
    cr_expect_eq(stats().active, 1u);
    /* The refused key was not recorded: it starts a new saga now. */
    cb_calls = cb_existed = 0;
    cr_assert_eq(start("k-c", c), SAGA_OK, "%s", saga_engine_errmsg(H.e));
    h_pump(&H);
    cr_expect_eq(cb_calls, 1);
    cr_expect_eq(cb_existed, 0);
    cr_expect_str_eq(cb_id, c);
    cr_expect_str_neq(c, a);
    cr_expect_str_neq(c, b);
    cr_expect_eq(stats().active, 2u);
    /* A step completing ends a saga the same way. */
    cr_assert_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, c), SAGA_STATE_COMPLETED);
    cr_expect_eq(start(NULL, a), SAGA_OK);
    h_pump(&H);
}

Test(admit, a_known_key_is_answered_at_the_limit)
{
    boot(NULL, 2);
    char done[SAGA_ID_SIZE], a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    char id[SAGA_ID_SIZE];
    /* One saga that ends: its key is then only in the store. */
    cr_assert_eq(start("k-done", done), SAGA_OK);
    h_pump(&H);
    cr_assert_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_assert_eq(h_state(&H, done), SAGA_STATE_COMPLETED);
    cr_assert_eq(start("k-a", a), SAGA_OK);
    cr_assert_eq(start("k-b", b), SAGA_OK);
    cr_assert_eq(start("k-new", id), SAGA_EFULL);
    cb_calls = cb_existed = 0;
    /* Active (in memory, not committed yet) and ended (in the store). */
    cr_expect_eq(start("k-a", id), SAGA_OK);
    cr_expect_str_eq(id, a);
    cr_expect_eq(start("k-done", id), SAGA_OK);
    cr_expect_str_eq(id, done);
    h_pump(&H);
    cr_expect_eq(cb_calls, 4);
    cr_expect_eq(cb_existed, 2);
    cr_expect_eq(stats().active, 2u);
    cr_expect_eq(stats().starts_refused, 1u);
    cr_expect_eq(stored(), 3);
}

Test(admit, recovery_is_never_refused_and_may_exceed_the_limit)
{
    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_OK);
    boot(s, 0);
    char id[5][SAGA_ID_SIZE];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(start(NULL, id[i]), SAGA_OK);
    h_pump(&H);
    h_fini(&H);

    /* Restarted with room for 2: all 5 resume. */
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_OK);
    boot(s, 2);
    h_pump(&H);
    cr_expect_eq(stats().active, 5u);
    char x[SAGA_ID_SIZE];
    cr_expect_eq(start(NULL, x), SAGA_EFULL);
    /* New starts wait until fewer than max_active run. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(saga_cancel(H.e, id[i], "test"), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(stats().active, 2u);
    cr_expect_eq(start(NULL, x), SAGA_EFULL);
    cr_assert_eq(saga_cancel(H.e, id[3], "test"), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(stats().active, 1u);
    cr_expect_eq(start(NULL, x), SAGA_OK, "%s", saga_engine_errmsg(H.e));
    h_pump(&H);
    cr_expect_eq(stats().active, 2u);
    cr_expect_eq(stats().starts_refused, 2u);
}

Test(admit, a_retried_failed_saga_is_never_refused)
{
    /* A retriable step that fails twice: the saga goes FAILED and leaves
     * memory. */
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.retry.max_attempts = 2;
    so.retry.initial_backoff_ms = 10;
    so.retry.jitter = SAGA_JITTER_NONE;
    H.script[0] = "f";
    boot_def(NULL, 1, "r", &so);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    cr_assert_eq(start(NULL, a), SAGA_OK);
    h_pump(&H);
    h_advance(&H, 1000);
    cr_assert_eq(h_state(&H, a), SAGA_STATE_FAILED);
    cr_expect_eq(stats().active, 0u);
    H.script[0] = "h";
    cr_assert_eq(start(NULL, b), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(stats().active, 1u);
    /* The operator's retry brings it back past the limit. */
    cr_expect_eq(saga_retry(H.e, a), SAGA_OK, "%s", saga_engine_errmsg(H.e));
    h_pump(&H);
    cr_expect_eq(stats().active, 2u);
    cr_expect_eq(start(NULL, b), SAGA_EFULL);
}

Test(admit, starts_whose_commit_is_in_flight_count)
{
    saga_store *inner, *s;
    async_store *as;
    cr_assert_eq(saga_store_memory_new(&inner), SAGA_OK);
    cr_assert_eq(async_store_new(&s, inner, &as), SAGA_OK);
    boot(s, 2);
    async_store_hold(as, 1);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE], c[SAGA_ID_SIZE];
    cb_calls = 0;
    cr_assert_eq(start("k-a", a), SAGA_OK);
    cr_assert_eq(start("k-b", b), SAGA_OK);
    h_pump(&H);
    cr_assert_eq(async_store_queued(as), 1u, "the batch is in flight");
    cr_expect_eq(cb_calls, 0);
    cr_expect_eq(start("k-c", c), SAGA_EFULL);
    cr_expect_eq(start("k-a", c), SAGA_OK);
    cr_expect_str_eq(c, a);
    async_store_hold(as, 0);
    while (async_store_complete(as, SAGA_OK))
        h_pump(&H);
    h_pump(&H);
    cr_expect_eq(cb_calls, 3);
    cr_expect_eq(stats().active, 2u);
    cr_expect_eq(start("k-c", c), SAGA_EFULL);
}

Test(admit, traced_starts_are_refused_the_same_way)
{
    boot(NULL, 1);
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    const char *tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    cr_assert_eq(saga_start_traced(H.e, "t", "k", NULL, 0, tp, a, NULL, NULL),
                 SAGA_OK);
    cr_expect_eq(saga_start_traced(H.e, "t", "k2", NULL, 0, tp, b, NULL, NULL),
                 SAGA_EFULL);
    cr_expect_eq(saga_start_traced(H.e, "t", "k", NULL, 0, tp, b, NULL, NULL),
                 SAGA_OK);
    cr_expect_str_eq(a, b);
    h_pump(&H);
}

Test(admit, no_limit_by_default_and_for_older_options)
{
    /* The default (0): no limit. */
    boot(NULL, 0);
    char id[SAGA_ID_SIZE];
    for (int i = 0; i < 300; i++)
        cr_assert_eq(start(NULL, id), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(stats().active, 300u);
    cr_expect_eq(stats().starts_refused, 0u);
    h_fini(&H);

    /* A version-2 caller has no max_active: whatever lies past its
     * struct is not read. */
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.version = 2;
    o.loop = &H.loop;
    o.log_level = SAGA_LOG_ERROR;
    o.max_active = 1;
    cr_assert_eq(saga_engine_new(&H.e, NULL, NULL, &o), SAGA_OK);
    saga_def *d = h_def(&H, "c", NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(start(NULL, id), SAGA_OK);
    h_pump(&H);

    /* A version-1 counters struct gets what it has room for. */
    struct {
        saga_engine_counters c;
        uint64_t guard;
    } v1;
    memset(&v1, 0xab, sizeof v1);
    v1.c.version = 1;
    cr_assert_eq(saga_engine_stats(H.e, &v1.c), SAGA_OK);
    cr_expect_eq(v1.c.version, 1u);
    cr_expect_eq(v1.c.active, 3u);
    uint64_t pattern;
    memset(&pattern, 0xab, sizeof pattern);
    cr_expect_eq(v1.c.starts_refused, pattern, "written past version 1");
}

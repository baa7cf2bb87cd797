/*
 * transport_suite.h — one conformance suite for every transport.
 *
 * A test file defines a fixture and expands the suite for it:
 *
 *   static const saga_tsuite_fixture fx = {"topic", FEATURES, open, reopen,
 *                                          cleanup};
 *   SAGA_TRANSPORT_CONFORMANCE(inmem, fx)
 *
 * The fixture opens two endpoints A and B on env->loop such that what A
 * sends to fx.topic reaches subscribers of fx.topic on B. Every test ends
 * with both endpoints closed, the loop run until they are gone, the fixture
 * cleaned up and uv_loop_close() == 0, so ASan sees any leak.
 *
 * Tests wait for conditions by running the loop, never for time; the
 * Criterion timeout only bounds a broken transport.
 */
#ifndef SAGA_TESTS_TRANSPORT_SUITE_H
#define SAGA_TESTS_TRANSPORT_SUITE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <uv.h>

#include "saga/saga.h"

/* Subscribers of one group on A and on B share the messages. */
#define SAGA_TSUITE_SHARED_GROUPS (1u << 0)
/* An unacked delivery comes again to a new B after B closes. */
#define SAGA_TSUITE_REDELIVER (1u << 1)
/* The transport knows every destination (version 2 route()): a topic with
 * no peer and no local subscriber is SAGA_ENOROUTE. Without this flag every
 * topic must route (a broker keeps messages for later subscribers). */
#define SAGA_TSUITE_KNOWS_ROUTES (1u << 2)

typedef struct saga_tsuite_env {
    uv_loop_t loop;
    saga_transport *a, *b;
    void *priv; /* the fixture's own state */
} saga_tsuite_env;

typedef struct saga_tsuite_fixture {
    const char *topic; /* A's sends to it reach B's subscribers */
    unsigned features; /* SAGA_TSUITE_* */
    /* Make env->a and env->b on env->loop (initialised). */
    int (*open)(saga_tsuite_env *env);
    /* env->b was closed: make a new env->b reachable as the old one. */
    int (*reopen_b)(saga_tsuite_env *env);
    /* Both endpoints are closed and gone: free the rest (may be NULL). */
    void (*cleanup)(saga_tsuite_env *env);
} saga_tsuite_fixture;

/* ---- shared state of one test (each test is its own process) ------------ */

#define TSUITE_MAX_MSGS 2048

typedef struct tsuite_rx {
    saga_delivery *d;
    saga_transport *t;
    char topic[64];
    char key[64];
    int has_key;
    unsigned char *buf;
    size_t len;
    int group; /* which subscription got it (the arg) */
} tsuite_rx;

static struct {
    int in_call; /* inside a slot call made by the test */
    int sent_ok, sent_err, sent_calls;
    tsuite_rx rx[TSUITE_MAX_MSGS];
    int nrx;
    int auto_ack;
} tsuite_g;

static void tsuite_sent_cb(saga_transport *t, int status, void *arg)
{
    (void)t;
    cr_assert_eq(tsuite_g.in_call, 0, "sent_cb ran inside a slot call");
    int *once = arg;
    if (once != NULL) {
        cr_assert_eq(*once, 0, "sent_cb ran twice for one send");
        *once = 1;
    }
    tsuite_g.sent_calls++;
    if (status == SAGA_OK)
        tsuite_g.sent_ok++;
    else
        tsuite_g.sent_err++;
}

static void tsuite_recv_cb(saga_transport *t, saga_delivery *d,
                           const char *topic, const char *key, const void *buf,
                           size_t len, void *arg)
{
    cr_assert_eq(tsuite_g.in_call, 0, "recv_cb ran inside a slot call");
    cr_assert_lt(tsuite_g.nrx, TSUITE_MAX_MSGS);
    cr_assert_not_null(d);
    cr_assert_not_null(topic);
    cr_assert(len == 0 || buf != NULL);
    tsuite_rx *r = &tsuite_g.rx[tsuite_g.nrx++];
    r->t = t;
    r->d = d;
    snprintf(r->topic, sizeof r->topic, "%s", topic);
    r->has_key = key != NULL;
    snprintf(r->key, sizeof r->key, "%s", key != NULL ? key : "");
    r->buf = malloc(len ? len : 1);
    cr_assert_not_null(r->buf);
    if (len > 0)
        memcpy(r->buf, buf, len);
    r->len = len;
    r->group = (int)(intptr_t)arg;
    if (tsuite_g.auto_ack) {
        cr_assert_eq(t->ack(t, d), SAGA_OK);
        r->d = NULL;
    }
}

static void tsuite_rx_reset(void)
{
    for (int i = 0; i < tsuite_g.nrx; i++)
        free(tsuite_g.rx[i].buf);
    tsuite_g.nrx = 0;
}

static void tsuite_setup(saga_tsuite_env *env, const saga_tsuite_fixture *fx)
{
    memset(env, 0, sizeof *env);
    memset(&tsuite_g, 0, sizeof tsuite_g);
    cr_assert_eq(uv_loop_init(&env->loop), 0);
    cr_assert_eq(fx->open(env), SAGA_OK, "fixture open failed");
    cr_assert_not_null(env->a);
    cr_assert_not_null(env->b);
}

static void tsuite_teardown(saga_tsuite_env *env, const saga_tsuite_fixture *fx)
{
    if (env->a != NULL)
        env->a->close(env->a);
    if (env->b != NULL)
        env->b->close(env->b);
    env->a = env->b = NULL;
    uv_run(&env->loop, UV_RUN_DEFAULT);
    if (fx->cleanup != NULL)
        fx->cleanup(env);
    uv_run(&env->loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&env->loop), 0, "handles left open");
    tsuite_rx_reset();
}

static int tsuite_flag_set(void *arg) { return *(int *)arg != 0; }
static int tsuite_have_rx(void *arg) { return tsuite_g.nrx >= *(int *)arg; }
static int tsuite_have_sent(void *arg)
{
    return tsuite_g.sent_calls >= *(int *)arg;
}

/* Run the loop until cond holds; false if the loop went idle first. */
static int tsuite_run_until(saga_tsuite_env *env, int (*cond)(void *),
                            void *arg)
{
    while (!cond(arg)) {
        if (uv_run(&env->loop, UV_RUN_ONCE) == 0 && !cond(arg))
            return 0;
    }
    return 1;
}

/* A few more turns, for callbacks that must not come. */
static void tsuite_settle(saga_tsuite_env *env)
{
    for (int i = 0; i < 20; i++)
        uv_run(&env->loop, UV_RUN_NOWAIT);
}

static int tsuite_send(saga_transport *t, const char *topic, const char *key,
                       const void *buf, size_t len, int *once)
{
    tsuite_g.in_call = 1;
    int rc = t->send(t, topic, key, buf, len, tsuite_sent_cb, once);
    tsuite_g.in_call = 0;
    return rc;
}

static int tsuite_sub(saga_transport *t, const char *topic, const char *group,
                      int tag)
{
    tsuite_g.in_call = 1;
    int rc = t->subscribe(t, topic, group, tsuite_recv_cb,
                          (void *)(intptr_t)tag);
    tsuite_g.in_call = 0;
    return rc;
}

static void tsuite_ack_all(void)
{
    for (int i = 0; i < tsuite_g.nrx; i++) {
        tsuite_rx *r = &tsuite_g.rx[i];
        if (r->d != NULL) {
            cr_assert_eq(r->t->ack(r->t, r->d), SAGA_OK);
            r->d = NULL;
        }
    }
}

/* ---- the tests ----------------------------------------------------------- */

static void tsuite_roundtrip(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    static const size_t sizes[] = {0, 1, 7, 65536, 1u << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *big = malloc(1u << 20);
    cr_assert_not_null(big);
    for (size_t i = 0; i < (1u << 20); i++)
        big[i] = (unsigned char)(i * 31 + (i >> 8));
    int once[N + 1] = {0};
    for (int i = 0; i < N; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", big, sizes[i],
                                 &once[i]),
                     SAGA_OK);
    /* A NULL key and a NULL buffer of length 0 are allowed. */
    cr_assert_eq(tsuite_send(env.a, fx->topic, NULL, NULL, 0, &once[N]),
                 SAGA_OK);
    int want = N + 1;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &want));
    int nullkey = 0;
    for (int i = 0; i < want; i++) {
        tsuite_rx *r = &tsuite_g.rx[i];
        cr_assert_str_eq(r->topic, fx->topic);
        if (!r->has_key) {
            nullkey++;
            cr_assert_eq(r->len, 0);
            continue;
        }
        cr_assert_str_eq(r->key, "k");
    }
    cr_assert_eq(nullkey, 1);
    /* The keyed ones come in order, byte-exact. */
    int k = 0;
    for (int i = 0; i < want; i++) {
        tsuite_rx *r = &tsuite_g.rx[i];
        if (!r->has_key)
            continue;
        cr_assert_eq(r->len, sizes[k], "message %d: %zu bytes, want %zu", k,
                     r->len, sizes[k]);
        cr_assert(r->len == 0 || memcmp(r->buf, big, r->len) == 0);
        k++;
    }
    tsuite_ack_all();
    cr_assert(tsuite_run_until(&env, tsuite_have_sent, &want));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.sent_ok, want);
    cr_assert_eq(tsuite_g.sent_calls, want);
    cr_assert_eq(tsuite_g.nrx, want, "a message came twice");
    free(big);
    tsuite_teardown(&env, fx);
}

static void tsuite_sent_once(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    tsuite_g.auto_ack = 1;
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    int once[50] = {0};
    for (int i = 0; i < 50; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", &i, sizeof i, &once[i]),
                     SAGA_OK);
    /* Not inside send: tsuite_sent_cb asserts in_call == 0. */
    cr_assert_eq(tsuite_g.sent_calls, 0);
    /* cb may be NULL. */
    cr_assert_eq(env.a->send(env.a, fx->topic, "k", "x", 1, NULL, NULL),
                 SAGA_OK);
    int want = 50, wrx = 51;
    cr_assert(tsuite_run_until(&env, tsuite_have_sent, &want));
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &wrx));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.sent_calls, 50);
    cr_assert_eq(tsuite_g.sent_ok, 50);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(once[i], 1);
    tsuite_teardown(&env, fx);
}

static void tsuite_recv_not_reentrant(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    tsuite_g.auto_ack = 1;
    /* Sent before anyone subscribed: kept, then delivered after subscribe
     * returns (tsuite_recv_cb asserts in_call == 0). */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", &i, sizeof i, NULL),
                     SAGA_OK);
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.nrx, 0);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    cr_assert_eq(tsuite_g.nrx, 0);
    for (int i = 5; i < 10; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", &i, sizeof i, NULL),
                     SAGA_OK);
    int want = 10;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &want));
    for (int i = 0; i < 10; i++) {
        int v;
        cr_assert_eq(tsuite_g.rx[i].len, sizeof v);
        memcpy(&v, tsuite_g.rx[i].buf, sizeof v);
        cr_assert_eq(v, i, "message %d came as %d", i, v);
    }
    tsuite_teardown(&env, fx);
}

static void tsuite_key_order(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    tsuite_g.auto_ack = 1;
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    enum { N = 1000, K = 7 };
    for (int i = 0; i < N; i++) {
        char key[16];
        int msg[2] = {i % K, i / K};
        snprintf(key, sizeof key, "key-%d", i % K);
        cr_assert_eq(tsuite_send(env.a, fx->topic, key, msg, sizeof msg, NULL),
                     SAGA_OK);
    }
    int want = N;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &want));
    int next[K] = {0};
    for (int i = 0; i < N; i++) {
        int msg[2];
        char key[16];
        cr_assert_eq(tsuite_g.rx[i].len, sizeof msg);
        memcpy(msg, tsuite_g.rx[i].buf, sizeof msg);
        snprintf(key, sizeof key, "key-%d", msg[0]);
        cr_assert_str_eq(tsuite_g.rx[i].key, key);
        cr_assert_eq(msg[1], next[msg[0]], "key %d: got %d, want %d", msg[0],
                     msg[1], next[msg[0]]);
        next[msg[0]]++;
    }
    tsuite_teardown(&env, fx);
}

/* Receive @p n distinct ints 0..n-1 per group tag in @p tags; each group
 * gets each exactly once. */
static void tsuite_check_groups(int n, int ngroups, int *per_tag)
{
    static char seen[8][TSUITE_MAX_MSGS];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < tsuite_g.nrx; i++) {
        int v, g = tsuite_g.rx[i].group;
        cr_assert(g >= 1 && g <= 8);
        memcpy(&v, tsuite_g.rx[i].buf, sizeof v);
        cr_assert(v >= 0 && v < n);
        int slot = ngroups == 1 ? 0 : g - 1;
        cr_assert_eq(seen[slot][v], 0, "message %d twice in a group", v);
        seen[slot][v] = 1;
        if (per_tag != NULL)
            per_tag[g - 1]++;
    }
}

static void tsuite_two_groups(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    tsuite_g.auto_ack = 1;
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g1", 1), SAGA_OK);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g2", 2), SAGA_OK);
    enum { N = 100 };
    for (int i = 0; i < N; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, i % 2 ? "a" : NULL, &i,
                                 sizeof i, NULL),
                     SAGA_OK);
    int want = 2 * N;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &want));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.nrx, 2 * N);
    int per[8] = {0};
    tsuite_check_groups(N, 2, per);
    cr_assert_eq(per[0], N);
    cr_assert_eq(per[1], N);
    tsuite_teardown(&env, fx);
}

static void tsuite_shared_group(const saga_tsuite_fixture *fx)
{
    if (!(fx->features & SAGA_TSUITE_SHARED_GROUPS))
        cr_skip_test("transport has no groups shared across endpoints");
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    tsuite_g.auto_ack = 1;
    cr_assert_eq(tsuite_sub(env.a, fx->topic, "g", 1), SAGA_OK);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 2), SAGA_OK);
    enum { N = 400 };
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i % 13);
        cr_assert_eq(tsuite_send(env.a, fx->topic, i % 2 ? key : NULL, &i,
                                 sizeof i, NULL),
                     SAGA_OK);
    }
    int want = N;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &want));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.nrx, N, "lost or duplicated messages");
    int per[8] = {0};
    tsuite_check_groups(N, 1, per);
    cr_assert_gt(per[0], 0, "subscriber on A got nothing");
    cr_assert_gt(per[1], 0, "subscriber on B got nothing");
    tsuite_teardown(&env, fx);
}

static void tsuite_reopen_b(saga_tsuite_env *env, const saga_tsuite_fixture *fx)
{
    env->b->close(env->b);
    env->b = NULL;
    cr_assert_eq(fx->reopen_b(env), SAGA_OK, "fixture reopen_b failed");
    cr_assert_not_null(env->b);
}

static void tsuite_ack(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    int sent = 0;
    cr_assert_eq(tsuite_send(env.a, fx->topic, "k", "first", 5, &sent),
                 SAGA_OK);
    int one = 1;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &one));
    tsuite_rx *r = &tsuite_g.rx[0];
    cr_assert_eq(r->len, 5);
    cr_assert_eq(memcmp(r->buf, "first", 5), 0);
    /* The buffer is still readable until the ack. */
    cr_assert_eq(env.b->ack(env.b, r->d), SAGA_OK);
    r->d = NULL;
    cr_assert_eq(env.b->ack(env.b, NULL), SAGA_EINVAL);
    cr_assert(tsuite_run_until(&env, tsuite_have_sent, &one));
    cr_assert_eq(tsuite_g.sent_ok, 1);
    if (fx->features & SAGA_TSUITE_REDELIVER) {
        /* An acked message does not come back to a new subscriber. */
        tsuite_reopen_b(&env, fx);
        tsuite_g.auto_ack = 1;
        cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", "marker", 6, NULL),
                     SAGA_OK);
        int two = 2;
        cr_assert(tsuite_run_until(&env, tsuite_have_rx, &two));
        tsuite_settle(&env);
        cr_assert_eq(tsuite_g.nrx, 2);
        cr_assert_eq(tsuite_g.rx[1].len, 6);
        cr_assert_eq(memcmp(tsuite_g.rx[1].buf, "marker", 6), 0);
    }
    tsuite_teardown(&env, fx);
}

static void tsuite_redeliver(const saga_tsuite_fixture *fx)
{
    if (!(fx->features & SAGA_TSUITE_REDELIVER))
        cr_skip_test("transport does not redeliver to a new endpoint");
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    int once[3] = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tsuite_send(env.a, fx->topic, "k", &i, sizeof i, &once[i]),
                     SAGA_OK);
    int three = 3;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &three));
    /* Ack the first only, and let A see it (a transport may confirm a
     * send only on the receiver's ack); B goes away holding the rest. */
    cr_assert_eq(env.b->ack(env.b, tsuite_g.rx[0].d), SAGA_OK);
    cr_assert(tsuite_run_until(&env, tsuite_flag_set, &once[0]));
    for (int i = 0; i < 3; i++)
        tsuite_g.rx[i].d = NULL;
    tsuite_reopen_b(&env, fx);
    tsuite_g.auto_ack = 1;
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    int five = 5;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &five));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.nrx, 5);
    for (int i = 3; i < 5; i++) {
        int v;
        memcpy(&v, tsuite_g.rx[i].buf, sizeof v);
        cr_assert_eq(v, i - 2, "redelivered %d, want %d", v, i - 2);
    }
    tsuite_teardown(&env, fx);
}

static void tsuite_sub_dup(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_EDUP);
    cr_assert_not_null(env.b->errmsg(env.b));
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "other", 2), SAGA_OK);
    cr_assert_eq(tsuite_sub(env.b, "another-topic", "g", 3), SAGA_OK);
    tsuite_teardown(&env, fx);
}

static void tsuite_bad_args(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    saga_transport *a = env.a;
    cr_assert_eq(tsuite_send(a, NULL, "k", "x", 1, NULL), SAGA_EINVAL);
    cr_assert_eq(tsuite_send(a, "", "k", "x", 1, NULL), SAGA_EINVAL);
    cr_assert_eq(tsuite_send(a, fx->topic, "k", NULL, 3, NULL), SAGA_EINVAL);
    cr_assert_not_null(a->errmsg(a));
    cr_assert_eq(a->subscribe(a, NULL, "g", tsuite_recv_cb, NULL), SAGA_EINVAL);
    cr_assert_eq(a->subscribe(a, fx->topic, NULL, tsuite_recv_cb, NULL),
                 SAGA_EINVAL);
    cr_assert_eq(a->subscribe(a, fx->topic, "g", NULL, NULL), SAGA_EINVAL);
    cr_assert_eq(a->ack(a, NULL), SAGA_EINVAL);
    cr_assert_not_null(a->errmsg(a));
    tsuite_settle(&env);
    /* A failed call never runs its callback. */
    cr_assert_eq(tsuite_g.sent_calls, 0);
    tsuite_teardown(&env, fx);
}

static void tsuite_closed(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    int once = 0;
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 1), SAGA_OK);
    cr_assert_eq(tsuite_send(env.a, fx->topic, "k", "x", 1, &once), SAGA_OK);
    tsuite_g.in_call = 1; /* close must not call back either */
    env.a->close(env.a);
    tsuite_g.in_call = 0;
    /* The memory lives until the loop runs, so these calls are legal. */
    cr_assert_eq(tsuite_send(env.a, fx->topic, "k", "y", 1, NULL),
                 SAGA_ECLOSED);
    cr_assert_eq(tsuite_sub(env.a, fx->topic, "g2", 2), SAGA_ECLOSED);
    env.a->close(env.a); /* twice is harmless */
    env.a = NULL;
    uv_run(&env.loop, UV_RUN_NOWAIT);
    tsuite_settle(&env);
    /* The pending send ended exactly once: confirmed or SAGA_ECLOSED. */
    cr_assert_eq(tsuite_g.sent_calls, 1);
    cr_assert_eq(once, 1);
    tsuite_ack_all();
    tsuite_teardown(&env, fx);
}

static void tsuite_route(const saga_tsuite_fixture *fx)
{
    saga_tsuite_env env;
    tsuite_setup(&env, fx);
    saga_transport *a = env.a;
    if (a->version < 2 || a->route == NULL) {
        tsuite_teardown(&env, fx);
        cr_skip_test("transport has no route slot (version 1)");
    }
    tsuite_g.auto_ack = 1;
    tsuite_g.in_call = 1; /* route never calls back */
    cr_assert_eq(a->route(a, fx->topic), SAGA_OK);
    cr_assert_eq(a->route(a, NULL), SAGA_EINVAL);
    cr_assert_eq(a->route(a, ""), SAGA_EINVAL);
    cr_assert_not_null(a->errmsg(a));
    int unknown = a->route(a, "no-such-destination");
    tsuite_g.in_call = 0;
    if (fx->features & SAGA_TSUITE_KNOWS_ROUTES) {
        cr_assert_eq(unknown, SAGA_ENOROUTE);
        cr_assert(strstr(a->errmsg(a), "no-such-destination") != NULL,
                  "errmsg does not name the topic: %s", a->errmsg(a));
        /* send agrees with route, at once, and never calls back. */
        cr_assert_eq(tsuite_send(a, "no-such-destination", "k", "x", 1, NULL),
                     SAGA_ENOROUTE);
    } else {
        cr_assert_eq(unknown, SAGA_OK,
                     "a transport without KNOWS_ROUTES must route any topic");
    }
    /* A topic subscribed on A routes on A, and A's sends reach it. */
    cr_assert_eq(tsuite_sub(a, "local-topic", "g", 1), SAGA_OK);
    cr_assert_eq(a->route(a, "local-topic"), SAGA_OK);
    cr_assert_eq(tsuite_send(a, "local-topic", "k", "self", 4, NULL), SAGA_OK);
    /* The ordinary destination still works beside it. */
    cr_assert_eq(tsuite_sub(env.b, fx->topic, "g", 2), SAGA_OK);
    cr_assert_eq(tsuite_send(a, fx->topic, "k", "peer", 4, NULL), SAGA_OK);
    int two = 2;
    cr_assert(tsuite_run_until(&env, tsuite_have_rx, &two));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.nrx, 2);
    int self = 0, peer = 0;
    for (int i = 0; i < 2; i++) {
        tsuite_rx *r = &tsuite_g.rx[i];
        if (r->group == 1) {
            self++;
            cr_assert_str_eq(r->topic, "local-topic");
            cr_assert_eq(memcmp(r->buf, "self", 4), 0);
        } else {
            peer++;
            cr_assert_str_eq(r->topic, fx->topic);
        }
    }
    cr_assert_eq(self, 1, "self %d peer %d", self, peer);
    cr_assert_eq(peer, 1);
    /* Both sends confirmed once; the refused one never called back. */
    cr_assert(tsuite_run_until(&env, tsuite_have_sent, &two));
    tsuite_settle(&env);
    cr_assert_eq(tsuite_g.sent_calls, 2, "a refused send called back");
    cr_assert_eq(tsuite_g.sent_ok, 2);
    tsuite_teardown(&env, fx);
}

#define SAGA_TRANSPORT_CONFORMANCE(name, fixture)                              \
    Test(name, roundtrip, .timeout = 60) { tsuite_roundtrip(&(fixture)); }     \
    Test(name, sent_cb_once, .timeout = 60) { tsuite_sent_once(&(fixture)); }  \
    Test(name, recv_not_reentrant, .timeout = 60)                              \
    {                                                                          \
        tsuite_recv_not_reentrant(&(fixture));                                 \
    }                                                                          \
    Test(name, key_order, .timeout = 60) { tsuite_key_order(&(fixture)); }     \
    Test(name, two_groups, .timeout = 60) { tsuite_two_groups(&(fixture)); }   \
    Test(name, shared_group, .timeout = 60)                                    \
    {                                                                          \
        tsuite_shared_group(&(fixture));                                       \
    }                                                                          \
    Test(name, ack, .timeout = 60) { tsuite_ack(&(fixture)); }                 \
    Test(name, redeliver, .timeout = 60) { tsuite_redeliver(&(fixture)); }     \
    Test(name, subscribe_dup, .timeout = 60) { tsuite_sub_dup(&(fixture)); }   \
    Test(name, bad_args, .timeout = 60) { tsuite_bad_args(&(fixture)); }       \
    Test(name, closed, .timeout = 60) { tsuite_closed(&(fixture)); }           \
    Test(name, route, .timeout = 60) { tsuite_route(&(fixture)); }

#endif /* SAGA_TESTS_TRANSPORT_SUITE_H */

/*
 * consumer.c — a program built against the INSTALLED libsaga, the way a
 * user's service is: only <saga/saga.h>, linked through pkg-config or
 * find_package(saga). run.sh builds it three ways (pkg-config shared,
 * pkg-config static, CMake shared + static) and runs each binary.
 *
 * While the library is being written some parts of the API are not exported
 * yet; run.sh looks at the installed libsaga.so and defines
 * SAGA_CONSUMER_DEF / SAGA_CONSUMER_ENGINE only for the parts it finds, and
 * the program prints which parts it exercised.
 */
#include <saga/saga.h>

#include <stdio.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "consumer: %s:%d: check failed: %s\n", __FILE__,   \
                    __LINE__, #cond);                                          \
            failures++;                                                        \
        }                                                                      \
    } while (0)

#if defined(SAGA_CONSUMER_DEF) || defined(SAGA_CONSUMER_ENGINE)
/* A local step that succeeds at once; the saga then completes. */
static void step_ok(saga_engine *e, const saga_step_ref *ref, const void *data,
                    size_t len, void *arg)
{
    (void)data;
    (void)len;
    (void)arg;
#ifdef SAGA_CONSUMER_ENGINE
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
#else
    (void)e;
    (void)ref;
#endif
}

static saga_def *make_def(void)
{
    saga_def *d = NULL;
    CHECK(saga_def_new(&d, "consumer", 1) == SAGA_OK);
    if (d == NULL)
        return NULL;
    CHECK(saga_def_add_step(d, "reserve", step_ok, step_ok, NULL, NULL) ==
          SAGA_OK);
    CHECK(saga_def_add_step(d, "charge", step_ok, step_ok, NULL, NULL) ==
          SAGA_OK);
    CHECK(saga_def_step_count(d) == 2);
    return d;
}
#endif

#ifdef SAGA_CONSUMER_ENGINE
static void on_done(saga_engine *e, const char *saga_id, saga_state state,
                    void *arg)
{
    (void)e;
    (void)saga_id;
    *(int *)arg = (int)state;
}

/* One saga, start to COMPLETED, on the in-memory store and the engine's own
 * loop. */
static void run_engine(void)
{
    saga_store *store = NULL;
    saga_engine *e = NULL;
    char id[SAGA_ID_SIZE];
    int done = 0;

    CHECK(saga_store_memory_new(&store) == SAGA_OK);
    if (store == NULL)
        return;
    CHECK(saga_engine_new(&e, store, NULL, NULL) == SAGA_OK);
    if (e == NULL) {
        saga_store_free(store); /* still ours: the engine was not made */
        return;
    }
    saga_def *d = make_def();
    if (d != NULL && saga_engine_register(e, d) != SAGA_OK) {
        CHECK(!"saga_engine_register");
        saga_def_free(d);
    }
    CHECK(saga_engine_start(e) == SAGA_OK);
    CHECK(saga_start(e, "consumer", "order-1", NULL, 0, id, NULL, NULL) ==
          SAGA_OK);
    CHECK(saga_on_done(e, id, on_done, &done) == SAGA_OK);
    saga_engine_run(e, SAGA_RUN_DEFAULT);
    CHECK(done == SAGA_STATE_COMPLETED);
    saga_engine_free(e);
}
#endif

int main(void)
{
    const char *parts = "version, errors";

    CHECK(saga_version() == SAGA_VERSION_NUMBER);
    CHECK(strcmp(saga_version_string(), SAGA_VERSION_STRING) == 0);
    CHECK(strcmp(saga_strerror(SAGA_ENOTFOUND), "not found") == 0);
    CHECK(strcmp(saga_strerror(SAGA_OK), "unknown error") != 0);
    CHECK(strcmp(saga_err_name(SAGA_EDUP), "SAGA_EDUP") == 0);

#if defined(SAGA_CONSUMER_DEF) || defined(SAGA_CONSUMER_ENGINE)
    saga_def_free(make_def());
    parts = "version, errors, def";
#endif
#ifdef SAGA_CONSUMER_ENGINE
    run_engine();
    parts = "version, errors, def, engine on the memory store";
#endif

    if (failures != 0) {
        fprintf(stderr, "consumer: %d check(s) failed\n", failures);
        return 1;
    }
    printf("consumer: libsaga %s OK (%s)\n", saga_version_string(), parts);
    return 0;
}

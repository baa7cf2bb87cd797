/*
 * test_participant_options.c — saga_participant_options_init(), and a
 * caller built against options version 1 (a shorter struct) still works:
 * the participant reads no byte past its version's fields (ASan checks).
 */
#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

Test(participant_options, init_sets_version_and_defaults)
{
    saga_participant_options o;
    memset(&o, 0xab, sizeof o);
    cr_assert_eq(
        saga_participant_options_init(&o, SAGA_PARTICIPANT_OPTIONS_VERSION),
        SAGA_OK);
    cr_assert_eq(o.version, SAGA_PARTICIPANT_OPTIONS_VERSION);
    cr_assert_null(o.service);
    cr_assert_eq(o.handler_max_tries, 0);
    cr_assert_eq(o.retention_ms, 0);
    cr_assert_eq(saga_participant_options_init(NULL, 1), SAGA_EINVAL);
    cr_assert_eq(saga_participant_options_init(&o, 0), SAGA_EVERSION);
    cr_assert_eq(
        saga_participant_options_init(&o, SAGA_PARTICIPANT_OPTIONS_VERSION + 1),
        SAGA_EVERSION);
}

/* An older caller's options struct of exactly @p size bytes, initialised
 * as version @p version: the participant reads no byte past it (ASan would
 * report it), starts and closes. */
static void run_with_old_options(int version, size_t size)
{
    saga_participant_options *o = saga_malloc(size);
    cr_assert_not_null(o);
    cr_assert_eq(saga_participant_options_init(o, version), SAGA_OK);
    o->service = "inventory";
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_inmem_bus *bus;
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, s, t, o), SAGA_OK);
    saga_free(o);
    cr_assert_eq(saga_participant_start(p), SAGA_OK);
    saga_participant_close(p, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

Test(participant_options, version_1_struct_is_read_only_that_far)
{
    run_with_old_options(1,
                         offsetof(saga_participant_options, handler_max_tries));
}

/* Version 3 appended max_batch and max_batch_ms: a version-2 caller's
 * struct ends before them, and they take their defaults. */
Test(participant_options, version_2_struct_is_read_only_that_far)
{
    run_with_old_options(2, offsetof(saga_participant_options, max_batch));
}

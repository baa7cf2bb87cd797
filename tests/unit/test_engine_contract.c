/*
 * test_engine_contract.c — the engine's API contract under misuse (issue 7,
 * items 9 to 16): closing, freeing and flushing at the wrong time, NULL
 * arguments, plug-ins with missing slots, definitions shared or changed
 * after registration.
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

static void boot(const char *kinds)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, kinds, NULL);
    cr_assert_not_null(d);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
}

TestSuite(contract, .init = setup, .fini = teardown);

/* --- item 11: NULL getters ---------------------------------------------- */

Test(contract, getters_accept_null)
{
    cr_expect_eq(saga_engine_now(NULL), 0);
    cr_expect_eq(saga_engine_seed(NULL), 0u);
    cr_expect_null(saga_engine_loop(NULL));
    cr_expect_str_eq(saga_engine_errmsg(NULL), "invalid argument");
}

/* --- item 16: NULL output with a length ---------------------------------- */

Test(contract, complete_refuses_null_output_with_a_length)
{
    H.script[0] = "h";
    boot("c");
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 5,
                                    NULL),
                 SAGA_EINVAL);
    cr_expect(strstr(saga_engine_errmsg(H.e), "NULL") != NULL, "%s",
              saga_engine_errmsg(H.e));
    /* The attempt is still current: a correct report goes through. */
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

/* --- item 10: completing after close ------------------------------------- */

static void closed(void *arg) { *(int *)arg = 1; }

Test(contract, complete_after_close_is_eclosed)
{
    H.script[0] = "h";
    boot("c");
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    h_pump(&H);
    int done = 0;
    saga_engine_close(H.e, closed, &done);
    cr_expect_eq(saga_step_complete(H.e, &H.pending, SAGA_OUTCOME_OK, NULL, 0,
                                    NULL),
                 SAGA_ECLOSED);
    cr_expect_eq(saga_cancel(H.e, id, NULL), SAGA_ECLOSED);
    cr_expect_eq(saga_retry(H.e, id), SAGA_ECLOSED);
    while (!done)
        uv_run(&H.loop, UV_RUN_ONCE);
    H.e = NULL;
}

/* --- item 15: flush inside an action ------------------------------------- */

static int flush_rc = 1;
static char flush_msg[256];
static void flushing_action(saga_engine *e, const saga_step_ref *ref,
                            const void *d, size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
    flush_rc = saga_engine_flush(e);
    snprintf(flush_msg, sizeof flush_msg, "%s", saga_engine_errmsg(e));
}

Test(contract, flush_inside_an_action_is_ebusy_with_a_reason)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d;
    saga_def_new(&d, "f", 1);
    saga_def_add_step(d, "a", flushing_action, NULL, NULL, NULL);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "f", NULL, NULL, 0, id, NULL, NULL), SAGA_OK);
    cr_expect_eq(saga_engine_flush(H.e), SAGA_OK);
    cr_expect_eq(flush_rc, SAGA_EBUSY, "%s", saga_err_name(flush_rc));
    cr_expect(strstr(flush_msg, "callback") != NULL, "message: '%s'",
              flush_msg);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(H.e, &st);
    cr_expect_eq(st.commit_failures, 0u);
}

/* --- item 13: one definition, one engine; frozen once registered --------- */

static void ok_action(saga_engine *e, const saga_step_ref *ref, const void *d,
                      size_t l, void *arg)
{
    (void)d, (void)l, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

Test(contract, a_registered_definition_is_owned_and_frozen)
{
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_engine *e2;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &H.loop;
    o.log_level = SAGA_LOG_ERROR;
    cr_assert_eq(saga_engine_new(&e2, NULL, NULL, &o), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "shared", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "a", ok_action, NULL, NULL, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    /* A second engine would free it too (use-after-free): refused. */
    cr_expect_eq(saga_engine_register(e2, d), SAGA_EBUSY);
    cr_expect(strstr(saga_engine_errmsg(e2), "registered") != NULL, "%s",
              saga_engine_errmsg(e2));
    /* Changing it under running sagas: refused, with a reason. */
    cr_expect_eq(saga_def_add_step(d, "b", ok_action, NULL, NULL, NULL),
                 SAGA_EBUSY);
    cr_expect(strstr(saga_def_errmsg(d), "registered") != NULL, "%s",
              saga_def_errmsg(d));
    cr_expect_eq(saga_def_set_deadline(d, 1000), SAGA_EBUSY);
    cr_expect_eq(saga_def_step_count(d), 1u);
    cr_expect_eq(saga_def_deadline(d), 0u);
    saga_engine_free(e2);
    /* Still usable by its engine. */
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "shared", NULL, NULL, 0, id, NULL, NULL),
                 SAGA_OK);
    h_pump(&H);
    cr_expect_eq(h_state(&H, id), SAGA_STATE_COMPLETED);
}

/* --- item 12: plug-ins with missing slots -------------------------------- */

#include <saga/participant.h>

static char plog[512];
static void plog_cb(saga_log_level lvl, const char *id, int step,
                    const char *msg, void *arg)
{
    (void)lvl, (void)id, (void)step, (void)arg;
    snprintf(plog, sizeof plog, "%s", msg);
}

Test(contract, plugins_with_missing_slots_are_refused_naming_the_slot)
{
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &H.loop;
    o.log = plog_cb;
    saga_engine *e = (saga_engine *)&o; /* must be reset to NULL */
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    s->purge = NULL;
    plog[0] = 0;
    cr_expect_eq(saga_engine_new(&e, s, NULL, &o), SAGA_EINVAL);
    cr_expect_null(e);
    cr_expect(strstr(plog, "'purge'") != NULL, "log: '%s'", plog);
    saga_store_free(s); /* still the caller's */

    saga_inmem_bus *bus;
    cr_assert_eq(saga_inmem_bus_new(&bus, &H.loop), SAGA_OK);
    saga_transport *t;
    cr_assert_eq(saga_transport_inmem_new(&t, bus), SAGA_OK);
    saga_transport ack_slot = *t;
    t->ack = NULL;
    plog[0] = 0;
    cr_expect_eq(saga_engine_new(&e, NULL, t, &o), SAGA_EINVAL);
    cr_expect(strstr(plog, "transport") && strstr(plog, "'ack'"), "log: '%s'",
              plog);

    /* The participant uses the same check. */
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    s->kv_put = NULL;
    saga_participant_options po = SAGA_PARTICIPANT_OPTIONS_INIT;
    po.service = "svc";
    po.log = plog_cb;
    saga_participant *p = NULL;
    plog[0] = 0;
    t->ack = ack_slot.ack;
    cr_expect_eq(saga_participant_new(&p, &H.loop, s, t, &po), SAGA_EINVAL);
    cr_expect_null(p);
    cr_expect(strstr(plog, "store") && strstr(plog, "'kv_put'"), "log: '%s'",
              plog);
    saga_store_free(s);
    saga_transport_free(t);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
}

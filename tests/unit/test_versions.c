/* test_versions.c — one rule for versions (a bad options, vtable or counter
 * version is SAGA_EVERSION everywhere) and one for constructor failures (the
 * reason is in saga_open_errmsg()). docs/api/README.md. */
#include <criterion/criterion.h>
#include <string.h>

#include <uv.h>

#include "saga/def.h"
#include "saga/engine.h"
#include "saga/participant.h"
#include "saga/store.h"
#include "saga/tcp.h"
#include "saga/testing.h"
#include "saga/transport.h"

Test(versions, options_init_refuses_bad_versions_with_eversion)
{
    saga_step_options so;
    saga_engine_options eo;
    saga_participant_options po;
    saga_sqlite_options qo;
    saga_tcp_options to;
    saga_test_options xo;
    cr_expect_eq(saga_step_options_init(&so, 0), SAGA_EVERSION);
    cr_expect_eq(saga_step_options_init(&so, 99), SAGA_EVERSION);
    cr_expect_eq(saga_step_options_init(NULL, 1), SAGA_EINVAL);
    cr_expect_eq(saga_engine_options_init(&eo, 0), SAGA_EVERSION);
    cr_expect_eq(saga_engine_options_init(&eo, 99), SAGA_EVERSION);
    cr_expect_eq(saga_participant_options_init(&po, 99), SAGA_EVERSION);
    cr_expect_eq(saga_sqlite_options_init(&qo, 99), SAGA_EVERSION);
    cr_expect_eq(saga_tcp_options_init(&to, 99), SAGA_EVERSION);
    cr_expect_eq(saga_test_options_init(&xo, 0), SAGA_EVERSION);
    cr_expect_eq(saga_test_options_init(&xo, 99), SAGA_EVERSION);
    cr_expect_eq(saga_store_init(NULL, 1), SAGA_EINVAL);
}

static void noop(saga_engine *e, const saga_step_ref *ref, const void *data,
                 size_t len, void *arg)
{
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

Test(versions, step_options_version_is_eversion_with_a_message)
{
    saga_def *d = NULL;
    cr_assert_eq(saga_def_new(&d, "v", 1), SAGA_OK);
    saga_step_options o = {.version = 99};
    cr_expect_eq(saga_def_add_step(d, "a", noop, NULL, &o, NULL),
                 SAGA_EVERSION);
    cr_expect_neq(strstr(saga_def_errmsg(d), "version 99"), NULL, "%s",
                  saga_def_errmsg(d));
    saga_def_free(d);
}

Test(versions, test_run_one_refuses_a_bad_options_version)
{
    saga_def *d = NULL;
    cr_assert_eq(saga_def_new(&d, "v", 1), SAGA_OK);
    cr_assert_eq(saga_def_add_step(d, "a", noop, NULL, NULL, NULL), SAGA_OK);
    saga_test_options o = {.version = 99};
    saga_test_run run;
    cr_expect_eq(saga_test_run_one(d, NULL, 0, NULL, &o, &run), SAGA_EVERSION);
    saga_def_free(d);
}

Test(versions, engine_new_refuses_a_bad_vtable_version)
{
    saga_store *s = NULL;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    unsigned int v = s->version;
    s->version = 99;
    saga_engine *e = NULL;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.log_level = SAGA_LOG_ERROR + 1; /* quiet */
    cr_expect_eq(saga_engine_new(&e, s, NULL, &o), SAGA_EVERSION);
    s->version = v;
    saga_store_free(s);
}

Test(ctor_errors, sqlite_open_keeps_its_reason)
{
    saga_store *s = NULL;
    int rc = saga_store_sqlite_open(&s, "/nonexistent-dir/x/y.db", NULL);
    cr_assert_neq(rc, SAGA_OK);
    cr_expect_null(s);
    cr_expect_neq(strstr(saga_open_errmsg(), "sqlite"), NULL, "%s",
                  saga_open_errmsg());
    cr_expect_neq(strstr(saga_open_errmsg(), "/nonexistent-dir"), NULL, "%s",
                  saga_open_errmsg());
    saga_sqlite_options o = {.version = 99};
    cr_expect_eq(saga_store_sqlite_open(&s, "x.db", &o), SAGA_EVERSION);
    cr_expect_neq(strstr(saga_open_errmsg(), "version 99"), NULL, "%s",
                  saga_open_errmsg());
    /* The same through the name-based opener. */
    cr_expect_neq(saga_store_open(&s, "/nonexistent-dir/x/y.db"), SAGA_OK);
    cr_expect_neq(strstr(saga_open_errmsg(), "sqlite"), NULL, "%s",
                  saga_open_errmsg());
}

Test(ctor_errors, tcp_new_keeps_its_reason)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    saga_transport *t = NULL;
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.listen = "not-an-address";
    cr_expect_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EINVAL);
    cr_expect_null(t);
    cr_expect_neq(strstr(saga_open_errmsg(), "listen"), NULL, "%s",
                  saga_open_errmsg());
    o = (saga_tcp_options){.version = 0};
    cr_expect_eq(saga_transport_tcp_new(&t, &loop, &o), SAGA_EVERSION);
    cr_expect_neq(strstr(saga_open_errmsg(), "version"), NULL, "%s",
                  saga_open_errmsg());
    cr_expect_eq(saga_transport_inmem_new(&t, NULL), SAGA_EINVAL);
    cr_expect_neq(strstr(saga_open_errmsg(), "bus"), NULL, "%s",
                  saga_open_errmsg());
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(ctor_errors, plugin_sets_the_message)
{
    saga_open_errmsg_set("mine: %d", 7);
    cr_expect_str_eq(saga_open_errmsg(), "mine: 7");
}

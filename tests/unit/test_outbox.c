/*
 * test_outbox.c — the transactional outbox across a crash: a command
 * committed but never published (the transport refused it) is published by
 * the next engine on the same file, and the saga completes. Nothing is
 * lost, and the participant applies it once.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

#include "fault_transport.h"

static uv_loop_t loop;
static saga_inmem_bus *bus;
static char dir[64], path[128];
static int applied;

static int h_do(saga_participant *p, const saga_command *c, saga_reply *r,
                void *arg)
{
    (void)p, (void)c, (void)r, (void)arg;
    applied++;
    return SAGA_OK;
}

static int count_outbox(const saga_message *m, void *arg)
{
    (void)m;
    (*(int *)arg)++;
    return 0;
}

static saga_engine *mk_engine(saga_transport *t)
{
    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_OK);
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.service = "orders";
    o.log_level = SAGA_LOG_ERROR;
    saga_engine *e;
    cr_assert_eq(saga_engine_new(&e, s, t, &o), SAGA_OK);
    saga_def *d;
    saga_def_new(&d, "one", 1);
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.service = "svc";
    so.command = "do";
    cr_assert_eq(saga_def_add_step(d, "do", NULL, NULL, &so, NULL), SAGA_OK);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK, "%s", saga_engine_errmsg(e));
    return e;
}

static void pump(void)
{
    for (int i = 0; i < 100; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

Test(outbox, committed_command_is_published_after_restart)
{
    strcpy(dir, "/tmp/saga-outbox-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/o.db", dir);
    uv_loop_init(&loop);
    cr_assert_eq(saga_inmem_bus_new(&bus, &loop), SAGA_OK);

    /* First life: every publish fails. */
    saga_transport *inner, *t;
    fault_transport *ft;
    cr_assert_eq(saga_transport_inmem_new(&inner, bus), SAGA_OK);
    cr_assert_eq(fault_transport_new(&t, inner, &ft), SAGA_OK);
    fault_transport_refuse_sends(ft, 1);
    saga_engine *e = mk_engine(t);
    char id[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(e, "one", "k", NULL, 0, id, NULL, NULL), SAGA_OK);
    pump();
    cr_expect_geq(fault_transport_sends(ft), 1u, "no publish was tried");
    saga_engine_free(e); /* the process ends with the command unpublished */

    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_OK);
    int n = 0;
    cr_assert_eq(s->outbox_scan(s, 0, count_outbox, &n), SAGA_OK);
    cr_expect_eq(n, 1, "the command must wait in the outbox");
    saga_store_free(s);

    /* Second life: a working transport and the participant. */
    saga_transport *pt, *t2;
    saga_store *ps;
    cr_assert_eq(saga_store_memory_new(&ps), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&pt, bus), SAGA_OK);
    saga_participant_options po = SAGA_PARTICIPANT_OPTIONS_INIT;
    po.service = "svc";
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, ps, pt, &po), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, "do", h_do, NULL), SAGA_OK);
    cr_assert_eq(saga_participant_start(p), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&t2, bus), SAGA_OK);
    applied = 0;
    e = mk_engine(t2);
    pump();
    saga_info *i;
    cr_assert_eq(saga_get(e, id, &i), SAGA_OK);
    cr_expect_eq(saga_info_state(i), SAGA_STATE_COMPLETED);
    saga_info_free(i);
    cr_expect_eq(applied, 1);
    /* Published and confirmed: the row is gone. */
    saga_engine_free(e);
    cr_assert_eq(saga_store_sqlite_open(&s, path, NULL), SAGA_OK);
    n = 0;
    cr_assert_eq(s->outbox_scan(s, 0, count_outbox, &n), SAGA_OK);
    cr_expect_eq(n, 0, "a published command stayed in the outbox");
    saga_store_free(s);

    saga_participant_close(p, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

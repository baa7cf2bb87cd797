/*
 * test_store_postgres.c — the store conformance suite on the PostgreSQL
 * store, plus what only it has: options, a schema shared by two opens,
 * the schema version check, and a lost connection.
 *
 * Run by tests/pg/with-pg.sh, which starts a throwaway server and sets
 * SAGA_PG_URL. Each test works in a schema of its own.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "saga/postgres.h"
#include "store_suite.h"

static char schema[64];

static int pg_setup(saga_store **out)
{
    static int n;
    snprintf(schema, sizeof schema, "t_%d_%d", (int)getpid(), n++);
    saga_pg_options o;
    cr_assert_eq(saga_pg_options_init(&o, SAGA_PG_OPTIONS_VERSION), SAGA_OK);
    o.schema = schema;
    int rc = saga_store_postgres_open(out, NULL, &o);
    cr_assert_eq(rc, SAGA_OK, "open: %s (%s)", saga_strerror(rc),
                 saga_store_postgres_open_errmsg());
    return rc;
}

SAGA_STORE_CONFORMANCE(store_postgres, pg_setup)

/* ------------------------------------------------------------------------ */
/* PostgreSQL only                                                          */

static saga_store *open_schema(const char *name)
{
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = name;
    saga_store *s = NULL;
    int rc = saga_store_postgres_open(&s, NULL, &o);
    cr_assert_eq(rc, SAGA_OK, "open %s: %s (%s)", name, saga_strerror(rc),
                 saga_store_postgres_open_errmsg());
    return s;
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

static void admin_exec(const char *sql)
{
    PGconn *c = admin();
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK ||
                  PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

Test(postgres, bad_arguments_are_refused)
{
    saga_store *s = (saga_store *)1;
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    cr_assert_eq(saga_store_postgres_open(NULL, NULL, NULL), SAGA_EINVAL);
    o.schema = "Bad-Name";
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &o), SAGA_EINVAL);
    cr_assert_null(s);
    cr_assert_str_neq(saga_store_postgres_open_errmsg(), "");
    o.schema = NULL;
    o.version = 99;
    cr_assert_eq(saga_store_postgres_open(&s, NULL, &o), SAGA_EVERSION);
    cr_assert_eq(saga_pg_options_init(&o, 0), SAGA_EVERSION);
    cr_assert_eq(saga_pg_options_init(NULL, 1), SAGA_EINVAL);
}

Test(postgres, unreachable_server_is_a_store_error_with_its_reason)
{
    saga_store *s = NULL;
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.connect_timeout_s = 2;
    /* Port 1 on loopback: nothing listens there. */
    int rc = saga_store_postgres_open(&s,
                                      "postgresql://saga@127.0.0.1:1/postgres",
                                      &o);
    cr_assert_eq(rc, SAGA_ESTORE);
    cr_assert_null(s);
    cr_assert(strstr(saga_store_postgres_open_errmsg(), "connect") != NULL,
              "%s", saga_store_postgres_open_errmsg());
}

Test(postgres, two_opens_share_one_schema)
{
    saga_store *a = open_schema("shared_one");
    saga_store *b = open_schema("shared_one");
    cr_assert_eq(a->begin(a), SAGA_OK);
    ssc_insert(a, "X", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(a->commit(a), SAGA_OK);
    ssc_copy c;
    cr_assert_eq(ssc_get(b, "X", &c), SAGA_OK);
    free(c.data);
    saga_store_free(a);
    saga_store_free(b);
}

Test(postgres, newer_schema_is_refused)
{
    saga_store *s = open_schema("newer");
    saga_store_free(s);
    admin_exec("UPDATE newer.schema_version SET v = 999");
    saga_store *t = NULL;
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = "newer";
    cr_assert_eq(saga_store_postgres_open(&t, NULL, &o), SAGA_EVERSION);
    cr_assert_null(t);
}

Test(postgres, lost_connection_fails_the_batch_then_reconnects)
{
    saga_store *s = open_schema("lost");
    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "A", SAGA_STATE_RUNNING, 1);
    cr_assert_eq(s->commit(s), SAGA_OK);

    cr_assert_eq(s->begin(s), SAGA_OK);
    ssc_insert(s, "B", SAGA_STATE_RUNNING, 2);
    /* Kill the store's backend from outside, mid-transaction (only its
     * own: other tests run beside this one). */
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)",
             PQbackendPID(s->native_handle(s)));
    admin_exec(sql);
    saga_record r = ssc_rec("C", SAGA_STATE_RUNNING, 3);
    int rc = s->saga_put(s, &r, SAGA_PUT_INSERT);
    if (rc == SAGA_OK)
        rc = s->commit(s);
    cr_assert_eq(rc, SAGA_ESTORE, "a write on a dead connection: %d", rc);
    s->rollback(s);

    /* The next batch reconnects; nothing of the lost one remains. */
    cr_assert_eq(s->begin(s), SAGA_OK, "%s", s->errmsg(s));
    ssc_insert(s, "D", SAGA_STATE_RUNNING, 4);
    cr_assert_eq(s->commit(s), SAGA_OK);
    ssc_text t;
    cr_assert_str_eq(ssc_scan(s, SAGA_STATE_MASK_ALL, &t), "A D ");
    saga_store_free(s);
}

/*
 * pgm_child.c — one of several engine processes sharing one PostgreSQL
 * schema ("pgm"), each with a lease. The driver (pgm_driver.sh) SIGKILLs,
 * restarts, SIGSTOPs and SIGCONTs them.
 *
 *   pgm_child OWNER N LEASE_MS     (SAGA_PG_URL names the database)
 *
 * Every process starts sagas order-0 .. order-N-1 by idempotency key, in
 * its own order, so that the processes race on every key. Steps take time
 * (a timer of 50..250 ms before they report). Every action and
 * compensation, when invoked, appends a row to public.ledger with this
 * process's owner id (executor) and the saga row's owner and epoch at that
 * instant, read in the same statement. Outcomes are a pure function of the
 * saga id, step and attempt, so a rerun elsewhere behaves the same. Exits
 * 0 once all N sagas exist in the store and none is active.
 */
#include <libpq-fe.h>
#include <saga/postgres.h>
#include <saga/saga.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "child_script.h"

static const char *owner;
static PGconn *L;

static void ledger(char kind, const saga_step_ref *r)
{
    char step[16], attempt[16], k[2] = {kind, '\0'};
    snprintf(step, sizeof step, "%u", r->step);
    snprintf(attempt, sizeof attempt, "%u", r->attempt);
    const char *v[] = {r->saga_id, step, attempt, k, owner};
    PGresult *res = PQexecParams(
        L,
        "INSERT INTO public.ledger(saga_id, step, attempt, kind, executor, "
        "owner, epoch, at) SELECT $1, $2::int, $3::int, $4, $5, s.owner, "
        "s.epoch, clock_timestamp() FROM pgm.sagas s WHERE s.id = $1",
        5, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK ||
        strcmp(PQcmdTuples(res), "1") != 0) {
        fprintf(stderr, "%s: ledger: %s %s\n", owner, PQerrorMessage(L),
                PQcmdTuples(res));
        _exit(3);
    }
    PQclear(res);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    owner = argv[1];
    CS.nsagas = atoi(argv[2]);
    /* Each process walks the keys from its own offset, so that the
     * processes race on every key. */
    CS.offset = (int)(cs_h64(owner, 7) %
                      (uint64_t)(CS.nsagas > 0 ? CS.nsagas : 1));
    L = PQconnectdb(getenv("SAGA_PG_URL"));
    if (PQstatus(L) != CONNECTION_OK) {
        fprintf(stderr, "%s: ledger connection: %s", owner, PQerrorMessage(L));
        return 5;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_pg_options po = SAGA_PG_OPTIONS_INIT;
    po.schema = "pgm";
    po.lease_ms = (uint32_t)atoi(argv[3]);
    po.owner_id = owner;
    saga_store *store;
    if (saga_store_postgres_open(&store, NULL, &po) != SAGA_OK) {
        fprintf(stderr, "%s: open: %s\n", owner,
                saga_store_postgres_open_errmsg());
        return 5;
    }
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.log_level = getenv("PGM_DEBUG") ? SAGA_LOG_INFO : SAGA_LOG_ERROR;
    if (saga_engine_new(&CS.e, store, NULL, &o) != SAGA_OK)
        return 5;
    CS.def = "pgm";
    CS.name = owner;
    CS.ledger = ledger;
    CS.hang_pct = 5;
    CS.retry_pct = 15;
    CS.later_min_ms = 50; /* a step takes 50..250 ms, then reports */
    CS.later_span_ms = 200;
    CS.timeout_ms = 600;
    CS.backoff_ms = 5;
    CS.max_backoff_ms = 20;
    CS.per_tick = 4;
    CS.start_every_ms = 20;
    CS.check_every_ms = 100;
    int rc = cs_register();
    if (rc == 0)
        rc = cs_run(&loop);
    PQfinish(L);
    return rc;
}

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

static const char *owner;
static int nsagas, next_start, offset, closing;
static saga_engine *E;
static PGconn *L;
static uv_timer_t starter, checker;

static uint64_t h64(const char *s, uint64_t salt)
{
    uint64_t h = 1469598103934665603ull ^ salt;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void ledger(const char *kind, const saga_step_ref *r)
{
    char step[16], attempt[16];
    snprintf(step, sizeof step, "%u", r->step);
    snprintf(attempt, sizeof attempt, "%u", r->attempt);
    const char *v[] = {r->saga_id, step, attempt, kind, owner};
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

typedef struct later {
    uv_timer_t t;
    saga_step_ref ref;
    saga_outcome oc;
} later;

static void later_closed(uv_handle_t *h) { free(h->data); }
static void later_cb(uv_timer_t *t)
{
    later *l = t->data;
    /* SAGA_ESTALE or SAGA_ENOTFOUND when the saga moved to another
     * engine meanwhile: nothing to do. */
    if (!closing)
        saga_step_complete(E, &l->ref, l->oc, NULL, 0, "scripted");
    uv_close((uv_handle_t *)t, later_closed);
}

/* The step takes 50..250 ms, then reports. */
static void report(const saga_step_ref *r, saga_outcome oc)
{
    later *l = malloc(sizeof *l);
    if (l == NULL)
        _exit(4);
    l->ref = *r;
    l->oc = oc;
    uv_timer_init(saga_engine_loop(E), &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_cb,
                   50 + h64(r->saga_id, r->step * 31 + r->attempt) % 200, 0);
}

static void action(saga_engine *e, const saga_step_ref *r, const void *d,
                   size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    ledger("A", r);
    uint64_t x = h64(r->saga_id, 100 + r->step) % 100;
    if (r->step == 0 && r->attempt == 1 && x < 5)
        return; /* hangs: times out, may have applied */
    if (r->step == 0 && r->attempt == 1 && x < 15) {
        report(r, SAGA_OUTCOME_RETRY);
        return;
    }
    if (r->step == 1 && x < 25) {
        report(r, SAGA_OUTCOME_FAIL);
        return;
    }
    if (r->step == 3 && r->attempt < 3 && x < 30) {
        report(r, SAGA_OUTCOME_RETRY);
        return;
    }
    report(r, SAGA_OUTCOME_OK);
}

static void compensation(saga_engine *e, const saga_step_ref *r, const void *d,
                         size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    ledger("C", r);
    uint64_t x = h64(r->saga_id, 200 + r->step) % 100;
    report(r, r->attempt == 1 && x < 20 ? SAGA_OUTCOME_RETRY : SAGA_OUTCOME_OK);
}

static void start_some(uv_timer_t *t)
{
    (void)t;
    for (int k = 0; k < 4 && next_start < nsagas; k++, next_start++) {
        char key[32], id[SAGA_ID_SIZE];
        /* Each process walks the keys from its own offset. */
        snprintf(key, sizeof key, "order-%d", (next_start + offset) % nsagas);
        if (saga_start(E, "pgm", key, NULL, 0, id, NULL, NULL) != SAGA_OK) {
            fprintf(stderr, "%s: start: %s\n", owner, saga_engine_errmsg(E));
            _exit(4);
        }
    }
    if (next_start >= nsagas)
        uv_timer_stop(&starter);
}

static int count_cb(const char *id, saga_state s, const char *d, void *arg)
{
    (void)id, (void)s, (void)d;
    (*(int *)arg)++;
    return 0;
}

static void check(uv_timer_t *t)
{
    (void)t;
    int active = 0, all = 0;
    if (next_start < nsagas)
        return;
    if (saga_list(E, SAGA_STATE_MASK_ACTIVE, count_cb, &active) != SAGA_OK ||
        saga_list(E, SAGA_STATE_MASK_ALL, count_cb, &all) != SAGA_OK)
        return;
    if (active == 0 && all >= nsagas) {
        uv_timer_stop(&checker);
        uv_timer_stop(&starter);
        closing = 1; /* reports still pending are stale: dropped */
        saga_engine_close(E, NULL, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    owner = argv[1];
    nsagas = atoi(argv[2]);
    offset = (int)(h64(owner, 7) % (uint64_t)(nsagas > 0 ? nsagas : 1));
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
    if (saga_engine_new(&E, store, NULL, &o) != SAGA_OK)
        return 5;
    saga_def *d;
    saga_step_options c = SAGA_STEP_OPTIONS_INIT, p, r;
    c.timeout_ms = 600;
    c.retry.max_attempts = 3;
    c.retry.initial_backoff_ms = 5;
    c.retry.max_backoff_ms = 20;
    c.comp_retry.initial_backoff_ms = 5;
    c.comp_retry.max_backoff_ms = 20;
    p = c;
    p.kind = SAGA_STEP_PIVOT;
    r = c;
    r.kind = SAGA_STEP_RETRIABLE;
    r.retry.max_attempts = 0; /* forever */
    saga_def_new(&d, "pgm", 1);
    saga_def_add_step(d, "reserve", action, compensation, &c, NULL);
    saga_def_add_step(d, "authorize", action, compensation, &c, NULL);
    saga_def_add_step(d, "charge", action, NULL, &p, NULL);
    saga_def_add_step(d, "ship", action, NULL, &r, NULL);
    if (saga_engine_register(E, d) != SAGA_OK ||
        saga_engine_start(E) != SAGA_OK) {
        fprintf(stderr, "%s: start: %s\n", owner, saga_engine_errmsg(E));
        return 6;
    }
    uv_timer_init(&loop, &starter);
    uv_timer_init(&loop, &checker);
    uv_timer_start(&starter, start_some, 0, 20);
    uv_timer_start(&checker, check, 100, 100);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&starter, NULL);
    uv_close((uv_handle_t *)&checker, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    PQfinish(L);
    return uv_loop_close(&loop) == 0 ? 0 : 7;
}

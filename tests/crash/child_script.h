/*
 * child_script.h — the scripted engine child that the multi-process tests
 * SIGKILL and restart: tests/crash/crash_child.c (SQLite, one process) and
 * tests/pgmulti/pgm_child.c (several engines on one PostgreSQL schema).
 *
 * Each has one definition of four steps (reserve, authorize, charge as the
 * pivot, ship retried forever) whose outcomes are a pure function of the
 * saga id, step and attempt, so that a rerun elsewhere behaves the same;
 * every action and compensation first calls the child's ledger. The child
 * sets CS, calls cs_register() and cs_run(); cs_run() returns once all
 * sagas exist and none is active. Header-only: each child is one file.
 */
#ifndef SAGA_TEST_CHILD_SCRIPT_H
#define SAGA_TEST_CHILD_SCRIPT_H

#include <saga/saga.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

typedef struct child_script {
    saga_engine *e;
    const char *def; /* the definition's name */
    void (*ledger)(char kind, const saga_step_ref *r);
    /* Step 0, attempt 1: hangs below hang_pct (times out, may have
     * applied), answers RETRY below retry_pct. */
    unsigned hang_pct, retry_pct;
    int sync_half; /* half the answers at once, the others from a timer */
    unsigned later_min_ms, later_span_ms; /* a timer's delay: min + h % span */
    uint32_t timeout_ms, backoff_ms, max_backoff_ms; /* the steps' options */
    int nsagas, per_tick, offset;                    /* the starts */
    unsigned start_every_ms, check_every_ms;
    const char *name; /* in error messages */
    /* state */
    int next_start, closing;
    uv_timer_t starter, checker;
} child_script;

static child_script CS;

static uint64_t cs_h64(const char *s, uint64_t salt)
{
    uint64_t h = 1469598103934665603ull ^ salt;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h ^ (h >> 29);
}

typedef struct cs_later {
    uv_timer_t t;
    saga_step_ref ref;
    saga_outcome oc;
} cs_later;

static void cs_later_closed(uv_handle_t *h) { free(h->data); }
static void cs_later_cb(uv_timer_t *t)
{
    cs_later *l = t->data;
    /* Once closing, a pending report is stale; one for a saga that moved
     * to another engine fails with SAGA_ESTALE or SAGA_ENOTFOUND. */
    if (!CS.closing)
        saga_step_complete(CS.e, &l->ref, l->oc, NULL, 0, "scripted");
    uv_close((uv_handle_t *)t, cs_later_closed);
}

static void cs_report(const saga_step_ref *r, saga_outcome oc)
{
    if (CS.sync_half && (cs_h64(r->saga_id, r->step * 7 + r->attempt) & 1)) {
        saga_step_complete(CS.e, r, oc, NULL, 0, "scripted");
        return;
    }
    cs_later *l = malloc(sizeof *l);
    if (l == NULL)
        _exit(4);
    l->ref = *r;
    l->oc = oc;
    uv_timer_init(saga_engine_loop(CS.e), &l->t);
    l->t.data = l;
    uint64_t salt = CS.sync_half ? r->step : r->step * 31 + r->attempt;
    uv_timer_start(&l->t, cs_later_cb,
                   CS.later_min_ms +
                       cs_h64(r->saga_id, salt) % CS.later_span_ms,
                   0);
}

static void cs_action(saga_engine *e, const saga_step_ref *r, const void *d,
                      size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    CS.ledger('A', r);
    uint64_t x = cs_h64(r->saga_id, 100 + r->step) % 100;
    if (r->step == 0 && r->attempt == 1 && x < CS.hang_pct)
        return; /* hangs: times out, may have applied */
    if (r->step == 0 && r->attempt == 1 && x < CS.retry_pct) {
        cs_report(r, SAGA_OUTCOME_RETRY);
        return;
    }
    if (r->step == 1 && x < 25) {
        cs_report(r, SAGA_OUTCOME_FAIL);
        return;
    }
    if (r->step == 3 && r->attempt < 3 && x < 30) {
        cs_report(r, SAGA_OUTCOME_RETRY);
        return;
    }
    cs_report(r, SAGA_OUTCOME_OK);
}

static void cs_compensation(saga_engine *e, const saga_step_ref *r,
                            const void *d, size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    CS.ledger('C', r);
    uint64_t x = cs_h64(r->saga_id, 200 + r->step) % 100;
    cs_report(r,
              r->attempt == 1 && x < 20 ? SAGA_OUTCOME_RETRY : SAGA_OUTCOME_OK);
}

/* Register the four steps and start the engine. @return 0, or 6. */
static int cs_register(void)
{
    saga_def *d;
    saga_step_options c = SAGA_STEP_OPTIONS_INIT, p, r;
    c.timeout_ms = CS.timeout_ms;
    c.retry.max_attempts = 3;
    c.retry.initial_backoff_ms = CS.backoff_ms;
    c.retry.max_backoff_ms = CS.max_backoff_ms;
    c.comp_retry.initial_backoff_ms = CS.backoff_ms;
    c.comp_retry.max_backoff_ms = CS.max_backoff_ms;
    p = c;
    p.kind = SAGA_STEP_PIVOT;
    r = c;
    r.kind = SAGA_STEP_RETRIABLE;
    r.retry.max_attempts = 0; /* forever */
    saga_def_new(&d, CS.def, 1);
    saga_def_add_step(d, "reserve", cs_action, cs_compensation, &c, NULL);
    saga_def_add_step(d, "authorize", cs_action, cs_compensation, &c, NULL);
    saga_def_add_step(d, "charge", cs_action, NULL, &p, NULL);
    saga_def_add_step(d, "ship", cs_action, NULL, &r, NULL);
    if (saga_engine_register(CS.e, d) != SAGA_OK ||
        saga_engine_start(CS.e) != SAGA_OK) {
        fprintf(stderr, "%s: start: %s\n", CS.name, saga_engine_errmsg(CS.e));
        return 6;
    }
    return 0;
}

/* Start sagas order-0 .. order-N-1 by idempotency key (from CS.offset), so
 * that a restart, or another process, never duplicates one. */
static void cs_start_some(uv_timer_t *t)
{
    (void)t;
    for (int k = 0; k < CS.per_tick && CS.next_start < CS.nsagas;
         k++, CS.next_start++) {
        char key[32], id[SAGA_ID_SIZE];
        snprintf(key, sizeof key, "order-%d",
                 (CS.next_start + CS.offset) % CS.nsagas);
        if (saga_start(CS.e, CS.def, key, NULL, 0, id, NULL, NULL) != SAGA_OK) {
            fprintf(stderr, "%s: start: %s\n", CS.name,
                    saga_engine_errmsg(CS.e));
            _exit(4);
        }
    }
    if (CS.next_start >= CS.nsagas)
        uv_timer_stop(&CS.starter);
}

static int cs_count_cb(const char *id, saga_state s, const char *d, void *arg)
{
    (void)id, (void)s, (void)d;
    (*(int *)arg)++;
    return 0;
}

static void cs_check(uv_timer_t *t)
{
    (void)t;
    int active = 0, all = 0;
    if (CS.next_start < CS.nsagas)
        return;
    if (saga_list(CS.e, SAGA_STATE_MASK_ACTIVE, cs_count_cb, &active) !=
            SAGA_OK ||
        saga_list(CS.e, SAGA_STATE_MASK_ALL, cs_count_cb, &all) != SAGA_OK)
        return;
    if (active == 0 && all >= CS.nsagas) {
        uv_timer_stop(&CS.checker);
        uv_timer_stop(&CS.starter);
        CS.closing = 1; /* reports still pending are stale: dropped */
        saga_engine_close(CS.e, NULL, NULL);
    }
}

/* Run @p loop until every saga exists and none is active. @return 0, or 7
 * (the loop did not close). */
static int cs_run(uv_loop_t *loop)
{
    uv_timer_init(loop, &CS.starter);
    uv_timer_init(loop, &CS.checker);
    uv_timer_start(&CS.starter, cs_start_some, 0, CS.start_every_ms);
    uv_timer_start(&CS.checker, cs_check, CS.check_every_ms, CS.check_every_ms);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&CS.starter, NULL);
    uv_close((uv_handle_t *)&CS.checker, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 7;
}

#endif /* SAGA_TEST_CHILD_SCRIPT_H */

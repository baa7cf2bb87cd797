/*
 * crash_child.c — runs sagas on a SQLite file until every one has ended,
 * and may be SIGKILLed at any moment. Every action and compensation appends
 * a line to a ledger ("A|C <saga> <step> <attempt>") when it is invoked,
 * before it reports, so the verifier can tell what really ran.
 *
 *   crash_child DB LEDGER N
 *
 * It (re)starts sagas order-0 .. order-N-1 by idempotency key on every run,
 * so a restart never duplicates a saga. Outcomes are a pure function of the
 * saga id and step, so a rerun behaves the same. Exits 0 once all N sagas
 * exist and none is active.
 */
#include <fcntl.h>
#include <saga/saga.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static int ledger_fd;
static int nsagas, next_start;
static saga_engine *E;
static uv_timer_t starter, checker;

static uint64_t h64(const char *s, uint64_t salt)
{
    uint64_t h = 1469598103934665603ull ^ salt;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void ledger(char kind, const saga_step_ref *r)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%c %s %u %u\n", kind, r->saga_id,
                     r->step, r->attempt);
    /* One O_APPEND write: atomic, and in the page cache once it returns,
     * which is all SIGKILL needs. */
    if (write(ledger_fd, line, (size_t)n) != n)
        _exit(3);
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
    saga_step_complete(E, &l->ref, l->oc, NULL, 0, "scripted");
    uv_close((uv_handle_t *)t, later_closed);
}

static void report(const saga_step_ref *r, saga_outcome oc)
{
    /* Half the answers come later, from a timer: async completion. */
    if (h64(r->saga_id, r->step * 7 + r->attempt) & 1) {
        saga_step_complete(E, r, oc, NULL, 0, "scripted");
        return;
    }
    later *l = malloc(sizeof *l);
    l->ref = *r;
    l->oc = oc;
    uv_timer_init(saga_engine_loop(E), &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_cb, h64(r->saga_id, r->step) % 3, 0);
}

static void action(saga_engine *e, const saga_step_ref *r, const void *d,
                   size_t l, void *arg)
{
    (void)e, (void)d, (void)l, (void)arg;
    ledger('A', r);
    uint64_t x = h64(r->saga_id, 100 + r->step) % 100;
    if (r->step == 0 && r->attempt == 1 && x < 8)
        return; /* hang: times out, may have applied */
    if (r->step == 0 && r->attempt == 1 && x < 18) {
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
    ledger('C', r);
    uint64_t x = h64(r->saga_id, 200 + r->step) % 100;
    report(r, r->attempt == 1 && x < 20 ? SAGA_OUTCOME_RETRY : SAGA_OUTCOME_OK);
}

static void start_some(uv_timer_t *t)
{
    (void)t;
    for (int k = 0; k < 25 && next_start < nsagas; k++, next_start++) {
        char key[32], id[SAGA_ID_SIZE];
        snprintf(key, sizeof key, "order-%d", next_start);
        if (saga_start(E, "crash", key, NULL, 0, id, NULL, NULL) != SAGA_OK) {
            fprintf(stderr, "start: %s\n", saga_engine_errmsg(E));
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
    saga_list(E, SAGA_STATE_MASK_ACTIVE, count_cb, &active);
    saga_list(E, SAGA_STATE_MASK_ALL, count_cb, &all);
    if (active == 0 && all >= nsagas) {
        uv_timer_stop(&checker);
        uv_timer_stop(&starter);
        saga_engine_close(E, NULL, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    nsagas = atoi(argv[3]);
    ledger_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (ledger_fd < 0)
        return 2;
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_store *store;
    if (saga_store_open(&store, argv[1]) != SAGA_OK)
        return 5;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.log_level = SAGA_LOG_ERROR;
    if (saga_engine_new(&E, store, NULL, &o) != SAGA_OK)
        return 5;
    saga_def *d;
    saga_step_options c = SAGA_STEP_OPTIONS_INIT, p, r;
    c.timeout_ms = 40;
    c.retry.max_attempts = 3;
    c.retry.initial_backoff_ms = 2;
    c.retry.max_backoff_ms = 10;
    c.comp_retry.initial_backoff_ms = 2;
    c.comp_retry.max_backoff_ms = 10;
    p = c;
    p.kind = SAGA_STEP_PIVOT;
    r = c;
    r.kind = SAGA_STEP_RETRIABLE;
    r.retry.max_attempts = 0; /* forever */
    saga_def_new(&d, "crash", 1);
    saga_def_add_step(d, "reserve", action, compensation, &c, NULL);
    saga_def_add_step(d, "authorize", action, compensation, &c, NULL);
    saga_def_add_step(d, "charge", action, NULL, &p, NULL);
    saga_def_add_step(d, "ship", action, NULL, &r, NULL);
    if (saga_engine_register(E, d) != SAGA_OK ||
        saga_engine_start(E) != SAGA_OK)
        return 6;
    uv_timer_init(&loop, &starter);
    uv_timer_init(&loop, &checker);
    uv_timer_start(&starter, start_some, 0, 1);
    uv_timer_start(&checker, check, 10, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&starter, NULL);
    uv_close((uv_handle_t *)&checker, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 7;
}

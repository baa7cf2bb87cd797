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

#include "child_script.h"

static int ledger_fd;

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

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
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
    if (saga_engine_new(&CS.e, store, NULL, &o) != SAGA_OK)
        return 5;
    CS.def = "crash";
    CS.name = "crash_child";
    CS.ledger = ledger;
    CS.hang_pct = 8;
    CS.retry_pct = 18;
    CS.sync_half = 1; /* async completion for the other half */
    CS.later_min_ms = 0;
    CS.later_span_ms = 3;
    CS.timeout_ms = 40;
    CS.backoff_ms = 2;
    CS.max_backoff_ms = 10;
    CS.nsagas = atoi(argv[3]);
    CS.per_tick = 25;
    CS.start_every_ms = 1;
    CS.check_every_ms = 10;
    int rc = cs_register();
    return rc != 0 ? rc : cs_run(&loop);
}

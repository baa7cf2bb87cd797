/*
 * driver.h — the driver loop shared by bench/core.c (SQLite) and
 * bench/scaleout/scaleout.c (PostgreSQL): the engine side (sagas of
 * NSTEPS no-op local steps, at most W in flight, a done callback starting
 * the next) and the floor's walk of the same rows in the engine's
 * lockstep order, cut into as many transactions as the engine committed.
 * Each program brings its store (engine side) and the statements that
 * write one row (floor side).
 */
#ifndef SAGA_BENCH_DRIVER_H
#define SAGA_BENCH_DRIVER_H

#include <stdint.h>

#include <saga/saga.h>

#define BENCH_NSTEPS 4
#define BENCH_NPHASES (BENCH_NSTEPS + 1) /* start, steps 1..3 done, completed */
#define BENCH_STEP_TIMEOUT_MS 30000

/** Monotonic seconds. */
double bench_now_s(void);
/** Wall clock in ms (the engine's time stamps). */
int64_t bench_wall_ms(void);
/** Print "PROG: what: detail" to stderr and exit(1). */
void bench_die(const char *what, const char *detail);
/** The program's name in bench_die's messages. */
extern const char *bench_prog;

/** Called by bench_engine_run when the loop returned, before the engine
 * (and its store) is freed; NULL: nothing. */
extern void (*bench_after_run)(void);

/** Run @p n sagas of BENCH_NSTEPS no-op steps on @p store (taken: freed
 * with the engine), at most @p window in flight. @p lat (n entries) gets
 * each saga's saga_start() -> done callback, in the order they ended; the
 * engine's commit count goes to @p commits. Dies unless all n COMPLETED.
 * Returns the time from the first saga_start() to the loop returning. */
double bench_engine_run(saga_store *store, long n, long window, double *lat,
                        uint64_t *commits);

/** One saga as the floor writes it. */
typedef struct bench_fsaga {
    char id[SAGA_ID_SIZE];
    int64_t created_ms, started_ms;
    double t_first; /* when its first transaction began */
} bench_fsaga;

/** What a floor writes with: each callback gets @p arg. */
typedef struct bench_floor_ops {
    /** A transaction of @p nsagas saga rows and @p njournal journal rows
     * begins. */
    void (*begin)(void *arg, long nsagas, long njournal);
    /** The saga row after phase @p phase (0 = started, 1..NSTEPS-1 =
     * step running, NSTEPS = completed), as the store writes it. */
    void (*saga)(void *arg, bench_fsaga *s, int phase, int64_t now);
    /** After the transaction's saga rows (NULL: nothing to do). */
    void (*sagas_done)(void *arg);
    /** One journal row. */
    void (*journal)(void *arg, const bench_fsaga *s, uint32_t seq,
                    saga_journal_kind kind, int step, int64_t now);
    /** The transaction commits (durably) before this returns. */
    void (*commit)(void *arg);
} bench_floor_ops;

/** Write the rows of @p n sagas (per saga 1 saga INSERT, NSTEPS UPDATEs,
 * NSTEPS + 2 journal rows: STARTED, STEP_OK each, COMPLETED) with the
 * engine's values and id scheme, walked in the engine's lockstep order
 * (@p window sagas in flight, phase by phase; saga rows first in a
 * transaction, then the journal) and cut into @p ncommits transactions:
 * at the phase boundaries when that is the lockstep count, else evenly.
 * @p lat gets each saga's first transaction begun -> last committed.
 * Returns the time. */
double bench_floor_walk(const bench_floor_ops *ops, void *arg, long n,
                        long window, uint64_t ncommits, double *lat);

#endif

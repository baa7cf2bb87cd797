/*
 * sim.h — the deterministic simulator's world (see sim.c for the overview).
 *
 * Everything runs on one thread and one libuv loop. Time is virtual:
 * sim_clock.c replaces clock_gettime() for the whole program, so libuv's
 * timers, the engine's injected clock and the participants' clock all read
 * the one simulated clock, and nothing depends on how fast the host runs.
 */
#ifndef SAGA_SIM_H
#define SAGA_SIM_H

#include <saga/saga.h>
#include <stdint.h>
#include <uv.h>

/* ---- virtual clock (sim_clock.c) ---------------------------------------- */
/* Virtual milliseconds since the epoch; every clock the program reads. */
extern int64_t sim_now_ms;
/* Real monotonic seconds (for the seeds/s figure only). */
double sim_real_seconds(void);

/* ---- random -------------------------------------------------------------- */
uint64_t sim_split(uint64_t *s);
/* Uniform in [lo, hi]. */
int64_t sim_range(uint64_t *s, int64_t lo, int64_t hi);
/* 1 with probability permille / 1000. */
int sim_chance(uint64_t *s, int permille);

/* ---- bugs (the SAGA_SIM_BUGS build only) -------------------------------- */
extern int saga__sim_bug; /* read by lib/ in that build; 0: none */

/* ---- options --------------------------------------------------------------- */
/* --max-active N: the orchestrator's admission limit (engine options
 * max_active; 0, the default: none). With a limit, a start refused with
 * SAGA_EFULL is asked again later, and every start is checked against it. */
extern size_t sim_max_active;

/* ---- a run --------------------------------------------------------------- */
typedef struct sim_result {
    int ok;
    uint64_t trace_hash;
    uint64_t events;
    int sagas, completed, compensated, crashes, commit_faults;
    char violation[512];
} sim_result;

/* Run seed @p seed. With @p trace, every trace line is printed as it
 * happens. On a violation the report (seed, invariant, last events, the
 * replay command) is printed to stderr unless @p quiet. */
void sim_run(uint64_t seed, int trace, int quiet, sim_result *out);

#endif

/*
 * sim_main.c — the saga-sim command line.
 *
 *   saga-sim --seed S [--trace]        one seed; --trace prints every event
 *   saga-sim --seeds N [--start S]     N seeds from S (default 1)
 *   saga-sim ... --twice               run each seed twice, compare traces
 *   saga-sim ... --bug NAME            (saga-sim-bugs only) inject a bug
 *   saga-sim ... --expect-fail         succeed iff some seed fails
 *   saga-sim ... --max-active N        the orchestrator's admission limit
 *
 * Exit status: 0 when every seed held its invariants (or, with
 * --expect-fail, when one did not), 1 otherwise, 2 on a usage error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* Which injected bug is on (lib/ reads it in the saga-sim-bugs build). */
int saga__sim_bug;
size_t sim_max_active;

static const char *const bug_names[] = {
    NULL, "inbox", /* 1: the inbox claim is skipped: a redelivered command
                     runs its handler again */
    "comp-never",  /* 2: a failed step (that never applied) is compensated */
    "early-reply", /* 3: a participant releases its replies before commit */
    "no-hanging",  /* 4: the barrier's hanging-action check is dropped */
    /* bugs saga-sim found in libsaga, fixed, and put back on demand: */
    "fail-not-final", /* 5: a FAILed action's late attempt may apply */
    "retry-same-id",  /* 6: an operator retry reuses attempt 1's id */
};
#define NBUGS 6

static void usage(void)
{
    fprintf(stderr,
            "usage: saga-sim [--seed S | --seeds N [--start S]] [--trace]\n"
            "                [--twice] [--bug NAME] [--expect-fail]\n"
            "                [--max-active N]\n"
            "bugs (saga-sim-bugs only): inbox comp-never early-reply "
            "no-hanging fail-not-final retry-same-id\n");
}

int main(int argc, char **argv)
{
    uint64_t start = 1, n = 1;
    int trace = 0, twice = 0, expect_fail = 0, single = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seed") == 0 && v) {
            start = strtoull(v, NULL, 0);
            n = 1;
            single = 1;
            i++;
        } else if (strcmp(a, "--seeds") == 0 && v) {
            n = strtoull(v, NULL, 0);
            i++;
        } else if (strcmp(a, "--start") == 0 && v) {
            start = strtoull(v, NULL, 0);
            i++;
        } else if (strcmp(a, "--max-active") == 0 && v) {
            sim_max_active = (size_t)strtoull(v, NULL, 0);
            i++;
        } else if (strcmp(a, "--trace") == 0) {
            trace = 1;
        } else if (strcmp(a, "--twice") == 0) {
            twice = 1;
        } else if (strcmp(a, "--expect-fail") == 0) {
            expect_fail = 1;
        } else if (strcmp(a, "--bug") == 0 && v) {
            int found = 0;
            for (int b = 1; b <= NBUGS; b++)
                if (strcmp(bug_names[b], v) == 0)
                    found = b;
            if (!found) {
                usage();
                return 2;
            }
#ifndef SAGA_SIM_BUGS
            fprintf(stderr, "saga-sim: built without SAGA_SIM_BUGS; use "
                            "saga-sim-bugs for --bug\n");
            return 2;
#endif
            saga__sim_bug = found;
            i++;
        } else {
            usage();
            return 2;
        }
    }
    double t0 = sim_real_seconds();
    uint64_t done = 0, sagas = 0, completed = 0, compensated = 0, crashes = 0,
             faults = 0, events = 0;
    for (uint64_t s = start; s < start + n; s++) {
        sim_result r;
        sim_run(s, trace, expect_fail, &r);
        done++;
        if (twice) {
            sim_result r2;
            sim_run(s, 0, 1, &r2);
            if (r2.trace_hash != r.trace_hash || r2.ok != r.ok) {
                fprintf(stderr,
                        "saga-sim: seed %" PRIu64 " is not "
                        "deterministic: trace %016" PRIx64 " then %016" PRIx64
                        "\n  replay: saga-sim --seed %" PRIu64 " --trace\n",
                        s, r.trace_hash, r2.trace_hash, s);
                return 1;
            }
        }
        sagas += (uint64_t)r.sagas;
        completed += (uint64_t)r.completed;
        compensated += (uint64_t)r.compensated;
        crashes += (uint64_t)r.crashes;
        faults += (uint64_t)r.commit_faults;
        events += r.events;
        if (single)
            printf("seed %" PRIu64 ": %s, %d sagas (%d completed, %d "
                   "compensated), %d crashes, %d commit faults, %" PRIu64
                   " events, trace %016" PRIx64 "\n",
                   s, r.ok ? "ok" : "FAILED", r.sagas, r.completed,
                   r.compensated, r.crashes, r.commit_faults, r.events,
                   r.trace_hash);
        if (!r.ok) {
            if (expect_fail) {
                printf("saga-sim: bug '%s' found by seed %" PRIu64
                       " after %" PRIu64 " seeds: %s\n",
                       saga__sim_bug ? bug_names[saga__sim_bug] : "none", s,
                       done, r.violation);
                return 0;
            }
            return 1;
        }
    }
    double dt = sim_real_seconds() - t0;
    if (expect_fail) {
        fprintf(stderr,
                "saga-sim: bug '%s' NOT found in %" PRIu64
                " seeds from %" PRIu64 "\n",
                saga__sim_bug ? bug_names[saga__sim_bug] : "none", n, start);
        return 1;
    }
    if (!single)
        printf("saga-sim: %" PRIu64 " seeds from %" PRIu64 " ok%s in %.1f s "
               "(%.0f seeds/s): %" PRIu64 " sagas, %" PRIu64
               " completed, %" PRIu64 " compensated, %" PRIu64
               " crashes, %" PRIu64 " commit faults, %" PRIu64 " events\n",
               done, start, twice ? " (each run twice, identical traces)" : "",
               dt, dt > 0 ? (double)done * (twice ? 2 : 1) / dt : 0.0, sagas,
               completed, compensated, crashes, faults, events);
    return 0;
}

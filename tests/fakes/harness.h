/*
 * harness.h — a test harness for the engine: a caller-owned loop, a fake
 * clock, a seeded random source, captured logs, and scripted step actions
 * whose outcome per attempt comes from a string.
 */
#ifndef SAGA_TEST_HARNESS_H
#define SAGA_TEST_HARNESS_H

#include <saga/saga.h>
#include <uv.h>

#define H_MAX_STEPS 8
#define H_MAX_CALLS 256

/* A script is one character per attempt, the last one repeating:
 * 'o' OK, 'f' FAIL, 'r' RETRY, 'h' hang (never completes), 'a' OK later
 * (from a zero-delay uv timer). Example: "rro" = RETRY, RETRY, then OK. */
typedef struct h_call {
    int step;
    int comp;
    unsigned attempt;
} h_call;

typedef struct harness {
    uv_loop_t loop;
    saga_engine *e;
    saga_store *store;
    int64_t now;
    const char *script[H_MAX_STEPS];
    const char *comp_script[H_MAX_STEPS];
    h_call calls[H_MAX_CALLS];
    int ncalls;
    int done_count;
    saga_state last_state;
    char last_done[SAGA_ID_SIZE];
    char log[8192];
    saga_step_ref pending; /* the last ref a 'h' attempt left hanging */
} harness;

/* Set up the loop and fake clock (starting at 1,000,000 ms). */
void h_init(harness *h);
/* An engine on @p store (NULL: memory) with options defaults + fake clock,
 * seed 42, logs captured; @p tweak (may be NULL) adjusts the options. */
int h_engine(harness *h, saga_store *store,
             void (*tweak)(saga_engine_options *o));
/* A definition "t" v1 with @p n steps named s0..s(n-1), kinds from @p kinds
 * ('c' compensatable, 'p' pivot, 'r' retriable), scripted actions, a
 * compensation on every compensatable step, @p opts applied to each step
 * (NULL for defaults). */
saga_def *h_def(harness *h, const char *kinds, const saga_step_options *opts);
/* Run the loop without blocking until nothing more happens. */
void h_pump(harness *h);
/* Move the fake clock and fire due timers, then pump. */
void h_advance(harness *h, int64_t ms);
/* Close the engine and the loop; asserts the loop closes cleanly. */
void h_fini(harness *h);
/* Journal events of @p id as a string like "STARTED STEP_OK ...". */
void h_journal(harness *h, const char *id, char *out, size_t n);
/* Calls as a string like "0 1 c1 c0" (c = compensation). */
void h_calls(harness *h, char *out, size_t n);
saga_state h_state(harness *h, const char *id);

#endif

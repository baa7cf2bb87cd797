/*
 * driver.c — the driver loop shared by bench_core and bench_scaleout
 * (driver.h).
 */
#include "driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *bench_prog = "bench";
void (*bench_after_run)(void) = NULL;

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t bench_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bench_die(const char *what, const char *detail)
{
    fprintf(stderr, "%s: %s: %s\n", bench_prog, what, detail);
    exit(1);
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

/* Start times of the sagas in flight, by id: open addressing with linear
 * probing, a slot freed when its saga ends (backward-shift deletion), so
 * that the table stays about twice the window and in cache. */
typedef struct tslot {
    char id[SAGA_ID_SIZE];
    double t;
} tslot;

typedef struct erun {
    saga_engine *e;
    long total, started, done, failed;
    tslot *slots;
    size_t mask;
    double *lat;
} erun;

/* The engine's ids are 32 hex characters whose last 16 are random
 * (lib/verbs.c): those two words, mixed, are hash enough and cheaper than
 * hashing the string (this runs inside the timed region). */
static size_t hash_id(const char *id)
{
    uint64_t a, b;
    memcpy(&a, id + 16, 8);
    memcpy(&b, id + 24, 8);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull)) * 0xbf58476d1ce4e5b9ull;
    return (size_t)(h ^ (h >> 31));
}

/* The slot of @p id, or the free slot where it would go. */
static size_t slot_of(const erun *r, const char *id)
{
    size_t i = hash_id(id) & r->mask;
    while (r->slots[i].id[0] && memcmp(r->slots[i].id, id, SAGA_ID_LEN) != 0)
        i = (i + 1) & r->mask;
    return i;
}

/* Frees slot @p i, moving back the entries that probed past it. */
static void slot_free(erun *r, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & r->mask;
        if (!r->slots[j].id[0])
            break;
        size_t home = hash_id(r->slots[j].id) & r->mask;
        /* j's entry may fill the hole at i unless its home lies in (i, j]. */
        if (((j - home) & r->mask) >= ((j - i) & r->mask)) {
            r->slots[i] = r->slots[j];
            i = j;
        }
    }
    r->slots[i].id[0] = '\0';
}

static void noop_step(saga_engine *e, const saga_step_ref *ref,
                      const void *data, size_t len, void *arg)
{
    (void)data, (void)len, (void)arg;
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void start_one(erun *r)
{
    char id[SAGA_ID_SIZE];
    double t = bench_now_s();
    int rc = saga_start(r->e, "bench", NULL, NULL, 0, id, NULL, NULL);
    if (rc != SAGA_OK)
        bench_die("saga_start", saga_engine_errmsg(r->e));
    size_t i = slot_of(r, id);
    memcpy(r->slots[i].id, id, SAGA_ID_SIZE);
    r->slots[i].t = t;
    r->started++;
}

static void on_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    erun *r = arg;
    (void)e;
    if (st != SAGA_STATE_COMPLETED)
        r->failed++;
    double t = bench_now_s();
    size_t i = slot_of(r, id);
    if (r->done < r->total)
        r->lat[r->done++] = r->slots[i].id[0] ? t - r->slots[i].t : 0;
    if (r->slots[i].id[0])
        slot_free(r, i);
    if (r->started < r->total)
        start_one(r);
}

double bench_engine_run(saga_store *store, long n, long window, double *lat,
                        uint64_t *commits)
{
    erun r;
    memset(&r, 0, sizeof r);
    r.total = n;
    r.lat = lat;
    size_t cap = 1, inflight = window > 0 && window < n ? window : n;
    while (cap < (size_t)inflight * 2)
        cap <<= 1;
    r.slots = calloc(cap, sizeof *r.slots);
    r.mask = cap - 1;
    if (r.slots == NULL)
        bench_die("calloc", strerror(errno));
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.on_done = on_done;
    o.on_done_arg = &r;
    int rc = saga_engine_new(&r.e, store, NULL, &o);
    if (rc != SAGA_OK)
        bench_die("saga_engine_new", saga_strerror(rc));
    saga_def *d;
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.timeout_ms = BENCH_STEP_TIMEOUT_MS;
    if (saga_def_new(&d, "bench", 1) != SAGA_OK)
        bench_die("saga_def_new", "failed");
    static const char *const names[BENCH_NSTEPS] = {"s1", "s2", "s3", "s4"};
    for (int i = 0; i < BENCH_NSTEPS; i++)
        if (saga_def_add_step(d, names[i], noop_step, NULL, &so, NULL) !=
            SAGA_OK)
            bench_die("saga_def_add_step", saga_def_errmsg(d));
    if (saga_engine_register(r.e, d) != SAGA_OK ||
        saga_engine_start(r.e) != SAGA_OK)
        bench_die("engine setup", saga_engine_errmsg(r.e));

    double t0 = bench_now_s();
    for (long i = 0; i < window && i < n; i++)
        start_one(&r);
    saga_engine_run(r.e, SAGA_RUN_DEFAULT);
    double t = bench_now_s() - t0;
    if (bench_after_run)
        bench_after_run();

    if (r.done != n || r.failed != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%ld of %ld sagas done, %ld not COMPLETED",
                 r.done, n, r.failed);
        bench_die("engine run", msg);
    }
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    if (saga_engine_stats(r.e, &st) != SAGA_OK)
        bench_die("saga_engine_stats", "failed");
    *commits = st.commits;
    saga_engine_free(r.e);
    free(r.slots);
    return t;
}

/* ------------------------------------------------------------------------ */
/* The floor's walk                                                         */

/* The (saga, phase) of transition @p k in lockstep order: wave by wave of
 * @p window sagas, phase by phase, saga by saga. */
static void transition(long k, long n, long window, long *saga, int *phase)
{
    long per_wave = window * BENCH_NPHASES;
    long w = k / per_wave, r = k % per_wave;
    long wsize = (w + 1) * window <= n ? window : n - w * window;
    *phase = (int)(r / wsize);
    *saga = w * window + r % wsize;
}

/* Where transaction @p c of @p nc starts in that sequence: at a phase
 * boundary when the engine committed once per phase (the lockstep count),
 * else an even split of the @p total transitions. */
static long cut(uint64_t c, uint64_t nc, long n, long window, long total)
{
    long waves = (n + window - 1) / window, w = (long)c / BENCH_NPHASES;
    if (c >= nc || nc != (uint64_t)(waves * BENCH_NPHASES))
        return c >= nc ? total : (long)((uint64_t)total * c / nc);
    long wsize = (w + 1) * window <= n ? window : n - w * window;
    return w * window * BENCH_NPHASES + (long)(c % BENCH_NPHASES) * wsize;
}

/* The engine's id scheme (new_id() in lib/saga.c): 12 hex digits of the
 * creation time in ms, 4 of a counter, 16 random. Ids decide where rows
 * land in the B-trees, so the floor must use the same scheme. */
static void make_id(uint64_t *rng, uint32_t *seq, int64_t ms,
                    char out[SAGA_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t z = (*rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    uint32_t c = (*seq)++;
    for (int i = 0; i < 12; i++)
        out[i] = hex[((uint64_t)ms >> (44 - 4 * i)) & 15];
    for (int i = 0; i < 4; i++)
        out[12 + i] = hex[(c >> (12 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++)
        out[16 + i] = hex[(z >> (60 - 4 * i)) & 15];
    out[SAGA_ID_LEN] = '\0';
}

/* Phase @p p's journal entries: STARTED; STEP_OK of step p-1; at the end
 * STEP_OK of the last step and COMPLETED. */
static void phase_journal(const bench_floor_ops *ops, void *arg, bench_fsaga *s,
                          int p, int64_t now)
{
    if (p == 0) {
        ops->journal(arg, s, 1, SAGA_JOURNAL_STARTED, -1, now);
    } else {
        ops->journal(arg, s, (uint32_t)p + 1, SAGA_JOURNAL_STEP_OK, p - 1, now);
        if (p == BENCH_NPHASES - 1)
            ops->journal(arg, s, BENCH_NPHASES + 1, SAGA_JOURNAL_COMPLETED, -1,
                         now);
    }
    s->started_ms = now;
}

double bench_floor_walk(const bench_floor_ops *ops, void *arg, long n,
                        long window, uint64_t ncommits, double *lat)
{
    bench_fsaga *s = calloc((size_t)n, sizeof *s);
    if (s == NULL)
        bench_die("calloc", strerror(errno));
    uint64_t rng = (uint64_t)bench_wall_ms() * 2654435761u;
    uint32_t seq = 0;
    long total = n * BENCH_NPHASES, i;
    int p;
    double t0 = bench_now_s();
    for (uint64_t c = 0; c < ncommits; c++) {
        long lo = cut(c, ncommits, n, window, total);
        long hi = cut(c + 1, ncommits, n, window, total);
        int64_t now = bench_wall_ms();
        double tb = bench_now_s();
        long nj = 0;
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &p);
            nj += p == BENCH_NPHASES - 1 ? 2 : 1;
        }
        ops->begin(arg, hi - lo, nj);
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &p);
            if (p == 0) {
                /* The engine makes the id in saga_start(), at this time. */
                make_id(&rng, &seq, now, s[i].id);
                s[i].created_ms = now;
                s[i].t_first = tb;
            }
            ops->saga(arg, &s[i], p, now);
        }
        if (ops->sagas_done)
            ops->sagas_done(arg);
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &p);
            phase_journal(ops, arg, &s[i], p, now);
        }
        ops->commit(arg);
        double tc = bench_now_s();
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &p);
            if (p == BENCH_NPHASES - 1)
                lat[i] = tc - s[i].t_first;
        }
    }
    double t = bench_now_s() - t0;
    free(s);
    return t;
}

/*
 * scaleout.c — the core workload (sagas of 4 no-op local steps) on the
 * PostgreSQL store, and its floor: the same rows written by plain libpq
 * with the same batching. bench/scaleout/run.sh drives it (bench/run
 * scaleout); the server comes from SAGA_PG_URL.
 *
 *   bench_scaleout engine -n N -w W -S schema
 *       N sagas, at most W in flight (a done callback starts the next);
 *       prints one "result" line: time, sagas/s, p50/p99 of saga_start()
 *       -> done callback, the engine's commit count.
 *   bench_scaleout floor -n N -w W -c COMMITS -S schema
 *       The rows the engine writes for N sagas (per saga 1 saga INSERT, 4
 *       UPDATEs, 6 journal INSERTs, the store's own statements, prepared
 *       once, binary parameters), walked in the engine's lockstep order
 *       (W sagas in flight, phase by phase) and cut into COMMITS
 *       transactions; each transaction is one pipelined round trip (its
 *       statements and a sync: one implicit transaction), one at a time.
 *       Latency: a saga's first transaction sent -> its last committed.
 *   Both check afterwards that N sagas are COMPLETED with 6N journal rows.
 *
 * The floor does not write the store's batch-log row (one upsert per
 * batch, which the store needs to resolve lost answers): that cost is the
 * engine's. The tables are the store's own (the floor opens the store once
 * to create its schema), so both write the same indexes.
 */
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <saga/postgres.h>
#include <saga/saga.h>

#define NSTEPS 4
#define NPHASES (NSTEPS + 1)
#define STEP_TIMEOUT_MS 30000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_scaleout: %s: %s\n", what, detail);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p)
{
    if (n == 0)
        return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void result(const char *what, long n, long w, double t, double *lat,
                   uint64_t commits)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf("result %s n=%ld window=%ld time=%.3f sagas_per_s=%.0f "
           "p50_ms=%.3f p99_ms=%.3f commits=%llu\n",
           what, n, w, t, (double)n / t, pct(lat, n, 0.50) * 1e3,
           pct(lat, n, 0.99) * 1e3, (unsigned long long)commits);
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

/* Start times by saga id (open addressing; ids are unique). */
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

static size_t hash_id(const char *id)
{
    size_t h = 1469598103934665603ull;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
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
    double t = now_s();
    int rc = saga_start(r->e, "bench", NULL, NULL, 0, id, NULL, NULL);
    if (rc != SAGA_OK)
        die("saga_start", saga_engine_errmsg(r->e));
    size_t i = hash_id(id) & r->mask;
    while (r->slots[i].id[0])
        i = (i + 1) & r->mask;
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
    double t = now_s();
    size_t i = hash_id(id) & r->mask;
    while (r->slots[i].id[0] && strcmp(r->slots[i].id, id) != 0)
        i = (i + 1) & r->mask;
    r->lat[r->done++] = r->slots[i].id[0] ? t - r->slots[i].t : 0;
    /* Deleting from open addressing: keep the slot as a tombstone-free
     * table by never reusing it (the table holds every saga of the run). */
    if (r->started < r->total)
        start_one(r);
}

static saga_store *open_store(const char *schema)
{
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = schema;
    saga_store *s;
    int rc = saga_store_postgres_open(&s, NULL, &o);
    if (rc != SAGA_OK)
        die("saga_store_postgres_open", saga_store_postgres_open_errmsg());
    return s;
}

static void engine_run(long n, long window, const char *schema)
{
    saga_store *store = open_store(schema);
    erun r;
    memset(&r, 0, sizeof r);
    r.total = n;
    size_t cap = 1;
    while (cap < (size_t)n * 2)
        cap <<= 1;
    r.slots = calloc(cap, sizeof *r.slots);
    r.mask = cap - 1;
    r.lat = calloc((size_t)n, sizeof *r.lat);
    if (r.slots == NULL || r.lat == NULL)
        die("calloc", strerror(errno));
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.on_done = on_done;
    o.on_done_arg = &r;
    if (saga_engine_new(&r.e, store, NULL, &o) != SAGA_OK)
        die("saga_engine_new", "failed");
    saga_def *d;
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.timeout_ms = STEP_TIMEOUT_MS;
    if (saga_def_new(&d, "bench", 1) != SAGA_OK)
        die("saga_def_new", "failed");
    static const char *const names[NSTEPS] = {"s1", "s2", "s3", "s4"};
    for (int i = 0; i < NSTEPS; i++)
        if (saga_def_add_step(d, names[i], noop_step, NULL, &so, NULL) !=
            SAGA_OK)
            die("saga_def_add_step", saga_def_errmsg(d));
    if (saga_engine_register(r.e, d) != SAGA_OK ||
        saga_engine_start(r.e) != SAGA_OK)
        die("engine setup", saga_engine_errmsg(r.e));
    double t0 = now_s();
    for (long i = 0; i < window && i < n; i++)
        start_one(&r);
    saga_engine_run(r.e, SAGA_RUN_DEFAULT);
    double t = now_s() - t0;
    if (r.done != n || r.failed != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%ld of %ld sagas done, %ld not COMPLETED",
                 r.done, n, r.failed);
        die("engine run", msg);
    }
    saga_stats st;
    saga_engine_stats(r.e, &st);
    saga_engine_free(r.e);
    result("engine", n, window, t, r.lat, st.commits);
    free(r.slots);
    free(r.lat);
}

/* ------------------------------------------------------------------------ */
/* The floor: plain libpq                                                   */

#define SAGA_COLS                                                              \
    "id, def_name, def_version, state, step, attempt, flags, created_ms, "     \
    "updated_ms, due_ms, deadline_ms, idem_key, error, data"

/* The store's strict batch statements (stores/postgres/pg_ops.c). */
enum { F_INSERT, F_UPDATE, F_JOURNAL, F__COUNT };
static const char *const floor_sql[F__COUNT] = {
    [F_INSERT] = "INSERT INTO sagas(" SAGA_COLS ") VALUES ($1, $2, $3, $4, "
                 "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    [F_UPDATE] = "WITH u AS (UPDATE sagas SET def_name = $2, def_version = "
                 "$3, state = $4, step = $5, attempt = $6, flags = $7, "
                 "created_ms = $8, updated_ms = $9, due_ms = $10, "
                 "deadline_ms = $11, error = $12 WHERE id = $1 RETURNING 1) "
                 "SELECT 1 / (SELECT count(*)::int FROM u)",
    [F_JOURNAL] = "INSERT INTO journal(saga_id, seq, event, step, attempt, "
                  "started_ms, at_ms, error) VALUES ($1, $2, $3, $4, $5, $6, "
                  "$7, $8)",
};
static const unsigned int floor_types[F__COUNT][14] = {
    [F_INSERT] = {25, 25, 20, 20, 20, 20, 20, 20, 20, 20, 20, 25, 25, 17},
    [F_UPDATE] = {25, 25, 20, 20, 20, 20, 20, 20, 20, 20, 20, 25},
    [F_JOURNAL] = {25, 20, 20, 20, 20, 20, 20, 25},
};
static const int floor_nparams[F__COUNT] = {14, 12, 8};

typedef struct params {
    int n;
    const char *val[14];
    int len[14], fmt[14];
    char ints[14][8];
} params;

static void p_text(params *p, const char *v)
{
    int i = p->n++;
    p->val[i] = v;
    p->len[i] = v ? (int)strlen(v) : 0;
    p->fmt[i] = 1;
}

static void p_int(params *p, int64_t v)
{
    int i = p->n++;
    uint64_t u = (uint64_t)v;
    for (int b = 7; b >= 0; b--, u >>= 8)
        p->ints[i][b] = (char)(u & 0xff);
    p->val[i] = p->ints[i];
    p->len[i] = 8;
    p->fmt[i] = 1;
}

typedef struct fsaga {
    char id[SAGA_ID_SIZE];
    int64_t created_ms, started_ms;
    double t_first;
} fsaga;

typedef struct floor {
    PGconn *c;
    size_t sent;
} floor;

static void fsend(floor *f, int which, const params *p)
{
    char name[8];
    snprintf(name, sizeof name, "f%d", which);
    if (!PQsendQueryPrepared(f->c, name, p->n, p->val, p->len, p->fmt, 1))
        die("PQsendQueryPrepared", PQerrorMessage(f->c));
    f->sent++;
}

static void put_saga(floor *f, fsaga *s, int ph, int64_t now)
{
    params p = {0};
    int done = ph == NPHASES - 1;
    p_text(&p, s->id);
    p_text(&p, "bench");
    p_int(&p, 1);
    p_int(&p, done ? SAGA_STATE_COMPLETED : SAGA_STATE_RUNNING);
    p_int(&p, done ? NSTEPS - 1 : ph);
    p_int(&p, 1);
    p_int(&p, done ? 0 : SAGA_REC_INFLIGHT);
    p_int(&p, s->created_ms);
    p_int(&p, now);
    p_int(&p, done ? 0 : now + STEP_TIMEOUT_MS);
    p_int(&p, 0);
    if (ph == 0) {
        p_text(&p, NULL);
        p_text(&p, NULL);
        int i = p.n++;
        p.val[i] = "\x80";
        p.len[i] = 1;
        p.fmt[i] = 1;
    } else {
        p_text(&p, NULL);
    }
    fsend(f, ph == 0 ? F_INSERT : F_UPDATE, &p);
}

static void put_journal(floor *f, fsaga *s, uint32_t seq, saga_event ev,
                        int step, int64_t now)
{
    params p = {0};
    int saga_level = step < 0;
    p_text(&p, s->id);
    p_int(&p, seq);
    p_int(&p, (int)ev);
    p_int(&p, step);
    p_int(&p, saga_level ? 0 : 1);
    p_int(&p, saga_level ? 0 : s->started_ms);
    p_int(&p, now);
    p_text(&p, NULL);
    fsend(f, F_JOURNAL, &p);
}

static void put_phase_journal(floor *f, fsaga *s, int ph, int64_t now)
{
    if (ph == 0) {
        put_journal(f, s, 1, SAGA_EV_STARTED, -1, now);
    } else {
        put_journal(f, s, (uint32_t)ph + 1, SAGA_EV_STEP_OK, ph - 1, now);
        if (ph == NPHASES - 1)
            put_journal(f, s, NPHASES + 1, SAGA_EV_COMPLETED, -1, now);
    }
    s->started_ms = now;
}

/* As bench/core.c: the lockstep order and where each transaction starts. */
static void transition(long k, long n, long window, long *saga, int *phase)
{
    long per_wave = window * NPHASES;
    long w = k / per_wave, r = k % per_wave;
    long wsize = (w + 1) * window <= n ? window : n - w * window;
    *phase = (int)(r / wsize);
    *saga = w * window + r % wsize;
}

static long cut(uint64_t c, uint64_t nc, long n, long window, long total)
{
    long waves = (n + window - 1) / window, w = (long)c / NPHASES;
    if (c >= nc || nc != (uint64_t)(waves * NPHASES))
        return c >= nc ? total : (long)((uint64_t)total * c / nc);
    long wsize = (w + 1) * window <= n ? window : n - w * window;
    return w * window * NPHASES + (long)(c % NPHASES) * wsize;
}

/* The engine's id scheme (lib/saga.c): 12 hex digits of the creation
 * time in ms, 4 of a counter, 16 random. */
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

/* Send the sync, then flush and read until its result (non-blocking: a
 * large transaction's results would otherwise fill the socket while we
 * are still writing). */
static void finish_txn(floor *f)
{
    if (!PQpipelineSync(f->c))
        die("PQpipelineSync", PQerrorMessage(f->c));
    int flushing = 1;
    for (;;) {
        if (flushing) {
            int r = PQflush(f->c);
            if (r < 0)
                die("PQflush", PQerrorMessage(f->c));
            flushing = r == 1;
        }
        struct pollfd pf = {PQsocket(f->c),
                            (short)(POLLIN | (flushing ? POLLOUT : 0)), 0};
        if (poll(&pf, 1, 60000) <= 0)
            die("poll", "no answer in 60 s");
        if (!PQconsumeInput(f->c))
            die("PQconsumeInput", PQerrorMessage(f->c));
        int nulls = 0;
        while (!PQisBusy(f->c)) {
            PGresult *r = PQgetResult(f->c);
            if (r == NULL) {
                if (++nulls > 1)
                    break;
                continue;
            }
            nulls = 0;
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                return;
            }
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
                die("floor statement", PQresultErrorMessage(r));
            PQclear(r);
        }
    }
}

static PGconn *connect_schema(const char *schema)
{
    PGconn *c = PQconnectdb(getenv("SAGA_PG_URL"));
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    char sql[128];
    snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", schema);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die(sql, PQerrorMessage(c));
    PQclear(r);
    return c;
}

static void floor_run(long n, long window, uint64_t ncommits,
                      const char *schema)
{
    /* The store's tables, made by the store itself. */
    saga_store_free(open_store(schema));
    floor f = {connect_schema(schema), 0};
    for (int i = 0; i < F__COUNT; i++) {
        char name[8];
        snprintf(name, sizeof name, "f%d", i);
        PGresult *r = PQprepare(f.c, name, floor_sql[i], floor_nparams[i],
                                floor_types[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("prepare", PQerrorMessage(f.c));
        PQclear(r);
    }
    if (!PQenterPipelineMode(f.c) || PQsetnonblocking(f.c, 1) != 0)
        die("pipeline mode", PQerrorMessage(f.c));
    fsaga *s = calloc((size_t)n, sizeof *s);
    double *lat = calloc((size_t)n, sizeof *lat);
    if (s == NULL || lat == NULL)
        die("calloc", strerror(errno));
    uint64_t rng = (uint64_t)wall_ms() * 2654435761u;
    uint32_t seq = 0;
    long total = n * NPHASES, i;
    int ph;
    double t0 = now_s();
    for (uint64_t c = 0; c < ncommits; c++) {
        long lo = cut(c, ncommits, n, window, total);
        long hi = cut(c + 1, ncommits, n, window, total);
        int64_t now = wall_ms();
        double tb = now_s();
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &ph);
            if (ph == 0) {
                make_id(&rng, &seq, now, s[i].id);
                s[i].created_ms = now;
                s[i].t_first = tb;
            }
            put_saga(&f, &s[i], ph, now);
        }
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &ph);
            put_phase_journal(&f, &s[i], ph, now);
        }
        finish_txn(&f);
        double tc = now_s();
        for (long k = lo; k < hi; k++) {
            transition(k, n, window, &i, &ph);
            if (ph == NPHASES - 1)
                lat[i] = tc - s[i].t_first;
        }
    }
    double t = now_s() - t0;
    PQexitPipelineMode(f.c);
    PQfinish(f.c);
    result("floor", n, window, t, lat, ncommits);
    free(s);
    free(lat);
}

/* ------------------------------------------------------------------------ */

static void check(long n, const char *schema)
{
    PGconn *c = connect_schema(schema);
    PGresult *r = PQexec(c, "SELECT (SELECT count(*) FROM sagas WHERE state "
                            "= 3), (SELECT count(*) FROM journal)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("check", PQerrorMessage(c));
    long done = atol(PQgetvalue(r, 0, 0)), jn = atol(PQgetvalue(r, 0, 1));
    if (done != n || jn != 6 * n) {
        char msg[128];
        snprintf(msg, sizeof msg, "%ld COMPLETED (want %ld), %ld journal "
                 "rows (want %ld)", done, n, jn, 6 * n);
        die("check", msg);
    }
    PQclear(r);
    PQfinish(c);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage", "bench_scaleout engine|floor -n N -w W [-c COMMITS] "
                     "-S schema");
    const char *mode = argv[1];
    long n = 10000, w = 64;
    uint64_t commits = 0;
    const char *schema = "bench";
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "n:w:c:S:")) != -1) {
        switch (opt) {
        case 'n': n = atol(optarg); break;
        case 'w': w = atol(optarg); break;
        case 'c': commits = strtoull(optarg, NULL, 10); break;
        case 'S': schema = optarg; break;
        default: die("usage", "bad option");
        }
    }
    if (n <= 0 || w <= 0)
        die("usage", "-n and -w must be positive");
    if (getenv("SAGA_PG_URL") == NULL)
        die("SAGA_PG_URL", "not set (bench/run scaleout starts a server)");
    if (strcmp(mode, "engine") == 0) {
        engine_run(n, w, schema);
    } else if (strcmp(mode, "floor") == 0) {
        if (commits == 0)
            die("usage", "floor needs -c COMMITS (the engine's)");
        floor_run(n, w, commits, schema);
    } else {
        die("usage", "mode is engine or floor");
    }
    check(n, schema);
    return 0;
}

/*
 * scaleout.c — the core workload (sagas of 4 no-op local steps) on the
 * PostgreSQL store, and its floor: the same rows written by plain libpq
 * with the same batching. bench/scaleout/run.sh drives it (bench/run
 * scaleout); the server comes from SAGA_PG_URL.
 *
 *   bench_scaleout engine -n N -w W -S schema [-L lease_ms]
 *       N sagas, at most W in flight (a done callback starts the next);
 *       -L: the store with a lease, so that several engine processes can
 *       share one schema (multi-engine ownership, fencing);
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
 * The engine run and the floor's walk are bench/common/driver.c (shared
 * with bench/core.c); this file has the PostgreSQL statements.
 *
 * Like the store, the floor sends a transaction's saga rows and journal
 * rows as array statements (unnest) from 4 rows on, else row by row.
 * The floor does not write the store's batch-log row (one upsert per
 * batch, which the store needs to resolve lost answers): that cost is the
 * engine's. The tables are the store's own (the floor opens the store once
 * to create its schema), so both write the same indexes.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <saga/postgres.h>
#include <saga/saga.h>

#include "common/driver.h"

#define NSTEPS BENCH_NSTEPS
#define NPHASES BENCH_NPHASES
#define STEP_TIMEOUT_MS BENCH_STEP_TIMEOUT_MS
#define die bench_die

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
           "p50_ms=%.3f p99_ms=%.3f commits=%llu",
           what, n, w, t, (double)n / t, pct(lat, n, 0.50) * 1e3,
           pct(lat, n, 0.99) * 1e3, (unsigned long long)commits);
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

static uint32_t g_lease_ms; /* -L: several engines on one schema */

static saga_store *open_store(const char *schema)
{
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    o.schema = schema;
    o.lease_ms = g_lease_ms;
    saga_store *s;
    int rc = saga_store_postgres_open(&s, NULL, &o);
    if (rc != SAGA_OK)
        die("saga_store_postgres_open", saga_store_postgres_open_errmsg());
    return s;
}

/* Which side limits a run: CPU seconds of this process, of the server's
 * processes (every child of the postmaster behind the store's connection:
 * the backends, the WAL writer, ...) and of the whole machine, over the
 * run's wall time. */
typedef struct cpu_mark {
    double self, server, busy, all; /* s; machine: busy and all jiffies */
} cpu_mark;

static int g_postmaster; /* the server's postmaster pid (0: unknown) */

static double ticks_s(unsigned long long t)
{
    static long hz;
    if (hz == 0)
        hz = sysconf(_SC_CLK_TCK);
    return (double)t / (double)hz;
}

/* utime + stime of /proc/PID/stat in ticks, and its parent's pid. */
static int proc_stat(const char *pid, unsigned long long *ticks, int *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut, st;
    if (p == NULL || sscanf(p + 2,
                            "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u "
                            "%*u %llu %llu",
                            ppid, &ut, &st) != 3)
        return -1;
    *ticks = ut + st;
    return 0;
}

static void cpu_mark_now(cpu_mark *m)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    m->self = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    m->server = 0;
    DIR *d = g_postmaster ? opendir("/proc") : NULL;
    for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
        unsigned long long t;
        int ppid;
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9' &&
            proc_stat(de->d_name, &t, &ppid) == 0 && ppid == g_postmaster)
            m->server += ticks_s(t);
    }
    if (d)
        closedir(d);
    m->busy = m->all = 0;
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            m->all += (double)v[i];
        m->busy = m->all - (double)v[3] - (double)v[4]; /* idle, iowait */
    }
    if (f)
        fclose(f);
}

static cpu_mark g_cpu0, g_cpu1;

static void mark_end(void) { cpu_mark_now(&g_cpu1); }

/* " engine_cpu=.. server_cpu=.. machine_busy=.. limit=..": the limit is
 * the side busy most of the run (engine: this process, one loop on one
 * core; server: its processes, mostly the one backend that runs the
 * batches in order), else the machine when its CPUs were full (other
 * work), else the commits (waiting for fsync and round trips). */
static void print_limit(double t, long n)
{
    double e = g_cpu1.self - g_cpu0.self, sv = g_cpu1.server - g_cpu0.server;
    double all = g_cpu1.all - g_cpu0.all;
    double mb = all > 0 ? (g_cpu1.busy - g_cpu0.busy) / all : 0;
    double eb = e / t, sb = sv / t;
    const char *limit = eb >= 0.8 && eb >= sb ? "engine"
                        : sb >= 0.8           ? "server"
                        : mb >= 0.9           ? "machine"
                                              : "commit-wait";
    printf(" engine_cpu=%.2f server_cpu=%.2f machine_busy=%.2f limit=%s "
           "engine_us_per_saga=%.0f server_us_per_saga=%.0f",
           eb, g_postmaster ? sb : -1.0, mb, limit, e * 1e6 / (double)n,
           g_postmaster ? sv * 1e6 / (double)n : -1.0);
}

static void engine_run(long n, long window, const char *schema)
{
    double *lat = calloc((size_t)n, sizeof *lat);
    if (lat == NULL)
        die("calloc", strerror(errno));
    saga_store *store = open_store(schema);
    /* The server's processes: the postmaster is the backend's parent. */
    PGconn *c = store->native_handle(store);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", c ? PQbackendPID(c) : 0);
    unsigned long long t0;
    if (proc_stat(pid, &t0, &g_postmaster) != 0)
        g_postmaster = 0;
    bench_after_run = mark_end;
    uint64_t commits = 0;
    cpu_mark_now(&g_cpu0);
    double t = bench_engine_run(store, n, window, lat, &commits);
    result("engine", n, window, t, lat, commits);
    print_limit(t, n);
    printf("\n");
    free(lat);
}

/* ------------------------------------------------------------------------ */
/* The floor: plain libpq                                                   */

#define SAGA_COLS                                                              \
    "id, def_name, def_version, state, step, attempt, flags, created_ms, "     \
    "updated_ms, due_ms, deadline_ms, idem_key, error, data"

/* The store's strict batch statements (stores/postgres/pg_ops.c). */
enum {
    F_INSERT,
    F_UPDATE,
    F_JOURNAL,
    F_INSERT_N,
    F_UPDATE_N,
    F_JOURNAL_N,
    F__COUNT
};
static const char *const floor_sql[F__COUNT] = {
    [F_INSERT] = "INSERT INTO sagas(" SAGA_COLS ") VALUES ($1, $2, $3, $4, "
                 "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    [F_UPDATE] = "WITH u AS (UPDATE sagas SET def_name = $2, def_version = "
                 "$3, state = $4, step = $5, attempt = $6, flags = $7, "
                 "created_ms = $8, updated_ms = $9, due_ms = $10, "
                 "deadline_ms = $11, error = $12 WHERE id = $1 RETURNING 1) "
                 "SELECT 1 / (SELECT count(*)::int FROM u)",
    [F_JOURNAL] =
        "INSERT INTO journal_rows(saga_id, seq, event, step, attempt, "
        "started_ms, at_ms, error) VALUES ($1, $2, $3, $4, $5, $6, "
        "$7, $8)",
    /* Many rows per statement, as the store sends a batch of 4 or more:
     * the arrays unnested in the select list (a ProjectSet, no tuplestore),
     * as the store does. */
    [F_INSERT_N] = "INSERT INTO sagas(" SAGA_COLS ", jrn) SELECT unnest($1), "
                   "unnest($2), unnest($3), unnest($4), unnest($5), "
                   "unnest($6), unnest($7), unnest($8), unnest($9), "
                   "unnest($10), unnest($11), unnest($12), unnest($13), "
                   "unnest($14), unnest($15)",
    [F_UPDATE_N] = "WITH u AS (UPDATE sagas s SET def_name = v.def_name, "
                   "def_version = v.def_version, state = v.state, step = "
                   "v.step, attempt = v.attempt, flags = v.flags, created_ms "
                   "= v.created_ms, updated_ms = v.updated_ms, due_ms = "
                   "v.due_ms, deadline_ms = v.deadline_ms, error = v.error, "
                   "jrn = s.jrn || v.jrn "
                   "FROM (SELECT unnest($1) AS id, unnest($2) AS def_name, "
                   "unnest($3) AS def_version, unnest($4) AS state, "
                   "unnest($5) AS step, unnest($6) AS attempt, unnest($7) AS "
                   "flags, unnest($8) AS created_ms, unnest($9) AS "
                   "updated_ms, unnest($10) AS due_ms, unnest($11) AS "
                   "deadline_ms, unnest($12) AS error, unnest($13) AS jrn) v "
                   "WHERE s.id = v.id RETURNING 1) SELECT 1 / (SELECT "
                   "(count(*) = $14)::int FROM u)",
    [F_JOURNAL_N] =
        "INSERT INTO journal_rows(saga_id, seq, event, step, attempt, "
        "started_ms, at_ms, error) SELECT unnest($1), unnest($2), "
        "unnest($3), unnest($4), unnest($5), unnest($6), "
        "unnest($7), unnest($8)",
};
#define A_T 1009u
#define A_I 1016u
#define A_B 1001u
static const unsigned int floor_types[F__COUNT][16] = {
    [F_INSERT] = {25, 25, 20, 20, 20, 20, 20, 20, 20, 20, 20, 25, 25, 17},
    [F_UPDATE] = {25, 25, 20, 20, 20, 20, 20, 20, 20, 20, 20, 25},
    [F_JOURNAL] = {25, 20, 20, 20, 20, 20, 20, 25},
    [F_INSERT_N] = {A_T, A_T, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_T,
                    A_T, A_B, A_B},
    [F_UPDATE_N] = {A_T, A_T, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_I, A_T,
                    A_B, 20},
    [F_JOURNAL_N] = {A_T, A_I, A_I, A_I, A_I, A_I, A_I, A_T},
};
static const int floor_nparams[F__COUNT] = {14, 12, 8, 15, 14, 8};

typedef struct params {
    int n;
    const char *val[16];
    int len[16], fmt[16];
    char ints[16][8];
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

/* A binary one-dimensional array parameter (see the store's pg_batch.c). */
typedef struct arr {
    char *buf;
    size_t len, cap;
} arr;

static void a_bytes(arr *a, const void *v, size_t n)
{
    if (a->len + n > a->cap) {
        a->cap = (a->len + n) * 2 + 256;
        a->buf = realloc(a->buf, a->cap);
        if (a->buf == NULL)
            die("realloc", strerror(errno));
    }
    memcpy(a->buf + a->len, v, n);
    a->len += n;
}

static void a_u32(arr *a, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    a_bytes(a, b, 4);
}

static void a_start(arr *a, uint32_t oid, size_t n)
{
    a->len = 0;
    a_u32(a, 1);
    a_u32(a, 1);
    a_u32(a, oid);
    a_u32(a, (uint32_t)n);
    a_u32(a, 1);
}

static void a_text(arr *a, const char *v)
{
    if (v == NULL) {
        a_u32(a, 0xffffffffu);
        return;
    }
    a_u32(a, (uint32_t)strlen(v));
    a_bytes(a, v, strlen(v));
}

static void a_int(arr *a, int64_t v)
{
    a_u32(a, 8);
    a_u32(a, (uint32_t)((uint64_t)v >> 32));
    a_u32(a, (uint32_t)v);
}

typedef struct floor {
    PGconn *c;
    size_t sent;
    int bulk_sagas, bulk_journal; /* this transaction's rows go in arrays */
    arr ins[15], upd[13], jr[8];
    size_t nins, nupd, njr;
} floor;

static void fsend(floor *f, int which, const params *p)
{
    char name[8];
    snprintf(name, sizeof name, "f%d", which);
    if (!PQsendQueryPrepared(f->c, name, p->n, p->val, p->len, p->fmt, 1))
        die("PQsendQueryPrepared", PQerrorMessage(f->c));
    f->sent++;
}

/* One journal entry packed as the store packs it in the saga row (sagas.jrn,
 * stores/postgres/pg_int.h): seq, event, step, attempt as int4,
 * started_ms, at_ms, epoch as int8, owner and error as an int4 length
 * (-1: NULL) and their bytes; here without a lease and without error. */
static void jrn_entry(unsigned char *b, uint32_t seq, saga_journal_kind ev,
                      int step, const bench_fsaga *s, int64_t now)
{
    int saga_level = step < 0;
    uint32_t u[4] = {seq, (uint32_t)ev, (uint32_t)step, saga_level ? 0 : 1};
    int64_t l[3] = {saga_level ? 0 : s->started_ms, now, 0};
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 4; i++)
            b[4 * k + i] = (unsigned char)(u[k] >> (24 - 8 * i));
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 8; i++)
            b[16 + 8 * k + i] = (unsigned char)((uint64_t)l[k] >> (56 - 8 * i));
    memset(b + 40, 0xff, 8); /* owner NULL, error NULL */
}

/* The saga's journal entries of phase @p ph (bench/common/driver.c's
 * phase_journal) as one element of the jrn array. */
static void put_jrn(arr *a, const bench_fsaga *s, int ph, int64_t now)
{
    unsigned char b[2][48];
    int n = 1;
    if (ph == 0) {
        jrn_entry(b[0], 1, SAGA_JOURNAL_STARTED, -1, s, now);
    } else {
        jrn_entry(b[0], (uint32_t)ph + 1, SAGA_JOURNAL_STEP_OK, ph - 1, s, now);
        if (ph == NPHASES - 1)
            jrn_entry(b[n++], NPHASES + 1, SAGA_JOURNAL_COMPLETED, -1, s, now);
    }
    a_u32(a, (uint32_t)(48 * n));
    a_bytes(a, b, (size_t)(48 * n));
}

static void put_saga(void *arg, bench_fsaga *s, int ph, int64_t now)
{
    floor *f = arg;
    params p = {0};
    int done = ph == NPHASES - 1;
    if (f->bulk_sagas) {
        arr *a = ph == 0 ? f->ins : f->upd;
        ph == 0 ? f->nins++ : f->nupd++;
        a_text(&a[0], s->id);
        a_text(&a[1], "bench");
        a_int(&a[2], 1);
        a_int(&a[3], done ? SAGA_STATE_COMPLETED : SAGA_STATE_RUNNING);
        a_int(&a[4], done ? NSTEPS - 1 : ph);
        a_int(&a[5], 1);
        a_int(&a[6], done ? 0 : SAGA_REC_INFLIGHT);
        a_int(&a[7], s->created_ms);
        a_int(&a[8], now);
        a_int(&a[9], done ? 0 : now + STEP_TIMEOUT_MS);
        a_int(&a[10], 0);
        a_text(&a[11], NULL);
        if (ph == 0) {
            a_text(&a[12], NULL);
            a_u32(&a[13], 1);
            a_bytes(&a[13], "\x80", 1);
        }
        put_jrn(&a[ph == 0 ? 14 : 12], s, ph, now);
        return;
    }
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

static void put_journal(void *arg, const bench_fsaga *s, uint32_t seq,
                        saga_journal_kind ev, int step, int64_t now)
{
    floor *f = arg;
    if (f->bulk_sagas)
        return; /* packed in the saga's row (put_jrn) */
    params p = {0};
    int saga_level = step < 0;
    if (f->bulk_journal) {
        arr *a = f->jr;
        f->njr++;
        a_text(&a[0], s->id);
        a_int(&a[1], seq);
        a_int(&a[2], (int)ev);
        a_int(&a[3], step);
        a_int(&a[4], saga_level ? 0 : 1);
        a_int(&a[5], saga_level ? 0 : s->started_ms);
        a_int(&a[6], now);
        a_text(&a[7], NULL);
        return;
    }
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

/* Patch an array's element count (known once filled) and send it. */
static void a_count(arr *a, size_t n)
{
    size_t keep = a->len;
    a->len = 12;
    a_u32(a, (uint32_t)n);
    a->len = keep;
}

static void send_arrays(floor *f, int which, arr *a, int na, size_t n,
                        int with_count)
{
    params p = {0};
    for (int k = 0; k < na; k++) {
        a_count(&a[k], n);
        int i = p.n++;
        p.val[i] = a[k].buf;
        p.len[i] = (int)a[k].len;
        p.fmt[i] = 1;
    }
    if (with_count)
        p_int(&p, (int64_t)n);
    fsend(f, which, &p);
}

/* Start a transaction of @p nsagas saga rows and @p njournal journal rows:
 * arrays from 4 rows on, as the store does. */
static void begin_txn(void *arg, long nsagas, long njournal)
{
    floor *f = arg;
    static const uint32_t oids[14] = {25, 25, 20, 20, 20, 20, 20,
                                      20, 20, 20, 20, 25, 25, 17};
    f->bulk_sagas = nsagas >= 4;
    /* The journal of sagas written in arrays rides in their rows. */
    f->bulk_journal = !f->bulk_sagas && njournal >= 4;
    f->nins = f->nupd = f->njr = 0;
    for (int k = 0; k < 15; k++)
        a_start(&f->ins[k], k < 14 ? oids[k] : 17, 0);
    for (int k = 0; k < 13; k++)
        a_start(&f->upd[k], k < 12 ? oids[k] : 17, 0);
    for (int k = 0; k < 8; k++)
        a_start(&f->jr[k], k == 0 || k == 7 ? 25 : 20, 0);
}

static void end_sagas(void *arg)
{
    floor *f = arg;
    if (f->nins)
        send_arrays(f, F_INSERT_N, f->ins, 15, f->nins, 0);
    if (f->nupd)
        send_arrays(f, F_UPDATE_N, f->upd, 13, f->nupd, 1);
}

/* Send the sync, then flush and read until its result (non-blocking: a
 * large transaction's results would otherwise fill the socket while we
 * are still writing). */
static void finish_txn(void *arg)
{
    floor *f = arg;
    if (f->njr)
        send_arrays(f, F_JOURNAL_N, f->jr, 8, f->njr, 0);
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
    static floor f;
    f.c = connect_schema(schema);
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
    static const bench_floor_ops ops = {begin_txn, put_saga, end_sagas,
                                        put_journal, finish_txn};
    double *lat = calloc((size_t)n, sizeof *lat);
    if (lat == NULL)
        die("calloc", strerror(errno));
    double t = bench_floor_walk(&ops, &f, n, window, ncommits, lat);
    PQexitPipelineMode(f.c);
    PQfinish(f.c);
    result("floor", n, window, t, lat, ncommits);
    printf("\n");
    free(lat);
}

/* ------------------------------------------------------------------------ */

static void check(long n, const char *schema)
{
    PGconn *c = connect_schema(schema);
    /* The journal's rows, and the entries packed in the saga rows (walked
     * here: the view journal decodes them in SQL, slowly). */
    PGresult *r = PQexec(c, "SELECT (SELECT count(*) FROM sagas WHERE state "
                            "= 3), (SELECT count(*) FROM journal_rows)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("check", PQerrorMessage(c));
    long done = atol(PQgetvalue(r, 0, 0)), jn = atol(PQgetvalue(r, 0, 1));
    PQclear(r);
    r = PQexecParams(c, "SELECT jrn FROM sagas", 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("check", PQerrorMessage(c));
    for (int i = 0; i < PQntuples(r); i++) {
        const unsigned char *b = (const unsigned char *)PQgetvalue(r, i, 0);
        size_t len = (size_t)PQgetlength(r, i, 0), off = 0;
        while (off + 48 <= len) {
            off += 40;
            for (int k = 0; k < 2; k++) { /* owner, error */
                uint32_t sl = (uint32_t)b[off] << 24 |
                              (uint32_t)b[off + 1] << 16 |
                              (uint32_t)b[off + 2] << 8 | b[off + 3];
                off += 4 + (sl == 0xffffffffu ? 0 : sl + 1);
            }
            jn++;
        }
    }
    if (done != n || jn != 6 * n) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "%ld COMPLETED (want %ld), %ld journal "
                 "rows (want %ld)",
                 done, n, jn, 6 * n);
        die("check", msg);
    }
    PQclear(r);
    PQfinish(c);
}

int main(int argc, char **argv)
{
    bench_prog = "bench_scaleout";
    if (argc < 2)
        die("usage", "bench_scaleout engine|floor -n N -w W [-c COMMITS] "
                     "-S schema");
    const char *mode = argv[1];
    long n = 10000, w = 64;
    uint64_t commits = 0;
    const char *schema = "bench";
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "n:w:c:S:L:")) != -1) {
        switch (opt) {
        case 'n':
            n = atol(optarg);
            break;
        case 'w':
            w = atol(optarg);
            break;
        case 'c':
            commits = strtoull(optarg, NULL, 10);
            break;
        case 'S':
            schema = optarg;
            break;
        case 'L':
            g_lease_ms = (uint32_t)atol(optarg);
            break;
        default:
            die("usage", "bad option");
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
    /* With a lease the schema is shared: the driver checks the total. */
    if (g_lease_ms == 0)
        check(n, schema);
    return 0;
}

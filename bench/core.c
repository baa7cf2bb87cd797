/*
 * core.c — the engine's core cost, measured against a plain-SQLite floor
 * (bench/README.md has the results).
 *
 *   bench_core [-n sagas] [-w window] [-s seq_sagas] [-r reps] [-d dir]
 *              [-k] [-x] [-v]
 *
 * Sagas of 4 local steps whose actions report OK at once run through the
 * engine on the SQLite store with its defaults (WAL, synchronous=FULL), in
 * a fresh file per run. engine-batch: N sagas, at most W in flight, a done
 * callback starting the next; timed from the first saga_start() to the loop
 * returning. engine-sequential: one saga at a time, the next started from
 * the previous one's done callback (its COMPLETED is durable); latency is
 * saga_start() -> done callback.
 *
 * The floor is the same durable work done with SQLite alone: the same file
 * settings (WAL, synchronous=FULL, the engine file's page size), the
 * store's schema (its CREATE statements read from the engine's file; the
 * run fails if the schemas differ) and its INSERT/UPDATE/BEGIN
 * IMMEDIATE/COMMIT statements (copied from stores/sqlite), each
 * prepared once, bound SQLITE_STATIC. Per saga it writes the engine's rows:
 * 1 saga INSERT, 4 saga UPDATEs, 6 journal INSERTs (STARTED, STEP_OK x4,
 * COMPLETED), with the same values and ids of the engine's scheme (ids
 * decide where rows land in the B-trees). The engine commits a batch, then
 * releases its effects, which stage the next batch: with sagas in lockstep
 * each commit holds one phase (start, step 1..3 done, completed) of every
 * saga in flight. The floor walks the same (saga, phase) sequence and cuts
 * it into exactly as many transactions as the engine committed in that run
 * (saga_engine_stats().commits): at the phase boundaries when the count is
 * the lockstep one, else evenly. Saga rows go first in a transaction, then
 * the journal, as in write_batch(). Both files are checked afterwards (N
 * COMPLETED sagas, 6N journal rows) and the bytes each run wrote are
 * reported: they match. So engine/floor is the engine's own overhead (state
 * machine, staging, timers, callbacks, the store's vtable and checks) over
 * the SQLite work and fsyncs any durable implementation pays. The floor's
 * timed region holds only SQLite calls, a clock read per transaction and
 * making each id.
 *
 * The engine run and the floor's walk of the rows are bench/common/driver.c,
 * shared with bench/scaleout (the same workload on PostgreSQL).
 *
 * Each measurement is repeated -r times on fresh files, engine first on
 * even repetitions and floor first on odd ones, with sync() between runs so
 * that none pays for another's writeback; medians are reported, with CPU
 * time, which is steadier than wall time on a shared machine.
 */
#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <saga/saga.h>

#include "common/driver.h"

#define NSTEPS BENCH_NSTEPS
#define NPHASES BENCH_NPHASES
#define STEP_TIMEOUT_MS BENCH_STEP_TIMEOUT_MS

typedef struct config {
    long n, window, seq, reps;
    const char *dir;
    int keep;
    int engine_only; /* -x: skip the floor (for profiling the engine) */
    int verbose;     /* -v: print every repetition */
} config;

static char g_dir[1024];
static int g_page_size; /* the engine database's, the floor uses it */
static char *g_schema;  /* the engine database's schema */

/* Bytes this process handed to write()/pwrite() so far: the WAL and
 * checkpoint traffic of a run, which the engine and the floor should match. */
static long long wchar_now(void)
{
    long long v = -1;
    char line[128];
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %lld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* CPU seconds (user + system) this process used so far: steadier than
 * wall time on a shared machine, and blind to time spent waiting for
 * fsync. */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

#define die bench_die

static void db_path(char *out, size_t n, const char *name, long rep)
{
    snprintf(out, n, "%s/%s-%ld.db", g_dir, name, rep);
}

static void db_remove(const char *path, int keep)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char p[1400];
    for (int i = 0; i < 3 && !keep; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */

/* Run @p n sagas with at most @p window in flight on a fresh SQLite store
 * at @p path (bench/common/driver.c). Returns the time. */
static double engine_run(const char *path, long n, long window, double *lat,
                         uint64_t *commits)
{
    saga_store *store;
    int rc = saga_store_sqlite_open(&store, path, NULL);
    if (rc != SAGA_OK)
        die("saga_store_sqlite_open", saga_strerror(rc));
    return bench_engine_run(store, n, window, lat, commits);
}

/* ------------------------------------------------------------------------ */
/* The floor: plain SQLite                                                  */

/* The store's schema as SQL, read from the engine's database (its CREATE
 * statements in creation order, then its user_version): the floor creates
 * its tables from it, so they are the store's whatever its migrations say.
 * check_schema() still compares both files' sqlite_master. */
static char *g_schema_sql;

#define SAGA_COLS                                                              \
    "id, def_name, def_version, state, step, attempt, flags, created_ms, "     \
    "updated_ms, due_ms, deadline_ms, idem_key, error, data"

enum { F_BEGIN, F_COMMIT, F_INSERT, F_UPDATE, F_JOURNAL, F__COUNT };
static const char *const floor_sql[F__COUNT] = {
    [F_BEGIN] = "BEGIN IMMEDIATE",
    [F_COMMIT] = "COMMIT",
    [F_INSERT] = "INSERT INTO sagas(" SAGA_COLS ") VALUES "
                 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                 "?13, ?14)",
    [F_UPDATE] = "UPDATE sagas SET def_name = ?2, def_version = ?3, "
                 "state = ?4, step = ?5, attempt = ?6, flags = ?7, "
                 "created_ms = ?8, updated_ms = ?9, due_ms = ?10, "
                 "deadline_ms = ?11, error = ?13 WHERE id = ?1",
    [F_JOURNAL] = "INSERT INTO journal(saga_id, seq, event, step, "
                  "attempt, started_ms, at_ms, error) VALUES "
                  "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
};

typedef struct floor_db {
    sqlite3 *db;
    sqlite3_stmt *st[F__COUNT];
} floor_db;

static void fexec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err ? err : sqlite3_errmsg(db));
}

static void fstep(floor_db *f, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die("floor step", sqlite3_errmsg(f->db));
    sqlite3_reset(st);
}

static void floor_open(floor_db *f, const char *path, int page_size)
{
    if (sqlite3_open_v2(path, &f->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        die("sqlite3_open_v2", sqlite3_errmsg(f->db));
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA page_size = %d", page_size);
    fexec(f->db, sql); /* before anything creates the file's first page */
    fexec(f->db, "PRAGMA journal_mode = WAL");
    fexec(f->db, "PRAGMA synchronous = FULL");
    fexec(f->db, "BEGIN IMMEDIATE");
    fexec(f->db, g_schema_sql);
    fexec(f->db, "COMMIT");
    for (int i = 0; i < F__COUNT; i++)
        if (sqlite3_prepare_v3(f->db, floor_sql[i], -1,
                               SQLITE_PREPARE_PERSISTENT, &f->st[i],
                               NULL) != SQLITE_OK)
            die("prepare", sqlite3_errmsg(f->db));
}

static void floor_close(floor_db *f)
{
    for (int i = 0; i < F__COUNT; i++)
        sqlite3_finalize(f->st[i]);
    sqlite3_close(f->db);
}

static const unsigned char empty_map = 0x80;

/* The saga row after phase @p p (0 = started, 1..3 = step p running, 4 =
 * completed), written as the store's saga_put() binds it. */
static void put_saga(void *arg, bench_fsaga *s, int p, int64_t now)
{
    floor_db *f = arg;
    sqlite3_stmt *st = f->st[p == 0 ? F_INSERT : F_UPDATE];
    int done = p == NPHASES - 1;
    sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, "bench", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, 1);
    sqlite3_bind_int(st, 4, done ? SAGA_STATE_COMPLETED : SAGA_STATE_RUNNING);
    sqlite3_bind_int(st, 5, done ? NSTEPS - 1 : p);
    sqlite3_bind_int64(st, 6, 1);
    sqlite3_bind_int64(st, 7, done ? 0 : SAGA_REC_INFLIGHT);
    sqlite3_bind_int64(st, 8, s->created_ms);
    sqlite3_bind_int64(st, 9, now);
    sqlite3_bind_int64(st, 10, done ? 0 : now + STEP_TIMEOUT_MS);
    sqlite3_bind_int64(st, 11, 0);
    sqlite3_bind_null(st, 13);
    if (p == 0) {
        sqlite3_bind_null(st, 12);
        sqlite3_bind_blob64(st, 14, &empty_map, 1, SQLITE_STATIC);
    }
    fstep(f, st);
}

static void put_journal(void *arg, const bench_fsaga *s, uint32_t seq,
                        saga_journal_kind ev, int step, int64_t now)
{
    floor_db *f = arg;
    sqlite3_stmt *st = f->st[F_JOURNAL];
    int saga_level = step < 0;
    sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int(st, 3, (int)ev);
    sqlite3_bind_int(st, 4, step);
    sqlite3_bind_int64(st, 5, saga_level ? 0 : 1);
    sqlite3_bind_int64(st, 6, saga_level ? 0 : s->started_ms);
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_null(st, 8);
    fstep(f, st);
}

static void floor_begin(void *arg, long nsagas, long njournal)
{
    floor_db *f = arg;
    (void)nsagas, (void)njournal;
    fstep(f, f->st[F_BEGIN]);
}

static void floor_commit(void *arg)
{
    floor_db *f = arg;
    fstep(f, f->st[F_COMMIT]);
}

/* Write @p n sagas' rows in @p ncommits transactions, walked as the
 * engine's (bench/common/driver.c). @p lat gets each saga's first BEGIN ->
 * last COMMIT. Returns the time. */
static double floor_run(const char *path, int page_size, long n, long window,
                        uint64_t ncommits, double *lat)
{
    static const bench_floor_ops ops = {floor_begin, put_saga, NULL,
                                        put_journal, floor_commit};
    floor_db f;
    floor_open(&f, path, page_size);
    double t = bench_floor_walk(&ops, &f, n, window, ncommits, lat);
    floor_close(&f);
    return t;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */

static long count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sql, sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static sqlite3 *ro_open(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        die("open for checking", sqlite3_errmsg(db));
    return db;
}

/* Both programs must have left N COMPLETED sagas and 6N journal rows. */
static void check_rows(const char *path, const char *who, long n)
{
    sqlite3 *db = ro_open(path);
    long sagas = count(db, "SELECT count(*) FROM sagas WHERE state = 3");
    long all = count(db, "SELECT count(*) FROM sagas");
    long jr = count(db, "SELECT count(*) FROM journal");
    sqlite3_close(db);
    if (sagas == n && all == n && jr == n * (NPHASES + 1))
        return;
    fprintf(stderr,
            "bench_core: %s: expected %ld COMPLETED sagas and %ld "
            "journal rows, found %ld/%ld and %ld\n",
            who, n, n * (NPHASES + 1), sagas, all, jr);
    exit(1);
}

/* The one text value of @p query on the database at @p path, malloc'd. */
static char *text_of(const char *path, const char *query)
{
    char *txt = NULL;
    sqlite3 *db = ro_open(path);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, query, -1, &st, NULL) != SQLITE_OK)
        die("schema", sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        txt = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (txt == NULL)
        die("schema", path);
    return txt;
}

/* The schema as text (sqlite_master in name order): the floor's must be
 * the store's, statement for statement. */
static char *schema_of(const char *path)
{
    return text_of(path, "SELECT group_concat(type || name || "
                         "coalesce(sql, ''), ';') FROM (SELECT * FROM "
                         "sqlite_master ORDER BY name)");
}

/* The SQL that makes the schema of the database at @p path. */
static char *schema_sql_of(const char *path)
{
    return text_of(path, "SELECT (SELECT group_concat(sql, ';') FROM (SELECT "
                         "sql FROM sqlite_master WHERE sql IS NOT NULL ORDER "
                         "BY rowid)) || ';PRAGMA user_version = ' || "
                         "(SELECT user_version FROM pragma_user_version)");
}

/* ------------------------------------------------------------------------ */
/* Statistics and the driver                                                */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Nearest-rank percentile of sorted @p v. */
static double pct(const double *v, long n, double p)
{
    long k = (long)(p / 100.0 * (double)n + 0.999999);
    return v[k < 1 ? 0 : k > n ? n - 1 : k - 1];
}

typedef struct result {
    const char *name;
    long n;
    double *times;  /* per rep */
    double *mbytes; /* per rep: MB written (WAL and checkpoints) */
    double *cpu;    /* per rep: CPU seconds */
    uint64_t commits;
    double *lat; /* all reps' latencies, or NULL */
    long nlat;
} result;

static void report(result *r, long reps)
{
    double t = median(r->times, reps);
    double mb = median(r->mbytes, reps), cpu = median(r->cpu, reps);
    printf("%-18s sagas/s=%7.0f time=%6.3fs cpu=%6.3fs commits=%-5llu "
           "written=%6.1fMB",
           r->name, (double)r->n / t, t, cpu, (unsigned long long)r->commits,
           mb);
    if (r->lat != NULL) {
        qsort(r->lat, (size_t)r->nlat, sizeof *r->lat, cmp_double);
        printf("  p50=%.3fms p99=%.3fms", pct(r->lat, r->nlat, 50) * 1e3,
               pct(r->lat, r->nlat, 99) * 1e3);
    }
    printf("\n");
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_core [-n sagas] [-w window] [-s seq_sagas] "
            "[-r reps] [-d dir] [-k] [-x] [-v]\n"
            "  -n  sagas in batch mode (20000)\n"
            "  -w  batch mode: sagas in flight at once (2000; -w 0 = all)\n"
            "  -s  sagas in sequential mode (500; 0 skips it)\n"
            "  -r  repetitions, median reported (3)\n"
            "  -d  directory for the database files ($TMPDIR or /tmp)\n"
            "  -k  keep the database files\n"
            "  -x  engine only, for profiling (floor lines repeat it)\n"
            "  -v  print every repetition\n");
    exit(2);
}

static long num_arg(const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min)
        usage();
    return v;
}

static void parse(config *c, int argc, char **argv)
{
    int ch;
    const char *tmp = getenv("TMPDIR");
    *c = (config){20000, 2000, 500, 3, tmp ? tmp : "/tmp", 0, 0, 0};
    while ((ch = getopt(argc, argv, "n:w:s:r:d:kxvh")) != -1) {
        switch (ch) {
        case 'n':
            c->n = num_arg(optarg, 1);
            break;
        case 'w':
            c->window = num_arg(optarg, 0);
            break;
        case 's':
            c->seq = num_arg(optarg, 0);
            break;
        case 'r':
            c->reps = num_arg(optarg, 1);
            break;
        case 'd':
            c->dir = optarg;
            break;
        case 'k':
            c->keep = 1;
            break;
        case 'x':
            c->engine_only = 1;
            break;
        case 'v':
            c->verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    if (c->window == 0 || c->window > c->n)
        c->window = c->n;
}

/* Drop a finished run's file and push its dirty pages out, so that the
 * next measurement does not pay for this one's writeback. */
static void settle(const char *path, int keep)
{
    db_remove(path, keep);
    sync();
}

/* One engine run and the floor run that mirrors it. The floor needs the
 * engine's commit count; from the second repetition on, odd repetitions
 * run the floor first (with the count of the engine's last run) so that
 * neither side always goes second. */
static void pair(const config *c, const char *tag, long n, long window,
                 long rep, result *eng, result *flo)
{
    char ep[1200], fp[1200], en[64], fn[64];
    snprintf(en, sizeof en, "engine-%s", tag);
    snprintf(fn, sizeof fn, "floor-%s", tag);
    db_path(ep, sizeof ep, en, rep);
    db_path(fp, sizeof fp, fn, rep);
    double *scratch = NULL, *elat, *flat;
    if (eng->lat != NULL) {
        elat = eng->lat + eng->nlat;
        flat = flo->lat + flo->nlat;
    } else {
        scratch = malloc((size_t)n * sizeof *scratch);
        if (scratch == NULL)
            die("malloc", strerror(errno));
        elat = flat = scratch;
    }
    int floor_first = !c->engine_only && rep % 2 == 1;
    for (int turn = 0; turn < 2; turn++) {
        long long w0 = wchar_now();
        double c0 = cpu_now();
        if (turn == floor_first) {
            uint64_t commits;
            eng->times[rep] = engine_run(ep, n, window, elat, &commits);
            eng->mbytes[rep] = (double)(wchar_now() - w0) / 1e6;
            eng->cpu[rep] = cpu_now() - c0;
            check_rows(ep, en, n);
            if (eng->commits != 0 && commits != eng->commits)
                fprintf(stderr,
                        "bench_core: warning: the engine made %llu "
                        "commits, its previous run %llu\n",
                        (unsigned long long)commits,
                        (unsigned long long)eng->commits);
            eng->commits = commits;
            if (g_schema == NULL) {
                sqlite3 *db = ro_open(ep);
                g_page_size = (int)count(db, "PRAGMA page_size");
                sqlite3_close(db);
                g_schema = schema_of(ep);
                g_schema_sql = schema_sql_of(ep);
            }
            settle(ep, c->keep);
        } else if (c->engine_only) {
            flo->times[rep] = eng->times[rep];
            flo->mbytes[rep] = eng->mbytes[rep];
            flo->cpu[rep] = eng->cpu[rep];
            flo->commits = eng->commits;
            memcpy(flat, elat, flat == elat ? 0 : (size_t)n * sizeof *flat);
        } else {
            flo->commits = eng->commits;
            flo->times[rep] = floor_run(fp, g_page_size, n, window,
                                        flo->commits, flat);
            flo->mbytes[rep] = (double)(wchar_now() - w0) / 1e6;
            flo->cpu[rep] = cpu_now() - c0;
            check_rows(fp, fn, n);
            char *fs = schema_of(fp);
            if (strcmp(fs, g_schema) != 0)
                die("schema check", "the floor's schema differs from the "
                                    "SQLite store's");
            free(fs);
            settle(fp, c->keep);
        }
    }
    if (c->verbose)
        printf("  %-5s rep %ld: engine %.3fs (cpu %.3fs)  floor %.3fs (cpu "
               "%.3fs)%s\n",
               tag, rep, eng->times[rep], eng->cpu[rep], flo->times[rep],
               flo->cpu[rep], floor_first ? "  floor ran first" : "");
    if (eng->lat != NULL) {
        eng->nlat += n;
        flo->nlat += n;
    }
    free(scratch);
}

int main(int argc, char **argv)
{
    bench_prog = "bench_core";
    config c;
    parse(&c, argc, argv);
    snprintf(g_dir, sizeof g_dir, "%s/saga-bench-XXXXXX", c.dir);
    if (mkdtemp(g_dir) == NULL)
        die("mkdtemp", strerror(errno));

    /* Per repetition: time, MB written and CPU time of each of 4 lines. */
    double *v = calloc((size_t)c.reps * 12, sizeof *v);
    double *lat = c.seq ? malloc((size_t)(c.seq * c.reps) * 2 * sizeof *lat)
                        : NULL;
    if (v == NULL || (c.seq && lat == NULL))
        die("malloc", strerror(errno));
    result r[4] = {{.name = "engine-batch", .n = c.n},
                   {.name = "floor-batch", .n = c.n},
                   {.name = "engine-sequential", .n = c.seq, .lat = lat},
                   {.name = "floor-sequential",
                    .n = c.seq,
                    .lat = lat ? lat + c.seq * c.reps : NULL}};
    for (int i = 0; i < 4; i++) {
        r[i].times = v + (3 * i) * c.reps;
        r[i].mbytes = v + (3 * i + 1) * c.reps;
        r[i].cpu = v + (3 * i + 2) * c.reps;
    }

    printf("bench core: %ld sagas x %d no-op local steps, window %ld; "
           "sequential %ld; %ld reps (median); SQLite %s WAL "
           "synchronous=FULL; dir %s\n",
           c.n, NSTEPS, c.window, c.seq, c.reps, sqlite3_libversion(), g_dir);
    fflush(stdout);
    for (long rep = 0; rep < c.reps; rep++) {
        pair(&c, "batch", c.n, c.window, rep, &r[0], &r[1]);
        if (c.seq)
            pair(&c, "seq", c.seq, 1, rep, &r[2], &r[3]);
    }
    for (int i = 0; i < (c.seq ? 4 : 2); i++)
        report(&r[i], c.reps);
    printf("rows per run: %ld sagas (1 INSERT + %d UPDATEs each), %ld journal "
           "rows; %s; page_size %d\n",
           c.n, NSTEPS, c.n * (NPHASES + 1),
           c.engine_only ? "no floor (-x)" : "schema identical", g_page_size);
    double ratio = median(r[0].times, c.reps) / median(r[1].times, c.reps);
    printf("engine_vs_floor=%.2f\n", ratio);
    if (!c.keep)
        rmdir(g_dir);
    free(v);
    free(lat);
    free(g_schema);
    free(g_schema_sql);
    return 0;
}

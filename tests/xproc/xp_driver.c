/*
 * xp_driver.c — the cross-process test over TCP on loopback.
 *
 *   xp_driver XP_ORCH XP_PART WORKDIR [N] [KILLS] [SEED] [ORCH_KILLS] [CHAOS]
 *
 * It starts an orchestrator (xp_orch) and two participants (xp_part:
 * inventory, payment), each on its own SQLite file, lets the orchestrator
 * run N sagas (default 1000) and SIGKILLs a participant KILLS times
 * (default 4, alternating, at different points of progress), restarting it
 * after a pause; with ORCH_KILLS (default 0) every third kill is the
 * orchestrator's instead, restarted on the same file. With CHAOS=1 there
 * are KILLS kill events at random points of progress, each SIGKILLing a
 * random non-empty set of {orchestrator, inventory, payment} at the same
 * moment (the first kills all three), so the orchestrator and the
 * participants go down together and recover from each other's state.
 * Once the
 * orchestrator reports every saga terminal it stops everything and checks the three SQLite files directly:
 *   - N sagas, one per idempotency key, every one COMPLETED or COMPENSATED,
 *     as the business outcome (a pure function of the saga id) predicts,
 *     journals gap-free;
 *   - no duplicate effect (the participants' dup counter is 0) and no
 *     missing one: every STEP_OK in the journal has its action row at the
 *     participant, and every applied action the journal does not show OK
 *     was compensated;
 *   - every compensation row matches an applied action and a COMP_OK, and
 *     every COMP_OK is either a real compensation or a null compensation
 *     recorded in the participant's barrier ('N');
 *   - the barrier agrees with the effect rows.
 * Outbox rows left over are reported, not failed: a message is deleted only
 * once its receiver acked it, and the orchestrator may exit (every saga
 * terminal) before a restarted participant has re-sent replies it had sent
 * already; they wait for the next start (at-least-once).
 * It fails loudly, naming the saga and the step.
 *
 * Over Kafka: with XP_KAFKA_MOCK=path/to/mock_cluster in the environment
 * the three programs talk through a mock Kafka cluster (a process of its
 * own; topics orders, inventory and payment with 4 partitions each) instead
 * of TCP, and XP_FAULT names faults injected through the mock at two
 * points of progress (the KILLS participant kills happen as well):
 *   produce  Produce requests fail: 8 with a retriable error, then 3 with
 *            a permanent one (the relay sends those again);
 *   broker   (3 brokers) broker 2 down for 2 s, later broker 1 for 1.5 s;
 *   lostack  Produce answers delayed past socket.timeout.ms (1 s): the
 *            producer retries and the 2.0.2 mock stores both copies, so
 *            consumers see duplicates; the inbox must absorb them;
 *   commit   OffsetCommit fails: 5 NOT_COORDINATOR, then 2
 *            UNKNOWN_MEMBER_ID (the consumer rejoins: a rebalance);
 *   none     no mock fault (use KILLS for consumer kills and rebalances).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <saga/saga.h>

#include "xp_common.h"

#define MAX_FAIL_PRINT 40
#define RUN_LIMIT_S 120

typedef struct xsaga {
    char id[SAGA_ID_SIZE];
    int state;
    int seen_idem;
    uint32_t last_seq;
    int started, ended, gave_up;
    int ok[XP_NSTEPS], fail[XP_NSTEPS], retry[XP_NSTEPS];
    int timeout[XP_NSTEPS], comp_ok[XP_NSTEPS];
    int act[XP_NSTEPS], comp[XP_NSTEPS]; /* participant effect rows */
    char bar[XP_NSTEPS];                 /* participant barrier */
} xsaga;

static xsaga *sagas;
static size_t nsagas;
static int failures;
static const char *workdir;
static int64_t orch_outbox;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
    if (failures++ < MAX_FAIL_PRINT) {
        va_list ap;
        va_start(ap, fmt);
        fputs("xproc FAIL: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t rng;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* ---- processes ----------------------------------------------------------- */

/* Free loopback ports: bind all at once to port 0, read them, close. The
 * programs listen with SO_REUSEADDR (libuv sets it), so a restarted
 * participant gets its port back. */
static int pick_ports(int *ports, int n)
{
    int fds[8];
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t l = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &l) != 0)
            return -1;
        ports[i] = ntohs(a.sin_port);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

/* ---- the mock Kafka cluster (XP_KAFKA_MOCK) ------------------------------ */

static pid_t mock_pid = -1;
static FILE *mock_in, *mock_out;

static int mock_start(const char *bin, int brokers, char *bootstrap, size_t cap)
{
    int in[2], out[2];
    char b[16];
    snprintf(b, sizeof b, "%d", brokers);
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    mock_pid = fork();
    if (mock_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl(bin, bin, "-b", b, "-t", "orders:4", "-t", "inventory:4", "-t",
              "payment:4", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    mock_in = fdopen(in[1], "w");
    mock_out = fdopen(out[0], "r");
    if (mock_pid < 0 || mock_in == NULL || mock_out == NULL ||
        fgets(bootstrap, (int)cap, mock_out) == NULL)
        return -1;
    bootstrap[strcspn(bootstrap, "\n")] = '\0';
    return bootstrap[0] ? 0 : -1;
}

static void mock_cmd(const char *cmd)
{
    char ans[256] = "";
    fprintf(mock_in, "%s\n", cmd);
    fflush(mock_in);
    if (fgets(ans, sizeof ans, mock_out) == NULL || strncmp(ans, "ok", 2))
        failf("mock cluster: '%s' answered '%s'", cmd, ans);
    fprintf(stderr, "xproc: mock: %s\n", cmd);
}

static void mock_stop(void)
{
    if (mock_pid <= 0)
        return;
    fclose(mock_in); /* it exits when stdin closes */
    int st = 0;
    for (int w = 0; w < 5000; w += 10) {
        if (waitpid(mock_pid, &st, WNOHANG) == mock_pid) {
            mock_pid = -1;
            break;
        }
        sleep_ms(10);
    }
    if (mock_pid > 0) {
        kill(mock_pid, SIGKILL);
        waitpid(mock_pid, NULL, 0);
    }
    fclose(mock_out);
    mock_pid = -1;
}

/* A fault: a mock command, and optionally a second one @p ms later. */
typedef struct fault {
    const char *cmd;
    int ms;
    const char *then;
} fault;

static const fault *faults_for(const char *name, int *n, int *brokers)
{
    static const fault produce[] = {{"errors 0 8 6", 0, NULL},
                                    {"errors 0 3 10", 0, NULL}};
    static const fault broker[] = {{"down 2", 2000, "up 2"},
                                   {"down 1", 1500, "up 1"}};
    static const fault lostack[] = {{"rtt 1 0 10 0 1500", 0, NULL},
                                    {"rtt 1 0 10 0 1500", 0, NULL}};
    static const fault commit[] = {{"errors 8 5 16", 0, NULL},
                                   {"errors 8 2 25", 0, NULL}};
    *brokers = 1;
    *n = 2;
    if (strcmp(name, "produce") == 0)
        return produce;
    if (strcmp(name, "broker") == 0) {
        *brokers = 3;
        return broker;
    }
    if (strcmp(name, "lostack") == 0)
        return lostack;
    if (strcmp(name, "commit") == 0)
        return commit;
    *n = 0;
    return NULL;
}

/* Wait (at most 30 s) until @p log says the participant has partitions. */
static int wait_assigned(const char *log)
{
    for (int w = 0; w < 30000; w += 20) {
        FILE *f = fopen(log, "r");
        char line[512];
        int found = 0;
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            found |= strstr(line, "xp_part: assigned") != NULL;
        if (f != NULL)
            fclose(f);
        if (found)
            return 0;
        sleep_ms(20);
    }
    return -1;
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = fopen(log, "a");
        if (f != NULL) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        /* SIGTERM waits (blocked; the mask survives exec) until the
         * program has its handler and unblocks it: a process stopped
         * just after a restart still stops cleanly. */
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

typedef struct part {
    const char *service;
    char db[4096], log[4096], port[16];
    pid_t pid;
} part;

static const char *part_bin;
static char orch_port[16];

static void part_start(part *p)
{
    char *argv[] = {(char *)part_bin, p->db,     (char *)p->service,
                    p->port,          orch_port, NULL};
    p->pid = spawn(argv, p->log);
}

/* Stop @p pid: SIGTERM, then SIGKILL after @p grace_ms. @return its wait
 * status. */
static int stop(pid_t pid, int sig, int grace_ms)
{
    int st = 0;
    kill(pid, sig);
    for (int w = 0; w < grace_ms; w += 10) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return st;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return st;
}

static void dump_log(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", path);
    fprintf(stderr, "---- %s ----\n", path);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log)\n");
}

/* ---- verification -------------------------------------------------------- */

static int by_id(const void *a, const void *b)
{
    return strcmp(((const xsaga *)a)->id, ((const xsaga *)b)->id);
}

static xsaga *find(const char *id)
{
    xsaga key;
    size_t n = strlen(id);
    if (n >= sizeof key.id)
        return NULL; /* longer than any id this test creates */
    memcpy(key.id, id, n + 1);
    return bsearch(&key, sagas, nsagas, sizeof *sagas, by_id);
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        failf("cannot open %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        failf("%s: %s", sql, sqlite3_errmsg(db));
    return st;
}

static int64_t scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = prep(db, sql);
    int64_t v = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static void load_orchestrator(const char *path, int n)
{
    sqlite3 *db = open_db(path);
    if (db == NULL)
        return;
    int64_t cnt = scalar(db, "SELECT count(*) FROM sagas");
    if (cnt != n)
        failf("orchestrator has %lld sagas, expected %d", (long long)cnt, n);
    sagas = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof *sagas);
    sqlite3_stmt *st = prep(db, "SELECT id, state FROM sagas");
    while (st && sqlite3_step(st) == SQLITE_ROW && nsagas < (size_t)cnt) {
        xsaga *s = &sagas[nsagas++];
        snprintf(s->id, sizeof s->id, "%s", col(st, 0));
        s->state = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    qsort(sagas, nsagas, sizeof *sagas, by_id);

    /* One saga per idempotency key xp-0 .. xp-(n-1). */
    st = prep(db, "SELECT key, saga_id FROM idem");
    int keys = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        xsaga *s = find(col(st, 1));
        int k = -1;
        if (sscanf(col(st, 0), "xp-%d", &k) != 1 || k < 0 || k >= n)
            failf("unexpected idempotency key '%s'", col(st, 0));
        if (s == NULL)
            failf("idempotency key %s names unknown saga %s", col(st, 0),
                  col(st, 1));
        else if (s->seen_idem++)
            failf("saga %s has two idempotency keys", s->id);
        keys++;
    }
    sqlite3_finalize(st);
    if (keys != n)
        failf("%d idempotency keys, expected %d", keys, n);

    st = prep(db, "SELECT saga_id, seq, event, step, error FROM journal "
                  "ORDER BY saga_id, seq");
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        xsaga *s = find(col(st, 0));
        if (s == NULL) {
            failf("journal entry of unknown saga %s", col(st, 0));
            continue;
        }
        uint32_t seq = (uint32_t)sqlite3_column_int64(st, 1);
        int ev = sqlite3_column_int(st, 2), k = sqlite3_column_int(st, 3);
        if (seq != s->last_seq + 1)
            failf("saga %s: journal seq %u after %u", s->id, seq, s->last_seq);
        s->last_seq = seq;
        if (k < -1 || k >= XP_NSTEPS) {
            failf("saga %s: journal step %d", s->id, k);
            continue;
        }
        switch (ev) {
        case SAGA_JOURNAL_STARTED:
            s->started++;
            break;
        case SAGA_JOURNAL_STEP_OK:
            s->ok[k]++;
            break;
        case SAGA_JOURNAL_STEP_FAIL:
            s->fail[k]++;
            break;
        case SAGA_JOURNAL_STEP_RETRY:
            s->retry[k]++;
            break;
        case SAGA_JOURNAL_STEP_TIMEOUT:
            s->timeout[k]++;
            break;
        case SAGA_JOURNAL_COMP_OK:
            s->comp_ok[k]++;
            break;
        case SAGA_JOURNAL_COMPLETED:
        case SAGA_JOURNAL_COMPENSATED:
        case SAGA_JOURNAL_FAILED:
            s->ended++;
            break;
        case SAGA_JOURNAL_COMPENSATING:
            if (strstr(col(st, 4), "gave up") != NULL)
                s->gave_up = 1;
            break;
        default:
            break;
        }
    }
    sqlite3_finalize(st);
    orch_outbox = scalar(db, "SELECT count(*) FROM outbox");
    sqlite3_close(db);
}

typedef struct pstats {
    int64_t actions, comps, nulls, outbox, dups;
} pstats;

static void load_participant(const part *p, pstats *ps)
{
    sqlite3 *db = open_db(p->db);
    if (db == NULL)
        return;
    sqlite3_stmt *st = prep(db, "SELECT saga_id, step, kind FROM effects");
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        xsaga *s = find(col(st, 0));
        int k = sqlite3_column_int(st, 1);
        int is_comp = strcmp(col(st, 2), "comp") == 0;
        if (s == NULL || k < 0 || k >= XP_NSTEPS ||
            strcmp(xp_step_service[k], p->service) != 0) {
            failf("%s: effect for unknown saga/step %s/%d", p->service,
                  col(st, 0), k);
            continue;
        }
        if (is_comp) {
            s->comp[k]++;
            ps->comps++;
        } else {
            s->act[k]++;
            ps->actions++;
        }
    }
    sqlite3_finalize(st);
    st = prep(db, "SELECT name, n FROM counters");
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = col(st, 0);
        int64_t v = sqlite3_column_int64(st, 1);
        if (strcmp(name, "dup") == 0)
            ps->dups = v;
        if (strcmp(name, "dup") == 0 && v != 0)
            failf("%s: %lld DUPLICATE effects (INSERTs that hit the "
                  "primary key)",
                  p->service, (long long)v);
        if (strcmp(name, "action") == 0 && v != ps->actions)
            failf("%s: action counter %lld but %lld action rows", p->service,
                  (long long)v, (long long)ps->actions);
        if (strcmp(name, "comp") == 0 && v != ps->comps)
            failf("%s: comp counter %lld but %lld comp rows", p->service,
                  (long long)v, (long long)ps->comps);
    }
    sqlite3_finalize(st);
    st = prep(db, "SELECT key, val FROM kv WHERE key LIKE 'b/%'");
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        char id[64];
        int k = -1;
        const unsigned char *v = sqlite3_column_blob(st, 1);
        int n = sqlite3_column_bytes(st, 1);
        /* Rows written since participant retention carry a header: a
         * 0x01 marker and the 8-byte time of the last write
         * (lib/participant_keep.c); the state letter follows it. */
        if (v != NULL && n >= 9 && v[0] == 0x01) {
            v += 9;
            n -= 9;
        }
        if (sscanf(col(st, 0), "b/%63[^/]/%d", id, &k) != 2 || k < 0 ||
            k >= XP_NSTEPS || v == NULL || n < 1) {
            failf("%s: bad barrier row '%s'", p->service, col(st, 0));
            continue;
        }
        xsaga *s = find(id);
        if (s == NULL) {
            failf("%s: barrier of unknown saga %s", p->service, id);
            continue;
        }
        s->bar[k] = (char)v[0];
        if (v[0] == 'N')
            ps->nulls++;
    }
    sqlite3_finalize(st);
    ps->outbox = scalar(db, "SELECT count(*) FROM outbox");
    sqlite3_close(db);
}

static void check_saga(const xsaga *s, int * compl, int *comp_biz, int *comp_to)
{
    const char *id = s->id;
    if (s->state != SAGA_STATE_COMPLETED &&
        s->state != SAGA_STATE_COMPENSATED) {
        failf("saga %s is %s, not terminal", id,
              saga_state_name((saga_state)s->state));
    }
    if (s->started != 1 || s->ended != 1)
        failf("saga %s: %d STARTED and %d end entries in the journal", id,
              s->started, s->ended);
    for (int k = 0; k < XP_NSTEPS; k++) {
        const char *sn = xp_step_name[k];
        int A = s->act[k], C = s->comp[k];
        char B = s->bar[k];
        if (s->ok[k] > 1 || s->comp_ok[k] > 1)
            failf("saga %s %s: journal has %d STEP_OK, %d COMP_OK", id, sn,
                  s->ok[k], s->comp_ok[k]);
        if (A > 1 || C > 1)
            failf("saga %s %s: %d action / %d comp rows", id, sn, A, C);
        if (s->ok[k] && !A)
            failf("saga %s %s: MISSING effect: the journal says OK but the "
                  "participant has no action row",
                  id, sn);
        if (A && !s->ok[k] && !C)
            failf("saga %s %s: the action applied, the journal never saw it "
                  "OK, and it was not compensated",
                  id, sn);
        if (C && !A)
            failf("saga %s %s: compensation row without an action row", id, sn);
        if (C && !s->comp_ok[k])
            failf("saga %s %s: compensation applied but no COMP_OK", id, sn);
        if (s->comp_ok[k] && !C && B != 'N')
            failf("saga %s %s: COMP_OK but neither a compensation row nor a "
                  "null compensation (barrier '%c')",
                  id, sn, B ? B : '-');
        /* 'F': the action answered FAIL (final), nothing applied. */
        if ((B == 'A') != (A && !C) || (B == 'C') != (A && C) ||
            ((B == 'N' || B == 'F') && (A || C)) ||
            (B && B != 'A' && B != 'C' && B != 'N' && B != 'F'))
            failf("saga %s %s: barrier '%c' disagrees with effects "
                  "action=%d comp=%d",
                  id, sn, B ? B : '-', A, C);
        if (s->state == SAGA_STATE_COMPLETED &&
            (!s->ok[k] || C || s->comp_ok[k]))
            failf("saga %s COMPLETED but %s ok=%d comp=%d comp_ok=%d", id, sn,
                  s->ok[k], C, s->comp_ok[k]);
        if (s->state == SAGA_STATE_COMPENSATED && A && !C)
            failf("saga %s COMPENSATED but %s applied and not undone", id, sn);
    }
    /* The business outcome is a pure function of the saga id. */
    int rf = xp_reserve_fails(id), cf = !rf && xp_charge_fails(id);
    if (s->state != SAGA_STATE_COMPLETED && s->state != SAGA_STATE_COMPENSATED)
        return;
    if (s->state == SAGA_STATE_COMPLETED) {
        (*compl )++;
        if (rf || cf)
            failf("saga %s COMPLETED but its %s answers FAIL", id,
                  rf ? "reserve" : "charge");
        /* Attempt 1 answers RETRY: the journal shows that, or a timeout
         * of attempt 1 (its reply came late and was stale). */
        if (xp_ship_retries(id, 1) && s->retry[2] + s->timeout[2] < 1)
            failf("saga %s: ship answered RETRY but the journal shows "
                  "neither a STEP_RETRY nor a timeout",
                  id);
        return;
    }
    if (rf || cf) {
        (*comp_biz)++;
        int k = rf ? 0 : 1;
        if (s->fail[k] < 1 && !s->gave_up)
            failf("saga %s COMPENSATED without a FAIL of %s", id,
                  xp_step_name[k]);
    } else if (s->gave_up) {
        (*comp_to)++; /* reserve gave up after timeouts (an outage) */
    } else {
        failf("saga %s COMPENSATED but every step should succeed and none "
              "gave up",
              id);
    }
}

/* ---- the run ------------------------------------------------------------- */

static int read_status(const char *path, int v[5])
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int n = fscanf(f, "%d %d %d %d %d", &v[0], &v[1], &v[2], &v[3], &v[4]);
    fclose(f);
    return n == 5 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: xp_driver XP_ORCH XP_PART WORKDIR [N] [KILLS] "
                        "[SEED] [ORCH_KILLS] [CHAOS]\n");
        return 2;
    }
    const char *orch_bin = argv[1];
    part_bin = argv[2];
    workdir = argv[3];
    int n = argc > 4 ? atoi(argv[4]) : 1000;
    int kills = argc > 5 ? atoi(argv[5]) : 4;
    rng = argc > 6 ? strtoull(argv[6], NULL, 10) : (uint64_t)time(NULL);
    int okills = argc > 7 ? atoi(argv[7]) : 0;
    int chaos = argc > 8 ? atoi(argv[8]) : 0;
    if (rng == 0)
        rng = 1;
    if (chaos)
        okills = 0; /* the events pick their victims */
    if (n <= 0 || kills < 0 || kills > 64 || okills < 0 || okills > 64)
        return 2;
    fprintf(stderr,
            "xproc: N=%d kills=%d orchestrator kills=%d%s seed=%llu "
            "workdir=%s\n",
            n, kills, okills, chaos ? " (chaos: random victims, together)" : "",
            (unsigned long long)rng, workdir);
    signal(SIGPIPE, SIG_IGN);
    /* XP_VERIFY_ONLY=1: check the files a previous run left in WORKDIR
     * (to see the checks fail on a doctored database). */
    int verify_only = getenv("XP_VERIFY_ONLY") != NULL;
    int ports[3];
    if (pick_ports(ports, 3) != 0) {
        perror("xproc: picking ports");
        return 1;
    }
    snprintf(orch_port, sizeof orch_port, "%d", ports[0]);
    part parts[2] = {{.service = XP_INV}, {.service = XP_PAY}};
    for (int i = 0; i < 2; i++) {
        snprintf(parts[i].db, sizeof parts[i].db, "%s/%s.db", workdir,
                 parts[i].service);
        snprintf(parts[i].log, sizeof parts[i].log, "%s/%s.log", workdir,
                 parts[i].service);
        snprintf(parts[i].port, sizeof parts[i].port, "%d", ports[1 + i]);
    }
    char odb[4096], olog[4096], ostatus[4096], nb[16], rate[16];
    snprintf(odb, sizeof odb, "%s/orders.db", workdir);
    snprintf(olog, sizeof olog, "%s/orders.log", workdir);
    snprintf(ostatus, sizeof ostatus, "%s/status", workdir);
    double t0 = now_s();
    int done_kills = 0, done_okills = 0;
    if (verify_only)
        goto verify;
    const char *mock_bin = getenv("XP_KAFKA_MOCK");
    const char *fault_name = getenv("XP_FAULT") ? getenv("XP_FAULT") : "none";
    int nfaults = 0, brokers = 1, done_faults = 0;
    const fault *faults = NULL;
    if (mock_bin != NULL) {
        char bs[512], url[1024];
        faults = faults_for(fault_name, &nfaults, &brokers);
        if (faults == NULL && strcmp(fault_name, "none") != 0) {
            fprintf(stderr, "xproc: unknown XP_FAULT '%s'\n", fault_name);
            return 2;
        }
        if (mock_start(mock_bin, brokers, bs, sizeof bs) != 0) {
            fprintf(stderr, "xproc: cannot start the mock cluster %s\n",
                    mock_bin);
            return 1;
        }
        /* Short waits (linger, fetch); the mock finishes a rebalance only
         * after the session timeout less 1 s when a member died. */
        snprintf(url, sizeof url,
                 "kafka://%s?producer.linger.ms=1&consumer.fetch.wait.max.ms=10"
                 "&consumer.session.timeout.ms=6000%s",
                 bs,
                 strcmp(fault_name, "lostack") == 0 ? "&socket.timeout.ms=1000"
                                                    : "");
        setenv("XP_KAFKA", url, 1);
        fprintf(stderr,
                "xproc: over Kafka (mock cluster of %d broker(s) at "
                "%s), fault '%s'\n",
                brokers, bs, fault_name);
    }
    for (int i = 0; i < 2; i++)
        part_start(&parts[i]);
    if (mock_bin != NULL)
        for (int i = 0; i < 2; i++)
            if (wait_assigned(parts[i].log) != 0) {
                failf("participant %s never got partitions", parts[i].service);
                dump_log(parts[i].log);
            }
    snprintf(nb, sizeof nb, "%d", n);
    /* Spread the starts over ~5 s, longer for many kills, so that every
     * kill lands mid-run. */
    double span = (kills + okills) * 1.25 > 5 ? (kills + okills) * 1.25 : 5;
    int r = (int)(n / span);
    snprintf(rate, sizeof rate, "%d", r > 20 ? r : 20);
    char t0ms[32];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(t0ms, sizeof t0ms, "%lld",
             (long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000);
    char *oargv[] = {(char *)orch_bin,
                     odb,
                     orch_port,
                     parts[0].port,
                     parts[1].port,
                     nb,
                     rate,
                     ostatus,
                     t0ms,
                     NULL};
    pid_t orch = spawn(oargv, olog);
    int total = kills + okills, pkills = 0;
    /* Chaos: kill events at random points of progress (sorted). */
    int at[64];
    for (int j = 0; j < total; j++)
        at[j] = (int)((int64_t)n * (int64_t)(5 + rnd(85)) / 100);
    for (int j = 1; j < total; j++)
        for (int k = j; k > 0 && at[k - 1] > at[k]; k--) {
            int x = at[k];
            at[k] = at[k - 1];
            at[k - 1] = x;
        }
    int chaos_orch = 0, chaos_part = 0, chaos_both = 0;

    int ost = 0, orch_exited = 0, v[5] = {0};
    while (now_s() - t0 < RUN_LIMIT_S) {
        if (waitpid(orch, &ost, WNOHANG) == orch) {
            orch_exited = 1;
            break;
        }
        for (int i = 0; i < 2; i++) {
            int st;
            if (waitpid(parts[i].pid, &st, WNOHANG) == parts[i].pid) {
                failf("participant %s died on its own (status %d)",
                      parts[i].service, st);
                dump_log(parts[i].log);
                part_start(&parts[i]);
            }
        }
        read_status(ostatus, v);
        /* Kill j when j+1 (total+2)ths of the sagas are terminal (the
         * last one with a quarter or so still to go, so that a loaded
         * machine cannot finish the run first); every third one is the
         * orchestrator's while there are some to do. */
        int j = done_kills + done_okills;
        if (chaos && j < total && v[2] >= at[j]) {
            for (int w = 0; w < 300; w++) {
                if (read_status(ostatus, v) == 0 && v[3] >= 5)
                    break;
                sleep_ms(2);
            }
            sleep_ms((int)rnd(20));
            read_status(ostatus, v);
            /* bit 0: orchestrator, 1: inventory, 2: payment */
            unsigned mask = j == 0 ? 7u : 1u + rnd(7);
            if (mask & 1u) {
                kill(orch, SIGKILL);
                waitpid(orch, NULL, 0);
            }
            for (int i = 0; i < 2; i++)
                if (mask & (2u << i)) {
                    kill(parts[i].pid, SIGKILL);
                    waitpid(parts[i].pid, NULL, 0);
                }
            int down = 100 + (int)rnd(900);
            fprintf(stderr,
                    "xproc: kill %d: SIGKILL%s%s%s at started=%d "
                    "terminal=%d active=%d; down %d ms\n",
                    j + 1, mask & 1u ? " orchestrator" : "",
                    mask & 2u ? " inventory" : "", mask & 4u ? " payment" : "",
                    v[0], v[2], v[3], down);
            sleep_ms(down);
            /* Participants first or the orchestrator first, at random. */
            int orch_first = (int)rnd(2);
            if ((mask & 1u) && orch_first)
                orch = spawn(oargv, olog);
            for (int i = 0; i < 2; i++)
                if (mask & (2u << i)) {
                    if (!orch_first)
                        sleep_ms((int)rnd(200));
                    part_start(&parts[i]);
                }
            if ((mask & 1u) && !orch_first)
                orch = spawn(oargv, olog);
            chaos_orch += (mask & 1u) != 0;
            chaos_part += (mask & 6u) != 0;
            chaos_both += (mask & 1u) && (mask & 6u);
            done_kills++;
            continue;
        }
        if (!chaos && j < total && v[2] >= n * (j + 1) / (total + 2)) {
            /* Aim at a moment with sagas in flight (the starts come in
             * bursts every 500 ms), waiting at most 600 ms for one. */
            for (int w = 0; w < 300; w++) {
                if (read_status(ostatus, v) == 0 && v[3] >= 5)
                    break;
                sleep_ms(2);
            }
            sleep_ms((int)rnd(5));
            read_status(ostatus, v);
            if (done_okills < okills && (j % 3 == 2 || pkills == kills)) {
                kill(orch, SIGKILL);
                waitpid(orch, NULL, 0);
                int down = 100 + (int)rnd(900);
                fprintf(stderr,
                        "xproc: kill %d: SIGKILL orchestrator (pid %d) at "
                        "started=%d terminal=%d active=%d; down %d ms\n",
                        j + 1, (int)orch, v[0], v[2], v[3], down);
                sleep_ms(down);
                orch = spawn(oargv, olog);
                done_okills++;
                continue;
            }
            part *p = &parts[pkills % 2];
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            /* The third outage is long: reserve gives up after its three
             * 500 ms attempts and compensates steps that may have applied. */
            int down = pkills == 2 ? 2500 : 100 + (int)rnd(1100);
            fprintf(stderr,
                    "xproc: kill %d: SIGKILL %s (pid %d) at started=%d "
                    "terminal=%d active=%d; down %d ms\n",
                    j + 1, p->service, (int)p->pid, v[0], v[2], v[3], down);
            sleep_ms(down);
            part_start(p);
            pkills++;
            done_kills++;
        }
        /* Mock faults at their own points of progress. */
        /* (by starts, which come at a steady rate, so that the faults
         * are spread over the run and land among sagas in flight) */
        if (done_faults < nfaults &&
            v[0] >= n * (done_faults + 1) / (nfaults + 1) && v[3] > 0) {
            const fault *f = &faults[done_faults++];
            fprintf(stderr,
                    "xproc: fault %d at started=%d terminal=%d "
                    "active=%d\n",
                    done_faults, v[0], v[2], v[3]);
            mock_cmd(f->cmd);
            if (f->then != NULL) {
                sleep_ms(f->ms);
                mock_cmd(f->then);
            }
        }
        sleep_ms(5);
    }
    if (!orch_exited) {
        read_status(ostatus, v);
        failf("not every saga terminal after %d s: started=%d acked=%d "
              "terminal=%d active=%d failed=%d",
              RUN_LIMIT_S, v[0], v[1], v[2], v[3], v[4]);
        stop(orch, SIGTERM, 5000);
        dump_log(olog);
    } else if (!WIFEXITED(ost) || WEXITSTATUS(ost) != 0) {
        failf("orchestrator exited with status %d", ost);
        dump_log(olog);
    }
    if (chaos && (chaos_orch == 0 || chaos_part == 0 || chaos_both == 0))
        failf("chaos: the kills hit the orchestrator %d times, participants "
              "%d times, both together %d times",
              chaos_orch, chaos_part, chaos_both);
    if (done_kills < kills || done_okills < okills)
        failf("only %d of %d participant kills and %d of %d orchestrator "
              "kills happened",
              done_kills, kills, done_okills, okills);
    for (int i = 0; i < 2; i++) {
        int st = stop(parts[i].pid, SIGTERM, 10000);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failf("participant %s did not stop cleanly (status %d)",
                  parts[i].service, st);
            dump_log(parts[i].log);
        }
    }
    if (done_faults < nfaults)
        failf("only %d of %d mock faults happened", done_faults, nfaults);
    mock_stop();
verify:;
    double run_s = now_s() - t0;
    load_orchestrator(odb, n);
    pstats ps[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        load_participant(&parts[i], &ps[i]);
    }
    int compl = 0, comp_biz = 0, comp_to = 0, timeouts = 0, comp_ok = 0;
    for (size_t i = 0; i < nsagas; i++) {
        check_saga(&sagas[i], &compl, &comp_biz, &comp_to);
        for (int k = 0; k < XP_NSTEPS; k++) {
            timeouts += sagas[i].timeout[k];
            comp_ok += sagas[i].comp_ok[k];
        }
    }
    if (timeouts == 0)
        fprintf(stderr, "xproc: warning: no step timed out; the kills did "
                        "not hit sagas in flight\n");
    free(sagas);
    printf("xproc: %s sagas=%zu completed=%d compensated=%d "
           "(business=%d timeouts=%d) kills=%d+%d step_timeouts=%d "
           "comp_ok=%d null_comps=%lld effects inventory=%lld+%lld "
           "payment=%lld dups=%lld outbox_left=%lld/%lld/%lld run=%.1fs "
           "failures=%d\n",
           failures ? "FAILED" : "OK", nsagas, compl, comp_biz + comp_to,
           comp_biz, comp_to, done_kills, done_okills, timeouts, comp_ok,
           (long long)(ps[0].nulls + ps[1].nulls), (long long)ps[0].actions,
           (long long)ps[0].comps, (long long)ps[1].actions,
           (long long)(ps[0].dups + ps[1].dups), (long long)orch_outbox,
           (long long)ps[0].outbox, (long long)ps[1].outbox, run_s, failures);
    if (failures)
        fprintf(stderr, "xproc: logs and databases kept in %s\n", workdir);
    return failures ? 1 : 0;
}

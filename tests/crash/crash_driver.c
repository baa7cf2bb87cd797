/*
 * crash_driver.c — the crash test. It runs crash_child on one SQLite file,
 * SIGKILLs it at many random moments (at least KILLS kills that land while
 * the child is working), lets a last run finish, then checks:
 *   - every saga is terminal, and none is lost or duplicated;
 *   - no compensation ran for a step that never started (ledger order);
 *   - every action the journal shows completed ran at least once;
 *   - journals are gap-free, and compensations match the steps that ran,
 *     in reverse order.
 *
 *   crash_driver CHILD WORKDIR [KILLS] [N] [SEED]
 *
 * SAGA_CRASH_STORE names another store (saga_store_open(): a PostgreSQL
 * URL with a schema of its own) instead of WORKDIR/crash.db.
 */
#include <saga/saga.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXS 4096
#define NSTEPS 4
#define PIVOT_ATTEMPTS 3 /* crash_child.c: the pivot's retry.max_attempts */

typedef struct ent {
    char id[SAGA_ID_SIZE];
    int ran[NSTEPS];      /* ledger: action invoked */
    int comp_ran[NSTEPS]; /* ledger: compensation invoked */
    int bad;
} ent;

static ent sagas[MAXS];
static int nents, failures;

#define FAILF(...)                                                             \
    do {                                                                       \
        fprintf(stderr, "FAIL: " __VA_ARGS__);                                 \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

static ent *find(const char *id, int add)
{
    for (int i = 0; i < nents; i++)
        if (strcmp(sagas[i].id, id) == 0)
            return &sagas[i];
    if (!add || nents == MAXS)
        return NULL;
    size_t len = strnlen(id, SAGA_ID_LEN);
    memcpy(sagas[nents].id, id, len);
    sagas[nents].id[len] = '\0';
    return &sagas[nents++];
}

static int run_child(const char *child, const char *db, const char *ledger,
                     int n, int kill_after_ms)
{
    pid_t pid = fork();
    if (pid == 0) {
        char nb[16];
        snprintf(nb, sizeof nb, "%d", n);
        execl(child, child, db, ledger, nb, (char *)NULL);
        _exit(127);
    }
    int status;
    if (kill_after_ms < 0) {
        /* The last run: it must finish on its own. */
        for (int waited = 0; waited < 120000; waited += 10) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
            usleep(10000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return 124;
    }
    usleep((useconds_t)kill_after_ms * 1000);
    int landed = waitpid(pid, &status, WNOHANG) == 0;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (!landed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        FAILF("child died on its own with status %d", status);
    return landed; /* 1: the kill hit a working child */
}

static void read_ledger(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        FAILF("no ledger");
        return;
    }
    char kind, id[64];
    unsigned step, attempt;
    while (fscanf(f, " %c %63s %u %u", &kind, id, &step, &attempt) == 4) {
        ent *e = find(id, 1);
        if (e == NULL || step >= NSTEPS) {
            FAILF("ledger line for %s step %u", id, step);
            continue;
        }
        if (kind == 'A') {
            e->ran[step] = 1;
        } else {
            /* The ledger is in invocation order: a compensation must come
             * after an invocation of its action. */
            if (!e->ran[step])
                FAILF("saga %s: compensation of step %u ran but the step "
                      "never started",
                      id, step);
            e->comp_ran[step] = 1;
        }
    }
    fclose(f);
}

typedef struct vctx {
    saga_store *s;
    int n, completed, compensated, failed;
} vctx;

typedef struct jctx {
    uint32_t seq;
    int ok[NSTEPS], timeout[NSTEPS], comp_ok[NSTEPS], comp_order[NSTEPS];
    int ncomp, started, ended;
    const char *id;
} jctx;

static int journal_cb(const saga_journal_entry *j, void *arg)
{
    jctx *c = arg;
    if (j->seq != c->seq + 1)
        FAILF("saga %s: journal seq %u after %u", c->id, j->seq, c->seq);
    c->seq = j->seq;
    int k = j->step;
    if (j->step >= NSTEPS || (j->step < 0 && j->step != -1)) {
        FAILF("saga %s: journal step %d", c->id, j->step);
        return 0;
    }
    switch (j->kind) {
    case SAGA_JOURNAL_STARTED:
        c->started++;
        break;
    case SAGA_JOURNAL_STEP_OK:
        c->ok[k]++;
        break;
    case SAGA_JOURNAL_STEP_TIMEOUT:
        c->timeout[k]++;
        break;
    case SAGA_JOURNAL_COMP_OK:
        c->comp_ok[k]++;
        c->comp_order[c->ncomp++ % NSTEPS] = k;
        break;
    case SAGA_JOURNAL_COMPLETED:
    case SAGA_JOURNAL_COMPENSATED:
    case SAGA_JOURNAL_FAILED:
        c->ended++;
        break;
    default:
        break;
    }
    return 0;
}

static int saga_cb(const saga_record *r, void *arg)
{
    vctx *v = arg;
    v->n++;
    jctx c;
    memset(&c, 0, sizeof c);
    c.id = r->id;
    if (v->s->journal_scan(v->s, r->id, journal_cb, &c) != SAGA_OK)
        FAILF("journal_scan %s", r->id);
    ent *e = find(r->id, 0);
    if (r->state == SAGA_STATE_COMPLETED)
        v->completed++;
    else if (r->state == SAGA_STATE_COMPENSATED)
        v->compensated++;
    else if (r->state == SAGA_STATE_FAILED && c.timeout[2] == PIVOT_ATTEMPTS &&
             !c.ok[2] && !c.ncomp)
        /* DESIGN §3: a pivot whose every attempt timed out may have
         * applied, so neither direction is safe: FAILED, for an operator.
         * A loaded machine makes 40 ms timeouts likely; it is a correct
         * end, checked like the others below. */
        v->failed++;
    else
        FAILF("saga %s ended %s, not terminal", r->id,
              saga_state_name(r->state));
    if (c.started != 1 || c.ended != 1)
        FAILF("saga %s: %d STARTED, %d end entries", r->id, c.started, c.ended);
    for (int k = 0; k < NSTEPS; k++) {
        if (c.ok[k] > 1)
            FAILF("saga %s: step %d completed %d times", r->id, k, c.ok[k]);
        if (c.ok[k] && (e == NULL || !e->ran[k]))
            FAILF("saga %s: journal shows step %d completed but its action "
                  "never ran",
                  r->id, k);
        if (c.comp_ok[k] && !c.ok[k] && !c.timeout[k])
            FAILF("saga %s: step %d compensated but it never completed or "
                  "timed out",
                  r->id, k);
        if (c.comp_ok[k] && (e == NULL || !e->comp_ran[k]))
            FAILF("saga %s: compensation of %d journaled but never ran", r->id,
                  k);
    }
    if (r->state == SAGA_STATE_COMPLETED)
        for (int k = 0; k < NSTEPS; k++)
            if (!c.ok[k] || c.comp_ok[k])
                FAILF("saga %s COMPLETED but step %d ok=%d comp=%d", r->id, k,
                      c.ok[k], c.comp_ok[k]);
    if (r->state == SAGA_STATE_COMPENSATED) {
        /* Steps 0 and 1 have compensations: each that completed (or may
         * have applied) is compensated, in reverse order. */
        for (int k = 0; k < 2; k++)
            if ((c.ok[k] || c.timeout[k]) && !c.comp_ok[k])
                FAILF("saga %s: step %d ran but was not compensated", r->id, k);
        for (int i = 1; i < c.ncomp && i < NSTEPS; i++)
            if (c.comp_order[i] >= c.comp_order[i - 1])
                FAILF("saga %s: compensations out of order", r->id);
        if (c.ok[2] || c.ok[3])
            FAILF("saga %s compensated after its pivot", r->id);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CHILD WORKDIR [KILLS] [N] [SEED]\n",
                argv[0]);
        return 2;
    }
    const char *child = argv[1], *dir = argv[2];
    int kills = argc > 3 ? atoi(argv[3]) : 60;
    int n = argc > 4 ? atoi(argv[4]) : 400;
    unsigned seed = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10)
                             : (unsigned)time(NULL);
    printf("crash test: seed %u, %d kills, %d sagas\n", seed, kills, n);
    srand(seed);
    char db[512], ledger[512];
    const char *spec = getenv("SAGA_CRASH_STORE");
    if (spec != NULL && spec[0] != '\0') {
        snprintf(db, sizeof db, "%s", spec);
    } else {
        snprintf(db, sizeof db, "%s/crash.db", dir);
        unlink(db);
    }
    snprintf(ledger, sizeof ledger, "%s/ledger.txt", dir);
    unlink(ledger);
    int landed = 0, runs = 0;
    /* Vary the kill point widely: during start-up and recovery (a few ms),
     * in the middle of a batch, and while sagas wait on timers. */
    while (landed < kills && runs < kills * 4) {
        int ms = 1 + rand() % (runs % 3 == 0 ? 8 : 60);
        landed += run_child(child, db, ledger, n, ms);
        runs++;
    }
    if (landed < kills)
        FAILF("only %d of %d kills landed on a working child", landed, kills);
    int rc = run_child(child, db, ledger, n, -1);
    if (rc != 0)
        FAILF("the final run exited %d", rc);
    read_ledger(ledger);
    saga_store *s;
    if (saga_store_open(&s, db) != SAGA_OK) {
        FAILF("cannot open %s: %s", db, saga_open_errmsg());
        return 1;
    }
    vctx v = {s, 0, 0, 0, 0};
    if (s->saga_scan(s, SAGA_STATE_MASK_ALL, saga_cb, &v) != SAGA_OK)
        FAILF("saga_scan failed");
    if (v.n != n)
        FAILF("%d sagas in the store, expected %d", v.n, n);
    for (int i = 0; i < n; i++) {
        char key[32], id[SAGA_ID_SIZE];
        snprintf(key, sizeof key, "order-%d", i);
        if (s->idem_get(s, key, id) != SAGA_OK)
            FAILF("saga %s lost", key);
    }
    saga_store_free(s);
    printf("crash test: %d runs, %d kills landed; %d completed, %d "
           "compensated, %d FAILED at the pivot; %d failures (seed %u)\n",
           runs + 1, landed, v.completed, v.compensated, v.failed, failures,
           seed);
    return failures ? 1 : 0;
}

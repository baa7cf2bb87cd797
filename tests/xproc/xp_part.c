/*
 * xp_part.c — a participant process of the cross-process test.
 *
 *   xp_part DB SERVICE PORT ORCH_PORT
 *
 * SERVICE is "inventory" (commands reserve, with its compensation, and
 * ship) or "payment" (charge). Every applied effect is a row of
 * effects(saga_id, step, kind) written through the participant's sqlite3
 * handle in the handler's transaction, so it is durable exactly when the
 * inbox claim and the reply are. A second INSERT of the same row would mean
 * a duplicate effect: it is not an error here (the handler must not loop),
 * it is counted in counters('dup') and the verifier fails on it.
 *
 * With XP_KAFKA=kafka://... in the environment it runs over Kafka instead
 * (the ports are ignored) and logs "assigned" once its consumer has
 * partitions.
 *
 * SIGTERM closes the participant cleanly; the driver also SIGKILLs it.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

#include "xp_common.h"

static saga_participant *P;
static sqlite3_stmt *ins_effect, *bump;
static uv_signal_t sigterm;
static int closed_ok;
static saga_transport *T;
static uv_timer_t ready_timer;

#ifdef XP_WITH_KAFKA
/* Tell the driver (through the log) when our consumer has partitions. */
static void check_ready(uv_timer_t *h)
{
    uint32_t n = xp_kafka_assigned(T);
    if (n == 0)
        return;
    fprintf(stderr, "xp_part: assigned %u partitions\n", (unsigned)n);
    uv_close((uv_handle_t *)h, NULL);
}
#endif

static int effect(sqlite3 *db, const saga_command *c)
{
    const char *kind = c->compensating ? "comp" : "action";
    sqlite3_reset(ins_effect);
    sqlite3_bind_text(ins_effect, 1, c->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins_effect, 2, c->step);
    sqlite3_bind_text(ins_effect, 3, kind, -1, SQLITE_STATIC);
    int rc = sqlite3_step(ins_effect);
    sqlite3_reset(ins_effect);
    if (rc == SQLITE_CONSTRAINT) {
        fprintf(stderr, "xp_part: DUPLICATE effect %s step %u %s (msg %s)\n",
                c->saga_id, c->step, kind, c->msg_id);
        kind = "dup";
    } else if (rc != SQLITE_DONE) {
        fprintf(stderr, "xp_part: insert: %s\n", sqlite3_errmsg(db));
        return SAGA_ESTORE; /* the batch is rolled back and retried */
    }
    sqlite3_bind_text(bump, 1, kind, -1, SQLITE_STATIC);
    rc = sqlite3_step(bump);
    sqlite3_reset(bump);
    return rc == SQLITE_DONE ? SAGA_OK : SAGA_ESTORE;
}

static int h_command(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)arg;
    sqlite3 *db = saga_participant_store_handle(p);
    if (strcmp(c->name, "reserve") == 0) {
        if (c->compensating)
            return effect(db, c);
        if (xp_reserve_fails(c->saga_id))
            return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                                  "out of stock");
        saga_map *m;
        const void *b;
        size_t n;
        if (saga_map_new(&m) != SAGA_OK)
            return SAGA_ENOMEM;
        int rc = saga_map_set_str(m, "reservation", c->saga_id);
        if (rc == SAGA_OK)
            rc = saga_map_encode(m, &b, &n);
        if (rc == SAGA_OK)
            rc = saga_reply_set(r, SAGA_OUTCOME_OK, b, n, NULL);
        saga_map_free(m);
        return rc != SAGA_OK ? rc : effect(db, c);
    }
    if (strcmp(c->name, "charge") == 0) {
        if (xp_charge_fails(c->saga_id))
            return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                                  "card declined");
        return effect(db, c);
    }
    if (strcmp(c->name, "ship") == 0) {
        if (xp_ship_retries(c->saga_id, c->attempt))
            return saga_reply_set(r, SAGA_OUTCOME_RETRY, NULL, 0,
                                  "carrier busy");
        return effect(db, c);
    }
    return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "unknown command");
}

static void on_closed(void *arg)
{
    (void)arg;
    closed_ok = 1;
}

static int started, term_pending;

static void on_sigterm(uv_signal_t *h, int sig)
{
    (void)sig;
    if (!started) {
        /* Still starting (a Kafka client takes a moment): stop once up. */
        term_pending = 1;
        return;
    }
    uv_close((uv_handle_t *)h, NULL);
    if (ready_timer.loop != NULL && !uv_is_closing((uv_handle_t *)&ready_timer))
        uv_close((uv_handle_t *)&ready_timer, NULL);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(P, &st);
    fprintf(stderr,
            "xp_part: stats commands=%llu duplicates=%llu null_comps=%llu "
            "hanging=%llu retried=%llu commits=%llu\n",
            (unsigned long long)st.commands, (unsigned long long)st.duplicates,
            (unsigned long long)st.null_compensations,
            (unsigned long long)st.hanging_refused,
            (unsigned long long)st.retried_actions,
            (unsigned long long)st.commits);
    /* close commits what is pending (handlers may run) before it returns;
     * the store itself is closed later, after the statements are gone. */
    saga_participant_close(P, on_closed, NULL);
    sqlite3_finalize(ins_effect);
    sqlite3_finalize(bump);
    ins_effect = bump = NULL;
}

static void tlog(saga_log_level l, const char *saga_id, int step,
                 const char *msg, void *arg)
{
    (void)arg;
    if (l >= SAGA_LOG_WARN)
        fprintf(stderr, "xp_part transport: %s\n", msg);
}

static int schema(sqlite3 *db)
{
    const char
        *sql = "CREATE TABLE IF NOT EXISTS effects(saga_id TEXT NOT NULL,"
               " step INTEGER NOT NULL, kind TEXT NOT NULL,"
               " PRIMARY KEY(saga_id, step, kind)) WITHOUT ROWID;"
               "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY,"
               " n INTEGER NOT NULL);"
               "INSERT OR IGNORE INTO counters VALUES('action',0),('comp',0),"
               "('dup',0);";
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "xp_part: schema: %s\n", err ? err : "?");
        sqlite3_free(err);
        return -1;
    }
    if (sqlite3_prepare_v2(db, "INSERT INTO effects VALUES(?,?,?)", -1,
                           &ins_effect, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "UPDATE counters SET n = n + 1 WHERE name = ?",
                           -1, &bump, NULL) != SQLITE_OK) {
        fprintf(stderr, "xp_part: prepare: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: xp_part DB SERVICE PORT ORCH_PORT\n");
        return 2;
    }
    const char *service = argv[2];
    uv_loop_t *loop = uv_default_loop();
    /* SIGTERM is ours from the start: the driver may stop a participant
     * it has just restarted. */
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_sigterm, SIGTERM);
    /* The driver starts us with SIGTERM blocked (see xp_driver.c). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &term, NULL);
    saga_store *store;
    int rc = saga_store_sqlite_open(&store, argv[1], NULL);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_part: open %s: %s\n", argv[1], saga_strerror(rc));
        return 1;
    }
    char listen[64], orch[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", argv[3]);
    snprintf(orch, sizeof orch, "127.0.0.1:%s", argv[4]);
    saga_tcp_peer peer = {XP_ORCH, orch};
    saga_tcp_options to = SAGA_TCP_OPTIONS_INIT;
    to.service = service;
    to.listen = listen;
    to.peers = &peer;
    to.npeers = 1;
    to.reconnect_max_ms = 200;
    to.log = tlog;
    saga_transport *t;
    const char *kafka_url = getenv("XP_KAFKA");
    if (kafka_url != NULL) {
#ifdef XP_WITH_KAFKA
        rc = xp_kafka_new(&t, loop, kafka_url, tlog);
#else
        fprintf(stderr, "xp_part: built without the Kafka transport\n");
        return 2;
#endif
    } else {
        rc = saga_transport_tcp_new(&t, loop, &to);
    }
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_part: transport (%s): %s\n",
                kafka_url ? kafka_url : listen, saga_strerror(rc));
        saga_store_free(store);
        return 1;
    }
    T = t;
    saga_participant_options po = SAGA_PARTICIPANT_OPTIONS_INIT;
    po.service = service;
    po.log_level = SAGA_LOG_WARN;
    rc = saga_participant_new(&P, loop, store, t, &po);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_part: participant: %s\n", saga_strerror(rc));
        return 1;
    }
    if (schema(saga_participant_store_handle(P)) != 0)
        return 1;
    for (int i = 0; i < XP_NSTEPS; i++)
        if (strcmp(xp_step_service[i], service) == 0 &&
            saga_participant_on_command(P, xp_step_name[i], h_command, NULL) !=
                SAGA_OK)
            return 1;
    rc = saga_participant_start(P);
    if (rc != SAGA_OK) {
        fprintf(stderr, "xp_part: start: %s\n", saga_participant_errmsg(P));
        return 1;
    }
#ifdef XP_WITH_KAFKA
    if (kafka_url != NULL) {
        uv_timer_init(loop, &ready_timer);
        uv_timer_start(&ready_timer, check_ready, 10, 10);
    }
#endif
    started = 1;
    if (term_pending)
        on_sigterm(&sigterm, SIGTERM);
    fprintf(stderr, "xp_part %s: up on %s (pid %d)\n", service, listen,
            (int)getpid());
    uv_run(loop, UV_RUN_DEFAULT);
    return closed_ok ? 0 : 1;
}

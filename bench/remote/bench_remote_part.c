/*
 * bench_remote_part.c — a participant process of the remote benchmark.
 *
 *   bench_remote_part DB SERVICE PORT ORCH_PORT SYNC
 *
 * Handles every command it is sent (any name, actions and compensations)
 * by inserting one row into its own effects table through the store's
 * sqlite3 handle, in the participant's transaction: the smallest realistic
 * business write. SYNC is the SQLite synchronous level (0 FULL, 1 NORMAL).
 * Exits on SIGTERM. With BENCH_KAFKA=kafka://... in the environment it
 * talks over Kafka instead of TCP (the ports are ignored).
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>
#ifdef BENCH_WITH_KAFKA
#include <saga/kafka.h>
#endif

static saga_participant *P;
static sqlite3_stmt *ins;
static uv_signal_t sig;

static int h_any(saga_participant *p, const saga_command *c, saga_reply *r,
                 void *arg)
{
    (void)p, (void)r, (void)arg;
    sqlite3_reset(ins);
    sqlite3_bind_text(ins, 1, c->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 2, (int64_t)c->step * 2 + c->compensating);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    return rc == SQLITE_DONE ? SAGA_OK : SAGA_ESTORE;
}

static void on_closed(void *arg) { (void)arg; }

static void on_sig(uv_signal_t *h, int s)
{
    (void)s;
    uv_close((uv_handle_t *)h, NULL);
    saga_participant_close(P, on_closed, NULL);
    sqlite3_finalize(ins);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: bench_remote_part DB SERVICE PORT ORCH_PORT "
                        "SYNC\n");
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
    so.synchronous = atoi(argv[5]);
    saga_store *store;
    if (saga_store_sqlite_open(&store, argv[1], &so) != SAGA_OK)
        return 1;
    char listen[64], orch[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%s", argv[3]);
    snprintf(orch, sizeof orch, "127.0.0.1:%s", argv[4]);
    saga_tcp_peer peer = {"orders", orch};
    saga_tcp_options to = SAGA_TCP_OPTIONS_INIT;
    to.service = argv[2];
    to.listen = listen;
    to.peers = &peer;
    to.npeers = 1;
    saga_transport *t;
    const char *kurl = getenv("BENCH_KAFKA");
    if (kurl != NULL) {
#ifdef BENCH_WITH_KAFKA
        saga_kafka_options ko = SAGA_KAFKA_OPTIONS_INIT;
        ko.url = kurl;
        if (saga_transport_kafka_new(&t, loop, &ko) != SAGA_OK)
            return 1;
#else
        return 2;
#endif
    } else if (saga_transport_tcp_new(&t, loop, &to) != SAGA_OK) {
        return 1;
    }
    saga_participant_options po = SAGA_PARTICIPANT_OPTIONS_INIT;
    po.service = argv[2];
    if (saga_participant_new(&P, loop, store, t, &po) != SAGA_OK)
        return 1;
    sqlite3 *db = saga_participant_store_handle(P);
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS effects(saga_id TEXT NOT "
                     "NULL, what INTEGER NOT NULL, PRIMARY KEY(saga_id, what))"
                     " WITHOUT ROWID",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO effects VALUES(?, ?)", -1,
                           &ins, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_remote_part: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    const char *cmds[] = {"s1", "s2", "s3", "s4"};
    for (int i = 0; i < 4; i++)
        saga_participant_on_command(P, cmds[i], h_any, NULL);
    if (saga_participant_start(P) != SAGA_OK)
        return 1;
    uv_signal_init(loop, &sig);
    uv_signal_start(&sig, on_sig, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

/*
 * ckpt.c — serve --threads N > 1: the WAL checkpoints of the main loop's
 * SQLite files (order.db of the order participant and the HTTP front,
 * order-saga.db of the engine) run on a thread of their own (its own loop).
 *
 * The main loop limits the checkout's rate (HTTP front, engine, order
 * participant: ~57% of the samples with 2 loops), and SQLite's automatic
 * checkpoint ran inside the commit that took a WAL past 1000 frames: copying
 * the WAL's pages into the database file and its fsync, ~7% of the main
 * thread's samples, on that thread. Here the main connection's WAL hook
 * (which replaces the automatic checkpoint: same threshold) only wakes the
 * worker, which checkpoints (PASSIVE: it never waits for or blocks a writer
 * or reader) through a connection of its own. The same pages are copied as
 * often as before; only the thread changes. A checkpoint is not part of any
 * commit's durability (the WAL is), so one that is late or fails loses
 * nothing: the WAL only grows until the next.
 *
 * Not on a participants' loop: there (the first worker, as it was) each
 * checkpoint held the six participants' loop for its page copy and two
 * fdatasyncs (perf of a burst: 11.8% of that thread's CPU in run_ckpt, and
 * 1.0 s of its 12 s asleep in its fsyncs), so every saga step's participant
 * half waited behind it: the participants committed 3x less often, each
 * step took 2-4x longer, and the sagas of a burst fell behind the HTTP
 * front (bench/checkout/drain.sh). CK_CKPT_HOLD (tests only): while that
 * file exists, a checkpoint waits before it runs, so a test can hold one
 * and check that the sagas still complete meanwhile.
 */
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "ck.h"

#define CK_CKPT_FRAMES 1000 /* SQLite's own autocheckpoint default */
#define CK_CKPT_SLOTS 2

typedef struct ck_ckpt {
    uv_async_t async; /* on the checkpoint loop */
    sqlite3 *conn;    /* the worker's connection (opened on first use) */
    char path[1200];
    atomic_int pending; /* a checkpoint was asked for and not yet run */
    int next;           /* main thread: the frames when it last asked */
    int last;           /* main thread: the frame count at the last commit */
    int used;
} ck_ckpt;

static ck_ckpt slots[CK_CKPT_SLOTS];
static int slots_ready;
static uv_loop_t ckpt_loop;
static uv_async_t ckpt_stop;
static uv_thread_t ckpt_thread;

/* CK_CKPT_HOLD: tests hold the checkpoints while that file exists. */
static void hold(void)
{
    static int said;
    const char *f = getenv("CK_CKPT_HOLD");
    if (f == NULL || *f == '\0')
        return;
    while (access(f, F_OK) == 0) {
        if (!said) {
            said = 1;
            fprintf(stderr, "saga-checkout: checkpoint held (CK_CKPT_HOLD)\n");
        }
        uv_sleep(10);
    }
}

static void run_ckpt(uv_async_t *h)
{
    ck_ckpt *c = h->data;
    hold();
    if (c->conn == NULL) {
        if (sqlite3_open_v2(c->path, &c->conn, SQLITE_OPEN_READWRITE, NULL) !=
            SQLITE_OK) {
            sqlite3_close(c->conn);
            c->conn = NULL;
            atomic_store(&c->pending, 0);
            return;
        }
        char sql[80];
        snprintf(sql, sizeof sql,
                 "PRAGMA synchronous = %s; PRAGMA busy_timeout = 0",
                 ck_synchronous() == 0 ? "FULL" : "NORMAL");
        sqlite3_exec(c->conn, sql, NULL, NULL, NULL);
    }
    int nlog = 0, nckpt = 0;
    sqlite3_wal_checkpoint_v2(c->conn, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog,
                              &nckpt);
    atomic_store(&c->pending, 0);
}

static void stop_cb(uv_async_t *h)
{
    (void)h;
    for (int i = 0; i < CK_CKPT_SLOTS; i++)
        uv_close((uv_handle_t *)&slots[i].async, NULL);
    uv_close((uv_handle_t *)&ckpt_stop, NULL);
}

static void close_one(uv_handle_t *h, void *arg)
{
    (void)arg;
    uv_close(h, NULL);
}

static void ckpt_main(void *arg)
{
    (void)arg;
    uv_run(&ckpt_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < CK_CKPT_SLOTS; i++) {
        sqlite3_close(slots[i].conn);
        slots[i].conn = NULL;
    }
    uv_loop_close(&ckpt_loop);
}

int ck_ckpt_init(void)
{
    if (uv_loop_init(&ckpt_loop) != 0)
        return -1;
    int rc = uv_async_init(&ckpt_loop, &ckpt_stop, stop_cb);
    for (int i = 0; rc == 0 && i < CK_CKPT_SLOTS; i++) {
        memset(&slots[i], 0, sizeof slots[i]);
        rc = uv_async_init(&ckpt_loop, &slots[i].async, run_ckpt);
        slots[i].async.data = &slots[i];
    }
    if (rc == 0)
        rc = uv_thread_create(&ckpt_thread, ckpt_main, NULL);
    if (rc != 0) {
        /* Never started: the handles close with a loop run here. */
        uv_walk(&ckpt_loop, close_one, NULL);
        uv_run(&ckpt_loop, UV_RUN_DEFAULT);
        uv_loop_close(&ckpt_loop);
        return -1;
    }
    slots_ready = 1;
    return 0;
}

/* After each commit of the main connection (SQLite's WAL hook). The
 * worker copies the frames; but a WAL only starts over (and stops growing)
 * when a write begins with every frame already copied, and the main loop,
 * the only writer of these files, keeps adding frames while the worker
 * copies. So once the WAL is past 4000 frames and the worker is idle with
 * at most ~330 frames left uncopied, the main connection checkpoints that
 * remainder itself, and its next write starts the WAL over. Past 8000
 * frames it checkpoints whatever is left (a bound on the WAL, as SQLite's
 * own checkpoint is). */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    ck_ckpt *c = arg;
    if (frames < c->last)
        c->next = 0; /* the WAL started over: next = frames when last asked */
    c->last = frames;
    int idle = !atomic_load(&c->pending);
    if ((idle && frames >= 4 * CK_CKPT_FRAMES &&
         frames - c->next <= CK_CKPT_FRAMES / 3) ||
        frames >= 8 * CK_CKPT_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
        return SQLITE_OK;
    }
    if (idle && frames - c->next >= CK_CKPT_FRAMES &&
        !atomic_exchange(&c->pending, 1)) {
        c->next = frames;
        uv_async_send(&c->async);
    }
    return SQLITE_OK;
}

int ck_ckpt_attach(sqlite3 *conn)
{
    if (!slots_ready || conn == NULL)
        return -1;
    const char *path = sqlite3_db_filename(conn, "main");
    for (int i = 0; i < CK_CKPT_SLOTS; i++) {
        ck_ckpt *c = &slots[i];
        if (c->used)
            continue;
        if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof c->path)
            return -1;
        snprintf(c->path, sizeof c->path, "%s", path);
        c->used = 1;
        /* Replaces the automatic checkpoint of this connection. */
        sqlite3_wal_hook(conn, wal_hook, c);
        return 0;
    }
    return -1;
}

/* Once the main loop's connections write no more (its services closed). */
void ck_ckpt_close(void)
{
    if (!slots_ready)
        return;
    slots_ready = 0;
    uv_async_send(&ckpt_stop);
    uv_thread_join(&ckpt_thread);
}

/*
 * ckpt.c — WAL checkpoints of the SQLite files off the services' loops.
 *
 * SQLite checkpoints a WAL file from the connection whose commit took it
 * past 1000 pages (wal_autocheckpoint): that commit's caller, here a
 * service's loop, then copies the pages into the database file and waits
 * for two fsyncs (~5% of the loop's time per checkout in bench/checkout).
 * Instead, every connection of the services gets a WAL hook that only
 * flags its file once the WAL passes CK_CKPT_PAGES, and one thread of
 * this process checkpoints the flagged files (PASSIVE: it never blocks a
 * writer or a reader) through connections of its own. Durability is
 * unchanged: a commit is durable in the WAL as before; a checkpoint only
 * moves committed pages into the database file, whichever connection
 * runs it. Should the thread fall behind (or not run), a commit that
 * finds more than CK_CKPT_INLINE pages in the WAL checkpoints inline, as
 * SQLite's own hook does, so the WAL stays bounded.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck.h"

#define CK_CKPT_PAGES 1000   /* SQLite's default autocheckpoint */
#define CK_CKPT_INLINE 16000 /* ~64 MiB of 4 KiB pages */

typedef struct ck_ckpt_file {
    struct ck_ckpt_file *next;
    char *path;
    sqlite3 *conn;      /* the thread's own connection */
    atomic_int pending; /* flagged by a hook */
} ck_ckpt_file;

static struct {
    uv_mutex_t mu; /* the list, running, stop */
    uv_cond_t cond;
    uv_thread_t thread;
    ck_ckpt_file *files;
    int init, running, stop;
    atomic_int any; /* some file flagged */
} K;

static void ckpt_thread(void *arg)
{
    (void)arg;
    uv_mutex_lock(&K.mu);
    for (;;) {
        while (!K.stop && !atomic_load(&K.any))
            uv_cond_wait(&K.cond, &K.mu);
        if (K.stop)
            break;
        atomic_store(&K.any, 0);
        /* The list only grows, at its head: walk it without the lock. */
        ck_ckpt_file *list = K.files;
        uv_mutex_unlock(&K.mu);
        for (ck_ckpt_file *f = list; f != NULL; f = f->next) {
            if (!atomic_exchange(&f->pending, 0))
                continue;
            if (f->conn == NULL &&
                sqlite3_open_v2(f->path, &f->conn,
                                SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                NULL) != SQLITE_OK) {
                sqlite3_close(f->conn);
                f->conn = NULL;
                continue; /* the inline fallback keeps the WAL bounded */
            }
            sqlite3_wal_checkpoint_v2(f->conn, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                      NULL, NULL);
        }
        uv_mutex_lock(&K.mu);
    }
    uv_mutex_unlock(&K.mu);
}

/* The WAL hook, on the committing connection's thread. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    ck_ckpt_file *f = arg;
    if (pages >= CK_CKPT_INLINE) {
        /* The thread is behind: as SQLite's own hook would. */
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL,
                                  NULL);
        return SQLITE_OK;
    }
    if (pages >= CK_CKPT_PAGES && !atomic_exchange(&f->pending, 1)) {
        uv_mutex_lock(&K.mu);
        atomic_store(&K.any, 1);
        uv_cond_signal(&K.cond);
        uv_mutex_unlock(&K.mu);
    }
    return SQLITE_OK;
}

int ck_ckpt_init(void)
{
    if (K.init)
        return 0;
    if (uv_mutex_init(&K.mu) != 0)
        return -1;
    if (uv_cond_init(&K.cond) != 0) {
        uv_mutex_destroy(&K.mu);
        return -1;
    }
    K.init = 1;
    return 0;
}

int ck_ckpt_add(sqlite3 *h)
{
    if (!K.init || h == NULL)
        return 0; /* SQLite's own autocheckpoint */
    const char *path = sqlite3_db_filename(h, "main");
    if (path == NULL || path[0] == '\0')
        return 0; /* in memory: nothing to checkpoint */
    uv_mutex_lock(&K.mu);
    ck_ckpt_file *f;
    for (f = K.files; f != NULL; f = f->next)
        if (strcmp(f->path, path) == 0)
            break;
    if (f == NULL && (f = calloc(1, sizeof *f)) != NULL) {
        f->path = strdup(path);
        if (f->path == NULL) {
            free(f);
            f = NULL;
        } else {
            f->next = K.files;
            K.files = f;
        }
    }
    if (f != NULL && !K.running && !K.stop) {
        if (uv_thread_create(&K.thread, ckpt_thread, NULL) == 0)
            K.running = 1;
        else
            f = NULL;
    }
    uv_mutex_unlock(&K.mu);
    if (f == NULL)
        return -1; /* SQLite's own autocheckpoint stays */
    /* Replaces the autocheckpoint hook of this connection. */
    sqlite3_wal_hook(h, wal_hook, f);
    return 0;
}

void ck_ckpt_stop(void)
{
    if (!K.init)
        return;
    uv_mutex_lock(&K.mu);
    K.stop = 1;
    int running = K.running;
    uv_cond_signal(&K.cond);
    uv_mutex_unlock(&K.mu);
    if (running)
        uv_thread_join(&K.thread);
    K.running = 0;
    /* The records stay (a connection still open may call its hook, which
     * then only flags it); the thread's connections close. */
    for (ck_ckpt_file *f = K.files; f != NULL; f = f->next) {
        sqlite3_close(f->conn);
        f->conn = NULL;
    }
}

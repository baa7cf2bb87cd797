/*
 * fault_vfs.c — a pass-through SQLite VFS with injectable xWrite/xSync
 * failures (see fault_vfs.h). Modelled on SQLite's own test shims: each
 * open file embeds the real file right after our header, and every method
 * forwards to it.
 */
#include <sqlite3.h>
#include <string.h>

#include "fakes/fault_vfs.h"

typedef struct fault_file {
    sqlite3_file base;  /* pMethods = &fault_io */
    sqlite3_file *real; /* the default VFS's file, right after us */
} fault_file;

/* A countdown: -1 = disarmed, 0 = fail now, n = n more calls succeed. */
static struct {
    int write_left, sync_left;
    int write_err, sync_err;
    uint64_t writes, syncs, injected;
} g = {-1, -1, SQLITE_IOERR, SQLITE_IOERR, 0, 0, 0};

static sqlite3_vfs *g_real;

static int trip(int *left, int err)
{
    if (*left < 0)
        return SQLITE_OK;
    if (*left > 0) {
        (*left)--;
        return SQLITE_OK;
    }
    g.injected++;
    return err;
}

#define REAL(f) (((fault_file *)(f))->real)

static int f_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    g.writes++;
    int rc = trip(&g.write_left, g.write_err);
    return rc ? rc : REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags)
{
    g.syncs++;
    int rc = trip(&g.sync_left, g.sync_err);
    return rc ? rc : REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}
static int f_unlock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}
static int f_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device_chars(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int extend,
                     void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

/* Version 3 methods; files whose real methods are older get the matching
 * version (set in f_open) so SQLite never calls a missing one. */
static sqlite3_io_methods fault_io[4] = {{0}};

static void init_io(void)
{
    for (int v = 1; v <= 3; v++) {
        sqlite3_io_methods *m = &fault_io[v];
        m->iVersion = v;
        m->xClose = f_close;
        m->xRead = f_read;
        m->xWrite = f_write;
        m->xTruncate = f_truncate;
        m->xSync = f_sync;
        m->xFileSize = f_file_size;
        m->xLock = f_lock;
        m->xUnlock = f_unlock;
        m->xCheckReservedLock = f_check_reserved;
        m->xFileControl = f_file_control;
        m->xSectorSize = f_sector_size;
        m->xDeviceCharacteristics = f_device_chars;
        if (v >= 2) {
            m->xShmMap = f_shm_map;
            m->xShmLock = f_shm_lock;
            m->xShmBarrier = f_shm_barrier;
            m->xShmUnmap = f_shm_unmap;
        }
        if (v >= 3) {
            m->xFetch = f_fetch;
            m->xUnfetch = f_unfetch;
        }
    }
}

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
                  int flags, int *out_flags)
{
    fault_file *ff = (fault_file *)file;
    ff->real = (sqlite3_file *)(ff + 1);
    ff->base.pMethods = NULL;
    int rc = g_real->xOpen(g_real, name, ff->real, flags, out_flags);
    /* A set pMethods means "call xClose", even when the open failed. */
    if (ff->real->pMethods) {
        int v = ff->real->pMethods->iVersion;
        ff->base.pMethods = &fault_io[v < 1 ? 1 : v > 3 ? 3 : v];
    }
    return rc;
}

static int f_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    return g_real->xDelete(g_real, name, sync_dir);
}
static int f_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return g_real->xAccess(g_real, name, flags, out);
}
static int f_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return g_real->xFullPathname(g_real, name, n, out);
}
static void *f_dlopen(sqlite3_vfs *v, const char *name)
{
    return g_real->xDlOpen(g_real, name);
}
static void f_dlerror(sqlite3_vfs *v, int n, char *msg)
{
    g_real->xDlError(g_real, n, msg);
}
static void (*f_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    return g_real->xDlSym(g_real, h, sym);
}
static void f_dlclose(sqlite3_vfs *v, void *h) { g_real->xDlClose(g_real, h); }
static int f_randomness(sqlite3_vfs *v, int n, char *out)
{
    return g_real->xRandomness(g_real, n, out);
}
static int f_sleep(sqlite3_vfs *v, int us)
{
    return g_real->xSleep(g_real, us);
}
static int f_current_time(sqlite3_vfs *v, double *out)
{
    return g_real->xCurrentTime(g_real, out);
}
static int f_get_last_error(sqlite3_vfs *v, int n, char *out)
{
    return g_real->xGetLastError ? g_real->xGetLastError(g_real, n, out) : 0;
}
static int f_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    return g_real->xCurrentTimeInt64(g_real, out);
}

static sqlite3_vfs fault_vfs;

int fault_vfs_register(void)
{
    if (g_real)
        return SQLITE_OK;
    sqlite3_initialize();
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    if (real == NULL)
        return SQLITE_ERROR;
    init_io();
    memset(&fault_vfs, 0, sizeof fault_vfs);
    /* Version 2 at most: the system-call hooks of version 3 are for
     * SQLite's own tests, and forwarding them would gain nothing. */
    fault_vfs.iVersion = real->iVersion >= 2 ? 2 : 1;
    fault_vfs.szOsFile = (int)sizeof(fault_file) + real->szOsFile;
    fault_vfs.mxPathname = real->mxPathname;
    fault_vfs.zName = FAULT_VFS_NAME;
    fault_vfs.xOpen = f_open;
    fault_vfs.xDelete = f_delete;
    fault_vfs.xAccess = f_access;
    fault_vfs.xFullPathname = f_full_pathname;
    fault_vfs.xDlOpen = f_dlopen;
    fault_vfs.xDlError = f_dlerror;
    fault_vfs.xDlSym = f_dlsym;
    fault_vfs.xDlClose = f_dlclose;
    fault_vfs.xRandomness = f_randomness;
    fault_vfs.xSleep = f_sleep;
    fault_vfs.xCurrentTime = f_current_time;
    fault_vfs.xGetLastError = f_get_last_error;
    if (fault_vfs.iVersion >= 2)
        fault_vfs.xCurrentTimeInt64 = f_current_time64;
    g_real = real;
    int rc = sqlite3_vfs_register(&fault_vfs, 0);
    if (rc != SQLITE_OK)
        g_real = NULL;
    return rc;
}

void fault_vfs_fail_write(int n, int sqlite_err)
{
    g.write_left = n < 0 ? 0 : n;
    g.write_err = sqlite_err;
}

void fault_vfs_fail_sync(int n, int sqlite_err)
{
    g.sync_left = n < 0 ? 0 : n;
    g.sync_err = sqlite_err;
}

void fault_vfs_clear(void)
{
    g.write_left = -1;
    g.sync_left = -1;
}

uint64_t fault_vfs_writes(void) { return g.writes; }
uint64_t fault_vfs_syncs(void) { return g.syncs; }
uint64_t fault_vfs_injected(void) { return g.injected; }

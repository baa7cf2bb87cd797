/*
 * fault_vfs.h — a SQLite VFS shim that makes real I/O fail on request.
 *
 * fault_vfs_register() registers FAULT_VFS_NAME, a VFS that wraps the
 * default one and forwards everything to it. A test arms a fault and opens
 * the SQLite store with opts.vfs = FAULT_VFS_NAME:
 *
 *   fault_vfs_register();
 *   fault_vfs_fail_sync(0, SQLITE_IOERR);  // every sync from now fails
 *   ... commit -> SAGA_ESTORE ...
 *   fault_vfs_clear();
 *
 * The state is process-wide (a VFS is), which suits Criterion: each test
 * runs in its own process.
 */
#ifndef SAGA_TESTS_FAULT_VFS_H
#define SAGA_TESTS_FAULT_VFS_H

#include <stdint.h>

#define FAULT_VFS_NAME "faultvfs"

/** Register the shim (idempotent). @return a SQLite result code. */
int fault_vfs_register(void);
/** After @p n more successful xWrite calls, fail every xWrite with
 * @p sqlite_err (SQLITE_IOERR, SQLITE_FULL, ...) until cleared. */
void fault_vfs_fail_write(int n, int sqlite_err);
/** Likewise for xSync. */
void fault_vfs_fail_sync(int n, int sqlite_err);
/** Disarm every fault. */
void fault_vfs_clear(void);
/** Calls seen so far (failed ones included). */
uint64_t fault_vfs_writes(void);
uint64_t fault_vfs_syncs(void);
/** Failures injected so far. */
uint64_t fault_vfs_injected(void);

#endif /* SAGA_TESTS_FAULT_VFS_H */

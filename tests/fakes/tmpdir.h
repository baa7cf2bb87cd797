/*
 * tmpdir.h — a private temporary directory per test, for store files.
 * tmpdir_remove() deletes the files the tests created in it (including
 * SQLite's -wal and -shm companions) and the directory itself.
 */
#ifndef SAGA_TESTS_TMPDIR_H
#define SAGA_TESTS_TMPDIR_H

typedef struct tmpdir {
    char dir[256];
    char path[512];
} tmpdir;

/** Create a fresh directory under $TMPDIR (or /tmp). @return 0 or -1. */
int tmpdir_make(tmpdir *t);
/** "<dir>/<name>", valid until the next call. */
const char *tmpdir_path(tmpdir *t, const char *name);
/** Remove the directory and everything in it; safe to call twice. */
void tmpdir_remove(tmpdir *t);

#endif /* SAGA_TESTS_TMPDIR_H */

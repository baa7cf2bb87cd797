/*
 * tmpdir.c — per-test temporary directories (see tmpdir.h).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakes/tmpdir.h"

int tmpdir_make(tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    snprintf(t->dir, sizeof t->dir, "%s/saga-test-XXXXXX", base);
    return mkdtemp(t->dir) ? 0 : -1;
}

const char *tmpdir_path(tmpdir *t, const char *name)
{
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
    return t->path;
}

void tmpdir_remove(tmpdir *t)
{
    if (t->dir[0] == '\0' || strstr(t->dir, "saga-test-") == NULL)
        return;
    DIR *d = opendir(t->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlink(tmpdir_path(t, e->d_name));
        }
        closedir(d);
    }
    rmdir(t->dir);
    t->dir[0] = '\0';
}

/*
 * alloc.c — the allocator hook: saga_replace_allocator() and the
 * saga_malloc()/saga_realloc()/saga_free() everything in libsaga (plug-ins
 * included) allocates with.
 */
#include <stdlib.h>

#include "saga/saga.h"

/* The allocator is process-wide, like uv_replace_allocator(): it must be set
 * before anything is allocated, so plain statics are enough. */
static saga_malloc_fn g_malloc = malloc;
static saga_realloc_fn g_realloc = realloc;
static saga_free_fn g_free = free;

int saga_replace_allocator(saga_malloc_fn m, saga_realloc_fn r, saga_free_fn f)
{
    if (m == NULL || r == NULL || f == NULL)
        return SAGA_EINVAL;
    g_malloc = m;
    g_realloc = r;
    g_free = f;
    return SAGA_OK;
}

void *saga_malloc(size_t size) { return g_malloc(size ? size : 1); }
void *saga_realloc(void *ptr, size_t size)
{
    return g_realloc(ptr, size ? size : 1);
}
void saga_free(void *ptr)
{
    if (ptr != NULL)
        g_free(ptr);
}

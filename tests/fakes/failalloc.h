/*
 * failalloc.h — a counting allocator for saga_replace_allocator(): counts
 * live blocks (a leak check that does not need ASan), poisons freed memory
 * (a use-after-free reads garbage instead of stale data) and can make the
 * Nth allocation, or every one from the Nth on, fail.
 *
 * The allocator is process-wide; Criterion runs each test in its own
 * process, so a test may install it.
 */
#ifndef SAGA_TEST_FAILALLOC_H
#define SAGA_TEST_FAILALLOC_H

#include <stddef.h>

typedef struct failalloc {
    long calls;   /* allocations attempted (malloc and growing realloc) */
    long live;    /* blocks allocated and not freed */
    long fail_at; /* 0: never; else the allocation number that fails */
    int sticky;   /* 1: every allocation from fail_at on fails */
    long failed;  /* allocations refused */
} failalloc;

extern failalloc FA;

/* Install the allocator (once per process) and reset the counters. */
void fa_install(void);
/* Reset the counters; @p fail_at as in failalloc. */
void fa_arm(long fail_at, int sticky);

#endif

#include "failalloc.h"

#include <saga/saga.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

failalloc FA;

#define HDR 16 /* keeps the block aligned for any type */

static int refuse(void)
{
    FA.calls++;
    if (FA.fail_at > 0 &&
        (FA.calls == FA.fail_at || (FA.sticky && FA.calls > FA.fail_at))) {
        FA.failed++;
        return 1;
    }
    return 0;
}

static void *fa_malloc(size_t n)
{
    if (refuse())
        return NULL;
    unsigned char *p = malloc(n + HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    FA.live++;
    return p + HDR;
}

static void fa_free(void *ptr)
{
    if (ptr == NULL)
        return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    memset(p, 0xdd, n + HDR);
    FA.live--;
    free(p);
}

static void *fa_realloc(void *ptr, size_t n)
{
    if (ptr == NULL)
        return fa_malloc(n);
    size_t old;
    memcpy(&old, (unsigned char *)ptr - HDR, sizeof old);
    if (n > old && refuse())
        return NULL;
    unsigned char *p = malloc(n + HDR);
    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    memcpy(p + HDR, ptr, old < n ? old : n);
    FA.live++;
    fa_free(ptr);
    return p + HDR;
}

void fa_install(void)
{
    static int installed;
    if (!installed)
        saga_replace_allocator(fa_malloc, fa_realloc, fa_free);
    installed = 1;
    fa_arm(0, 0);
}

void fa_arm(long fail_at, int sticky)
{
    long live = FA.live;
    memset(&FA, 0, sizeof FA);
    FA.live = live;
    FA.fail_at = fail_at;
    FA.sticky = sticky;
}

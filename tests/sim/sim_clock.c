/*
 * sim_clock.c — the one clock of the simulated world.
 *
 * The program defines clock_gettime() itself; the dynamic linker binds
 * libuv's (and libsaga's) calls to it, so loop time, uv timers and the
 * engine's default clock are all virtual. A uv timer of 100 ms fires when
 * the simulator moves sim_now_ms 100 ms on, never because the host took
 * 100 ms. Real time is read only through the raw system call, for the
 * seeds-per-second figure.
 */
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

int64_t sim_now_ms = 1700000000000;

__attribute__((visibility("default"))) int clock_gettime(clockid_t id,
                                                         struct timespec *ts);
int clock_gettime(clockid_t id, struct timespec *ts)
{
    (void)id;
    ts->tv_sec = (time_t)(sim_now_ms / 1000);
    ts->tv_nsec = (long)(sim_now_ms % 1000) * 1000000L;
    return 0;
}

double sim_real_seconds(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t sim_split(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int64_t sim_range(uint64_t *s, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t)(sim_split(s) % (uint64_t)(hi - lo + 1));
}

int sim_chance(uint64_t *s, int permille)
{
    return permille > 0 && (int)(sim_split(s) % 1000) < permille;
}

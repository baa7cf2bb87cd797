/*
 * xp_common.h — what the cross-process test's programs agree on: the saga
 * definition's shape, the services, and the business outcome of each step
 * as a pure function of the saga id (so the verifier can predict it).
 */
#ifndef XP_COMMON_H
#define XP_COMMON_H

#include <stdint.h>

#define XP_DEF "checkout"
#define XP_ORCH "orders"
#define XP_INV "inventory"
#define XP_PAY "payment"
#define XP_NSTEPS 3

/* Step i: its name (also the command name) and the service running it. */
static const char *const xp_step_name[XP_NSTEPS] = {"reserve", "charge",
                                                    "ship"};
static const char *const xp_step_service[XP_NSTEPS] = {XP_INV, XP_PAY, XP_INV};

static inline uint64_t xp_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* ~5%: reserve answers FAIL ("out of stock"). */
static inline int xp_reserve_fails(const char *id)
{
    return xp_hash(id) % 100 < 5;
}
/* ~20%: charge answers FAIL ("card declined"). */
static inline int xp_charge_fails(const char *id)
{
    return (xp_hash(id) >> 8) % 100 < 20;
}
/* ~10%: ship answers RETRY on its first attempt (a transient error). */
static inline int xp_ship_retries(const char *id, uint32_t attempt)
{
    return attempt == 1 && (xp_hash(id) >> 16) % 100 < 10;
}

/* XP_KAFKA=kafka://... in the environment runs the programs over Kafka
 * instead of TCP (built with the Kafka transport: XP_WITH_KAFKA). */
#ifdef XP_WITH_KAFKA
#include <saga/kafka.h>

static inline int xp_kafka_new(saga_transport **t, struct uv_loop_s *loop,
                               const char *url, saga_log_fn log)
{
    saga_kafka_options o = SAGA_KAFKA_OPTIONS_INIT;
    o.url = url;
    o.log = log;
    o.commit_interval_ms = 50;
    return saga_transport_kafka_new(t, loop, &o);
}

/* Partitions assigned to @p t's consumers (0 if not Kafka). */
static inline uint32_t xp_kafka_assigned(saga_transport *t)
{
    saga_kafka_counters st;
    st.version = SAGA_KAFKA_COUNTERS_VERSION;
    return saga_transport_kafka_stats(t, &st) == SAGA_OK ? st.assigned : 0;
}
#endif

#endif /* XP_COMMON_H */

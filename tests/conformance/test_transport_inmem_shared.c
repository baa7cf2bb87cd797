/*
 * test_transport_inmem_shared.c — the transport conformance suite on a
 * shared in-memory bus (saga_inmem_bus_new_shared): A and B are two
 * endpoints made with saga_transport_inmem_new_on() on the suite's one
 * loop, so every path of the locked, async-woken bus runs under the same
 * contract as the single-loop bus. The cross-thread case is
 * tests/unit/test_inmem_threads.c.
 */
#include "transport_suite.h"

static saga_inmem_bus *bus;

static int shared_open(saga_tsuite_env *env)
{
    int rc = saga_inmem_bus_new_shared(&bus);
    if (rc != SAGA_OK)
        return rc;
    if ((rc = saga_transport_inmem_new_on(&env->a, bus, &env->loop)) != SAGA_OK)
        return rc;
    return saga_transport_inmem_new_on(&env->b, bus, &env->loop);
}

static int shared_reopen_b(saga_tsuite_env *env)
{
    return saga_transport_inmem_new_on(&env->b, bus, &env->loop);
}

static void shared_cleanup(saga_tsuite_env *env)
{
    (void)env;
    saga_inmem_bus_free(bus);
    bus = NULL;
}

static const saga_tsuite_fixture shared_fx = {"orders",
                                              SAGA_TSUITE_SHARED_GROUPS |
                                                  SAGA_TSUITE_REDELIVER,
                                              shared_open, shared_reopen_b,
                                              shared_cleanup};

SAGA_TRANSPORT_CONFORMANCE(transport_inmem_shared, shared_fx)

/*
 * test_transport_inmem.c — the transport conformance suite on the in-memory
 * transport: A and B are two endpoints of one bus.
 */
#include "transport_suite.h"

static saga_inmem_bus *bus;

static int inmem_open(saga_tsuite_env *env)
{
    int rc = saga_inmem_bus_new(&bus, &env->loop);
    if (rc != SAGA_OK)
        return rc;
    if ((rc = saga_transport_inmem_new(&env->a, bus)) != SAGA_OK)
        return rc;
    return saga_transport_inmem_new(&env->b, bus);
}

static int inmem_reopen_b(saga_tsuite_env *env)
{
    return saga_transport_inmem_new(&env->b, bus);
}

static void inmem_cleanup(saga_tsuite_env *env)
{
    (void)env;
    saga_inmem_bus_free(bus);
    bus = NULL;
}

static const saga_tsuite_fixture inmem_fx = {"orders",
                                             SAGA_TSUITE_SHARED_GROUPS |
                                                 SAGA_TSUITE_REDELIVER,
                                             inmem_open, inmem_reopen_b,
                                             inmem_cleanup};

SAGA_TRANSPORT_CONFORMANCE(transport_inmem, inmem_fx)

/*
 * fault_transport.h — wraps a transport and can refuse its sends, to test
 * the outbox: a message whose publish fails stays in the outbox.
 */
#ifndef SAGA_TESTS_FAULT_TRANSPORT_H
#define SAGA_TESTS_FAULT_TRANSPORT_H

#include <saga/saga.h>

typedef struct fault_transport fault_transport;

/* Takes @p inner (closed with the wrapper). */
int fault_transport_new(saga_transport **out, saga_transport *inner,
                        fault_transport **handle);
/* While on, send() returns SAGA_ETRANSPORT. */
void fault_transport_refuse_sends(fault_transport *ft, int on);
uint64_t fault_transport_sends(const fault_transport *ft);

#endif

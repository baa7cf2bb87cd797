/*
 * transport.h — the transport plug-in interface, and the built-in
 * in-memory transport.
 *
 * Delivery is at-least-once: a message that was not acked may be delivered
 * again. It is ordered per (topic, key) where the transport can. Exactly-once
 * effects come from the outbox and the inbox (store.h), not from here.
 *
 * The vtable is the plug-in ABI, stable only through a minor release; slots
 * are appended under "version N" comments and a version-N slot is called only
 * when transport->version >= N and the slot is not NULL.
 *
 * Threading: slots are called on the loop thread the transport was created
 * on, and every callback arrives on that thread, never from inside the call
 * that caused it. A slot never calls into the engine.
 */
#ifndef SAGA_TRANSPORT_H
#define SAGA_TRANSPORT_H

#include "saga/saga.h"

struct uv_loop_s;

SAGA_BEGIN_DECL

/** A received message, valid until it is acked or the transport closes. */
typedef struct saga_delivery saga_delivery;

/** Called once when a send is confirmed (status SAGA_OK) or has failed
 * (SAGA_ETRANSPORT, SAGA_ECLOSED, SAGA_ETIMEDOUT: it may be sent again;
 * SAGA_EINVAL: the message can never be delivered as it is, e.g. it is
 * larger than the receiver accepts, so it must not be sent again;
 * SAGA_ENOROUTE: no such destination). */
typedef void (*saga_sent_cb)(saga_transport *t, int status, void *arg);

/**
 * Called for each received message. @p buf is borrowed until the delivery
 * is acked. The receiver must ack each delivery exactly once, after its
 * effect is durable; an unacked delivery may come again.
 */
typedef void (*saga_recv_cb)(saga_transport *t, saga_delivery *d,
                             const char *topic, const char *key,
                             const void *buf, size_t len, void *arg);

#define SAGA_TRANSPORT_VERSION 2

struct saga_transport {
    unsigned int version; /* SAGA_TRANSPORT_VERSION */
    /* version 1 */
    /**
     * Send @p len bytes (copied) to @p topic. @p key (may be NULL) orders
     * messages. @p cb (may be NULL) runs once, later.
     * @return SAGA_OK; SAGA_EINVAL; SAGA_EFULL (the send queue is full: the
     * caller retries later, cb will not run); SAGA_ENOROUTE (no such
     * destination, as route() would say; cb will not run); SAGA_ECLOSED;
     * SAGA_ENOMEM.
     */
    int (*send)(saga_transport *self, const char *topic, const char *key,
                const void *buf, size_t len, saga_sent_cb cb, void *arg);
    /**
     * Receive messages of @p topic. Subscribers with the same @p group share
     * the messages (each goes to one of them); each group gets every
     * message. @return SAGA_OK, SAGA_EINVAL, SAGA_EDUP (same topic and
     * group twice on this transport), SAGA_ECLOSED, SAGA_ENOMEM.
     */
    int (*subscribe)(saga_transport *self, const char *topic, const char *group,
                     saga_recv_cb cb, void *arg);
    /** Acknowledge a delivery; it is freed. @return SAGA_OK, SAGA_EINVAL. */
    int (*ack)(saga_transport *self, saga_delivery *d);
    /** Detail of the last failure; never NULL. */
    const char *(*errmsg)(saga_transport *self);
    /**
     * Stop, drop pending sends (their callbacks get SAGA_ECLOSED) and free
     * the transport once its uv handles are closed: the loop must run for
     * that to finish.
     */
    void (*close)(saga_transport *self);
    /* version 2 */
    /**
     * Whether @p topic can ever be delivered to (optional; NULL means every
     * topic may be). The relay and the participant ask before queueing, so
     * that a message for a destination that does not exist fails at once
     * instead of waiting behind the others.
     * @return SAGA_OK (known, even if it is down right now), SAGA_ENOROUTE
     * (no peer or topic by that name: a configuration error), SAGA_EINVAL.
     */
    int (*route)(saga_transport *self, const char *topic);
};

#define SAGA_TRANSPORT_INIT SAGA_INIT_VERSION(SAGA_TRANSPORT_VERSION)
/** Zero @p t and set its version. @return SAGA_OK or SAGA_EVERSION.
 * Ownership: @p t is the caller's. Since: 0.1. */
SAGA_EXTERN int saga_transport_init(saga_transport *t, unsigned int version);
/** Close a transport not handed to an engine; NULL is a no-op.
 * Ownership: @p t and what it holds are freed (its close slot runs).
 *   Since: 0.1. */
SAGA_EXTERN void saga_transport_free(saga_transport *t);

/* ------------------------------------------------------------------------ */
/* The in-memory transport: endpoints on one loop share a bus.              */

typedef struct saga_inmem_bus saga_inmem_bus;

/**
 * A message bus for in-memory endpoints on @p loop. Messages sent before a
 * group subscribes to a topic are kept for it, as a broker keeps them.
 * @return SAGA_OK, SAGA_EINVAL or SAGA_ENOMEM. Since: 0.1.
 * Ownership: the caller owns *out and frees it with saga_inmem_bus_free();
 *   @p loop stays the caller's.
 */
SAGA_EXTERN int saga_inmem_bus_new(saga_inmem_bus **out,
                                   struct uv_loop_s *loop);
/** Free the bus once every endpoint on it is closed; NULL is a no-op. On
 * a shared bus (saga_inmem_bus_new_shared()) it may be called from any
 * thread while endpoints are still open or closing: each is closed on its
 * own loop, and the last one gone frees the bus. On a single-loop bus call
 * it on the loop's thread; endpoints still open are closed.
 * Ownership: @p bus is freed (or will be, by the last endpoint's close).
 * Since: 0.1. */
SAGA_EXTERN void saga_inmem_bus_free(saga_inmem_bus *bus);

/**
 * A transport endpoint on @p bus. Its sends are delivered on a later loop
 * turn; an unacked delivery is redelivered if its subscriber's endpoint
 * closes. A send is confirmed (its callback's SAGA_OK) only once every
 * group that gets it has acked it, so that a sender that forgets what is
 * confirmed (a relay deleting its outbox row) loses nothing if the process
 * dies with the message still in the bus's memory; a send to a topic no
 * group has joined yet is confirmed on the next turn (the bus keeps it
 * for the first groups, as a broker would). Since 0.2 (0.1 confirmed
 * every send on the next turn). Its route() says SAGA_OK for every topic: the bus keeps messages
 * for a group that subscribes later, so no topic is known to be wrong.
 * @return SAGA_OK, SAGA_EINVAL or SAGA_ENOMEM. Since: 0.1.
 * Ownership: the caller owns *out until an engine or participant takes it (else
 *   saga_transport_free()); @p bus stays the caller's and must outlive the
 *   endpoint.
 */
SAGA_EXTERN int saga_transport_inmem_new(saga_transport **out,
                                         saga_inmem_bus *bus);

/**
 * A message bus for in-memory endpoints on several loops, one loop per
 * thread (libuv runs one loop per thread): each endpoint is made with
 * saga_transport_inmem_new_on() on its own loop and used only on that
 * loop's thread. A message sent on one loop is queued under the bus's
 * mutex and wakes the receiving endpoint's loop (a uv_async_t), so
 * callbacks always run on the receiver's own thread. The semantics are
 * the single-loop bus's (groups, key affinity, redelivery of what a closed
 * endpoint had not acked); a send is handed out on the next turn of the
 * sender's loop (or of any open endpoint's once the sender closed), and a
 * topic's backlog goes to the groups
 * that subscribed before the bus's next delivery round on any loop. An
 * open endpoint keeps its loop alive (its async handle).
 * @return SAGA_OK, SAGA_EINVAL (@p out is NULL) or SAGA_ENOMEM.
 * Since: 0.2.
 * Ownership: the caller owns *out and frees it with saga_inmem_bus_free(),
 *   from any thread.
 */
SAGA_EXTERN int saga_inmem_bus_new_shared(saga_inmem_bus **out);

/**
 * A transport endpoint on @p bus whose callbacks run on @p loop. Call it on
 * @p loop's thread (or before that loop runs), and use and close the
 * endpoint on that thread only. On a bus from saga_inmem_bus_new() @p loop
 * must be the bus's loop (then this is saga_transport_inmem_new()); on a
 * shared bus every endpoint may have its own loop. Sends and subscriptions
 * of endpoints on other loops reach it as on one loop.
 * @return SAGA_OK, SAGA_EINVAL (NULL argument, a loop other than a
 *   single-loop bus's, or a bus being freed) or SAGA_ENOMEM. Since: 0.2.
 * Ownership: the caller owns *out until an engine or participant takes it
 *   (else saga_transport_free()); @p bus and @p loop stay the caller's; the
 *   bus must outlive the endpoint unless saga_inmem_bus_free() was called
 *   on a shared bus (then the last endpoint closed frees it).
 */
SAGA_EXTERN int saga_transport_inmem_new_on(saga_transport **out,
                                            saga_inmem_bus *bus,
                                            struct uv_loop_s *loop);

SAGA_END_DECL

#endif /* SAGA_TRANSPORT_H */

/*
 * relay.h — the outbox relay shared by the engine and participants.
 *
 * The owner writes a message to the store's outbox in the same transaction
 * as the state change that causes it; after the commit it hands the message
 * to the relay, which publishes it through the transport. Only when the
 * transport confirms does the relay tell the owner, who deletes the outbox
 * row in its next batch. A crash in between leaves the row, and
 * saga__relay_recover() publishes it again on start: at-least-once.
 *
 * Order is kept per destination (topic), never across destinations: one
 * refused, full or failing destination holds only its own messages. A
 * message that can never be delivered (no such destination) is dropped at
 * once, logged, its row deleted, and reported to the owner.
 */
#ifndef SAGA_RELAY_H
#define SAGA_RELAY_H

#include <uv.h>

#include "saga/saga.h"

typedef struct saga__relay saga__relay;

typedef struct saga__outmsg {
    struct saga__outmsg *next;
    saga__relay *relay;
    char *id, *topic, *key;
    void *buf;
    size_t len;
    int64_t created_ms;
    int status; /* why it cannot be delivered (the relay's) */
    char *why;
    /* A message with no outbox row (a participant's reply): once the
     * transport confirms it (or it can never be delivered), this delivery
     * (the command it answers) is acked instead of a row being deleted.
     * Until then the command stays unacked, so a crash makes the transport
     * deliver it again and the inbox answers it with the recorded reply. */
    saga_delivery *ack;
} saga__outmsg;

/* The transport confirmed @p msg_id: delete it from the outbox (not
 * called for a message with @c ack set). */
typedef void (*saga__relay_done_fn)(void *owner, const char *msg_id);
typedef void (*saga__relay_log_fn)(void *owner, saga_log_level lvl,
                                   const char *msg);
/* @p msg can never be delivered: no such destination (@p code
 * SAGA_ENOROUTE) or the transport refuses the message itself (SAGA_EINVAL);
 * @p why is the detail. Its outbox row was already handed to done(). */
typedef void (*saga__relay_fail_fn)(void *owner, const struct saga__outmsg *msg,
                                    int code, const char *why);

/* A message with copies of every field; NULL on ENOMEM. */
saga__outmsg *saga__outmsg_new(const char *id, const char *topic,
                               const char *key, const void *buf, size_t len,
                               int64_t created_ms);
void saga__outmsg_free(saga__outmsg *m);

int saga__relay_new(saga__relay **out, uv_loop_t *loop, saga_transport *t,
                    void *owner, saga__relay_done_fn done,
                    saga__relay_log_fn log);
/* Also tell @p fail about undeliverable messages (they are logged and
 * their rows deleted in any case). */
void saga__relay_on_fail(saga__relay *r, saga__relay_fail_fn fail);
/* Queue a committed message (the relay owns it) and publish. */
void saga__relay_push(saga__relay *r, saga__outmsg *m);
void saga__relay_kick(saga__relay *r);
/* Queue everything the outbox still holds (start-up). */
int saga__relay_recover(saga__relay *r, saga_store *s);

/* Several engines on one store (the engine's relay): @p term says whether
 * the owner may publish now: 0 if not (its lease is not surely live),
 * else a number that changes whenever the owner took a new epoch. When it
 * is 0 or changed, every queued message is dropped (its row belongs to
 * whichever epoch takes it over, the owner's next one included); a
 * message is sent only while it is not 0. Messages in flight are left to
 * the transport. */
typedef uint64_t (*saga__relay_term_fn)(void *owner);
/* The relay's outbox scan on the loop failed with its answer lost: the
 * rows it may have taken are the owner's epoch's and unknown (the engine
 * gives its lease up). */
typedef void (*saga__relay_lost_fn)(void *owner);
void saga__relay_gate(saga__relay *r, saga__relay_term_fn term,
                      saga__relay_lost_fn lost);
/* Queue, on the loop, what the store hands to outbox_scan_submit (store
 * version 10): every pending message without a lease (start-up), the
 * messages taken over with the owner's sagas with one. Another scan asked
 * for while one is in flight follows it. SAGA_OK, or SAGA_EINVAL if the
 * store has no such slot. */
int saga__relay_scan_submit(saga__relay *r, saga_store *s);
/* Scans made on the loop and messages they handed over (tests, logs). */
uint64_t saga__relay_scans(const saga__relay *r);
/* Stop. The relay frees itself once the transport has called back for
 * every message in flight; call before closing the transport. */
void saga__relay_close(saga__relay *r);
uint64_t saga__relay_published(const saga__relay *r);
/* Messages dropped as undeliverable. */
uint64_t saga__relay_undeliverable(const saga__relay *r);
size_t saga__relay_backlog(const saga__relay *r);

#endif /* SAGA_RELAY_H */

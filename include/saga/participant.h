/*
 * participant.h — the service side of remote steps, and choreography.
 *
 * A participant receives commands from orchestrators over a transport and
 * runs a registered handler for each, inside a local store transaction that
 * also (DESIGN §6.3):
 *   - claims the message id in the inbox: a redelivered command gets the
 *     reply recorded the first time, and nothing is applied twice;
 *   - keeps a per-(saga, step) barrier: a compensation for an action that
 *     never applied is recorded as a no-op ("null compensation"); an action
 *     that arrives after its compensation is refused ("hanging action"); a
 *     retried action returns the first result instead of applying again,
 *     and once an action answered FAIL every later attempt of it (an older
 *     one still in the network) is refused with FAIL too;
 *   - writes the reply through its own outbox.
 * The service's business tables live in the same store, so "apply the
 * effect + mark the inbox" is one transaction: a handler writes them through
 * saga_participant_store_handle() (the sqlite3 * of a SQLite store; outside
 * handlers a PostgreSQL store gives a connection of its own).
 *
 * Commands that arrive in one loop turn share one transaction (group
 * commit). Deliveries are acked, and replies published, only after it
 * commits (on PostgreSQL the commit goes out on the loop without waiting;
 * the next batch begins once it is answered). A handler must not do non-transactional side effects it cannot
 * repeat: a failed commit runs it again.
 *
 * Events: saga_participant_publish() queues a domain event through the same
 * outbox; saga_participant_on_event() subscribes a handler, deduplicated by
 * the same inbox.
 */
#ifndef SAGA_PARTICIPANT_H
#define SAGA_PARTICIPANT_H

#include "saga/saga.h"

struct uv_loop_s;

SAGA_BEGIN_DECL

typedef struct saga_participant saga_participant;

/** A command or event as a handler sees it; borrowed for the call. */
typedef struct saga_command {
    const char *saga_id;
    const char *name; /* the command (or event) name */
    uint32_t step;
    uint32_t attempt;
    int compensating; /* 1: undo what the action with this name did */
    const char *msg_id;
    const void *payload; /* the saga data (a msgpack map) or event body */
    size_t payload_len;
    /** Since 0.2: 1 when a deferred command (saga_reply_defer()) that was
     * never answered is driven again after a restart: the handler runs
     * again and must redo its outside call idempotently (the same
     * idempotency key). 0 otherwise. */
    int redriven;
    /** Since 0.2: the W3C traceparent the command carried, "" if none. */
    const char *traceparent;
} saga_command;

/** What a handler answers: set by saga_reply_set() (default: OK, no
 * output). */
typedef struct saga_reply saga_reply;

/**
 * Set the reply of a command handler.
 * @param outcome SAGA_OUTCOME_OK, _FAIL (a business no: nothing applied) or
 *   _RETRY (transient; the orchestrator retries with backoff).
 * @param out a msgpack map merged into the saga data on OK; may be NULL.
 * @param error a reason for FAIL/RETRY; may be NULL.
 * @return SAGA_OK, SAGA_EINVAL (bad outcome, out not a map), SAGA_ENOMEM.
 * Ownership: @p out and @p error stay the caller's (copied). Since: 0.1.
 */
SAGA_EXTERN int saga_reply_set(saga_reply *r, saga_outcome outcome,
                               const void *out, size_t out_len,
                               const char *error);

/** A command whose handler answers later (saga_reply_defer()). */
typedef struct saga_deferred saga_deferred;

/**
 * Answer later: called inside a command handler, which then returns SAGA_OK.
 * The handler's transaction commits the inbox claim and the barrier as
 * PENDING together with whatever the handler wrote; the delivery is acked
 * after that commit, and nothing is replied until saga_deferred_reply().
 * While the command is pending, a redelivery of it calls nothing and
 * answers nothing; any other command for the same (saga, step) (a retried
 * attempt, or the compensation) is answered SAGA_OUTCOME_RETRY, which the
 * orchestrator retries with backoff, until the answer is recorded. If the
 * participant stops before the answer, the command stays pending and its
 * handler is called again at the next start, with saga_command.redriven
 * set. A saga_reply_set() on a deferred reply has no effect.
 * If the batch that holds the handler's transaction is rolled back (a
 * failed commit), @p out's handle is void: answering it does nothing, and
 * the command runs again, handler included.
 * @param reply the handler's reply.
 * @param out receives the handle; the caller owns it until it passes it to
 *   saga_deferred_reply() or saga_deferred_abandon().
 * @return SAGA_OK; SAGA_EINVAL (NULL argument, not inside a command
 *   handler, deferred twice, or a store without the version-2 kv_scan and
 *   kv_del slots, without which a pending command cannot be re-driven);
 *   SAGA_ENOMEM.
 * Ownership: *out is the caller's.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_reply_defer(saga_reply *reply, saga_deferred **out);

/**
 * The command a deferred handle answers.
 * @return a copy owned by @p d, valid until @p d is answered or abandoned;
 *   NULL if @p d is NULL.
 * Since: 0.2.
 * Ownership: the copy is @p d's (see above).
 */
SAGA_EXTERN const saga_command *saga_deferred_command(const saga_deferred *d);

/**
 * Answer a deferred command, any time later, on the loop thread (also from
 * inside a handler, even the one that deferred it: the answer then waits
 * for that handler's transaction to commit). The reply is recorded in the inbox, the
 * barrier and the outbox in one transaction, group-committed with the
 * other messages of the loop turn, and published after it commits.
 * @param outcome, out, out_len, error as saga_reply_set().
 * @return SAGA_OK (@p d is freed; also when @p d was void, see
 *   saga_reply_defer()); SAGA_EINVAL (NULL @p d, bad outcome, @p out not
 *   a msgpack map: @p d is kept); SAGA_ENOMEM (@p d is kept);
 *   SAGA_ECLOSED (the participant is closing or closed: @p d is freed, the
 *   command stays pending in the store and is re-driven at the next start).
 * Ownership: on every return but SAGA_EINVAL and SAGA_ENOMEM @p d is freed.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_deferred_reply(saga_deferred *d, saga_outcome outcome,
                                    const void *out, size_t out_len,
                                    const char *error);

/**
 * Drop @p d without answering (e.g. at shutdown): the command stays
 * pending and is re-driven at the next start. Valid also after the
 * participant is closed; NULL is a no-op.
 * Ownership: @p d is freed.
 * Since: 0.2.
 */
SAGA_EXTERN void saga_deferred_abandon(saga_deferred *d);

/**
 * A command handler. It runs on the loop thread inside the store
 * transaction; it writes its effect through the store handle and answers
 * with saga_reply_set(). Returning non-zero (a SAGA_E* code) undoes what
 * this command wrote (the other commands of the batch commit without it);
 * it is tried again alone after a backoff, and after handler_max_tries
 * answered SAGA_OUTCOME_FAIL with the code and the error text it set with
 * saga_reply_set().
 */
typedef int (*saga_command_fn)(saga_participant *p, const saga_command *cmd,
                               saga_reply *reply, void *arg);

/** An event handler; same transaction rules as saga_command_fn. */
typedef int (*saga_event_fn)(saga_participant *p, const saga_command *event,
                             void *arg);

#define SAGA_PARTICIPANT_OPTIONS_VERSION 3
#define SAGA_PARTICIPANT_OPTIONS_INIT                                          \
    SAGA_INIT_VERSION(SAGA_PARTICIPANT_OPTIONS_VERSION)

/** Participant options; zero selects each default. */
typedef struct saga_participant_options {
    unsigned int version;
    /** The service name: commands arrive on this topic (required). */
    const char *service;
    /** Log sink (as in engine.h); default stderr. Below log_level (0:
     * WARN) messages are dropped. */
    saga_log_fn log;
    void *log_arg;
    saga_log_level log_level;
    /** Clock in ms since the epoch; default the wall clock. */
    int64_t (*clock)(void *arg);
    void *clock_arg;
    /** Largest accepted payload; default 1 MiB. */
    size_t max_payload;
    /** Delay before a failed commit is retried; default 100 ms. Also the
     * first delay before a failed handler is tried again (doubling, capped
     * at 5 s). */
    uint32_t store_retry_ms;
    /* version 2 (since 0.2) */
    /** Tries of a command whose handler returns an error before the
     * command is answered SAGA_OUTCOME_FAIL with the handler's error (the
     * saga then compensates); default 5. A failing event handler is
     * retried without end (an event has no one to answer to). */
    uint32_t handler_max_tries;
    /** Keep inbox entries and barrier rows this long after their last
     * write; default 24 h (as the engine). It must outlast every message
     * an orchestrator may still send about a step (docs/api/participant.md,
     * "Retention"). Pending (deferred) commands are never purged. */
    uint64_t retention_ms;
    /** How often the housekeeping pass runs; default 60 s. */
    uint64_t housekeeping_interval_ms;
    /* version 2, too: the structured log */
    /** Structured log sink (saga/trace.h), used instead of @c log when
     * set; events about a command carry its attempt and trace id.
     * Since: 0.2. */
    saga_log_event_fn log_event;
    void *log_event_arg;
    /* version 3 (since 0.2): one loop turn stays short */
    /** Received messages handled in one batch (one transaction, one loop
     * turn) at most; the rest wait for the next loop turn, so that timers
     * and I/O on the same loop (heartbeats, an engine's silence limit) run
     * in between. Also the most outbox deletions one batch carries.
     * Default 256. Since: 0.2. */
    uint32_t max_batch;
    /** A batch takes no further message once it has run this long (it
     * always handles at least one); default 50 ms. It bounds a loop turn
     * when the store is slow (one round trip per statement on PostgreSQL,
     * a loaded machine). Since: 0.2. */
    uint32_t max_batch_ms;
} saga_participant_options;

/**
 * Zero @p opts as options struct @p version (pass
 * SAGA_PARTICIPANT_OPTIONS_VERSION) and set its version: every field then
 * selects its default; only `service` is required.
 * @return SAGA_OK, SAGA_EINVAL (NULL @p opts), SAGA_EVERSION (0 or newer
 *   than this library).
 * Since: 0.2.
 * Ownership: @p opts is the caller's.
 */
SAGA_EXTERN int saga_participant_options_init(saga_participant_options *opts,
                                              unsigned int version);

/**
 * A participant on @p loop, with its own store and transport.
 * @return SAGA_OK, SAGA_EINVAL (no service name, NULL store or transport),
 *   SAGA_EVERSION, SAGA_ENOMEM.
 * Ownership: on SAGA_OK the participant owns @p store and @p transport.
 * Since: 0.1.
 */
SAGA_EXTERN int saga_participant_new(saga_participant **out,
                                     struct uv_loop_s *loop, saga_store *store,
                                     saga_transport *transport,
                                     const saga_participant_options *opts);

/**
 * Handle the command @p name (both its action and, with compensating set,
 * its compensation). Register before saga_participant_start().
 * @return SAGA_OK, SAGA_EINVAL, SAGA_EDUP, SAGA_EBUSY (started), ENOMEM.
 * Ownership: @p name stays the caller's (copied); @p arg is passed to @p fn
 *   untouched. Since: 0.1.
 */
SAGA_EXTERN int saga_participant_on_command(saga_participant *p,
                                            const char *name,
                                            saga_command_fn fn, void *arg);

/**
 * Subscribe @p fn to events named @p name (NULL: every event) on @p topic,
 * as consumer group @p group (NULL: the service name).
 * @return as saga_participant_on_command().
 * Ownership: @p topic, @p group and @p name stay the caller's (copied); @p arg
 *   is passed to @p fn untouched. Since: 0.1.
 */
SAGA_EXTERN int saga_participant_on_event(saga_participant *p,
                                          const char *topic, const char *group,
                                          const char *name, saga_event_fn fn,
                                          void *arg);

/** Subscribe and re-publish what the outbox still holds.
 * @return SAGA_OK, SAGA_EBUSY, SAGA_ESTORE, SAGA_ETRANSPORT.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_participant_start(saga_participant *p);

/**
 * Publish an event on @p topic with key @p key (ordering; may be NULL).
 * Inside a handler it joins the handler's transaction; outside it is
 * committed with the next batch. Published only after that commit.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOMEM, SAGA_ECLOSED.
 * Ownership: every argument stays the caller's (the event is copied into the
 *   outbox). Since: 0.1.
 */
SAGA_EXTERN int saga_participant_publish(saga_participant *p, const char *topic,
                                         const char *key, const char *name,
                                         const void *payload, size_t len);

/** The store's native handle, for the service's own tables.
 * - Inside a handler: the connection of the handler's transaction (the
 *   sqlite3 * of a SQLite store, the PGconn * of a PostgreSQL store), so
 *   that the handler's writes commit atomically with the inbox claim and
 *   its reply; leave the transaction open (no COMMIT or ROLLBACK).
 * - Outside handlers (an HTTP request, a timer): on a store with a
 *   connection for the application (store version 11, app_handle:
 *   PostgreSQL) that connection, which the participant never uses: its
 *   statements autocommit or run in the application's own transactions
 *   and see committed data only. Asking for it while a batch's commit is
 *   in flight on the loop waits for that commit's answer, so that what
 *   the handlers wrote is visible (as a deferred answer's timer expects),
 *   for at most 1 s: a slower or silent server gets NULL (try again
 *   later) rather than the loop standing still.
 *   Otherwise (SQLite) the same handle as inside.
 * Ask for it each time rather than keep it: inside and outside are two
 * connections on PostgreSQL, and a broken one is replaced.
 * @return the handle; NULL if the store has none (or, outside handlers on
 *   PostgreSQL, cannot connect now or a commit in flight was not answered
 *   within 1 s).
 * Ownership: the store's, valid while the participant lives; do not close it.
 *   Since: 0.1 (the connection outside handlers since 0.2). */
SAGA_EXTERN void *saga_participant_store_handle(saga_participant *p);

/** The participant's store (borrowed).
 * Ownership: the participant's; do not free it. Since: 0.1. */
SAGA_EXTERN saga_store *saga_participant_store(saga_participant *p);

#define SAGA_PARTICIPANT_COUNTERS_VERSION 1
#define SAGA_PARTICIPANT_COUNTERS_INIT                                         \
    SAGA_INIT_VERSION(SAGA_PARTICIPANT_COUNTERS_VERSION)

/** Counters since the participant was made (docs/api/README.md,
 * "Counters"). Fields are appended under a new version. */
typedef struct saga_participant_counters {
    unsigned int version; /* set by the caller */
    uint64_t commands, duplicates, null_compensations, hanging_refused;
    uint64_t retried_actions; /* answered from the barrier */
    uint64_t events, rejected, commits, commit_failures;
    /* Since 0.2 */
    uint64_t deferred;         /* commands answered later (saga_reply_defer) */
    uint64_t pending_retried;  /* answered RETRY: their step was pending */
    uint64_t redriven;         /* pending commands driven again at start */
    uint64_t handler_failures; /* handler calls that returned an error */
    uint64_t handler_gave_up;  /* commands answered FAIL after the tries */
    uint64_t barriers_purged;  /* barrier rows removed by housekeeping */
    uint64_t unroutable;       /* commands refused: no route to reply_to */
} saga_participant_counters;

/**
 * Copy the participant's counters into @p out, up to out->version.
 * @param p    the participant.
 * @param out  caller memory, its version set
 *   (SAGA_PARTICIPANT_COUNTERS_INIT).
 * @return SAGA_OK, SAGA_EINVAL (NULL argument), SAGA_EVERSION (out->version
 *   0 or newer than this library).
 * Ownership: @p out is the caller's. Since: 0.1 (renamed in 0.2,
 * docs/api/README.md).
 */
SAGA_EXTERN int saga_participant_stats(saga_participant *p,
                                       saga_participant_counters *out);

/** Detail of the last failure; "" if none.
 * Ownership: the string is the participant's, valid until the next call on
 *   @p p. Since: 0.1. */
SAGA_EXTERN const char *saga_participant_errmsg(saga_participant *p);

/**
 * Run the housekeeping pass now (it also runs every
 * housekeeping_interval_ms once started): purge inbox entries and barrier
 * rows last written more than retention_ms ago by the participant's clock,
 * except pending deferred commands. Barrier rows written before 0.2 carry
 * no time: the first pass stamps them with the current time.
 * @return SAGA_OK, SAGA_EINVAL (NULL), SAGA_ECLOSED, SAGA_ESTORE (the
 *   purge failed; nothing of it remains; saga_participant_errmsg() says
 *   why).
 * Since: 0.2.
 * Ownership: none.
 */
SAGA_EXTERN int saga_participant_housekeep(saga_participant *p);

/**
 * Stop: commit what is pending, close the transport and the store, then
 * call @p cb (may be NULL) once everything is freed; the loop must run.
 * A second call, or NULL @p p, does nothing. Safe from a command or event
 * handler: the participant answers as closing at once (SAGA_ECLOSED) and
 * closes on the next loop turn, once the handler's batch is done.
 * @param p    the participant.
 * @param cb   called once on the loop thread when the memory is gone.
 * @param arg  passed to @p cb.
 * Ownership: the participant, its store and its transport are freed.
 * Since: 0.1.
 */
SAGA_EXTERN void saga_participant_close(saga_participant *p,
                                        void (*cb)(void *arg), void *arg);

/**
 * Close and free a participant, running its loop until it is gone (as
 * saga_engine_free() does for an engine): for a loop that is not running.
 * From a callback on the loop use saga_participant_close(). NULL, or a
 * participant already closing, is a no-op (the earlier close frees it).
 * @param p  the participant.
 * Ownership: the participant, its store and its transport are freed.
 * Since: 0.2.
 */
SAGA_EXTERN void saga_participant_free(saga_participant *p);

SAGA_END_DECL

#endif /* SAGA_PARTICIPANT_H */

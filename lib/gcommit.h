/*
 * gcommit.h — group commit: the one driver behind every component that
 * stages writes during a loop turn and commits them together (the engine's
 * sagas, the participant's received messages).
 *
 * The owner stages; the driver decides when to commit (a uv_check at the
 * end of the loop turn, a uv_idle keeping the poll phase from blocking
 * meanwhile), commits through the owner's operations, hands the committed
 * batch back to the owner to release (never calling anything above it by
 * name), and on a failure leaves the batch with the owner and tries again
 * after an exponential backoff.
 *
 * Two ways to commit:
 * - synchronous: ops->write() writes the batch on the loop and returns (or
 *   submits it itself and says so: SAGA__GC_SUBMITTED, then
 *   saga__gc_done());
 * - asynchronous, when the store has submit_batch (version 4) and the owner
 *   can describe its batch as saga_batch_writes (ops->writes): the batch is
 *   submitted, the owner goes on staging the next one, and the batch is
 *   released when the store reports. At most one batch is in flight.
 */
#ifndef SAGA_GCOMMIT_H
#define SAGA_GCOMMIT_H

#include <uv.h>

#include "saga/store.h"

/* ops->write(): not committed and not failed (the owner dropped part of
 * it): commit again on the next loop turn, without backoff. */
#define SAGA__GC_AGAIN 1
/* ops->write(): the owner submitted the batch to the store on its own (a
 * participant's commit, store version 11): it is in flight, and the owner
 * calls saga__gc_done() with its result later, from the loop. */
#define SAGA__GC_SUBMITTED 2

typedef struct saga__gc_ops {
    /** Whether anything is staged (writes or effects alone). */
    int (*pending)(void *owner);
    /** Take the staged batch for commit; staging goes on into a new one.
     * @return 1 if it has writes, 0 if it only has effects to release (it
     * is released at once), or a negative error (a failed commit).
     * NULL: the owner commits in place (synchronous only). */
    int (*detach)(void *owner);
    /** Write the taken batch synchronously, in one transaction.
     * @return SAGA_OK, SAGA__GC_AGAIN, or an error (nothing of it remains).*/
    int (*write)(void *owner);
    /** Describe the taken batch for submit_batch; @p w is valid until the
     * store returns. @return SAGA_OK or SAGA_ENOMEM. NULL: synchronous only.
     */
    int (*writes)(void *owner, saga_batch_writes *w);
    /** The taken batch is durable: release what waited for it. */
    void (*committed)(void *owner);
    /** Its commit failed with @p rc: nothing of it is released; the owner
     * keeps it, to be written again before what was staged since. */
    void (*failed)(void *owner, int rc);
    /** Closing, and the batch in flight is done: called from the store's
     * callback, so the owner must not free the store in it (NULL: not
     * needed). */
    void (*drained)(void *owner);
} saga__gc_ops;

typedef struct saga__gc {
    uv_loop_t *loop;
    saga_store *store;
    const saga__gc_ops *ops;
    void *owner;
    uv_idle_t idle;   /* keeps the poll phase from blocking while staged */
    uv_check_t check; /* commits at the end of the loop turn */
    uv_timer_t retry; /* after a failed commit */
    uint32_t retry_ms, backoff_ms, max_backoff_ms;
    int max_rounds; /* commits per check callback (releases can chain) */
    int async;      /* the store has submit_batch and the owner writes() */
    int busy;       /* inside a commit or the release of one */
    int inflight;   /* a submitted batch waits for its done callback */
    int closing;
    int linger;         /* keep the handles one more turn after a commit */
    uint64_t t0;        /* when the batch in flight was submitted */
    int64_t latency_us; /* of the last commit, for the owner's metrics */
} saga__gc;

/** Set up the handles on @p loop (they start stopped). @p retry_ms is the
 * first backoff, doubled per failure up to @p max_backoff_ms. */
void saga__gc_init(saga__gc *g, uv_loop_t *loop, saga_store *store,
                   const saga__gc_ops *ops, void *owner, uint32_t retry_ms,
                   uint32_t max_backoff_ms, int max_rounds);
/** Something was staged: commit it at the end of this loop turn (not
 * before a failed commit's retry, nor while a batch is in flight: its
 * completion schedules the next). */
void saga__gc_schedule(saga__gc *g);
/** The batch that ops->write() submitted (SAGA__GC_SUBMITTED) is done
 * with @p rc: released or failed as a submitted batch is. */
void saga__gc_done(saga__gc *g, int rc);
/** Commit what is staged now (synchronously, or submit it). */
void saga__gc_flush(saga__gc *g);
/** Stop committing: nothing more is scheduled or submitted. A batch in
 * flight still completes, is released, and then ops->drained runs. */
void saga__gc_stop(saga__gc *g);
/** Close the three handles (after saga__gc_stop), each with @p cb and
 * handle->data = @p data. @return the number of handles closed. */
int saga__gc_close(saga__gc *g, uv_close_cb cb, void *data);

#endif /* SAGA_GCOMMIT_H */

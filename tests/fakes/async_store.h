/*
 * async_store.h — a store that commits asynchronously (store version 4:
 * attach + submit_batch), for the engine's asynchronous group commit.
 *
 * It wraps any store (usually the memory store): every slot is forwarded,
 * and submit_batch copies the batch, queues it, and completes it later on
 * the loop: on the next loop turn, or when the test says (hold). A
 * completion writes the batch to the inner store in one transaction, or
 * fails it without writing anything (fail_next). It counts what the engine
 * did, including writes through the synchronous slots while a batch was
 * queued (which the contract does not allow for a batch's writes).
 *
 *   saga_store *st; async_store *as;
 *   async_store_new(&st, inner, &as);   // st owns inner
 *   async_store_hold(as, 1);            // batches wait ...
 *   async_store_complete(as, SAGA_OK);  // ... until this
 */
#ifndef SAGA_TESTS_ASYNC_STORE_H
#define SAGA_TESTS_ASYNC_STORE_H

#include <saga/saga.h>
#include <stddef.h>
#include <stdint.h>

typedef struct async_store async_store;

typedef struct async_store_stats {
    uint64_t submitted;             /* submit_batch calls accepted */
    uint64_t refused;               /* submit_batch calls refused at once */
    uint64_t committed;             /* batches completed OK */
    uint64_t failed;                /* batches completed with an error */
    uint64_t max_queued;            /* most batches in flight at once */
    uint64_t sync_writes_in_flight; /* begin() while a batch was queued */
    uint64_t sagas_written;         /* saga records in committed batches */
    int attached;
} async_store_stats;

/** Wrap @p inner (taken on SAGA_OK; it must have write_batch, store
 * version 3 or later: SAGA_EINVAL otherwise). @p handle may be NULL. */
int async_store_new(saga_store **out, saga_store *inner, async_store **handle);
/** While @p on, queued batches wait for async_store_complete(). */
void async_store_hold(async_store *as, int on);
/** Complete the oldest queued batch: @p rc SAGA_OK writes it (the result
 * of the write is reported), anything else fails it with nothing written.
 * @return 1 if a batch was completed, 0 if none was queued. */
int async_store_complete(async_store *as, int rc);
/** The next @p n completions fail (SAGA_ESTORE, nothing written). */
void async_store_fail_next(async_store *as, unsigned n);
/** The next @p n submit_batch calls are refused at once (SAGA_ESTORE). */
void async_store_refuse_next(async_store *as, unsigned n);
/** Batches submitted and not completed. */
size_t async_store_queued(const async_store *as);
/** Number of saga records in the oldest queued batch (0 if none). */
size_t async_store_head_sagas(const async_store *as);
void async_store_stats_get(const async_store *as, async_store_stats *out);
saga_store *async_store_inner(async_store *as);

#endif /* SAGA_TESTS_ASYNC_STORE_H */

/*
 * fault_store.h — a store wrapper for fault-injection tests.
 *
 * fault_store_new() wraps any store: every slot is forwarded to the inner
 * store and counted. A test can make the Nth next call of a slot fail, or
 * every call of a slot until cleared; an injected failure returns
 * SAGA_ESTORE with errmsg() "injected I/O error (<slot>)" and does not
 * reach the inner store, except for commit, where the inner transaction is
 * rolled back so that nothing of the batch remains (the store contract).
 *
 *   saga_store *st; fault_store *fs;
 *   fault_store_new(&st, inner, &fs);    // st now owns inner
 *   fault_store_fail_nth(fs, FAULT_COMMIT, 2);  // the 2nd commit from now
 *   fault_store_fail_always(fs, FAULT_COMMIT, 1);
 *   fault_store_clear(fs);
 *   fault_store_calls(fs, FAULT_SAGA_PUT);
 */
#ifndef SAGA_TESTS_FAULT_STORE_H
#define SAGA_TESTS_FAULT_STORE_H

#include <saga/saga.h>

typedef enum fault_slot {
    FAULT_BEGIN,
    FAULT_COMMIT,
    FAULT_ROLLBACK,
    FAULT_SAGA_PUT,
    FAULT_SAGA_GET,
    FAULT_SAGA_SCAN,
    FAULT_JOURNAL_APPEND,
    FAULT_JOURNAL_SCAN,
    FAULT_IDEM_PUT,
    FAULT_IDEM_GET,
    FAULT_PURGE,
    FAULT_OUTBOX_PUT,
    FAULT_OUTBOX_SCAN,
    FAULT_OUTBOX_DONE,
    FAULT_INBOX_CLAIM,
    FAULT_INBOX_REPLY,
    FAULT_KV_GET,
    FAULT_KV_PUT,
    FAULT__COUNT,
    FAULT_ALL = FAULT__COUNT /* fault_store_fail_always(): every slot */
} fault_slot;

typedef struct fault_store fault_store;

/**
 * Wrap @p inner. On SAGA_OK *out owns @p inner (closing *out closes it)
 * and @p handle (may be NULL) gets the control handle, valid until *out
 * is closed. @return SAGA_OK, SAGA_EINVAL or SAGA_ENOMEM.
 */
int fault_store_new(saga_store **out, saga_store *inner, fault_store **handle);

/** Fail the @p n-th call of @p slot counted from now (1 = the next). */
void fault_store_fail_nth(fault_store *fs, fault_slot slot, uint64_t n);
/** Fail every call of @p slot (or of every slot: FAULT_ALL) while @p on. */
void fault_store_fail_always(fault_store *fs, fault_slot slot, int on);
/** Drop every pending and permanent fault (counters are kept). */
void fault_store_clear(fault_store *fs);
/** Calls of @p slot so far, failed ones included. */
uint64_t fault_store_calls(const fault_store *fs, fault_slot slot);
/** Failures injected so far, over all slots. */
uint64_t fault_store_injected(const fault_store *fs);
/** The wrapped store (still owned by the wrapper). */
saga_store *fault_store_inner(fault_store *fs);
/** "commit", "saga_put", ... */
const char *fault_slot_name(fault_slot slot);

#endif /* SAGA_TESTS_FAULT_STORE_H */

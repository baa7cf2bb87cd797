/*
 * store.h — the store plug-in interface, and the built-in stores.
 *
 * The vtable below is the plug-in ABI. Like libgit2's git2/sys headers it is
 * stable only through a minor release: slots are appended under a
 * "version N" comment, and the engine calls a version-N slot only when
 * store->version >= N and the slot is not NULL.
 *
 * Threading: the engine calls every slot on its loop thread, one call at a
 * time. Slots may block (a SQLite fsync) and never call back into the
 * engine. Records handed to a callback are borrowed for that call only.
 */
#ifndef SAGA_STORE_H
#define SAGA_STORE_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

/* Flags in saga_record.flags. */
#define SAGA_REC_INFLIGHT 0x01u /* current attempt sent/invoked, awaiting */
#define SAGA_REC_MAYBE 0x02u    /* current step's action may have applied */
#define SAGA_REC_PIVOTED 0x04u  /* the pivot step completed */
#define SAGA_REC_BACKWARD 0x08u /* compensating (kept when FAILED) */

/** One saga instance as a store keeps it. Strings are NUL-terminated. */
typedef struct saga_record {
    const char *id;
    const char *def_name;
    uint32_t def_version;
    saga_state state;
    int32_t step;     /* the step running forward, or being compensated */
    uint32_t attempt; /* attempts started at that step in this direction */
    uint32_t flags;   /* SAGA_REC_* */
    int64_t created_ms;
    int64_t updated_ms;
    int64_t due_ms;       /* step timer: timeout or retry time; 0 = none */
    int64_t deadline_ms;  /* saga deadline; 0 = none */
    const char *idem_key; /* NULL if none */
    const char *error;    /* last error text; NULL if none */
    const void *data;     /* msgpack map */
    size_t data_len;
} saga_record;

/** What a journal entry records (its kind). "Event" elsewhere in the API
 * means a domain event (participant.h). Since: 0.1 (named so since 0.2). */
typedef enum saga_journal_kind {
    SAGA_JOURNAL_STARTED = 1,      /* saga created */
    SAGA_JOURNAL_STEP_OK = 2,      /* an action attempt reported OK */
    SAGA_JOURNAL_STEP_FAIL = 3,    /* ... reported FAIL */
    SAGA_JOURNAL_STEP_RETRY = 4,   /* ... reported RETRY */
    SAGA_JOURNAL_STEP_TIMEOUT = 5, /* ... timed out (it may have applied) */
    SAGA_JOURNAL_COMP_OK = 6,      /* a compensation attempt reported OK */
    SAGA_JOURNAL_COMP_FAIL = 7,    /* ... reported FAIL or RETRY (retried) */
    SAGA_JOURNAL_COMP_TIMEOUT = 8, /* ... timed out */
    SAGA_JOURNAL_COMPLETED = 9,
    SAGA_JOURNAL_COMPENSATING =
        10, /* error says why: step failed, cancel, ... */
    SAGA_JOURNAL_COMPENSATED = 11,
    SAGA_JOURNAL_FAILED = 12,
    SAGA_JOURNAL_OPERATOR_RETRY = 13,      /* error: "by ACTOR: REASON" */
    SAGA_JOURNAL_OPERATOR_COMPENSATE = 14, /* since 0.2; error as above */
    SAGA_JOURNAL_OPERATOR_RESOLVE = 15     /* since 0.2; then COMPLETED or
                                       * COMPENSATED */
} saga_journal_kind;

/** "STARTED", "STEP_OK", ... or "UNKNOWN".
 * Ownership: a static string, the library's. Since: 0.1 (as saga_event_name();
 *   renamed in 0.2, docs/api/README.md). */
SAGA_EXTERN const char *saga_journal_kind_name(saga_journal_kind ev);

/** One journal entry. */
typedef struct saga_journal_entry {
    const char *saga_id;
    uint32_t seq; /* 1, 2, ... per saga */
    saga_journal_kind kind;
    int32_t step;       /* -1 for a saga-level event */
    uint32_t attempt;   /* 0 for a saga-level event */
    int64_t started_ms; /* when the attempt started; 0 if none */
    int64_t at_ms;      /* when the event happened */
    const char *error;  /* NULL if none */
} saga_journal_entry;

/** An outgoing message in the outbox (or any message: see transport.h). */
typedef struct saga_message {
    const char *id; /* unique message id */
    const char *topic;
    const char *key; /* ordering key, usually the saga id; may be NULL */
    const void *payload;
    size_t len;
    int64_t created_ms;
} saga_message;

/* Iteration callbacks: return 0 to go on, non-zero to stop. */
typedef int (*saga_record_cb)(const saga_record *rec, void *arg);
typedef int (*saga_journal_cb)(const saga_journal_entry *e, void *arg);
typedef int (*saga_message_cb)(const saga_message *m, void *arg);
/** A blob handed over by a store: borrowed for the call. */
typedef void (*saga_blob_cb)(const void *buf, size_t len, void *arg);
/** A key-value entry handed over by kv_scan: borrowed for the call; return
 * 0 to go on, non-zero to stop. */
typedef int (*saga_kv_cb)(const char *key, const void *val, size_t len,
                          void *arg);

/** An idempotency key binding, as written by a batch. */
typedef struct saga_idem_entry {
    const char *key;
    const char *saga_id;
    int64_t created_ms;
} saga_idem_entry;

/* ---- version 13 (since 0.2): key-value writes in a batch ---------------- */
/* saga_kv_write.flags: write only if the key holds saga_kv_write.expect now
 * (expect NULL: only if the key is absent); otherwise the whole batch
 * fails with SAGA_EBUSY and nothing of it remains. */
#define SAGA_KV_EXPECT 0x01u

/** One key-value write of a batch (saga_batch_writes.kv, store version 13):
 * kv_put(key, val, len), or kv_del(key) when @p val is NULL. Since: 0.2. */
typedef struct saga_kv_write {
    const char *key;
    const void *val; /* NULL: delete the key */
    size_t len;
    unsigned int flags; /* SAGA_KV_* */
    const void *expect; /* with SAGA_KV_EXPECT; NULL: the key is absent */
    size_t expect_len;
} saga_kv_write;
/* ---- end of version 13 ------------------------------------------------- */

/** Everything one engine batch writes, in the order the slots would write
 * it (see write_batch). */
typedef struct saga_batch_writes {
    const saga_record *sagas; /* saga_put of each, with put_flags[i] */
    const unsigned int *put_flags;
    size_t nsagas;
    const saga_idem_entry *idem; /* idem_put of each */
    size_t nidem;
    const saga_message *outbox; /* outbox_put of each */
    size_t noutbox;
    const char *const *done_ids; /* outbox_done of each */
    size_t ndone;
    const saga_journal_entry *journal; /* journal_append of each */
    size_t njournal;
    /* ---- version 13 (since 0.2): read only by a store whose version is
     * 13 or more; the engine sets them only for such a store (an older one
     * is never handed a batch with key-value writes). Written last, in
     * order. */
    const saga_kv_write *kv;
    size_t nkv;
    /* ---- end of version 13 */
} saga_batch_writes;

/* Flags for saga_put. */
#define SAGA_PUT_INSERT 0x01u /* a new saga: insert (SAGA_EDUP if it exists) */
#define SAGA_PUT_DATA 0x02u   /* the data changed: write it too */

#define SAGA_STORE_VERSION 13

struct uv_loop_s;

/** Completion of submit_batch(): @p rc as write_batch() would return. */
typedef void (*saga_store_done_cb)(void *arg, int rc);
/** Completion of own_renew_submit(): @p rc as own_renew() would return,
 * @p lease_ms the lease length (valid on SAGA_OK). Since: 0.2. */
typedef void (*saga_own_renewed_cb)(void *arg, int rc, uint32_t lease_ms);
/** Completion of own_claim_submit(): @p rc as own_claim() would return,
 * and on SAGA_OK the @p n sagas claimed (borrowed for the call: copy what
 * you keep). Since: 0.2. */
typedef void (*saga_own_claimed_cb)(void *arg, int rc, const saga_record *recs,
                                    size_t n);
/** Completion of kv_get_submit(): @p rc SAGA_OK (the value is @p val,
 * @p len bytes, borrowed for the call), SAGA_ENOTFOUND (no such key) or
 * SAGA_ESTORE. Since: 0.2. */
typedef void (*saga_kv_got_cb)(void *arg, int rc, const void *val, size_t len);
/** Completion of own_check_submit(): @p rc as own_check() would return
 * (also SAGA_ESTORE when the answer was lost), and on SAGA_OK or
 * SAGA_EFENCED @p lost[i] for each of the @p n ids asked (borrowed for the
 * call; NULL on other errors). Since: 0.2. */
typedef void (*saga_own_checked_cb)(void *arg, int rc,
                                    const unsigned char *lost, size_t n);
/** Completion of idem_get_submit(): @p rc SAGA_OK (@p saga_id is the
 * key's saga, borrowed for the call), SAGA_ENOTFOUND or SAGA_ESTORE.
 * Since: 0.2. */
typedef void (*saga_idem_got_cb)(void *arg, int rc, const char *saga_id);
/** Completion of saga_get_submit(): @p rc SAGA_OK (@p rec borrowed for the
 * call), SAGA_ENOTFOUND or SAGA_ESTORE. Since: 0.2. */
typedef void (*saga_record_got_cb)(void *arg, int rc, const saga_record *rec);
/** Completion of purge_submit() (version 12): @p rc as purge() would
 * return, and on SAGA_OK the number of sagas deleted. Since: 0.2. */
typedef void (*saga_purged_cb)(void *arg, int rc, uint64_t purged);
/** Completion of journal_scan_submit() (version 13): @p rc SAGA_OK with
 * the @p n entries @p e in seq order (borrowed for the call), or
 * SAGA_ESTORE. Since: 0.2. */
typedef void (*saga_journal_got_cb)(void *arg, int rc,
                                    const saga_journal_entry *e, size_t n);

/* Version 9 (below): a participant's batch in few round trips. */
/** One received message of a participant batch, for part_read(): the
 * inbox id to claim (NULL: none) and the key-value entry to read (its
 * barrier; NULL: none). Since: 0.2. */
typedef struct saga_part_read {
    const char *claim_id;
    const char *kv_key;
} saga_part_read;
/** part_read()'s answer for request @p i: @p claim_rc as inbox_claim()
 * (SAGA_OK: new, now claimed; SAGA_EDUP: seen before, @p reply the
 * recorded reply; SAGA_OK also when claim_id was NULL), @p kv_rc as
 * kv_get() (SAGA_OK: @p val; SAGA_ENOTFOUND, also when kv_key was NULL).
 * Everything is borrowed for the call. Since: 0.2. */
typedef void (*saga_part_read_cb)(void *arg, size_t i, int claim_rc,
                                  const void *reply, size_t reply_len,
                                  int kv_rc, const void *val, size_t val_len);
/** What one saga_part_write does (the slot it stands for). */
typedef enum saga_part_op {
    SAGA_PART_KV_PUT = 1,  /* kv_put(key, val, len) */
    SAGA_PART_KV_DEL,      /* kv_del(key) */
    SAGA_PART_INBOX_REPLY, /* inbox_reply(key, val, len); a missing claim
                              is not an error */
    SAGA_PART_OUTBOX_PUT,  /* outbox_put(msg); an existing id is not an
                              error (the row is kept) */
    SAGA_PART_OUTBOX_DONE  /* outbox_done(key) */
} saga_part_op;
/** One write of a participant batch, for part_commit(). Since: 0.2. */
typedef struct saga_part_write {
    saga_part_op op;
    const char *key; /* the key, message id or outbox id */
    const void *val; /* KV_PUT, INBOX_REPLY */
    size_t len;
    const saga_message *msg; /* OUTBOX_PUT */
} saga_part_write;

/* Version 10 (below): the engine's start-up reads on the loop. */
/** Completion of outbox_scan_submit(): @p rc SAGA_OK (then @p msgs holds
 * @p n messages, oldest first, borrowed for the call: copy what you
 * keep), SAGA_EFENCED (a store with a lease whose lease is not live:
 * nothing taken) or SAGA_ESTORE (also when the answer was lost).
 * Since: 0.2. */
typedef void (*saga_outbox_got_cb)(void *arg, int rc, const saga_message *msgs,
                                   size_t n);

/**
 * The store vtable. A store embeds it first in its own state:
 * `struct my_store { saga_store base; ... };`
 * Unless a comment says otherwise every slot is required and returns
 * SAGA_OK, SAGA_ESTORE (with errmsg() set) or SAGA_ENOMEM.
 */
struct saga_store {
    unsigned int version; /* SAGA_STORE_VERSION */
    /* version 1 */
    /** Open a transaction. All writes of one engine batch go in one. */
    int (*begin)(saga_store *self);
    /** Make the transaction durable. On failure the transaction is rolled
     * back by the store and nothing of it remains. */
    int (*commit)(saga_store *self);
    /** Drop the open transaction. */
    int (*rollback)(saga_store *self);
    /** Insert or update a saga (SAGA_PUT_* flags). An update without
     * SAGA_PUT_DATA keeps the stored data and idem_key.
     * @return also SAGA_EDUP (insert of an existing id), SAGA_ENOTFOUND
     * (update of a missing id). */
    int (*saga_put)(saga_store *self, const saga_record *rec,
                    unsigned int flags);
    /** Read one saga. @return also SAGA_ENOTFOUND. cb runs once on OK. */
    int (*saga_get)(saga_store *self, const char *id, saga_record_cb cb,
                    void *arg);
    /** Visit sagas whose state bit is in @p state_mask, oldest first. */
    int (*saga_scan)(saga_store *self, unsigned int state_mask,
                     saga_record_cb cb, void *arg);
    /** Append a journal entry. @return also SAGA_EDUP (same saga, seq). */
    int (*journal_append)(saga_store *self, const saga_journal_entry *e);
    /** Visit a saga's journal in seq order (nothing for an unknown id). */
    int (*journal_scan)(saga_store *self, const char *saga_id,
                        saga_journal_cb cb, void *arg);
    /** Bind an idempotency key to a saga id. @return also SAGA_EDUP if the
     * key is bound already (to any saga). */
    int (*idem_put)(saga_store *self, const char *key, const char *saga_id,
                    int64_t created_ms);
    /** Look a key up; copies the saga id into @p saga_id_out.
     * @return also SAGA_ENOTFOUND. */
    int (*idem_get)(saga_store *self, const char *key,
                    char saga_id_out[SAGA_ID_SIZE]);
    /** Delete terminal sagas (COMPLETED, COMPENSATED) last updated before
     * @p before_ms, with their journals and idempotency keys, and inbox
     * entries created before it. @p purged_out (may be NULL) gets the
     * number of sagas deleted. Runs inside a transaction. */
    int (*purge)(saga_store *self, int64_t before_ms, uint64_t *purged_out);
    /** Queue a message, in the open transaction. @return also SAGA_EDUP. */
    int (*outbox_put)(saga_store *self, const saga_message *m);
    /** Visit up to @p limit pending messages, oldest first. */
    int (*outbox_scan)(saga_store *self, uint32_t limit, saga_message_cb cb,
                       void *arg);
    /** Remove a published message. Unknown ids are not an error. */
    int (*outbox_done)(saga_store *self, const char *msg_id);
    /** Claim a received message id. @return SAGA_OK if new (now claimed,
     * with an empty reply), SAGA_EDUP if seen before: then @p cb (may be
     * NULL) gets the reply recorded for it. */
    int (*inbox_claim)(saga_store *self, const char *msg_id, int64_t now_ms,
                       saga_blob_cb cb, void *arg);
    /** Record the reply for a claimed message. @return also
     * SAGA_ENOTFOUND. */
    int (*inbox_reply)(saga_store *self, const char *msg_id, const void *reply,
                       size_t len);
    /** A small key-value space for plug-in users (the participant's
     * barrier). @return also SAGA_ENOTFOUND from kv_get. */
    int (*kv_get)(saga_store *self, const char *key, saga_blob_cb cb,
                  void *arg);
    int (*kv_put)(saga_store *self, const char *key, const void *val,
                  size_t len);
    /** Optional: the underlying handle (sqlite3 *, PGconn *) so that a
     * service can write its own tables in the same transaction; NULL if
     * none. */
    void *(*native_handle)(saga_store *self);
    /** Detail of the last failure; never NULL. */
    const char *(*errmsg)(saga_store *self);
    /** Close and free the store, the struct included. */
    void (*close)(saga_store *self);
    /* version 2: optional (NULL if the store has none); the participant
     * needs them for deferred replies, handler isolation and retention. */
    /** Visit the key-value entries whose key starts with @p prefix ("":
     * all), in no particular order. @p cb must not write to the store.
     * @return SAGA_OK (also when @p cb stopped the scan), SAGA_EINVAL. */
    int (*kv_scan)(saga_store *self, const char *prefix, saga_kv_cb cb,
                   void *arg);
    /** Delete a key-value entry; an unknown key is not an error. */
    int (*kv_del)(saga_store *self, const char *key);
    /** Mark a savepoint in the open transaction (one level: a second
     * savepoint before the first is released or rolled back is an error,
     * SAGA_ESTORE, as is one outside a transaction). */
    int (*savepoint)(saga_store *self);
    /** Undo every write since the savepoint and drop it; the transaction
     * stays open. */
    int (*savepoint_rollback)(saga_store *self);
    /** Drop the savepoint, keeping its writes in the transaction. */
    int (*savepoint_release)(saga_store *self);
    /* version 3: optional (NULL: the engine calls begin, the slots and
     * commit itself). */
    /**
     * Write a whole batch in one transaction and commit it, in as few
     * round trips as the store can (a network store pipelines it). The
     * result is that of begin, then saga_put/idem_put/outbox_put/
     * outbox_done/journal_append for each entry in that order, then commit:
     * SAGA_OK once durable; on any failure nothing of the batch remains
     * (SAGA_EDUP: a saga id, key, message id or journal entry existed;
     * SAGA_ENOTFOUND: an update named a missing saga; SAGA_ESTORE).
     * Called outside a transaction.
     */
    int (*write_batch)(saga_store *self, const saga_batch_writes *w);
    /* version 4: optional asynchronous commit (NULL: the engine calls
     * write_batch, or begin/slots/commit, on its loop and waits). */
    /**
     * Bind the store to the loop of the engine that takes it. The engine
     * calls it once, before any other slot, when the slot is set; a store
     * with submit_batch needs it (it watches its sockets and timers there).
     * @return SAGA_OK, SAGA_ESTORE, SAGA_ENOMEM.
     */
    int (*attach)(saga_store *self, struct uv_loop_s *loop);
    /**
     * Start writing a batch, as write_batch would, without blocking: the
     * store copies what it needs of @p w before it returns (the caller may
     * free @p w and everything it points to at once), and later calls
     * @p done on the loop thread, exactly once, with write_batch's result
     * (never from inside submit_batch). Batches commit in the order they
     * were submitted; the engine keeps at most one in flight and stages
     * the next meanwhile. Reading slots may be called while a batch is in
     * flight and see only committed data. close is never called while a
     * batch is in flight.
     * @return SAGA_OK (submitted: @p done will run), or the error with
     * which the batch was refused at once (then @p done never runs).
     */
    int (*submit_batch)(saga_store *self, const saga_batch_writes *w,
                        saga_store_done_cb done, void *arg);
    /* version 5: optional multi-engine ownership (leases, fencing,
     * claiming), for a store that several engines share (the PostgreSQL
     * store with a lease). NULL: the store has one engine, which owns
     * every saga in it (SQLite, memory). A store sets all four or none. */
    /**
     * Take or renew this store's lease. The store holds an owner id and an
     * epoch (the fencing token); while its lease is live, every saga it
     * inserts or claims is owned by (owner, epoch), and every later write
     * of such a saga (saga_put, write_batch, submit_batch) succeeds only
     * if the saga is still owned by (owner, epoch), and a batch only while
     * the lease is live;
     * otherwise the write fails with SAGA_EFENCED and nothing of its
     * transaction remains. A FAILED saga is nobody's: any live owner may
     * write it (an operator's action) and owns it from then on. Journal
     * entries record the (owner, epoch) that wrote them.
     * @param fresh 0: extend the current lease; 1: start a new epoch (at
     *   start, or after the engine gave its lease up as lost: every saga of
     *   the old epoch becomes claimable, by this store too).
     * @param lease_ms_out receives the lease length in ms: the engine
     *   renews well within it, and acts on its sagas only while
     *   (the time the renewal was sent + *lease_ms_out) has not passed.
     * @return SAGA_OK; SAGA_EFENCED (@p fresh 0: the lease had expired
     *   and the epoch is dead; call again with @p fresh 1); SAGA_ESTORE.
     * Called outside a transaction, never while a batch is in flight.
     */
    int (*own_renew)(saga_store *self, int fresh, uint32_t *lease_ms_out);
    /**
     * Claim up to @p limit active sagas (RUNNING, COMPENSATING) whose
     * owner's lease has expired (or that have no owner), earliest due
     * first, skipping rows another claimer holds (FOR UPDATE SKIP LOCKED),
     * give them this store's (owner, epoch) and commit; then visit each
     * claimed saga. @p cb must not write to the store.
     * @param claimed_out (may be NULL) the number claimed.
     * @return SAGA_OK; SAGA_EFENCED (this store's own lease is not live:
     *   nothing claimed); SAGA_ESTORE. Called outside a transaction.
     */
    int (*own_claim)(saga_store *self, uint32_t limit, saga_record_cb cb,
                     void *arg, size_t *claimed_out);
    /**
     * After a write failed with SAGA_EFENCED: which of the @p n sagas
     * @p ids are no longer this store's. Sets @p lost[i] to 1 for each
     * such saga (owned by another epoch, or missing), 0 for the others.
     * @return SAGA_OK; SAGA_EFENCED (the lease itself is lost: every saga
     *   is; @p lost is all 1); SAGA_ESTORE.
     */
    int (*own_check)(saga_store *self, const char *const *ids, size_t n,
                     unsigned char *lost);
    /**
     * Give the lease up at a clean close: the sagas of this epoch become
     * claimable at once instead of when the lease runs out. Writes fail
     * with SAGA_EFENCED after it. @return SAGA_OK, SAGA_ESTORE.
     */
    int (*own_release)(saga_store *self);
    /* version 6: optional, since 0.2: the ownership round trips on the
     * loop, without blocking it (NULL: the engine calls own_renew and
     * own_claim, which wait for the server). A store sets both or none,
     * and only with the version-5 slots and submit_batch. */
    /**
     * own_renew() without blocking: the request goes out at once, beside
     * the batches in flight (in submission order with them), and @p done
     * runs later on the loop thread, exactly once, never from inside this
     * call: with own_renew's result, also SAGA_ESTORE when the answer was
     * lost or the store was closed first. A renewal in flight extends
     * nothing: the engine counts the lease from the time it called this,
     * once SAGA_OK arrives. While a fresh renewal (@p fresh 1) is in
     * flight, submit_batch refuses with SAGA_ESTORE (the batch would carry
     * the old epoch).
     * @return SAGA_OK (submitted: @p done will run), or the refusal
     *   (SAGA_ESTORE, SAGA_ENOMEM; @p done never runs).
     */
    int (*own_renew_submit)(saga_store *self, int fresh,
                            saga_own_renewed_cb done, void *arg);
    /**
     * own_claim() without blocking, as own_renew_submit: @p done gets the
     * claimed sagas. SAGA_ESTORE in @p done may mean that the claim
     * committed and its answer was lost: those sagas are then owned by
     * this epoch and known to nobody, so the engine gives its lease up
     * (a new epoch makes them claimable again).
     * @return SAGA_OK (submitted), or the refusal (@p done never runs).
     */
    int (*own_claim_submit)(saga_store *self, uint32_t limit,
                            saga_own_claimed_cb done, void *arg);
    /* version 7: optional, since 0.2 */
    /**
     * kv_get() without blocking, outside a transaction: the read goes out
     * at once (beside the batches in flight) and @p done runs later on the
     * loop thread, exactly once, never from inside this call, also with
     * SAGA_ESTORE when the answer was lost or the store was closed first.
     * The engine polls its control queue with it (NULL: with kv_get, which
     * waits for the server).
     * @return SAGA_OK (submitted: @p done will run), or the refusal
     *   (SAGA_ESTORE, SAGA_EINVAL, SAGA_ENOMEM; @p done never runs).
     */
    int (*kv_get_submit)(saga_store *self, const char *key, saga_kv_got_cb done,
                         void *arg);
    /* version 8: optional, since 0.2: the engine's last round trips on the
     * loop (NULL: the engine calls the synchronous slot, which waits for
     * the server). Each goes out at once, beside the batches in flight (in
     * submission order with them, outside any transaction), and its done
     * callback runs later on the loop thread, exactly once, never from
     * inside the call, also with SAGA_ESTORE when the answer was lost or
     * the store was closed first. Each returns SAGA_OK (submitted: done
     * will run) or the refusal (SAGA_ESTORE, SAGA_EINVAL, SAGA_ENOMEM;
     * done never runs). The ownership ones need the version-5 slots. */
    /** own_check() without blocking; the store copies @p ids before it
     * returns. */
    int (*own_check_submit)(saga_store *self, const char *const *ids, size_t n,
                            saga_own_checked_cb done, void *arg);
    /** own_release() without blocking: @p done gets its result. Writes
     * submitted after it are fenced. */
    int (*own_release_submit)(saga_store *self, saga_store_done_cb done,
                              void *arg);
    /** idem_get() without blocking (committed data only). */
    int (*idem_get_submit)(saga_store *self, const char *key,
                           saga_idem_got_cb done, void *arg);
    /** saga_get() without blocking (committed data only). */
    int (*saga_get_submit)(saga_store *self, const char *id,
                           saga_record_got_cb done, void *arg);
    /* version 9: optional, since 0.2: a participant's batch in few round
     * trips (NULL: the participant calls inbox_claim, kv_get and the
     * writing slots one by one, and commit). A store sets both or none. */
    /**
     * Inside the open transaction, as inbox_claim(r[i].claim_id, now_ms)
     * then kv_get(r[i].kv_key) for each i in order would (a claim sees
     * the claims before it), in as few round trips as the store can (one
     * on PostgreSQL, pipelined); then @p cb once per request, in order.
     * @return SAGA_OK; SAGA_EINVAL (NULL @p r with @p n > 0, or NULL
     *   @p cb); SAGA_ESTORE (the transaction is lost: roll it back);
     *   SAGA_ENOMEM.
     */
    int (*part_read)(saga_store *self, int64_t now_ms, const saga_part_read *r,
                     size_t n, saga_part_read_cb cb, void *arg);
    /**
     * Apply the @p n writes @p w in order inside the open transaction, as
     * the slots their op names would, and commit it, in as few round
     * trips as the store can (one on PostgreSQL: the writes and the
     * COMMIT pipelined). A write's failure is seen only here.
     * @return SAGA_OK once durable; SAGA_EINVAL (a malformed write:
     *   nothing is sent, the transaction stays open); SAGA_ESTORE (nothing
     *   of the transaction remains); SAGA_ENOMEM.
     */
    int (*part_commit)(saga_store *self, const saga_part_write *w, size_t n);
    /* version 10: optional, since 0.2: the relay's outbox scan on the loop
     * (NULL: the engine calls outbox_scan at start, which waits for the
     * server). Same rules as the version-8 slots: the request goes out at
     * once, beside the batches in flight (in submission order with them,
     * outside any transaction); done runs later on the loop thread,
     * exactly once, never from inside the call, also with SAGA_ESTORE when
     * the answer was lost or the store was closed first. */
    /**
     * The pending outbox messages this store's engine is to publish, up
     * to @p limit (0: no limit), oldest first, handed to @p done.
     * A store without the version-5 slots (one engine) hands every pending
     * message, as outbox_scan. A store with them (several engines share
     * it) gives each message an owner: the messages its batches write are
     * its epoch's from their commit (the engine publishes them then), and
     * only the owner's batches delete them (outbox_done of another's
     * message changes nothing). This call takes over, in one statement,
     * and hands the messages whose writer's lease is not live (expired,
     * released, a dead epoch, or no owner) and whose saga (the message's
     * key) this store's epoch owns or is not active, and not those it
     * holds already: so each pending message is handed to one live engine
     * at a time. Taken-over messages whose answer is lost (SAGA_ESTORE)
     * are this epoch's and known to nobody: the engine gives its lease up
     * (a new epoch makes them takeable again).
     * @return SAGA_OK (submitted: @p done will run), or the refusal
     *   (SAGA_ESTORE, SAGA_EFENCED: no lease taken yet, SAGA_EINVAL: NULL
     *   @p done, SAGA_ENOMEM; @p done never runs).
     */
    int (*outbox_scan_submit)(saga_store *self, uint32_t limit,
                              saga_outbox_got_cb done, void *arg);
    /* version 11: optional, since 0.2: a participant's commit on the
     * loop, and the application's own connection. */
    /**
     * part_commit() without waiting, on a store attached to a loop
     * (attach). The writes and the COMMIT go out at once; the open
     * transaction is the store's from then on, and @p done runs later on
     * the loop thread, exactly once, never from inside this call:
     * SAGA_OK once durable, also when the answer was lost and reading
     * back shows that the commit happened; SAGA_ESTORE when it did not
     * or cannot be known. The store copies what it needs of @p w before
     * it returns. While it is in flight the caller begins no transaction
     * on the store. NULL: the participant calls part_commit, which waits.
     * A store that sets it sets part_read, part_commit and app_handle too.
     * @return SAGA_OK (submitted: @p done will run); SAGA_EINVAL (a
     *   malformed write: nothing sent, the transaction stays open); or
     *   the refusal (SAGA_ESTORE, SAGA_ENOMEM: nothing of the transaction
     *   remains; @p done never runs).
     */
    int (*part_commit_submit)(saga_store *self, const saga_part_write *w,
                              size_t n, saga_store_done_cb done, void *arg);
    /**
     * The native handle for the application's own statements outside the
     * store's transactions: a connection of its own (PostgreSQL: a
     * PGconn * with the schema's search path), opened on the first call,
     * which none of the store's slots uses, so that the application's
     * transactions never mix with the store's. Before it returns, the
     * batches in flight on the main connection are answered (it waits for
     * them; their done callbacks run later, from the loop), so that the
     * application sees what they committed: a participant's handlers
     * wrote it. A broken one is opened
     * again on the next call (blocking, as a synchronous slot reconnects;
     * not while the store's own reconnection on the loop is under way or
     * backing off: the broken one is returned, and its statements fail).
     * NULL slot: native_handle serves both. saga_participant_store_handle()
     * gives it outside handlers.
     * @return the handle, or NULL (never connected, and cannot connect
     *   now).
     */
    void *(*app_handle)(saga_store *self);
    /* version 12: optional, since 0.2: the housekeeping purge on the
     * loop. */
    /**
     * purge() without waiting, in a transaction of its own, on a store
     * attached to a loop: the statements go out at once, beside the
     * batches in flight (in submission order with them), and @p done runs
     * later on the loop thread, exactly once, never from inside this call,
     * with purge()'s result and the number of sagas deleted (SAGA_ESTORE
     * also when the answer was lost, the purge may then have committed, or
     * the store was closed first). NULL: the engine calls begin, purge
     * and commit, which wait for the server.
     * @return SAGA_OK (submitted: @p done will run), or the refusal
     *   (SAGA_ESTORE, SAGA_EINVAL, SAGA_ENOMEM; @p done never runs).
     */
    int (*purge_submit)(saga_store *self, int64_t before_ms,
                        saga_purged_cb done, void *arg);
    /* ---- version 13, since 0.2 --------------------------------------- */
    /* A store of version 13 or more that has write_batch or submit_batch
     * writes saga_batch_writes.kv (after the journal, in order), with
     * SAGA_KV_EXPECT checked in the batch's transaction. With submit_batch,
     * a batch of key-value writes only may be submitted while another
     * batch is in flight (they commit in submission order): the engine
     * sends the definitions' shapes and its control queue's writes so. */
    /**
     * journal_scan() without blocking (committed data only), as the
     * version-8 slots: @p done gets every entry of @p saga_id in seq
     * order (none, n = 0, for a saga without entries or an unknown one),
     * borrowed for the call; SAGA_ESTORE when the answer was lost or the
     * store was closed first. NULL: saga_get_async() is refused with
     * SAGA_EINVAL on this store (saga_get() answers at once).
     * @return SAGA_OK (submitted: @p done will run), or the refusal
     *   (SAGA_ESTORE, SAGA_EINVAL, SAGA_ENOMEM; @p done never runs).
     */
    int (*journal_scan_submit)(saga_store *self, const char *saga_id,
                               saga_journal_got_cb done, void *arg);
    /* ---- end of version 13 ------------------------------------------- */
};

#define SAGA_STORE_INIT SAGA_INIT_VERSION(SAGA_STORE_VERSION)
/** Zero @p s and set its version. @return SAGA_OK or SAGA_EVERSION.
 * Ownership: @p s is the caller's. Since: 0.1. */
SAGA_EXTERN int saga_store_init(saga_store *s, unsigned int version);
/** Close and free a store not handed to an engine; NULL is a no-op.
 * Ownership: @p s and what it holds are freed (its close slot runs).
 *   Since: 0.1. */
SAGA_EXTERN void saga_store_free(saga_store *s);

/* ------------------------------------------------------------------------ */
/* Built-in stores                                                          */

/**
 * An in-memory store (tests, ephemeral use). Transactions are real:
 * rollback undoes every write since begin.
 * @return SAGA_OK or SAGA_ENOMEM. Ownership: the caller's until an engine
 * takes it. Since: 0.1.
 */
SAGA_EXTERN int saga_store_memory_new(saga_store **out);

#define SAGA_SQLITE_OPTIONS_VERSION 1
#define SAGA_SQLITE_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_SQLITE_OPTIONS_VERSION)

/** SQLite options; zero selects each default. */
typedef struct saga_sqlite_options {
    unsigned int version;
    /** 0 = FULL (default), 1 = NORMAL, 2 = OFF. */
    int synchronous;
    /** Busy timeout in ms; 0 = 5000. */
    int busy_timeout_ms;
    /** Optional SQLite VFS name (tests inject faults through a shim). */
    const char *vfs;
} saga_sqlite_options;

/** Zero @p opts and set its version: every field then selects its default.
 * @return SAGA_OK, SAGA_EINVAL (@p opts NULL), SAGA_EVERSION (0 or newer than
 * this library). Ownership: @p opts is the caller's. Since: 0.1. */
SAGA_EXTERN int saga_sqlite_options_init(saga_sqlite_options *opts,
                                         unsigned int version);

/**
 * A SQLite store on @p path (created if missing), in WAL mode, with a
 * versioned schema migrated on open and cached prepared statements.
 * @param opts NULL for defaults.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ESTORE (cannot open or migrate; a
 * schema newer than this library gives SAGA_EVERSION) or SAGA_ENOMEM.
 * Since: 0.1.
 * Ownership: the caller owns *out (until an engine or participant takes it) and
 *   frees it with saga_store_free(); @p path and @p opts stay the caller's.
 */
SAGA_EXTERN int saga_store_sqlite_open(saga_store **out, const char *path,
                                       const saga_sqlite_options *opts);

/**
 * Open a built-in store named by one string, as a command line names it.
 * @param out receives the store on SAGA_OK, NULL otherwise.
 * @param spec "postgres://..." or "postgresql://..." (the PostgreSQL store,
 *   if this libsaga was built with it; a "schema=NAME" query parameter
 *   picks its schema, "lease_ms=N" and "owner=ID" make it one of several
 *   engines on that schema, see postgres.h), "memory:" (a new in-memory
 *   store),
 *   anything else a SQLite file path (created if missing).
 * @return as the store's own constructor; SAGA_EINVAL for an empty @p spec
 *   or a PostgreSQL URL in a build without that store.
 * Ownership: the caller's until an engine or participant takes it.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_store_open(saga_store **out, const char *spec);

/* Why a constructor failed: saga_open_errmsg() in saga/saga.h. */

SAGA_END_DECL

#endif /* SAGA_STORE_H */

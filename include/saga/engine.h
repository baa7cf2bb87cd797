/*
 * engine.h — the saga engine: start, complete steps, query, cancel, retry.
 *
 * One engine runs on one libuv loop thread; every function here must be
 * called on that thread. Transitions made during one loop turn are written
 * in one store transaction (group commit); nothing that depends on a
 * transition (the next action, a completion callback, an outbox publish) is
 * released before that transaction commits.
 */
#ifndef SAGA_ENGINE_H
#define SAGA_ENGINE_H

#include "saga/saga.h"
#include "saga/store.h"

/* The engine runs on a libuv loop; the header needs only its name, so that
 * it compiles without <uv.h> (which needs POSIX feature macros). */
struct uv_loop_s;

SAGA_BEGIN_DECL

/* Defined in def.h and store.h. Whichever public header a program includes
 * first, saga.h pulls this one in before those bodies are seen, so engine.h
 * names the two structs by tag only. */
struct saga_step_ref;
struct saga_journal_entry;

/** How saga_engine_run() runs the engine's own loop; the values are
 * libuv's uv_run_mode. */
typedef enum saga_run_mode {
    SAGA_RUN_DEFAULT = 0,
    SAGA_RUN_ONCE = 1,
    SAGA_RUN_NOWAIT = 2
} saga_run_mode;

/** The clock: milliseconds since the Unix epoch. */
typedef int64_t (*saga_clock_fn)(void *arg);
/** The random source: 64 uniformly random bits. */
typedef uint64_t (*saga_random_fn)(void *arg);
/* The log sinks saga_log_fn and saga_log_event_fn are in saga/saga.h. */
/** A saga reached COMPLETED, COMPENSATED or FAILED (durably). */
typedef void (*saga_done_cb)(saga_engine *e, const char *saga_id,
                             saga_state state, void *arg);
/** saga_start() is durable (status SAGA_OK) or failed for good. @p existed
 * is 1 when the idempotency key named an existing saga. */
typedef void (*saga_start_cb)(saga_engine *e, int status, const char *saga_id,
                              int existed, void *arg);
/** saga_engine_close() finished; the engine's memory is gone. */
typedef void (*saga_close_cb)(void *arg);

#define SAGA_ENGINE_OPTIONS_VERSION 3
#define SAGA_ENGINE_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_ENGINE_OPTIONS_VERSION)

/** Engine options. Zero (or NULL) in any field selects its default. */
typedef struct saga_engine_options {
    unsigned int version;
    /** The loop to run on; NULL: the engine makes and owns one. */
    struct uv_loop_s *loop;
    /** Time source; default: the loop's clock anchored to the wall clock. */
    saga_clock_fn clock;
    void *clock_arg;
    /** Random source; default: a generator seeded with @c seed. */
    saga_random_fn random;
    void *random_arg;
    /** Seed of the default generator; 0: one drawn from the OS. */
    uint64_t seed;
    /** Log sink; default: stderr. Messages below log_level (0: WARN) are
     * dropped. */
    saga_log_fn log;
    void *log_arg;
    saga_log_level log_level;
    /** Called for every saga that ends (see saga_done_cb). */
    saga_done_cb on_done;
    void *on_done_arg;
    /** Keep terminal sagas and idempotency keys this long; default 24 h. */
    uint64_t retention_ms;
    /** How often the housekeeping pass runs; default 60 s. */
    uint64_t housekeeping_interval_ms;
    /** Largest saga data in bytes; default 1 MiB. */
    size_t max_data_size;
    /** Delay before a failed commit is tried again; default 100 ms
     * (doubling up to 5 s). */
    uint32_t store_retry_ms;
    /** This engine's service name on the transport: replies to its remote
     * steps come to this topic. Default "orchestrator". */
    const char *service;
    /* version 2 */
    /** Structured log sink (saga/trace.h): when set, it receives every
     * event (with attempt and trace id) instead of @c log; log_level still
     * filters. Since: 0.2. */
    saga_log_event_fn log_event;
    void *log_event_arg;
    /* version 3 */
    /** Admission limit: the most sagas this engine runs at once. A saga
     * counts from its saga_start() (staged, not yet committed, included)
     * until its end is committed: saga_engine_counters.active. While that
     * many run, saga_start() of a new saga returns SAGA_EFULL and stages
     * nothing; a start whose idempotency key names a saga known before the
     * call returns (see saga_start()) is still answered. Sagas resumed by
     * recovery, claimed from another engine or brought back by an operator
     * (saga_retry(), the control verbs) are never refused and may exceed
     * the limit: new starts are then refused until fewer than
     * @c max_active run. 0: no limit, the default, since the right number
     * is the application's (about what its services finish within one step
     * timeout: a larger backlog times out and retries, adding work) and an
     * older program does not expect SAGA_EFULL from saga_start().
     * Since: 0.2. */
    size_t max_active;
} saga_engine_options;

/**
 * Zero @p opts and set its version: every field then selects its default.
 * @param opts     caller memory.
 * @param version  SAGA_ENGINE_OPTIONS_VERSION (or an older one).
 * @return SAGA_OK, SAGA_EINVAL (@p opts NULL), SAGA_EVERSION (0 or newer
 *   than this library).
 * Ownership: @p opts is the caller's. Since: 0.1.
 */
SAGA_EXTERN int saga_engine_options_init(saga_engine_options *opts,
                                         unsigned int version);

/**
 * A new engine.
 * @param store the store; NULL for a new in-memory store.
 * @param transport the transport for remote steps; may be NULL.
 * @param opts NULL for defaults.
 * @return SAGA_OK, SAGA_EINVAL (also: a required slot of @p store or
 *   @p transport is NULL; all are required but the store's native_handle
 *   and the transport's route; the log sink, or stderr, names the slot),
 *   SAGA_EVERSION (a plug-in version of 0 or newer than this library
 *   knows), SAGA_ENOMEM.
 * Ownership: on SAGA_OK the engine owns @p store and @p transport; on an
 *   error the caller still does. Since: 0.1.
 */
SAGA_EXTERN int saga_engine_new(saga_engine **out, saga_store *store,
                                saga_transport *transport,
                                const saga_engine_options *opts);

/**
 * Register a definition. Several versions of one name may be registered;
 * saga_start() uses the highest, and recovery finds each saga's own.
 * @return SAGA_OK, SAGA_EINVAL (invalid: see saga_def_errmsg()), SAGA_EDUP
 *   (that name and version is registered), SAGA_EBUSY (after start, or
 *   @p def is registered with an engine already: one definition belongs to
 *   one engine), SAGA_ECLOSED.
 * Ownership: on SAGA_OK the engine owns @p def, which is frozen from then
 *   on (saga_def_add_step() and saga_def_set_deadline() return SAGA_EBUSY).
 * Since: 0.1.
 */
SAGA_EXTERN int saga_engine_register(saga_engine *e, saga_def *def);

/**
 * Recover and start: resume every non-terminal saga in the store, re-arm its
 * timers, start housekeeping and the transport subscriptions.
 * With a store shared by several engines (store interface version 5) the
 * engine takes a lease and claims sagas instead of recovering all; with
 * the version-6 slots (the PostgreSQL store with a lease; since 0.2) that
 * first lease and claim go out on the loop: start returns without waiting
 * for the server, also when it is down (no SAGA_ESTORE then); until the
 * lease is taken the engine acts on nothing and commits nothing: sagas
 * started meanwhile are accepted and wait in memory (their start
 * callbacks run once they commit under the lease), and a close before
 * that drops them. A failed lease request is sent again every 250 ms.
 * @return SAGA_OK, SAGA_EBUSY (started already), SAGA_ESTORE.
 * Ownership: none (no pointers taken). Since: 0.1.
 */
SAGA_EXTERN int saga_engine_start(saga_engine *e);

/** The engine's loop (its own, or the one in the options).
 * Ownership: the loop is the engine's (or the caller's, when given in the
 *   options); do not close it. Since: 0.1. */
SAGA_EXTERN struct uv_loop_s *saga_engine_loop(saga_engine *e);

/** Run the engine's loop: uv_run() with @p mode. Housekeeping does not
 * keep the loop alive, so SAGA_RUN_DEFAULT returns once no saga has a
 * pending step or timer; each call first runs the housekeeping pass if it is
 * due by the engine's clock (so polling with SAGA_RUN_NOWAIT purges too).
 * @return uv_run()'s result, or SAGA_EINVAL.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_engine_run(saga_engine *e, saga_run_mode mode);

/** Commit the staged transitions now, and release what depends on them.
 * @return SAGA_OK; SAGA_ESTORE (they stay staged and are retried);
 *   SAGA_EBUSY (called from an action or callback released by a commit:
 *   that commit writes what was staged once the callback returns).
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_engine_flush(saga_engine *e);

/**
 * Fire every timer that is due by the engine's clock now. An engine on the
 * default clock never needs this; a test with an injected clock calls it
 * after moving the clock forward, so timeouts, retries and deadlines are
 * driven without sleeping. @return SAGA_OK.
 * Ownership: none. Since: 0.1.
 */
SAGA_EXTERN int saga_engine_advance(saga_engine *e);

/** Run the housekeeping pass (retention purge) now. @return SAGA_OK or
 * SAGA_ESTORE.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_engine_housekeep(saga_engine *e);

/**
 * Stop: flush, close the engine's handles, close the transport and the
 * store, then call @p cb (may be NULL) and free the engine. The loop must run
 * for this to finish: the caller's loop, or for an engine on its own loop the
 * next saga_engine_run() (it then returns 0, the engine gone) or
 * saga_engine_free(). A closing engine invokes no more actions; the verbs
 * return SAGA_ECLOSED. Safe from an action or callback. With a store
 * shared by several engines the close gives the lease up; on a store with
 * own_release_submit (store interface version 8, since 0.2) that release
 * goes out on the loop and @p cb waits for its answer, at most 2 s and a
 * quarter of the lease (without an answer the lease runs out by itself).
 * Ownership: @p e is freed when @p cb runs (do not use it after this call);
 *   @p arg stays the caller's. Since: 0.1.
 */
SAGA_EXTERN void saga_engine_close(saga_engine *e, saga_close_cb cb, void *arg);
/** Close and free an engine, running its loop until it is gone; for an
 * engine on its own loop, or when the caller's loop is not running. It also
 * finishes a saga_engine_close() in progress. From an action or callback of
 * the engine it is deferred: the engine closes at once and is freed when
 * control is back in the loop (own loop: when saga_engine_run() returns).
 * NULL is a no-op.
 * Ownership: @p e, its store and its transport are freed. Since: 0.1. */
SAGA_EXTERN void saga_engine_free(saga_engine *e);

/** Detail of the last failure on @p e; "" if none. Borrowed until the next
 * call on @p e.
 * Ownership: the string is the engine's. Since: 0.1. */
SAGA_EXTERN const char *saga_engine_errmsg(saga_engine *e);
/** The seed of the default random source (print it to replay a run).
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN uint64_t saga_engine_seed(saga_engine *e);
/** The engine's clock, in ms since the epoch; 0 for a NULL engine.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int64_t saga_engine_now(saga_engine *e);

/* ------------------------------------------------------------------------ */
/* Sagas                                                                    */

/**
 * Start a saga of definition @p def_name (its highest registered version).
 * @param idem_key NULL, or a key: while the key is retained, a second start
 *   with it returns the first saga's id and starts nothing. That saga is not
 *   purged before @p cb has run (the end of the loop turn); one past its
 *   retention is purged first and the key starts a new saga.
 *   With a store that looks keys up on the loop (store interface version
 *   8 with submit_batch: the PostgreSQL store; since 0.2), a key that is
 *   not in memory (no active saga of this engine has it) is not looked up
 *   before saga_start() returns, so that the call never waits for the
 *   server nor fails while it reconnects: the saga is staged with its key
 *   and the commit decides. If the store holds the key already (an ended
 *   saga's, or another engine's), that saga is dropped before it commits
 *   and @p cb gets the key's saga with existed = 1 (one past its
 *   retention is purged first, and the new saga commits). With such a
 *   store take the id from @p cb: @p id_out may name the dropped saga.
 *   Other stores (SQLite, memory) look the key up before returning.
 * @param data a msgpack map (or NULL / 0 for an empty one); copied.
 * @param id_out receives the saga id (with a key: its saga's id, or with
 *   a store that looks keys up on the loop, the id the new saga gets if
 *   the key is free; see @p idem_key).
 * @param cb NULL, or called once the start is durable, with the saga's id.
 * @return SAGA_OK; SAGA_EINVAL (bad key, data not a map, data larger than
 *   max_data_size); SAGA_ENOTFOUND (no such definition); SAGA_EFULL (a
 *   new saga while saga_engine_options.max_active sagas run: nothing is
 *   staged or recorded, retry later; a key found in memory, or in the
 *   store by a store that looks keys up before returning, is answered
 *   instead; with a store that looks keys up on the loop a key not in
 *   memory is refused like a new saga, and answered once there is room;
 *   since 0.2); SAGA_ECLOSED; SAGA_ESTORE (the key lookup failed; never
 *   with a store that looks keys up on the loop); SAGA_ENOMEM. On an
 *   error @p cb is not called.
 * Ownership: @p def_name, @p idem_key and @p data stay the caller's (the engine
 *   copies them); @p id_out is caller memory. Since: 0.1.
 */
SAGA_EXTERN int saga_start(saga_engine *e, const char *def_name,
                           const char *idem_key, const void *data, size_t len,
                           char id_out[SAGA_ID_SIZE], saga_start_cb cb,
                           void *arg);

/**
 * Report the outcome of the step attempt @p ref (from an action or a
 * compensation). For OK, @p out / @p out_len (a msgpack map, may be NULL)
 * is merged into the saga's data, key by key. @p error (may be NULL) is
 * recorded in the journal for FAIL and RETRY. FAIL from a compensatable
 * step or the pivot starts compensation; FAIL from a retriable step or a
 * compensation is retried like RETRY under its policy, and the saga goes
 * FAILED only when a finite policy is exhausted.
 * @return SAGA_OK; SAGA_ESTALE (that attempt is no longer current: it timed
 *   out, the saga was cancelled, or it was reported already; logged and
 *   ignored); SAGA_ENOTFOUND; SAGA_EINVAL (bad outcome, @p out NULL with a
 *   non-zero @p out_len, output not a map or too large); SAGA_ECLOSED
 *   (after saga_engine_close(): nothing is recorded). A saga not in
 *   memory on a store that reads on the loop (store interface version 8
 *   with submit_batch, the PostgreSQL store; since 0.2) is not read, so
 *   that this never waits for the server: SAGA_ESTALE (ended, another
 *   engine's, or unknown), where other stores tell SAGA_ENOTFOUND apart.
 * Ownership: @p ref, @p out and @p error stay the caller's (the engine copies
 *   what it keeps). Since: 0.1.
 */
SAGA_EXTERN int saga_step_complete(saga_engine *e,
                                   const struct saga_step_ref *ref,
                                   saga_outcome outcome, const void *out,
                                   size_t out_len, const char *error);

/**
 * Force compensation of a RUNNING saga before its pivot. A step in flight
 * counts as one that may have run, and is compensated too.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_EBUSY (not RUNNING, or past the
 *   pivot), SAGA_ECLOSED. A saga not in memory on a store that reads on
 *   the loop (store interface version 8 with submit_batch, the PostgreSQL
 *   store; since 0.2) is not read, so that this never waits for the
 *   server: SAGA_EBUSY (ended, another engine's, or unknown;
 *   saga_get_async() tells which).
 * Ownership: @p saga_id and @p reason stay the caller's (copied). Since: 0.1.
 */
SAGA_EXTERN int saga_cancel(saga_engine *e, const char *saga_id,
                            const char *reason);

/**
 * Resume a FAILED saga where it failed, with a fresh retry budget. A saga
 * not in memory (a FAILED saga has left memory) is read and loaded with
 * the store's synchronous slots: on a store whose reads go out on the
 * loop (the PostgreSQL store) that waits for the server; there use
 * saga_op_async() with SAGA_OP_RETRY (saga/admin.h), which does not.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_EBUSY (not FAILED), SAGA_ECLOSED.
 * Ownership: @p saga_id stays the caller's. Since: 0.1.
 */
SAGA_EXTERN int saga_retry(saga_engine *e, const char *saga_id);

/**
 * Call @p cb once when saga @p saga_id ends (or on a later loop turn if it
 * has ended already).
 * With several engines on one store (a store with a lease, see
 * saga/postgres.h), @p cb runs on the engine where it was registered,
 * whichever engine ends the saga: a saga that moved to another engine
 * (claimed there after this engine's lease lapsed), or that another engine
 * owns when this is called, is followed in the store at every lease tick
 * (a quarter of the lease), and @p cb runs once it ended there, with the
 * state it ended in. The engine-wide saga_engine_options.on_done runs
 * only on the engine that ends the saga. Waiters of a saga still active
 * elsewhere when this engine closes are not called (nor are those of the
 * sagas in memory at close).
 * A saga not in memory on a store that reads on the loop (store interface
 * version 8 with submit_batch, the PostgreSQL store; since 0.2) is not
 * read before this returns: the read goes out on the loop and its answer
 * decides, as above; an unknown id (or, without a lease, a saga active but
 * not loaded, or a failed read) is logged and @p cb never runs.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_ENOMEM, SAGA_EBUSY (active in the
 *   store but not loaded here, with no other engine that may own it: its
 *   definition is missing); SAGA_ESTORE (a store that reads on the loop,
 *   without a lease, refused the read at once: reconnecting).
 * Ownership: @p saga_id stays the caller's; @p arg is passed to @p cb
 *   untouched. Since: 0.1.
 */
SAGA_EXTERN int saga_on_done(saga_engine *e, const char *saga_id,
                             saga_done_cb cb, void *arg);

/* ------------------------------------------------------------------------ */
/* Queries (they read what is committed to the store)                       */

typedef struct saga_info saga_info;

/**
 * A snapshot of one saga and its journal.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_ESTORE, SAGA_ENOMEM.
 * Ownership: free *out with saga_info_free().
 * Since: 0.1.
 */
SAGA_EXTERN int saga_get(saga_engine *e, const char *saga_id, saga_info **out);
/** Completion of saga_get_async(): @p status SAGA_OK with @p info, or
 * SAGA_ENOTFOUND, SAGA_ESTORE (the read failed or its answer was lost),
 * SAGA_ENOMEM with @p info NULL; saga_engine_errmsg() says why.
 * Ownership: @p info is the callee's: free it with saga_info_free().
 * Since: 0.2. */
typedef void (*saga_info_cb)(saga_engine *e, int status, saga_info *info,
                             void *arg);

/**
 * saga_get() without waiting for the store: the saga's record and journal
 * are read on the engine's loop (store interface version 13:
 * saga_get_submit and journal_scan_submit, with submit_batch; the
 * PostgreSQL store), and @p cb runs later on the loop thread, exactly
 * once, never from inside this call, with the snapshot of what was
 * committed when the reads ran (also while the engine closes: the store
 * answers what is in flight, SAGA_ESTORE if it closed first).
 * @return SAGA_OK (@p cb will run); SAGA_EINVAL (a NULL argument, or a
 *   store without those slots: SQLite and in-memory stores read locally,
 *   use saga_get()); SAGA_ECLOSED; SAGA_ESTORE (refused at once: the
 *   store is reconnecting); SAGA_ENOMEM. On an error @p cb never runs.
 * Ownership: @p saga_id stays the caller's; @p arg is passed to @p cb
 *   untouched.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_get_async(saga_engine *e, const char *saga_id,
                               saga_info_cb cb, void *arg);
/** Free a snapshot from saga_get(); NULL is a no-op. Ownership: @p info is
 * freed, with every string and entry borrowed from it. Since: 0.1. */
SAGA_EXTERN void saga_info_free(saga_info *info);
/** The saga's id. Ownership: borrowed from @p info, valid until
 * saga_info_free(). Since: 0.1. */
SAGA_EXTERN const char *saga_info_id(const saga_info *info);
/** The name of the saga's definition. Ownership: borrowed from @p info, valid
 * until saga_info_free(). Since: 0.1. */
SAGA_EXTERN const char *saga_info_def_name(const saga_info *info);
/** The version of the saga's definition. Ownership: none. Since: 0.1. */
SAGA_EXTERN uint32_t saga_info_def_version(const saga_info *info);
/** The saga's state. Ownership: none. Since: 0.1. */
SAGA_EXTERN saga_state saga_info_state(const saga_info *info);
/** The current step index (-1 when none), and its name (NULL when none).
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_info_step(const saga_info *info);
/** The current step's name, or NULL when none. Ownership: borrowed from
 * @p info, valid until saga_info_free(). Since: 0.1. */
SAGA_EXTERN const char *saga_info_step_name(const saga_info *info);
/** The current step's attempt (1 for the first). Ownership: none.
 * Since: 0.1. */
SAGA_EXTERN uint32_t saga_info_attempt(const saga_info *info);
/** The saga's SAGA_REC_* flags (store.h). Ownership: none. Since: 0.1. */
SAGA_EXTERN uint32_t saga_info_flags(const saga_info *info);
/** When the saga started, in ms since the epoch by the engine's clock.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int64_t saga_info_created_ms(const saga_info *info);
/** When the saga last changed, in ms since the epoch by the engine's clock.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int64_t saga_info_updated_ms(const saga_info *info);
/** The idempotency key, or NULL.
 * Ownership: borrowed from @p info, valid until saga_info_free().
 *   Since: 0.1. */
SAGA_EXTERN const char *saga_info_idem_key(const saga_info *info);
/** The last error, or NULL.
 * Ownership: borrowed from @p info, valid until saga_info_free().
 *   Since: 0.1. */
SAGA_EXTERN const char *saga_info_error(const saga_info *info);
/** The saga data (a msgpack map), borrowed from @p info.
 * Ownership: valid until saga_info_free(); @p len is caller memory.
 *   Since: 0.1. */
SAGA_EXTERN const void *saga_info_data(const saga_info *info, size_t *len);
/** The number of journal entries. Ownership: none. Since: 0.1. */
SAGA_EXTERN size_t saga_info_journal_count(const saga_info *info);
/** Journal entry @p i (0-based), borrowed from @p info; NULL if out of
 * range.
 * Ownership: valid until saga_info_free(). Since: 0.1. */
SAGA_EXTERN const struct saga_journal_entry *
saga_info_journal(const saga_info *info, size_t i);

/** What saga_list() calls for each saga; non-zero stops the listing. */
typedef int (*saga_list_cb)(const char *saga_id, saga_state state,
                            const char *def_name, void *arg);
/** Visit sagas whose state is in @p state_mask (SAGA_STATE_BIT()s), oldest
 * first; @p cb returns non-zero to stop. Runs synchronously. @return SAGA_OK,
 * SAGA_EINVAL, SAGA_ESTORE. Ownership: the strings given to @p cb are borrowed
 * for the call only; @p arg is passed to @p cb untouched. Since: 0.1. */
SAGA_EXTERN int saga_list(saga_engine *e, unsigned int state_mask,
                          saga_list_cb cb, void *arg);

#define SAGA_ENGINE_COUNTERS_VERSION 2
#define SAGA_ENGINE_COUNTERS_INIT                                              \
    SAGA_INIT_VERSION(SAGA_ENGINE_COUNTERS_VERSION)

/** Counters since the engine started (docs/api/README.md, "Counters").
 * @c active counts the sagas in memory: from saga_start() (also before its
 * commit) until their end is committed, and those resumed or claimed; it is
 * what saga_engine_options.max_active bounds. */
typedef struct saga_engine_counters {
    unsigned int version; /* set by the caller: SAGA_ENGINE_COUNTERS_VERSION */
    uint64_t started, completed, compensated, failed;
    uint64_t steps_ok, steps_failed, retries, timeouts, compensations;
    uint64_t stale_completions;
    uint64_t commits, commit_failures, transitions;
    uint64_t purged;
    uint64_t active; /* sagas currently RUNNING or COMPENSATING */
    /* version 2 (Since: 0.2) */
    uint64_t starts_refused; /* saga_start() refused: max_active (EFULL) */
} saga_engine_counters;

/**
 * Copy the engine's counters into @p out, up to out->version.
 * @param e    the engine.
 * @param out  caller memory, its version set (SAGA_ENGINE_COUNTERS_INIT).
 * @return SAGA_OK, SAGA_EINVAL (NULL argument), SAGA_EVERSION (out->version
 *   0 or newer than this library).
 * Ownership: @p out is the caller's. Since: 0.1 (counters versioned since
 * 0.2).
 */
SAGA_EXTERN int saga_engine_stats(saga_engine *e, saga_engine_counters *out);

SAGA_END_DECL

#endif /* SAGA_ENGINE_H */

/*
 * admin.h — operating sagas: definition shapes recorded in the store,
 * operator actions (retry, compensate, resolve) with a reason and an actor,
 * and the control queue through which a tool acts on a store that a running
 * engine owns (docs/api/admin.md, docs/sagactl.md).
 *
 * Shapes. saga_engine_start() writes the shape of every registered
 * definition (steps, kinds, compensations, services, commands, policies)
 * into the store's key-value space, so that a tool can draw and explain a
 * saga from the store alone.
 *
 * Operator actions on a running engine: saga_retry_op(), saga_compensate(),
 * saga_resolve(). Each is journaled with "by ACTOR: REASON".
 *
 * Operator actions from another process: saga_op_run() queues the request in
 * the store. A running engine polls that queue (every 500 ms by default, see
 * saga_engine_set_control_poll()) and applies what it takes through the
 * calls above. If no engine takes the request within the wait, the tool
 * takes it back and applies it to the stored saga itself, in one store
 * transaction: taking the request out of the queue and acting on it are
 * atomic, so a request is applied once, by one side.
 */
#ifndef SAGA_ADMIN_H
#define SAGA_ADMIN_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

/** The environment variable that names a store for the tools (sagactl;
 * `sagactl serve` also reads its token from SAGA_CONSOLE_TOKEN). */
#define SAGA_STORE_ENV "SAGA_STORE"

/* ------------------------------------------------------------------------ */
/* Definition shapes                                                        */

/** A definition's shape, as recorded in a store. Opaque. */
typedef struct saga_shape saga_shape;

/** One step of a shape. Strings are borrowed from the shape; NULL if none. */
typedef struct saga_shape_step_info {
    const char *name;
    int kind;                 /* a saga_step_kind */
    int has_compensation;     /* 1 if the step has a compensation */
    const char *service;      /* remote steps: the target service */
    const char *command;      /* remote steps: the action's command */
    const char *comp_command; /* remote steps: the compensation's */
    uint32_t timeout_ms;      /* SAGA_TIMEOUT_NONE for none */
    uint32_t max_attempts;    /* SAGA_RETRY_FOREVER for no limit */
    uint32_t comp_max_attempts;
} saga_shape_step_info;

/**
 * Load the shape of definition @p name from @p store.
 * @param out receives the shape (a constructor: `out` first, see
 *   docs/api/README.md).
 * @param store the store to read.
 * @param name the definition's name.
 * @param version the version, or 0 for the highest recorded.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOTFOUND (never recorded),
 *   SAGA_ECORRUPT (the record is malformed), SAGA_ESTORE, SAGA_ENOMEM.
 * Ownership: free *out with saga_shape_free(). Since: 0.2.
 */
SAGA_EXTERN int saga_shape_load(saga_shape **out, saga_store *store,
                                const char *name, uint32_t version);
/** Free a shape; NULL is a no-op. Since: 0.2.
 * Ownership: @p shape and its strings are freed. */
SAGA_EXTERN void saga_shape_free(saga_shape *shape);
/** The shape's definition name (borrowed). Since: 0.2.
 * Ownership: valid until saga_shape_free(). */
SAGA_EXTERN const char *saga_shape_name(const saga_shape *shape);
/** The shape's definition version. Since: 0.2.
 * Ownership: none. */
SAGA_EXTERN uint32_t saga_shape_version(const saga_shape *shape);
/** The saga-level deadline in ms, 0 for none. Since: 0.2.
 * Ownership: none. */
SAGA_EXTERN uint64_t saga_shape_deadline(const saga_shape *shape);
/** The number of steps. Since: 0.2.
 * Ownership: none. */
SAGA_EXTERN size_t saga_shape_step_count(const saga_shape *shape);
/**
 * Step @p i of the shape.
 * @return SAGA_OK or SAGA_ENOTFOUND (out of range).
 * Ownership: the strings in @p out are borrowed from @p shape. Since: 0.2.
 */
SAGA_EXTERN int saga_shape_step(const saga_shape *shape, size_t i,
                                saga_shape_step_info *out);

/** A recorded definition: return non-zero to stop. */
typedef int (*saga_shape_list_cb)(const char *name, uint32_t version,
                                  void *arg);
/**
 * Visit every definition (name, version) recorded in @p store, in the order
 * they were first recorded.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ECORRUPT, SAGA_ESTORE. Since: 0.2.
 * Ownership: the name given to @p cb is borrowed for the call only; @p arg is
 *   passed to @p cb untouched.
 */
SAGA_EXTERN int saga_shape_list(saga_store *store, saga_shape_list_cb cb,
                                void *arg);

/* ------------------------------------------------------------------------ */
/* Operator actions on a running engine                                     */
/* The three calls below read a saga that is not in memory (a FAILED saga
 * has left it) with the store's synchronous slots: on a store whose reads
 * go out on the loop (the PostgreSQL store) they wait for the server.
 * There, on the loop, use saga_op_async() (below), which does not. */

/**
 * Resume a FAILED saga where it failed, with a fresh retry budget (as
 * saga_retry()), journaling who asked and why.
 * @param reason free text, may be NULL; @param actor who, may be NULL.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOTFOUND, SAGA_EBUSY (not FAILED),
 *   SAGA_ESTORE. Since: 0.2.
 * Ownership: the strings stay the caller's (copied into the journal).
 */
SAGA_EXTERN int saga_retry_op(saga_engine *e, const char *saga_id,
                              const char *reason, const char *actor);

/**
 * Force compensation: of a RUNNING saga before its pivot (as saga_cancel()),
 * or of a FAILED saga (its completed compensatable steps are undone in
 * reverse order; a failed compensation is tried again first).
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOTFOUND, SAGA_EBUSY (COMPLETED,
 *   COMPENSATED, COMPENSATING, or RUNNING past the pivot), SAGA_ESTORE.
 * Since: 0.2.
 * Ownership: the strings stay the caller's (copied into the journal).
 */
SAGA_EXTERN int saga_compensate(saga_engine *e, const char *saga_id,
                                const char *reason, const char *actor);

/**
 * Close a FAILED saga by hand as @p as (SAGA_STATE_COMPLETED or
 * SAGA_STATE_COMPENSATED), after the operator fixed things outside it.
 * Nothing runs.
 * @return SAGA_OK, SAGA_EINVAL (bad @p as), SAGA_ENOTFOUND, SAGA_EBUSY (not
 *   FAILED), SAGA_ESTORE. Since: 0.2.
 * Ownership: the strings stay the caller's (copied into the journal).
 */
SAGA_EXTERN int saga_resolve(saga_engine *e, const char *saga_id, saga_state as,
                             const char *reason, const char *actor);

/** The engine's store (borrowed; the engine owns it). @return the store,
 * or NULL for a NULL engine. Since: 0.2.
 * Ownership: the engine's; do not free or close it. */
SAGA_EXTERN saga_store *saga_engine_store(saga_engine *e);

/**
 * How often a started engine looks at the store's control queue.
 * @param interval_ms 0 stops polling; the default is 500.
 * @return SAGA_OK or SAGA_EINVAL. Since: 0.2.
 * Ownership: none.
 */
SAGA_EXTERN int saga_engine_set_control_poll(saga_engine *e,
                                             uint32_t interval_ms);

/* ------------------------------------------------------------------------ */
/* Operator actions from another process: the control queue                 */

/** An operator action. */
typedef enum saga_op_kind {
    SAGA_OP_RETRY = 1,
    SAGA_OP_COMPENSATE = 2,
    SAGA_OP_RESOLVE = 3
} saga_op_kind;

/** One request; strings are copied by the calls that take it. */
typedef struct saga_op_request {
    saga_op_kind op;
    const char *saga_id;
    saga_state as;      /* SAGA_OP_RESOLVE: COMPLETED or COMPENSATED */
    const char *reason; /* may be NULL */
    const char *actor;  /* may be NULL */
} saga_op_request;

/** Completion of saga_op_async(): @p status as saga_retry_op(),
 * saga_compensate() or saga_resolve() would return it (SAGA_OK: the action
 * is staged, durable with the engine's next commit), also SAGA_ECLOSED
 * (the engine closed first); saga_engine_errmsg() says why.
 * Ownership: @p saga_id is borrowed for the call. Since: 0.2. */
typedef void (*saga_op_cb)(saga_engine *e, int status, const char *saga_id,
                           void *arg);

/**
 * An operator action on a running engine without waiting for its store:
 * saga_retry_op(), saga_compensate() or saga_resolve() (by @p req->op),
 * for a saga in memory or not. The saga is read on the engine's loop
 * (store interface version 13: saga_get_submit and journal_scan_submit,
 * with submit_batch; the PostgreSQL store), loaded if FAILED, and the
 * action applied there; @p cb runs later on the loop thread, exactly
 * once, never from inside this call. saga_retry() of a saga not in
 * memory is SAGA_OP_RETRY here (with an actor and a reason).
 * @return SAGA_OK (@p cb will run); SAGA_EINVAL (a NULL argument, an
 *   unknown op, a bad @p req->as for SAGA_OP_RESOLVE, or a store without
 *   those slots: SQLite and in-memory stores read locally, use the
 *   synchronous calls); SAGA_ENOTFOUND (a malformed id); SAGA_ECLOSED;
 *   SAGA_ESTORE (refused at once: the store is reconnecting);
 *   SAGA_ENOMEM. On an error @p cb never runs.
 * Ownership: @p req and its strings stay the caller's (copied); @p arg
 *   is passed to @p cb untouched.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_op_async(saga_engine *e, const saga_op_request *req,
                              saga_op_cb cb, void *arg);

/** Who applied a request (saga_op_run()'s @p by_out). */
typedef enum saga_op_by {
    SAGA_OP_BY_ENGINE = 1, /* a running engine took it from the queue */
    SAGA_OP_BY_CALLER = 2  /* nobody took it: applied to the store here */
} saga_op_by;

/**
 * Apply an operator request to saga @p req->saga_id in @p store: queue it
 * for a running engine and wait up to @p wait_ms for its answer; when no
 * engine takes it in time, take it back and apply it to the stored saga in
 * one store transaction (the engine that next opens the store resumes it).
 * Blocks the calling thread (never call it on an engine's loop).
 * @param now_ms the time to record (ms since the epoch).
 * @param msg receives a one-line English result ("" on success); may be
 *   NULL. @param msg_size its size.
 * @param by_out receives a saga_op_by; may be NULL.
 * @return SAGA_OK; SAGA_EINVAL (bad request); SAGA_ENOTFOUND (no such
 *   saga); SAGA_EBUSY (the saga is not in a state that allows the action);
 *   SAGA_ECORRUPT (its definition's shape is not recorded and the action
 *   needs it); SAGA_ESTORE (the store failed or is locked); SAGA_ENOMEM.
 * Since: 0.2.
 * Ownership: @p req and its strings stay the caller's; @p msg and @p by_out are
 *   caller memory.
 */
SAGA_EXTERN int saga_op_run(saga_store *store, const saga_op_request *req,
                            uint32_t wait_ms, int64_t now_ms, char *msg,
                            size_t msg_size, saga_op_by *by_out);

/** "retry", "compensate", "resolve" or "unknown". Since: 0.2.
 * Ownership: a static string, the library's. */
SAGA_EXTERN const char *saga_op_name(saga_op_kind op);

SAGA_END_DECL

#endif /* SAGA_ADMIN_H */

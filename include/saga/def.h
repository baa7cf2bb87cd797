/*
 * def.h — saga definitions: a named, versioned, ordered list of steps.
 */
#ifndef SAGA_DEF_H
#define SAGA_DEF_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

/** The kind of a step (DESIGN §2). */
typedef enum saga_step_kind {
    SAGA_STEP_COMPENSATABLE = 0, /* has a compensation; undone on failure */
    SAGA_STEP_PIVOT = 1,         /* go/no-go: once OK the saga only moves on */
    SAGA_STEP_RETRIABLE = 2      /* after the pivot; retried (FAIL too) under
                                    its policy, never undone */
} saga_step_kind;

/** max_attempts value meaning "no limit". */
#define SAGA_RETRY_FOREVER UINT32_MAX
/** timeout_ms value meaning "no timeout". */
#define SAGA_TIMEOUT_NONE UINT32_MAX
/** jitter value meaning "no jitter" (0 selects the default). */
#define SAGA_JITTER_NONE (-1.0)

/**
 * A retry policy. Zero in any field selects its default:
 * max_attempts 3 for a compensatable or pivot action, SAGA_RETRY_FOREVER for
 * a retriable action and for every compensation; initial_backoff_ms 100;
 * max_backoff_ms 30000; multiplier 2.0; jitter 0.2 (a fraction of the delay,
 * drawn from the engine's seeded random source).
 * The delay before attempt n+1 is min(max, initial * multiplier^(n-1)),
 * then scaled by a factor drawn uniformly from [1 - jitter, 1 + jitter].
 */
typedef struct saga_retry_policy {
    uint32_t max_attempts;
    uint32_t initial_backoff_ms;
    uint32_t max_backoff_ms;
    double multiplier;
    double jitter;
} saga_retry_policy;

/**
 * What the engine hands a step action or compensation. A value type: copy it
 * to complete the step later with saga_step_complete().
 */
typedef struct saga_step_ref {
    char saga_id[SAGA_ID_SIZE];
    uint32_t step;         /* index of the step in its definition */
    uint32_t attempt;      /* 1 for the first attempt */
    uint32_t compensating; /* 1 when this is the step's compensation */
} saga_step_ref;

/**
 * A step action or compensation. It runs on the loop thread and must
 * eventually report through saga_step_complete() with a copy of @p ref,
 * either before it returns or from any later callback on the loop.
 * @p data / @p len is the saga's data (a msgpack map), borrowed for the
 * duration of the call only. Actions run at least once: after a crash an
 * action whose outcome was not yet durable runs again with the same ref, so
 * actions must be idempotent.
 */
typedef void (*saga_action_fn)(saga_engine *e, const saga_step_ref *ref,
                               const void *data, size_t len, void *arg);

#define SAGA_STEP_OPTIONS_VERSION 1
#define SAGA_STEP_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_STEP_OPTIONS_VERSION)

/**
 * Options for one step. Zero in any field selects its default.
 * A remote step sets @c service and @c command instead of an action: the
 * engine sends the command to that service through the transport and
 * completes the step from its reply (see participant.h).
 */
typedef struct saga_step_options {
    unsigned int version;
    saga_step_kind kind;          /* default SAGA_STEP_COMPENSATABLE */
    uint32_t timeout_ms;          /* per attempt; default 30000 */
    saga_retry_policy retry;      /* the action's policy */
    saga_retry_policy comp_retry; /* the compensation's policy */
    const char *service;          /* remote: target service (NULL = local) */
    const char *command;          /* remote: the action's command name */
    const char *comp_command;     /* remote: the compensation's command name */
} saga_step_options;

/**
 * Zero @p opts and set its version: every field then selects its default.
 * @param opts     caller memory.
 * @param version  SAGA_STEP_OPTIONS_VERSION (or an older one).
 * @return SAGA_OK, SAGA_EINVAL (@p opts NULL), SAGA_EVERSION (0 or newer
 *   than this library).
 * Ownership: @p opts is the caller's. Since: 0.1.
 */
SAGA_EXTERN int saga_step_options_init(saga_step_options *opts,
                                       unsigned int version);

/**
 * A new, empty definition.
 * @param out receives the definition; the caller frees it with
 *   saga_def_free() unless saga_engine_register() takes it.
 * @param name 1..SAGA_NAME_MAX bytes of [A-Za-z0-9._-].
 * @param version the definition's version, at least 1.
 * @return SAGA_OK, SAGA_EINVAL (bad name or version) or SAGA_ENOMEM.
 * Since: 0.1.
 * Ownership: see @p out; @p name stays the caller's (copied).
 */
SAGA_EXTERN int saga_def_new(saga_def **out, const char *name,
                             uint32_t version);
/** Free a definition not registered with an engine; NULL is a no-op, and
 * so is a definition an engine owns (saga_engine_register() took it: the
 * engine frees it when it closes).
 * Ownership: @p d is freed unless an engine owns it. Since: 0.1. */
SAGA_EXTERN void saga_def_free(saga_def *d);

/**
 * Append a step.
 * @param name unique within the definition, as for saga_def_new().
 * @param action the step's action, or NULL for a remote step.
 * @param compensation the compensation, NULL for none (a remote step names
 *   it in opts->comp_command instead).
 * @param opts NULL for defaults.
 * @param arg passed to @p action and @p compensation.
 * @return SAGA_OK; SAGA_EINVAL with saga_def_errmsg() naming the problem
 *   (empty or bad name, duplicate step, no action, a compensation on a
 *   retriable step or the pivot, a second pivot, a compensatable step after
 *   the pivot, a retriable step before it, a bad policy); SAGA_EVERSION
 *   (opts->version 0 or newer than this library); SAGA_EBUSY (@p d is
 *   registered with an engine: it no longer changes); SAGA_ENOMEM.
 * Ownership: @p name, @p opts and its strings stay the caller's (copied);
 *   @p arg is passed to the functions untouched. Since: 0.1.
 */
SAGA_EXTERN int saga_def_add_step(saga_def *d, const char *name,
                                  saga_action_fn action,
                                  saga_action_fn compensation,
                                  const saga_step_options *opts, void *arg);

/**
 * Set the saga-level deadline, counted from the saga's start: a RUNNING
 * saga still before its pivot when it passes is compensated.
 * @param deadline_ms 0 for none (the default).
 * @return SAGA_OK, SAGA_EINVAL, or SAGA_EBUSY (registered with an engine).
 * Ownership: none. Since: 0.1.
 */
SAGA_EXTERN int saga_def_set_deadline(saga_def *d, uint64_t deadline_ms);

/**
 * Check the whole definition (at least one step; a retriable step needs a
 * pivot or no compensatable step before it, ...). saga_engine_register()
 * calls this too.
 * @return SAGA_OK or SAGA_EINVAL with saga_def_errmsg() set.
 * Ownership: none. Since: 0.1.
 */
SAGA_EXTERN int saga_def_validate(saga_def *d);

/** Why the last call on @p d failed; "" if it did not. Borrowed, valid
 * until the next call on @p d.
 * Ownership: the string is @p d's. Since: 0.1. */
SAGA_EXTERN const char *saga_def_errmsg(const saga_def *d);

/* Read-only accessors (for tools such as sagactl graph). */
/** The definition's name. Ownership: borrowed from @p d, valid while it lives.
 * Since: 0.1. */
SAGA_EXTERN const char *saga_def_name(const saga_def *d);
/** The definition's version. Ownership: none. Since: 0.1. */
SAGA_EXTERN uint32_t saga_def_version(const saga_def *d);
/** The saga-level deadline in ms (0: none). Ownership: none. Since: 0.1. */
SAGA_EXTERN uint64_t saga_def_deadline(const saga_def *d);
/** The number of steps. Ownership: none. Since: 0.1. */
SAGA_EXTERN size_t saga_def_step_count(const saga_def *d);
/** The name of step @p i, or NULL if out of range.
 * Ownership: borrowed from @p d, valid while it lives. Since: 0.1. */
SAGA_EXTERN const char *saga_def_step_name(const saga_def *d, size_t i);
/** The effective options (defaults filled in) of step @p i.
 * @return SAGA_OK or SAGA_ENOTFOUND.
 * Ownership: @p out is the caller's; its strings are borrowed from @p d, valid
 *   while it lives. Since: 0.1. */
SAGA_EXTERN int saga_def_step_options(const saga_def *d, size_t i,
                                      saga_step_options *out);
/** 1 if step @p i has a compensation (local or remote), else 0.
 * Ownership: none. Since: 0.1. */
SAGA_EXTERN int saga_def_step_has_compensation(const saga_def *d, size_t i);

SAGA_END_DECL

#endif /* SAGA_DEF_H */

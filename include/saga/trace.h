/*
 * trace.h — W3C trace context for sagas, and structured log events
 * (docs/api/trace.md).
 *
 * A saga started with saga_start_traced() keeps the caller's trace id: the
 * traceparent is stored in the saga data under the reserved key
 * SAGA_TRACE_KEY, so it survives restarts. Every step attempt has its own
 * span id, derived from (saga id, step, attempt, direction), so a re-sent
 * command carries the same span. Remote commands carry the attempt's
 * traceparent in the envelope's `trace` field; participants see it in
 * saga_command.traceparent and in their log events, and echo it in replies.
 * A saga started without one still has a trace: its id is the saga id.
 */
#ifndef SAGA_TRACE_H
#define SAGA_TRACE_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

struct saga_step_ref;

/** The saga data key that holds a saga's traceparent. */
#define SAGA_TRACE_KEY "_traceparent"
/** A traceparent ("00-" 32 hex "-" 16 hex "-" 2 hex) and its NUL. */
#define SAGA_TRACEPARENT_SIZE 56
/** A trace id (32 hex) and its NUL. */
#define SAGA_TRACE_ID_SIZE 33

/**
 * Whether @p tp is a valid W3C traceparent of version 00 (lower-case hex,
 * trace id and parent id not all zero).
 * @return 1 or 0. Since: 0.2.
 * Ownership: none (no pointers kept).
 */
SAGA_EXTERN int saga_traceparent_valid(const char *tp);

/**
 * saga_start() for a request that carried a W3C traceparent: the saga and
 * every step attempt join that trace.
 * @param traceparent the incoming header value; NULL, or one that is not
 *   valid, starts the saga without it (a new trace, as W3C asks).
 * @param cb a saga_start_cb (engine.h), or NULL.
 * @return as saga_start() (SAGA_EFULL included: max_active); also
 *   SAGA_EINVAL when @p data already holds SAGA_TRACE_KEY with another
 *   value. Since: 0.2.
 * Ownership: as saga_start(); @p traceparent stays the caller's (copied into
 *   the saga data).
 */
SAGA_EXTERN int
saga_start_traced(saga_engine *e, const char *def_name, const char *idem_key,
                  const void *data, size_t len, const char *traceparent,
                  char id_out[SAGA_ID_SIZE],
                  void (*cb)(saga_engine *e, int status, const char *saga_id,
                             int existed, void *arg),
                  void *arg);

/**
 * The traceparent of step attempt @p ref of a saga whose data is @p data
 * (what local actions log, and what remote commands carry).
 * @param out receives "00-TRACE-SPAN-FLAGS".
 * @return SAGA_OK or SAGA_EINVAL. Since: 0.2.
 * Ownership: @p data and @p ref stay the caller's; @p out is caller memory.
 */
SAGA_EXTERN int saga_step_traceparent(const void *data, size_t len,
                                      const struct saga_step_ref *ref,
                                      char out[SAGA_TRACEPARENT_SIZE]);

/** One structured log event; borrowed for the sink call. */
typedef struct saga_log_event {
    unsigned int version; /* 1 */
    saga_log_level level;
    int64_t at_ms;        /* the engine's (or participant's) clock */
    const char *service;  /* the engine's or participant's service name */
    const char *saga_id;  /* NULL when not about a saga */
    int step;             /* -1 when none */
    uint32_t attempt;     /* 0 when none or not known */
    const char *trace_id; /* 32 hex, NULL when not about a saga */
    const char *message;
} saga_log_event;

/**
 * The default text sink: one line per event on @p arg (a FILE *; NULL
 * for stderr): `TIME LEVEL service [saga step N attempt A trace T] message`.
 * Pass it as saga_engine_options.log_event (or the participant's). A
 * JSON-lines sink is in the console library (saga_console_log_json() in
 * tools/console/console.h), which links jansson. Since: 0.2.
 * Ownership: @p ev is borrowed for the call; @p arg (the FILE *) stays the
 *   caller's and is not closed.
 */
SAGA_EXTERN void saga_log_sink_text(const saga_log_event *ev, void *arg);

/** "debug", "info", "warn", "error". Since: 0.2.
 * Ownership: a static string, the library's. */
SAGA_EXTERN const char *saga_log_level_name(saga_log_level level);

SAGA_END_DECL

#endif /* SAGA_TRACE_H */

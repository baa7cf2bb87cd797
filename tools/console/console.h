/*
 * console.h — the operator console and its JSON admin API, as a small
 * library any libh2o service can mount (sagactl serve, the checkout's order
 * service). See docs/operations.md.
 *
 *   GET  /console/...                    the page (static, built in)
 * and under /console/api (so that it never meets a service's own API):
 *   GET  /stats                          counts per state and definition
 *   POST /sagas    {state, definition, since, offset, limit}
 *   GET  /sagas/ID                       one saga: journal, data, shape
 *   POST /sagas/ID/retry                 {reason}
 *   POST /sagas/ID/compensate            {reason}
 *   POST /sagas/ID/resolve               {as, reason}
 *   GET  /definitions                    recorded definitions
 *   GET  /definitions/NAME[/VERSION]     one shape, with its diagrams
 * Every /console/api request needs `Authorization: Bearer TOKEN` (401 without).
 * The actor of an action is the X-Saga-Actor header, else "console".
 *
 * Actions: with an engine (the owning service mounts the console) they call
 * saga_retry_op() / saga_compensate() / saga_resolve() on its loop; with
 * only a store (sagactl serve) they go through saga_op_run(), which lets a
 * running engine pick them up (see include/saga/admin.h).
 */
#ifndef SAGA_CONSOLE_H
#define SAGA_CONSOLE_H

#include <h2o.h>
#include <saga/saga.h>

typedef struct saga_console_config {
    saga_store *store;   /* required; borrowed */
    saga_engine *engine; /* optional; borrowed; same store as above */
    const char *token;   /* required, at least 8 bytes; copied */
    uint32_t op_wait_ms; /* saga_op_run() wait; 0: 2000 */
} saga_console_config;

typedef struct saga_console saga_console;

/** A console over @p cfg. @return SAGA_OK, SAGA_EINVAL (no store or a
 * token shorter than 8 bytes), SAGA_ENOMEM. */
int saga_console_new(saga_console **out, const saga_console_config *cfg);

/** Register /console/api and /console/ on @p host: call it before a
 * catch-all "/" path (h2o takes the first path that matches). */
void saga_console_mount(saga_console *c, h2o_hostconf_t *host);

/** Register `GET /metrics` (Prometheus text) for @p e (may be NULL) and
 * @p nparts participants (the array is borrowed and must outlive the
 * server). */
void saga_console_mount_metrics(h2o_hostconf_t *host, saga_engine *e,
                                saga_participant *const *parts, size_t nparts);

void saga_console_free(saga_console *c);

/** A structured log sink writing one JSON object per line to @p arg (a
 * FILE *; NULL for stderr): {"ts", "level", "service", "saga_id", "step",
 * "attempt", "trace_id", "msg"}. For saga_engine_options.log_event and the
 * participant's (`--log-format json` in the services). */
void saga_console_log_json(const saga_log_event *ev, void *arg);

/** A plain HTTP/1.1 server on @p loop at "HOST:PORT" for @p conf's hosts.
 * @return 0 or a negative libuv error (message in @p err). */
typedef struct saga_http_server saga_http_server;
int saga_http_listen(saga_http_server **out, uv_loop_t *loop,
                     h2o_globalconf_t *conf, const char *listen, char *err,
                     size_t errsize);
/** Stop listening and close connections' accept path. */
void saga_http_close(saga_http_server *s);

#endif /* SAGA_CONSOLE_H */

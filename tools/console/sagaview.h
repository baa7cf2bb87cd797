/*
 * sagaview.h — reading a store for people: sagas, journals, definition
 * shapes, counts and diagrams as JSON (jansson) or text. Shared by sagactl
 * and the console; uses only libsaga's public headers.
 */
#ifndef SAGA_VIEW_H
#define SAGA_VIEW_H

#include <jansson.h>
#include <saga/saga.h>

/** Exit codes of sagactl, also the console's error classes. */
enum {
    SV_EXIT_OK = 0,
    SV_EXIT_ERROR = 1,    /* anything else */
    SV_EXIT_USAGE = 2,    /* bad command line */
    SV_EXIT_NOTFOUND = 3, /* unknown saga id or definition */
    SV_EXIT_STATE = 4,    /* the saga's state does not allow the action */
    SV_EXIT_STORE = 5,    /* the store cannot be opened or read */
    SV_EXIT_LOCKED = 6    /* the store is locked by another writer */
};

/** Map a SAGA_E* code (and the store's message) to an exit code above. */
int sv_exit_code(int rc, const char *detail);

/** Open the store named by @p spec: a SQLite file path ("sqlite:PATH" also
 * works; a missing file is not created) or a PostgreSQL URL
 * ("postgres://USER@HOST:PORT/DB?schema=NAME", through saga_store_open()).
 * @return SAGA_OK or an error with @p err filled. */
int sv_open_store(const char *spec, saga_store **out, char *err, size_t n);

/** The saga data (a msgpack map) as JSON; NULL if malformed. Bounded:
 * nesting is limited and no length is trusted before its bytes exist. */
json_t *sv_msgpack_json(const void *data, size_t len);

/** Milliseconds since the epoch. */
int64_t sv_now_ms(void);
/** "2026-11-29T05:41:19.123Z" into @p out (at least 32 bytes). */
void sv_iso_time(int64_t ms, char *out, size_t n);
/** "3d4h", "12m5s", "250ms" into @p out. */
void sv_duration(int64_t ms, char *out, size_t n);
/** Parse "90s", "15m", "2h", "7d", "500ms". @return 0 or -1. */
int sv_parse_duration(const char *s, int64_t *ms);
/** Parse a state name (case-insensitive). @return the state or 0. */
saga_state sv_parse_state(const char *s);

/** A filter for sv_list(). */
typedef struct sv_filter {
    unsigned int state_mask; /* 0: all */
    const char *definition;  /* NULL: all */
    int64_t since_ms;        /* created at or after; 0: any */
    size_t offset, limit;    /* newest first; limit 0: 50 */
} sv_filter;

/**
 * Sagas matching @p f, newest first: {"total": N, "offset", "limit",
 * "sagas": [{id, definition, version, state, step, step_name, attempt,
 * created_ms, updated_ms, age_ms, error, idem_key}]}.
 * @return SAGA_OK or SAGA_ESTORE / SAGA_ENOMEM.
 */
int sv_list(saga_store *s, const sv_filter *f, json_t **out);

/**
 * One saga: {"saga": {...as in sv_list}, "data": {...}, "journal":
 * [{seq, event, step, step_name, attempt, at_ms, started_ms, since_prev_ms,
 * error}], "definition": shape or null}.
 * @return SAGA_OK, SAGA_ENOTFOUND, SAGA_ESTORE, SAGA_ENOMEM.
 */
int sv_show(saga_store *s, const char *id, json_t **out);

/** Counts per state and per definition, the oldest active saga, the
 * outbox depth: {"states": {...}, "definitions": {name: {state: n}},
 * "oldest_active": {...} or null, "outbox_depth": n, "total": n}. */
int sv_stats(saga_store *s, json_t **out);

/** The shape as JSON: {name, version, deadline_ms, steps: [{name, kind,
 * compensation, service, command, comp_command, timeout_ms, max_attempts,
 * comp_max_attempts}]}. */
json_t *sv_shape_json(const saga_shape *sh);
/** The recorded definitions: [{name, version}]. */
int sv_definitions(saga_store *s, json_t **out);

/** The shape drawn as Mermaid ("mermaid") or Graphviz ("dot"); @p current
 * is a step to highlight or -1. @return a malloc'd string or NULL. */
char *sv_graph(const saga_shape *sh, const char *format, int current);

/** "compensatable", "pivot", "retriable". */
const char *sv_kind_name(saga_step_kind k);

#endif /* SAGA_VIEW_H */

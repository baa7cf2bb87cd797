/*
 * libsaga — durable sagas for native services.
 *
 * saga.h is the umbrella header: version, error codes, the allocator hook and
 * the types every other header shares. It includes def.h, store.h,
 * transport.h, tcp.h, engine.h, participant.h, codec.h and testing.h at
 * its end, so `#include <saga/saga.h>` is all a program needs.
 */
#ifndef SAGA_SAGA_H
#define SAGA_SAGA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define SAGA_BEGIN_DECL extern "C" {
#define SAGA_END_DECL }
#else
#define SAGA_BEGIN_DECL
#define SAGA_END_DECL
#endif

#if defined(SAGA_STATIC)
#define SAGA_EXTERN
#elif defined(__GNUC__) || defined(__clang__)
#define SAGA_EXTERN __attribute__((visibility("default")))
#else
#define SAGA_EXTERN
#endif

SAGA_BEGIN_DECL

/* Options and vtable INIT macros set only the version; designated
 * initializers keep -Wextra quiet in C callers. */
#ifdef __cplusplus
#define SAGA_INIT_VERSION(v)                                                   \
    {                                                                          \
        (v)                                                                    \
    }
#else
#define SAGA_INIT_VERSION(v)                                                   \
    {                                                                          \
        .version = (v)                                                         \
    }
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                  */

#define SAGA_VERSION_MAJOR 0
#define SAGA_VERSION_MINOR 1
#define SAGA_VERSION_PATCH 0
#define SAGA_VERSION_STRING "0.1.0"
/** MAJOR * 1000000 + MINOR * 1000 + PATCH, like sqlite3_libversion_number(). */
#define SAGA_VERSION_NUMBER                                                    \
    (SAGA_VERSION_MAJOR * 1000000 + SAGA_VERSION_MINOR * 1000 +                \
     SAGA_VERSION_PATCH)

/**
 * The version of the library linked at run time, as SAGA_VERSION_NUMBER.
 * @return the run-time version number. Since: 0.1.
 * Ownership: none.
 */
SAGA_EXTERN int saga_version(void);
/** The run-time version as a string ("0.1.0"). Since: 0.1.
 * Ownership: a static string, the library's. */
SAGA_EXTERN const char *saga_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors: every fallible function returns SAGA_OK (0) or a negative code.  */

#define SAGA_ERRNO_MAP(XX)                                                     \
    XX(EINVAL, -1, "invalid argument")                                         \
    XX(ENOMEM, -2, "out of memory")                                            \
    XX(ENOTFOUND, -3, "not found")                                             \
    XX(EDUP, -4, "already exists")                                             \
    XX(EBUSY, -5, "busy or not allowed in this state")                         \
    XX(ECLOSED, -6, "closed")                                                  \
    XX(ETIMEDOUT, -7, "timed out")                                             \
    XX(EVERSION, -8, "unsupported version")                                    \
    XX(ESTORE, -9, "store error")                                              \
    XX(ETRANSPORT, -10, "transport error")                                     \
    XX(ECORRUPT, -11, "malformed or corrupt data")                             \
    XX(ESTALE, -12, "stale: no longer current")                                \
    XX(EFULL, -13, "queue full, try again later")                              \
    XX(ENOROUTE, -14, "no such destination")                                   \
    XX(EFENCED, -15, "fenced: another owner holds it")

typedef enum saga_errno {
    SAGA_OK = 0,
#define SAGA__ERR_ENUM(name, val, msg) SAGA_##name = (val),
    SAGA_ERRNO_MAP(SAGA__ERR_ENUM)
#undef SAGA__ERR_ENUM
        SAGA__ERR_MIN = -15
} saga_errno;

/** A static English description of @p err ("unknown error" if unknown).
 * Ownership: a static string, the library's. Since: 0.1. */
SAGA_EXTERN const char *saga_strerror(int err);
/** The code's name ("SAGA_ENOTFOUND"), or "SAGA_UNKNOWN".
 * Ownership: a static string, the library's. Since: 0.1. */
SAGA_EXTERN const char *saga_err_name(int err);

/**
 * Why the last store or transport constructor on this thread failed:
 * saga_store_open(), saga_store_sqlite_open(), saga_store_memory_new(),
 * saga_transport_tcp_new(), saga_transport_inmem_new(), the PostgreSQL and
 * Kafka constructors, and any plug-in's that follows this rule (they have
 * no object yet to keep the reason in, docs/api/README.md "Errors").
 * Read it only after a constructor returned an error; "" if none said why.
 * @return a thread-local string, valid until the next constructor call on
 *   the thread.
 * Ownership: the library's. Since: 0.2 (renamed in 0.2,
 * docs/api/README.md).
 */
SAGA_EXTERN const char *saga_open_errmsg(void);

/**
 * Set the thread's saga_open_errmsg() text (printf format): for plug-in
 * constructors, before they return an error. Truncated at 511 bytes.
 * @param fmt  a printf format, and its arguments.
 * Ownership: the text is copied. Since: 0.2.
 */
SAGA_EXTERN void saga_open_errmsg_set(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* Allocator hook                                                           */

typedef void *(*saga_malloc_fn)(size_t size);
typedef void *(*saga_realloc_fn)(void *ptr, size_t size);
typedef void (*saga_free_fn)(void *ptr);

/**
 * Replace the allocator used for every allocation libsaga makes, and for
 * memory that crosses a plug-in vtable. Call it before any other function.
 * @return SAGA_OK, or SAGA_EINVAL if a function is NULL. Since: 0.1.
 * Ownership: none (the functions are called, not kept as memory).
 */
SAGA_EXTERN int saga_replace_allocator(saga_malloc_fn m, saga_realloc_fn r,
                                       saga_free_fn f);
/** Allocate with libsaga's allocator (plug-ins use these for shared memory).
 * Ownership: the caller owns the block and frees it with saga_free().
 *   Since: 0.1. */
SAGA_EXTERN void *saga_malloc(size_t size);
/** Resize a block from saga_malloc() with libsaga's allocator. Ownership: the
 * caller owns the result (and no longer @p ptr when it succeeds) and frees it
 * with saga_free(). Since: 0.1. */
SAGA_EXTERN void *saga_realloc(void *ptr, size_t size);
/** Free memory from saga_malloc(); NULL is a no-op.
 * Ownership: @p ptr is freed. Since: 0.1. */
SAGA_EXTERN void saga_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Shared types                                                             */

/** Saga ids are 32 lower-case hex characters; buffers hold SAGA_ID_SIZE. */
#define SAGA_ID_LEN 32
#define SAGA_ID_SIZE (SAGA_ID_LEN + 1)
/** Longest definition, step, service, command or idempotency key name. */
#define SAGA_NAME_MAX 255

/** The life-cycle of a saga instance (DESIGN §3). */
typedef enum saga_state {
    SAGA_STATE_RUNNING = 1,
    SAGA_STATE_COMPENSATING = 2,
    SAGA_STATE_COMPLETED = 3,   /* terminal */
    SAGA_STATE_COMPENSATED = 4, /* terminal */
    SAGA_STATE_FAILED = 5       /* a finite retry policy ran out where the
                                   saga cannot go back: needs an operator */
} saga_state;
/** Bit for a state in a state mask: SAGA_STATE_BIT(SAGA_STATE_RUNNING). */
#define SAGA_STATE_BIT(s) (1u << (unsigned)(s))
#define SAGA_STATE_MASK_ACTIVE                                                 \
    (SAGA_STATE_BIT(SAGA_STATE_RUNNING) |                                      \
     SAGA_STATE_BIT(SAGA_STATE_COMPENSATING))
#define SAGA_STATE_MASK_ALL 0x3eu

/** "RUNNING", "COMPENSATING", ... or "UNKNOWN".
 * Ownership: a static string, the library's. Since: 0.1. */
SAGA_EXTERN const char *saga_state_name(saga_state s);

/** What one attempt of a step (or a compensation) reports. */
typedef enum saga_outcome {
    SAGA_OUTCOME_OK = 0,   /* done; output data is merged into the saga */
    SAGA_OUTCOME_FAIL = 1, /* business "no": nothing applied; compensate */
    SAGA_OUTCOME_RETRY = 2 /* transient: try again after backoff */
} saga_outcome;

/** Log levels for the structured log callback. In options, a level of 0
 * selects the default, SAGA_LOG_WARN. */
typedef enum saga_log_level {
    SAGA_LOG_DEBUG = 1,
    SAGA_LOG_INFO = 2,
    SAGA_LOG_WARN = 3,
    SAGA_LOG_ERROR = 4
} saga_log_level;

/** The one log callback type, used by the engine, the participant and the
 * plug-ins' options. @p saga_id is NULL and @p step -1 when the message is
 * not about a saga (always so for a transport). Called on the loop thread
 * (the Kafka transport: also on librdkafka's threads, see kafka.h).
 * Since: 0.1 (the plug-ins' options use it since 0.2). */
typedef void (*saga_log_fn)(saga_log_level level, const char *saga_id, int step,
                            const char *msg, void *arg);
/** The structured log callback (saga/trace.h: saga_log_event). Since: 0.2. */
struct saga_log_event;
typedef void (*saga_log_event_fn)(const struct saga_log_event *ev, void *arg);

/** Opaque handles. */
typedef struct saga_def saga_def;
typedef struct saga_engine saga_engine;
typedef struct saga_map saga_map;
typedef struct saga_store saga_store;
typedef struct saga_transport saga_transport;

/* ------------------------------------------------------------------------ */
/* Saga data: a msgpack map with string keys. These helpers build and read  */
/* it without exposing msgpack-c; any msgpack encoder works too.            */

/** A new empty map builder. @return SAGA_OK or SAGA_ENOMEM.
 * Ownership: the caller owns *out and frees it with saga_map_free().
 *   Since: 0.1. */
SAGA_EXTERN int saga_map_new(saga_map **out);
/** Free a builder; NULL is a no-op.
 * Ownership: @p m and its encoding are freed. Since: 0.1. */
SAGA_EXTERN void saga_map_free(saga_map *m);
/** Set a key (a later set of the same key wins). @return SAGA_OK,
 * SAGA_EINVAL (NULL key) or SAGA_ENOMEM. Values are copied.
 * Ownership: @p key and @p val stay the caller's. Since: 0.1. */
SAGA_EXTERN int saga_map_set_str(saga_map *m, const char *key, const char *val);
/** Set an integer value; codes as saga_map_set_str(). Ownership: @p key stays
 * the caller's (copied). Since: 0.1. */
SAGA_EXTERN int saga_map_set_int(saga_map *m, const char *key, int64_t val);
/** Set a boolean value (0 or 1); codes as saga_map_set_str(). Ownership: @p key
 * stays the caller's (copied). Since: 0.1. */
SAGA_EXTERN int saga_map_set_bool(saga_map *m, const char *key, int val);
/** Set a binary value of @p len bytes; codes as saga_map_set_str(). Ownership:
 * @p key and @p val stay the caller's (copied). Since: 0.1. */
SAGA_EXTERN int saga_map_set_bin(saga_map *m, const char *key, const void *val,
                                 size_t len);
/**
 * Encode the map as msgpack. The pointer is borrowed: it stays valid until
 * the next set or saga_map_free().
 * @return SAGA_OK or SAGA_ENOMEM.
 * Ownership: *data is the map's (see above). Since: 0.1.
 */
SAGA_EXTERN int saga_map_encode(saga_map *m, const void **data, size_t *len);

/**
 * Read a string value from msgpack map @p data. @p out points into @p data
 * (not NUL-terminated; its length goes to @p out_len).
 * @return SAGA_OK, SAGA_ENOTFOUND (no such key), SAGA_EINVAL (other type) or
 * SAGA_ECORRUPT (not a msgpack map).
 * Ownership: @p data stays the caller's; *out borrows from it. Since: 0.1.
 */
SAGA_EXTERN int saga_data_get_str(const void *data, size_t len, const char *key,
                                  const char **out, size_t *out_len);
/** Read an integer value; codes as saga_data_get_str().
 * Ownership: none (no pointers kept). Since: 0.1. */
SAGA_EXTERN int saga_data_get_int(const void *data, size_t len, const char *key,
                                  int64_t *out);
/** Read a boolean value; codes as saga_data_get_str().
 * Ownership: none (no pointers kept). Since: 0.1. */
SAGA_EXTERN int saga_data_get_bool(const void *data, size_t len,
                                   const char *key, int *out);

SAGA_END_DECL

#include "saga/def.h"
#include "saga/store.h"
#include "saga/transport.h"
#include "saga/tcp.h"
#include "saga/engine.h"
#include "saga/participant.h"
#include "saga/codec.h"
#include "saga/testing.h"
#include "saga/admin.h"
#include "saga/metrics.h"
#include "saga/trace.h"

#endif /* SAGA_SAGA_H */

/*
 * codec.h — the wire envelope that carries commands, replies and events
 * between an orchestrator and its participants (DESIGN §8).
 *
 * On the wire an envelope is one msgpack map with string keys:
 *
 *   key      type   in         meaning
 *   v        uint   all        envelope version, SAGA_ENVELOPE_VERSION (1)
 *   kind     str    all        "command", "reply" or "event"
 *   msg_id   str    all        unique per message (the inbox dedup key)
 *   saga_id  str    all        the saga instance
 *   step     uint   all        step index in the definition (uint32)
 *   attempt  uint   all        attempt number (uint32)
 *   name     str    all        command / event name
 *   trace    str    optional   W3C traceparent, may be absent or ""
 *   reply_to str    optional   commands: the topic replies go to
 *   payload  bin    all        saga data (a msgpack map), may be empty
 *   comp     bool   optional   a command (or the reply to one) that is a
 *                              compensation
 *   outcome  uint   replies    saga_outcome: 0 OK, 1 FAIL, 2 RETRY
 *   error    str    optional   a reply's error text
 *
 * Decoding is strict: the top level must be a map with string keys and
 * nothing after it; a key twice, a known key with the wrong type or an out
 * of range value, a missing required key, an over-long string, an oversized
 * payload or message, or nesting deeper than 24 levels (inside unknown keys)
 * is rejected. Unknown keys are skipped, so later versions can add fields.
 * Rejections are counted by reason (saga_codec_stats()).
 */
#ifndef SAGA_CODEC_H
#define SAGA_CODEC_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

/** The envelope version this library writes and reads. */
#define SAGA_ENVELOPE_VERSION 1
/** Longest trace string in bytes (a traceparent is 55). */
#define SAGA_ENVELOPE_TRACE_MAX 256
/** Longest reply error string in bytes. */
#define SAGA_ENVELOPE_ERROR_MAX 1023
/** Default payload limit of saga_envelope_decode(): 1 MiB. */
#define SAGA_ENVELOPE_PAYLOAD_MAX_DEFAULT (1024u * 1024u)
/**
 * Bytes a message may have beyond its payload limit: room for the fixed
 * fields at their longest and a few unknown keys. A message longer than
 * payload limit + this is rejected before it is parsed.
 */
#define SAGA_ENVELOPE_OVERHEAD_MAX 8192u

/** What an envelope carries. */
typedef enum saga_msg_kind {
    SAGA_MSG_COMMAND = 1, /* orchestrator -> participant: do (or undo) a step */
    SAGA_MSG_REPLY = 2,   /* participant -> orchestrator: the outcome */
    SAGA_MSG_EVENT = 3    /* a published fact */
} saga_msg_kind;

/**
 * One message. A value type: strings are NUL-terminated copies held in the
 * struct; only @c payload is a pointer.
 *
 * For saga_envelope_encode() the caller fills it (zero it first; @c v 0 means
 * SAGA_ENVELOPE_VERSION). saga_envelope_decode() fills every field, zeroing
 * the ones the message does not carry.
 */
typedef struct saga_envelope {
    unsigned int v; /* SAGA_ENVELOPE_VERSION */
    saga_msg_kind kind;
    uint32_t step;
    uint32_t attempt;
    int comp;             /* 1: a compensation command, or its reply */
    saga_outcome outcome; /* replies only */
    char msg_id[SAGA_NAME_MAX + 1];          /* 1..255 bytes, no NUL inside */
    char saga_id[SAGA_NAME_MAX + 1];         /* 1..255 bytes */
    char name[SAGA_NAME_MAX + 1];            /* 1..255 bytes */
    char trace[SAGA_ENVELOPE_TRACE_MAX + 1]; /* 0..256 bytes */
    char error[SAGA_ENVELOPE_ERROR_MAX + 1]; /* replies; "" for none */
    /** Commands: the topic the reply goes to (the orchestrator's service
     * name); 0..255 bytes, "" for none (optional on the wire). */
    char reply_to[SAGA_NAME_MAX + 1];
    /**
     * The payload bytes (saga data, a msgpack map by convention; the codec
     * does not look inside). After decode it is borrowed: it points into
     * the decoded buffer and is valid while that buffer lives.
     */
    const void *payload;
    size_t payload_len;
} saga_envelope;

/**
 * Encode @p env as msgpack.
 * @param env the message; strings must be NUL-terminated within their
 *   arrays, @c msg_id, @c saga_id and @c name non-empty.
 * @param buf_out receives the encoded bytes.
 * @param len_out receives their length.
 * @return SAGA_OK; SAGA_EINVAL (NULL argument, unknown kind, empty or
 *   unterminated string, outcome out of range, NULL payload with a length,
 *   payload over 4 GiB); SAGA_EVERSION (@c v is neither 0 nor 1);
 *   SAGA_ENOMEM.
 * Ownership: @p *buf_out comes from saga_malloc(); the caller frees it with
 * saga_free(). On error nothing is allocated and @p *buf_out is NULL.
 * Since: 0.1.
 */
SAGA_EXTERN int saga_envelope_encode(const saga_envelope *env, void **buf_out,
                                     size_t *len_out);

/**
 * Decode one envelope that fills @p buf exactly.
 * @param out receives the message; zeroed on any error but SAGA_EINVAL.
 * @param buf the bytes (may be NULL only if @p len is 0).
 * @param len their length.
 * @param max_payload the largest payload accepted, in bytes; 0 means
 *   SAGA_ENVELOPE_PAYLOAD_MAX_DEFAULT. The whole message may be at most
 *   max_payload + SAGA_ENVELOPE_OVERHEAD_MAX bytes.
 * @param why if not NULL, receives a static English reason on error, or
 *   NULL on success (for logs).
 * @return SAGA_OK; SAGA_EINVAL (@p out NULL, or @p buf NULL with a length);
 *   SAGA_EVERSION (a well-formed map whose @c v is a non-negative integer
 *   other than 1); SAGA_ECORRUPT (anything else wrong: not msgpack,
 *   truncated, trailing bytes, not a map, a non-string key, a duplicate
 *   key, a missing or mistyped field, an over-long string, an oversized
 *   payload or message, nesting too deep). Never SAGA_ENOMEM: decoding
 *   allocates nothing (the strings are copied into @p out's arrays).
 * Ownership: @c out->payload is borrowed from @p buf; copy it to keep it
 * longer than @p buf lives. The strings are copies in @p out. No state is kept between
 * calls, so a rejected message never affects the next decode.
 * Thread-safe. Since: 0.1.
 */
SAGA_EXTERN int saga_envelope_decode(saga_envelope *out, const void *buf,
                                     size_t len, size_t max_payload,
                                     const char **why);

/** "command", "reply", "event", or "unknown". Since: 0.1.
 * Ownership: a static string, the library's. */
SAGA_EXTERN const char *saga_msg_kind_name(saga_msg_kind kind);

#define SAGA_CODEC_COUNTERS_VERSION 1
#define SAGA_CODEC_COUNTERS_INIT SAGA_INIT_VERSION(SAGA_CODEC_COUNTERS_VERSION)

/**
 * Process-wide decode counters (relaxed atomics: each one is exact, a
 * snapshot of several is not taken at one instant).
 */
typedef struct saga_codec_counters {
    unsigned int version;   /* set by the caller: SAGA_CODEC_COUNTERS_VERSION */
    uint64_t decoded;       /* accepted messages */
    uint64_t rej_malformed; /* not msgpack, truncated, trailing bytes, not a
                               map, non-string key, nesting too deep */
    uint64_t rej_oversize;  /* message, payload or a string over its limit */
    uint64_t rej_version;   /* v is not 1 (SAGA_EVERSION) */
    uint64_t rej_type;      /* a known key with a wrong type or value */
    uint64_t rej_missing;   /* a required key absent */
    uint64_t rej_duplicate; /* a key present twice */
    uint64_t rej_invalid;   /* SAGA_EINVAL: bad arguments */
} saga_codec_counters;

/**
 * Copy the decode counters into @p out, up to out->version.
 * @param out  caller memory, its version set (SAGA_CODEC_COUNTERS_INIT).
 * @return SAGA_OK, SAGA_EINVAL (@p out is NULL), SAGA_EVERSION
 *   (out->version 0 or newer than this library).
 * Ownership: @p out is the caller's. Since: 0.1 (versioned since 0.2).
 */
SAGA_EXTERN int saga_codec_stats(saga_codec_counters *out);

/** Reset every decode counter to zero (tests, metrics scrapes). Since: 0.1.
 * Ownership: none. */
SAGA_EXTERN void saga_codec_stats_reset(void);

SAGA_END_DECL

#endif /* SAGA_CODEC_H */

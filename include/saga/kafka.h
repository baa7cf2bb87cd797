/*
 * kafka.h — the Kafka transport on librdkafka (library saga_kafka, built
 * when librdkafka is found; CMake option SAGA_WITH_KAFKA).
 *
 * Topics: a message sent to topic T goes to the Kafka topic named by the
 * topic map (saga_kafka_options.topics), else to topic_prefix + T. The
 * message key is the key given to send (the saga id, for the engine's
 * messages), so one saga's messages stay in order on one partition.
 *
 * Producer: idempotent (enable.idempotence=true, acks=all). A send's
 * saga_sent_cb runs with SAGA_OK once the broker has acknowledged it.
 *
 * Consumer: one Kafka consumer per subscribed group (group.id = the
 * group). Offsets are never committed automatically: a partition's offset
 * is committed up to (not past) its lowest delivery that is not acked yet,
 * a few times a second and when the transport closes. Deliveries may be
 * acked in any order. On a rebalance the acked offsets of the revoked
 * partitions are committed; what was delivered and not acked is not
 * committed and goes to the partition's new owner (the inbox makes the
 * second delivery harmless). Acks of deliveries from a partition that was
 * revoked only free them.
 *
 * Threading: librdkafka's queues are bridged to the loop (an fd per queue
 * watched with uv_poll, polled with timeout 0), so every callback runs on
 * the loop thread and no slot waits for the network. Handles are destroyed
 * on the libuv thread pool when the transport closes.
 *
 * Nothing here assumes librdkafka's mock cluster: tests use it through
 * bootstrap.servers like a real cluster.
 */
#ifndef SAGA_KAFKA_H
#define SAGA_KAFKA_H

#include "saga/saga.h"

struct uv_loop_s;

SAGA_BEGIN_DECL

/** A librdkafka property (name=value), applied to the producer and to
 * every consumer (librdkafka ignores, with a log line, a property of the
 * other client type). */
typedef struct saga_kafka_property {
    const char *name;
    const char *value;
} saga_kafka_property;

/** A topic map entry: saga topic @c name is Kafka topic @c kafka_topic. */
typedef struct saga_kafka_topic {
    const char *name;
    const char *kafka_topic;
} saga_kafka_topic;

#define SAGA_KAFKA_OPTIONS_VERSION 1
#define SAGA_KAFKA_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_KAFKA_OPTIONS_VERSION)

/** Kafka transport options. Zero (or NULL) in any field selects its
 * default. Strings and arrays are copied. */
typedef struct saga_kafka_options {
    unsigned int version;
    /** "kafka://host:port[,host:port...][?prop=value&prop=value]": the
     * bootstrap servers and librdkafka properties (values %-decoded).
     * Applied before @c properties, which win. May be NULL if
     * bootstrap.servers is among the properties. */
    const char *url;
    /** librdkafka properties, for example {"linger.ms", "5"}. */
    const saga_kafka_property *properties;
    size_t nproperties;
    /** Saga topic to Kafka topic; topics not listed get topic_prefix. */
    const saga_kafka_topic *topics;
    size_t ntopics;
    /** Prefix of Kafka topic names not in the map; default "" (none). */
    const char *topic_prefix;
    /** How often acked offsets are committed; default 100 ms. */
    uint32_t commit_interval_ms;
    /** Close waits this long for the last commit and the group leave
     * before it destroys the handles anyway; default 5000 ms. */
    uint32_t close_timeout_ms;
    /** Sends not yet confirmed before send returns SAGA_EFULL; default
     * 100000 (librdkafka's queue.buffering.max.messages). */
    uint32_t max_queue_msgs;
    /** Largest message accepted by send; default 4 MiB (librdkafka's
     * message.max.bytes is set above it). A broker's own limit
     * (message.max.bytes, 1 MB by default on Kafka) still applies. */
    uint32_t max_message_size;
    /** Per consumer, deliveries not acked yet before fetching pauses;
     * default 100000. */
    uint32_t max_unacked;
    /** Log sink; default: none. */
    /** Log sink (saga.h; saga_id NULL, step -1); librdkafka's own log
     * lines arrive here too, on the loop thread. Since: 0.2. */
    saga_log_fn log;
    void *log_arg;
} saga_kafka_options;

/** Zero @p opts and set its version. @return SAGA_OK, SAGA_EINVAL or
 * SAGA_EVERSION.
 * Ownership: @p opts is the caller's. Since: 0.2. */
SAGA_EXTERN int saga_kafka_options_init(saga_kafka_options *opts,
                                        unsigned int version);

/**
 * A Kafka transport on @p loop. The producer is made at once; a consumer
 * per group on the first subscribe with that group. Nothing here waits for
 * a broker: an unreachable cluster shows as sends that are not confirmed
 * (and librdkafka's log lines).
 * @param opts options; NULL is not allowed (bootstrap servers are needed).
 * @return SAGA_OK, SAGA_EINVAL (a bad URL, option or property; the detail
 * goes to opts->log), SAGA_EVERSION, SAGA_ETRANSPORT (librdkafka refused
 * to make a client) or SAGA_ENOMEM.
 * Ownership: the caller owns *out and closes it with its close slot (or
 * saga_transport_free()); the loop must run until it is gone. @p opts and
 * its strings stay the caller's. Since: 0.2.
 */
SAGA_EXTERN int saga_transport_kafka_new(saga_transport **out,
                                         struct uv_loop_s *loop,
                                         const saga_kafka_options *opts);

#define SAGA_KAFKA_COUNTERS_VERSION 1

/** Counters since the transport was made. */
typedef struct saga_kafka_counters {
    unsigned int version;   /* set by the caller: SAGA_KAFKA_COUNTERS_VERSION */
    uint64_t sent;          /* sends confirmed by the broker */
    uint64_t send_failed;   /* sends whose callback got an error */
    uint64_t received;      /* deliveries handed to subscribers */
    uint64_t acked;         /* deliveries acked */
    uint64_t stale_acks;    /* acks of deliveries from a revoked partition */
    uint64_t commits;       /* offset commits confirmed */
    uint64_t commit_errors; /* offset commits that failed (retried) */
    uint64_t rebalances;    /* assignments and revocations */
    uint64_t errors;        /* client errors reported by librdkafka */
    uint64_t skipped;       /* redeliveries not handed over: acked here
                             before their partition was revoked and came
                             back */
    uint32_t assigned;      /* partitions assigned right now, all groups */
    uint32_t groups;        /* consumers (groups) */
} saga_kafka_counters;

/** Copy the counters into @p out (up to out->version). @return SAGA_OK,
 * SAGA_EINVAL (not a Kafka transport, or NULL) or SAGA_EVERSION.
 * Ownership: @p out is the caller's. Since: 0.2. */
SAGA_EXTERN int saga_transport_kafka_stats(saga_transport *t,
                                           saga_kafka_counters *out);

SAGA_END_DECL

#endif /* SAGA_KAFKA_H */

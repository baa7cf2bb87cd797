/*
 * kafka_int.h — internals of the Kafka transport shared by its two files:
 * options, configuration and the vtable slots (kafka_api.c), and the
 * librdkafka side — queue bridges, producer, consumers, offsets
 * (kafka_io.c). The behaviour is documented in include/saga/kafka.h.
 */
#ifndef SAGA_KAFKA_INT_H
#define SAGA_KAFKA_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <librdkafka/rdkafka.h>

#include "saga/kafka.h"
#include "util.h"

/* ---- lists: lib/util.h's, under this file's short names ------------------ */

typedef saga__list klink;
#define KCONTAINER SAGA__CONTAINER
#define kl_init saga__list_init
#define kl_empty saga__list_empty
#define kl_push_back saga__list_push_back
#define kl_remove saga__list_remove
#define kl_pop_front saga__list_pop_front

/* ---- types --------------------------------------------------------------- */

typedef struct kafka_t kafka_t;
typedef struct kgroup kgroup;

/* An rd_kafka_t with its event queue bridged to the loop: librdkafka writes
 * a byte to fds[1] when the queue becomes non-empty; uv_poll watches
 * fds[0]; the loop then polls the queue with timeout 0. */
typedef struct kclient {
    kafka_t *t;
    kgroup *g; /* NULL for the producer */
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int fds[2];
    uv_poll_t poll;
    uv_timer_t timer; /* consumer: commits; both: polling while closing */
    uv_work_t work;   /* rd_kafka_destroy on the thread pool */
    int handles;      /* open uv handles (poll, timer) */
    int busy;         /* thread-pool jobs using rk (topic warm-ups) */
    int state;        /* KC_* */
    uint64_t close_deadline; /* loop time */
} kclient;

enum { KC_RUN = 0, KC_COMMITTING, KC_LEAVING, KC_DESTROYING, KC_DONE };

/* A send waiting for its delivery report. */
typedef struct kout {
    klink node; /* t->inflight, then t->completed */
    saga_sent_cb cb;
    void *arg;
    int status;
} kout;

typedef struct ksub {
    klink node;   /* g->subs */
    char *topic;  /* the saga topic */
    char *ktopic; /* the Kafka topic */
    saga_recv_cb cb;
    void *arg;
} ksub;

/* One assigned partition: its deliveries not acked yet, in offset order. */
typedef struct kpart {
    klink node; /* g->parts while assigned */
    kgroup *g;
    char *ktopic;
    int32_t partition;
    klink pending;     /* saga_delivery */
    int64_t next;      /* offset after the last one delivered; -1: none */
    int64_t requested; /* offset in the last commit request; -1: none */
    int64_t committed; /* offset the broker confirmed; -1: none */
    int64_t floor;     /* offsets below were acked here before; -1 */
    int revoked;
    unsigned refs; /* pending deliveries, plus 1 while assigned */
} kpart;

/* What a revoked partition had acked, in case it comes back to us (the
 * commit made at revocation may have failed: a rebalance in progress). */
typedef struct kfloor {
    char *ktopic;
    int32_t partition;
    int64_t offset;
} kfloor;

#define SAGA__KAFKA_DELIVERY_MAGIC 0x53414b44u /* "SAKD" */

struct saga_delivery {
    klink node; /* p->pending */
    uint32_t magic;
    kafka_t *t;
    kpart *p;
    int64_t offset;
    char *key;
    void *buf;
    size_t len;
};

struct kgroup {
    klink node; /* t->groups */
    kafka_t *t;
    char *name;
    kclient c;
    klink subs;  /* ksub */
    klink parts; /* kpart, assigned */
    uint32_t unacked;
    int paused;
    int dead; /* its client failed or was closed: not found by name */
    int commits_inflight;
    uint32_t assigned;
    kfloor *floors;
    size_t nfloors;
};

struct kafka_t {
    saga_transport base; /* first */
    uv_loop_t *loop;
    saga_kafka_options o;
    char *prefix;
    saga_kafka_topic *topics; /* copies */
    size_t ntopics;
    saga_kafka_property *props; /* URL's, then the options' (copies) */
    size_t nprops;
    kclient prod;
    char **known; /* Kafka topics sent to (warmed up), up to KNOWN_MAX */
    size_t nknown;
    klink groups;    /* kgroup */
    klink inflight;  /* kout */
    klink completed; /* kout, callback due (after close) */
    uv_idle_t pump;  /* runs completed callbacks */
    int pump_open;
    int closing;
    int live; /* clients not finished, plus the pump handle */
    saga_kafka_counters st;
    char err[512];
};

/* ---- kafka_api.c --------------------------------------------------------- */

void saga__kafka_log(kafka_t *t, saga_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int saga__kafka_set_err(kafka_t *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A configuration for a producer (@p group NULL) or a consumer of @p
 * group. @return NULL with t->err set on a bad property. */
rd_kafka_conf_t *saga__kafka_conf(kafka_t *t, const char *group);
/* A client finished (its handles closed, its rd_kafka_t destroyed). */
void saga__kafka_client_done(kafka_t *t);

/* ---- kafka_io.c ---------------------------------------------------------- */

/* Make @p c's rd_kafka_t from @p conf (consumed) and bridge its queue. */
int saga__kafka_client_open(kafka_t *t, kclient *c, kgroup *g,
                            rd_kafka_conf_t *conf);
/* Begin closing a client: flush commits, leave the group, destroy. */
void saga__kafka_client_close(kclient *c);
int saga__kafka_group_subscribe(kgroup *g);
void saga__kafka_ack(kafka_t *t, saga_delivery *d);
void saga__kafka_delivery_free(saga_delivery *d);
void saga__kafka_part_unref(kpart *p);
void saga__kafka_pump_kick(kafka_t *t);
void saga__kafka_pump_close(kafka_t *t);
/* First send to Kafka topic @p kt: fetch its metadata now, off the loop,
 * instead of when librdkafka's once-a-second topic scan gets to it. */
void saga__kafka_warm_topic(kafka_t *t, const char *kt);

#endif /* SAGA_KAFKA_INT_H */

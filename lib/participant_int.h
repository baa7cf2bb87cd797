/*
 * participant_int.h — the participant's private state, shared by
 * participant.c (API, life-cycle, the batch) and participant_msg.c (one
 * message inside the batch transaction: inbox, barrier, handler, reply).
 */
#ifndef SAGA_PARTICIPANT_INT_H
#define SAGA_PARTICIPANT_INT_H

#include <uv.h>

#include "internal.h"
#include "relay.h"
#include "saga/codec.h"
#include "saga/participant.h"

typedef struct handler {
    char *name;  /* command or event name; NULL: every event */
    char *topic; /* events: the topic */
    char *group;
    saga_command_fn cmd;
    saga_event_fn ev;
    void *arg;
    void *ev_owner; /* events: the participant */
    struct handler *next;
} handler;

/* A received message waiting for the end of the loop turn. */
typedef struct item {
    saga_delivery *d;
    saga_envelope env; /* payload borrowed from the delivery */
    handler *ev;       /* set for an event subscription */
    struct item *next;
} item;

struct saga_reply {
    saga_outcome outcome;
    void *out;
    size_t out_len;
    char *error;
};

struct saga_participant {
    uv_loop_t *loop;
    saga_store *store;
    saga_transport *transport;
    saga_participant_options opts;
    saga__relay *relay;
    handler *handlers;
    item *head, **tail;                  /* received, not yet committed */
    saga__outmsg *ext, **ext_tail;       /* published outside a handler */
    saga__outmsg *txn, **txn_tail;       /* replies written this batch */
    saga__outmsg *txn_ev, **txn_ev_tail; /* events from handlers */
    saga__outmsg *resend;                /* recorded replies of duplicates */
    char **done;
    size_t ndone, cdone;
    int in_handler, started, closing, nclosing;
    uv_idle_t idle;
    uv_check_t check;
    uv_timer_t retry;
    uv_timer_t done_timer; /* commits outbox deletes when idle */
    uint32_t backoff_ms;
    uint64_t rng;
    saga_participant_stats stats;
    const saga_envelope *cur; /* the message being processed (logs) */
    void (*close_cb)(void *);
    void *close_arg;
    char errmsg[512];
};

void saga__plog(saga_participant *p, saga_log_level lvl, const char *id,
                int step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int64_t saga__pnow(saga_participant *p);
/* trace.c: a participant log line as a structured event. */
void saga__plog_event(saga_participant *p, saga_log_level lvl,
                      const char *id, int step, const char *msg);
/* Encode @p env into a new outgoing message for @p topic. */
int saga__pencode(saga_participant *p, saga_envelope *env, const char *topic,
                  const char *key, saga__outmsg **out);
void saga__pappend(saga__outmsg ***tail, saga__outmsg *m);
handler *saga__pfind_cmd(saga_participant *p, const char *name);
/* Process one received command or event in the open transaction. */
int saga__pcommand(saga_participant *p, item *it);
int saga__pevent(saga_participant *p, item *it);

#endif /* SAGA_PARTICIPANT_INT_H */

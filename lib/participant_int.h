/*
 * participant_int.h — the participant's private state, shared by
 * participant.c (API, life-cycle, the batch) and participant_msg.c (one
 * message inside the batch transaction: inbox, barrier, handler, reply).
 */
#ifndef SAGA_PARTICIPANT_INT_H
#define SAGA_PARTICIPANT_INT_H

#include <uv.h>

#include "gcommit.h"
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
    saga_delivery *d;  /* NULL for a re-driven pending command */
    saga_envelope env; /* payload borrowed from the delivery (or own) */
    const void *raw;   /* the message as received (borrowed, or own) */
    size_t raw_len;
    void *own;          /* a re-driven command's bytes, owned */
    handler *ev;        /* set for an event subscription */
    saga_deferred *dfr; /* the handle its handler deferred in this batch */
    /* Its reply in the running batch, queued without an outbox row: the
     * delivery is acked once the transport confirms the reply (relay.h). */
    struct saga__outmsg *reply;
    /* A handler that returned an error (participant.c isolates it). */
    int hfail;      /* its handler failed in the running batch */
    int give_up;    /* out of tries: answer FAIL without calling it */
    int herr_rc;    /* what the handler returned */
    unsigned tries; /* failed tries so far */
    uint64_t due;   /* parked until (uv_now) */
    char herr[256]; /* the error text it set with saga_reply_set() */
    /* Its inbox claim, made ahead by the batch's part_read (store version
     * 9, participant_pipe.c): pf set, pf_rc the claim's result, pf_reply
     * the recorded reply of a duplicate (owned). */
    int pf, pf_rc;
    void *pf_reply;
    size_t pf_len;
    struct item *next;
} item;

struct saga_reply {
    saga_outcome outcome;
    void *out;
    size_t out_len;
    char *error;
    /* Set for a handler's reply: saga_reply_defer() needs them. */
    saga_participant *p;
    item *it;
    saga_deferred *deferred;
};

/* Life of a deferred handle (participant_defer.c). */
enum dstate {
    D_NEW = 1, /* its handler's transaction is not committed yet */
    D_PENDING, /* committed: waits for the answer */
    D_VOID     /* that transaction was rolled back: answering does nothing */
};

struct saga_deferred {
    saga_participant *p; /* NULL once the participant is freed */
    enum dstate state;
    int answered;      /* the answer below is set: the participant owns it */
    saga_envelope env; /* copy; payload points at @payload */
    void *payload;
    saga_command cmd; /* strings point into @env */
    saga_outcome outcome;
    void *out;
    size_t out_len;
    char *error;
    struct saga_deferred *prev, *next; /* every handle of the participant */
    struct saga_deferred *anext;       /* the answer queue */
    /* The queued item whose handler made it (that item's dfr is this
     * handle) while it is queued; NULL once the item is freed. */
    struct item *it;
    /* Made in the running batch (D_NEW; participant's fresh list): the
     * batch's commit or rollback looks at these only, not at every live
     * handle (those waiting for their answer can be thousands). */
    struct saga_deferred *nnext;
    int infresh;
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
    item *hold; /* the command being processed, if its delivery can be held */
    char **done;
    size_t ndone, cdone;
    saga_deferred *defs;                    /* every live deferred handle */
    saga_deferred *answers, **answers_tail; /* answered, to record */
    saga_deferred *answering;               /* recorded in the running batch */
    saga_deferred *fresh; /* made in the running batch (nnext) */
    int in_handler, started, closing, nclosing;
    int close_asked;       /* saga_participant_close() ran (maybe deferred) */
    int rerun;             /* the batch is run again without a failed handler */
    saga__gc gc;           /* group commit: when the batch commits */
    uv_timer_t done_timer; /* commits outbox deletes when idle */
    item *parked;          /* failed handlers waiting for their next try */
    uv_timer_t park_timer;
    uv_timer_t hk_timer;            /* housekeeping */
    saga_participant_counters snap; /* stats when the batch began */
    uint64_t rng;
    saga_participant_counters stats;
    const saga_envelope *cur; /* the message being processed (logs) */
    void (*close_cb)(void *);
    void *close_arg;
    char errmsg[512];

    /* One loop turn stays short (participant.c, max_batch): the first
     * nbatch received messages and the first ndone_batch outbox deletions
     * are in the running batch; the rest wait for the next turn. */
    size_t nbatch, ndone_batch;
    /* Of those nbatch: how many handlers failed (hfail set), and how many
     * items from the head the batch's reads ahead may have marked (pf).
     * Every walk of the queue stops there (issue 8): a batch's work is
     * O(batch), however long the queue behind it. */
    size_t nhfail, pf_upto;
    /* Items of committed batches kept for the next messages (participant.c
     * new_item; at most SPARE_MAX). */
    item *spare;
    size_t nspare;
    /* The running batch's reads made ahead and writes held for the commit
     * (participant_pipe.c); NULL: the slots are called one by one. */
    struct saga__pbatch *pb;
    /* The batch's commit goes out on the loop (store version 11,
     * part_commit_submit; the store is attached to it): the group commit
     * holds it in flight and begins no other batch until its answer. */
    int async;
    /* Events published outside a handler that the running batch wrote
     * (moved aside from ext: what is published during a commit in flight
     * waits for the next batch). */
    saga__outmsg *fl_ext;
    int close_wait;    /* the close waits for the commit in flight */
    int close_gave_up; /* ... no longer: it closes without its answer */
};

void saga__plog(saga_participant *p, saga_log_level lvl, const char *id,
                int step, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int64_t saga__pnow(saga_participant *p);
/* trace.c: a participant log line as a structured event. */
void saga__plog_event(saga_participant *p, saga_log_level lvl, const char *id,
                      int step, const char *msg);
/* Encode @p env into a new outgoing message for @p topic. */
int saga__pencode(saga_participant *p, saga_envelope *env, const char *topic,
                  const char *key, saga__outmsg **out);
void saga__pappend(saga__outmsg ***tail, saga__outmsg *m);
handler *saga__pfind_cmd(saga_participant *p, const char *name);
/* Process one received command or event in the open transaction. */
int saga__pcommand(saga_participant *p, item *it);
int saga__pevent(saga_participant *p, item *it);
/* Build, record (inbox) and queue (outbox) the reply to command @p env. */
int saga__preply(saga_participant *p, const saga_envelope *env, saga_outcome oc,
                 const void *out, size_t out_len, const char *error);
void saga__pschedule(saga_participant *p);

/* participant_keep.c: barrier rows carry the time of their last write. */
/* Read the barrier of @p key (*val NULL, *len 0 if none; free *val). */
int saga__pbar_get(saga_participant *p, const char *key, void **val,
                   size_t *len);
/* Write it, stamped with the clock; an empty value deletes it. */
int saga__pbar_put(saga_participant *p, const char *key, const void *val,
                   size_t len);
/* The value inside a stored row (as kv_scan hands it). */
const void *saga__pbar_value(const void *val, size_t len, size_t *inner_len);

/* participant_defer.c */
/* The barrier key of (saga, step). */
void saga__pbarrier_key(char *buf, size_t n, const char *saga_id,
                        uint32_t step);
/* The value of a pending barrier: 'P', the previous value, the command. */
int saga__pbarrier_pending(const void *prev, size_t prev_len, const void *raw,
                           size_t raw_len, void **out, size_t *out_len);
/* Split a pending barrier value; 0 if it is malformed. */
int saga__pbarrier_split(const void *val, size_t len, const void **prev,
                         size_t *prev_len, const void **raw, size_t *raw_len);
/* Copies of a handler's answer (output map and error text, either may be
 * empty) for saga_reply_set() and saga_deferred_reply(): SAGA_OK, or
 * SAGA_ENOMEM with nothing allocated. */
int saga__answer_dup(const void *out, size_t out_len, const char *error,
                     void **out_copy, char **err_copy);
/* Record the answers queued since the last batch (in the transaction). */
int saga__pdefer_record(saga_participant *p);
/* The batch committed / was rolled back. */
void saga__pdefer_committed(saga_participant *p);
void saga__pdefer_rolled_back(saga_participant *p);
/* A handle @p d made in a command whose writes were undone. */
void saga__pdefer_void(saga_participant *p, saga_deferred *d);
/* @p it is run again or freed: it and the handle its handler deferred
 * (it->dfr) forget each other. */
void saga__pdefer_unlink_item(item *it);
/* Queue the pending commands found in the store to be driven again. */
int saga__pdefer_redrive(saga_participant *p);
/* The participant is being freed: detach the app's handles. */
void saga__pdefer_detach(saga_participant *p);

/* participant_pipe.c: the batch in few round trips (store version 9:
 * part_read, part_commit; version 11: part_commit_submit). While a batch runs with them, the inbox claims
 * and barrier reads of its messages are made ahead in one round trip per
 * chunk, and its writes are held and sent with the commit; reads of a
 * barrier written in the batch see the held write. Without them (an older
 * store, or a batch with savepoints) every call goes to its slot. */
/* Start holding for this batch if the store can; SAGA_OK or SAGA_ENOMEM. */
int saga__pb_start(saga_participant *p, int sp);
/* Drop what the batch held (after its commit or rollback). */
void saga__pb_end(saga_participant *p);
/* Whether the batch holds (its reads are made ahead). */
int saga__pb_on(const saga_participant *p);
/* Make the claims and barrier reads of up to @p n items from @p from
 * ahead; *@p done gets how many. */
int saga__pb_prefetch(saga_participant *p, item *from, size_t n, size_t *done);
/* The claim of @p it (made ahead, or inbox_claim now); as inbox_claim. */
int saga__pinbox_claim(saga_participant *p, item *it, const char *id,
                       saga_blob_cb cb, void *arg);
/* The event claim id of @p it ("msg@topic/group"). */
void saga__pevent_claim_id(const item *it, char *buf, size_t n);
/* The store's slots, or held for the commit (in the batch). */
int saga__pkv_get(saga_participant *p, const char *key, saga_blob_cb cb,
                  void *arg);
int saga__pkv_put(saga_participant *p, const char *key, const void *val,
                  size_t len);
int saga__pkv_del(saga_participant *p, const char *key);
int saga__pinbox_reply(saga_participant *p, const char *id, const void *buf,
                       size_t len);
int saga__poutbox_put(saga_participant *p, const saga_message *m);
int saga__poutbox_done(saga_participant *p, const char *id);
/* Commit the batch: part_commit_submit with what it held (the commit goes
 * out on the loop: SAGA__GC_SUBMITTED, and the group commit gets its
 * answer from the store's callback), part_commit, or commit. */
int saga__pb_commit(saga_participant *p);

#endif /* SAGA_PARTICIPANT_INT_H */

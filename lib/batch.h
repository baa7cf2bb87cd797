/*
 * batch.h — a group-commit batch as data: the sagas staged (linked through
 * their saga__inst), journal entries, idempotency keys, effects, outbox
 * messages and outbox deletes, and the arrays a store's write_batch or
 * submit_batch takes. The engine keeps two: the open one (staging) and the
 * one taken for commit.
 *
 * This layer sits on instance.h and relay.h's saga__outmsg, and sees no
 * engine: no loop, log, clock or metrics. What it needs from above comes in
 * as parameters (the time, the store); what the engine does around staging
 * (scheduling a commit, the timer heap, metrics) is commit.c's.
 */
#ifndef SAGA_BATCH_H
#define SAGA_BATCH_H

#include "instance.h"
#include "relay.h"

typedef struct saga__jentry {
    saga_journal_entry e;
    char saga_id[SAGA_ID_SIZE];
    char *error; /* owned */
} saga__jentry;

typedef struct saga__idem {
    char *key;
    char saga_id[SAGA_ID_SIZE];
    int64_t created_ms;
} saga__idem;

/* A group-commit batch: everything staged since the last commit. */
typedef struct saga__batch {
    saga__inst *head, **tail; /* dirty instances, in staging order */
    size_t ninst;
    saga__jentry *journal;
    size_t njournal, cjournal;
    saga__idem *idem;
    size_t nidem, cidem;
    saga__effect *effects;
    size_t neffects, ceffects;
    saga__outmsg *out_head, **out_tail; /* outbox rows to write */
    char **done_ids;                    /* outbox rows to delete */
    size_t ndone, cdone;
    /* The oldest updated_ms of an ended saga that saga_start() returned
     * (existed=1) for this batch; purges spare it until the batch is
     * released. 0: none. */
    int64_t pin_ms;
} saga__batch;

/* The arrays handed to write_batch/submit_batch, kept from batch to batch. */
typedef struct saga__snapshot {
    saga_record *recs;
    size_t crecs;
    unsigned int *flags;
    size_t cflags;
    saga_idem_entry *idem;
    size_t cidem;
    saga_message *msgs;
    size_t cmsgs;
    saga_journal_entry *jes;
    size_t cjes;
} saga__snapshot;

/* An empty batch (its list tails set). */
void saga__batch_init(saga__batch *b);
/* Free what @p b holds and its arrays; @p b is empty again. */
void saga__batch_free(saga__batch *b);
/* Empty @p b, keeping its arrays (the sagas are only unlinked). */
void saga__batch_reset(saga__batch *b);
/* Anything to write: sagas, journal, keys, outbox rows or deletes. */
int saga__batch_writes(const saga__batch *b);
/* Anything at all: writes, effects or a pin. */
int saga__batch_pending(const saga__batch *b);

/* Staging. None of these changes anything on SAGA_ENOMEM. */
/* Link @p in into @p b (once) and add @p put_flags (SAGA_PUT_*). */
void saga__batch_stage(saga__batch *b, saga__inst *in, unsigned int put_flags);
/* Room for one transition (its journal entries, effects and a key), so
 * that staging it cannot fail half-way. SAGA_OK or SAGA_ENOMEM. */
int saga__batch_reserve(saga__batch *b);
/* Append a journal entry about @p in (its next seq), recorded at
 * @p now_ms. @return the entry, valid until the next append, or NULL
 * (out of memory). */
const saga_journal_entry *saga__batch_journal(saga__batch *b, saga__inst *in,
                                              saga_journal_kind ev,
                                              const char *error,
                                              int64_t now_ms);
int saga__batch_effect(saga__batch *b, const saga__effect *eff);
int saga__batch_idem(saga__batch *b, const char *key, const char *saga_id,
                     int64_t now_ms);
/* Queue an outbox row; @p b takes @p m. */
void saga__batch_outmsg(saga__batch *b, saga__outmsg *m);
/* Delete a published message's outbox row with @p b. */
int saga__batch_outbox_done(saga__batch *b, const char *msg_id);
/* Keep ended sagas updated at or after @p updated_ms from being purged
 * until @p b is released. */
void saga__batch_pin(saga__batch *b, int64_t updated_ms);

/* Commit. */
/* Take @p open for commit into @p commit (which must be empty): the two
 * swap, and @p open gets the spare arrays. @return 1 if it has writes,
 * 0 if only effects. */
int saga__batch_take(saga__batch *commit, saga__batch *open);
/* Put a failed @p commit back in front of @p open, as one batch in staging
 * order that is @p open again. SAGA_OK or SAGA_ENOMEM (nothing moved). */
int saga__batch_put_back(saga__batch *commit, saga__batch *open);
/* @p b as arrays (write_batch, submit_batch) in @p sn; they point into the
 * sagas, valid until those change. SAGA_OK or SAGA_ENOMEM. */
int saga__batch_arrays(saga__batch *b, saga__snapshot *sn,
                       saga_batch_writes *w);
/* Write @p b to @p s synchronously in one transaction (write_batch with
 * @p sn's arrays where the store has it). @return the store's code. */
int saga__batch_write(saga__batch *b, saga__snapshot *sn, saga_store *s);
void saga__snapshot_free(saga__snapshot *sn);

#endif /* SAGA_BATCH_H */

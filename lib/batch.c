/*
 * batch.c — group-commit batches as data (batch.h): staging transitions
 * into a batch, taking it for commit, writing it (in one store transaction,
 * or as the arrays a store submits asynchronously), and putting a failed
 * one back. gcommit.c decides when; commit.c (the engine) releases what a
 * committed batch holds. Nothing here sees the engine.
 *
 * Every transition staged during a loop turn lands in one batch. Only after
 * its commit are the batch's effects released: actions invoked, start and
 * completion callbacks called, deliveries acked, outbox messages handed to
 * the relay, timers armed. A failed commit is put back in front of what was
 * staged since and the whole is written again later; nothing was released.
 * With an asynchronous store the next batch is staged while one is in
 * flight: a saga can then be in both (in_commit and in_batch).
 */
#include <string.h>

#include "batch.h"

/* ------------------------------------------------------------------------ */
/* Staging                                                                  */

void saga__batch_stage(saga__batch *b, saga__inst *in, unsigned int put_flags)
{
    in->put_flags |= put_flags | 0x100u; /* 0x100: dirty even if no flags */
    if (!in->in_batch) {
        in->in_batch = 1;
        in->batch_next = NULL;
        *b->tail = in;
        b->tail = &in->batch_next;
        b->ninst++;
    }
}

/* Room for @p room more items in an array holding @p n of @p cap (the
 * check inline: it runs on every transition). */
#define RESERVE(arr, n, cap, room)                                             \
    ((n) + (room) <= (cap)                                                     \
         ? SAGA_OK                                                             \
         : saga__array_grow(&(arr), &(cap), (n) + (room), sizeof *(arr), 64))
#define GROW(arr, n, cap) ((n) < (cap) ? SAGA_OK : RESERVE(arr, n, cap, 1))

const saga_journal_entry *saga__batch_journal(saga__batch *b, saga__inst *in,
                                              saga_journal_kind ev,
                                              const char *error, int64_t now_ms)
{
    if (GROW(b->journal, b->njournal, b->cjournal) != SAGA_OK)
        return NULL;
    saga__jentry *j = &b->journal[b->njournal];
    memset(j, 0, sizeof *j);
    /* Out of memory for the text: the entry is kept without it. */
    j->error = saga__strdup(error);
    memcpy(j->saga_id, in->id, SAGA_ID_SIZE);
    int saga_level = ev == SAGA_JOURNAL_STARTED ||
                     ev == SAGA_JOURNAL_COMPLETED ||
                     ev == SAGA_JOURNAL_COMPENSATING ||
                     ev == SAGA_JOURNAL_COMPENSATED ||
                     ev == SAGA_JOURNAL_FAILED ||
                     ev == SAGA_JOURNAL_OPERATOR_RETRY ||
                     ev == SAGA_JOURNAL_OPERATOR_COMPENSATE ||
                     ev == SAGA_JOURNAL_OPERATOR_RESOLVE;
    j->e.seq = ++in->jseq;
    j->e.kind = ev;
    j->e.step = saga_level ? -1 : in->step;
    j->e.attempt = saga_level ? 0 : in->attempt;
    j->e.started_ms = saga_level ? 0 : in->started_ms;
    j->e.at_ms = now_ms;
    b->njournal++;
    return &j->e;
}

/* Room for one transition: the most journal entries one writes (a step
 * outcome, COMPENSATING, a compensation outcome, the end) and effects. */
#define RESERVE_JOURNAL 8
#define RESERVE_EFFECTS 4

int saga__batch_reserve(saga__batch *b)
{
    if (RESERVE(b->journal, b->njournal, b->cjournal, RESERVE_JOURNAL) !=
            SAGA_OK ||
        RESERVE(b->effects, b->neffects, b->ceffects, RESERVE_EFFECTS) !=
            SAGA_OK ||
        RESERVE(b->idem, b->nidem, b->cidem, 1) != SAGA_OK)
        return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__batch_effect(saga__batch *b, const saga__effect *eff)
{
    if (GROW(b->effects, b->neffects, b->ceffects) != SAGA_OK)
        return SAGA_ENOMEM;
    b->effects[b->neffects++] = *eff;
    return SAGA_OK;
}

int saga__batch_idem(saga__batch *b, const char *key, const char *saga_id,
                     int64_t now_ms)
{
    if (GROW(b->idem, b->nidem, b->cidem) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__idem *d = &b->idem[b->nidem];
    d->key = saga__strdup(key);
    if (d->key == NULL)
        return SAGA_ENOMEM;
    memcpy(d->saga_id, saga_id, SAGA_ID_SIZE);
    d->created_ms = now_ms;
    b->nidem++;
    return SAGA_OK;
}

void saga__batch_outmsg(saga__batch *b, saga__outmsg *m)
{
    m->next = NULL;
    *b->out_tail = m;
    b->out_tail = &m->next;
}

int saga__batch_outbox_done(saga__batch *b, const char *msg_id)
{
    char *id = saga__strdup(msg_id);
    if (id == NULL || GROW(b->done_ids, b->ndone, b->cdone) != SAGA_OK) {
        saga_free(id);
        return SAGA_ENOMEM;
    }
    b->done_ids[b->ndone++] = id;
    return SAGA_OK;
}

void saga__batch_pin(saga__batch *b, int64_t updated_ms)
{
    if (updated_ms <= 0)
        updated_ms = 1;
    if (b->pin_ms == 0 || updated_ms < b->pin_ms)
        b->pin_ms = updated_ms;
}

/* ------------------------------------------------------------------------ */
/* Taking a batch for commit, and putting a failed one back                 */

void saga__batch_reset(saga__batch *b)
{
    for (size_t i = 0; i < b->njournal; i++)
        saga_free(b->journal[i].error);
    for (size_t i = 0; i < b->nidem; i++)
        saga_free(b->idem[i].key);
    for (size_t i = 0; i < b->ndone; i++)
        saga_free(b->done_ids[i]);
    while (b->out_head != NULL) {
        saga__outmsg *m = b->out_head;
        b->out_head = m->next;
        saga__outmsg_free(m);
    }
    b->out_tail = &b->out_head;
    b->head = NULL;
    b->tail = &b->head;
    b->ninst = b->njournal = b->nidem = b->neffects = b->ndone = 0;
    b->pin_ms = 0;
}

void saga__batch_free(saga__batch *b)
{
    saga__batch_reset(b);
    saga_free(b->journal);
    saga_free(b->idem);
    saga_free(b->effects);
    saga_free(b->done_ids);
    memset(b, 0, sizeof *b);
    b->tail = &b->head;
    b->out_tail = &b->out_head;
}

int saga__batch_writes(const saga__batch *b)
{
    return b->head != NULL || b->njournal || b->nidem || b->ndone ||
           b->out_head != NULL;
}

int saga__batch_pending(const saga__batch *b)
{
    return saga__batch_writes(b) || b->neffects || b->pin_ms != 0;
}

/* The list tails point into the struct or at its last element: after a
 * struct copy, point them at the copy. */
static void fix_tails(saga__batch *b)
{
    if (b->head == NULL)
        b->tail = &b->head;
    if (b->out_head == NULL)
        b->out_tail = &b->out_head;
}

static void batch_swap(saga__batch *a, saga__batch *b)
{
    saga__batch t = *a;
    *a = *b;
    *b = t;
    fix_tails(a);
    fix_tails(b);
}

/* Append @p s's journal, keys, effects, messages and deletes to @p c, in
 * that order after c's own; @p s keeps its (emptied) arrays. Sagas are
 * linked by the caller. @return SAGA_OK, or SAGA_ENOMEM with nothing moved.
 */
static int batch_append(saga__batch *c, saga__batch *s)
{
    if (RESERVE(c->journal, c->njournal, c->cjournal, s->njournal) != SAGA_OK ||
        RESERVE(c->idem, c->nidem, c->cidem, s->nidem) != SAGA_OK ||
        RESERVE(c->effects, c->neffects, c->ceffects, s->neffects) != SAGA_OK ||
        RESERVE(c->done_ids, c->ndone, c->cdone, s->ndone) != SAGA_OK)
        return SAGA_ENOMEM;
#define MOVE(arr, n)                                                           \
    do {                                                                       \
        if (s->n)                                                              \
            memcpy(c->arr + c->n, s->arr, s->n * sizeof *s->arr);              \
        c->n += s->n;                                                          \
        s->n = 0;                                                              \
    } while (0)
    MOVE(journal, njournal);
    MOVE(idem, nidem);
    MOVE(effects, neffects);
    MOVE(done_ids, ndone);
#undef MOVE
    if (s->out_head != NULL) {
        *c->out_tail = s->out_head;
        c->out_tail = s->out_tail;
        s->out_head = NULL;
        s->out_tail = &s->out_head;
    }
    if (s->pin_ms != 0 && (c->pin_ms == 0 || s->pin_ms < c->pin_ms))
        c->pin_ms = s->pin_ms;
    s->pin_ms = 0;
    return SAGA_OK;
}

/* A failed commit goes back in front of what was staged since, so that the
 * two are written again as one batch in staging order. */
int saga__batch_put_back(saga__batch *c, saga__batch *s)
{
    if (batch_append(c, s) != SAGA_OK)
        return SAGA_ENOMEM;
    /* Sagas: those of the failed batch first, then those staged only
     * since (in_commit 2 marks a saga in both). */
    for (saga__inst *in = c->head; in; in = in->commit_next)
        in->in_commit = 2;
    saga__inst *only = NULL, **ot = &only;
    for (saga__inst *in = s->head; in; in = in->batch_next)
        if (in->in_commit != 2) {
            *ot = in;
            ot = &in->commit_next;
        }
    *ot = NULL;
    saga__inst *head = NULL, **tail = &head;
    size_t n = 0;
    for (saga__inst *in = c->head, *nx; in; in = nx, n++) {
        nx = in->commit_next;
        in->commit_next = NULL;
        in->in_commit = 0;
        in->in_batch = 1;
        in->put_flags |= in->commit_flags;
        in->commit_flags = 0;
        *tail = in;
        tail = &in->batch_next;
    }
    for (saga__inst *in = only, *nx; in; in = nx, n++) {
        nx = in->commit_next;
        in->commit_next = NULL;
        *tail = in;
        tail = &in->batch_next;
    }
    *tail = NULL;
    c->head = head;
    c->tail = head != NULL ? tail : &c->head;
    c->ninst = n;
    s->head = NULL;
    s->tail = &s->head;
    s->ninst = 0;
    batch_swap(c, s); /* the merged batch is the open one again */
    return SAGA_OK;
}

int saga__batch_take(saga__batch *c, saga__batch *open)
{
    batch_swap(c, open); /* open gets the spare arrays */
    for (saga__inst *in = c->head; in; in = in->commit_next) {
        in->commit_next = in->batch_next;
        in->batch_next = NULL;
        in->in_batch = 0;
        in->in_commit = 1;
        in->commit_flags = in->put_flags;
        in->put_flags = 0;
    }
    return saga__batch_writes(c);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */

#define PUT_MASK (SAGA_PUT_INSERT | SAGA_PUT_DATA)

/* The taken batch as arrays (write_batch, submit_batch). They point into
 * the sagas, which may change once the store returns: a store copies what
 * it keeps (the submit_batch contract). The arrays are kept for the next
 * batch. */
int saga__batch_arrays(saga__batch *b, saga__snapshot *sn, saga_batch_writes *w)
{
    size_t nout = 0;
    for (saga__outmsg *m = b->out_head; m; m = m->next)
        nout++;
    if (RESERVE(sn->recs, 0, sn->crecs, b->ninst) != SAGA_OK ||
        RESERVE(sn->flags, 0, sn->cflags, b->ninst) != SAGA_OK ||
        RESERVE(sn->idem, 0, sn->cidem, b->nidem) != SAGA_OK ||
        RESERVE(sn->msgs, 0, sn->cmsgs, nout) != SAGA_OK ||
        RESERVE(sn->jes, 0, sn->cjes, b->njournal) != SAGA_OK)
        return SAGA_ENOMEM;
    size_t i = 0;
    for (saga__inst *in = b->head; in; in = in->commit_next, i++) {
        saga__record_from_inst(in, &sn->recs[i]);
        sn->flags[i] = in->commit_flags & PUT_MASK;
    }
    for (i = 0; i < b->nidem; i++) {
        sn->idem[i].key = b->idem[i].key;
        sn->idem[i].saga_id = b->idem[i].saga_id;
        sn->idem[i].created_ms = b->idem[i].created_ms;
    }
    i = 0;
    for (saga__outmsg *m = b->out_head; m; m = m->next, i++) {
        saga_message msg = {m->id,  m->topic, m->key,
                            m->buf, m->len,   m->created_ms};
        sn->msgs[i] = msg;
    }
    for (i = 0; i < b->njournal; i++) {
        saga__jentry *j = &b->journal[i];
        j->e.saga_id = j->saga_id;
        j->e.error = j->error;
        sn->jes[i] = j->e;
    }
    saga_batch_writes bw = {
        sn->recs, sn->flags, b->ninst,    sn->idem,
        b->nidem, sn->msgs,  nout,        (const char *const *)b->done_ids,
        b->ndone, sn->jes,   b->njournal, NULL,
        0};
    *w = bw;
    return SAGA_OK;
}

int saga__batch_write(saga__batch *b, saga__snapshot *sn, saga_store *s)
{
    if (s->version >= 3 && s->write_batch != NULL) {
        /* A store that writes a batch in one go gets it as arrays. */
        saga_batch_writes w;
        int rc = saga__batch_arrays(b, sn, &w);
        return rc == SAGA_OK ? s->write_batch(s, &w) : rc;
    }
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    for (saga__inst *in = b->head; in && rc == SAGA_OK; in = in->commit_next) {
        saga_record r;
        saga__record_from_inst(in, &r);
        rc = s->saga_put(s, &r, in->commit_flags & PUT_MASK);
    }
    for (size_t i = 0; i < b->nidem && rc == SAGA_OK; i++)
        rc = s->idem_put(s, b->idem[i].key, b->idem[i].saga_id,
                         b->idem[i].created_ms);
    for (saga__outmsg *m = b->out_head; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id,  m->topic, m->key,
                            m->buf, m->len,   m->created_ms};
        rc = s->outbox_put(s, &msg);
    }
    for (size_t i = 0; i < b->ndone && rc == SAGA_OK; i++)
        rc = s->outbox_done(s, b->done_ids[i]);
    for (size_t i = 0; i < b->njournal && rc == SAGA_OK; i++) {
        saga__jentry *j = &b->journal[i];
        j->e.saga_id = j->saga_id;
        j->e.error = j->error;
        rc = s->journal_append(s, &j->e);
    }
    if (rc == SAGA_OK)
        return s->commit(s);
    s->rollback(s);
    return rc;
}

void saga__batch_init(saga__batch *b)
{
    memset(b, 0, sizeof *b);
    b->tail = &b->head;
    b->out_tail = &b->out_head;
}

void saga__snapshot_free(saga__snapshot *sn)
{
    saga_free(sn->recs);
    saga_free(sn->flags);
    saga_free(sn->idem);
    saga_free(sn->msgs);
    saga_free(sn->jes);
    memset(sn, 0, sizeof *sn);
}

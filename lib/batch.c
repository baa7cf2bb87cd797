/*
 * batch.c — the engine's batches: staging transitions into the open batch,
 * and the engine's side of group commit (gcommit.c decides when): taking
 * the batch for commit, writing it (in one store transaction, or submitted
 * to a store that commits asynchronously), and releasing what depends on
 * it.
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

#include "engine_int.h"

/* ------------------------------------------------------------------------ */
/* Staging                                                                  */

static void schedule_flush(saga_engine *e)
{
    if (!e->closing)
        saga__gc_schedule(&e->gc);
}

void saga__stage(saga_engine *e, saga__inst *in, unsigned int put_flags)
{
    in->put_flags |= put_flags | 0x100u; /* 0x100: dirty even if no flags */
    if (!in->in_batch) {
        in->in_batch = 1;
        in->batch_next = NULL;
        *e->batch.tail = in;
        e->batch.tail = &in->batch_next;
        e->batch.ninst++;
    }
    /* A saga with an uncommitted transition has no running timer: its
     * timers restart from what the commit made durable. */
    saga__heap_remove(e, in);
    e->stats.transitions++;
    schedule_flush(e);
}

#define GROW(arr, n, cap)                                                      \
    ((n) < (cap) ? SAGA_OK : grow_array((void **)&(arr), &(cap), sizeof *(arr)))

static int grow_array(void **arr, size_t *cap, size_t elem)
{
    size_t nc = *cap ? *cap * 2 : 64;
    void *na = saga_realloc(*arr, nc * elem);
    if (na == NULL)
        return SAGA_ENOMEM;
    *arr = na;
    *cap = nc;
    return SAGA_OK;
}

int saga__journal(saga_engine *e, saga__inst *in, saga_journal_kind ev,
                  const char *error)
{
    saga__batch *b = &e->batch;
    if (GROW(b->journal, b->njournal, b->cjournal) != SAGA_OK)
        return SAGA_ENOMEM;
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
    j->e.at_ms = saga__now(e);
    saga__metrics_journal(e, in, &j->e);
    b->njournal++;
    return SAGA_OK;
}

/* Room for one transition: the most journal entries one writes (a step
 * outcome, COMPENSATING, a compensation outcome, the end) and effects. */
#define RESERVE_JOURNAL 8
#define RESERVE_EFFECTS 4

static int reserve(void **arr, size_t n, size_t *cap, size_t elem, size_t room)
{
    while (n + room > *cap)
        if (grow_array(arr, cap, elem) != SAGA_OK)
            return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__reserve(saga_engine *e)
{
    saga__batch *b = &e->batch;
    if (reserve((void **)&b->journal, b->njournal, &b->cjournal,
                sizeof *b->journal, RESERVE_JOURNAL) != SAGA_OK ||
        reserve((void **)&b->effects, b->neffects, &b->ceffects,
                sizeof *b->effects, RESERVE_EFFECTS) != SAGA_OK ||
        reserve((void **)&b->idem, b->nidem, &b->cidem, sizeof *b->idem, 1) !=
            SAGA_OK ||
        /* Saga data replaced under a running action goes there. */
        (e->invoking && reserve((void **)&e->graveyard, e->ngrave, &e->cgrave,
                                sizeof *e->graveyard, 1) != SAGA_OK))
        return SAGA_ENOMEM;
    return SAGA_OK;
}

int saga__push_effect(saga_engine *e, const saga__effect *eff)
{
    saga__batch *b = &e->batch;
    if (GROW(b->effects, b->neffects, b->ceffects) != SAGA_OK)
        return SAGA_ENOMEM;
    b->effects[b->neffects++] = *eff;
    schedule_flush(e);
    return SAGA_OK;
}

int saga__stage_idem(saga_engine *e, const char *key, const char *saga_id)
{
    saga__batch *b = &e->batch;
    if (GROW(b->idem, b->nidem, b->cidem) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__idem *d = &b->idem[b->nidem];
    d->key = saga__strdup(key);
    if (d->key == NULL)
        return SAGA_ENOMEM;
    memcpy(d->saga_id, saga_id, SAGA_ID_SIZE);
    d->created_ms = saga__now(e);
    b->nidem++;
    return SAGA_OK;
}

void saga__stage_outmsg(saga_engine *e, saga__outmsg *m)
{
    m->next = NULL;
    *e->batch.out_tail = m;
    e->batch.out_tail = &m->next;
    schedule_flush(e);
}

/* The relay published a message: delete its outbox row with the next
 * batch (losing the delete only means publishing it again). */
void saga__stage_outbox_done(saga_engine *e, const char *msg_id)
{
    saga__batch *b = &e->batch;
    char *id = saga__strdup(msg_id);
    if (id == NULL || GROW(b->done_ids, b->ndone, b->cdone) != SAGA_OK) {
        saga_free(id);
        return;
    }
    b->done_ids[b->ndone++] = id;
    schedule_flush(e);
}

void saga__pin(saga_engine *e, int64_t updated_ms)
{
    if (updated_ms <= 0)
        updated_ms = 1;
    if (e->batch.pin_ms == 0 || updated_ms < e->batch.pin_ms)
        e->batch.pin_ms = updated_ms;
    /* The pin lasts until this batch is released, at the end of the turn. */
    schedule_flush(e);
}

void saga__graveyard(saga_engine *e, void *p)
{
    if (!e->invoking) {
        saga_free(p);
        return;
    }
    if (GROW(e->graveyard, e->ngrave, e->cgrave) != SAGA_OK) {
        /* Leaking beats a use-after-free in the running action. */
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "out of memory: leaked %p", p);
        return;
    }
    e->graveyard[e->ngrave++] = p;
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

static void batch_free(saga__batch *b)
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

static int batch_writes(const saga__batch *b)
{
    return b->head != NULL || b->njournal || b->nidem || b->ndone ||
           b->out_head != NULL;
}

int saga__batch_pending(const saga__batch *b)
{
    return batch_writes(b) || b->neffects || b->pin_ms != 0;
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
    if (reserve((void **)&c->journal, c->njournal, &c->cjournal,
                sizeof *c->journal, s->njournal) != SAGA_OK ||
        reserve((void **)&c->idem, c->nidem, &c->cidem, sizeof *c->idem,
                s->nidem) != SAGA_OK ||
        reserve((void **)&c->effects, c->neffects, &c->ceffects,
                sizeof *c->effects, s->neffects) != SAGA_OK ||
        reserve((void **)&c->done_ids, c->ndone, &c->cdone, sizeof *c->done_ids,
                s->ndone) != SAGA_OK)
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
int saga__batch_put_back(saga_engine *e)
{
    saga__batch *c = &e->commit, *s = &e->batch;
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

/* Take the open batch for commit (e->commit). @return 1 if it has writes,
 * 0 if only effects, SAGA_ENOMEM (a failed batch could not be put back). */
int saga__batch_take(saga_engine *e)
{
    if (e->commit_stuck) {
        if (saga__batch_put_back(e) != SAGA_OK)
            return SAGA_ENOMEM;
        e->commit_stuck = 0;
    }
    batch_swap(&e->commit, &e->batch); /* e->batch gets the spare arrays */
    saga__batch *c = &e->commit;
    for (saga__inst *in = c->head; in; in = in->commit_next) {
        in->commit_next = in->batch_next;
        in->batch_next = NULL;
        in->in_batch = 0;
        in->in_commit = 1;
        in->commit_flags = in->put_flags;
        in->put_flags = 0;
    }
    e->commit_writes = batch_writes(c);
    return e->commit_writes;
}

int saga__batch_open(saga_engine *e)
{
    return e->commit_stuck || saga__batch_pending(&e->batch);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */

#define PUT_MASK (SAGA_PUT_INSERT | SAGA_PUT_DATA)

/* The taken batch as arrays (write_batch, submit_batch). They point into
 * the sagas, which may change once the store returns: a store copies what
 * it keeps (the submit_batch contract). The arrays are kept for the next
 * batch. */
int saga__batch_arrays(saga_engine *e, saga_batch_writes *w)
{
    saga__batch *b = &e->commit;
    struct saga__snapshot *sn = &e->snap;
    size_t nout = 0;
    for (saga__outmsg *m = b->out_head; m; m = m->next)
        nout++;
    if (reserve((void **)&sn->recs, 0, &sn->crecs, sizeof *sn->recs,
                b->ninst) != SAGA_OK)
        return SAGA_ENOMEM;
    if (reserve((void **)&sn->flags, 0, &sn->cflags, sizeof *sn->flags,
                b->ninst) != SAGA_OK ||
        reserve((void **)&sn->idem, 0, &sn->cidem, sizeof *sn->idem,
                b->nidem) != SAGA_OK ||
        reserve((void **)&sn->msgs, 0, &sn->cmsgs, sizeof *sn->msgs, nout) !=
            SAGA_OK ||
        reserve((void **)&sn->jes, 0, &sn->cjes, sizeof *sn->jes,
                b->njournal) != SAGA_OK)
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
    saga_batch_writes bw = {sn->recs,   sn->flags,
                            b->ninst,   sn->idem,
                            b->nidem,   sn->msgs,
                            nout,       (const char *const *)b->done_ids,
                            b->ndone,   sn->jes,
                            b->njournal};
    *w = bw;
    return SAGA_OK;
}

int saga__batch_write(saga_engine *e)
{
    saga_store *s = e->store;
    saga__batch *b = &e->commit;
    if (s->version >= 3 && s->write_batch != NULL) {
        /* A store that writes a batch in one go gets it as arrays. */
        saga_batch_writes w;
        int rc = saga__batch_arrays(e, &w);
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

void saga__batch_init(saga_engine *e)
{
    e->batch.tail = &e->batch.head;
    e->batch.out_tail = &e->batch.out_head;
    e->commit.tail = &e->commit.head;
    e->commit.out_tail = &e->commit.out_head;
}

void saga__batch_fini(saga_engine *e)
{
    batch_free(&e->batch);
    batch_free(&e->commit);
    saga_free(e->snap.recs);
    saga_free(e->snap.flags);
    saga_free(e->snap.idem);
    saga_free(e->snap.msgs);
    saga_free(e->snap.jes);
    memset(&e->snap, 0, sizeof e->snap);
}

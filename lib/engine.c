/*
 * engine.c — the engine's loop plumbing: life-cycle, clock and random
 * source, the in-memory index of active sagas, the timer heap, and group
 * commit.
 *
 * Group commit: every transition staged during a loop turn lands in one
 * batch; a uv_check handle commits the batch at the end of the turn (a
 * uv_idle handle keeps the poll phase from blocking meanwhile). Only after
 * the commit are the batch's effects released: actions invoked, start and
 * completion callbacks called, timers armed. A failed commit is rolled back
 * and the whole batch is written again later; nothing was released.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "engine_int.h"

#define DEFAULT_RETENTION_MS (24ull * 3600 * 1000)
#define DEFAULT_HK_MS 60000ull
#define DEFAULT_MAX_DATA (1024u * 1024u)
#define DEFAULT_STORE_RETRY_MS 100u
#define MAX_STORE_RETRY_MS 5000u
/* Commit rounds per check callback: sync completions can chain batches;
 * yield to I/O after this many. */
#define MAX_ROUNDS 8

/* ------------------------------------------------------------------------ */
/* Logging and errors                                                       */

static void default_log(saga_log_level lvl, const char *saga_id, int step,
                        const char *msg, void *arg)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    (void)arg;
    if (saga_id != NULL)
        fprintf(stderr, "libsaga %s [%s step %d] %s\n", names[lvl & 3],
                saga_id, step, msg);
    else
        fprintf(stderr, "libsaga %s %s\n", names[lvl & 3], msg);
}

void saga__log(saga_engine *e, saga_log_level lvl, const char *saga_id,
               int step, const char *fmt, ...)
{
    if (lvl < e->opts.log_level)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->opts.log(lvl, saga_id, step, buf, e->opts.log_arg);
}

int saga__err(saga_engine *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->errmsg, sizeof e->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

const char *saga_engine_errmsg(saga_engine *e)
{
    return e ? e->errmsg : "invalid argument";
}

/* ------------------------------------------------------------------------ */
/* Clock and random source                                                  */

static int64_t default_clock(void *arg)
{
    saga_engine *e = arg;
    return e->wall_base + ((int64_t)uv_now(e->loop) - e->loop_base);
}

/* splitmix64: small, fast, and good enough for jitter and ids; the point is
 * that a seed replays a run. */
static uint64_t default_random(void *arg)
{
    saga_engine *e = arg;
    uint64_t z = (e->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t os_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof s) != (ssize_t)sizeof s)
            s = 0;
        close(fd);
    }
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
            (uint64_t)getpid();
    }
    return s ? s : 1;
}

int64_t saga__now(saga_engine *e) { return e->clock(e->clock_arg); }
uint64_t saga__rand(saga_engine *e) { return e->random(e->random_arg); }
int64_t saga_engine_now(saga_engine *e) { return saga__now(e); }
uint64_t saga_engine_seed(saga_engine *e) { return e ? e->seed : 0; }
uv_loop_t *saga_engine_loop(saga_engine *e) { return e ? e->loop : NULL; }

/* ------------------------------------------------------------------------ */
/* Definitions                                                              */

const saga_def *saga__def_find(saga_engine *e, const char *name,
                               uint32_t version)
{
    const saga_def *best = NULL;
    for (saga__defent *d = e->defs; d; d = d->next) {
        if (strcmp(d->def->name, name) != 0)
            continue;
        if (version != 0 && d->def->version == version)
            return d->def;
        if (version == 0 && (best == NULL || d->def->version > best->version))
            best = d->def;
    }
    return best;
}

int saga_engine_register(saga_engine *e, saga_def *def)
{
    if (e == NULL || def == NULL)
        return SAGA_EINVAL;
    if (e->started)
        return saga__err(e, SAGA_EBUSY, "register definitions before start");
    int rc = saga_def_validate(def);
    if (rc != SAGA_OK)
        return saga__err(e, rc, "%s", saga_def_errmsg(def));
    if (saga__def_find(e, def->name, def->version) != NULL)
        return saga__err(e, SAGA_EDUP, "definition '%s' v%u is registered",
                         def->name, def->version);
    for (size_t i = 0; i < def->nsteps; i++)
        if (def->steps[i].opts.service != NULL && e->transport == NULL)
            return saga__err(e, SAGA_EINVAL,
                             "step '%s' is remote but the engine has no "
                             "transport", def->steps[i].name);
    saga__defent *ent = saga_malloc(sizeof *ent);
    if (ent == NULL)
        return SAGA_ENOMEM;
    ent->def = def;
    ent->next = e->defs;
    e->defs = ent;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* The index of active sagas: chained hash tables by id and by idem key.    */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int index_grow(saga_engine *e)
{
    size_t nb = e->nbuckets ? e->nbuckets * 2 : 1024;
    saga__inst **ids = saga_malloc(nb * sizeof *ids);
    saga__inst **idem = saga_malloc(nb * sizeof *idem);
    if (ids == NULL || idem == NULL) {
        saga_free(ids);
        saga_free(idem);
        return SAGA_ENOMEM;
    }
    memset(ids, 0, nb * sizeof *ids);
    memset(idem, 0, nb * sizeof *idem);
    for (size_t i = 0; i < e->nbuckets; i++) {
        for (saga__inst *in = e->by_id[i], *nx; in; in = nx) {
            nx = in->id_next;
            size_t b = hash_str(in->id) & (nb - 1);
            in->id_next = ids[b];
            ids[b] = in;
        }
        for (saga__inst *in = e->by_idem[i], *nx; in; in = nx) {
            nx = in->idem_next;
            size_t b = hash_str(in->idem_key) & (nb - 1);
            in->idem_next = idem[b];
            idem[b] = in;
        }
    }
    saga_free(e->by_id);
    saga_free(e->by_idem);
    e->by_id = ids;
    e->by_idem = idem;
    e->nbuckets = nb;
    return SAGA_OK;
}

saga__inst *saga__inst_find(saga_engine *e, const char *id)
{
    if (e->nbuckets == 0)
        return NULL;
    for (saga__inst *in = e->by_id[hash_str(id) & (e->nbuckets - 1)]; in;
         in = in->id_next)
        if (strcmp(in->id, id) == 0)
            return in;
    return NULL;
}

saga__inst *saga__idem_find(saga_engine *e, const char *key)
{
    if (e->nbuckets == 0)
        return NULL;
    for (saga__inst *in = e->by_idem[hash_str(key) & (e->nbuckets - 1)]; in;
         in = in->idem_next)
        if (strcmp(in->idem_key, key) == 0)
            return in;
    return NULL;
}

int saga__inst_add(saga_engine *e, saga__inst *in)
{
    if (e->ninst + 1 > e->nbuckets && index_grow(e) != SAGA_OK)
        return SAGA_ENOMEM;
    size_t b = hash_str(in->id) & (e->nbuckets - 1);
    in->id_next = e->by_id[b];
    e->by_id[b] = in;
    if (in->idem_key != NULL) {
        b = hash_str(in->idem_key) & (e->nbuckets - 1);
        in->idem_next = e->by_idem[b];
        e->by_idem[b] = in;
    }
    in->heap_idx = SIZE_MAX;
    e->ninst++;
    return SAGA_OK;
}

static void unlink_chain(saga__inst **head, saga__inst *in, int by_idem)
{
    for (saga__inst **pp = head; *pp;
         pp = by_idem ? &(*pp)->idem_next : &(*pp)->id_next) {
        if (*pp == in) {
            *pp = by_idem ? in->idem_next : in->id_next;
            return;
        }
    }
}

void saga__inst_free(saga_engine *e, saga__inst *in)
{
    if (in == NULL)
        return;
    if (e != NULL && e->nbuckets) {
        unlink_chain(&e->by_id[hash_str(in->id) & (e->nbuckets - 1)], in, 0);
        if (in->idem_key)
            unlink_chain(&e->by_idem[hash_str(in->idem_key) &
                                     (e->nbuckets - 1)], in, 1);
        saga__heap_remove(e, in);
        e->ninst--;
    }
    for (saga__donecb *d = in->done_cbs, *nx; d; d = nx) {
        nx = d->next;
        saga_free(d);
    }
    saga_free(in->idem_key);
    saga_free(in->error);
    saga_free(in->data);
    saga_free(in);
}

/* ------------------------------------------------------------------------ */
/* Timer heap: one uv_timer for the earliest due saga.                      */

static void heap_swap(saga_engine *e, size_t a, size_t b)
{
    saga__inst *t = e->heap[a];
    e->heap[a] = e->heap[b];
    e->heap[b] = t;
    e->heap[a]->heap_idx = a;
    e->heap[b]->heap_idx = b;
}

static void heap_up(saga_engine *e, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p]->heap_key <= e->heap[i]->heap_key)
            break;
        heap_swap(e, p, i);
        i = p;
    }
}

static void heap_down(saga_engine *e, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->nheap && e->heap[l]->heap_key < e->heap[m]->heap_key)
            m = l;
        if (r < e->nheap && e->heap[r]->heap_key < e->heap[m]->heap_key)
            m = r;
        if (m == i)
            return;
        heap_swap(e, i, m);
        i = m;
    }
}

static void timer_cb(uv_timer_t *t);

static void timer_rearm(saga_engine *e)
{
    if (e->closing)
        return;
    if (e->nheap == 0) {
        uv_timer_stop(&e->timer);
        return;
    }
    int64_t delay = e->heap[0]->heap_key - saga__now(e);
    uv_timer_start(&e->timer, timer_cb, delay > 0 ? (uint64_t)delay : 0, 0);
}

void saga__heap_remove(saga_engine *e, saga__inst *in)
{
    size_t i = in->heap_idx;
    if (i == SIZE_MAX)
        return;
    in->heap_idx = SIZE_MAX;
    e->nheap--;
    if (i != e->nheap) {
        e->heap[i] = e->heap[e->nheap];
        e->heap[i]->heap_idx = i;
        heap_up(e, i);
        heap_down(e, e->heap[i]->heap_idx);
    }
    if (i == 0)
        timer_rearm(e);
}

void saga__heap_set(saga_engine *e, saga__inst *in, int64_t key)
{
    saga__heap_remove(e, in);
    if (e->nheap == e->cheap) {
        size_t nc = e->cheap ? e->cheap * 2 : 256;
        saga__inst **nh = saga_realloc(e->heap, nc * sizeof *nh);
        if (nh == NULL) {
            /* Without a heap slot the saga would never time out; keep
             * going and let the next housekeeping pass re-arm it. */
            saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                      "out of memory arming a timer");
            return;
        }
        e->heap = nh;
        e->cheap = nc;
    }
    in->heap_key = key;
    in->heap_idx = e->nheap;
    e->heap[e->nheap++] = in;
    heap_up(e, in->heap_idx);
    if (in->heap_idx == 0)
        timer_rearm(e);
}

static void fire_due(saga_engine *e)
{
    int64_t now = saga__now(e);
    /* Pop everything due by now; a fired saga re-arms itself after its
     * transition commits, so this loop terminates. */
    while (e->nheap > 0 && e->heap[0]->heap_key <= now) {
        saga__inst *in = e->heap[0];
        saga__heap_remove(e, in);
        saga__fire(e, in, now);
    }
    timer_rearm(e);
}

static void timer_cb(uv_timer_t *t) { fire_due(t->data); }

int saga_engine_advance(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    fire_due(e);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Staging                                                                  */

static void check_cb(uv_check_t *h);
static void idle_cb(uv_idle_t *h) { (void)h; }

static void schedule_flush(saga_engine *e)
{
    /* While a failed commit waits for its retry timer, new transitions
     * join the batch but do not bring the retry forward. */
    if (e->closing || uv_is_active((uv_handle_t *)&e->check) ||
        uv_is_active((uv_handle_t *)&e->retry_timer))
        return;
    uv_idle_start(&e->idle, idle_cb);
    uv_check_start(&e->check, check_cb);
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
    ((n) < (cap) ? SAGA_OK                                                     \
                 : grow_array((void **)&(arr), &(cap), sizeof *(arr)))

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

int saga__journal(saga_engine *e, saga__inst *in, saga_event ev,
                  const char *error)
{
    saga__batch *b = &e->batch;
    if (GROW(b->journal, b->njournal, b->cjournal) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__jentry *j = &b->journal[b->njournal];
    memset(j, 0, sizeof *j);
    j->error = saga__strdup(error);
    if (error != NULL && j->error == NULL)
        return SAGA_ENOMEM;
    memcpy(j->saga_id, in->id, SAGA_ID_SIZE);
    int saga_level = ev == SAGA_EV_STARTED || ev == SAGA_EV_COMPLETED ||
                     ev == SAGA_EV_COMPENSATING || ev == SAGA_EV_COMPENSATED ||
                     ev == SAGA_EV_FAILED || ev == SAGA_EV_OPERATOR_RETRY;
    j->e.seq = ++in->jseq;
    j->e.event = ev;
    j->e.step = saga_level ? -1 : in->step;
    j->e.attempt = saga_level ? 0 : in->attempt;
    j->e.started_ms = saga_level ? 0 : in->started_ms;
    j->e.at_ms = saga__now(e);
    b->njournal++;
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
static void relay_done(void *owner, const char *msg_id)
{
    saga_engine *e = owner;
    saga__batch *b = &e->batch;
    char *id = saga__strdup(msg_id);
    if (id == NULL || GROW(b->done_ids, b->ndone, b->cdone) != SAGA_OK) {
        saga_free(id);
        return;
    }
    b->done_ids[b->ndone++] = id;
    schedule_flush(e);
}

static void relay_log(void *owner, saga_log_level lvl, const char *msg)
{
    saga__log(owner, lvl, NULL, -1, "%s", msg);
}

int saga__engine_relay_new(saga_engine *e);
int saga__engine_relay_new(saga_engine *e)
{
    return saga__relay_new(&e->relay, e->loop, e->transport, e, relay_done,
                           relay_log);
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

void saga__record_from_inst(const saga__inst *in, saga_record *r)
{
    memset(r, 0, sizeof *r);
    r->id = in->id;
    r->def_name = in->def->name;
    r->def_version = in->def->version;
    r->state = in->state;
    r->step = in->step;
    r->attempt = in->attempt;
    r->flags = in->flags;
    r->created_ms = in->created_ms;
    r->updated_ms = in->updated_ms;
    r->due_ms = in->due_ms;
    r->deadline_ms = in->deadline_ms;
    r->idem_key = in->idem_key;
    r->error = in->error;
    r->data = in->data;
    r->data_len = in->data_len;
}

/* ------------------------------------------------------------------------ */
/* Commit                                                                   */

static int write_batch(saga_engine *e, saga__batch *b)
{
    saga_store *s = e->store;
    int rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    for (saga__inst *in = b->head; in && rc == SAGA_OK; in = in->batch_next) {
        saga_record r;
        saga__record_from_inst(in, &r);
        rc = s->saga_put(s, &r, in->put_flags & (SAGA_PUT_INSERT | SAGA_PUT_DATA));
    }
    for (size_t i = 0; i < b->nidem && rc == SAGA_OK; i++)
        rc = s->idem_put(s, b->idem[i].key, b->idem[i].saga_id,
                         b->idem[i].created_ms);
    for (saga__outmsg *m = b->out_head; m && rc == SAGA_OK; m = m->next) {
        saga_message msg = {m->id, m->topic, m->key, m->buf, m->len,
                            m->created_ms};
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

static void batch_reset(saga__batch *b)
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
}

static void batch_free(saga__batch *b)
{
    batch_reset(b);
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
    return batch_writes(b) || b->neffects;
}
#define batch_pending saga__batch_pending

static void retry_timer_cb(uv_timer_t *t) { schedule_flush(t->data); }

static int is_end_state(saga_state s)
{
    return s == SAGA_STATE_COMPLETED || s == SAGA_STATE_COMPENSATED ||
           s == SAGA_STATE_FAILED;
}

/* Release a committed batch: sagas become clean, effects run in staging
 * order (they may stage transitions into the next batch), then ended sagas
 * leave memory and the others get their timers. */
static void release(saga_engine *e, saga__batch *b)
{
    size_t n = b->ninst, k = 0;
    saga__inst *stackbuf[64];
    saga__inst **committed = n <= 64 ? stackbuf : saga_malloc(n * sizeof *committed);
    for (saga__inst *in = b->head, *nx; in; in = nx) {
        nx = in->batch_next;
        in->in_batch = 0;
        in->put_flags = 0;
        in->batch_next = NULL;
        if (committed != NULL)
            committed[k++] = in;
    }
    e->invoking = 1;
    for (size_t i = 0; i < b->neffects; i++) {
        saga__effect *f = &b->effects[i];
        switch (f->kind) {
        case EFF_INVOKE:
            saga__invoke(e, f->inst, f);
            break;
        case EFF_STARTED:
            f->start_cb(e, SAGA_OK, f->id, f->existed, f->arg);
            break;
        case EFF_DONE_CB:
            f->done_cb(e, f->id, f->state, f->arg);
            break;
        case EFF_ACK:
            if (e->transport != NULL)
                e->transport->ack(e->transport, f->delivery);
            break;
        case EFF_DONE: {
            saga__inst *in = f->inst;
            if (e->opts.on_done)
                e->opts.on_done(e, in->id, in->state, e->opts.on_done_arg);
            saga__donecb *d = in->done_cbs;
            in->done_cbs = NULL;
            while (d != NULL) {
                saga__donecb *nx = d->next;
                d->cb(e, in->id, in->state, d->arg);
                saga_free(d);
                d = nx;
            }
            break;
        }
        }
    }
    e->invoking = 0;
    for (size_t i = 0; i < e->ngrave; i++)
        saga_free(e->graveyard[i]);
    e->ngrave = 0;
    if (committed == NULL) {
        /* Out of memory for the list: timers are re-armed by the next
         * housekeeping pass, ended sagas are dropped by it too. */
        saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                  "out of memory after commit; timers deferred");
        return;
    }
    for (size_t i = 0; i < k; i++) {
        saga__inst *in = committed[i];
        if (in->in_batch)
            continue; /* staged again: handled after its next commit */
        if (is_end_state(in->state))
            saga__inst_free(e, in);
        else
            saga__arm(e, in);
    }
    if (committed != stackbuf)
        saga_free(committed);
}

/* Commit the open batch and release its effects. */
static int flush_once(saga_engine *e)
{
    saga__batch b = e->batch;
    if (!batch_pending(&b))
        return SAGA_OK;
    if (batch_writes(&b)) {
        int rc = write_batch(e, &b);
        if (rc != SAGA_OK) {
            e->stats.commit_failures++;
            const char *detail = e->store->errmsg(e->store);
            saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                      "commit of %zu sagas failed (%s): %s; retrying in %u ms",
                      b.ninst, saga_err_name(rc), detail, e->store_backoff_ms);
            saga__err(e, SAGA_ESTORE, "commit failed: %s", detail);
            return SAGA_ESTORE;
        }
        e->stats.commits++;
    }
    e->store_backoff_ms = e->opts.store_retry_ms;
    /* Detach the committed batch: what release() stages opens a new one. */
    memset(&e->batch, 0, sizeof e->batch);
    e->batch.tail = &e->batch.head;
    e->batch.out_tail = &e->batch.out_head;
    /* Committed outbox messages go to the relay. */
    while (b.out_head != NULL) {
        saga__outmsg *m = b.out_head;
        b.out_head = m->next;
        if (e->relay != NULL)
            saga__relay_push(e->relay, m);
        else
            saga__outmsg_free(m);
    }
    b.out_tail = &b.out_head;
    release(e, &b);
    if (e->relay != NULL)
        saga__relay_kick(e->relay);
    batch_reset(&b);
    /* Hand the arrays back for reuse when the new batch has none. */
    if (e->batch.journal == NULL) {
        e->batch.journal = b.journal, e->batch.cjournal = b.cjournal;
        b.journal = NULL;
    }
    if (e->batch.effects == NULL) {
        e->batch.effects = b.effects, e->batch.ceffects = b.ceffects;
        b.effects = NULL;
    }
    if (e->batch.idem == NULL) {
        e->batch.idem = b.idem, e->batch.cidem = b.cidem;
        b.idem = NULL;
    }
    batch_free(&b);
    return SAGA_OK;
}

static void flush_rounds(saga_engine *e)
{
    if (e->flushing)
        return;
    e->flushing = 1;
    for (int round = 0; round < MAX_ROUNDS && batch_pending(&e->batch);
         round++) {
        if (flush_once(e) != SAGA_OK) {
            uv_idle_stop(&e->idle);
            uv_check_stop(&e->check);
            if (!e->closing)
                uv_timer_start(&e->retry_timer, retry_timer_cb,
                               e->store_backoff_ms, 0);
            e->store_backoff_ms =
                e->store_backoff_ms * 2 > MAX_STORE_RETRY_MS
                    ? MAX_STORE_RETRY_MS
                    : e->store_backoff_ms * 2;
            e->flushing = 0;
            return;
        }
    }
    if (!batch_pending(&e->batch)) {
        uv_idle_stop(&e->idle);
        uv_check_stop(&e->check);
    }
    e->flushing = 0;
}

static void check_cb(uv_check_t *h) { flush_rounds(h->data); }

int saga_engine_flush(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    flush_rounds(e);
    return batch_pending(&e->batch) ? SAGA_ESTORE : SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Housekeeping                                                             */

int saga_engine_housekeep(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    saga_store *s = e->store;
    int64_t before = saga__now(e) - (int64_t)e->opts.retention_ms;
    uint64_t n = 0;
    int rc = s->begin(s);
    if (rc == SAGA_OK) {
        rc = s->purge(s, before, &n);
        if (rc == SAGA_OK)
            rc = s->commit(s);
        else
            s->rollback(s);
    }
    if (rc != SAGA_OK) {
        saga__log(e, SAGA_LOG_ERROR, NULL, -1, "housekeeping failed: %s",
                  s->errmsg(s));
        return saga__err(e, SAGA_ESTORE, "purge failed: %s", s->errmsg(s));
    }
    e->stats.purged += n;
    if (n)
        saga__log(e, SAGA_LOG_INFO, NULL, -1, "purged %llu ended sagas",
                  (unsigned long long)n);
    return SAGA_OK;
}

static void hk_cb(uv_timer_t *t) { saga_engine_housekeep(t->data); }

/* ------------------------------------------------------------------------ */
/* Life-cycle                                                               */

int saga_engine_options_init(saga_engine_options *opts, unsigned int version)
{
    if (opts == NULL || version == 0 || version > SAGA_ENGINE_OPTIONS_VERSION)
        return SAGA_EINVAL;
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static int plugin_version_ok(unsigned int v, unsigned int max)
{
    return v > 0 && v <= max;
}

int saga_engine_new(saga_engine **out, saga_store *store,
                    saga_transport *transport, const saga_engine_options *opts)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (opts != NULL &&
        (opts->version == 0 || opts->version > SAGA_ENGINE_OPTIONS_VERSION))
        return SAGA_EVERSION;
    if (store != NULL && !plugin_version_ok(store->version, SAGA_STORE_VERSION))
        return SAGA_EVERSION;
    if (transport != NULL &&
        !plugin_version_ok(transport->version, SAGA_TRANSPORT_VERSION))
        return SAGA_EVERSION;
    saga_engine *e = saga_malloc(sizeof *e);
    if (e == NULL)
        return SAGA_ENOMEM;
    memset(e, 0, sizeof *e);
    if (opts != NULL)
        e->opts = *opts;
    else
        saga_engine_options_init(&e->opts, SAGA_ENGINE_OPTIONS_VERSION);
    saga_engine_options *o = &e->opts;
    if (o->log == NULL) {
        o->log = default_log;
        if (o->log_level == SAGA_LOG_DEBUG)
            o->log_level = SAGA_LOG_WARN;
    }
    if (o->retention_ms == 0)
        o->retention_ms = DEFAULT_RETENTION_MS;
    if (o->housekeeping_interval_ms == 0)
        o->housekeeping_interval_ms = DEFAULT_HK_MS;
    if (o->max_data_size == 0)
        o->max_data_size = DEFAULT_MAX_DATA;
    if (o->store_retry_ms == 0)
        o->store_retry_ms = DEFAULT_STORE_RETRY_MS;
    if (o->service == NULL)
        o->service = "orchestrator";
    e->store_backoff_ms = o->store_retry_ms;
    e->batch.tail = &e->batch.head;
    e->batch.out_tail = &e->batch.out_head;

    int rc = SAGA_OK;
    saga_store *own_store = NULL;
    if (store == NULL) {
        rc = saga_store_memory_new(&own_store);
        if (rc != SAGA_OK)
            goto fail;
        store = own_store;
    }
    if (o->loop == NULL) {
        if (uv_loop_init(&e->own_loop) != 0) {
            rc = SAGA_ENOMEM;
            goto fail;
        }
        e->loop = &e->own_loop;
        e->owns_loop = 1;
    } else {
        e->loop = o->loop;
    }
    uv_timer_init(e->loop, &e->timer);
    uv_timer_init(e->loop, &e->hk_timer);
    uv_timer_init(e->loop, &e->retry_timer);
    uv_idle_init(e->loop, &e->idle);
    uv_check_init(e->loop, &e->check);
    e->timer.data = e->hk_timer.data = e->retry_timer.data = e;
    e->idle.data = e->check.data = e;
    /* Housekeeping alone must not keep a loop alive. */
    uv_unref((uv_handle_t *)&e->hk_timer);

    uv_update_time(e->loop);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->wall_base = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    e->loop_base = (int64_t)uv_now(e->loop);
    e->clock = o->clock ? o->clock : default_clock;
    e->clock_arg = o->clock ? o->clock_arg : e;
    e->seed = o->seed ? o->seed : os_seed();
    e->rng = e->seed;
    e->random = o->random ? o->random : default_random;
    e->random_arg = o->random ? o->random_arg : e;
    e->store = store;
    e->transport = transport;
    *out = e;
    return SAGA_OK;
fail:
    saga_store_free(own_store);
    saga_free(e);
    return rc;
}

int saga_engine_start(saga_engine *e)
{
    if (e == NULL)
        return SAGA_EINVAL;
    if (e->started)
        return saga__err(e, SAGA_EBUSY, "engine already started");
    if (e->closing)
        return SAGA_ECLOSED;
    int rc = saga__recover(e);
    if (rc == SAGA_OK && e->transport != NULL)
        rc = saga__remote_start(e);
    if (rc != SAGA_OK)
        return rc;
    e->started = 1;
    uv_timer_start(&e->hk_timer, hk_cb, e->opts.housekeeping_interval_ms,
                   e->opts.housekeeping_interval_ms);
    return SAGA_OK;
}

_Static_assert(SAGA_RUN_DEFAULT == (int)UV_RUN_DEFAULT &&
                   SAGA_RUN_ONCE == (int)UV_RUN_ONCE &&
                   SAGA_RUN_NOWAIT == (int)UV_RUN_NOWAIT,
               "saga_run_mode mirrors uv_run_mode");

int saga_engine_run(saga_engine *e, saga_run_mode mode)
{
    if (e == NULL || (int)mode < 0 || mode > SAGA_RUN_NOWAIT)
        return SAGA_EINVAL;
    return uv_run(e->loop, (uv_run_mode)mode);
}

int saga_engine_stats(saga_engine *e, saga_stats *out)
{
    if (e == NULL || out == NULL)
        return SAGA_EINVAL;
    *out = e->stats;
    out->active = e->ninst;
    return SAGA_OK;
}

static void engine_destroy(saga_engine *e)
{
    saga_close_cb cb = e->close_cb;
    void *arg = e->close_arg;
    for (size_t i = 0; i < e->nbuckets; i++) {
        saga__inst *in = e->by_id[i];
        while (in != NULL) {
            saga__inst *nx = in->id_next;
            saga__inst_free(NULL, in);
            in = nx;
        }
    }
    saga_free(e->by_id);
    saga_free(e->by_idem);
    saga_free(e->heap);
    saga_free(e->graveyard);
    batch_free(&e->batch);
    for (saga__defent *d = e->defs, *nx; d; d = nx) {
        nx = d->next;
        saga_def_free(d->def);
        saga_free(d);
    }
    saga_store_free(e->store);
    saga_free(e);
    if (cb)
        cb(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    saga_engine *e = h->data;
    if (--e->nclosing > 0)
        return;
    if (e->owns_loop) {
        /* Freed by saga_engine_free() after the own loop is closed. */
        e->nclosing = -1;
        return;
    }
    engine_destroy(e);
}

void saga_engine_close(saga_engine *e, saga_close_cb cb, void *arg)
{
    if (e == NULL || e->closing)
        return;
    /* Make what was staged durable first; a store that still fails loses
     * only transitions whose effects were never released, and recovery
     * replays from the last commit. */
    if (batch_pending(&e->batch) && saga_engine_flush(e) != SAGA_OK)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "closing with uncommitted transitions: %s", e->errmsg);
    e->closing = 1;
    e->close_cb = cb;
    e->close_arg = arg;
    saga__remote_close(e);
    if (e->transport != NULL) {
        saga_transport_free(e->transport);
        e->transport = NULL;
    }
    uv_handle_t *hs[] = {(uv_handle_t *)&e->timer, (uv_handle_t *)&e->hk_timer,
                         (uv_handle_t *)&e->retry_timer,
                         (uv_handle_t *)&e->idle, (uv_handle_t *)&e->check};
    e->nclosing = (int)(sizeof hs / sizeof hs[0]);
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        uv_close(hs[i], on_handle_closed);
}

static void free_done(void *arg) { *(int *)arg = 1; }

void saga_engine_free(saga_engine *e)
{
    if (e == NULL || e->closing)
        return;
    if (e->owns_loop) {
        saga_engine_close(e, NULL, NULL);
        while (e->nclosing != -1)
            uv_run(e->loop, UV_RUN_ONCE);
        /* Let the transport's handles close on the same loop. */
        uv_run(e->loop, UV_RUN_DEFAULT);
        uv_loop_close(e->loop);
        engine_destroy(e);
        return;
    }
    uv_loop_t *loop = e->loop;
    int done = 0;
    saga_engine_close(e, free_done, &done);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
}

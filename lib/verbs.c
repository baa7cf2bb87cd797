/*
 * verbs.c — the public verbs on sagas (saga_start, saga_step_complete,
 * saga_cancel, saga_retry, saga_on_done), recovery and the operator's
 * actions: they validate, find or build the instance, and run a transition
 * of the state machine (machine.c) that stages into the engine's open batch
 * through the stager defined here. Releasing what a committed transition
 * queued (invoking an action, arming a timer) is here too.
 */
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "engine_int.h"
#include "machine.h"

#define IS_ACTIVE SAGA__IS_ACTIVE

/* ------------------------------------------------------------------------ */
/* The state machine (machine.c) staging into the engine's open batch       */

static int64_t st_now(void *self) { return saga__now(self); }
static uint64_t st_rand(void *self) { return saga__rand(self); }
static int st_reserve(void *self) { return saga__reserve(self); }
static int st_journal(void *self, saga__inst *in, saga_journal_kind ev,
                      const char *error)
{
    return saga__journal(self, in, ev, error);
}
static int st_effect(void *self, const saga__effect *f)
{
    return saga__push_effect(self, f);
}
static int st_command(void *self, saga__inst *in)
{
    return saga__remote_command(self, in);
}
static void st_stage(void *self, saga__inst *in, unsigned int put_flags)
{
    saga__stage(self, in, put_flags);
}
static void st_log(void *self, saga_log_level lvl, const char *saga_id,
                   int step, const char *msg)
{
    saga__log(self, lvl, saga_id, step, "%s", msg);
}
static const char *st_errmsg(void *self)
{
    return ((saga_engine *)self)->errmsg;
}

static const saga__stager_ops engine_stager = {
    .now = st_now,
    .rand = st_rand,
    .reserve = st_reserve,
    .journal = st_journal,
    .effect = st_effect,
    .command = st_command,
    .stage = st_stage,
    .log = st_log,
    .errmsg = st_errmsg,
};

saga__machine saga__machine_of(saga_engine *e)
{
    saga__machine m = {&engine_stager, e, &e->stats, e->opts.log_level};
    return m;
}

/* ------------------------------------------------------------------------ */
/* Invocation and timers (released effects, the timer heap)                 */

void saga__invoke(saga_engine *e, saga__inst *in, const saga__effect *f)
{
    saga__machine m = saga__machine_of(e);
    if (!saga__m_invoking(&m, in, f))
        return;
    const saga__step *s = &in->def->steps[in->step];
    saga_step_ref ref;
    memcpy(ref.saga_id, in->id, SAGA_ID_SIZE);
    ref.step = (uint32_t)in->step;
    ref.attempt = in->attempt;
    ref.compensating = f->backward;
    saga_action_fn fn = f->backward ? s->compensation : s->action;
    fn(e, &ref, in->data, in->data_len, s->arg);
    if (!in->in_batch)
        saga__arm(e, in);
}

void saga__arm(saga_engine *e, saga__inst *in)
{
    int64_t key = saga__m_due(in);
    if (key == INT64_MAX)
        saga__heap_remove(e, in);
    else
        saga__heap_set(e, in, key);
}

void saga__fire(saga_engine *e, saga__inst *in, int64_t now)
{
    saga__machine m = saga__machine_of(e);
    switch (saga__m_fire(&m, in, now)) {
    case SAGA__FIRE_STAGED:
        return;
    case SAGA__FIRE_NOMEM:
        /* No room to stage what is due: try again shortly. */
        saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                  "out of memory firing a timer; retrying in %u ms",
                  e->opts.store_retry_ms);
        saga__heap_set(e, in, now + (int64_t)e->opts.store_retry_ms);
        return;
    case SAGA__FIRE_NONE:
        if (!in->in_batch && SAGA__IS_ACTIVE(in->state))
            saga__arm(e, in);
        return;
    }
}

/* ------------------------------------------------------------------------ */
/* The public verbs                                                         */

/* 12 hex digits of the creation time (ms, 48 bits), 4 of a per-engine
 * counter, then 64 random bits. Ids made by one engine thus sort in
 * creation order, which keeps the store's id-keyed B-trees (sagas, journal)
 * growing at their right edge: with fully random ids every commit dirtied
 * about one leaf page per saga per tree, and the SQLite store wrote ~21 KB
 * of WAL per 4-step saga instead of ~3 KB (bench/core). The random part
 * keeps ids unique across engines and unguessable; everything comes from
 * the injectable clock and random source, so a seeded run still replays. */
static void new_id(saga_engine *e, char out[SAGA_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t t = (uint64_t)saga__now(e);
    uint64_t seq = e->id_seq++;
    uint64_t r = saga__rand(e);
    for (int i = 0; i < 12; i++)
        out[i] = hex[(t >> (44 - 4 * i)) & 15];
    for (int i = 0; i < 4; i++)
        out[12 + i] = hex[(seq >> (12 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++)
        out[16 + i] = hex[(r >> (60 - 4 * i)) & 15];
    out[SAGA_ID_LEN] = '\0';
}

static int valid_key(const char *key)
{
    size_t n = strnlen(key, SAGA_NAME_MAX + 1);
    return n >= 1 && n <= SAGA_NAME_MAX;
}

static int check_data(saga_engine *e, const void *data, size_t len)
{
    if (len > e->opts.max_data_size)
        return saga__err(e, SAGA_EINVAL,
                         "saga data of %zu bytes exceeds the limit of %zu", len,
                         e->opts.max_data_size);
    if (len > 0 && data == NULL)
        return saga__err(e, SAGA_EINVAL, "data is NULL but len is %zu", len);
    if (!saga__data_is_map(data, len))
        return saga__err(e, SAGA_EINVAL,
                         "saga data must be a msgpack map with string keys");
    return SAGA_OK;
}

static int started_effect(saga_engine *e, const char *id, int existed,
                          saga_start_cb cb, void *arg)
{
    if (cb == NULL)
        return SAGA_OK;
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_STARTED;
    memcpy(f.id, id, SAGA_ID_SIZE);
    f.existed = existed;
    f.start_cb = cb;
    f.arg = arg;
    return saga__push_effect(e, &f);
}

static int rec_updated_cb(const saga_record *r, void *arg)
{
    *(int64_t *)arg = r->updated_ms;
    return 0;
}

/* Look @p key up in the store (the sagas it names have ended). A saga past
 * its retention is purged first, so that the key starts a new saga instead
 * of naming one about to disappear; one that is returned is pinned: no
 * purge removes it until this start is released. */
static int stored_key(saga_engine *e, const char *key, char found[SAGA_ID_SIZE])
{
    saga_store *s = e->store;
    for (int pass = 0;; pass++) {
        int rc = s->idem_get(s, key, found);
        if (rc == SAGA_ENOTFOUND)
            return rc;
        if (rc != SAGA_OK)
            return saga__err(e, SAGA_ESTORE, "idempotency lookup: %s",
                             s->errmsg(s));
        int64_t updated = 0;
        rc = s->saga_get(s, found, rec_updated_cb, &updated);
        if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
            return saga__err(e, SAGA_ESTORE, "idempotency lookup: %s",
                             s->errmsg(s));
        int64_t cut = saga__now(e) - (int64_t)e->opts.retention_ms;
        if (pass == 0 && rc == SAGA_OK && updated < cut) {
            /* Expired, not purged yet: purge now (pinned sagas stay). */
            rc = saga_engine_housekeep(e);
            if (rc != SAGA_OK)
                return rc;
            continue;
        }
        saga__pin(e, rc == SAGA_OK && updated < cut ? updated : cut);
        return SAGA_OK;
    }
}

int saga_start(saga_engine *e, const char *def_name, const char *idem_key,
               const void *data, size_t len, char id_out[SAGA_ID_SIZE],
               saga_start_cb cb, void *arg)
{
    if (e == NULL || def_name == NULL || id_out == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return SAGA_ECLOSED;
    if (!e->started)
        return saga__err(e, SAGA_EBUSY, "call saga_engine_start() first");
    if (idem_key != NULL && !valid_key(idem_key))
        return saga__err(e, SAGA_EINVAL, "idempotency key must be 1..%d bytes",
                         SAGA_NAME_MAX);
    int rc = check_data(e, data, len);
    if (rc != SAGA_OK)
        return rc;
    const saga_def *def = saga__def_find(e, def_name, 0);
    if (def == NULL)
        return saga__err(e, SAGA_ENOTFOUND, "no definition named '%.64s'",
                         def_name);
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    if (idem_key != NULL) {
        /* Active sagas are indexed in memory (their key may not be committed
         * yet); ended ones are found in the store until purged. */
        saga__inst *old = saga__idem_find(e, idem_key);
        char found[SAGA_ID_SIZE];
        if (old != NULL) {
            memcpy(found, old->id, SAGA_ID_SIZE);
            rc = SAGA_OK;
        } else if (saga__keys_at_commit(e)) {
            /* A store that answers on the loop: no lookup now (it would
             * wait for the server, or fail while it reconnects). The saga
             * is staged with its key; a key the store holds refuses the
             * commit, and own.c answers @p cb with its saga instead. */
            rc = SAGA_ENOTFOUND;
        } else {
            rc = stored_key(e, idem_key, found);
            if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
                return rc;
        }
        if (rc == SAGA_OK) {
            memcpy(id_out, found, SAGA_ID_SIZE);
            return started_effect(e, found, 1, cb, arg);
        }
    }
    /* A new saga: past max_active it is refused before anything is
     * staged (a known key was answered above). */
    rc = saga__admit(e);
    if (rc != SAGA_OK)
        return rc;
    saga__inst *in = saga__inst_new(def, idem_key, data, len, saga__now(e));
    if (in == NULL)
        return SAGA_ENOMEM;
    do
        new_id(e, in->id);
    while (saga__inst_find(e, in->id) != NULL);
    if (saga__inst_add(e, in) != SAGA_OK) {
        saga__inst_free(NULL, in);
        return SAGA_ENOMEM;
    }
    saga__effect started;
    memset(&started, 0, sizeof started);
    started.kind = EFF_STARTED;
    memcpy(started.id, in->id, SAGA_ID_SIZE);
    started.start_cb = cb;
    started.arg = arg;
    saga__machine m = saga__machine_of(e);
    if ((idem_key && saga__stage_idem(e, idem_key, in->id) != SAGA_OK) ||
        saga__m_start(&m, in, cb != NULL ? &started : NULL) != SAGA_OK) {
        /* Nothing about this saga can be committed half-way: drop it from
         * the batch bookkeeping by failing the whole start. */
        saga__inst_free(e, in);
        return SAGA_ENOMEM;
    }
    memcpy(id_out, in->id, SAGA_ID_SIZE);
    return SAGA_OK;
}

/* Whether @p id names a saga the store knows (for ESTALE vs ENOTFOUND). */
static int rec_exists_cb(const saga_record *r, void *arg)
{
    *(saga_state *)arg = r->state;
    return 0;
}

static int stored_state(saga_engine *e, const char *id, saga_state *st)
{
    return e->store->saga_get(e->store, id, rec_exists_cb, st);
}

int saga_step_complete(saga_engine *e, const saga_step_ref *ref,
                       saga_outcome outcome, const void *out, size_t out_len,
                       const char *error)
{
    if (e == NULL || ref == NULL)
        return SAGA_EINVAL;
    if (outcome != SAGA_OUTCOME_OK && outcome != SAGA_OUTCOME_FAIL &&
        outcome != SAGA_OUTCOME_RETRY)
        return saga__err(e, SAGA_EINVAL, "unknown outcome %d", (int)outcome);
    if (out == NULL && out_len > 0)
        return saga__err(e, SAGA_EINVAL, "output is NULL but out_len is %zu",
                         out_len);
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (strnlen(ref->saga_id, SAGA_ID_SIZE) != SAGA_ID_LEN)
        return saga__err(e, SAGA_EINVAL, "malformed saga id");
    saga__inst *in = saga__inst_find(e, ref->saga_id);
    if (in == NULL && saga__reads_on_loop(e)) {
        /* A store that reads on the loop is not asked (the answer would
         * wait for the server): the completion is ignored either way. */
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, ref->saga_id, (int)ref->step,
                  "ignored a completion: the saga is not in this engine's "
                  "memory (ended, or another engine's)");
        return SAGA_ESTALE;
    }
    if (in == NULL) {
        saga_state st;
        if (stored_state(e, ref->saga_id, &st) != SAGA_OK)
            return saga__err(e, SAGA_ENOTFOUND, "no saga %s", ref->saga_id);
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, ref->saga_id, (int)ref->step,
                  "ignored a completion: the saga has ended (%s)",
                  saga_state_name(st));
        return SAGA_ESTALE;
    }
    if (!saga__m_is_current(in, ref->step, ref->attempt,
                            ref->compensating != 0)) {
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, in->id, (int)ref->step,
                  "ignored a stale completion (attempt %u%s); now at step %d "
                  "attempt %u, %s",
                  ref->attempt, ref->compensating ? ", compensation" : "",
                  in->step, in->attempt, saga_state_name(in->state));
        return SAGA_ESTALE;
    }
    return saga__complete(e, in, outcome, out, out_len, error);
}

int saga__complete(saga_engine *e, saga__inst *in, saga_outcome outcome,
                   const void *out, size_t out_len, const char *error)
{
    unsigned int put = 0;
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    if (outcome == SAGA_OUTCOME_OK && out != NULL && out_len > 0 &&
        !(in->flags & SAGA_REC_BACKWARD)) {
        if (!saga__data_is_map(out, out_len))
            return saga__err(e, SAGA_EINVAL,
                             "step output must be a msgpack map");
        void *merged = NULL;
        size_t mlen = 0;
        int rc = saga__data_merge(in->data, in->data_len, out, out_len, &merged,
                                  &mlen);
        if (rc != SAGA_OK)
            return saga__err(e, rc, "merging step output failed");
        if (mlen > e->opts.max_data_size) {
            saga_free(merged);
            return saga__err(e, SAGA_EINVAL,
                             "saga data would grow to %zu bytes, over the "
                             "limit of %zu",
                             mlen, e->opts.max_data_size);
        }
        saga__graveyard(e, in->data);
        in->data = merged;
        in->data_len = mlen;
        put = SAGA_PUT_DATA;
    }
    saga__machine m = saga__machine_of(e);
    saga__m_outcome(&m, in, outcome, error, put);
    return SAGA_OK;
}

int saga_cancel(saga_engine *e, const char *saga_id, const char *reason)
{
    if (e == NULL || saga_id == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in == NULL && saga__reads_on_loop(e))
        /* Not asked of a store that reads on the loop: nothing to cancel
         * here either way (saga_get_async() tells the state). */
        return saga__err(e, SAGA_EBUSY,
                         "saga %.40s is not in this engine's memory (ended, "
                         "another engine's, or unknown)",
                         saga_id);
    if (in == NULL) {
        saga_state st;
        if (stored_state(e, saga_id, &st) == SAGA_OK)
            return saga__err(e, SAGA_EBUSY, "saga %s is %s", saga_id,
                             saga_state_name(st));
        return saga__err(e, SAGA_ENOTFOUND, "no saga %.40s", saga_id);
    }
    if (!saga__m_can_compensate(in))
        return saga__err(e, SAGA_EBUSY, "saga %s is %s%s", saga_id,
                         saga_state_name(in->state),
                         in->state == SAGA_STATE_RUNNING ? " past its pivot"
                                                         : "");
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    saga__machine m = saga__machine_of(e);
    saga__m_cancel(&m, in, reason);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Loading sagas from the store (recovery, operator retry)                  */

static int count_journal_cb(const saga_journal_entry *j, void *arg)
{
    uint32_t *max = arg;
    if (j->seq > *max)
        *max = j->seq;
    return 0;
}

typedef struct load_ctx {
    saga_engine *e;
    saga__inst **list;
    size_t n, cap;
    size_t skipped;
    int rc;
} load_ctx;

static int load_cb(const saga_record *r, void *arg)
{
    load_ctx *c = arg;
    saga_engine *e = c->e;
    const saga_def *def = saga__def_find(e, r->def_name, r->def_version);
    if (def == NULL || r->step < 0 || (size_t)r->step >= def->nsteps) {
        c->skipped++;
        saga__log(e, SAGA_LOG_ERROR, r->id, r->step,
                  "cannot resume: definition '%s' v%u is not registered "
                  "(or has no step %d); left as it is",
                  r->def_name, r->def_version, r->step);
        return 0;
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        saga__inst **nl = saga_realloc(c->list, nc * sizeof *nl);
        if (nl == NULL) {
            c->rc = SAGA_ENOMEM;
            return 1;
        }
        c->list = nl;
        c->cap = nc;
    }
    saga__inst *in = saga__inst_from_record(def, r);
    if (in == NULL) {
        c->rc = SAGA_ENOMEM;
        return 1;
    }
    c->list[c->n++] = in;
    return 0;
}

/* Finish loading: journal position, index. Frees what it cannot add. */
static int adopt(saga_engine *e, saga__inst *in)
{
    int rc = e->store->journal_scan(e->store, in->id, count_journal_cb,
                                    &in->jseq);
    if (rc == SAGA_OK)
        rc = saga__inst_add(e, in);
    if (rc != SAGA_OK)
        saga__inst_free(NULL, in);
    return rc;
}

static int scan_active(saga_engine *e, saga_record_cb cb, void *arg)
{
    return e->store->saga_scan(e->store, SAGA_STATE_MASK_ACTIVE, cb, arg);
}

int saga__recover(saga_engine *e) { return saga__recover_from(e, scan_active); }

int saga__recover_from(saga_engine *e, saga__scan_fn scan)
{
    load_ctx c = {e, NULL, 0, 0, 0, SAGA_OK};
    int rc = scan(e, load_cb, &c);
    if (rc == SAGA_OK)
        rc = c.rc;
    size_t resumed = 0;
    for (size_t i = 0; i < c.n; i++) {
        saga__inst *in = c.list[i];
        if (rc != SAGA_OK || saga__inst_find(e, in->id) != NULL) {
            saga__inst_free(NULL, in);
            continue;
        }
        rc = adopt(e, in);
        if (rc != SAGA_OK)
            continue;
        resumed++;
        saga__machine m = saga__machine_of(e);
        rc = saga__m_resume(&m, in);
        if (rc == 1) {
            saga__arm(e, in);
            rc = SAGA_OK;
        }
    }
    saga_free(c.list);
    if (rc != SAGA_OK)
        return saga__err(e,
                         rc == SAGA_ENOMEM || rc == SAGA_EFENCED ? rc
                                                                 : SAGA_ESTORE,
                         "recovery failed: %s", e->store->errmsg(e->store));
    if (resumed || c.skipped)
        saga__log(e, SAGA_LOG_INFO, NULL, -1,
                  "recovery: resumed %zu sagas, skipped %zu", resumed,
                  c.skipped);
    return SAGA_OK;
}

static int load_one(saga_engine *e, const char *id, saga__inst **out)
{
    load_ctx c = {e, NULL, 0, 0, 0, SAGA_OK};
    int rc = e->store->saga_get(e->store, id, load_cb, &c);
    if (rc == SAGA_OK && c.rc != SAGA_OK)
        rc = c.rc;
    if (rc == SAGA_OK && c.n == 0)
        rc = saga__err(e, SAGA_EINVAL,
                       "saga %s: its definition is not "
                       "registered",
                       id);
    if (rc == SAGA_OK)
        rc = adopt(e, c.list[0]);
    else if (c.n)
        saga__inst_free(NULL, c.list[0]);
    if (rc == SAGA_OK)
        *out = c.list[0];
    saga_free(c.list);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Loading a saga on the loop (saga_get_submit, journal_scan_submit: store
 * version 13), for the operator actions of a saga not in memory.           */

int saga__loads_on_loop(const saga_engine *e)
{
    const saga_store *s = e->store;
    return saga__reads_on_loop(e) && s->version >= 13 &&
           s->journal_scan_submit != NULL;
}

typedef struct load_req {
    saga_engine *e;
    char id[SAGA_ID_SIZE];
    saga__loaded_cb cb;
    void *arg;
    int rc;         /* the record's answer */
    saga_state st;  /* its state (SAGA_OK) */
    saga__inst *in; /* built from it (a FAILED saga with its definition) */
} load_req;

static void load_rec_cb(void *arg, int rc, const saga_record *rec)
{
    load_req *q = arg;
    saga_engine *e = q->e;
    if (q->cb == NULL) { /* the journal's request was refused */
        saga_free(q);
        return;
    }
    q->rc = rc == SAGA_OK || rc == SAGA_ENOTFOUND ? rc : SAGA_ESTORE;
    if (rc != SAGA_OK)
        return;
    q->st = rec->state;
    if (rec->state != SAGA_STATE_FAILED || e->closing)
        return; /* ended (or owned elsewhere): nothing to load */
    load_ctx c = {e, NULL, 0, 0, 0, SAGA_OK};
    load_cb(rec, &c);
    if (c.rc != SAGA_OK)
        q->rc = c.rc;
    else if (c.n == 0)
        q->rc = saga__err(e, SAGA_EINVAL,
                          "saga %s: its definition is not registered", q->id);
    else
        q->in = c.list[0];
    saga_free(c.list);
}

static void load_journal_cb(void *arg, int rc, const saga_journal_entry *es,
                            size_t n)
{
    load_req *q = arg;
    saga_engine *e = q->e;
    saga__inst *in = q->in;
    int r = q->rc;
    if (r == SAGA_OK && in != NULL && rc != SAGA_OK)
        r = SAGA_ESTORE;
    if (e->closing)
        r = SAGA_ECLOSED;
    if (r == SAGA_ESTORE)
        saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
    else if (r == SAGA_ENOTFOUND)
        saga__err(e, r, "no saga %.40s", q->id);
    saga__inst *here = saga__inst_find(e, q->id);
    if (r == SAGA_OK && in != NULL) {
        if (here != NULL) {
            /* Loaded meanwhile (another request): that one it is. */
            saga__inst_free(NULL, in);
            in = here;
        } else {
            for (size_t i = 0; i < n; i++)
                if (es[i].seq > in->jseq)
                    in->jseq = es[i].seq;
            r = saga__inst_add(e, in);
            if (r != SAGA_OK) {
                saga__inst_free(NULL, in);
                in = NULL;
            }
        }
    } else {
        if (in != NULL)
            saga__inst_free(NULL, in);
        in = r == SAGA_OK ? here : NULL;
    }
    saga__loaded_cb cb = q->cb;
    void *cb_arg = q->arg;
    saga_state st = in != NULL ? in->state : q->st;
    saga_free(q);
    cb(e, r, in, st, cb_arg);
}

int saga__load_submit(saga_engine *e, const char *id, saga__loaded_cb cb,
                      void *arg)
{
    load_req *q = saga_malloc(sizeof *q);
    if (q == NULL)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    memset(q, 0, sizeof *q);
    q->e = e;
    snprintf(q->id, sizeof q->id, "%s", id);
    q->cb = cb;
    q->arg = arg;
    q->rc = SAGA_ESTORE;
    saga_store *s = e->store;
    /* Both go out at once and are answered in that order: the journal's
     * answer finishes the load. */
    int rc = s->saga_get_submit(s, q->id, load_rec_cb, q);
    if (rc != SAGA_OK) {
        saga_free(q);
        return saga__err(e, SAGA_ESTORE, "%s", s->errmsg(s));
    }
    rc = s->journal_scan_submit(s, q->id, load_journal_cb, q);
    if (rc != SAGA_OK) {
        /* The record's answer will come and find nobody: keep q for it
         * and let it go when it comes (q->cb NULL). */
        q->cb = NULL;
        return saga__err(e, SAGA_ESTORE, "%s", s->errmsg(s));
    }
    return SAGA_OK;
}

int saga_retry(saga_engine *e, const char *saga_id)
{
    if (e == NULL || saga_id == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in == NULL) {
        saga_state st;
        int rc = stored_state(e, saga_id, &st);
        if (rc == SAGA_ENOTFOUND)
            return saga__err(e, rc, "no saga %.40s", saga_id);
        if (rc != SAGA_OK)
            return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
        if (st != SAGA_STATE_FAILED)
            return saga__err(e, SAGA_EBUSY, "saga %s is %s, not FAILED",
                             saga_id, saga_state_name(st));
        rc = load_one(e, saga_id, &in);
        if (rc != SAGA_OK)
            return rc;
    } else if (in->state != SAGA_STATE_FAILED) {
        return saga__err(e, SAGA_EBUSY, "saga %s is %s, not FAILED", saga_id,
                         saga_state_name(in->state));
    }
    if (saga__reserve(e) != SAGA_OK)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    saga__machine m = saga__machine_of(e);
    saga__m_retry(&m, in, NULL);
    return SAGA_OK;
}

static int add_done_cb(saga__inst *in, saga_done_cb cb, void *arg)
{
    saga__donecb *d = saga_malloc(sizeof *d);
    if (d == NULL)
        return SAGA_ENOMEM;
    d->cb = cb;
    d->arg = arg;
    d->next = in->done_cbs;
    in->done_cbs = d;
    return SAGA_OK;
}

static int done_effect(saga_engine *e, const char *saga_id, saga_state st,
                       saga_done_cb cb, void *arg)
{
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_DONE_CB;
    snprintf(f.id, sizeof f.id, "%s", saga_id);
    f.state = st;
    f.done_cb = cb;
    f.arg = arg;
    return saga__push_effect(e, &f);
}

/* A saga_on_done() of a saga not in memory, asked of the store on the
 * loop (saga_get_submit, store version 8). */
typedef struct done_req {
    saga_engine *e;
    char id[SAGA_ID_SIZE];
    saga_done_cb cb;
    void *arg;
} done_req;

static void done_got_cb(void *arg, int rc, const saga_record *rec)
{
    done_req *q = arg;
    saga_engine *e = q->e;
    /* A closing engine's store answers what is in flight as it closes
     * (the engine still there): nothing more is called then. */
    if (e->closing) {
        saga_free(q);
        return;
    }
    saga__inst *in = saga__inst_find(e, q->id);
    int ok = SAGA_OK;
    if (in != NULL && IS_ACTIVE(in->state))
        ok = add_done_cb(in, q->cb, q->arg); /* loaded meanwhile */
    else if (in != NULL)
        ok = done_effect(e, q->id, in->state, q->cb, q->arg);
    else if (rc == SAGA_OK && !IS_ACTIVE(rec->state))
        ok = done_effect(e, q->id, rec->state, q->cb, q->arg);
    else if (rc != SAGA_ENOTFOUND && e->own != NULL)
        /* Another engine's, or unknown (the server away): followed at the
         * lease ticks (own.c). */
        ok = saga__own_wait(e, q->id, q->cb, q->arg);
    else
        saga__log(e, rc == SAGA_ENOTFOUND ? SAGA_LOG_WARN : SAGA_LOG_ERROR,
                  q->id, -1, "saga_on_done(): %s: the waiter is not called",
                  rc == SAGA_ENOTFOUND ? "no such saga"
                  : rc == SAGA_OK      ? "the saga is active but not loaded "
                                         "(its definition is missing)"
                                       : e->store->errmsg(e->store));
    if (ok != SAGA_OK)
        saga__log(e, SAGA_LOG_ERROR, q->id, -1,
                  "out of memory: a saga_on_done() waiter is dropped");
    saga_free(q);
}

/* @return SAGA_OK (asked: the answer decides), or the refusal. */
static int on_done_submit(saga_engine *e, const char *saga_id, saga_done_cb cb,
                          void *arg)
{
    done_req *q = saga_malloc(sizeof *q);
    if (q == NULL)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    q->e = e;
    snprintf(q->id, sizeof q->id, "%s", saga_id);
    q->cb = cb;
    q->arg = arg;
    saga_store *s = e->store;
    if (s->saga_get_submit(s, saga_id, done_got_cb, q) == SAGA_OK)
        return SAGA_OK;
    saga_free(q);
    if (e->own != NULL) /* the store is away: asked at the lease ticks */
        return saga__own_wait(e, saga_id, cb, arg);
    return saga__err(e, SAGA_ESTORE, "saga_on_done(): %s", s->errmsg(s));
}

int saga_on_done(saga_engine *e, const char *saga_id, saga_done_cb cb,
                 void *arg)
{
    if (e == NULL || saga_id == NULL || cb == NULL)
        return SAGA_EINVAL;
    saga__inst *in = saga__inst_find(e, saga_id);
    if (in != NULL && IS_ACTIVE(in->state))
        return add_done_cb(in, cb, arg);
    if (in == NULL && saga__reads_on_loop(e))
        return on_done_submit(e, saga_id, cb, arg);
    saga_state st;
    if (in != NULL)
        st = in->state;
    else if (stored_state(e, saga_id, &st) != SAGA_OK)
        return saga__err(e, SAGA_ENOTFOUND, "no saga %.40s", saga_id);
    /* Several engines: an active saga not here is another engine's; the
     * lease tick asks the store until it ended (own.c). */
    if (in == NULL && e->own != NULL &&
        (st == SAGA_STATE_RUNNING || st == SAGA_STATE_COMPENSATING))
        return saga__own_wait(e, saga_id, cb, arg);
    if (st == SAGA_STATE_RUNNING || st == SAGA_STATE_COMPENSATING)
        return saga__err(e, SAGA_EBUSY,
                         "saga %s is not loaded (its "
                         "definition is missing)",
                         saga_id);
    return done_effect(e, saga_id, st, cb, arg);
}

/* ------------------------------------------------------------------------ */
/* Operator actions (admin.c does the lookups, the checks and the replies;  */
/* these are the transitions, kept here beside the state machine).          */

int saga__op_find(saga_engine *e, const char *id, saga__inst **out,
                  saga_state *st)
{
    *out = saga__inst_find(e, id);
    if (*out != NULL) {
        *st = (*out)->state;
        return SAGA_OK;
    }
    int rc = stored_state(e, id, st);
    if (rc == SAGA_ENOTFOUND)
        return saga__err(e, rc, "no saga %.40s", id);
    if (rc != SAGA_OK)
        return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
    if (*st != SAGA_STATE_FAILED)
        return SAGA_OK; /* ended (or owned elsewhere): nothing to load */
    return load_one(e, id, out);
}

void saga__op_retry(saga_engine *e, saga__inst *in, const char *why)
{
    saga__machine m = saga__machine_of(e);
    saga__m_retry(&m, in, why);
}

int saga__op_can_compensate(const saga__inst *in)
{
    return in->state == SAGA_STATE_FAILED || saga__m_can_compensate(in);
}

void saga__op_compensate(saga_engine *e, saga__inst *in, const char *why)
{
    saga__machine m = saga__machine_of(e);
    saga__m_compensate(&m, in, why);
}

void saga__op_resolve(saga_engine *e, saga__inst *in, saga_state as,
                      const char *why)
{
    saga__machine m = saga__machine_of(e);
    saga__m_resolve(&m, in, as, why);
}

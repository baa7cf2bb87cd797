/*
 * query.c — read-only views of sagas: saga_get() snapshots and saga_list().
 * They read the store, so they show what is committed.
 */
#include <stdio.h>
#include <string.h>

#include "engine_int.h"

struct saga_info {
    char id[SAGA_ID_SIZE];
    char *def_name;
    uint32_t def_version;
    saga_state state;
    int step;
    char *step_name;
    uint32_t attempt, flags;
    int64_t created_ms, updated_ms;
    char *idem_key, *error;
    void *data;
    size_t data_len;
    saga_journal_entry *journal;
    size_t njournal, cjournal;
    int rc;
};

static int info_rec_cb(const saga_record *r, void *arg)
{
    saga_info *i = arg;
    snprintf(i->id, sizeof i->id, "%s", r->id);
    i->def_name = saga__strdup(r->def_name);
    i->def_version = r->def_version;
    i->state = r->state;
    i->step = r->step;
    i->attempt = r->attempt;
    i->flags = r->flags;
    i->created_ms = r->created_ms;
    i->updated_ms = r->updated_ms;
    i->idem_key = saga__strdup(r->idem_key);
    i->error = saga__strdup(r->error);
    i->data = saga_malloc(r->data_len ? r->data_len : 1);
    if (i->data != NULL) {
        memcpy(i->data, r->data, r->data_len);
        i->data_len = r->data_len;
    }
    if (!i->def_name || !i->data || (r->idem_key && !i->idem_key) ||
        (r->error && !i->error))
        i->rc = SAGA_ENOMEM;
    return 0;
}

static int info_journal_cb(const saga_journal_entry *j, void *arg)
{
    saga_info *i = arg;
    if (i->njournal == i->cjournal) {
        size_t nc = i->cjournal ? i->cjournal * 2 : 16;
        saga_journal_entry *nj = saga_realloc(i->journal, nc * sizeof *nj);
        if (nj == NULL) {
            i->rc = SAGA_ENOMEM;
            return 1;
        }
        i->journal = nj;
        i->cjournal = nc;
    }
    saga_journal_entry *d = &i->journal[i->njournal];
    *d = *j;
    d->saga_id = NULL; /* set below, pointing at i->id */
    d->error = saga__strdup(j->error);
    if (j->error != NULL && d->error == NULL) {
        i->rc = SAGA_ENOMEM;
        return 1;
    }
    i->njournal++;
    return 0;
}

/* The step's name and the entries' saga ids, once @p i is read. */
static int info_finish(saga_engine *e, saga_info *i)
{
    const saga_def *def = saga__def_find(e, i->def_name, i->def_version);
    if (def && i->step >= 0 && (size_t)i->step < def->nsteps) {
        i->step_name = saga__strdup(def->steps[i->step].name);
        if (i->step_name == NULL)
            return SAGA_ENOMEM;
    }
    for (size_t k = 0; k < i->njournal; k++)
        i->journal[k].saga_id = i->id;
    return SAGA_OK;
}

/* A failed read of saga @p id as saga_get() reports it. */
static int info_err(saga_engine *e, int rc, const char *id)
{
    if (rc == SAGA_ENOTFOUND)
        return saga__err(e, rc, "no saga %.40s", id);
    if (rc == SAGA_ENOMEM)
        return rc;
    return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
}

int saga_get(saga_engine *e, const char *saga_id, saga_info **out)
{
    if (e == NULL || saga_id == NULL || out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    saga_info *i = saga_malloc(sizeof *i);
    if (i == NULL)
        return SAGA_ENOMEM;
    memset(i, 0, sizeof *i);
    int rc = e->store->saga_get(e->store, saga_id, info_rec_cb, i);
    if (rc == SAGA_OK)
        rc = i->rc;
    if (rc == SAGA_OK)
        rc = e->store->journal_scan(e->store, saga_id, info_journal_cb, i);
    if (rc == SAGA_OK)
        rc = i->rc;
    if (rc == SAGA_OK)
        rc = info_finish(e, i);
    if (rc != SAGA_OK) {
        saga_info_free(i);
        return info_err(e, rc, saga_id);
    }
    *out = i;
    return SAGA_OK;
}

/* saga_get() on the loop (store version 13): the record and the journal
 * go out at once, answered in that order; the journal's answer finishes. */
typedef struct info_req {
    saga_engine *e;
    char id[SAGA_ID_SIZE];
    saga_info *i;
    saga_info_cb cb;
    void *arg;
    int rc;     /* the record's answer */
    int orphan; /* the journal's request was refused: free on the first */
} info_req;

static void info_got_rec(void *arg, int rc, const saga_record *r)
{
    info_req *q = arg;
    if (q->orphan) {
        saga_info_free(q->i);
        saga_free(q);
        return;
    }
    q->rc = rc == SAGA_OK || rc == SAGA_ENOTFOUND ? rc : SAGA_ESTORE;
    if (rc == SAGA_OK) {
        info_rec_cb(r, q->i);
        q->rc = q->i->rc;
    }
}

static void info_got_journal(void *arg, int rc, const saga_journal_entry *es,
                             size_t n)
{
    info_req *q = arg;
    saga_engine *e = q->e;
    saga_info *i = q->i;
    int r = q->rc;
    if (r == SAGA_OK && rc != SAGA_OK)
        r = SAGA_ESTORE;
    for (size_t k = 0; k < n && r == SAGA_OK; k++)
        if (info_journal_cb(&es[k], i) != 0)
            r = i->rc;
    if (r == SAGA_OK)
        r = info_finish(e, i);
    if (r != SAGA_OK) {
        saga_info_free(i);
        i = NULL;
        info_err(e, r, q->id);
    }
    saga_info_cb cb = q->cb;
    void *cb_arg = q->arg;
    saga_free(q);
    cb(e,
       r == SAGA_OK || r == SAGA_ENOTFOUND || r == SAGA_ENOMEM ? r
                                                               : SAGA_ESTORE,
       i, cb_arg);
}

int saga_get_async(saga_engine *e, const char *saga_id, saga_info_cb cb,
                   void *arg)
{
    if (e == NULL || saga_id == NULL || cb == NULL)
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (!saga__loads_on_loop(e))
        return saga__err(e, SAGA_EINVAL,
                         "saga_get_async(): the store does not read on the "
                         "loop (store interface version 13): use saga_get()");
    info_req *q = saga_malloc(sizeof *q);
    saga_info *i = saga_malloc(sizeof *i);
    if (q == NULL || i == NULL) {
        saga_free(q);
        saga_free(i);
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    }
    memset(q, 0, sizeof *q);
    memset(i, 0, sizeof *i);
    snprintf(q->id, sizeof q->id, "%s", saga_id);
    q->e = e;
    q->i = i;
    q->cb = cb;
    q->arg = arg;
    q->rc = SAGA_ESTORE;
    saga_store *s = e->store;
    if (s->saga_get_submit(s, q->id, info_got_rec, q) != SAGA_OK) {
        saga_free(q);
        saga_free(i);
        return saga__err(e, SAGA_ESTORE, "%s", s->errmsg(s));
    }
    if (s->journal_scan_submit(s, q->id, info_got_journal, q) != SAGA_OK) {
        q->orphan = 1; /* the record's answer frees it */
        return saga__err(e, SAGA_ESTORE, "%s", s->errmsg(s));
    }
    return SAGA_OK;
}

void saga_info_free(saga_info *i)
{
    if (i == NULL)
        return;
    for (size_t k = 0; k < i->njournal; k++)
        saga_free((char *)i->journal[k].error);
    saga_free(i->journal);
    saga_free(i->def_name);
    saga_free(i->step_name);
    saga_free(i->idem_key);
    saga_free(i->error);
    saga_free(i->data);
    saga_free(i);
}

const char *saga_info_id(const saga_info *i) { return i ? i->id : NULL; }
const char *saga_info_def_name(const saga_info *i)
{
    return i ? i->def_name : NULL;
}
uint32_t saga_info_def_version(const saga_info *i)
{
    return i ? i->def_version : 0;
}
saga_state saga_info_state(const saga_info *i)
{
    return i ? i->state : (saga_state)0;
}
int saga_info_step(const saga_info *i) { return i ? i->step : -1; }
const char *saga_info_step_name(const saga_info *i)
{
    return i ? i->step_name : NULL;
}
uint32_t saga_info_attempt(const saga_info *i) { return i ? i->attempt : 0; }
uint32_t saga_info_flags(const saga_info *i) { return i ? i->flags : 0; }
int64_t saga_info_created_ms(const saga_info *i)
{
    return i ? i->created_ms : 0;
}
int64_t saga_info_updated_ms(const saga_info *i)
{
    return i ? i->updated_ms : 0;
}
const char *saga_info_idem_key(const saga_info *i)
{
    return i ? i->idem_key : NULL;
}
const char *saga_info_error(const saga_info *i) { return i ? i->error : NULL; }
const void *saga_info_data(const saga_info *i, size_t *len)
{
    if (len)
        *len = i ? i->data_len : 0;
    return i ? i->data : NULL;
}
size_t saga_info_journal_count(const saga_info *i)
{
    return i ? i->njournal : 0;
}
const saga_journal_entry *saga_info_journal(const saga_info *i, size_t k)
{
    return i && k < i->njournal ? &i->journal[k] : NULL;
}

typedef struct list_ctx {
    saga_list_cb cb;
    void *arg;
} list_ctx;

static int list_rec_cb(const saga_record *r, void *arg)
{
    list_ctx *c = arg;
    return c->cb(r->id, r->state, r->def_name, c->arg);
}

int saga_list(saga_engine *e, unsigned int state_mask, saga_list_cb cb,
              void *arg)
{
    if (e == NULL || cb == NULL || state_mask == 0 ||
        (state_mask & ~SAGA_STATE_MASK_ALL) != 0)
        return SAGA_EINVAL;
    list_ctx c = {cb, arg};
    int rc = e->store->saga_scan(e->store, state_mask, list_rec_cb, &c);
    if (rc != SAGA_OK)
        return saga__err(e, SAGA_ESTORE, "%s", e->store->errmsg(e->store));
    return SAGA_OK;
}

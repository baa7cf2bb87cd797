/*
 * participant_pipe.c — a participant's batch in few round trips (store
 * interface version 9: part_read, part_commit; version 11:
 * part_commit_submit; issue 10).
 *
 * On a network store every slot call is a round trip: a batch of n
 * commands cost 5n + 2 of them (begin, per command the claim, the barrier
 * read, the barrier write, the inbox reply and the outbox row, commit).
 * With the version-9 slots a batch that runs without savepoints
 *   - makes the inbox claims and barrier reads of its messages ahead, in
 *     one part_read per chunk of PF_CHUNK messages (the handlers have not
 *     run yet, so nothing of theirs can be read), keeping the barrier
 *     values read in a small table;
 *   - holds its own writes (barrier, inbox reply, outbox rows and
 *     deletions) in order, and sends them with the commit (part_commit);
 *     a barrier written in the batch is read back from the table, so a
 *     later message of the same (saga, step) sees it, as it would have
 *     seen the row;
 * i.e. begin, one read per chunk and one commit, whatever n is, plus what
 * the handlers run themselves on the native handle. With version 11
 * (part_commit_submit, the store attached to the participant's loop) the
 * commit goes out without waiting: the group commit holds the batch in
 * flight (SAGA__GC_SUBMITTED), begins no other, and the replies and acks
 * are released from the store's callback, once durable (a lost answer is
 * read back by the store). A batch with
 * savepoints (the retry of a failed handler) keeps the slot-by-slot path:
 * a held write could not be undone by savepoint_rollback.
 *
 * A write's failure is seen only at the commit; the participant ignored
 * the two that can happen in normal operation anyway (an inbox reply
 * whose claim was purged; an outbox row queued twice), and the store's
 * part_commit does too.
 */
#include <stdio.h>
#include <string.h>

#include "participant_int.h"

typedef struct pbar {
    char *key;
    void *val; /* the stored row */
    size_t len;
    int found;
} pbar;

typedef struct pheld {
    saga_part_write w;
    saga_message m;
} pheld;

struct saga__pbatch {
    pbar *bars;
    size_t nbars, cbars;
    pheld *w;
    size_t nw, cw;
    int oom;
};

int saga__pb_on(const saga_participant *p) { return p->pb != NULL; }

int saga__pb_start(saga_participant *p, int sp)
{
    saga_store *s = p->store;
    if (sp || s->version < 9 || s->part_read == NULL || s->part_commit == NULL)
        return SAGA_OK;
    struct saga__pbatch *b = saga_malloc(sizeof *b);
    if (b == NULL)
        return SAGA_ENOMEM;
    memset(b, 0, sizeof *b);
    p->pb = b;
    return SAGA_OK;
}

static void free_write(pheld *x)
{
    saga_free((char *)x->w.key);
    saga_free((void *)x->w.val);
    saga_free((char *)x->m.id);
    saga_free((char *)x->m.topic);
    saga_free((char *)x->m.key);
    saga_free((void *)x->m.payload);
}

void saga__pb_end(saga_participant *p)
{
    /* Only the items read ahead (pf_upto from the head) carry marks. */
    size_t n = 0;
    for (item *it = p->head; it && n < p->pf_upto; it = it->next, n++) {
        saga_free(it->pf_reply);
        it->pf_reply = NULL;
        it->pf = 0;
    }
    p->pf_upto = 0;
    struct saga__pbatch *b = p->pb;
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->nbars; i++) {
        saga_free(b->bars[i].key);
        saga_free(b->bars[i].val);
    }
    saga_free(b->bars);
    for (size_t i = 0; i < b->nw; i++)
        free_write(&b->w[i]);
    saga_free(b->w);
    saga_free(b);
    p->pb = NULL;
}

/* ------------------------------------------------------------------------ */
/* Barrier values of the batch                                              */

static pbar *bar_find(struct saga__pbatch *b, const char *key)
{
    for (size_t i = b->nbars; i-- > 0;)
        if (strcmp(b->bars[i].key, key) == 0)
            return &b->bars[i];
    return NULL;
}

/* Set @p key's value (@p found 0: no row). @p keep: a value read ahead
 * does not replace one the batch wrote. */
static int bar_set(struct saga__pbatch *b, const char *key, const void *val,
                   size_t len, int found, int keep)
{
    pbar *e = bar_find(b, key);
    if (e != NULL && keep)
        return SAGA_OK;
    void *v = NULL;
    if (found) {
        v = saga_malloc(len ? len : 1);
        if (v == NULL)
            return SAGA_ENOMEM;
        if (len)
            memcpy(v, val, len);
    }
    if (e == NULL) {
        if (b->nbars == b->cbars) {
            size_t nc = b->cbars ? b->cbars * 2 : 64;
            pbar *nb = saga_realloc(b->bars, nc * sizeof *nb);
            if (nb == NULL) {
                saga_free(v);
                return SAGA_ENOMEM;
            }
            b->bars = nb;
            b->cbars = nc;
        }
        char *k = saga__strdup(key);
        if (k == NULL) {
            saga_free(v);
            return SAGA_ENOMEM;
        }
        e = &b->bars[b->nbars++];
        e->key = k;
        e->val = NULL;
    }
    saga_free(e->val);
    e->val = v;
    e->len = found ? len : 0;
    e->found = found;
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Reads made ahead                                                         */

typedef struct pf_ctx {
    saga_participant *p;
    item **items;
    const saga_part_read *r;
    int rc;
} pf_ctx;

static void pf_cb(void *arg, size_t i, int claim_rc, const void *reply,
                  size_t reply_len, int kv_rc, const void *val, size_t val_len)
{
    pf_ctx *c = arg;
    item *it = c->items[i];
    it->pf = 1;
    it->pf_rc = claim_rc;
    it->pf_len = 0;
    if (claim_rc == SAGA_EDUP && reply_len > 0) {
        it->pf_reply = saga_malloc(reply_len);
        if (it->pf_reply == NULL)
            c->rc = SAGA_ENOMEM;
        else
            memcpy(it->pf_reply, reply, reply_len);
        it->pf_len = reply_len;
    }
    if (c->r[i].kv_key != NULL) {
        int rc = bar_set(c->p->pb, c->r[i].kv_key, val, val_len,
                         kv_rc == SAGA_OK, 1);
        if (rc != SAGA_OK)
            c->rc = rc;
    }
}

void saga__pevent_claim_id(const item *it, char *buf, size_t n)
{
    snprintf(buf, n, "%s@%s/%s", it->env.msg_id, it->ev->topic, it->ev->group);
}

#define KEY_MAX (SAGA_NAME_MAX + 32)
#define CLAIM_MAX (SAGA_NAME_MAX * 3 + 8)

int saga__pb_prefetch(saga_participant *p, item *from, size_t n, size_t *done)
{
    *done = 0;
    if (p->pb == NULL || n == 0)
        return SAGA_OK;
    saga_store *s = p->store;
    saga_part_read *r = saga_malloc(n * sizeof *r);
    item **items = saga_malloc(n * sizeof *items);
    char *keys = saga_malloc(n * KEY_MAX);
    char *claims = saga_malloc(n * CLAIM_MAX);
    int rc = SAGA_OK;
    if (r == NULL || items == NULL || keys == NULL || claims == NULL) {
        rc = SAGA_ENOMEM;
        goto out;
    }
    size_t k = 0;
    for (item *it = from; it && k < n; it = it->next, k++) {
        char *key = keys + k * KEY_MAX, *claim = claims + k * CLAIM_MAX;
        items[k] = it;
        r[k].claim_id = r[k].kv_key = NULL;
        if (it->ev != NULL) {
            saga__pevent_claim_id(it, claim, CLAIM_MAX);
            r[k].claim_id = SAGA__BUG(SAGA__BUG_INBOX) ? NULL : claim;
            continue;
        }
        if (it->own == NULL && !SAGA__BUG(SAGA__BUG_INBOX))
            r[k].claim_id = it->env.msg_id;
        saga__pbarrier_key(key, KEY_MAX, it->env.saga_id, it->env.step);
        /* A value the batch wrote already stays what a read sees. */
        if (bar_find(p->pb, key) == NULL)
            r[k].kv_key = key;
    }
    pf_ctx c = {p, items, r, SAGA_OK};
    rc = s->part_read(s, saga__pnow(p), r, k, pf_cb, &c);
    if (rc == SAGA_OK)
        rc = c.rc;
    if (rc == SAGA_OK)
        *done = k;
out:
    saga_free(r);
    saga_free(items);
    saga_free(keys);
    saga_free(claims);
    return rc;
}

int saga__pinbox_claim(saga_participant *p, item *it, const char *id,
                       saga_blob_cb cb, void *arg)
{
    saga_store *s = p->store;
    if (!it->pf)
        return s->inbox_claim(s, id, saga__pnow(p), cb, arg);
    if (it->pf_rc == SAGA_EDUP && cb != NULL)
        cb(it->pf_reply, it->pf_len, arg);
    return it->pf_rc;
}

int saga__pkv_get(saga_participant *p, const char *key, saga_blob_cb cb,
                  void *arg)
{
    saga_store *s = p->store;
    pbar *e = p->pb ? bar_find(p->pb, key) : NULL;
    if (e == NULL)
        return s->kv_get(s, key, cb, arg);
    if (!e->found)
        return SAGA_ENOTFOUND;
    cb(e->val, e->len, arg);
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Writes held for the commit                                               */

static pheld *hold(struct saga__pbatch *b, saga_part_op op, const char *key,
                   const void *val, size_t len)
{
    if (b->nw == b->cw) {
        size_t nc = b->cw ? b->cw * 2 : 64;
        pheld *nw = saga_realloc(b->w, nc * sizeof *nw);
        if (nw == NULL)
            return NULL;
        b->w = nw;
        b->cw = nc;
    }
    pheld *x = &b->w[b->nw];
    memset(x, 0, sizeof *x);
    x->w.op = op;
    x->w.key = key ? saga__strdup(key) : NULL;
    if (len > 0) {
        void *v = saga_malloc(len);
        if (v != NULL)
            memcpy(v, val, len);
        x->w.val = v;
    } else {
        x->w.val = "";
    }
    x->w.len = len;
    if ((key && x->w.key == NULL) || x->w.val == NULL) {
        saga_free((char *)x->w.key);
        if (len > 0)
            saga_free((void *)x->w.val);
        return NULL;
    }
    if (len == 0)
        x->w.val = NULL;
    b->nw++;
    return x;
}

int saga__pkv_put(saga_participant *p, const char *key, const void *val,
                  size_t len)
{
    saga_store *s = p->store;
    if (p->pb == NULL)
        return s->kv_put(s, key, val, len);
    if (hold(p->pb, SAGA_PART_KV_PUT, key, val, len) == NULL)
        return SAGA_ENOMEM;
    return bar_set(p->pb, key, val, len, 1, 0);
}

int saga__pkv_del(saga_participant *p, const char *key)
{
    saga_store *s = p->store;
    if (p->pb == NULL)
        return s->kv_del(s, key);
    if (hold(p->pb, SAGA_PART_KV_DEL, key, NULL, 0) == NULL)
        return SAGA_ENOMEM;
    return bar_set(p->pb, key, NULL, 0, 0, 0);
}

int saga__pinbox_reply(saga_participant *p, const char *id, const void *buf,
                       size_t len)
{
    saga_store *s = p->store;
    if (p->pb == NULL)
        return s->inbox_reply(s, id, buf, len);
    return hold(p->pb, SAGA_PART_INBOX_REPLY, id, buf, len) ? SAGA_OK
                                                            : SAGA_ENOMEM;
}

int saga__poutbox_put(saga_participant *p, const saga_message *m)
{
    saga_store *s = p->store;
    if (p->pb == NULL)
        return s->outbox_put(s, m);
    pheld *x = hold(p->pb, SAGA_PART_OUTBOX_PUT, NULL, m->payload, m->len);
    if (x == NULL)
        return SAGA_ENOMEM;
    /* The payload is the held value; the strings are copied. */
    x->m.payload = x->w.val;
    x->m.len = m->len;
    x->w.val = NULL;
    x->w.len = 0;
    x->m.created_ms = m->created_ms;
    x->m.id = saga__strdup(m->id);
    x->m.topic = saga__strdup(m->topic);
    x->m.key = m->key ? saga__strdup(m->key) : NULL;
    x->w.msg = &x->m;
    if (x->m.id == NULL || x->m.topic == NULL || (m->key && x->m.key == NULL))
        return SAGA_ENOMEM; /* freed with the batch */
    return SAGA_OK;
}

int saga__poutbox_done(saga_participant *p, const char *id)
{
    saga_store *s = p->store;
    if (p->pb == NULL)
        return s->outbox_done(s, id);
    return hold(p->pb, SAGA_PART_OUTBOX_DONE, id, NULL, 0) ? SAGA_OK
                                                           : SAGA_ENOMEM;
}

static void part_done(void *arg, int rc)
{
    saga_participant *p = arg;
    /* A close that stopped waiting for it has let the batch go. */
    if (!p->close_gave_up)
        saga__gc_done(&p->gc, rc);
}

int saga__pb_commit(saga_participant *p)
{
    saga_store *s = p->store;
    struct saga__pbatch *b = p->pb;
    if (b == NULL)
        return s->commit(s);
    saga_part_write *w = saga_malloc((b->nw ? b->nw : 1) * sizeof *w);
    if (w == NULL) {
        s->rollback(s);
        return SAGA_ENOMEM;
    }
    for (size_t i = 0; i < b->nw; i++) {
        w[i] = b->w[i].w;
        if (w[i].op == SAGA_PART_OUTBOX_PUT)
            w[i].msg = &b->w[i].m;
    }
    int rc;
    if (p->async && !p->closing) {
        /* On the loop: the replies and acks wait for its answer. */
        rc = s->part_commit_submit(s, w, b->nw, part_done, p);
        if (rc == SAGA_OK)
            rc = SAGA__GC_SUBMITTED;
    } else {
        rc = s->part_commit(s, w, b->nw);
    }
    saga_free(w);
    if (rc == SAGA_EINVAL)
        s->rollback(s);
    return rc;
}

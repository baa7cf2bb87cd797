/*
 * participant_defer.c — command handlers that answer later
 * (saga_reply_defer(), saga_deferred_reply()).
 *
 * A deferred command commits its inbox claim with an empty reply and its
 * barrier as 'P' (pending): 'P', a 4-byte big-endian length, the barrier
 * value it had before (empty, or 'A' + output for a compensation), and the
 * command as received. While the barrier is pending, a redelivery of the
 * same message finds its claim with no reply and does nothing; any other
 * command for the step is answered RETRY (participant_msg.c). The answer is
 * recorded in the next batch: the inbox reply, the barrier ('A' + output
 * or 'C' on OK, the previous value otherwise) and the reply in the outbox.
 * A participant that starts with pending barriers drives their commands
 * again (saga_command.redriven = 1).
 *
 * A handle lives in the participant's list from saga_reply_defer() until
 * it is answered and recorded, or abandoned. It is D_NEW until its
 * handler's transaction commits (then D_PENDING), or D_VOID if that
 * transaction is rolled back: the command runs again, so the old handle's
 * answer must do nothing. When the participant is freed the handles the
 * application still holds are detached (p = NULL).
 */
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "participant_int.h"

void saga__pbarrier_key(char *buf, size_t n, const char *saga_id, uint32_t step)
{
    snprintf(buf, n, "b/%s/%u", saga_id, step);
}

int saga__pbarrier_pending(const void *prev, size_t prev_len, const void *raw,
                           size_t raw_len, void **out, size_t *out_len)
{
    if (prev_len > UINT32_MAX)
        return SAGA_EINVAL;
    size_t n = 5 + prev_len + raw_len;
    unsigned char *v = saga_malloc(n);
    if (v == NULL)
        return SAGA_ENOMEM;
    v[0] = 'P';
    v[1] = (unsigned char)(prev_len >> 24);
    v[2] = (unsigned char)(prev_len >> 16);
    v[3] = (unsigned char)(prev_len >> 8);
    v[4] = (unsigned char)prev_len;
    if (prev_len)
        memcpy(v + 5, prev, prev_len);
    if (raw_len)
        memcpy(v + 5 + prev_len, raw, raw_len);
    *out = v;
    *out_len = n;
    return SAGA_OK;
}

int saga__pbarrier_split(const void *val, size_t len, const void **prev,
                         size_t *prev_len, const void **raw, size_t *raw_len)
{
    const unsigned char *v = val;
    if (len < 5 || v[0] != 'P')
        return 0;
    size_t pl = (size_t)v[1] << 24 | (size_t)v[2] << 16 | (size_t)v[3] << 8 |
                (size_t)v[4];
    if (pl > len - 5)
        return 0;
    *prev = v + 5;
    *prev_len = pl;
    *raw = v + 5 + pl;
    *raw_len = len - 5 - pl;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */

/* Take @p d out of the running batch's fresh list (a short list: the
 * handles its handlers made). */
static void unfresh(saga_participant *p, saga_deferred *d)
{
    if (!d->infresh)
        return;
    d->infresh = 0;
    if (p == NULL)
        return;
    for (saga_deferred **pp = &p->fresh; *pp; pp = &(*pp)->nnext)
        if (*pp == d) {
            *pp = d->nnext;
            break;
        }
    d->nnext = NULL;
}

static void unlink_def(saga_participant *p, saga_deferred *d)
{
    unfresh(p, d);
    if (d->prev)
        d->prev->next = d->next;
    else if (p != NULL && p->defs == d)
        p->defs = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

static void free_def(saga_deferred *d)
{
    saga_free(d->payload);
    saga_free(d->out);
    saga_free(d->error);
    saga_free(d);
}

int saga_reply_defer(saga_reply *reply, saga_deferred **out)
{
    if (out != NULL)
        *out = NULL;
    if (reply == NULL || out == NULL || reply->p == NULL || reply->it == NULL ||
        reply->deferred != NULL || !reply->p->in_handler)
        return SAGA_EINVAL;
    saga_participant *p = reply->p;
    saga_store *s = p->store;
    if (s->version < 2 || s->kv_scan == NULL || s->kv_del == NULL)
        return SAGA_EINVAL; /* a pending command could not be re-driven */
    const saga_envelope *env = &reply->it->env;
    saga_deferred *d = saga_malloc(sizeof *d);
    if (d == NULL)
        return SAGA_ENOMEM;
    memset(d, 0, sizeof *d);
    d->env = *env;
    if (env->payload_len > 0) {
        d->payload = saga_malloc(env->payload_len);
        if (d->payload == NULL) {
            saga_free(d);
            return SAGA_ENOMEM;
        }
        memcpy(d->payload, env->payload, env->payload_len);
    }
    d->env.payload = d->payload;
    d->cmd = (saga_command){.saga_id = d->env.saga_id,
                            .name = d->env.name,
                            .step = d->env.step,
                            .attempt = d->env.attempt,
                            .compensating = d->env.comp,
                            .msg_id = d->env.msg_id,
                            .payload = d->payload,
                            .payload_len = d->env.payload_len,
                            .redriven = reply->it->own != NULL};
    d->p = p;
    d->state = D_NEW;
    d->next = p->defs;
    if (p->defs)
        p->defs->prev = d;
    p->defs = d;
    d->nnext = p->fresh;
    d->infresh = 1;
    p->fresh = d;
    reply->deferred = d;
    reply->it->dfr = d;
    d->it = reply->it;
    *out = d;
    return SAGA_OK;
}

const saga_command *saga_deferred_command(const saga_deferred *d)
{
    return d ? &d->cmd : NULL;
}

/* Forget the item that made @p d (the item goes away after its batch):
 * through the handle's own link, not a walk of the queue (issue 8). */
static void forget_item(saga_participant *p, saga_deferred *d)
{
    (void)p;
    if (d->it != NULL && d->it->dfr == d)
        d->it->dfr = NULL;
    d->it = NULL;
}

void saga__pdefer_unlink_item(item *it)
{
    if (it->dfr != NULL && it->dfr->it == it)
        it->dfr->it = NULL;
    it->dfr = NULL;
}

int saga_deferred_reply(saga_deferred *d, saga_outcome outcome, const void *out,
                        size_t out_len, const char *error)
{
    if (d == NULL || (int)outcome < SAGA_OUTCOME_OK ||
        outcome > SAGA_OUTCOME_RETRY || (out == NULL && out_len > 0))
        return SAGA_EINVAL;
    if (out_len > 0 && !saga__data_is_map(out, out_len))
        return SAGA_EINVAL;
    saga_participant *p = d->p;
    if (p == NULL || p->closing) {
        if (p != NULL) {
            forget_item(p, d);
            unlink_def(p, d);
        }
        free_def(d);
        return SAGA_ECLOSED;
    }
    if (d->state == D_VOID) {
        saga__plog(p, SAGA_LOG_INFO, d->env.saga_id, (int)d->env.step,
                   "answer to %s dropped: the command runs again",
                   d->env.msg_id);
        unlink_def(p, d);
        free_def(d);
        return SAGA_OK;
    }
    void *copy;
    char *err;
    if (saga__answer_dup(out, out_len, error, &copy, &err) != SAGA_OK)
        return SAGA_ENOMEM;
    d->outcome = outcome;
    d->out = copy;
    d->out_len = out_len;
    d->error = err;
    d->answered = 1;
    if (d->state == D_PENDING) {
        d->anext = NULL;
        *p->answers_tail = d;
        p->answers_tail = &d->anext;
        saga__pschedule(p);
    }
    /* D_NEW: queued when its handler's transaction commits. */
    return SAGA_OK;
}

void saga_deferred_abandon(saga_deferred *d)
{
    if (d == NULL)
        return;
    if (d->p != NULL) {
        forget_item(d->p, d);
        unlink_def(d->p, d);
    }
    free_def(d);
}

/* ------------------------------------------------------------------------ */
/* Inside the batch                                                         */

typedef struct vbuf {
    void *p;
    size_t n;
    int found, oom;
} vbuf;

static int record_one(saga_participant *p, saga_deferred *d)
{
    char key[SAGA_NAME_MAX + 32];
    saga__pbarrier_key(key, sizeof key, d->env.saga_id, d->env.step);
    vbuf bar = {0};
    int rc = saga__pbar_get(p, key, &bar.p, &bar.n);
    if (rc != SAGA_OK)
        return rc;
    bar.found = bar.p != NULL;
    const void *prev, *raw;
    size_t prev_len, raw_len;
    if (bar.found &&
        saga__pbarrier_split(bar.p, bar.n, &prev, &prev_len, &raw, &raw_len)) {
        if (d->outcome == SAGA_OUTCOME_OK && !d->env.comp) {
            char *v = saga_malloc(d->out_len + 1);
            rc = v ? SAGA_OK : SAGA_ENOMEM;
            if (v != NULL) {
                v[0] = 'A';
                if (d->out_len)
                    memcpy(v + 1, d->out, d->out_len);
                rc = saga__pbar_put(p, key, v, d->out_len + 1);
                saga_free(v);
            }
        } else if (d->outcome == SAGA_OUTCOME_OK) {
            rc = saga__pbar_put(p, key, "C", 1);
        } else if (d->outcome == SAGA_OUTCOME_FAIL && !d->env.comp) {
            rc = saga__pbar_put(p, key, "F", 1); /* final (participant_msg.c) */
        } else {
            rc = saga__pbar_put(p, key, prev, prev_len);
        }
    }
    saga_free(bar.p);
    if (rc != SAGA_OK)
        return rc;
    return saga__preply(p, &d->env, d->outcome, d->env.comp ? NULL : d->out,
                        d->env.comp ? 0 : d->out_len, d->error);
}

int saga__pdefer_record(saga_participant *p)
{
    p->answering = p->answers;
    p->answers = NULL;
    p->answers_tail = &p->answers;
    for (saga_deferred *d = p->answering; d; d = d->anext) {
        int rc = record_one(p, d);
        if (rc != SAGA_OK)
            return rc;
    }
    return SAGA_OK;
}

void saga__pdefer_committed(saga_participant *p)
{
    while (p->answering != NULL) {
        saga_deferred *d = p->answering;
        p->answering = d->anext;
        unlink_def(p, d);
        free_def(d);
    }
    /* Only the handles this batch made can be D_NEW. */
    saga_deferred *fresh = p->fresh;
    p->fresh = NULL;
    for (saga_deferred *d = fresh, *nx; d; d = nx) {
        nx = d->nnext;
        d->nnext = NULL;
        d->infresh = 0;
        if (d->state != D_NEW)
            continue;
        d->state = D_PENDING;
        if (d->answered) {
            d->anext = NULL;
            *p->answers_tail = d;
            p->answers_tail = &d->anext;
            saga__pschedule(p);
        }
    }
}

void saga__pdefer_void(saga_participant *p, saga_deferred *d)
{
    forget_item(p, d);
    if (d->answered) { /* the application gave it away */
        unlink_def(p, d);
        free_def(d);
    } else {
        d->state = D_VOID;
    }
}

void saga__pdefer_rolled_back(saga_participant *p)
{
    /* Answers recorded in the failed batch: first in the queue again. */
    if (p->answering != NULL) {
        saga_deferred **t = &p->answering;
        while (*t)
            t = &(*t)->anext;
        *t = p->answers;
        if (p->answers == NULL)
            p->answers_tail = t;
        p->answers = p->answering;
        p->answering = NULL;
    }
    /* Only the handles this batch made can be D_NEW. */
    saga_deferred *d = p->fresh;
    p->fresh = NULL;
    while (d != NULL) {
        saga_deferred *nx = d->nnext;
        d->nnext = NULL;
        d->infresh = 0;
        if (d->state == D_NEW)
            saga__pdefer_void(p, d);
        d = nx;
    }
}

void saga__pdefer_detach(saga_participant *p)
{
    saga_deferred *d = p->defs;
    while (d != NULL) {
        saga_deferred *nx = d->next;
        d->prev = d->next = d->nnext = NULL;
        d->infresh = 0;
        d->it = NULL;
        if (d->answered)
            free_def(d);
        else
            d->p = NULL;
        d = nx;
    }
    p->defs = p->answers = p->answering = p->fresh = NULL;
    p->answers_tail = &p->answers;
}

/* ------------------------------------------------------------------------ */
/* Re-driving pending commands at start                                     */

typedef struct redrive_acc {
    saga_participant *p;
    item *head, **tail;
    int oom;
} redrive_acc;

static int redrive_cb(const char *key, const void *val, size_t len, void *arg)
{
    redrive_acc *a = arg;
    saga_participant *p = a->p;
    const void *prev, *raw;
    size_t prev_len, raw_len;
    val = saga__pbar_value(val, len, &len);
    if (len == 0 || ((const char *)val)[0] != 'P')
        return 0;
    if (!saga__pbarrier_split(val, len, &prev, &prev_len, &raw, &raw_len)) {
        saga__plog(p, SAGA_LOG_ERROR, NULL, -1,
                   "pending barrier %s is malformed; left as it is", key);
        return 0;
    }
    item *it = saga_malloc(sizeof *it);
    void *own = saga_malloc(raw_len ? raw_len : 1);
    if (it == NULL || own == NULL) {
        saga_free(it);
        saga_free(own);
        a->oom = 1;
        return 1;
    }
    memset(it, 0, sizeof *it);
    if (raw_len)
        memcpy(own, raw, raw_len);
    const char *why = NULL;
    int rc = saga_envelope_decode(&it->env, own, raw_len, p->opts.max_payload,
                                  &why);
    if (rc != SAGA_OK || it->env.kind != SAGA_MSG_COMMAND) {
        saga__plog(p, SAGA_LOG_ERROR, NULL, -1,
                   "pending command in %s cannot be decoded (%s); left as "
                   "it is",
                   key,
                   rc != SAGA_OK ? (why ? why : saga_err_name(rc))
                                 : "not a command");
        saga_free(it);
        saga_free(own);
        return 0;
    }
    it->own = own;
    it->raw = own;
    it->raw_len = raw_len;
    *a->tail = it;
    a->tail = &it->next;
    return 0;
}

int saga__pdefer_redrive(saga_participant *p)
{
    saga_store *s = p->store;
    if (s->version < 2 || s->kv_scan == NULL)
        return SAGA_OK;
    redrive_acc a = {p, NULL, &a.head, 0};
    int rc = s->kv_scan(s, "b/", redrive_cb, &a);
    if (rc == SAGA_OK && a.oom)
        rc = SAGA_ENOMEM;
    if (rc != SAGA_OK) {
        while (a.head) {
            item *nx = a.head->next;
            saga_free(a.head->own);
            saga_free(a.head);
            a.head = nx;
        }
        return rc;
    }
    for (item *it = a.head; it; it = it->next) {
        p->stats.redriven++;
        saga__plog(p, SAGA_LOG_INFO, it->env.saga_id, (int)it->env.step,
                   "driving the pending command %s again", it->env.msg_id);
    }
    if (a.head != NULL) {
        *p->tail = a.head;
        p->tail = a.tail;
        saga__pschedule(p);
    }
    return SAGA_OK;
}

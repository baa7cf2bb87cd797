/*
 * participant_msg.c — one received message inside the participant's batch
 * transaction: the inbox claim, the per-(saga, step) barrier, the handler,
 * and the reply recorded in the inbox and queued in the outbox.
 */
#include <stdio.h>
#include <string.h>

#include "participant_int.h"

/* ------------------------------------------------------------------------ */
/* Processing one message inside the batch transaction                     */

typedef struct blob {
    void *p;
    size_t n;
    int found;
    int oom;
} blob;

static void blob_cb(const void *buf, size_t len, void *arg)
{
    blob *b = arg;
    b->found = 1;
    b->p = saga_malloc(len ? len : 1);
    if (b->p == NULL) {
        b->oom = 1;
        return;
    }
    if (len)
        memcpy(b->p, buf, len);
    b->n = len;
}

handler *saga__pfind_cmd(saga_participant *p, const char *name)
{
    for (handler *h = p->handlers; h; h = h->next)
        if (h->cmd != NULL && strcmp(h->name, name) == 0)
            return h;
    return NULL;
}

/* Build, record and queue the reply to command @p env. */
static int reply(saga_participant *p, const saga_envelope *env, saga_outcome oc,
                 const void *out, size_t out_len, const char *error)
{
    saga_store *s = p->store;
    saga_envelope r;
    memset(&r, 0, sizeof r);
    r.v = SAGA_ENVELOPE_VERSION;
    r.kind = SAGA_MSG_REPLY;
    r.step = env->step;
    r.attempt = env->attempt;
    r.comp = env->comp;
    r.outcome = oc;
    snprintf(r.msg_id, sizeof r.msg_id, "%.250s.r", env->msg_id);
    memcpy(r.saga_id, env->saga_id, sizeof r.saga_id);
    memcpy(r.name, env->name, sizeof r.name);
    memcpy(r.trace, env->trace, sizeof r.trace);
    if (error != NULL)
        snprintf(r.error, sizeof r.error, "%s", error);
    r.payload = out;
    r.payload_len = out_len;
    saga__outmsg *m;
    int rc = saga__pencode(p, &r, env->reply_to, env->saga_id, &m);
    if (rc != SAGA_OK)
        return rc;
    rc = s->inbox_reply(s, env->msg_id, m->buf, m->len);
    saga_message msg = {m->id, m->topic, m->key, m->buf, m->len, m->created_ms};
    if (rc == SAGA_OK)
        rc = s->outbox_put(s, &msg);
    if (rc == SAGA_EDUP)
        rc = SAGA_OK; /* the same reply queued before: fine */
    if (rc != SAGA_OK) {
        saga__outmsg_free(m);
        return rc;
    }
    saga__pappend(&p->txn_tail, m);
    return SAGA_OK;
}

static int run_handler(saga_participant *p, handler *h,
                       const saga_envelope *env, saga_reply *rep)
{
    saga_command c = {env->saga_id, env->name,       env->step,
                      env->attempt, env->comp,       env->msg_id,
                      env->payload, env->payload_len, env->trace};
    p->in_handler = 1;
    p->cur = env;
    int rc = h->cmd(p, &c, rep, h->arg);
    p->cur = NULL;
    p->in_handler = 0;
    return rc;
}

int saga__pcommand(saga_participant *p, item *it)
{
    saga_store *s = p->store;
    saga_envelope *env = &it->env;
    blob rec = {0};
    int rc = s->inbox_claim(s, env->msg_id, saga__pnow(p), blob_cb, &rec);
    if (rc == SAGA_EDUP) {
        /* Seen before: answer again with the recorded reply. */
        p->stats.duplicates++;
        if (rec.found && rec.n > 0 && env->reply_to[0]) {
            char id[SAGA_NAME_MAX + 8];
            snprintf(id, sizeof id, "%.250s.r", env->msg_id);
            saga__outmsg *m = saga__outmsg_new(id, env->reply_to, env->saga_id,
                                               rec.p, rec.n, 0);
            if (m != NULL) {
                m->next = p->resend;
                p->resend = m;
            }
        }
        saga_free(rec.p);
        return SAGA_OK;
    }
    saga_free(rec.p);
    if (rc != SAGA_OK)
        return rc;
    p->stats.commands++;
    p->cur = env;
    saga__plog(p, SAGA_LOG_INFO, env->saga_id, (int)env->step,
               "%s %s (attempt %u)%s%s", env->comp ? "compensation" : "command",
               env->name, env->attempt, env->trace[0] ? " traceparent " : "",
               env->trace);
    p->cur = NULL;
    if (env->reply_to[0] == '\0') {
        saga__plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
                   "command %s has no reply_to; dropped", env->msg_id);
        return SAGA_OK;
    }
    handler *h = saga__pfind_cmd(p, env->name);
    if (h == NULL) {
        saga__plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
                   "no handler for command '%s'", env->name);
        return reply(p, env, SAGA_OUTCOME_FAIL, NULL, 0, "unknown command");
    }
    char key[SAGA_NAME_MAX + 32];
    snprintf(key, sizeof key, "b/%s/%u", env->saga_id, env->step);
    blob bar = {0};
    rc = s->kv_get(s, key, blob_cb, &bar);
    if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
        return rc;
    if (bar.oom)
        return SAGA_ENOMEM;
    char state = bar.found && bar.n > 0 ? ((char *)bar.p)[0] : 0;
    saga_reply rep = {SAGA_OUTCOME_OK, NULL, 0, NULL};
    if (!env->comp) {
        if (state == 'C' || state == 'N') {
            /* A hanging action: its compensation came first. */
            p->stats.hanging_refused++;
            saga__plog(p, SAGA_LOG_INFO, env->saga_id, (int)env->step,
                       "refused a hanging action (already %s)",
                       state == 'N' ? "null-compensated" : "compensated");
            rc = reply(p, env, SAGA_OUTCOME_FAIL, NULL, 0,
                       "refused: the step was already compensated");
        } else if (state == 'A') {
            /* A retried action: the first result, not a second effect. */
            p->stats.retried_actions++;
            rc = reply(p, env, SAGA_OUTCOME_OK, (char *)bar.p + 1, bar.n - 1,
                       NULL);
        } else {
            rc = run_handler(p, h, env, &rep);
            if (rc == SAGA_OK && rep.outcome == SAGA_OUTCOME_OK) {
                /* Record the first result after the marker. */
                char *v = saga_malloc(rep.out_len + 1);
                rc = v ? SAGA_OK : SAGA_ENOMEM;
                if (v != NULL) {
                    v[0] = 'A';
                    if (rep.out_len)
                        memcpy(v + 1, rep.out, rep.out_len);
                    rc = s->kv_put(s, key, v, rep.out_len + 1);
                    saga_free(v);
                }
            }
            if (rc == SAGA_OK)
                rc =
                    reply(p, env, rep.outcome, rep.out, rep.out_len, rep.error);
        }
    } else {
        if (state == 'A') {
            rc = run_handler(p, h, env, &rep);
            if (rc == SAGA_OK && rep.outcome == SAGA_OUTCOME_OK)
                rc = s->kv_put(s, key, "C", 1);
            if (rc == SAGA_OK)
                rc = reply(p, env, rep.outcome, NULL, 0, rep.error);
        } else if (state == 'C' || state == 'N') {
            rc = reply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        } else {
            /* Undo of an action that never applied: record it, so that a
             * late action is refused, and do nothing else. */
            p->stats.null_compensations++;
            rc = s->kv_put(s, key, "N", 1);
            if (rc == SAGA_OK)
                rc = reply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        }
    }
    saga_free(bar.p);
    saga_free(rep.out);
    saga_free(rep.error);
    return rc;
}

int saga__pevent(saga_participant *p, item *it)
{
    saga_store *s = p->store;
    /* One claim per subscription: two subscriptions may both want it. */
    char claim[SAGA_NAME_MAX * 3 + 8];
    snprintf(claim, sizeof claim, "%s@%s/%s", it->env.msg_id, it->ev->topic,
             it->ev->group);
    int rc = s->inbox_claim(s, claim, saga__pnow(p), NULL, NULL);
    if (rc == SAGA_EDUP) {
        p->stats.duplicates++;
        return SAGA_OK;
    }
    if (rc != SAGA_OK)
        return rc;
    p->stats.events++;
    saga_command c = {
        it->env.saga_id, it->env.name,       0, 0, 0, it->env.msg_id,
        it->env.payload, it->env.payload_len, it->env.trace};
    p->in_handler = 1;
    rc = it->ev->ev(p, &c, it->ev->arg);
    p->in_handler = 0;
    return rc;
}

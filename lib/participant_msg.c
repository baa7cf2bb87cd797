/*
 * participant_msg.c — one received message inside the participant's batch
 * transaction: the inbox claim, the per-(saga, step) barrier, the handler,
 * and the reply recorded in the inbox and queued (in the outbox only when
 * no delivery waits for it: see reply_as).
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

static int reply_as(saga_participant *p, const saga_envelope *env,
                    const char *suffix, saga_outcome oc, const void *out,
                    size_t out_len, const char *error);

/* Build, record and queue the reply to command @p env. */
int saga__preply(saga_participant *p, const saga_envelope *env, saga_outcome oc,
                 const void *out, size_t out_len, const char *error)
{
    return reply_as(p, env, "r", oc, out, out_len, error);
}

/* The reply's message id is the command's + "." + @p suffix: "r", or "rp"
 * for a "pending" RETRY, which must not take the id (and outbox row) of
 * the answer that comes later. */
static int reply_as(saga_participant *p, const saga_envelope *env,
                    const char *suffix, saga_outcome oc, const void *out,
                    size_t out_len, const char *error)
{
    saga_envelope r;
    memset(&r, 0, sizeof r);
    r.v = SAGA_ENVELOPE_VERSION;
    r.kind = SAGA_MSG_REPLY;
    r.step = env->step;
    r.attempt = env->attempt;
    r.comp = env->comp;
    r.outcome = oc;
    snprintf(r.msg_id, sizeof r.msg_id, "%.250s.%s", env->msg_id, suffix);
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
    rc = saga__pinbox_reply(p, env->msg_id, m->buf, m->len);
    if (rc == SAGA_ENOTFOUND)
        rc = SAGA_OK; /* a deferred answer whose claim was purged: send it */
    /* The reply to a received command needs no outbox row: its delivery is
     * acked only once the transport confirms the reply, so a crash before
     * that brings the command again, and the inbox answers it with the
     * reply recorded above. An answer with no delivery to hold (deferred,
     * re-driven) goes through the outbox. */
    item *hold = p->hold;
    if (hold != NULL && hold->reply == NULL && rc == SAGA_OK) {
        hold->reply = m;
        saga__pappend(&p->txn_tail, m);
        return SAGA_OK;
    }
    saga_message msg = {m->id, m->topic, m->key, m->buf, m->len, m->created_ms};
    if (rc == SAGA_OK)
        rc = saga__poutbox_put(p, &msg);
    if (rc == SAGA_EDUP)
        rc = SAGA_OK; /* the same reply queued before: fine */
    if (rc != SAGA_OK) {
        saga__outmsg_free(m);
        return rc;
    }
    saga__pappend(&p->txn_tail, m);
    return SAGA_OK;
}

static int run_handler(saga_participant *p, handler *h, item *it,
                       saga_reply *rep)
{
    const saga_envelope *env = &it->env;
    saga_command c = {.saga_id = env->saga_id,
                      .name = env->name,
                      .step = env->step,
                      .attempt = env->attempt,
                      .compensating = env->comp,
                      .msg_id = env->msg_id,
                      .payload = env->payload,
                      .payload_len = env->payload_len,
                      .redriven = it->own != NULL,
                      .traceparent = env->trace};
    rep->p = p;
    rep->it = it;
    p->in_handler = 1;
    p->cur = env;
    int rc = h->cmd(p, &c, rep, h->arg);
    p->cur = NULL;
    p->in_handler = 0;
    return rc;
}

/* Run the handler, or, once it has failed too often, answer FAIL with its
 * last error instead. A failure is noted in the item for the batch. */
static int call_handler(saga_participant *p, handler *h, item *it,
                        saga_reply *rep)
{
    if (it->give_up) {
        char msg[400];
        snprintf(msg, sizeof msg, "the handler failed %u times: %s%s%s",
                 it->tries, saga_err_name(it->herr_rc), it->herr[0] ? ": " : "",
                 it->herr);
        p->stats.handler_gave_up++;
        saga__plog(p, SAGA_LOG_ERROR, it->env.saga_id, (int)it->env.step,
                   "command %s: %s; answered FAIL", it->env.msg_id, msg);
        rep->p = NULL; /* no deferring here */
        return saga_reply_set(rep, SAGA_OUTCOME_FAIL, NULL, 0, msg);
    }
    int rc = run_handler(p, h, it, rep);
    if (rc != SAGA_OK) {
        it->hfail = 1;
        it->herr_rc = rc;
        snprintf(it->herr, sizeof it->herr, "%s", rep->error ? rep->error : "");
    }
    return rc;
}

/* Write the barrier; an empty value deletes it. */
static int put_barrier(saga_participant *p, const char *key, const void *v,
                       size_t n)
{
    return saga__pbar_put(p, key, v, n);
}

/* The handler deferred its answer: the barrier becomes pending, holding
 * what it was (@p cur) and the command, and nothing is replied now. */
static int defer_barrier(saga_participant *p, item *it, const char *key,
                         const void *cur, size_t cur_len)
{
    void *v;
    size_t n;
    int rc = saga__pbarrier_pending(cur, cur_len, it->raw, it->raw_len, &v, &n);
    if (rc != SAGA_OK)
        return rc;
    rc = saga__pbar_put(p, key, v, n);
    saga_free(v);
    if (rc == SAGA_OK)
        p->stats.deferred++;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The barrier (DESIGN §6, item 3): one row per (saga, step)               */

/* What the barrier says about a step: the row's first byte. 'P' (a
 * deferred command pending) is taken apart before this is read. */
typedef enum bar_state {
    BAR_NONE,        /* no row: nothing ran yet */
    BAR_APPLIED,     /* 'A' + the action's first result */
    BAR_FAILED,      /* 'F': the action answered FAIL (final) */
    BAR_COMPENSATED, /* 'C': the compensation ran */
    BAR_NULL_COMP,   /* 'N': compensated before the action ever ran */
    BAR__COUNT
} bar_state;

/* What a command does, given its direction and the barrier. */
typedef enum bar_action {
    DO_RUN,            /* run the handler, then record its result */
    DO_REPLAY,         /* a retried action: the first result, no 2nd effect */
    DO_REFUSE_HANGING, /* an action after its compensation: FAIL */
    DO_REFUSE_FAILED,  /* an action that failed before: FAIL again */
    DO_ACK,            /* a compensation already done: OK again */
    DO_NULL_COMP,      /* undo of an action never applied: record 'N', OK */
    DO_FAILED          /* not in the table: a store write already failed */
} bar_action;

static const bar_action bar_table[2][BAR__COUNT] = {
    /* an action arrives */
    [0] = {[BAR_NONE] = DO_RUN,
           [BAR_APPLIED] = DO_REPLAY,
           [BAR_FAILED] = DO_REFUSE_FAILED,
           [BAR_COMPENSATED] = DO_REFUSE_HANGING,
           [BAR_NULL_COMP] = DO_REFUSE_HANGING},
    /* a compensation arrives */
    [1] = {[BAR_NONE] = DO_NULL_COMP,
           [BAR_APPLIED] = DO_RUN,
           [BAR_FAILED] = DO_NULL_COMP,
           [BAR_COMPENSATED] = DO_ACK,
           [BAR_NULL_COMP] = DO_ACK},
};

static bar_state bar_state_of(const void *v, size_t len)
{
    switch (len > 0 ? ((const char *)v)[0] : 0) {
    case 'A':
        return BAR_APPLIED;
    case 'F':
        return BAR_FAILED;
    case 'C':
        return BAR_COMPENSATED;
    case 'N':
        return BAR_NULL_COMP;
    default:
        return BAR_NONE;
    }
}

/* The barrier after an action answered @p oc (@p cur: what it was). */
static int action_done(saga_participant *p, const char *key,
                       const saga_reply *rep, const void *cur, size_t cur_len,
                       int redrive)
{
    if (rep->outcome == SAGA_OUTCOME_FAIL &&
        !SAGA__BUG(SAGA__BUG_FAIL_NOT_FINAL))
        return put_barrier(p, key, "F", 1); /* final: see the 'F' state */
    if (rep->outcome != SAGA_OUTCOME_OK)
        return redrive ? put_barrier(p, key, cur, cur_len) : SAGA_OK;
    /* Record the first result after the marker. */
    char *v = saga_malloc(rep->out_len + 1);
    if (v == NULL)
        return SAGA_ENOMEM;
    v[0] = 'A';
    if (rep->out_len)
        memcpy(v + 1, rep->out, rep->out_len);
    int rc = saga__pbar_put(p, key, v, rep->out_len + 1);
    saga_free(v);
    return rc;
}

/* The barrier after a compensation answered (@p cur: what it was). */
static int comp_done(saga_participant *p, const char *key,
                     const saga_reply *rep, const void *cur, size_t cur_len,
                     int redrive)
{
    if (rep->outcome == SAGA_OUTCOME_OK)
        return saga__pbar_put(p, key, "C", 1);
    return redrive ? put_barrier(p, key, cur, cur_len) : SAGA_OK;
}

/* Run the handler of a command the barrier lets through, record what it
 * answered and reply (or, deferred, mark the barrier pending). */
static int run_command(saga_participant *p, handler *h, item *it,
                       const char *key, const void *cur, size_t cur_len,
                       int redrive, saga_reply *rep)
{
    const saga_envelope *env = &it->env;
    int rc = call_handler(p, h, it, rep);
    if (rc != SAGA_OK)
        return rc;
    if (rep->deferred != NULL)
        return defer_barrier(p, it, key, cur, cur_len);
    if (!env->comp) {
        rc = action_done(p, key, rep, cur, cur_len, redrive);
        if (rc == SAGA_OK)
            rc = saga__preply(p, env, rep->outcome, rep->out, rep->out_len,
                              rep->error);
    } else {
        rc = comp_done(p, key, rep, cur, cur_len, redrive);
        if (rc == SAGA_OK)
            rc = saga__preply(p, env, rep->outcome, NULL, 0, rep->error);
    }
    return rc;
}

static int pcommand(saga_participant *p, item *it);

int saga__pcommand(saga_participant *p, item *it)
{
    it->reply = NULL;
    p->hold = it->d != NULL ? it : NULL;
    int rc = pcommand(p, it);
    p->hold = NULL;
    return rc;
}

static int pcommand(saga_participant *p, item *it)
{
    saga_envelope *env = &it->env;
    int redrive = it->own != NULL;
    int rc;
    if (!redrive) {
        blob rec = {0};
        rc = SAGA__BUG(SAGA__BUG_INBOX)
                 ? SAGA_OK
                 : saga__pinbox_claim(p, it, env->msg_id, blob_cb, &rec);
        if (rc == SAGA_EDUP) {
            /* Seen before: answer again with the recorded reply (none
             * yet while it is pending: nothing to do). */
            p->stats.duplicates++;
            if ((rec.n > 0 || rec.oom) && env->reply_to[0]) {
                char id[SAGA_NAME_MAX + 8];
                snprintf(id, sizeof id, "%.250s.r", env->msg_id);
                /* rec.oom: copying the recorded reply out of the store
                 * failed; the same case as the message failing. */
                saga__outmsg *m = rec.oom ? NULL
                                          : saga__outmsg_new(id, env->reply_to,
                                                             env->saga_id,
                                                             rec.p, rec.n, 0);
                if (m == NULL) {
                    /* Not dropped: the batch fails as a store failure does
                     * (rolled back, retried later), and the duplicate comes
                     * through here again. */
                    saga_free(rec.p);
                    saga__plog(p, SAGA_LOG_ERROR, env->saga_id, (int)env->step,
                               "duplicate %s: out of memory resending its "
                               "reply; the batch is retried",
                               env->msg_id);
                    return SAGA_ENOMEM;
                }
                m->next = p->resend;
                p->resend = m;
                if (p->hold != NULL && p->hold->reply == NULL)
                    p->hold->reply = m; /* acked once it is confirmed */
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
                   "%s %s (attempt %u)%s%s",
                   env->comp ? "compensation" : "command", env->name,
                   env->attempt, env->trace[0] ? " traceparent " : "",
                   env->trace);
        p->cur = NULL;
        if (env->reply_to[0] == '\0') {
            saga__plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
                       "command %s has no reply_to; dropped", env->msg_id);
            return SAGA_OK;
        }
    }
    char key[SAGA_NAME_MAX + 32];
    saga__pbarrier_key(key, sizeof key, env->saga_id, env->step);
    blob bar = {0};
    rc = saga__pbar_get(p, key, &bar.p, &bar.n);
    if (rc != SAGA_OK)
        return rc;
    bar.found = bar.p != NULL;
    /* What the barrier says; for a re-driven command, what it said before
     * the command became pending. */
    const void *cur = bar.p;
    size_t cur_len = bar.found ? bar.n : 0;
    char state = cur_len > 0 ? ((const char *)cur)[0] : 0;
    if (state == 'P') {
        const void *raw;
        size_t raw_len;
        if (!redrive) {
            /* Its step waits for a deferred answer: not twice, not now. */
            p->stats.pending_retried++;
            saga__plog(p, SAGA_LOG_INFO, env->saga_id, (int)env->step,
                       "%s %s: the step is pending; answered RETRY",
                       env->comp ? "compensation" : "action", env->msg_id);
            rc = reply_as(p, env, "rp", SAGA_OUTCOME_RETRY, NULL, 0,
                          "pending: the participant has not answered "
                          "the step yet");
            saga_free(bar.p);
            return rc;
        }
        if (!saga__pbarrier_split(bar.p, bar.n, &cur, &cur_len, &raw,
                                  &raw_len)) {
            saga_free(bar.p);
            return SAGA_OK; /* logged when it was found */
        }
        state = cur_len > 0 ? ((const char *)cur)[0] : 0;
    } else if (redrive) {
        saga_free(bar.p); /* answered meanwhile */
        return SAGA_OK;
    }
    handler *h = saga__pfind_cmd(p, env->name);
    if (h == NULL) {
        saga__plog(p, SAGA_LOG_WARN, env->saga_id, (int)env->step,
                   "no handler for command '%s'", env->name);
        rc = redrive ? put_barrier(p, key, cur, cur_len) : SAGA_OK;
        if (rc == SAGA_OK)
            rc = saga__preply(p, env, SAGA_OUTCOME_FAIL, NULL, 0,
                              "unknown command");
        saga_free(bar.p);
        return rc;
    }
    saga_reply rep;
    memset(&rep, 0, sizeof rep);
    rep.outcome = SAGA_OUTCOME_OK;
    bar_state bs = bar_state_of(cur, cur_len);
    bar_action act = bar_table[env->comp ? 1 : 0][bs];
    if (SAGA__BUG(SAGA__BUG_NO_HANGING) &&
        (act == DO_REFUSE_HANGING || act == DO_REFUSE_FAILED))
        act = DO_RUN;
    /* A re-driven command that does not run puts back what the barrier
     * said before the command became pending. */
    rc = SAGA_OK;
    if (redrive && act != DO_RUN && act != DO_NULL_COMP)
        rc = put_barrier(p, key, cur, cur_len);
    switch (rc == SAGA_OK ? act : DO_FAILED) {
    case DO_RUN:
        rc = run_command(p, h, it, key, cur, cur_len, redrive, &rep);
        break;
    case DO_REPLAY:
        p->stats.retried_actions++;
        rc = saga__preply(p, env, SAGA_OUTCOME_OK, (const char *)cur + 1,
                          cur_len - 1, NULL);
        break;
    case DO_REFUSE_HANGING:
        p->stats.hanging_refused++;
        saga__plog(p, SAGA_LOG_INFO, env->saga_id, (int)env->step,
                   "refused a hanging action (already %s)",
                   bs == BAR_NULL_COMP ? "null-compensated" : "compensated");
        rc = saga__preply(p, env, SAGA_OUTCOME_FAIL, NULL, 0,
                          "refused: the step was already compensated");
        break;
    case DO_REFUSE_FAILED:
        /* The action answered FAIL before, and the orchestrator moved on:
         * an older attempt still in the network (it timed out, so a pivot
         * without compensation may have been given up on) must not apply
         * now. */
        p->stats.retried_actions++;
        rc = saga__preply(p, env, SAGA_OUTCOME_FAIL, NULL, 0,
                          "refused: the action failed before");
        break;
    case DO_ACK:
        rc = saga__preply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        break;
    case DO_NULL_COMP:
        /* Record it, so that a late action is refused; do nothing else. */
        p->stats.null_compensations++;
        rc = saga__pbar_put(p, key, "N", 1);
        if (rc == SAGA_OK)
            rc = saga__preply(p, env, SAGA_OUTCOME_OK, NULL, 0, NULL);
        break;
    case DO_FAILED: /* putting the barrier back failed: rc says why */
        break;
    }
    saga_free(bar.p);
    saga_free(rep.out);
    saga_free(rep.error);
    return rc;
}

int saga__pevent(saga_participant *p, item *it)
{
    /* One claim per subscription: two subscriptions may both want it. */
    char claim[SAGA_NAME_MAX * 3 + 8];
    saga__pevent_claim_id(it, claim, sizeof claim);
    int rc = SAGA__BUG(SAGA__BUG_INBOX)
                 ? SAGA_OK
                 : saga__pinbox_claim(p, it, claim, NULL, NULL);
    if (rc == SAGA_EDUP) {
        p->stats.duplicates++;
        return SAGA_OK;
    }
    if (rc != SAGA_OK)
        return rc;
    p->stats.events++;
    saga_command c = {.saga_id = it->env.saga_id,
                      .name = it->env.name,
                      .msg_id = it->env.msg_id,
                      .payload = it->env.payload,
                      .payload_len = it->env.payload_len,
                      .traceparent = it->env.trace};
    p->in_handler = 1;
    rc = it->ev->ev(p, &c, it->ev->arg);
    p->in_handler = 0;
    if (rc != SAGA_OK) {
        it->hfail = 1;
        it->herr_rc = rc;
        it->herr[0] = '\0';
    }
    return rc;
}

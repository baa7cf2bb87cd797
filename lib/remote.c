/*
 * remote.c — remote steps on the orchestrator side (DESIGN §5, §6).
 *
 * An attempt of a remote step is a command envelope written to the outbox in
 * the transaction of the transition that starts the attempt; the relay
 * publishes it to the step's service after the commit. The reply comes back
 * on the engine's own topic and carries (saga id, step, attempt, comp): a
 * reply for anything but the current attempt is stale, logged and dropped.
 * A reply is acked only after the transition it causes is committed.
 * A command the transport can never deliver (no such service) fails its
 * attempt at once with the reason (relay_fail).
 */
#include <stdio.h>
#include <string.h>

#include "saga/codec.h"
#include "engine_int.h"

static void relay_done(void *owner, const char *msg_id)
{
    saga__stage_outbox_done(owner, msg_id);
}

static void relay_log(void *owner, saga_log_level lvl, const char *msg)
{
    saga__log(owner, lvl, NULL, -1, "%s", msg);
}

/* Several engines: the relay publishes only while the lease is surely
 * live, and forgets what it queued under an epoch that ended (own.c). */
static uint64_t relay_term(void *owner) { return saga__own_term(owner); }

static void relay_lost(void *owner) { saga__own_give_up(owner); }

/* Whether a reply (or a failure) for (step, attempt, comp) is for the
 * current attempt of @p in, a remote step in flight. */
static int is_current(const saga__inst *in, uint32_t step, uint32_t attempt,
                      int comp)
{
    return saga__m_is_current(in, step, attempt, comp) &&
           in->def->steps[in->step].opts.service != NULL;
}

/* The relay cannot deliver a command, ever (its service is unknown to the
 * transport): the attempt fails now, naming the destination, instead of
 * timing out (and the retries with it). Its id is "<saga>.<step>.<attempt>.
 * <a|c>" and its key the saga id (saga__remote_command). */
static void relay_fail(void *owner, const saga__outmsg *m, int code,
                       const char *why)
{
    saga_engine *e = owner;
    int step;
    unsigned attempt;
    char dir;
    size_t kl = m->key != NULL ? strlen(m->key) : 0;
    if (kl == 0 || strncmp(m->id, m->key, kl) != 0 ||
        sscanf(m->id + kl, ".%d.%u.%c", &step, &attempt, &dir) != 3 || step < 0)
        return; /* not a command of ours: the relay logged it */
    saga__inst *in = saga__inst_find(e, m->key);
    if (!is_current(in, (uint32_t)step, attempt, dir == 'c')) {
        saga__log(e, SAGA_LOG_INFO, m->key, step,
                  "undeliverable command of a past attempt (%u) ignored",
                  attempt);
        return;
    }
    char err[SAGA_NAME_MAX + 300];
    snprintf(err, sizeof err,
             "cannot deliver the %s to service '%s' (%s: "
             "%.200s)",
             dir == 'c' ? "compensation command" : "command", m->topic,
             code == SAGA_ENOROUTE ? "no such destination"
                                   : saga_err_name(code),
             why);
    saga__log(e, SAGA_LOG_ERROR, in->id, in->step, "%s", err);
    if (saga__complete(e, in, SAGA_OUTCOME_FAIL, NULL, 0, err) != SAGA_OK)
        saga__log(e, SAGA_LOG_ERROR, in->id, in->step,
                  "cannot fail the step: %s; it times out instead", e->errmsg);
}

int saga__remote_command(saga_engine *e, saga__inst *in)
{
    const saga__step *s = &in->def->steps[in->step];
    int comp = (in->flags & SAGA_REC_BACKWARD) != 0;
    saga_envelope env;
    memset(&env, 0, sizeof env);
    env.v = SAGA_ENVELOPE_VERSION;
    env.kind = SAGA_MSG_COMMAND;
    env.step = (uint32_t)in->step;
    env.attempt = in->attempt;
    env.comp = comp;
    /* One id per attempt: (saga, step, attempt, direction) and the
     * journal position, since an operator retry starts the attempts over
     * at 1 and its command must not collide with the first attempt 1 (its
     * outbox row may still be queued, and the participant's inbox would
     * answer with the old reply). A re-sent command is the outbox row, id
     * included, so the inbox still recognises it. */
    snprintf(env.msg_id, sizeof env.msg_id, "%s.%d.%u.%c.%u", in->id, in->step,
             in->attempt, comp ? 'c' : 'a',
             SAGA__BUG(SAGA__BUG_RETRY_SAME_ID) ? 0u : in->jseq);
    snprintf(env.saga_id, sizeof env.saga_id, "%s", in->id);
    snprintf(env.name, sizeof env.name, "%s",
             comp ? s->opts.comp_command : s->opts.command);
    snprintf(env.reply_to, sizeof env.reply_to, "%s", e->opts.service);
    env.payload = in->data;
    env.payload_len = in->data_len;
    saga_step_ref ref;
    memcpy(ref.saga_id, in->id, SAGA_ID_SIZE);
    ref.step = (uint32_t)in->step;
    ref.attempt = in->attempt;
    ref.compensating = (uint32_t)comp;
    if (saga_step_traceparent(in->data, in->data_len, &ref, env.trace) !=
        SAGA_OK)
        env.trace[0] = '\0';
    void *buf;
    size_t len;
    int rc = saga_envelope_encode(&env, &buf, &len);
    if (rc != SAGA_OK)
        return saga__err(e, rc, "encoding the command failed");
    saga__outmsg *m = saga__outmsg_new(env.msg_id, s->opts.service, in->id, buf,
                                       len, saga__now(e));
    saga_free(buf);
    if (m == NULL)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    saga__stage_outmsg(e, m);
    return SAGA_OK;
}

static void ack_now(saga_engine *e, saga_delivery *d)
{
    e->transport->ack(e->transport, d);
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)t, (void)topic, (void)key;
    saga_engine *e = arg;
    saga_envelope env;
    const char *why = NULL;
    int rc = saga_envelope_decode(&env, buf, len, e->opts.max_data_size, &why);
    if (rc != SAGA_OK || env.kind != SAGA_MSG_REPLY) {
        e->replies_rejected++;
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "rejected a %zu-byte message on '%s': %s", len,
                  e->opts.service,
                  rc != SAGA_OK ? (why ? why : saga_err_name(rc))
                                : "not a reply");
        ack_now(e, d);
        return;
    }
    saga__inst *in = saga__inst_find(e, env.saga_id);
    int current = is_current(in, env.step, env.attempt, env.comp);
    if (!current) {
        e->stats.stale_completions++;
        saga__log(e, SAGA_LOG_INFO, env.saga_id, (int)env.step,
                  "ignored a stale reply (attempt %u%s)%s", env.attempt,
                  env.comp ? ", compensation" : "",
                  in ? "" : ": the saga is not active");
        ack_now(e, d);
        return;
    }
    const char *err = env.error[0] ? env.error : NULL;
    rc = saga__complete(e, in, env.outcome, env.payload, env.payload_len, err);
    if (rc == SAGA_EINVAL) {
        /* The participant said OK but its output cannot be merged: treat
         * it as a timed-out attempt, which may have applied. */
        saga__log(e, SAGA_LOG_WARN, in->id, in->step,
                  "reply output rejected: %s", e->errmsg);
        in->flags |= SAGA_REC_MAYBE;
        rc = saga__complete(e, in, SAGA_OUTCOME_RETRY, NULL, 0,
                            "reply output rejected");
    }
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_ACK;
    f.delivery = d;
    if (rc != SAGA_OK || saga__push_effect(e, &f) != SAGA_OK)
        ack_now(e, d); /* nothing staged: the reply is spent */
}

int saga__remote_start(saga_engine *e)
{
    int rc = saga__relay_new(&e->relay, e->loop, e->transport, e, relay_done,
                             relay_log);
    if (rc != SAGA_OK)
        return rc;
    saga__relay_on_fail(e->relay, relay_fail);
    rc = e->transport->subscribe(e->transport, e->opts.service, e->opts.service,
                                 on_reply, e);
    if (rc != SAGA_OK)
        return saga__err(e, SAGA_ETRANSPORT, "subscribing to '%s': %s",
                         e->opts.service, e->transport->errmsg(e->transport));
    saga_store *s = e->store;
    if (s->version >= 10 && s->outbox_scan_submit != NULL &&
        (e->own == NULL || saga__own_async(e))) {
        /* On the loop (store version 10). With a lease, the relay
         * publishes only under it, and the outbox rows of the sagas this
         * engine claims are taken over after each claim (saga__remote_
         * owned), the first at start once the lease is taken; alone on the
         * store, every pending row now. */
        if (e->own != NULL)
            saga__relay_gate(e->relay, relay_term, relay_lost);
        else
            saga__relay_scan_submit(e->relay, s);
        return SAGA_OK;
    }
    rc = saga__relay_recover(e->relay, s);
    if (rc != SAGA_OK)
        return saga__err(e, SAGA_ESTORE, "outbox recovery: %s", s->errmsg(s));
    return SAGA_OK;
}

void saga__remote_owned(saga_engine *e)
{
    if (e->relay != NULL && !e->closing)
        saga__relay_scan_submit(e->relay, e->store);
}

void saga__remote_close(saga_engine *e)
{
    saga__relay_close(e->relay);
    e->relay = NULL;
}

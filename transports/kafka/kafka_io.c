/*
 * kafka_io.c — the librdkafka side of the Kafka transport.
 *
 * Each rd_kafka_t (the producer, one consumer per group) has its event
 * queue bridged to the loop: rd_kafka_queue_io_event_enable() makes
 * librdkafka write a byte to a pipe when the queue becomes non-empty, a
 * uv_poll watches the pipe, and the loop drains the queue with
 * rd_kafka_queue_poll(q, 0). So delivery reports, messages, rebalances and
 * commit results are all handled on the loop thread, and nothing here
 * waits for the network. rd_kafka_destroy() (which joins librdkafka's
 * threads) runs on the libuv thread pool.
 *
 * Offsets: a consumer keeps, per assigned partition, its deliveries not
 * acked yet in offset order. The offset to commit is the lowest of them,
 * or the one after the last delivered when all are acked; a timer commits
 * it (rd_kafka_commit_queue, result on the same queue) and a failed commit
 * is tried again. Nothing past an unacked delivery is ever committed.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "kafka_int.h"

/* Events handled per wake-up before the loop gets a turn. */
#define DRAIN_MAX 1024
/* While closing, the queue is polled this often (the close itself does
 * not always post an event). */
#define CLOSE_TICK_MS 10

static void drain(kclient *c);
static void begin_destroy(kclient *c);

/* ---- the pump: callbacks of sends ended by close ------------------------ */

static void on_pump(uv_idle_t *h)
{
    kafka_t *t = h->data;
    klink *n;
    while ((n = kl_pop_front(&t->completed)) != NULL) {
        kout *m = KCONTAINER(n, kout, node);
        t->st.send_failed++;
        if (m->cb != NULL)
            m->cb(&t->base, m->status, m->arg);
        saga_free(m);
    }
    uv_idle_stop(h);
    if (t->closing)
        saga__kafka_pump_close(t);
}

void saga__kafka_pump_kick(kafka_t *t)
{
    if (t->pump_open)
        uv_idle_start(&t->pump, on_pump);
}

/* ---- partitions and deliveries --------------------------------------- */

static kpart *part_find(kgroup *g, const char *ktopic, int32_t partition)
{
    for (klink *n = g->parts.next; n != &g->parts; n = n->next) {
        kpart *p = KCONTAINER(n, kpart, node);
        if (!p->revoked && p->partition == partition &&
            strcmp(p->ktopic, ktopic) == 0)
            return p;
    }
    return NULL;
}

void saga__kafka_part_unref(kpart *p)
{
    if (--p->refs > 0)
        return;
    kl_remove(&p->node);
    saga_free(p->ktopic);
    saga_free(p);
}

void saga__kafka_delivery_free(saga_delivery *d)
{
    d->magic = 0;
    saga_free(d);
}

static int64_t commit_offset(const kpart *p)
{
    if (!kl_empty(&p->pending))
        return KCONTAINER(p->pending.next, saga_delivery, node)->offset;
    return p->next;
}

static void set_paused(kgroup *g, int pause)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(g->c.rk, &l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    if (pause)
        rd_kafka_pause_partitions(g->c.rk, l);
    else
        rd_kafka_resume_partitions(g->c.rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    g->paused = pause;
    saga__kafka_log(g->t, SAGA_LOG_INFO, "kafka: group %s %s (%u unacked)",
                    g->name, pause ? "paused" : "resumed",
                    (unsigned)g->unacked);
}

static void on_commit_timer(uv_timer_t *h);

void saga__kafka_ack(kafka_t *t, saga_delivery *d)
{
    kpart *p = d->p;
    kgroup *g = p->g;
    kl_remove(&d->node);
    saga__kafka_delivery_free(d);
    t->st.acked++;
    g->unacked--;
    if (p->revoked) {
        /* Its partition went to another member, which gets it again. */
        t->st.stale_acks++;
    } else if (g->c.state == KC_RUN &&
               !uv_is_active((uv_handle_t *)&g->c.timer)) {
        uv_timer_start(&g->c.timer, on_commit_timer, t->o.commit_interval_ms,
                       0);
    }
    if (g->paused && g->c.state == KC_RUN && g->unacked <= t->o.max_unacked / 2)
        set_paused(g, 0);
    saga__kafka_part_unref(p);
}

/* ---- commits ------------------------------------------------------------- */

static int send_commit(kgroup *g, rd_kafka_topic_partition_list_t *l)
{
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(g->c.rk, l, g->c.q, NULL,
                                                    NULL);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        saga__kafka_log(g->t, SAGA_LOG_WARN, "kafka: group %s: commit: %s",
                        g->name, rd_kafka_err2str(err));
        g->t->st.commit_errors++;
        return -1;
    }
    g->commits_inflight++;
    return 0;
}

/* Commit what the acks allow, for every assigned partition that moved.
 * @return the number of partitions in the request. */
static int group_commit(kgroup *g)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (klink *n = g->parts.next; n != &g->parts; n = n->next) {
        kpart *p = KCONTAINER(n, kpart, node);
        int64_t off = commit_offset(p);
        if (p->revoked || off < 0 || off <= p->requested)
            continue;
        rd_kafka_topic_partition_list_add(l, p->ktopic, p->partition)
            ->offset = off;
        p->requested = off;
    }
    int cnt = l->cnt;
    if (cnt > 0 && send_commit(g, l) != 0) {
        for (int i = 0; i < l->cnt; i++) {
            kpart *p = part_find(g, l->elems[i].topic, l->elems[i].partition);
            if (p != NULL)
                p->requested = p->committed;
        }
        cnt = 0;
        if (g->c.state == KC_RUN)
            uv_timer_start(&g->c.timer, on_commit_timer,
                           g->t->o.commit_interval_ms, 0);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return cnt;
}

static void on_commit_timer(uv_timer_t *h)
{
    kclient *c = h->data;
    if (c->state == KC_RUN)
        group_commit(c->g);
}

/* A failed commit is tried again after a pause of at least 250 ms. */
static uint32_t retry_ms(uint32_t interval)
{
    return interval > 250 ? interval : 250;
}

static void on_commit_result(kgroup *g, rd_kafka_event_t *ev)
{
    kafka_t *t = g->t;
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    const rd_kafka_topic_partition_list_t
        *l = rd_kafka_event_topic_partition_list(ev);
    int failed = 0;
    g->commits_inflight--;
    for (int i = 0; l != NULL && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &l->elems[i];
        kpart *p = part_find(g, e->topic, e->partition);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR ||
            e->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            failed = 1;
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                err = e->err;
            if (p != NULL && p->requested == e->offset)
                p->requested = p->committed; /* ask again */
        } else if (p != NULL && e->offset > p->committed) {
            p->committed = e->offset;
        }
    }
    if (failed || (l == NULL && err != RD_KAFKA_RESP_ERR_NO_ERROR)) {
        t->st.commit_errors++;
        /* A rebalance in progress refuses commits until it is over: that
         * is routine, not worth a warning. */
        saga__kafka_log(t,
                        err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
                                err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION
                            ? SAGA_LOG_INFO
                            : SAGA_LOG_WARN,
                        "kafka: group %s: offset commit failed: %s "
                        "(tried again)",
                        g->name, rd_kafka_err2str(err));
        if (g->c.state == KC_RUN)
            uv_timer_start(&g->c.timer, on_commit_timer,
                           retry_ms(t->o.commit_interval_ms), 0);
    } else {
        t->st.commits++;
    }
}

/* ---- rebalances ---------------------------------------------------------- */

static void on_assign(kgroup *g, const rd_kafka_topic_partition_list_t *l)
{
    kafka_t *t = g->t;
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *e = &l->elems[i];
        if (part_find(g, e->topic, e->partition) != NULL)
            continue;
        kpart *p = saga_malloc(sizeof *p);
        char *kt = saga__strdup(e->topic);
        if (p == NULL || kt == NULL) {
            /* Delivered messages of an unknown partition are skipped (not
             * committed): another rebalance brings them back. */
            saga_free(p);
            saga_free(kt);
            saga__kafka_log(t, SAGA_LOG_ERROR, "kafka: out of memory");
            continue;
        }
        memset(p, 0, sizeof *p);
        p->g = g;
        p->ktopic = kt;
        p->partition = e->partition;
        p->next = p->requested = p->committed = p->floor = -1;
        for (size_t j = 0; j < g->nfloors; j++)
            if (g->floors[j].partition == e->partition &&
                strcmp(g->floors[j].ktopic, e->topic) == 0)
                p->floor = p->next = g->floors[j].offset;
        p->refs = 1;
        kl_init(&p->pending);
        kl_push_back(&g->parts, &p->node);
        g->assigned++;
        t->st.assigned++;
    }
}

static void remember_floor(kgroup *g, const char *kt, int32_t partition,
                           int64_t off)
{
    for (size_t i = 0; i < g->nfloors; i++)
        if (g->floors[i].partition == partition &&
            strcmp(g->floors[i].ktopic, kt) == 0) {
            if (off > g->floors[i].offset)
                g->floors[i].offset = off;
            return;
        }
    kfloor *nf = saga_realloc(g->floors, (g->nfloors + 1) * sizeof *nf);
    if (nf == NULL)
        return; /* only an optimisation: the inbox absorbs the repeats */
    g->floors = nf;
    if ((nf[g->nfloors].ktopic = saga__strdup(kt)) == NULL)
        return;
    nf[g->nfloors].partition = partition;
    nf[g->nfloors].offset = off;
    g->nfloors++;
}

static void on_revoke(kgroup *g, const rd_kafka_topic_partition_list_t *l)
{
    kafka_t *t = g->t;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(4);
    for (int i = 0; i < l->cnt; i++) {
        kpart *p = part_find(g, l->elems[i].topic, l->elems[i].partition);
        if (p == NULL)
            continue;
        /* What was acked is committed; the rest goes to the new owner. */
        int64_t off = commit_offset(p);
        if (off >= 0 && off > p->committed)
            rd_kafka_topic_partition_list_add(c, p->ktopic, p->partition)
                ->offset = off;
        if (off >= 0)
            remember_floor(g, p->ktopic, p->partition, off);
        p->revoked = 1;
        g->assigned--;
        t->st.assigned--;
        saga__kafka_part_unref(p);
    }
    if (c->cnt > 0)
        send_commit(g, c);
    rd_kafka_topic_partition_list_destroy(c);
}

static void on_rebalance(kgroup *g, rd_kafka_event_t *ev)
{
    kafka_t *t = g->t;
    rd_kafka_t *rk = g->c.rk;
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    rd_kafka_topic_partition_list_t *l = rd_kafka_event_topic_partition_list(
        ev);
    const char *proto = rd_kafka_rebalance_protocol(rk);
    int coop = proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    t->st.rebalances++;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(g, l);
        if (coop)
            e = rd_kafka_incremental_assign(rk, l);
        else
            aerr = rd_kafka_assign(rk, l);
        if (g->paused)
            rd_kafka_pause_partitions(rk, l);
    } else {
        if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            on_revoke(g, l);
        else
            saga__kafka_log(t, SAGA_LOG_WARN,
                            "kafka: group %s: rebalance "
                            "error: %s",
                            g->name, rd_kafka_err2str(err));
        if (coop)
            e = rd_kafka_incremental_unassign(rk, l);
        else
            aerr = rd_kafka_assign(rk, NULL);
    }
    if (e != NULL) {
        saga__kafka_log(t, SAGA_LOG_WARN, "kafka: group %s: assign: %s",
                        g->name, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        saga__kafka_log(t, SAGA_LOG_WARN, "kafka: group %s: assign: %s",
                        g->name, rd_kafka_err2str(aerr));
    }
    saga__kafka_log(t, SAGA_LOG_INFO,
                    "kafka: group %s: %s %d partition(s), "
                    "%u assigned",
                    g->name,
                    err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assigned"
                                                                : "revoked",
                    l != NULL ? l->cnt : 0, (unsigned)g->assigned);
}

/* ---- messages ------------------------------------------------------------ */

static ksub *sub_find(kgroup *g, const char *ktopic)
{
    for (klink *n = g->subs.next; n != &g->subs; n = n->next) {
        ksub *s = KCONTAINER(n, ksub, node);
        if (strcmp(s->ktopic, ktopic) == 0)
            return s;
    }
    return NULL;
}

static void on_message(kgroup *g, const rd_kafka_message_t *m)
{
    kafka_t *t = g->t;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            t->st.errors++;
            saga__kafka_log(t, SAGA_LOG_WARN, "kafka: group %s: consume: %s",
                            g->name, rd_kafka_message_errstr(m));
        }
        return;
    }
    /* While closing nothing more is handed over (nor committed). */
    if (g->c.state != KC_RUN || m->rkt == NULL)
        return;
    const char *kt = rd_kafka_topic_name(m->rkt);
    kpart *p = part_find(g, kt, m->partition);
    ksub *s = sub_find(g, kt);
    if (p == NULL || s == NULL) {
        saga__kafka_log(t, SAGA_LOG_DEBUG,
                        "kafka: group %s: skipped %s [%d] "
                        "@%lld: not assigned",
                        g->name, kt, (int)m->partition, (long long)m->offset);
        return;
    }
    if (m->offset < p->floor) {
        /* Acked here before the partition was revoked and came back: the
         * effect is durable already, do not hand it over again. */
        t->st.skipped++;
        return;
    }
    size_t kl = m->key != NULL ? m->key_len : 0;
    saga_delivery *d = saga_malloc(sizeof *d + kl + 1 + m->len);
    if (d == NULL) {
        /* Not delivered and not committed past: after a restart or a
         * rebalance it comes again. */
        t->st.errors++;
        saga__kafka_log(t, SAGA_LOG_ERROR,
                        "kafka: out of memory for a "
                        "delivery of %zu bytes",
                        m->len);
        return;
    }
    memset(d, 0, sizeof *d);
    d->magic = SAGA__KAFKA_DELIVERY_MAGIC;
    d->t = t;
    d->p = p;
    d->offset = m->offset;
    char *mem = (char *)(d + 1);
    if (m->key != NULL) {
        memcpy(mem, m->key, kl);
        mem[kl] = '\0';
        d->key = mem;
    }
    d->buf = mem + kl + 1;
    d->len = m->len;
    if (m->len > 0)
        memcpy(d->buf, m->payload, m->len);
    /* In offset order (a seek could go back: insert from the end). */
    klink *at = p->pending.prev;
    while (at != &p->pending &&
           KCONTAINER(at, saga_delivery, node)->offset > d->offset)
        at = at->prev;
    kl_push_back(at->next, &d->node);
    p->refs++;
    if (m->offset + 1 > p->next)
        p->next = m->offset + 1;
    g->unacked++;
    t->st.received++;
    if (!g->paused && g->unacked >= t->o.max_unacked)
        set_paused(g, 1);
    s->cb(&t->base, d, s->topic, d->key, d->buf, d->len, s->arg);
}

/* ---- events -------------------------------------------------------------- */

static saga_log_level syslog_level(int level)
{
    return level <= 3   ? SAGA_LOG_ERROR
           : level == 4 ? SAGA_LOG_WARN
           : level <= 6 ? SAGA_LOG_INFO
                        : SAGA_LOG_DEBUG;
}

static void on_delivery_reports(kclient *c, rd_kafka_event_t *ev)
{
    kafka_t *t = c->t;
    const rd_kafka_message_t *m;
    while (c->state == KC_RUN &&
           (m = rd_kafka_event_message_next(ev)) != NULL) {
        kout *o = m->_private;
        if (o == NULL)
            continue;
        kl_remove(&o->node);
        int st = m->err == RD_KAFKA_RESP_ERR_NO_ERROR         ? SAGA_OK
                 : m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ? SAGA_ETIMEDOUT
                                                              : SAGA_ETRANSPORT;
        if (st == SAGA_OK) {
            t->st.sent++;
        } else {
            t->st.send_failed++;
            saga__kafka_log(t, SAGA_LOG_WARN, "kafka: send to %s failed: %s",
                            m->rkt ? rd_kafka_topic_name(m->rkt) : "?",
                            rd_kafka_err2str(m->err));
        }
        if (o->cb != NULL)
            o->cb(&t->base, st, o->arg);
        saga_free(o);
    }
}

static void on_event(kclient *c, rd_kafka_event_t *ev)
{
    kafka_t *t = c->t;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_DR:
        on_delivery_reports(c, ev);
        break;
    case RD_KAFKA_EVENT_FETCH: {
        const rd_kafka_message_t *m = rd_kafka_event_message_next(ev);
        if (m != NULL && c->g != NULL)
            on_message(c->g, m);
        break;
    }
    case RD_KAFKA_EVENT_REBALANCE:
        if (c->g != NULL)
            on_rebalance(c->g, ev);
        break;
    case RD_KAFKA_EVENT_OFFSET_COMMIT:
        if (c->g != NULL)
            on_commit_result(c->g, ev);
        break;
    case RD_KAFKA_EVENT_ERROR: {
        int fatal = rd_kafka_event_error_is_fatal(ev);
        t->st.errors++;
        saga__kafka_log(t, fatal ? SAGA_LOG_ERROR : SAGA_LOG_WARN,
                        "kafka: %s%s: %s", c->g ? "consumer " : "producer",
                        c->g ? c->g->name : "",
                        rd_kafka_event_error_string(ev));
        break;
    }
    case RD_KAFKA_EVENT_LOG: {
        const char *fac = NULL, *str = NULL;
        int level = 6;
        if (rd_kafka_event_log(ev, &fac, &str, &level) == 0)
            saga__kafka_log(t, syslog_level(level), "rdkafka %s: %s: %s",
                            rd_kafka_name(c->rk), fac ? fac : "",
                            str ? str : "");
        break;
    }
    default:
        break;
    }
}

static void drain(kclient *c)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        /* A callback may have closed the transport. */
        if (c->state >= KC_DESTROYING)
            return;
        rd_kafka_event_t *ev = rd_kafka_queue_poll(c->q, 0);
        if (ev == NULL)
            return;
        on_event(c, ev);
        rd_kafka_event_destroy(ev);
    }
    /* More left: wake up again on the next turn rather than hog it. */
    if (write(c->fds[1], "1", 1) < 0 && errno != EAGAIN)
        saga__kafka_log(c->t, SAGA_LOG_ERROR, "kafka: wake-up pipe: %s",
                        strerror(errno));
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    kclient *c = h->data;
    char buf[256];
    (void)status, (void)events;
    /* Empty the pipe first, then the queue: an event queued after the
     * last poll writes the pipe again. */
    while (read(c->fds[0], buf, sizeof buf) > 0)
        ;
    drain(c);
}

/* ---- clients ------------------------------------------------------------- */

static void on_destroy_work(uv_work_t *w)
{
    kclient *c = w->data;
    if (c->q != NULL)
        rd_kafka_queue_destroy(c->q);
    if (c->g == NULL)
        rd_kafka_purge(c->rk,
                       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

static void on_destroyed(uv_work_t *w, int status)
{
    kclient *c = w->data;
    (void)status;
    for (int i = 0; i < 2; i++)
        if (c->fds[i] >= 0)
            close(c->fds[i]);
    c->fds[0] = c->fds[1] = -1;
    c->rk = NULL;
    c->q = NULL;
    c->state = KC_DONE;
    saga__kafka_client_done(c->t);
}

/* Every uv handle is closed: destroy the client off the loop. Never called
 * from inside drain() (close callbacks run in their own phase), so no
 * event is still being read when the worker destroys the handle. */
static void destroy_off_loop(kclient *c)
{
    if (c->rk == NULL) {
        on_destroyed(&c->work, 0);
        return;
    }
    c->work.data = c;
    if (uv_queue_work(c->t->loop, &c->work, on_destroy_work, on_destroyed) !=
        0) {
        /* No thread pool: destroy here, blocking, rather than leak. */
        on_destroy_work(&c->work);
        on_destroyed(&c->work, 0);
    }
}

static void on_client_handle_closed(uv_handle_t *h)
{
    kclient *c = h->data;
    if (--c->handles == 0 && c->busy == 0)
        destroy_off_loop(c);
}

/* ---- topic warm-up ------------------------------------------------------ */

#define KNOWN_MAX 4096

typedef struct kwarm {
    uv_work_t w;
    kclient *c;
    rd_kafka_topic_t *rkt;
} kwarm;

static void on_warm_work(uv_work_t *w)
{
    kwarm *k = w->data;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(k->c->rk, 0, k->rkt, &md, 2000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        md != NULL)
        rd_kafka_metadata_destroy(md);
}

static void on_warmed(uv_work_t *w, int status)
{
    kwarm *k = w->data;
    kclient *c = k->c;
    (void)status;
    rd_kafka_topic_destroy(k->rkt);
    saga_free(k);
    if (--c->busy == 0 && c->state == KC_DESTROYING && c->handles == 0)
        destroy_off_loop(c);
}

void saga__kafka_warm_topic(kafka_t *t, const char *kt)
{
    for (size_t i = 0; i < t->nknown; i++)
        if (strcmp(t->known[i], kt) == 0)
            return;
    if (t->nknown >= KNOWN_MAX)
        return;
    char **nk = saga_realloc(t->known, (t->nknown + 1) * sizeof *nk);
    if (nk == NULL)
        return;
    t->known = nk;
    if ((nk[t->nknown] = saga__strdup(kt)) == NULL)
        return;
    t->nknown++;
    kwarm *k = saga_malloc(sizeof *k);
    if (k == NULL)
        return;
    k->c = &t->prod;
    k->rkt = rd_kafka_topic_new(t->prod.rk, kt, NULL);
    k->w.data = k;
    if (k->rkt == NULL) {
        saga_free(k);
        return;
    }
    if (uv_queue_work(t->loop, &k->w, on_warm_work, on_warmed) != 0) {
        rd_kafka_topic_destroy(k->rkt);
        saga_free(k);
        return;
    }
    t->prod.busy++;
}

static void begin_destroy(kclient *c)
{
    if (c->state >= KC_DESTROYING)
        return;
    c->state = KC_DESTROYING;
    if (c->handles == 0) {
        if (c->busy > 0)
            return; /* the last job's completion destroys it */
        destroy_off_loop(c);
        return;
    }
    if (c->poll.data != NULL)
        uv_close((uv_handle_t *)&c->poll, on_client_handle_closed);
    if (c->timer.data != NULL)
        uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void leave(kclient *c)
{
    c->state = KC_LEAVING;
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(c->rk, c->q);
    if (e != NULL) {
        saga__kafka_log(c->t, SAGA_LOG_WARN, "kafka: group %s: close: %s",
                        c->g->name, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        begin_destroy(c);
    }
}

static void on_close_tick(uv_timer_t *h)
{
    kclient *c = h->data;
    drain(c);
    if (c->state == KC_COMMITTING && c->g->commits_inflight == 0)
        leave(c);
    if (c->state == KC_LEAVING && rd_kafka_consumer_closed(c->rk))
        begin_destroy(c);
    if (c->state < KC_DESTROYING && uv_now(c->t->loop) >= c->close_deadline) {
        saga__kafka_log(c->t, SAGA_LOG_WARN,
                        "kafka: group %s: close timed out; destroying",
                        c->g->name);
        begin_destroy(c);
    }
}

void saga__kafka_client_close(kclient *c)
{
    if (c->state != KC_RUN || c->t == NULL)
        return;
    if (c->g == NULL || c->rk == NULL) {
        begin_destroy(c);
        return;
    }
    /* Commit what was acked, leave the group (its partitions go to the
     * others at once instead of after the session timeout), destroy. */
    c->state = KC_COMMITTING;
    c->close_deadline = uv_now(c->t->loop) + c->t->o.close_timeout_ms;
    if (c->g->paused)
        set_paused(c->g, 0);
    group_commit(c->g);
    uv_timer_start(&c->timer, on_close_tick, 0, CLOSE_TICK_MS);
}

int saga__kafka_client_open(kafka_t *t, kclient *c, kgroup *g,
                            rd_kafka_conf_t *conf)
{
    char es[512];
    memset(c, 0, sizeof *c);
    c->t = t;
    c->g = g;
    c->fds[0] = c->fds[1] = -1;
    t->live++;
    c->rk = rd_kafka_new(g != NULL ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER,
                         conf, es, sizeof es);
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        c->state = KC_DONE;
        t->live--;
        return saga__kafka_set_err(t, SAGA_ETRANSPORT, "rd_kafka_new: %s", es);
    }
    if (g != NULL) {
        rd_kafka_poll_set_consumer(c->rk);
        c->q = rd_kafka_queue_get_consumer(c->rk);
    } else {
        c->q = rd_kafka_queue_get_main(c->rk);
    }
    rd_kafka_set_log_queue(c->rk, NULL);
    if (c->q == NULL || pipe2(c->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        saga__kafka_set_err(t, SAGA_ETRANSPORT, "cannot make a queue pipe");
        begin_destroy(c);
        return SAGA_ETRANSPORT;
    }
    if (uv_timer_init(t->loop, &c->timer) == 0) {
        c->timer.data = c;
        c->handles++;
    }
    if (c->handles == 0 || uv_poll_init(t->loop, &c->poll, c->fds[0]) != 0) {
        saga__kafka_set_err(t, SAGA_ETRANSPORT, "cannot make uv handles");
        begin_destroy(c);
        return SAGA_ETRANSPORT;
    }
    c->poll.data = c;
    c->handles++;
    rd_kafka_queue_io_event_enable(c->q, c->fds[1], "1", 1);
    uv_poll_start(&c->poll, UV_READABLE, on_readable);
    /* Anything queued before the pipe was attached (log lines). */
    if (write(c->fds[1], "1", 1) < 0) {
        /* The pipe is new and empty: cannot happen. */
    }
    return SAGA_OK;
}

int saga__kafka_group_subscribe(kgroup *g)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    for (klink *n = g->subs.next; n != &g->subs; n = n->next)
        rd_kafka_topic_partition_list_add(l, KCONTAINER(n, ksub, node)->ktopic,
                                          RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(g->c.rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        return saga__kafka_set_err(g->t, SAGA_ETRANSPORT,
                                   "subscribe (group %s): %s", g->name,
                                   rd_kafka_err2str(err));
    return SAGA_OK;
}

/*
 * kafka_api.c — the Kafka transport's options, URL parsing, librdkafka
 * configuration, vtable slots, close and counters. The librdkafka side
 * (queues bridged to the loop, delivery reports, consumers, offsets) is in
 * kafka_io.c.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kafka_int.h"

#define DEF_COMMIT_MS 100u
#define DEF_CLOSE_MS 5000u
#define DEF_QUEUE_MSGS 100000u
#define DEF_MAX_MSG (4u << 20)
#define MAX_MAX_MSG (1u << 30)
#define DEF_MAX_UNACKED 100000u
#define KTOPIC_MAX 249

static int k_send(saga_transport *self, const char *topic, const char *key,
                  const void *buf, size_t len, saga_sent_cb cb, void *arg);

int saga__kafka_set_err(kafka_t *t, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__verrf(t->err, sizeof t->err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

void saga__kafka_log(kafka_t *t, saga_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlogf(t->o.log, t->o.log_arg, lvl, fmt, ap);
    va_end(ap);
}

static kafka_t *as_kafka(saga_transport *self)
{
    return self != NULL && self->send == k_send ? (kafka_t *)self : NULL;
}

static int valid_name(const char *s)
{
    return s != NULL && s[0] != '\0' && strlen(s) <= SAGA_NAME_MAX;
}

/* Kafka's rule for topic names: [a-zA-Z0-9._-], 1..249 bytes. */
static int valid_ktopic(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KTOPIC_MAX)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return 0;
    return 1;
}

/* The Kafka topic for saga topic @p topic into @p out. @return 0, or -1 if
 * it is not a legal Kafka topic name. */
static int map_topic(kafka_t *t, const char *topic, char *out, size_t cap)
{
    for (size_t i = 0; i < t->ntopics; i++)
        if (strcmp(t->topics[i].name, topic) == 0) {
            snprintf(out, cap, "%s", t->topics[i].kafka_topic);
            return valid_ktopic(out) ? 0 : -1;
        }
    if ((size_t)snprintf(out, cap, "%s%s", t->prefix, topic) >= cap)
        return -1;
    return valid_ktopic(out) ? 0 : -1;
}

/* ---- URL and properties ---------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Copy [s, s+n) %-decoded ('+' stays '+': librdkafka values may hold it).
 * @return a saga_malloc'd string, or NULL (bad escape or no memory). */
static char *pct_decode(const char *s, size_t n)
{
    char *o = saga_malloc(n + 1), *p = o;
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h, l;
            if (i + 2 >= n || (h = hexval(s[i + 1])) < 0 ||
                (l = hexval(s[i + 2])) < 0) {
                saga_free(o);
                return NULL;
            }
            *p++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

static int add_prop(kafka_t *t, char *name, char *value)
{
    saga_kafka_property *np = saga_realloc(t->props,
                                           (t->nprops + 1) * sizeof *np);
    if (np == NULL) {
        saga_free(name);
        saga_free(value);
        return SAGA_ENOMEM;
    }
    t->props = np;
    np[t->nprops].name = name;
    np[t->nprops].value = value;
    t->nprops++;
    return SAGA_OK;
}

static int parse_url(kafka_t *t, const char *url)
{
    static const char scheme[] = "kafka://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "url '%s' does not start with kafka://",
                                   url);
    const char *hosts = url + sizeof scheme - 1;
    const char *q = strchr(hosts, '?');
    size_t hn = q != NULL ? (size_t)(q - hosts) : strlen(hosts);
    if (hn > 0 && hosts[hn - 1] == '/')
        hn--; /* kafka://host:port/?x=y */
    if (hn > 0) {
        char *name = saga__strdup("bootstrap.servers");
        char *val = pct_decode(hosts, hn);
        if (name == NULL || val == NULL) {
            saga_free(name);
            saga_free(val);
            return saga__kafka_set_err(t, SAGA_EINVAL, "url: bad host list");
        }
        int rc = add_prop(t, name, val);
        if (rc != SAGA_OK)
            return saga__kafka_set_err(t, rc, "out of memory");
    }
    const char *s = q != NULL ? q + 1 : NULL;
    while (s != NULL && *s != '\0') {
        const char *amp = strchr(s, '&');
        size_t n = amp != NULL ? (size_t)(amp - s) : strlen(s);
        const char *eq = memchr(s, '=', n);
        if (n > 0) {
            if (eq == NULL || eq == s)
                return saga__kafka_set_err(t, SAGA_EINVAL,
                                           "url: '%.*s' is not prop=value",
                                           (int)n, s);
            char *name = pct_decode(s, (size_t)(eq - s));
            char *val = pct_decode(eq + 1, n - (size_t)(eq - s) - 1);
            if (name == NULL || val == NULL) {
                saga_free(name);
                saga_free(val);
                return saga__kafka_set_err(t, SAGA_EINVAL,
                                           "url: bad %%-escape in '%.*s'",
                                           (int)n, s);
            }
            int rc = add_prop(t, name, val);
            if (rc != SAGA_OK)
                return saga__kafka_set_err(t, rc, "out of memory");
        }
        s = amp != NULL ? amp + 1 : NULL;
    }
    return SAGA_OK;
}

static int conf_set(kafka_t *t, rd_kafka_conf_t *conf, const char *name,
                    const char *value)
{
    char es[256];
    if (rd_kafka_conf_set(conf, name, value, es, sizeof es) != RD_KAFKA_CONF_OK)
        return saga__kafka_set_err(t, SAGA_EINVAL, "property %s=%s: %s", name,
                                   value, es);
    return SAGA_OK;
}

rd_kafka_conf_t *saga__kafka_conf(kafka_t *t, const char *group)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32];
    int rc = SAGA_OK;
    if (conf == NULL) {
        saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
        return NULL;
    }
    /* Our defaults first; the user's properties may change them. */
    rc |= conf_set(t, conf, "client.id", "libsaga");
    rc |= conf_set(t, conf, "log.queue", "true");
    snprintf(num, sizeof num, "%u", t->o.max_message_size + 65536u);
    rc |= conf_set(t, conf, "message.max.bytes", num);
    if (group == NULL) {
        rc |= conf_set(t, conf, "enable.idempotence", "true");
        rc |= conf_set(t, conf, "acks", "all");
        /* Java clients' partitioner: a key lands where theirs put it. */
        rc |= conf_set(t, conf, "partitioner", "murmur2_random");
        snprintf(num, sizeof num, "%u", t->o.max_queue_msgs);
        rc |= conf_set(t, conf, "queue.buffering.max.messages", num);
    } else {
        rc |= conf_set(t, conf, "auto.offset.reset", "earliest");
        rc |= conf_set(t, conf, "enable.partition.eof", "false");
        snprintf(num, sizeof num, "%u",
                 t->o.max_message_size + 65536u > 1048576u
                     ? t->o.max_message_size + 65536u
                     : 1048576u);
        rc |= conf_set(t, conf, "fetch.message.max.bytes", num);
    }
    if (rc != SAGA_OK)
        goto fail;
    /* "producer.x" applies x to the producer only, "consumer.x" to the
     * consumers only; anything else to both. */
    for (size_t i = 0; i < t->nprops; i++) {
        const char *n = t->props[i].name;
        if (strncmp(n, "producer.", 9) == 0) {
            if (group != NULL)
                continue;
            n += 9;
        } else if (strncmp(n, "consumer.", 9) == 0) {
            if (group == NULL)
                continue;
            n += 9;
        }
        if (conf_set(t, conf, n, t->props[i].value) != SAGA_OK)
            goto fail;
    }
    /* What the guarantees rest on is not negotiable: offsets are committed
     * by us, only up to what the application acked. */
    if (group != NULL &&
        (conf_set(t, conf, "group.id", group) != SAGA_OK ||
         conf_set(t, conf, "enable.auto.commit", "false") != SAGA_OK ||
         conf_set(t, conf, "enable.auto.offset.store", "false") != SAGA_OK))
        goto fail;
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR |
                                       RD_KAFKA_EVENT_LOG |
                                       RD_KAFKA_EVENT_REBALANCE |
                                       RD_KAFKA_EVENT_OFFSET_COMMIT);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* ---- slots ----------------------------------------------------------------- */

static int k_send(saga_transport *self, const char *topic, const char *key,
                  const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    kafka_t *t = (kafka_t *)self;
    char kt[KTOPIC_MAX + 1];
    if (t == NULL)
        return SAGA_EINVAL;
    if (t->closing)
        return saga__kafka_set_err(t, SAGA_ECLOSED,
                                   "send: transport is closed");
    if (!valid_name(topic))
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "send: topic is NULL, empty or long");
    if (buf == NULL && len > 0)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "send: buf is NULL but len > 0");
    if (len > t->o.max_message_size)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "send: %zu bytes exceed max_message_size "
                                   "%u",
                                   len, (unsigned)t->o.max_message_size);
    if (map_topic(t, topic, kt, sizeof kt) != 0)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "send: '%s' is not a legal Kafka topic",
                                   topic);
    kout *m = saga_malloc(sizeof *m);
    if (m == NULL)
        return saga__kafka_set_err(t, SAGA_ENOMEM, "send: out of memory");
    memset(m, 0, sizeof *m);
    m->cb = cb;
    m->arg = arg;
    size_t klen = key != NULL ? strlen(key) : 0;
    const void *kp = key;
    void *vp = (void *)(len > 0 ? buf : "");
    rd_kafka_resp_err_t err = rd_kafka_producev(
        t->prod.rk, RD_KAFKA_V_TOPIC(kt), RD_KAFKA_V_KEY(kp, klen),
        RD_KAFKA_V_VALUE(vp, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(m), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        saga_free(m);
        int rc = err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? SAGA_EFULL
                 : err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE
                     ? SAGA_EINVAL
                     : SAGA_ETRANSPORT;
        return saga__kafka_set_err(t, rc, "send to %s: %s", kt,
                                   rd_kafka_err2str(err));
    }
    kl_push_back(&t->inflight, &m->node);
    saga__kafka_warm_topic(t, kt);
    return SAGA_OK;
}

static kgroup *group_find(kafka_t *t, const char *name)
{
    for (klink *n = t->groups.next; n != &t->groups; n = n->next) {
        kgroup *g = KCONTAINER(n, kgroup, node);
        if (!g->dead && strcmp(g->name, name) == 0)
            return g;
    }
    return NULL;
}

static void sub_free(ksub *s)
{
    saga_free(s->topic);
    saga_free(s->ktopic);
    saga_free(s);
}

static int k_subscribe(saga_transport *self, const char *topic,
                       const char *group, saga_recv_cb cb, void *arg)
{
    kafka_t *t = (kafka_t *)self;
    char kt[KTOPIC_MAX + 1];
    if (t == NULL)
        return SAGA_EINVAL;
    if (t->closing)
        return saga__kafka_set_err(t, SAGA_ECLOSED,
                                   "subscribe: transport is closed");
    if (!valid_name(topic) || !valid_name(group) || cb == NULL)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "subscribe: topic, group "
                                   "and cb are required");
    if (map_topic(t, topic, kt, sizeof kt) != 0)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "subscribe: '%s' is not a legal Kafka "
                                   "topic",
                                   topic);
    kgroup *g = group_find(t, group);
    if (g != NULL)
        for (klink *n = g->subs.next; n != &g->subs; n = n->next) {
            ksub *s = KCONTAINER(n, ksub, node);
            if (strcmp(s->ktopic, kt) == 0)
                return saga__kafka_set_err(t, SAGA_EDUP,
                                           "subscribe: topic '%s' and group "
                                           "'%s' already subscribed",
                                           topic, group);
        }
    ksub *s = saga_malloc(sizeof *s);
    if (s == NULL)
        return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
    memset(s, 0, sizeof *s);
    s->topic = saga__strdup(topic);
    s->ktopic = saga__strdup(kt);
    s->cb = cb;
    s->arg = arg;
    if (s->topic == NULL || s->ktopic == NULL) {
        sub_free(s);
        return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
    }
    int made = 0;
    if (g == NULL) {
        g = saga_malloc(sizeof *g);
        if (g == NULL || (memset(g, 0, sizeof *g),
                          (g->name = saga__strdup(group)) == NULL)) {
            saga_free(g);
            sub_free(s);
            return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
        }
        g->t = t;
        kl_init(&g->subs);
        kl_init(&g->parts);
        /* The group stays listed until the transport is freed, even if
         * its client cannot be made: finish() frees it. */
        kl_push_back(&t->groups, &g->node);
        rd_kafka_conf_t *conf = saga__kafka_conf(t, group);
        int rc = conf == NULL ? SAGA_EINVAL
                              : saga__kafka_client_open(t, &g->c, g, conf);
        if (rc != SAGA_OK) {
            g->dead = 1;
            sub_free(s);
            return rc;
        }
        t->st.groups++;
        made = 1;
    }
    kl_push_back(&g->subs, &s->node);
    int rc = saga__kafka_group_subscribe(g);
    if (rc != SAGA_OK) {
        kl_remove(&s->node);
        sub_free(s);
        if (made) {
            g->dead = 1;
            saga__kafka_client_close(&g->c);
        }
        return rc;
    }
    return SAGA_OK;
}

static int k_ack(saga_transport *self, saga_delivery *d)
{
    kafka_t *t = (kafka_t *)self;
    if (t == NULL || d == NULL)
        return SAGA_EINVAL;
    if (d->magic != SAGA__KAFKA_DELIVERY_MAGIC || d->t != t)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "ack: not an unacked "
                                   "delivery of this "
                                   "transport");
    saga__kafka_ack(t, d);
    return SAGA_OK;
}

static const char *k_errmsg(saga_transport *self)
{
    kafka_t *t = (kafka_t *)self;
    return t != NULL ? t->err : "no transport";
}

static int k_route(saga_transport *self, const char *topic)
{
    kafka_t *t = (kafka_t *)self;
    char kt[KTOPIC_MAX + 1];
    if (t == NULL || !valid_name(topic))
        return SAGA_EINVAL;
    /* Whether the topic exists is the cluster's business (it may be
     * auto-created, or created later); only a name Kafka can never accept
     * is a configuration error. */
    if (map_topic(t, topic, kt, sizeof kt) != 0)
        return saga__kafka_set_err(t, SAGA_ENOROUTE,
                                   "'%s' is not a legal Kafka topic", topic);
    return SAGA_OK;
}

/* ---- close ----------------------------------------------------------------- */

static void finish(kafka_t *t)
{
    klink *n;
    while ((n = kl_pop_front(&t->groups)) != NULL) {
        kgroup *g = KCONTAINER(n, kgroup, node);
        /* Deliveries not acked die with the transport (their contract). */
        while ((n = kl_pop_front(&g->parts)) != NULL) {
            kpart *p = KCONTAINER(n, kpart, node);
            klink *dn;
            while ((dn = kl_pop_front(&p->pending)) != NULL)
                saga__kafka_delivery_free(KCONTAINER(dn, saga_delivery, node));
            saga_free(p->ktopic);
            saga_free(p);
        }
        while ((n = kl_pop_front(&g->subs)) != NULL)
            sub_free(KCONTAINER(n, ksub, node));
        for (size_t i = 0; i < g->nfloors; i++)
            saga_free(g->floors[i].ktopic);
        saga_free(g->floors);
        saga_free(g->name);
        saga_free(g);
    }
    for (size_t i = 0; i < t->ntopics; i++) {
        saga_free((char *)t->topics[i].name);
        saga_free((char *)t->topics[i].kafka_topic);
    }
    for (size_t i = 0; i < t->nprops; i++) {
        saga_free((char *)t->props[i].name);
        saga_free((char *)t->props[i].value);
    }
    for (size_t i = 0; i < t->nknown; i++)
        saga_free(t->known[i]);
    saga_free(t->known);
    saga_free(t->topics);
    saga_free(t->props);
    saga_free(t->prefix);
    saga_free(t);
}

void saga__kafka_client_done(kafka_t *t)
{
    if (--t->live == 0)
        finish(t);
}

static void on_pump_closed(uv_handle_t *h) { saga__kafka_client_done(h->data); }

static void k_close(saga_transport *self)
{
    kafka_t *t = (kafka_t *)self;
    if (t == NULL || t->closing)
        return;
    t->closing = 1;
    /* Pending sends end now with SAGA_ECLOSED (on a later turn); their
     * delivery reports are not read any more. Received deliveries stay
     * valid until the transport is gone. */
    klink *n;
    while ((n = kl_pop_front(&t->inflight)) != NULL) {
        kout *m = KCONTAINER(n, kout, node);
        m->status = SAGA_ECLOSED;
        kl_push_back(&t->completed, n);
    }
    saga__kafka_pump_kick(t);
    saga__kafka_client_close(&t->prod);
    for (n = t->groups.next; n != &t->groups; n = n->next)
        saga__kafka_client_close(&KCONTAINER(n, kgroup, node)->c);
}

/* ---- constructor ----------------------------------------------------------- */

int saga_kafka_options_init(saga_kafka_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_KAFKA_OPTIONS_VERSION);
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static int copy_options(kafka_t *t, const saga_kafka_options *o)
{
    if (o->nproperties > 0 && o->properties == NULL)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "nproperties > 0 but properties is NULL");
    if (o->ntopics > 0 && o->topics == NULL)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "ntopics > 0 but topics is NULL");
    if (o->max_message_size > MAX_MAX_MSG)
        return saga__kafka_set_err(t, SAGA_EINVAL,
                                   "max_message_size over 1 GiB");
    t->prefix = saga__strdup(o->topic_prefix ? o->topic_prefix : "");
    if (t->prefix == NULL)
        return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
    int rc;
    if (o->url != NULL && (rc = parse_url(t, o->url)) != SAGA_OK)
        return rc;
    for (size_t i = 0; i < o->nproperties; i++) {
        const saga_kafka_property *p = &o->properties[i];
        if (p->name == NULL || p->name[0] == '\0' || p->value == NULL)
            return saga__kafka_set_err(t, SAGA_EINVAL,
                                       "property %zu has no name or value", i);
        char *nm = saga__strdup(p->name);
        char *v = saga__strdup(p->value);
        if (nm == NULL || v == NULL) {
            saga_free(nm);
            saga_free(v);
            return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
        }
        if ((rc = add_prop(t, nm, v)) != SAGA_OK)
            return saga__kafka_set_err(t, rc, "out of memory");
    }
    if (o->ntopics > 0) {
        t->topics = saga_malloc(o->ntopics * sizeof *t->topics);
        if (t->topics == NULL)
            return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < o->ntopics; i++) {
        const saga_kafka_topic *m = &o->topics[i];
        if (!valid_name(m->name) || m->kafka_topic == NULL ||
            !valid_ktopic(m->kafka_topic))
            return saga__kafka_set_err(t, SAGA_EINVAL,
                                       "topic map entry %zu: bad name or "
                                       "Kafka topic",
                                       i);
        t->topics[i].name = saga__strdup(m->name);
        t->topics[i].kafka_topic = saga__strdup(m->kafka_topic);
        t->ntopics++;
        if (t->topics[i].name == NULL || t->topics[i].kafka_topic == NULL)
            return saga__kafka_set_err(t, SAGA_ENOMEM, "out of memory");
    }
    return SAGA_OK;
}

static void apply_defaults(saga_kafka_options *o)
{
#define DEF(field, val)                                                        \
    if (o->field == 0)                                                         \
    o->field = (val)
    DEF(commit_interval_ms, DEF_COMMIT_MS);
    DEF(close_timeout_ms, DEF_CLOSE_MS);
    DEF(max_queue_msgs, DEF_QUEUE_MSGS);
    DEF(max_message_size, DEF_MAX_MSG);
    DEF(max_unacked, DEF_MAX_UNACKED);
#undef DEF
    o->url = NULL;
    o->properties = NULL;
    o->nproperties = 0;
    o->topics = NULL;
    o->ntopics = 0;
    o->topic_prefix = NULL;
}

static const saga_transport kafka_ops = {
    .version = SAGA_TRANSPORT_VERSION,
    .send = k_send,
    .subscribe = k_subscribe,
    .ack = k_ack,
    .errmsg = k_errmsg,
    .close = k_close,
    .route = k_route,
};

int saga_transport_kafka_new(saga_transport **out, uv_loop_t *loop,
                             const saga_kafka_options *opts)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (loop == NULL || opts == NULL)
        return SAGA_EINVAL;
    if (opts->version == 0 || opts->version > SAGA_KAFKA_OPTIONS_VERSION)
        return SAGA_EVERSION;
    kafka_t *t = saga_malloc(sizeof *t);
    if (t == NULL)
        return SAGA_ENOMEM;
    memset(t, 0, sizeof *t);
    t->base = kafka_ops;
    t->loop = loop;
    t->o = *opts;
    kl_init(&t->groups);
    kl_init(&t->inflight);
    kl_init(&t->completed);
    t->st.version = SAGA_KAFKA_COUNTERS_VERSION;
    int rc = copy_options(t, opts);
    apply_defaults(&t->o);
    rd_kafka_conf_t *conf = NULL;
    if (rc == SAGA_OK) {
        /* A consumer's configuration is checked now too, so that a bad
         * property fails here rather than at the first subscribe. */
        rd_kafka_conf_t *cc = saga__kafka_conf(t, "check");
        if (cc == NULL)
            rc = SAGA_EINVAL;
        else
            rd_kafka_conf_destroy(cc);
    }
    if (rc == SAGA_OK && (conf = saga__kafka_conf(t, NULL)) == NULL)
        rc = SAGA_EINVAL;
    if (rc == SAGA_OK && uv_idle_init(loop, &t->pump) != 0)
        rc = saga__kafka_set_err(t, SAGA_ETRANSPORT, "cannot make uv idle");
    if (rc != SAGA_OK) {
        saga__kafka_log(t, SAGA_LOG_ERROR, "kafka: %s", t->err);
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        finish(t);
        return rc;
    }
    t->pump.data = t;
    t->pump_open = 1;
    t->live = 1; /* the pump */
    rc = saga__kafka_client_open(t, &t->prod, NULL, conf);
    if (rc != SAGA_OK) {
        saga__kafka_log(t, SAGA_LOG_ERROR, "kafka: %s", t->err);
        k_close(&t->base); /* frees once the loop runs */
        return rc;
    }
    *out = &t->base;
    return SAGA_OK;
}

void saga__kafka_pump_close(kafka_t *t)
{
    if (t->pump_open) {
        t->pump_open = 0;
        uv_close((uv_handle_t *)&t->pump, on_pump_closed);
    }
}

int saga_transport_kafka_stats(saga_transport *self, saga_kafka_counters *out)
{
    kafka_t *t = as_kafka(self);
    if (t == NULL || out == NULL)
        return SAGA_EINVAL;
    if (out->version == 0 || out->version > SAGA_KAFKA_COUNTERS_VERSION)
        return SAGA_EVERSION;
    unsigned int v = out->version;
    *out = t->st;
    out->version = v;
    return SAGA_OK;
}

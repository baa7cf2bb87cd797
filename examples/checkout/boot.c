/*
 * boot.c — the plumbing each service starts on: its transport endpoint
 * (in-memory bus, or TCP with every peer and event topic from the config),
 * its participant on DIR/<service>.db, and plain connections to another
 * service's file for the HTTP front.
 */
#include <stdio.h>
#include <string.h>

#include "ck.h"

#ifdef CK_WITH_KAFKA
#include <saga/kafka.h>
#endif

/* --- transports ---------------------------------------------------------- */

static const char *const event_topics[][2] = {{CK_T_ORDER, "notification"},
                                              {CK_T_INVENTORY, "order"},
                                              {CK_T_PAYMENT, "order"},
                                              {CK_T_FULFILL, "order"},
                                              {CK_T_CART, "cart"}};

static void tcp_log(saga_log_level lvl, const char *saga_id, int step,
                    const char *msg, void *arg)
{
    if (lvl >= SAGA_LOG_WARN)
        fprintf(stderr, "saga-checkout: transport %s: %s\n", (const char *)arg,
                msg);
}

static const char *endpoint_addr(ck_app *a, const char *name)
{
    json_t *eps = json_object_get(a->config, "endpoints");
    return json_string_value(json_object_get(eps, name));
}

saga_transport *ck_transport(ck_app *a, const char *endpoint)
{
    saga_transport *t = NULL;
    if (!a->distributed) {
        /* The bus may be shared by several loops (serve --threads): the
         * endpoint lives on this service's loop. */
        if (saga_transport_inmem_new_on(&t, a->bus, a->loop) != SAGA_OK)
            return NULL;
        return t;
    }
    if (a->transport != NULL) {
#ifdef CK_WITH_KAFKA
        /* Kafka: every endpoint and event topic is a Kafka topic of that
         * name (order-events, payment-events, ... keyed by order id). */
        saga_kafka_options ko = SAGA_KAFKA_OPTIONS_INIT;
        ko.url = a->transport;
        ko.log = tcp_log;
        ko.log_arg = (void *)endpoint;
        if (saga_transport_kafka_new(&t, a->loop, &ko) != SAGA_OK) {
            fprintf(stderr, "saga-checkout: bad transport %s\n", a->transport);
            return NULL;
        }
        return t;
#else
        fprintf(stderr, "saga-checkout: built without the Kafka transport\n");
        return NULL;
#endif
    }
    saga_tcp_peer peers[32];
    size_t n = 0;
    const char *names[] = {"orchestrator", "order",       "cart",
                           "inventory",    "payment",     "shipping",
                           "warehouse",    "notification"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *ad = endpoint_addr(a, names[i]);
        if (ad == NULL) {
            fprintf(stderr, "saga-checkout: config: endpoints.%s missing\n",
                    names[i]);
            return NULL;
        }
        peers[n].service = names[i];
        peers[n++].address = ad;
    }
    for (size_t i = 0; i < sizeof event_topics / sizeof event_topics[0]; i++) {
        peers[n].service = event_topics[i][0];
        peers[n++].address = endpoint_addr(a, event_topics[i][1]);
    }
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.service = endpoint;
    o.listen = endpoint_addr(a, endpoint);
    o.peers = peers;
    o.npeers = n;
    o.log = tcp_log;
    o.log_arg = (void *)endpoint;
    if (saga_transport_tcp_new(&t, a->loop, &o) != SAGA_OK) {
        fprintf(stderr, "saga-checkout: cannot listen as %s on %s\n", endpoint,
                o.listen);
        return NULL;
    }
    return t;
}

static void part_log(saga_log_level level, const char *saga_id, int step,
                     const char *msg, void *arg)
{
    (void)step;
    if (level >= SAGA_LOG_WARN)
        fprintf(stderr, "saga-checkout: %s: %s%s%s\n", (const char *)arg,
                saga_id ? saga_id : "", saga_id ? ": " : "", msg);
}

/* Split a --store URL into the URL libpq takes (without our "schema=")
 * and the schema prefix given there ("" if none). */
static int pg_url_split(const char *store, char *url, size_t usize,
                        char prefix[64])
{
    prefix[0] = '\0';
    if (strlen(store) >= usize)
        return -1;
    snprintf(url, usize, "%s", store);
    char *q = strchr(url, '?');
    if (q == NULL)
        return 0;
    char rest[2048] = "";
    char *save = NULL;
    for (char *kv = strtok_r(q + 1, "&", &save); kv != NULL;
         kv = strtok_r(NULL, "&", &save)) {
        if (strncmp(kv, "schema=", 7) == 0) {
            snprintf(prefix, 64, "%s", kv + 7);
        } else if (strlen(rest) + strlen(kv) + 2 < sizeof rest) {
            if (rest[0] != '\0')
                strcat(rest, "&");
            strcat(rest, kv);
        }
    }
    if (rest[0] != '\0')
        snprintf(q, usize - (size_t)(q - url), "?%s", rest);
    else
        *q = '\0';
    return 0;
}

int ck_store_spec(ck_app *a, const char *name, char *out, size_t size,
                  char schema_out[64])
{
    char sch[64] = "";
    if (a->store == NULL) {
        if (schema_out != NULL)
            schema_out[0] = '\0';
        return snprintf(out, size, "%s/%s.db", a->dir, name) < (int)size ? 0
                                                                         : -1;
    }
    char url[2048], prefix[64];
    if (pg_url_split(a->store, url, sizeof url, prefix) != 0)
        return -1;
    /* A schema name is 1-63 of a-z, 0-9, _ (order-saga -> order_saga). */
    if (strlen(prefix) + strlen(name) + 2 > sizeof sch)
        return -1;
    snprintf(sch, sizeof sch, "%.30s%s%.30s", prefix, prefix[0] ? "_" : "",
             name);
    for (char *c = sch; *c; c++)
        if (*c == '-')
            *c = '_';
    if (schema_out != NULL)
        snprintf(schema_out, 64, "%s", sch);
    return snprintf(out, size, "%s%sschema=%s", url,
                    strchr(url, '?') ? "&" : "?", sch) < (int)size
               ? 0
               : -1;
}

int ck_participant(ck_app *a, int svc, saga_participant **out, ck_db **db)
{
    const char *name = ck_svc_names[svc];
    char spec[2200], schema[64];
    saga_store *s = NULL;
    if (ck_store_spec(a, name, spec, sizeof spec, schema) != 0) {
        fprintf(stderr, "saga-checkout: store URL too long\n");
        return -1;
    }
    if (a->store != NULL) {
        if (saga_store_open(&s, spec) != SAGA_OK) {
            fprintf(stderr, "saga-checkout: cannot open the %s store: %s\n",
                    name, saga_open_errmsg());
            return -1;
        }
    } else {
        saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
        so.synchronous = ck_synchronous();
        if (saga_store_sqlite_open(&s, spec, &so) != SAGA_OK) {
            fprintf(stderr, "saga-checkout: cannot open %s\n", spec);
            return -1;
        }
    }
    saga_transport *t = ck_transport(a, name);
    if (t == NULL) {
        saga_store_free(s);
        return -1;
    }
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = name;
    o.log = part_log;
    o.log_arg = (void *)name;
    o.log_event = ck_log_sink(a);
    o.log_event_arg = stderr;
    o.log_level = a->log_json ? SAGA_LOG_INFO : 0;
    if (saga_participant_new(out, a->loop, s, t, &o) != SAGA_OK) {
        saga_store_free(s);
        saga_transport_free(t);
        return -1;
    }
    *db = ck_db_participant(*out, a->store != NULL ? schema : NULL);
    if (*db == NULL)
        return -1;
    if (a->store == NULL)
        sqlite3_busy_timeout(saga_participant_store_handle(*out), 5000);
    a->svc[svc] = *out;
    return 0;
}

int ck_open_db(ck_app *a, const char *svc, ck_db **out)
{
    char spec[2200], schema[64], url[2048], prefix[64];
    if (ck_store_spec(a, svc, spec, sizeof spec, schema) != 0)
        return -1;
    if (a->store != NULL &&
        pg_url_split(a->store, url, sizeof url, prefix) != 0)
        return -1;
    *out = ck_db_connect(spec, a->store != NULL ? url : NULL, schema);
    return *out != NULL ? 0 : -1;
}

/*
 * test_transport_kafka.c — the transport conformance suite on the Kafka
 * transport, against librdkafka's mock cluster (one broker, in this
 * process) reached through bootstrap.servers like a real cluster. A and B
 * are two transports on the same cluster; topic "svc-b" has 4 partitions,
 * so subscribers of one group on A and B share them.
 */
#include <stdio.h>
#include <stdlib.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "saga/kafka.h"
#include "transport_suite.h"

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static char url[256];

static void klog(saga_log_level l, const char *saga_id, int step,
                 const char *msg, void *arg)
{
    (void)arg;
    if (l >= (getenv("KLOG") ? SAGA_LOG_DEBUG : SAGA_LOG_WARN))
        fprintf(stderr, "kafka %s: %s\n", l == SAGA_LOG_WARN ? "warn" : "error",
                msg);
}

static int make(saga_tsuite_env *env, saga_transport **out, const char *id)
{
    saga_kafka_property props[] = {
        {"client.id", id},
        /* Short waits for a test: messages go out at once. */
        {"producer.linger.ms", "1"},
        {"consumer.fetch.wait.max.ms", "20"},
        /* The 2.0.2 mock does not finish a rebalance when a member leaves
         * during it: it waits for the session timeout (minus 1 s). */
        {"consumer.session.timeout.ms", "6000"},
        {"debug", getenv("KDEBUG") ? getenv("KDEBUG") : ""},
    };
    saga_kafka_options o = SAGA_KAFKA_OPTIONS_INIT;
    o.url = url;
    o.properties = props;
    o.nproperties = sizeof props / sizeof props[0] - !getenv("KDEBUG");
    o.commit_interval_ms = 20;
    o.log = klog;
    return saga_transport_kafka_new(out, &env->loop, &o);
}

static int kafka_open(saga_tsuite_env *env)
{
    char es[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", es, sizeof es);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (mock_rk == NULL)
        return SAGA_ETRANSPORT;
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    if (mock == NULL)
        return SAGA_ETRANSPORT;
    rd_kafka_mock_topic_create(mock, "svc-b", 4, 1);
    rd_kafka_mock_topic_create(mock, "another-topic", 1, 1);
    snprintf(url, sizeof url, "kafka://%s",
             rd_kafka_mock_cluster_bootstraps(mock));
    int rc = make(env, &env->a, "test-a");
    return rc == SAGA_OK ? make(env, &env->b, "test-b") : rc;
}

static int kafka_reopen_b(saga_tsuite_env *env)
{
    return make(env, &env->b, "test-b2");
}

static void kafka_cleanup(saga_tsuite_env *env)
{
    (void)env;
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    mock = NULL;
    mock_rk = NULL;
}

static const saga_tsuite_fixture kafka_fx = {"svc-b",
                                             SAGA_TSUITE_SHARED_GROUPS |
                                                 SAGA_TSUITE_REDELIVER,
                                             kafka_open, kafka_reopen_b,
                                             kafka_cleanup};

SAGA_TRANSPORT_CONFORMANCE(transport_kafka, kafka_fx)

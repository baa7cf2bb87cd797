/*
 * mock_cluster.c — librdkafka's mock Kafka cluster in a process of its own,
 * so that several processes (orchestrator, participants, kcat) can share
 * it. It speaks the real Kafka protocol on 127.0.0.1.
 *
 *   mock_cluster [-b BROKERS] [-t TOPIC:PARTITIONS]...
 *
 * Prints the bootstrap servers ("127.0.0.1:port,...") as its first line on
 * stdout, then reads commands on stdin, one per line, answering "ok" or
 * "error: ..." for each:
 *
 *   topic NAME PARTITIONS          create a topic
 *   errors APIKEY CNT ERR          the next CNT requests of APIKEY (Produce
 *                                  0, Fetch 1, OffsetCommit 8, ...) fail
 *                                  with Kafka error code ERR
 *   rtt BROKER APIKEY CNT ERR MS   the next CNT requests of APIKEY to
 *                                  BROKER answer ERR (0: none) after MS
 *   down BROKER | up BROKER        a broker goes down / comes back
 *   coord GROUP BROKER             move a group's coordinator
 *   quit
 *
 * It exits when stdin closes, on "quit", or on SIGTERM/SIGINT.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int topic_create(rd_kafka_mock_cluster_t *mc, const char *spec)
{
    char name[256];
    int parts = 0;
    if (sscanf(spec, "%255[^:]:%d", name, &parts) != 2 || parts <= 0)
        return -1;
    return rd_kafka_mock_topic_create(mc, name, parts, 1) ==
                   RD_KAFKA_RESP_ERR_NO_ERROR
               ? 0
               : -1;
}

static const char *command(rd_kafka_mock_cluster_t *mc, char *line)
{
    char w[64], s[256];
    int a, b, c, d, e;
    if (sscanf(line, "%63s", w) != 1)
        return "error: empty command";
    if (strcmp(w, "quit") == 0) {
        stop = 1;
        return "ok";
    }
    if (strcmp(w, "topic") == 0 && sscanf(line, "%*s %255s %d", s, &a) == 2) {
        char spec[300];
        snprintf(spec, sizeof spec, "%s:%d", s, a);
        return topic_create(mc, spec) == 0 ? "ok" : "error: topic";
    }
    if (strcmp(w, "errors") == 0 &&
        sscanf(line, "%*s %d %d %d", &a, &b, &c) == 3 && b > 0 && b < 10000) {
        rd_kafka_resp_err_t *errs = calloc((size_t)b, sizeof *errs);
        if (errs == NULL)
            return "error: memory";
        for (int i = 0; i < b; i++)
            errs[i] = (rd_kafka_resp_err_t)c;
        rd_kafka_mock_push_request_errors_array(mc, (int16_t)a, (size_t)b,
                                                errs);
        free(errs);
        return "ok";
    }
    if (strcmp(w, "rtt") == 0 &&
        sscanf(line, "%*s %d %d %d %d %d", &a, &b, &c, &d, &e) == 5 && c > 0) {
        for (int i = 0; i < c; i++)
            if (rd_kafka_mock_broker_push_request_error_rtts(
                    mc, a, (int16_t)b, 1, (rd_kafka_resp_err_t)d, e) !=
                RD_KAFKA_RESP_ERR_NO_ERROR)
                return "error: rtt";
        return "ok";
    }
    if ((strcmp(w, "down") == 0 || strcmp(w, "up") == 0) &&
        sscanf(line, "%*s %d", &a) == 1) {
        rd_kafka_resp_err_t err = w[0] == 'd'
                                      ? rd_kafka_mock_broker_set_down(mc, a)
                                      : rd_kafka_mock_broker_set_up(mc, a);
        return err == RD_KAFKA_RESP_ERR_NO_ERROR ? "ok" : "error: broker";
    }
    if (strcmp(w, "coord") == 0 && sscanf(line, "%*s %255s %d", s, &a) == 2)
        return rd_kafka_mock_coordinator_set(mc, "group", s, a) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR
                   ? "ok"
                   : "error: coord";
    return "error: unknown command";
}

int main(int argc, char **argv)
{
    int brokers = 1, opt;
    char es[512];
    const char *topics[64];
    int ntopics = 0;
    while ((opt = getopt(argc, argv, "b:t:h")) != -1) {
        switch (opt) {
        case 'b':
            brokers = atoi(optarg);
            break;
        case 't':
            if (ntopics < 64)
                topics[ntopics++] = optarg;
            break;
        default:
            fprintf(stderr, "usage: mock_cluster [-b BROKERS] "
                            "[-t TOPIC:PARTITIONS]...\n");
            return 2;
        }
    }
    if (brokers < 1 || brokers > 16)
        return 2;
    /* No SA_RESTART: a signal ends the blocking read of stdin. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The cluster lives in a throwaway client's threads. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", es, sizeof es);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
    if (rk == NULL) {
        fprintf(stderr, "mock_cluster: %s\n", es);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "mock_cluster: cannot make the cluster\n");
        return 1;
    }
    for (int i = 0; i < ntopics; i++)
        if (topic_create(mc, topics[i]) != 0) {
            fprintf(stderr, "mock_cluster: bad topic '%s'\n", topics[i]);
            return 1;
        }
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char line[1024];
    while (!stop && fgets(line, sizeof line, stdin) != NULL) {
        printf("%s\n", command(mc, line));
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

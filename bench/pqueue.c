/*
 * pqueue.c — a participant's cost per message against the length of its
 * received queue (issue 8).
 *
 *   bench_pqueue [-n long] [-s short] [-b max_batch] [-d]
 *
 * Sends a queue of -s commands (default 1000) at once to a participant on
 * the in-memory store and bus, runs the loop until every reply came, then
 * the same with -n commands (default 20000), each with a fresh
 * participant, and prints the ns per message of each and long/short. With
 * -d the handler answers later (saga_reply_defer()): every handle stays
 * pending until the whole queue was handled, then all are answered, as a
 * payment service's gateway calls pile up behind a backlog.
 *
 * A batch takes at most -b messages (default 256, the participant's
 * default). When every batch's work is O(batch), long/short is about 1;
 * when a batch walks the whole queue (or every pending handle), it grows
 * with the queue. Run it under `valgrind --tool=callgrind` for instruction
 * counts that do not depend on the machine's load (bench/pqueue.sh runs
 * this tree and a base commit that way).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>

static uv_loop_t loop;
static int replies, handled, defer_mode, nsent;
static saga_deferred **pending;
static size_t npending;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)c, (void)arg;
    handled++;
    if (defer_mode) {
        saga_deferred *d;
        if (saga_reply_defer(r, &d) != SAGA_OK) {
            fprintf(stderr, "pqueue: saga_reply_defer failed\n");
            exit(1);
        }
        pending[npending++] = d;
    }
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)buf, (void)len, (void)arg;
    replies++;
    t->ack(t, d);
}

static void send_cmd(saga_transport *t, int i)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.attempt = 1;
    snprintf(e.saga_id, sizeof e.saga_id, "saga-%08d", i);
    snprintf(e.msg_id, sizeof e.msg_id, "saga-%08d.0.1.a", i);
    snprintf(e.name, sizeof e.name, "reserve");
    snprintf(e.reply_to, sizeof e.reply_to, "tester");
    static const unsigned char payload[] = {0x81, 0xa3, 's', 'k', 'u',
                                            0xa4, 'A',  '-', '4', '2'};
    e.payload = payload;
    e.payload_len = sizeof payload;
    void *b;
    size_t n;
    if (saga_envelope_encode(&e, &b, &n) != SAGA_OK ||
        t->send(t, "inventory", e.saga_id, b, n, NULL, NULL) != 0) {
        fprintf(stderr, "pqueue: send failed\n");
        exit(1);
    }
    saga_free(b);
    nsent++;
}

/* One run of @p n queued commands; returns ns per message. */
static double run(int n, uint32_t max_batch)
{
    saga_inmem_bus *bus;
    saga_transport *tester, *pt;
    saga_store *s;
    saga_participant *p;
    replies = handled = nsent = 0;
    npending = 0;
    pending = calloc((size_t)n, sizeof *pending);
    if (uv_loop_init(&loop) != 0 || saga_inmem_bus_new(&bus, &loop) ||
        saga_transport_inmem_new(&tester, bus) ||
        tester->subscribe(tester, "tester", "tester", on_reply, NULL) ||
        saga_transport_inmem_new(&pt, bus) || saga_store_memory_new(&s) ||
        pending == NULL) {
        fprintf(stderr, "pqueue: setup failed\n");
        exit(1);
    }
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.max_batch = max_batch;
    o.max_batch_ms = 60000; /* batches cut by count only: load-independent */
    if (saga_participant_new(&p, &loop, s, pt, &o) ||
        saga_participant_on_command(p, "reserve", h_reserve, NULL) ||
        saga_participant_start(p)) {
        fprintf(stderr, "pqueue: participant failed\n");
        exit(1);
    }
    double t0 = now_ns();
    for (int i = 0; i < n; i++)
        send_cmd(tester, i);
    for (long i = 0; i < 100000000L && (defer_mode ? handled : replies) < n;
         i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (defer_mode) {
        for (size_t i = 0; i < npending; i++)
            saga_deferred_reply(pending[i], SAGA_OUTCOME_OK, NULL, 0, NULL);
        for (long i = 0; i < 100000000L && replies < n; i++)
            uv_run(&loop, UV_RUN_NOWAIT);
    }
    double ns = (now_ns() - t0) / n;
    if (replies != n) {
        fprintf(stderr, "pqueue: %d of %d replies\n", replies, n);
        exit(1);
    }
    saga_participant_close(p, NULL, NULL);
    saga_transport_free(tester);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(pending);
    return ns;
}

int main(int argc, char **argv)
{
    int nlong = 20000, nshort = 1000;
    uint32_t max_batch = 256;
    int opt;
    while ((opt = getopt(argc, argv, "n:s:b:dh")) != -1) {
        switch (opt) {
        case 'n':
            nlong = atoi(optarg);
            break;
        case 's':
            nshort = atoi(optarg);
            break;
        case 'b':
            max_batch = (uint32_t)atoi(optarg);
            break;
        case 'd':
            defer_mode = 1;
            break;
        default:
            fprintf(stderr,
                    "usage: bench_pqueue [-n long] [-s short] [-b max_batch] "
                    "[-d]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (nlong <= 0 || nshort <= 0 || max_batch == 0)
        return 2;
    double a = run(nshort, max_batch);
    double b = run(nlong, max_batch);
    printf("pqueue: max_batch %u%s: queue %d %.0f ns/msg, queue %d %.0f "
           "ns/msg, long/short %.2f\n",
           max_batch, defer_mode ? ", deferred replies" : "", nshort, a, nlong,
           b, b / a);
    return 0;
}

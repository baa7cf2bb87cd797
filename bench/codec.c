/*
 * codec.c — the cost of decoding one wire envelope (saga_envelope_decode).
 *
 *   bench_codec [-n messages] [-r reps]
 *
 * Encodes three typical envelopes (a command with a 200-byte payload, a
 * reply with an error string, an event with unknown keys added by a newer
 * sender) and decodes each -n times, -r repetitions; prints the median
 * ns/message of each. bench/run codec builds this same file against a base
 * commit too and prints the ratio (bench/codec.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "saga/codec.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(saga_envelope *e, saga_msg_kind kind, const void *payload,
                 size_t plen)
{
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    snprintf(e->msg_id, sizeof(e->msg_id), "01J9Z8Q6W3K5V7X2N4B6M8C0D%s",
             kind == SAGA_MSG_REPLY ? "R" : "C");
    snprintf(e->saga_id, sizeof(e->saga_id), "01J9Z8Q6W3K5V7X2N4B6M8C0DS");
    snprintf(e->name, sizeof(e->name), "reserve_inventory");
    snprintf(e->trace, sizeof(e->trace),
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    snprintf(e->reply_to, sizeof(e->reply_to), "orchestrator-1");
    e->step = 2;
    e->attempt = 1;
    e->payload = payload;
    e->payload_len = plen;
    if (kind == SAGA_MSG_REPLY) {
        e->outcome = SAGA_OUTCOME_FAIL;
        snprintf(e->error, sizeof(e->error), "out of stock: sku 4711");
    }
}

int main(int argc, char **argv)
{
    long n = 200000;
    int reps = 5;
    int opt;
    while ((opt = getopt(argc, argv, "n:r:h")) != -1) {
        switch (opt) {
        case 'n':
            n = atol(optarg);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench_codec [-n messages] [-r reps]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (n < 1 || reps < 1 || reps > 99) {
        fprintf(stderr, "bench_codec: bad -n or -r\n");
        return 2;
    }

    unsigned char payload[200];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (unsigned char)(i * 7);
    static const saga_msg_kind kinds[] = {SAGA_MSG_COMMAND, SAGA_MSG_REPLY,
                                          SAGA_MSG_EVENT};
    static const char *const names[] = {"command", "reply", "event+unknown"};
    for (int k = 0; k < 3; k++) {
        saga_envelope e;
        void *buf;
        size_t len;
        fill(&e, kinds[k], payload, sizeof(payload));
        if (saga_envelope_encode(&e, &buf, &len) != SAGA_OK) {
            fprintf(stderr, "bench_codec: encode failed\n");
            return 1;
        }
        if (kinds[k] == SAGA_MSG_EVENT) {
            /* Two unknown keys a newer sender might add: fixmap count + 2,
             * then "x-prio": 3, "x-tags": ["a", "b"] appended. */
            static const unsigned char extra[] = {0xa6, 'x',  '-',  'p',  'r',
                                                  'i',  'o',  0x03, 0xa6, 'x',
                                                  '-',  't',  'a',  'g',  's',
                                                  0x92, 0xa1, 'a',  0xa1, 'b'};
            unsigned char *b = saga_realloc(buf, len + sizeof(extra));
            if (b == NULL || (b[0] & 0xf0) != 0x80 || (b[0] & 0x0f) > 13)
                return 1;
            b[0] = (unsigned char)(b[0] + 2);
            memcpy(b + len, extra, sizeof(extra));
            buf = b;
            len += sizeof(extra);
        }
        double t[99];
        for (int r = 0; r < reps; r++) {
            double t0 = now_ns();
            for (long i = 0; i < n; i++) {
                saga_envelope out;
                if (saga_envelope_decode(&out, buf, len, 0, NULL) != SAGA_OK) {
                    fprintf(stderr, "bench_codec: decode failed\n");
                    return 1;
                }
                __asm__ volatile("" : : "r"(&out) : "memory");
            }
            t[r] = (now_ns() - t0) / (double)n;
        }
        qsort(t, (size_t)reps, sizeof(t[0]), cmp_d);
        printf("decode %-14s %4zu bytes: %8.1f ns/msg (median of %d x %ld)\n",
               names[k], len, t[reps / 2], reps, n);
        saga_free(buf);
    }
    return 0;
}

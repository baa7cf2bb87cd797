/*
 * gen_corpus.c — writes the seed corpora for the fuzz targets:
 *   gen_corpus <dir>/envelope <dir>/data
 * Valid envelopes of every kind, and a few broken ones (truncated, wrong
 * version, duplicate key, lying header, deep nesting), each in its own file.
 * Run by tests/fuzz/run.sh --regen; the output is committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga/codec.h"

static const char *g_dir;

static void put(const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static void put_env(const char *name, const saga_envelope *e, long cut)
{
    void *buf;
    size_t len;
    if (saga_envelope_encode(e, &buf, &len) != SAGA_OK)
        exit(1);
    put(name, buf, cut >= 0 && (size_t)cut < len ? (size_t)cut : len);
    saga_free(buf);
}

static saga_envelope base(saga_msg_kind kind)
{
    static const char payload[] = "\x82\xa5order\xa3o-1\xa3qty\x02";
    saga_envelope e;
    memset(&e, 0, sizeof(e));
    e.kind = kind;
    e.step = 1;
    e.attempt = 1;
    strcpy(e.msg_id, "9f0c1d2e-0001");
    strcpy(e.saga_id, "0123456789abcdef0123456789abcdef");
    strcpy(e.name, "inventory.reserve");
    strcpy(e.trace, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    e.payload = payload;
    e.payload_len = sizeof(payload) - 1;
    return e;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ENVELOPE_DIR DATA_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    saga_envelope e = base(SAGA_MSG_COMMAND);
    put_env("command", &e, -1);
    e.comp = 1;
    strcpy(e.reply_to, "orders");
    put_env("command_comp", &e, -1);
    e = base(SAGA_MSG_REPLY);
    e.outcome = SAGA_OUTCOME_FAIL;
    strcpy(e.error, "out of stock");
    put_env("reply_fail", &e, -1);
    put_env("reply_truncated", &e, 40);
    e = base(SAGA_MSG_EVENT);
    e.payload = NULL;
    e.payload_len = 0;
    e.trace[0] = '\0';
    put_env("event_empty", &e, -1);

    /* Hand-written broken ones. */
    static const char v2[] = "\x82\xa1v\x02\xa4kind\xa5"
                             "event";
    put("version2", v2, sizeof(v2) - 1);
    static const char dup[] = "\x82\xa1v\x01\xa1v\x01";
    put("dup_key", dup, sizeof(dup) - 1);
    static const char lie[] = "\x81\xa2zz\xdd\xff\xff\xff\xff";
    put("lying_array", lie, sizeof(lie) - 1);
    char deep[64];
    memcpy(deep, "\x81\xa2zz", 4);
    memset(deep + 4, 0x91, sizeof(deep) - 5);
    deep[sizeof(deep) - 1] = (char)0xc0;
    put("deep", deep, sizeof(deep));
    static const char ext[] = "\x81\xa2zz\xd6\xff\x00\x00\x00\x01";
    put("ext_timestamp", ext, sizeof(ext) - 1);

    /* Found by the fuzzer: empty keys (msgpack-c gives them a NULL ptr). */
    static const char ek[] = "\x82\xa0\xc0\xa0\xc0";
    put("empty_keys", ek, sizeof(ek) - 1);

    /* Data seeds: first byte is where the input splits into a and b. */
    g_dir = argv[2];
    static const char d1[] = "\x0b\x82\xa1k\xa1x\xa1n\x05\x82\xa1k\xa1y\xa1m"
                             "\xc3";
    put("two_maps", d1, sizeof(d1) - 1);
    static const char d2[] = "\x01\x81\xa1k\x92\x01\xcb\x3f\xf0\0\0\0\0\0\0";
    put("b_only", d2, sizeof(d2) - 1);
    static const char d3[] = "\x04\x81\xa1k\x82\xa1k\xc0\xa1k\xc2";
    put("dup_in_b", d3, sizeof(d3) - 1);
    return 0;
}

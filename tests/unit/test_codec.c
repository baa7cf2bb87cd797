/*
 * test_codec.c — the wire envelope: round trips and every rejection class.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "saga/codec.h"

static saga_envelope make_env(saga_msg_kind kind)
{
    static const char payload[] = "\x81\xa3"
                                  "sku"
                                  "\xa2"
                                  "A1";
    saga_envelope e;
    memset(&e, 0, sizeof(e));
    e.kind = kind;
    e.step = 3;
    e.attempt = 2;
    strcpy(e.msg_id, "m-0001");
    strcpy(e.saga_id, "0123456789abcdef0123456789abcdef");
    strcpy(e.name, "inventory.reserve");
    strcpy(e.trace, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    e.payload = payload;
    e.payload_len = sizeof(payload) - 1;
    return e;
}

static void roundtrip(const saga_envelope *in)
{
    void *buf;
    size_t len;
    saga_envelope out;
    const char *why = "x";
    cr_assert_eq(saga_envelope_encode(in, &buf, &len), SAGA_OK);
    cr_assert_eq(saga_envelope_decode(&out, buf, len, 0, &why), SAGA_OK);
    cr_assert_null(why);
    cr_assert_eq(out.v, SAGA_ENVELOPE_VERSION);
    cr_assert_eq(out.kind, in->kind);
    cr_assert_eq(out.step, in->step);
    cr_assert_eq(out.attempt, in->attempt);
    cr_assert_eq(out.comp, in->kind != SAGA_MSG_EVENT ? !!in->comp : 0);
    cr_assert_eq(out.outcome, in->kind == SAGA_MSG_REPLY ? in->outcome : 0);
    cr_assert_str_eq(out.msg_id, in->msg_id);
    cr_assert_str_eq(out.saga_id, in->saga_id);
    cr_assert_str_eq(out.name, in->name);
    cr_assert_str_eq(out.trace, in->trace);
    cr_assert_str_eq(out.reply_to, in->reply_to);
    cr_assert_str_eq(out.error, in->kind == SAGA_MSG_REPLY ? in->error : "");
    cr_assert_eq(out.payload_len, in->payload_len);
    if (in->payload_len > 0) {
        cr_assert_eq(memcmp(out.payload, in->payload, in->payload_len), 0);
        /* Borrowed: it points into the encoded buffer. */
        cr_assert(out.payload >= buf &&
                  (const char *)out.payload < (const char *)buf + len);
    } else {
        cr_assert_null(out.payload);
    }
    saga_free(buf);
}

Test(codec, roundtrip_every_kind_and_field)
{
    saga_envelope e = make_env(SAGA_MSG_COMMAND);
    roundtrip(&e);
    strcpy(e.reply_to, "orders");
    roundtrip(&e);
    e.comp = 1;
    e.step = UINT32_MAX;
    e.attempt = UINT32_MAX;
    roundtrip(&e);
    e = make_env(SAGA_MSG_EVENT);
    e.trace[0] = '\0';
    e.payload = NULL;
    e.payload_len = 0;
    roundtrip(&e);
    for (int o = SAGA_OUTCOME_OK; o <= SAGA_OUTCOME_RETRY; o++) {
        e = make_env(SAGA_MSG_REPLY);
        e.outcome = (saga_outcome)o;
        roundtrip(&e);
        strcpy(e.error, "out of stock");
        roundtrip(&e);
        e.comp = 1; /* the reply to a compensation */
        roundtrip(&e);
    }
    /* Strings at their longest. */
    e = make_env(SAGA_MSG_REPLY);
    memset(e.msg_id, 'm', SAGA_NAME_MAX);
    memset(e.saga_id, 's', SAGA_NAME_MAX);
    memset(e.name, 'n', SAGA_NAME_MAX);
    memset(e.trace, 't', SAGA_ENVELOPE_TRACE_MAX);
    memset(e.error, 'e', SAGA_ENVELOPE_ERROR_MAX);
    roundtrip(&e);
}

Test(codec, encode_rejects_bad_input)
{
    void *buf = (void *)1;
    size_t len = 1;
    saga_envelope e = make_env(SAGA_MSG_COMMAND);
    cr_assert_eq(saga_envelope_encode(NULL, &buf, &len), SAGA_EINVAL);
    cr_assert_null(buf);
    cr_assert_eq(saga_envelope_encode(&e, NULL, &len), SAGA_EINVAL);
    e.kind = (saga_msg_kind)9;
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EINVAL);
    e = make_env(SAGA_MSG_COMMAND);
    e.msg_id[0] = '\0';
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EINVAL);
    e = make_env(SAGA_MSG_COMMAND);
    memset(e.name, 'x', sizeof(e.name)); /* no terminator */
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EINVAL);
    e = make_env(SAGA_MSG_REPLY);
    e.outcome = (saga_outcome)3;
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EINVAL);
    e = make_env(SAGA_MSG_COMMAND);
    e.payload = NULL;
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EINVAL);
    e = make_env(SAGA_MSG_COMMAND);
    e.v = 2;
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_EVERSION);
}

/* ---- hand-built messages ------------------------------------------------ */

enum {
    KV,
    KKIND,
    KMSG,
    KSAGA,
    KSTEP,
    KATT,
    KNAME,
    KTRACE,
    KPAY,
    KCOMP,
    KOUT,
    KERR,
    KRTO,
    NKEYS
};
static const char *const keys[NKEYS] = {"v",       "kind",    "msg_id",
                                        "saga_id", "step",    "attempt",
                                        "name",    "trace",   "payload",
                                        "comp",    "outcome", "error",
                                        "reply_to"};
static const int required[NKEYS] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0};

static void pstr(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A good value for key @p k, or (@p wrong) one of the wrong type. */
static void pack_val(msgpack_packer *pk, int k, int wrong)
{
    if (wrong) {
        if (k == KSTEP || k == KATT || k == KOUT || k == KV)
            pstr(pk, "1");
        else
            msgpack_pack_uint32(pk, 1);
        return;
    }
    switch (k) {
    case KV:
        msgpack_pack_uint32(pk, 1);
        break;
    case KKIND:
        pstr(pk, "reply");
        break;
    case KSTEP:
        msgpack_pack_uint32(pk, 4);
        break;
    case KATT:
        msgpack_pack_uint32(pk, 1);
        break;
    case KPAY:
        msgpack_pack_bin_with_body(pk, "\x80", 1);
        break;
    case KCOMP:
        msgpack_pack_false(pk);
        break;
    case KOUT:
        msgpack_pack_uint32(pk, 1);
        break;
    default:
        pstr(pk, "abc");
        break;
    }
}

/* A reply with every key; @p omit / @p dup / @p wrong name a key (or -1),
 * @p extra adds an unknown key "zz" holding a small nested value. */
static void build(msgpack_sbuffer *sb, int omit, int dup, int wrong, int extra)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, NKEYS - (omit >= 0) + (dup >= 0) + (extra != 0));
    for (int k = 0; k < NKEYS; k++) {
        if (k == omit)
            continue;
        pstr(&pk, keys[k]);
        pack_val(&pk, k, k == wrong);
        if (k == dup) {
            pstr(&pk, keys[k]);
            pack_val(&pk, k, 0);
        }
    }
    if (extra) {
        pstr(&pk, "zz");
        msgpack_pack_array(&pk, 2);
        msgpack_pack_map(&pk, 1);
        pstr(&pk, "a");
        msgpack_pack_double(&pk, 1.5);
        msgpack_pack_nil(&pk);
    }
}

static int decode_sb(msgpack_sbuffer *sb, saga_envelope *e)
{
    int rc = saga_envelope_decode(e, sb->data, sb->size, 0, NULL);
    msgpack_sbuffer_destroy(sb);
    return rc;
}

Test(codec, handbuilt_reply_and_unknown_keys)
{
    msgpack_sbuffer sb;
    saga_envelope e;
    build(&sb, -1, -1, -1, 1);
    cr_assert_eq(decode_sb(&sb, &e), SAGA_OK);
    cr_assert_eq(e.kind, SAGA_MSG_REPLY);
    cr_assert_eq(e.outcome, SAGA_OUTCOME_FAIL);
    cr_assert_str_eq(e.error, "abc");
    cr_assert_eq(e.step, 4);
}

Test(codec, rejects_missing_wrong_type_and_duplicate_keys)
{
    msgpack_sbuffer sb;
    saga_envelope e;
    saga_codec_counters c = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats_reset();
    int nreq = 0;
    for (int k = 0; k < NKEYS; k++) {
        build(&sb, k, -1, -1, 0);
        int rc = decode_sb(&sb, &e);
        cr_assert_eq(rc, required[k] ? SAGA_ECORRUPT : SAGA_OK, "omit %s",
                     keys[k]);
        nreq += required[k];
        build(&sb, -1, k, -1, 0);
        cr_assert_eq(decode_sb(&sb, &e), SAGA_ECORRUPT, "dup %s", keys[k]);
        build(&sb, -1, -1, k, 0);
        cr_assert_eq(decode_sb(&sb, &e), SAGA_ECORRUPT, "wrong %s", keys[k]);
    }
    cr_assert_eq(saga_codec_stats(&c), SAGA_OK);
    cr_assert_eq(c.rej_missing, (uint64_t)nreq);
    cr_assert_eq(c.rej_duplicate, (uint64_t)NKEYS);
    cr_assert_eq(c.rej_type, (uint64_t)NKEYS);
    cr_assert_eq(c.decoded, (uint64_t)(NKEYS - nreq));
    cr_assert_eq(saga_codec_stats(NULL), SAGA_EINVAL);
    saga_codec_counters bad = {0};
    cr_assert_eq(saga_codec_stats(&bad), SAGA_EVERSION);
    bad.version = SAGA_CODEC_COUNTERS_VERSION + 1;
    cr_assert_eq(saga_codec_stats(&bad), SAGA_EVERSION);
}

/* An envelope whose key @p key holds the value packed by @p fn. */
typedef void (*packfn)(msgpack_packer *pk);
static int decode_with(const char *key, packfn fn, size_t max_payload)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    saga_envelope e;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int replace = 0;
    for (int k = 0; k < NKEYS; k++)
        replace |= strcmp(keys[k], key) == 0;
    msgpack_pack_map(&pk, NKEYS + !replace);
    for (int k = 0; k < NKEYS; k++) {
        if (strcmp(keys[k], key) == 0)
            continue;
        pstr(&pk, keys[k]);
        pack_val(&pk, k, 0);
    }
    pstr(&pk, key);
    fn(&pk);
    int rc = saga_envelope_decode(&e, sb.data, sb.size, max_payload, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void v2(msgpack_packer *pk) { msgpack_pack_uint32(pk, 2); }
static void v0(msgpack_packer *pk) { msgpack_pack_uint32(pk, 0); }
static void vneg(msgpack_packer *pk) { msgpack_pack_int32(pk, -1); }
static void big(msgpack_packer *pk) { msgpack_pack_uint64(pk, 1ull << 32); }
static void three(msgpack_packer *pk) { msgpack_pack_uint32(pk, 3); }
static void empty(msgpack_packer *pk) { pstr(pk, ""); }
static void badkind(msgpack_packer *pk) { pstr(pk, "commandx"); }
static void nul(msgpack_packer *pk)
{
    msgpack_pack_str_with_body(pk, "a\0b", 3);
}
static void str255(msgpack_packer *pk)
{
    char s[256];
    memset(s, 'a', 255);
    msgpack_pack_str_with_body(pk, s, 255);
}
static void str256(msgpack_packer *pk)
{
    char s[256];
    memset(s, 'a', 256);
    msgpack_pack_str_with_body(pk, s, 256);
}
static void str257(msgpack_packer *pk)
{
    char s[257];
    memset(s, 'a', 257);
    msgpack_pack_str_with_body(pk, s, 257);
}
static void pay100(msgpack_packer *pk)
{
    char b[100] = {0};
    msgpack_pack_bin_with_body(pk, b, sizeof(b));
}
static void paystr(msgpack_packer *pk) { pstr(pk, "\x80"); }
static void deep20(msgpack_packer *pk)
{
    for (int i = 0; i < 20; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}
static void deep1000(msgpack_packer *pk)
{
    for (int i = 0; i < 1000; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

static void emptykey(msgpack_packer *pk) { msgpack_pack_nil(pk); }

Test(codec, empty_keys_and_strings)
{
    /* An unknown empty key is skipped; twice it is a duplicate. */
    cr_assert_eq(decode_with("", emptykey, 0), SAGA_OK);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    saga_envelope e;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, NKEYS + 2);
    for (int k = 0; k < NKEYS; k++) {
        pstr(&pk, keys[k]);
        pack_val(&pk, k, 0);
    }
    for (int i = 0; i < 2; i++) {
        pstr(&pk, "");
        msgpack_pack_nil(&pk);
    }
    cr_assert_eq(decode_sb(&sb, &e), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("error", empty, 0), SAGA_OK);
    cr_assert_eq(decode_with("reply_to", empty, 0), SAGA_OK);
}

Test(codec, version)
{
    cr_assert_eq(decode_with("v", v2, 0), SAGA_EVERSION);
    cr_assert_eq(decode_with("v", v0, 0), SAGA_EVERSION);
    cr_assert_eq(decode_with("v", vneg, 0), SAGA_ECORRUPT);
    saga_codec_counters c = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats(&c);
    cr_assert_eq(c.rej_version, 2);
}

Test(codec, value_ranges_and_lengths)
{
    cr_assert_eq(decode_with("step", big, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("attempt", vneg, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("outcome", three, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("kind", badkind, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("msg_id", empty, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("trace", empty, 0), SAGA_OK);
    cr_assert_eq(decode_with("name", nul, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("payload", paystr, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("msg_id", str255, 0), SAGA_OK);
    cr_assert_eq(decode_with("saga_id", str256, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("trace", str256, 0), SAGA_OK);
    cr_assert_eq(decode_with("trace", str257, 0), SAGA_ECORRUPT);
    cr_assert_eq(decode_with("payload", pay100, 100), SAGA_OK);
    cr_assert_eq(decode_with("payload", pay100, 99), SAGA_ECORRUPT);
    saga_codec_counters c = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats(&c);
    cr_assert_eq(c.rej_oversize, 3);
}

static void deep22(msgpack_packer *pk)
{
    for (int i = 0; i < 22; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 0);
}
static void deep23(msgpack_packer *pk)
{
    for (int i = 0; i < 23; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

Test(codec, nesting_in_unknown_keys)
{
    cr_assert_eq(decode_with("zz", deep20, 0), SAGA_OK);
    cr_assert_eq(decode_with("zz", deep1000, 0), SAGA_ECORRUPT);
    /* The top map is level 1, so 22 arrays and an empty one reach level 24,
     * the limit; msgpack-c (limit 32) must accept what the walker does. */
    cr_assert_eq(decode_with("zz", deep22, 0), SAGA_OK);
    cr_assert_eq(decode_with("zz", deep23, 0), SAGA_ECORRUPT);
}

static void good_bytes(void **buf, size_t *len)
{
    saga_envelope e = make_env(SAGA_MSG_REPLY);
    cr_assert_eq(saga_envelope_encode(&e, buf, len), SAGA_OK);
}

Test(codec, truncated_at_every_offset)
{
    void *buf;
    size_t len;
    saga_envelope e;
    good_bytes(&buf, &len);
    for (size_t n = 0; n < len; n++) {
        /* An exact-size copy, so ASan catches any read past the end. */
        void *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        cr_assert_eq(saga_envelope_decode(&e, cut, n, 0, NULL), SAGA_ECORRUPT,
                     "cut at %zu", n);
        free(cut);
    }
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    saga_free(buf);
}

Test(codec, trailing_bytes_and_concatenation)
{
    void *buf;
    size_t len;
    saga_envelope e;
    good_bytes(&buf, &len);
    char *two = malloc(2 * len);
    memcpy(two, buf, len);
    memcpy(two + len, buf, len);
    cr_assert_eq(saga_envelope_decode(&e, two, len + 1, 0, NULL),
                 SAGA_ECORRUPT);
    cr_assert_eq(saga_envelope_decode(&e, two, 2 * len, 0, NULL),
                 SAGA_ECORRUPT);
    free(two);
    saga_free(buf);
}

Test(codec, not_a_map_and_garbage)
{
    static const struct {
        const char *b;
        size_t n;
    } bad[] = {
        {"\x90", 1}, /* empty array */
        {"\xa1"
         "a",
         2},                                  /* string */
        {"\x01", 1},                          /* int */
        {"\xc0", 1},                          /* nil */
        {"\xc1", 1},                          /* never used */
        {"\x80", 1},                          /* empty map: no keys */
        {"\x81\x01\x01", 3},                  /* integer key */
        {"\xdf\xff\xff\xff\xff", 5},          /* 4G pairs promised */
        {"\x81\xa1z\xdd\xff\xff\xff\xff", 8}, /* 4G elements in a value */
    };
    saga_envelope e;
    const char *why = NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(saga_envelope_decode(&e, bad[i].b, bad[i].n, 0, &why),
                     SAGA_ECORRUPT, "case %zu", i);
        cr_assert_not_null(why);
    }
    cr_assert_eq(saga_envelope_decode(&e, NULL, 0, 0, NULL), SAGA_ECORRUPT);
    cr_assert_eq(saga_envelope_decode(&e, NULL, 3, 0, NULL), SAGA_EINVAL);
    cr_assert_eq(saga_envelope_decode(NULL, "\x80", 1, 0, NULL), SAGA_EINVAL);
}

Test(codec, oversized_message_rejected_before_parsing)
{
    size_t n = 100 + SAGA_ENVELOPE_OVERHEAD_MAX + 1;
    char *b = calloc(1, n);
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, b, n, 100, NULL), SAGA_ECORRUPT);
    saga_codec_counters c = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats(&c);
    cr_assert_eq(c.rej_oversize, 1);
    free(b);
}

Test(codec, bad_message_does_not_affect_next)
{
    void *buf;
    size_t len;
    saga_envelope e;
    good_bytes(&buf, &len);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(saga_envelope_decode(&e, buf, len - 1, 0, NULL),
                     SAGA_ECORRUPT);
        cr_assert_eq(e.msg_id[0], '\0'); /* zeroed on error */
        cr_assert_eq(saga_envelope_decode(&e, "\xdf\xff\xff\xff\xff", 5, 0,
                                          NULL),
                     SAGA_ECORRUPT);
        cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
        cr_assert_str_eq(e.msg_id, "m-0001");
    }
    saga_free(buf);
}

static void *fail_malloc(size_t n)
{
    (void)n;
    return NULL;
}
static void *fail_realloc(void *p, size_t n)
{
    (void)p;
    (void)n;
    return NULL;
}

Test(codec, encode_out_of_memory)
{
    saga_envelope e = make_env(SAGA_MSG_EVENT);
    void *buf;
    size_t len;
    cr_assert_eq(saga_replace_allocator(fail_malloc, fail_realloc, free),
                 SAGA_OK);
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_ENOMEM);
    cr_assert_null(buf);
}

Test(codec, kind_names)
{
    cr_assert_str_eq(saga_msg_kind_name(SAGA_MSG_COMMAND), "command");
    cr_assert_str_eq(saga_msg_kind_name(SAGA_MSG_REPLY), "reply");
    cr_assert_str_eq(saga_msg_kind_name(SAGA_MSG_EVENT), "event");
    cr_assert_str_eq(saga_msg_kind_name((saga_msg_kind)0), "unknown");
}

Test(codec, two_empty_keys_are_duplicates_not_ub)
{
    /* {"": "0", "": <bin>} — found by the fuzzer: empty keys may carry NULL
     * pointers, and memcmp(NULL, NULL, 0) is undefined. */
    static const unsigned char m[] = {0x82, 0xa0, 0x30, 0xa0, 0xfc};
    saga_envelope e;
    cr_expect_eq(saga_envelope_decode(&e, m, sizeof m, 1024, NULL),
                 SAGA_ECORRUPT);
}

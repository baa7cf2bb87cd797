/*
 * test_tcp_participant.c — bad input one layer above the TCP transport: a
 * valid frame carrying an envelope of the wrong version, or bytes that are
 * not an envelope at all, reaches a participant over TCP. Each is rejected
 * with a logged reason and a counter; the connection and the participant go
 * on serving, so a good command behind them is answered.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#include "fixture.h"

static uv_loop_t loop;
static char logbuf[8192];
static int replies;
static saga_outcome last_outcome;

static void capture(saga_log_level l, const char *id, int step, const char *msg,
                    void *arg)
{
    (void)l, (void)id, (void)step, (void)arg;
    size_t n = strlen(logbuf);
    if (n + 300 < sizeof logbuf)
        snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

static int free_port(void) { return fx_free_port(&loop); }

static saga_transport *tcp(const char *svc, int port, const char *peer,
                           int peer_port)
{
    return fx_tcp(&loop, svc, port, peer, peer_port, NULL);
}

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)c, (void)r, (void)arg;
    return SAGA_OK;
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    if (saga_envelope_decode(&e, buf, len, 1 << 20, NULL) == SAGA_OK) {
        replies++;
        last_outcome = e.outcome;
    }
    t->ack(t, d);
}

static void wrong_version(void **buf, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint32(&pk, 2);
    msgpack_pack_str_with_body(&pk, "kind", 4);
    msgpack_pack_str_with_body(&pk, "command", 7);
    *buf = saga_malloc(sb.size);
    memcpy(*buf, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

static void good_command(void **buf, size_t *len)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = SAGA_MSG_COMMAND;
    e.attempt = 1;
    strcpy(e.msg_id, "m-good");
    strcpy(e.saga_id, "0123456789abcdef0123456789abcdef");
    strcpy(e.name, "reserve");
    strcpy(e.reply_to, "tester");
    cr_assert_eq(saga_envelope_encode(&e, buf, len), SAGA_OK);
}

Test(tcp_participant, wrong_version_and_garbage_rejected_then_served,
     .timeout = 30)
{
    uv_loop_init(&loop);
    int pi = free_port(), pt = free_port();
    saga_transport *ti = tcp("inventory", pi, "tester", pt);
    saga_transport *tt = tcp("tester", pt, "inventory", pi);
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    o.log = capture;
    saga_participant *p = fx_participant(&loop, s, ti, &o, "reserve",
                                         h_reserve);
    cr_assert_eq(tt->subscribe(tt, "tester", "tester", on_reply, NULL), 0);

    void *b;
    size_t n;
    wrong_version(&b, &n);
    cr_assert_eq(tt->send(tt, "inventory", "k", b, n, NULL, NULL), SAGA_OK);
    saga_free(b);
    static const char junk[] = "\xc1\xc1 definitely not msgpack";
    cr_assert_eq(tt->send(tt, "inventory", "k", junk, sizeof junk, NULL, NULL),
                 SAGA_OK);
    good_command(&b, &n);
    cr_assert_eq(tt->send(tt, "inventory", "k", b, n, NULL, NULL), SAGA_OK);
    saga_free(b);
    replies = 0;
    for (int i = 0; i < 5000 && replies == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_expect_eq(replies, 1, "the good command behind the bad ones was lost");
    cr_expect_eq(last_outcome, SAGA_OUTCOME_OK);
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(p, &st);
    cr_expect_eq(st.rejected, 2u);
    cr_expect_eq(st.commands, 1u);
    cr_expect(strstr(logbuf, "rejected") != NULL, "%s", logbuf);
    saga_codec_counters cc = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats(&cc);
    cr_expect_geq(cc.rej_version, 1u);
    cr_expect_geq(cc.rej_malformed, 1u);

    saga_participant_close(p, NULL, NULL);
    saga_transport_free(tt);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

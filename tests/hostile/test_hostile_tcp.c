/*
 * test_hostile_tcp.c — sagas between an orchestrator and a participant over
 * the TCP transport while hostile peers attack both endpoints at once:
 * garbage bytes, a frame header announcing 2 GiB, half a frame then
 * silence, a HELLO of another protocol version, DATA before HELLO, well
 * framed envelopes that are garbage or of the wrong kind, forged replies
 * (unknown saga, a step that does not exist, an OK whose output is not a
 * map), commands nobody handles, a flood of connections, and a peer that
 * sends but never reads. The good peers' sagas must all complete with the
 * participant's output, and every attack must stop only its own connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include <saga/saga.h>

#include "unit/fixture.h"

#define NSAGAS 20
#define NFLOOD 200

static uv_loop_t loop;
static int done_count, completed;
static int handled;

static void on_done(saga_engine *e, const char *id, saga_state s, void *arg)
{
    (void)e, (void)id, (void)arg;
    done_count++;
    if (s == SAGA_STATE_COMPLETED)
        completed++;
}

static int h_reserve(saga_participant *p, const saga_command *cmd,
                     saga_reply *reply, void *arg)
{
    (void)p, (void)cmd, (void)arg;
    handled++;
    saga_map *m;
    const void *out;
    size_t len;
    saga_map_new(&m);
    saga_map_set_int(m, "r", 1);
    saga_map_encode(m, &out, &len);
    int rc = saga_reply_set(reply, SAGA_OUTCOME_OK, out, len, NULL);
    saga_map_free(m);
    return rc;
}

static int plogs;
static void quiet(saga_log_level l, const char *id, int step, const char *msg,
                  void *arg)
{
    (void)l, (void)id, (void)step, (void)msg, (void)arg;
    plogs++;
}

static int free_port(void) { return fx_free_port(&loop); }

static saga_transport *tcp(const char *svc, int port, const char *peer,
                           int peer_port)
{
    saga_tcp_options o = SAGA_TCP_OPTIONS_INIT;
    o.reconnect_min_ms = 5;
    o.reconnect_max_ms = 50;
    o.heartbeat_ms = 100;
    o.frame_deadline_ms = 300; /* half frames are cut within the test */
    return fx_tcp(&loop, svc, port, peer, peer_port, &o);
}

/* --- a raw hostile peer --------------------------------------------------- */

static int raw(int port)
{
    int fd = fx_raw_connect(port, 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void put(int fd, const void *buf, size_t len)
{
    /* Non-blocking: a peer the endpoint stopped reading just loses bytes. */
    ssize_t n = write(fd, buf, len);
    (void)n;
}

static size_t frame(unsigned char *out, int kind, const void *body, size_t blen)
{
    uint32_t l = htonl((uint32_t)(blen + 1));
    memcpy(out, &l, 4);
    out[4] = (unsigned char)kind;
    if (blen > 0)
        memcpy(out + 5, body, blen);
    return blen + 5;
}

static size_t hello(unsigned char *out, int version, const char *name)
{
    unsigned char b[64];
    b[0] = (unsigned char)version;
    b[1] = (unsigned char)strlen(name);
    memcpy(b + 2, name, strlen(name));
    return frame(out, 1, b, 2 + strlen(name));
}

static size_t data(unsigned char *out, uint64_t id, const char *topic,
                   const void *payload, size_t plen)
{
    unsigned char b[4096], *p = b;
    for (int i = 7; i >= 0; i--)
        *p++ = (unsigned char)(id >> (i * 8));
    *p++ = 0;
    *p++ = (unsigned char)strlen(topic);
    memcpy(p, topic, strlen(topic));
    p += strlen(topic);
    *p++ = 0xff; /* no key */
    *p++ = 0xff;
    cr_assert_lt(plen, sizeof b - (size_t)(p - b));
    memcpy(p, payload, plen);
    p += plen;
    return frame(out, 2, b, (size_t)(p - b));
}

static void envelope_frame(int fd, uint64_t id, const char *topic,
                           saga_msg_kind kind, const char *saga_id,
                           uint32_t step, const char *name, const void *payload,
                           size_t plen)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.step = step;
    e.attempt = 1;
    e.outcome = SAGA_OUTCOME_OK;
    snprintf(e.msg_id, sizeof e.msg_id, "evil-%llu", (unsigned long long)id);
    snprintf(e.saga_id, sizeof e.saga_id, "%s", saga_id);
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.reply_to, sizeof e.reply_to, "orchestrator");
    e.payload = payload;
    e.payload_len = plen;
    void *buf;
    size_t len;
    cr_assert_eq(saga_envelope_encode(&e, &buf, &len), SAGA_OK);
    unsigned char f[4200];
    put(fd, f, data(f, id, topic, buf, len));
    saga_free(buf);
}

/* Every attack on one endpoint (service @p svc, listening on @p port);
 * @p ids are real sagas to forge replies for. Returns the sockets. */
static int attack(int port, const char *svc, char ids[][SAGA_ID_SIZE], int *fds)
{
    unsigned char f[4200];
    int n = 0, fd;
    static const char junk[] = "GET / HTTP/1.1\r\n\r\n\xc1\xc1\xc1 not a frame";
    put(fds[n++] = raw(port), junk, sizeof junk);
    unsigned char huge[5] = {0x7f, 0xff, 0xff, 0xff, 2}; /* 2 GiB */
    put(fds[n++] = raw(port), huge, sizeof huge);
    fd = fds[n++] = raw(port);
    size_t l = hello(f, 1, "half");
    put(fd, f, l);
    l = data(f, 1, svc, "0123456789", 10);
    put(fd, f, l / 2); /* then silence */
    put(fds[n++] = raw(port), f, hello(f, 9, "future"));
    put(fds[n++] = raw(port), f, data(f, 1, svc, "x", 1)); /* no HELLO */

    /* Well framed, after a proper HELLO: envelopes that are garbage, of
     * the wrong kind, forged, or for nobody. */
    fd = fds[n++] = raw(port);
    put(fd, f, hello(f, 1, "forger"));
    static const unsigned char not_msgpack[] = {0xc1, 0xc1, 0x00, 0xff};
    put(fd, f, data(f, 1, svc, not_msgpack, sizeof not_msgpack));
    static const unsigned char not_a_map[] = {0xc1};
    const unsigned char empty_map[] = {0x80};
    uint64_t id = 2;
    envelope_frame(fd, id++, svc, SAGA_MSG_REPLY, "no-such-saga", 0, "reserve",
                   empty_map, 1);
    envelope_frame(fd, id++, svc, SAGA_MSG_EVENT, "no-such-saga", 0,
                   "SomethingHappened", empty_map, 1);
    envelope_frame(fd, id++, svc, SAGA_MSG_COMMAND, "no-such-saga", 0,
                   "drop_tables", empty_map, 1);
    for (int i = 0; i < NSAGAS; i++) {
        envelope_frame(fd, id++, svc, SAGA_MSG_REPLY, ids[i], 99, "reserve",
                       empty_map, 1);
        envelope_frame(fd, id++, svc, SAGA_MSG_REPLY, ids[i], 0, "reserve",
                       not_a_map, sizeof not_a_map);
        envelope_frame(fd, id++, svc, SAGA_MSG_COMMAND, ids[i], 0, "reserve",
                       not_a_map, sizeof not_a_map);
    }
    /* A peer that sends (each frame earns it an ACK) but never reads. */
    fd = fds[n++] = raw(port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    put(fd, f, hello(f, 1, "deaf"));
    for (int i = 0; i < 2000; i++)
        put(fd, f, frame(f, 4, NULL, 0)); /* heartbeats */
    return n;
}

Test(hostile_tcp, good_sagas_complete_while_both_ends_are_attacked,
     .timeout = 120)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    int po = free_port(), pp = free_port();
    saga_transport *to = tcp("orchestrator", po, "inv", pp);
    saga_transport *tp = tcp("inv", pp, "orchestrator", po);

    saga_store *ps;
    cr_assert_eq(saga_store_memory_new(&ps), SAGA_OK);
    saga_participant_options popt = SAGA_PARTICIPANT_OPTIONS_INIT;
    popt.service = "inv";
    popt.log = quiet;
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, &loop, ps, tp, &popt), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, "reserve", h_reserve, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_participant_start(p), SAGA_OK);

    saga_engine_options eo = SAGA_ENGINE_OPTIONS_INIT;
    eo.loop = &loop;
    eo.on_done = on_done;
    eo.log_level = SAGA_LOG_ERROR;
    saga_engine *e;
    cr_assert_eq(saga_engine_new(&e, NULL, to, &eo), SAGA_OK);
    saga_def *d;
    cr_assert_eq(saga_def_new(&d, "order", 1), SAGA_OK);
    saga_step_options so = SAGA_STEP_OPTIONS_INIT;
    so.kind = SAGA_STEP_RETRIABLE;
    so.service = "inv";
    so.command = "reserve";
    so.timeout_ms = 1000;
    so.retry.max_attempts = 30;
    so.retry.initial_backoff_ms = 20;
    so.retry.max_backoff_ms = 200;
    cr_assert_eq(saga_def_add_step(d, "reserve", NULL, NULL, &so, NULL),
                 SAGA_OK);
    cr_assert_eq(saga_engine_register(e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(e), SAGA_OK);

    char ids[NSAGAS][SAGA_ID_SIZE];
    for (int i = 0; i < NSAGAS; i++)
        cr_assert_eq(saga_start(e, "order", NULL, NULL, 0, ids[i], NULL, NULL),
                     SAGA_OK);

    int fds[64], n = 0;
    n += attack(po, "orchestrator", ids, fds + n);
    n += attack(pp, "inv", ids, fds + n);
    int flood[NFLOOD], nflood = 0;
    for (int i = 0; i < NFLOOD; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)(i % 2 ? po : pp));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ||
            errno == EINPROGRESS)
            flood[nflood++] = fd;
        else
            close(fd);
    }

    for (int i = 0; i < 200000 && done_count < NSAGAS; i++)
        uv_run(&loop, UV_RUN_ONCE);
    cr_expect_eq(completed, NSAGAS, "%d of %d sagas completed", completed,
                 NSAGAS);
    for (int i = 0; i < NSAGAS; i++) {
        saga_info *info;
        cr_assert_eq(saga_get(e, ids[i], &info), SAGA_OK);
        size_t len;
        const void *dat = saga_info_data(info, &len);
        int64_t r = 0;
        cr_expect_eq(saga_data_get_int(dat, len, "r", &r), SAGA_OK);
        cr_expect_eq(r, 1, "saga %d lacks the participant's output", i);
        saga_info_free(info);
    }
    cr_expect_geq(handled, NSAGAS);

    /* What each endpoint saw: the bad frames counted, connections cut. */
    saga_tcp_counters c = {.version = SAGA_TCP_COUNTERS_VERSION};
    cr_assert_eq(saga_transport_tcp_stats(to, &c), SAGA_OK);
    cr_expect_geq(c.rejected_frames, 4u, "orchestrator: %llu rejected",
                  (unsigned long long)c.rejected_frames);
    saga_participant_counters pc = SAGA_PARTICIPANT_COUNTERS_INIT;
    saga_participant_stats(p, &pc);
    cr_expect_geq(pc.rejected, 1u);
    cr_expect_geq(plogs, 1, "the rejections were not logged");

    for (int i = 0; i < n; i++)
        close(fds[i]);
    for (int i = 0; i < nflood; i++)
        close(flood[i]);
    saga_participant_close(p, NULL, NULL);
    saga_engine_close(e, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

/*
 * fixture.h — the setup the participant, TCP and relay unit tests share:
 * a participant on an in-memory bus with a tester endpoint standing in for
 * the orchestrator, command envelopes sent by hand, TCP endpoints on
 * loopback ports, and raw sockets that speak the wire format themselves.
 *
 * Header only (static inline), so that each test executable takes what it
 * uses. Every helper asserts with Criterion, so a broken setup fails the
 * test that called it. Loopback only; every wait is a bounded number of
 * loop turns.
 */
#ifndef SAGA_TESTS_UNIT_FIXTURE_H
#define SAGA_TESTS_UNIT_FIXTURE_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <uv.h>

#include <saga/saga.h>

/* ---- the loop -------------------------------------------------------------- */

/* Run @p n loop turns that do not wait. */
static inline void fx_pump(uv_loop_t *loop, int n)
{
    for (int i = 0; i < n; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- a participant on an in-memory bus ------------------------------------- */

/* The bus and the tester's endpoint (the orchestrator's side): @p loop is
 * initialised, *tester subscribes to @p reply_topic (group the same) with
 * @p on_reply, and *pt is a second endpoint for the participant (NULL: not
 * wanted). */
static inline void fx_inmem_open(uv_loop_t *loop, saga_inmem_bus **bus,
                                 saga_transport **tester,
                                 const char *reply_topic, saga_recv_cb on_reply,
                                 saga_transport **pt)
{
    cr_assert_eq(uv_loop_init(loop), 0);
    cr_assert_eq(saga_inmem_bus_new(bus, loop), SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(tester, *bus), SAGA_OK);
    cr_assert_eq((*tester)->subscribe(*tester, reply_topic, reply_topic,
                                      on_reply, NULL),
                 0);
    if (pt != NULL)
        cr_assert_eq(saga_transport_inmem_new(pt, *bus), SAGA_OK);
}

/* A participant made from @p o on @p s and @p t, with @p fn for the
 * command @p cmd, started. */
static inline saga_participant *
fx_participant(uv_loop_t *loop, saga_store *s, saga_transport *t,
               const saga_participant_options *o, const char *cmd,
               saga_command_fn fn)
{
    saga_participant *p;
    cr_assert_eq(saga_participant_new(&p, loop, s, t, o), SAGA_OK);
    cr_assert_eq(saga_participant_on_command(p, cmd, fn, NULL), 0);
    cr_assert_eq(saga_participant_start(p), SAGA_OK, "%s",
                 saga_participant_errmsg(p));
    return p;
}

/* Close the participant (if any) and the tester, free the bus, run the
 * loop dry and close it: no handle may be left. @p turns: loop turns
 * between the closes and freeing the bus. */
static inline void fx_inmem_close(uv_loop_t *loop, saga_participant *p,
                                  saga_transport *tester, saga_inmem_bus *bus,
                                  int turns)
{
    if (p != NULL)
        saga_participant_close(p, NULL, NULL);
    saga_transport_free(tester);
    fx_pump(loop, turns);
    saga_inmem_bus_free(bus);
    uv_run(loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(loop), 0, "loop has open handles");
}

static inline saga_store *fx_memory_store(void)
{
    saga_store *s;
    cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    return s;
}

static inline int fx__count_row(const saga_message *m, void *arg)
{
    (void)m;
    (*(int *)arg)++;
    return 0;
}

/* The rows in @p p's outbox (at most @p max; 0: the store's default). */
static inline int fx_outbox_rows(saga_participant *p, uint32_t max)
{
    saga_store *s = saga_participant_store(p);
    int n = 0;
    cr_assert_eq(s->outbox_scan(s, max, fx__count_row, &n), SAGA_OK);
    return n;
}

/* ---- envelopes sent by hand ------------------------------------------------ */

/* What the tests vary in an envelope; the rest is zero, attempt 1. */
typedef struct fx_msg {
    saga_msg_kind kind;   /* 0: SAGA_MSG_COMMAND */
    const char *saga;     /* the saga id, also the message key */
    const char *msg_id;   /* NULL: "<saga>.<step>.1.<a|c>" */
    const char *name;     /* NULL: "reserve" */
    const char *reply_to; /* NULL: "tester" for a command, none otherwise */
    unsigned step;
    int comp;
} fx_msg;

/* Encode @p m and send it to @p topic on @p t (no confirmation wanted). */
static inline void fx_send(saga_transport *t, const char *topic,
                           const fx_msg *m)
{
    saga_envelope e;
    memset(&e, 0, sizeof e);
    e.kind = m->kind ? m->kind : SAGA_MSG_COMMAND;
    e.step = m->step;
    e.attempt = 1;
    e.comp = m->comp;
    if (m->msg_id != NULL)
        snprintf(e.msg_id, sizeof e.msg_id, "%s", m->msg_id);
    else
        snprintf(e.msg_id, sizeof e.msg_id, "%s.%u.1.%c", m->saga, m->step,
                 m->comp ? 'c' : 'a');
    snprintf(e.saga_id, sizeof e.saga_id, "%s", m->saga);
    snprintf(e.name, sizeof e.name, "%s", m->name ? m->name : "reserve");
    if (m->reply_to != NULL)
        snprintf(e.reply_to, sizeof e.reply_to, "%s", m->reply_to);
    else if (e.kind == SAGA_MSG_COMMAND)
        strcpy(e.reply_to, "tester");
    void *b;
    size_t n;
    cr_assert_eq(saga_envelope_encode(&e, &b, &n), SAGA_OK);
    cr_assert_eq(t->send(t, topic, e.saga_id, b, n, NULL, NULL), 0);
    saga_free(b);
}

/* ---- TCP on loopback ------------------------------------------------------- */

/* A port on 127.0.0.1 that was free a moment ago. */
static inline int fx_free_port(uv_loop_t *loop)
{
    uv_tcp_t s;
    struct sockaddr_in a;
    uv_tcp_init(loop, &s);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(&s, (const struct sockaddr *)&a, 0);
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&s, (struct sockaddr *)&got, &len);
    uv_close((uv_handle_t *)&s, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ntohs(got.sin_port);
}

/* A TCP endpoint @p svc listening on @p port (0: any) with one peer
 * @p peer at @p peer_port (NULL: none). @p o: the other options (service,
 * listen and peers are set here); NULL: the defaults, but reconnecting
 * after 5 to 50 ms. */
static inline saga_transport *fx_tcp(uv_loop_t *loop, const char *svc, int port,
                                     const char *peer, int peer_port,
                                     const saga_tcp_options *o)
{
    char listen[32], addr[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", peer_port);
    saga_tcp_peer peers[] = {{peer, addr}};
    saga_tcp_options opts = SAGA_TCP_OPTIONS_INIT;
    if (o != NULL) {
        opts = *o;
    } else {
        opts.reconnect_min_ms = 5;
        opts.reconnect_max_ms = 50;
    }
    opts.service = svc;
    opts.listen = listen;
    opts.peers = peer != NULL ? peers : NULL;
    opts.npeers = peer != NULL ? 1 : 0;
    saga_transport *t;
    cr_assert_eq(saga_transport_tcp_new(&t, loop, &opts), SAGA_OK, "%s",
                 saga_open_errmsg());
    return t;
}

/* ---- raw sockets ----------------------------------------------------------- */

/* A blocking client socket connected to 127.0.0.1:@p port (the kernel
 * completes the handshake from the listen backlog), with a receive buffer
 * of @p rcvbuf bytes (0: the system's). */
static inline int fx_raw_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* A non-blocking listening socket on 127.0.0.1, its port in *port. */
static inline int fx_raw_listen(int *port)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(ls, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(ls, 4), 0);
    socklen_t sl = sizeof sa;
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    cr_assert_eq(fcntl(ls, F_SETFL, O_NONBLOCK), 0);
    *port = ntohs(sa.sin_port);
    return ls;
}

/* The next connection to @p ls, running @p loop until it comes. */
static inline int fx_raw_accept(uv_loop_t *loop, int ls)
{
    int fd = -1;
    for (int i = 0; i < 20000 && fd < 0; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        fd = accept(ls, NULL, NULL);
        if (fd < 0)
            uv_sleep(1);
    }
    cr_assert_geq(fd, 0);
    return fd;
}

#endif /* SAGA_TESTS_UNIT_FIXTURE_H */

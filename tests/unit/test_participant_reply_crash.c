/*
 * test_participant_reply_crash.c — a participant's reply to a command has
 * no outbox row: the command's delivery is acked only once the transport
 * confirms the reply. A crash after the batch committed and before the
 * reply left must still get the reply to the orchestrator: the transport
 * delivers the unacked command again to the restarted participant, whose
 * inbox answers it with the recorded reply, without calling the handler
 * again. Here the "crash" is a transport that swallows the reply (it says
 * it took it and never sends it) and a participant closed before it could
 * be confirmed; the orchestrator side never re-sends on its own.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <uv.h>

#include <saga/saga.h>

#include "fakes/tmpdir.h"
#include "fixture.h"

static uv_loop_t loop;
static saga_inmem_bus *bus;
static saga_participant *P;
static saga_transport *T; /* the orchestrator: sends commands, gets replies */
static int calls, nreplies;
static saga_outcome last_outcome;
static char last_id[300];
static unsigned char last_out[16];
static size_t last_out_len;

static const unsigned char OUT[] = {0x81, 0xa1, 'a', 0x07}; /* {"a":7} */

/* ---- a transport that swallows sends while told to --------------------- */

typedef struct lost {
    saga_sent_cb cb;
    void *arg;
} lost;

typedef struct lossy {
    saga_transport base;
    saga_transport *in;
    int swallow; /* sends are taken and never sent (the process dies) */
    lost lost[16];
    int nlost;
    int sends;
} lossy;

static int l_send(saga_transport *self, const char *topic, const char *key,
                  const void *buf, size_t len, saga_sent_cb cb, void *arg)
{
    lossy *l = (lossy *)self;
    l->sends++;
    if (!l->swallow)
        return l->in->send(l->in, topic, key, buf, len, cb, arg);
    cr_assert_lt(l->nlost, 16);
    l->lost[l->nlost++] = (lost){cb, arg};
    return SAGA_OK;
}

static int l_subscribe(saga_transport *self, const char *topic,
                       const char *group, saga_recv_cb cb, void *arg)
{
    lossy *l = (lossy *)self;
    return l->in->subscribe(l->in, topic, group, cb, arg);
}

static int l_ack(saga_transport *self, saga_delivery *d)
{
    lossy *l = (lossy *)self;
    return l->in->ack(l->in, d);
}

static const char *l_errmsg(saga_transport *self)
{
    lossy *l = (lossy *)self;
    return l->in->errmsg(l->in);
}

static void l_close(saga_transport *self)
{
    lossy *l = (lossy *)self;
    /* The swallowed sends end as a closing transport's do. */
    for (int i = 0; i < l->nlost; i++)
        if (l->lost[i].cb != NULL)
            l->lost[i].cb(self, SAGA_ECLOSED, l->lost[i].arg);
    /* Unacked deliveries go back to the group for the next subscriber. */
    l->in->close(l->in);
    saga_free(l);
}

static lossy *lossy_new(void)
{
    lossy *l = saga_malloc(sizeof *l);
    cr_assert_not_null(l);
    memset(l, 0, sizeof *l);
    cr_assert_eq(saga_transport_init(&l->base, SAGA_TRANSPORT_VERSION),
                 SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&l->in, bus), SAGA_OK);
    l->base.send = l_send;
    l->base.subscribe = l_subscribe;
    l->base.ack = l_ack;
    l->base.errmsg = l_errmsg;
    l->base.close = l_close;
    return l;
}

/* ---- the participant and the orchestrator side ------------------------- */

static int h_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)c, (void)arg;
    calls++;
    return saga_reply_set(r, SAGA_OUTCOME_OK, OUT, sizeof OUT, NULL);
}

static void on_reply(saga_transport *t, saga_delivery *d, const char *topic,
                     const char *key, const void *buf, size_t len, void *arg)
{
    (void)topic, (void)key, (void)arg;
    saga_envelope e;
    cr_assert_eq(saga_envelope_decode(&e, buf, len, 0, NULL), SAGA_OK);
    nreplies++;
    last_outcome = e.outcome;
    snprintf(last_id, sizeof last_id, "%s", e.msg_id);
    last_out_len = e.payload_len <= sizeof last_out ? e.payload_len : 0;
    if (last_out_len)
        memcpy(last_out, e.payload, last_out_len);
    t->ack(t, d);
}

static void pump(void) { fx_pump(&loop, 50); }

static void send_cmd(const char *saga)
{
    fx_send(T, "inventory", &(fx_msg){.saga = saga, .reply_to = "orch"});
}

static void start_participant(saga_store *s, saga_transport *t)
{
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = "inventory";
    P = fx_participant(&loop, s, t, &o, "reserve", h_reserve);
}

static void close_participant(void)
{
    if (P != NULL)
        saga_participant_close(P, NULL, NULL);
    P = NULL;
    pump();
}

static saga_participant_counters stats(void)
{
    saga_participant_counters st = SAGA_PARTICIPANT_COUNTERS_INIT;
    cr_assert_eq(saga_participant_stats(P, &st), SAGA_OK);
    return st;
}

static int outbox_rows(void) { return fx_outbox_rows(P, 1000); }

static void setup(void)
{
    calls = nreplies = 0;
    last_id[0] = '\0';
    P = NULL;
    fx_inmem_open(&loop, &bus, &T, "orch", on_reply, NULL);
}

static void teardown(void)
{
    close_participant();
    fx_inmem_close(&loop, NULL, T, bus, 50);
}

TestSuite(participant_reply_crash, .init = setup, .fini = teardown);

/* The batch commits (inbox claim, barrier, recorded reply), the reply is
 * lost with the process, nothing is in the outbox; the restarted
 * participant gets the command again and answers with the recorded reply. */
static void reply_lost_then_recovered(int sqlite)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    saga_store *s;
    if (sqlite)
        cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                     SAGA_OK);
    else
        cr_assert_eq(saga_store_memory_new(&s), SAGA_OK);
    lossy *l = lossy_new();
    l->swallow = 1;
    start_participant(s, &l->base);
    send_cmd("s1");
    pump();
    cr_assert_eq(calls, 1);
    cr_assert_geq(stats().commits, 1, "the batch committed");
    cr_assert_eq(l->nlost, 1, "the reply was handed over, and lost");
    cr_assert_eq(nreplies, 0);
    cr_assert_eq(outbox_rows(), 0, "a reply has no outbox row");
    if (!sqlite) {
        /* The memory store dies with the participant: only the
         * redelivery to the live one is tested here. */
        l->swallow = 0;
        tmpdir_remove(&td);
        return;
    }
    close_participant(); /* the crash: the reply never left */
    cr_assert_eq(nreplies, 0);

    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    saga_transport *t2;
    cr_assert_eq(saga_transport_inmem_new(&t2, bus), SAGA_OK);
    start_participant(s, t2);
    pump();
    cr_assert_eq(nreplies, 1, "the reply reaches the orchestrator");
    cr_assert_str_eq(last_id, "s1.0.1.a.r");
    cr_assert_eq(last_outcome, SAGA_OUTCOME_OK);
    cr_assert_eq(last_out_len, sizeof OUT);
    cr_assert_arr_eq(last_out, OUT, sizeof OUT, "the recorded output");
    cr_assert_eq(calls, 1, "the handler is not called again");
    cr_assert_eq(stats().duplicates, 1);
    /* Confirmed now: a third start gets nothing again. */
    close_participant();
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    cr_assert_eq(saga_transport_inmem_new(&t2, bus), SAGA_OK);
    start_participant(s, t2);
    pump();
    cr_assert_eq(nreplies, 1);
    cr_assert_eq(stats().duplicates, 0, "the command was acked");
    close_participant();
    tmpdir_remove(&td);
}

Test(participant_reply_crash, reply_lost_after_commit_is_sent_after_restart)
{
    reply_lost_then_recovered(1);
}

Test(participant_reply_crash, reply_has_no_outbox_row_memory_store)
{
    reply_lost_then_recovered(0);
}

/* The recorded reply sent again for a duplicate is held the same way: lost
 * with the process, the duplicate comes again and is answered. */
Test(participant_reply_crash, duplicate_resend_lost_is_sent_after_restart)
{
    tmpdir td;
    cr_assert_eq(tmpdir_make(&td), 0);
    saga_store *s;
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    lossy *l = lossy_new();
    start_participant(s, &l->base);
    send_cmd("s2");
    pump();
    cr_assert_eq(nreplies, 1);
    l->swallow = 1;
    send_cmd("s2"); /* a redelivery: answered from the inbox, then lost */
    pump();
    cr_assert_eq(stats().duplicates, 1);
    cr_assert_eq(l->nlost, 1);
    close_participant();
    cr_assert_eq(saga_store_sqlite_open(&s, tmpdir_path(&td, "p.db"), NULL),
                 SAGA_OK);
    saga_transport *t2;
    cr_assert_eq(saga_transport_inmem_new(&t2, bus), SAGA_OK);
    start_participant(s, t2);
    pump();
    cr_assert_eq(nreplies, 2);
    cr_assert_str_eq(last_id, "s2.0.1.a.r");
    cr_assert_eq(calls, 1);
    close_participant();
    tmpdir_remove(&td);
}

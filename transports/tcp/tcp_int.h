/*
 * tcp_int.h — internals of the TCP transport shared by its two files:
 * the frame codec and address parsing (tcp_wire.c) and the transport
 * (tcp_transport.c). The wire format is documented in include/saga/tcp.h.
 */
#ifndef SAGA_TCP_INT_H
#define SAGA_TCP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "saga/tcp.h"
#include "util.h"

enum {
    SAGA__TCP_HELLO = 1,
    SAGA__TCP_DATA = 2,
    SAGA__TCP_ACK = 3,
    SAGA__TCP_HEARTBEAT = 4
};

#define SAGA__TCP_PROTO_VERSION 1
/* The limit answer: an ACK frame whose id is this tag plus the receiving
 * endpoint's max_frame_size, sent on an inbound link right after its HELLO.
 * DATA ids count up from 1 and never reach the tag, so an endpoint that
 * predates it takes it for the ACK of a frame it does not hold and ignores
 * it (docs/transports.md, "Frame limits"). */
#define SAGA__TCP_LIMIT_TAG ((uint64_t)1 << 63)
/* Smallest and largest max_frame_size an endpoint accepts or announces. */
#define SAGA__TCP_MIN_FRAME 64u
#define SAGA__TCP_MAX_FRAME (1u << 30)
/* 4-byte length, then the kind byte. */
#define SAGA__TCP_HDR 5
#define SAGA__TCP_NOKEY 0xffffu
/* Bytes of a DATA frame besides topic, key and payload. */
#define SAGA__TCP_DATA_OVERHEAD (SAGA__TCP_HDR + 8 + 2 + 2)

/** A decoded frame body; pointers point into the receive buffer. */
typedef struct saga__tcp_frame {
    int kind;
    uint64_t id;      /* DATA, ACK */
    uint32_t limit;   /* ACK: a limit answer's max_frame_size; 0: an ACK */
    const char *name; /* HELLO */
    size_t name_len;
    const char *topic; /* DATA */
    size_t topic_len;
    const char *key; /* DATA; NULL: no key */
    size_t key_len;
    const unsigned char *payload;
    size_t payload_len;
} saga__tcp_frame;

/**
 * Decode a frame body (what follows the kind byte). @return SAGA_OK, or
 * SAGA_ECORRUPT with a static reason in *why.
 */
int saga__tcp_frame_decode(int kind, const unsigned char *body, size_t len,
                           saga__tcp_frame *f, const char **why);

/** Write the 5-byte header of a frame with @p body_len body bytes. */
void saga__tcp_put_header(unsigned char *p, int kind, size_t body_len);
void saga__tcp_put_u64(unsigned char *p, uint64_t v);
void saga__tcp_put_u16(unsigned char *p, unsigned v);
uint32_t saga__tcp_get_u32(const unsigned char *p);

/**
 * Build a whole DATA frame (saga_malloc'd) into *out / *out_len. @p key may
 * be NULL. The caller checked the lengths. @return SAGA_OK or SAGA_ENOMEM.
 */
int saga__tcp_data_encode(uint64_t id, const char *topic, const char *key,
                          const void *buf, size_t len, unsigned char **out,
                          size_t *out_len);

/** Parse "host:port" or "[v6]:port". @return SAGA_OK or SAGA_EINVAL. */
int saga__tcp_parse_addr(const char *s, struct sockaddr_storage *out);

/* ---- types --------------------------------------------------------------- */

typedef struct tcp_t tcp_t;
typedef struct tcp_peer tcp_peer;

typedef struct out_msg {
    saga__list node; /* peer->queue, then t->completed */
    uint64_t id;
    unsigned char *frame;
    size_t flen;
    saga_sent_cb cb;
    void *arg;
    int status;  /* once completed */
    int written; /* written at least once (a rewrite counts as resent) */
    int wrefs;   /* uv_writes still using frame */
    int done;    /* the callback has run; free when wrefs == 0 */
} out_msg;

/* A frame queued for the next write of its connection: a DATA frame of
 * @c m, or @c len control bytes at @c off in the connection's ctl buffer. */
typedef struct wpend {
    out_msg *m;
    size_t off, len;
} wpend;

typedef struct tcp_conn {
    saga__list node;  /* t->conns while open */
    saga__list fnode; /* t->flushq while frames are queued (fqueued) */
    int fqueued;
    wpend *wq; /* frames queued this loop turn, written as one writev */
    size_t nwq, cwq;
    unsigned char *ctl; /* control frame bytes of wq */
    size_t nctl, cctl;
    uv_tcp_t h;
    uv_connect_t creq;
    tcp_t *t;
    tcp_peer *peer; /* outbound: the peer; inbound: NULL */
    int closing;
    int up;        /* outbound: connected, HELLO written */
    int hello;     /* inbound: HELLO received */
    unsigned refs; /* the handle, plus one per received message held */
    char name[SAGA_NAME_MAX + 1];
    unsigned char *rbuf;
    size_t roff, rlen, rcap;
    uint64_t last_rx;
    uint64_t born;        /* when the connection was made (loop time) */
    size_t held;          /* bytes of received messages not yet acked */
    uint32_t nheld;       /* and how many */
    int paused;           /* reading stopped until the application acks */
    int wpaused;          /* reading stopped until the peer reads our writes */
    int reading;          /* uv_read_start is in effect */
    int counted;          /* inbound, counted in t->ninbound */
    int over_budget;      /* on_alloc refused to grow the receive buffer */
    uint64_t frame_start; /* loop time a partial frame began; 0: none */
} tcp_conn;

struct tcp_peer {
    tcp_t *t;
    char *service;
    struct sockaddr_storage addr;
    uv_timer_t timer; /* reconnect backoff */
    tcp_conn *conn;   /* current outbound connection, or NULL */
    int active;       /* used once: keep it connected */
    uint32_t backoff;
    saga__list queue; /* out_msg, by id */
    size_t qbytes;
    uint32_t qmsgs;
    uint64_t next_id;
    uint32_t peer_max; /* its max_frame_size (limit answer); 0: unknown */
};

typedef struct rx_msg {
    saga__list node; /* t->backlog while nobody subscribed to its topic */
    unsigned refs;
    tcp_conn *conn;
    uint64_t id;
    char *topic;
    char *key;
    size_t len;
    unsigned char *data;
    size_t size; /* counted in conn->held */
} rx_msg;

typedef struct tcp_sub {
    saga__list node;
    char *topic, *group;
    saga_recv_cb cb;
    void *arg;
} tcp_sub;

#define SAGA__TCP_DELIVERY_MAGIC 0x53414754u /* "SAGT" */

struct saga_delivery {
    saga__list node; /* t->ready, then t->handed */
    uint32_t magic;
    tcp_t *t;
    rx_msg *m;
    tcp_sub *sub;
    int handed; /* 1 once given to the application */
};

struct tcp_t {
    saga_transport base; /* first */
    uv_loop_t *loop;
    saga_tcp_options o;
    char *service;
    uv_tcp_t listener;
    uv_timer_t heartbeat;
    uv_idle_t pump;
    int port;
    tcp_peer *peers;
    size_t npeers;
    saga__list conns;     /* tcp_conn, open */
    saga__list subs;      /* tcp_sub */
    saga__list backlog;   /* rx_msg */
    size_t backlog_bytes; /* of the rx_msgs in backlog */
    size_t rbuf_bytes;    /* receive buffers of all connections */
    uint32_t ninbound;    /* inbound connections open */
    saga__list ready;     /* saga_delivery, to hand over */
    saga__list handed;    /* saga_delivery, waiting for ack */
    saga__list completed; /* out_msg, callback due */
    saga__list flushq;    /* tcp_conn with frames to write */
    unsigned handles;     /* open uv handles */
    int closing;
    int accept_pending; /* a connection waits for memory to accept */
    saga_tcp_counters st;
    char err[256];
};

/* ---- shared between tcp_transport.c (I/O) and tcp_api.c (slots) ------- */

void saga__tcp_conn_close(tcp_conn *c, const char *why);
void saga__tcp_conn_unref(tcp_conn *c);
/* A received message from @p c of @p size bytes is gone. */
void saga__tcp_conn_release(tcp_conn *c, size_t size);
void saga__tcp_conn_write_ack(tcp_conn *c, uint64_t id);
/* Start or stop reading @p c as its pause flags say. */
void saga__tcp_conn_reading(tcp_conn *c);
/* Free a received message (its connection's hold and reference). */
void saga__tcp_rx_msg_free(rx_msg *m);
void saga__tcp_write_data(tcp_conn *c, out_msg *m);
void saga__tcp_peer_connect(tcp_peer *p);
void saga__tcp_pump_kick(tcp_t *t);
/* Write what every connection has queued (one writev each). */
void saga__tcp_flush(tcp_t *t);
void saga__tcp_out_msg_release(out_msg *m);
int saga__tcp_deliver(tcp_t *t, rx_msg *m, tcp_sub *s);
void saga__tcp_on_pump(uv_idle_t *h);
void saga__tcp_on_accept(uv_stream_t *server, int status);
void saga__tcp_on_heartbeat(uv_timer_t *h);
void saga__tcp_on_backoff(uv_timer_t *h);
/* In tcp_api.c: free the transport once its last handle has closed. */
void saga__tcp_maybe_finish(tcp_t *t);
void saga__tcp_log(tcp_t *t, saga_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* SAGA_TCP_INT_H */

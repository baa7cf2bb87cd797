/*
 * tcp.h — the TCP transport on libuv: one endpoint per service, framed
 * messages over one stream per peer, acknowledged end to end.
 *
 * Routing: a message sent to topic T goes to the configured peer whose
 * service name is T (saga_tcp_options.peers). A peer's service subscribes
 * to its own name as the topic. Without such a peer, a topic subscribed on
 * this endpoint loops back through its own listener; any other topic has
 * no route: route() and send() return SAGA_ENOROUTE. There is no broker: a consumer group is
 * local to one endpoint, so subscribers of one group on two endpoints do
 * not share messages; each endpoint that subscribes gets what its peers
 * send it.
 *
 * Wire format: every frame is a 4-byte big-endian length L (of what
 * follows), then one kind byte and L-1 bytes of body:
 *   HELLO     version byte, service name length byte, service name
 *   DATA      8-byte id, 2-byte topic length, topic, 2-byte key length
 *             (0xffff: no key), key, payload
 *   ACK       8-byte id of a DATA frame; or, with the top bit set, the
 *             limit answer: 2^63 + the receiver's max_frame_size
 *   HEARTBEAT empty
 * A connecting endpoint sends HELLO first; the accepting endpoint answers
 * it with the limit answer (an endpoint that predates the limit answer
 * ignores it, as an ACK for a frame it does not hold, and one that does
 * not send it leaves the sender checking its own limit only). DATA ids count up per (sender,
 * peer) across reconnects. The receiver acks a DATA frame when the
 * application has acked every delivery made from it; only then does the
 * sender's saga_sent_cb run with SAGA_OK. Frames not acked when a
 * connection drops are sent again after the reconnect, in order, so a
 * message may arrive twice (at-least-once; the inbox deduplicates).
 *
 * Bad input (a length over max_frame_size, an unknown kind, a malformed
 * body, DATA before HELLO, a truncated frame at EOF) is logged, counted in
 * rejected_frames, and closes that one connection; the endpoint keeps
 * serving the others.
 *
 * Memory is bounded against hostile peers (options version 2): frames for
 * a topic nobody subscribes to are refused, not kept; inbound connections
 * are limited in number; a frame must complete within a deadline; the
 * receive buffers of all connections share one budget; and a peer that
 * does not read what we write (its ACKs) is no longer read from. Each has
 * a counter in saga_tcp_counters and a log line.
 */
#ifndef SAGA_TCP_H
#define SAGA_TCP_H

#include "saga/saga.h"

struct uv_loop_s;

SAGA_BEGIN_DECL

/** A peer: its service name and its "host:port" ("127.0.0.1:7001",
 * "[::1]:7001"). */
typedef struct saga_tcp_peer {
    const char *service;
    const char *address;
} saga_tcp_peer;

#define SAGA_TCP_OPTIONS_VERSION 2
#define SAGA_TCP_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_TCP_OPTIONS_VERSION)

/** TCP transport options. Zero (or NULL) in any field selects its default.
 * Strings and the peer array are copied. */
typedef struct saga_tcp_options {
    unsigned int version;
    /** This endpoint's service name (sent in HELLO); default
     * "orchestrator". At most SAGA_NAME_MAX bytes. */
    const char *service;
    /** Where to listen, "host:port"; default "127.0.0.1:0" (an ephemeral
     * port: read it with saga_transport_tcp_port()). */
    const char *listen;
    /** The peers messages are routed to, by service name = topic. */
    const saga_tcp_peer *peers;
    size_t npeers;
    /** Largest frame accepted or sent; default 4 MiB. A larger send is
     * SAGA_EINVAL. Endpoints may differ: each tells its senders its own
     * limit (the limit answer to HELLO), and a message over the receiving
     * peer's limit fails alone with SAGA_EINVAL, from send() once the
     * limit is known, else from its saga_sent_cb (counted in oversized);
     * the messages behind it keep flowing. Since: 0.1 (per peer since
     * 0.2). */
    uint32_t max_frame_size;
    /** Per peer, unacknowledged bytes and messages before send returns
     * SAGA_EFULL; and per inbound connection, received bytes and messages
     * not yet acked by the application before reading from it pauses.
     * Default 64 MiB and 65536. */
    size_t max_queue_bytes;
    uint32_t max_queue_msgs;
    /** Heartbeat period; default 1000 ms. */
    uint32_t heartbeat_ms;
    /** A connection silent this long is closed (and reconnected if it is
     * ours); default 5000 ms. */
    uint32_t dead_peer_ms;
    /** Reconnect backoff: starts here, doubles, capped; default 50 ms and
     * 5000 ms. */
    uint32_t reconnect_min_ms;
    uint32_t reconnect_max_ms;
    /** Log sink; default: none (errors still reach the counters). */
    /** Log sink (saga.h; saga_id NULL, step -1). Since: 0.1 (saga_log_fn
     * since 0.2). */
    saga_log_fn log;
    void *log_arg;
    /* version 2: memory bounds against hostile or broken peers */
    /** DATA frames for the endpoint's own service name that arrive before
     * anything subscribes to it are kept, up to this many bytes in all;
     * default 16 MiB. Past it, and for any other topic with no subscriber
     * here, the frame is refused (unrouted_frames, logged, and its
     * connection closed unacked, so a legitimate sender sends it again
     * after reconnecting). What a connection left waiting is freed when it
     * closes. Since: 0.2. */
    size_t max_backlog_bytes;
    /** Inbound connections open at once; one more is accepted and closed
     * at once (refused_conns); default 1024. Since: 0.2. */
    uint32_t max_conns;
    /** A frame must arrive whole within this long of its first byte, or
     * its connection is closed (slow_frames); default 30000 ms, checked
     * every heartbeat_ms. Since: 0.2. */
    uint32_t frame_deadline_ms;
    /** Receive buffers of all connections together (the partial frames
     * being read); a connection that would need more is closed
     * (over_budget). Default 128 MiB; at least max_frame_size + 64 KiB.
     * Since: 0.2. */
    size_t max_read_bytes;
    /** Per inbound connection, bytes waiting to be written (ACKs,
     * heartbeats) before the endpoint stops reading from that peer
     * (write_stalls); it reads again once half is written, and a peer
     * that reads nothing for dead_peer_ms is closed. Default 1 MiB.
     * Since: 0.2. */
    size_t max_write_queue_bytes;
} saga_tcp_options;

/** Zero @p opts and set its version. @return SAGA_OK, SAGA_EINVAL or
 * SAGA_EVERSION. Since: 0.1.
 * Ownership: @p opts is the caller's. */
SAGA_EXTERN int saga_tcp_options_init(saga_tcp_options *opts,
                                      unsigned int version);

/**
 * A TCP transport endpoint on @p loop, listening at once. Connections to
 * peers are opened on the first send to them and kept up (reconnecting
 * with backoff) until close.
 *
 * Signals: if SIGPIPE still has its default action (which kills the
 * process when a peer closes while we write), this sets it to SIG_IGN; a
 * disposition the application chose is left alone.
 * @param opts options; NULL for the defaults.
 * @return SAGA_OK, SAGA_EINVAL (bad option, address or name), SAGA_EVERSION,
 * SAGA_ETRANSPORT (cannot listen; e.g. the port is in use) or SAGA_ENOMEM.
 * Ownership: the caller owns *out and closes it with its close slot (or
 * saga_transport_free()). Since: 0.1.
 */
SAGA_EXTERN int saga_transport_tcp_new(saga_transport **out,
                                       struct uv_loop_s *loop,
                                       const saga_tcp_options *opts);

/** The port @p t listens on (useful after listening on port 0).
 * @return SAGA_OK, or SAGA_EINVAL if @p t is not a TCP transport.
 * Ownership: @p port is caller memory. Since: 0.1. */
SAGA_EXTERN int saga_transport_tcp_port(saga_transport *t, int *port);

#define SAGA_TCP_COUNTERS_VERSION 3

/** Counters since the transport was made. */
typedef struct saga_tcp_counters {
    unsigned int version;     /* set by the caller: SAGA_TCP_COUNTERS_VERSION */
    uint64_t frames_in;       /* well-formed frames received */
    uint64_t frames_out;      /* frames written */
    uint64_t rejected_frames; /* bad input: the connection was closed */
    uint64_t reconnects;      /* connection attempts after a lost connection */
    uint64_t resent;          /* DATA frames sent again after a reconnect */
    uint64_t dead_peers;      /* connections closed for silence */
    uint64_t accepted;        /* inbound connections accepted */
    /* version 2 (Since: 0.2) */
    uint64_t unrouted_frames; /* DATA for a topic nobody subscribes to */
    uint64_t refused_conns;   /* inbound connections over max_conns */
    uint64_t slow_frames;     /* closed: a frame not whole in time */
    uint64_t over_budget;     /* closed: receive buffers over budget */
    uint64_t write_stalls;    /* reading stopped: write queue over bound */
    /* version 3 (Since: 0.2) */
    uint64_t oversized; /* sends failed: over the peer's max_frame_size */
} saga_tcp_counters;

/** Copy the counters into @p out (up to out->version). @return SAGA_OK,
 * SAGA_EINVAL (not a TCP transport, or NULL) or SAGA_EVERSION.
 * Ownership: @p out is the caller's. Since: 0.1 (counters renamed and versioned
 *   in 0.2, docs/api/README.md). */
SAGA_EXTERN int saga_transport_tcp_stats(saga_transport *t,
                                         saga_tcp_counters *out);

SAGA_END_DECL

#endif /* SAGA_TCP_H */

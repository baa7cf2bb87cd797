/*
 * sim_world.h — the simulated world's private state, shared by sim.c (the
 * run loop, processes, workload, invariants), sim_net.c (the network behind
 * the transport vtable) and sim_disk.c (the disk behind the store vtable).
 */
#ifndef SAGA_SIM_WORLD_H
#define SAGA_SIM_WORLD_H

#include <stdio.h>

#include "sim.h"

#define NPROC 4 /* orchestrator, stock, payment, shipping */
#define P_ORCH 0
#define P_STOCK 1
#define P_PAY 2
#define P_SHIP 3
#define NSKU 3
#define NACCT 4

typedef struct world world;
typedef struct endpoint endpoint;
typedef struct disk disk;

/* A process: one engine or one participant, restarted after crashes on the
 * same "disk" (its inner memory store keeps only what was committed). */
typedef struct proc {
    int id;
    const char *name; /* also its topic */
    int up;
    int incarnation;
    int64_t partitioned_until;
    saga_store *inner; /* survives crashes */
    disk *dk;          /* this incarnation's disk */
    endpoint *ep;      /* this incarnation's network endpoint */
    saga_engine *e;
    saga_participant *p;
    uint64_t rng; /* the engine's random source, per incarnation */
} proc;

/* A message the broker accepted. */
typedef struct msg {
    uint64_t no;
    int from, to;
    char *topic, *key;
    void *buf;
    size_t len;
    int acked;
    char desc[160]; /* for the trace */
} msg;

struct saga_delivery {
    msg *m;
    endpoint *ep;
    int done; /* acked, or dropped with its endpoint */
};

typedef struct sendrec {
    endpoint *ep;
    saga_sent_cb cb;
    void *arg;
    int done;
} sendrec;

struct endpoint {
    saga_transport base;
    world *w;
    proc *pr;
    int closed;
    int dead; /* its process is crashing: sends vanish */
    struct {
        char topic[32];
        saga_recv_cb cb;
        void *arg;
    } subs[2];
    int nsubs;
    char errmsg[128];
};

struct disk {
    saga_store base;
    world *w;
    proc *pr;
    saga_store *inner;
    int dead;
    char errmsg[128];
};

/* Events of the world, ordered by (at, seq). */
enum ev_kind {
    EV_DELIVER = 1,
    EV_SENT,
    EV_CRASH,
    EV_RESTART,
    EV_PARTITION,
    EV_START,
    EV_CANCEL,
    EV_RETRY,
    EV_HEAL,
    EV_SWEEP
};

typedef struct event {
    int64_t at;
    uint64_t seq;
    int kind;
    int a; /* proc, workload index, duration... */
    int64_t b;
    msg *m;
    sendrec *sr;
    char id[SAGA_ID_SIZE];
} event;

/* A growable array of pointers freed at the end of a run. */
typedef struct ptrvec {
    void **v;
    size_t n, cap;
} ptrvec;

/* What the workload knows about a start it issued. */
typedef struct order {
    char key[32]; /* "" when started without a key */
    int sku, qty, acct, amt;
    int tries;
} order;

typedef struct keyent {
    char key[32];
    char id[SAGA_ID_SIZE];
} keyent;

struct world {
    uint64_t seed, rng;
    uv_loop_t loop;
    uv_timer_t keepalive;
    proc procs[NPROC];
    saga_def *(*make_def)(world *w);

    /* event heap */
    event **heap;
    size_t nheap, cheap;
    uint64_t seq;

    /* network */
    uint64_t msg_no;
    ptrvec msgs, deliveries, sendrecs, endpoints;

    /* fault knobs (per mille), drawn per seed */
    int p_commit_fail, p_crash_after_commit, p_drop, p_dup, p_reject,
        p_lost_ack, p_slow, p_late;
    int faults_on;
    int64_t heal_at, end_at;

    /* workload */
    order *orders;
    int norders;
    char (*ids)[SAGA_ID_SIZE]; /* every id saga_start returned */
    int nids, cids;
    keyent *keys;
    int nkeys, ckeys;
    int64_t timeout_ms, deadline_ms;
    int stock0[NSKU];
    int64_t money0;
    /* saga ids seen by a participant handler (effects to account for) */
    char (*seen)[SAGA_ID_SIZE];
    int nseen, cseen;

    /* trace */
    int print_trace;
    uint64_t hash, nevents;
    char ring[64][200];
    int ring_pos;

    sim_result *res;
    int failed;
    int quiescent; /* final checks: every message was delivered */
};

/* sim.c */
void tracef(world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void violation(world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
event *ev_new(world *w, int64_t at, int kind);
void ptrvec_push(ptrvec *v, void *p);
void proc_crash_soon(world *w, proc *pr);

/* sim_net.c */
int net_endpoint_new(world *w, proc *pr, endpoint **out);
void net_deliver(world *w, event *ev);
void net_sent(world *w, event *ev);
int net_unacked(world *w);
int topic_proc(const char *topic);

/* sim_disk.c */
int disk_new(world *w, proc *pr, disk **out);

#endif

/*
 * sim.c — the deterministic simulation of a saga system (DESIGN §12).
 *
 * From one 64-bit seed the simulator builds a world: an orchestrator engine
 * and three participant services (stock, payment, and a shipping service
 * that often answers late), each a "process" on its own simulated disk
 * (sim_disk.c) and network endpoint (sim_net.c), all on one libuv loop and
 * one virtual clock (sim_clock.c). The seed decides every message delay,
 * drop, duplicate and partition, every commit failure and process crash,
 * and the workload: orders started (some with repeated idempotency keys),
 * cancelled, and FAILED sagas retried by an "operator".
 *
 * The saga is the checkout's shape: reserve stock -> charge payment ->
 * ship (the pivot) -> confirm the reservation (retriable). Business state
 * lives in each participant's store (its kv space), written in the same
 * transaction as its inbox and barrier, so a crash loses exactly what was
 * not committed.
 *
 * Invariants, checked continuously (after every instant of virtual time,
 * and whenever a saga ends) and at quiescence (once every fault has
 * healed and the world has settled):
 *   - stock and money are conserved;
 *   - a saga's journal compensates only steps that ran or may have run,
 *     in reverse order, and every one of them when it ends COMPENSATED;
 *   - each participant's effects match the saga's end: all of them for a
 *     COMPLETED saga, none left for a COMPENSATED one; no effect applied
 *     twice; no action applied after its compensation;
 *   - one saga per idempotency key;
 *   - at quiescence every saga is terminal (COMPLETED or COMPENSATED),
 *     every process is up and every message was acked.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim_world.h"

#define T0 1700000000000LL

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

void ptrvec_push(ptrvec *v, void *p)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->v = realloc(v->v, v->cap * sizeof *v->v);
        if (v->v == NULL)
            abort();
    }
    v->v[v->n++] = p;
}

static void ptrvec_free(ptrvec *v, void (*fn)(void *))
{
    for (size_t i = 0; i < v->n; i++)
        fn(v->v[i]);
    free(v->v);
    memset(v, 0, sizeof *v);
}

void tracef(world *w, const char *fmt, ...)
{
    char body[180];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    char *line = w->ring[w->ring_pos];
    w->ring_pos = (w->ring_pos + 1) % 64;
    snprintf(line, sizeof w->ring[0], "%8lld %s", (long long)(sim_now_ms - T0),
             body);
    for (const unsigned char *p = (const unsigned char *)line; *p; p++)
        w->hash = (w->hash ^ *p) * 1099511628211ull;
    w->hash = (w->hash ^ '\n') * 1099511628211ull;
    w->nevents++;
    if (w->print_trace)
        printf("%s\n", line);
}

void violation(world *w, const char *fmt, ...)
{
    if (w->failed)
        return;
    w->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->res->violation, sizeof w->res->violation, fmt, ap);
    va_end(ap);
    tracef(w, "VIOLATION %s", w->res->violation);
}

/* ---- the event heap ------------------------------------------------------ */

static int ev_less(const event *a, const event *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

event *ev_new(world *w, int64_t at, int kind)
{
    event *ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        abort();
    ev->at = at;
    ev->seq = ++w->seq;
    ev->kind = kind;
    if (w->nheap == w->cheap) {
        w->cheap = w->cheap ? w->cheap * 2 : 256;
        w->heap = realloc(w->heap, w->cheap * sizeof *w->heap);
        if (w->heap == NULL)
            abort();
    }
    size_t i = w->nheap++;
    w->heap[i] = ev;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(w->heap[i], w->heap[p]))
            break;
        event *t = w->heap[p];
        w->heap[p] = w->heap[i];
        w->heap[i] = t;
        i = p;
    }
    return ev;
}

static event *ev_pop(world *w)
{
    event *top = w->heap[0];
    w->heap[0] = w->heap[--w->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->nheap && ev_less(w->heap[l], w->heap[m]))
            m = l;
        if (r < w->nheap && ev_less(w->heap[r], w->heap[m]))
            m = r;
        if (m == i)
            break;
        event *t = w->heap[m];
        w->heap[m] = w->heap[i];
        w->heap[i] = t;
        i = m;
    }
    return top;
}

/* ------------------------------------------------------------------------ */
/* Business state: kv values in the participants' stores                    */

typedef struct kvbuf {
    char s[64];
    int found;
} kvbuf;

static void kv_cb(const void *buf, size_t len, void *arg)
{
    kvbuf *b = arg;
    b->found = 1;
    if (len >= sizeof b->s)
        len = sizeof b->s - 1;
    memcpy(b->s, buf, len);
    b->s[len] = '\0';
}

static int kv_read(saga_store *s, const char *key, kvbuf *b)
{
    memset(b, 0, sizeof *b);
    int rc = s->kv_get(s, key, kv_cb, b);
    return rc == SAGA_ENOTFOUND ? SAGA_OK : rc;
}

static int kv_int(saga_store *s, const char *key, int64_t *v)
{
    kvbuf b;
    int rc = kv_read(s, key, &b);
    *v = b.found ? strtoll(b.s, NULL, 10) : 0;
    return rc;
}

static int kv_put_int(saga_store *s, const char *key, int64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    return s->kv_put(s, key, buf, (size_t)n);
}

static int kv_add(saga_store *s, const char *key, int64_t d)
{
    int64_t v;
    int rc = kv_int(s, key, &v);
    return rc ? rc : kv_put_int(s, key, v + d);
}

static void note_seen(world *w, const char *id)
{
    for (int i = 0; i < w->nseen; i++)
        if (strcmp(w->seen[i], id) == 0)
            return;
    if (w->nseen == w->cseen) {
        w->cseen = w->cseen ? w->cseen * 2 : 64;
        w->seen = realloc(w->seen, (size_t)w->cseen * sizeof *w->seen);
    }
    snprintf(w->seen[w->nseen++], SAGA_ID_SIZE, "%s", id);
}

/* Moves @p n from "<from>/<i>" to "<to>/<i>" (to = NULL: to the key
 * "merchant"), in the open transaction. */
static int kv_move(saga_store *s, const char *from, const char *to, int i,
                   int64_t n)
{
    char k[32];
    snprintf(k, sizeof k, "%s/%d", from, i);
    int rc = kv_add(s, k, -n);
    if (rc)
        return rc;
    if (to == NULL)
        return kv_add(s, "merchant", n);
    snprintf(k, sizeof k, "%s/%d", to, i);
    return kv_add(s, k, n);
}

/* A service's ledger entry for one saga, e/<saga>: "<mark> a b". */
typedef struct entry {
    char key[64];
    kvbuf e;
    int a, b; /* the two numbers of the entry, once parsed */
} entry;

static int ledger_read(world *w, saga_participant *p, const saga_command *c,
                       entry *l)
{
    note_seen(w, c->saga_id);
    snprintf(l->key, sizeof l->key, "e/%s", c->saga_id);
    l->a = l->b = 0;
    return kv_read(saga_participant_store(p), l->key, &l->e);
}

/* Whether the entry exists with @p mark; a violation named @p what if not. */
static int ledger_is(world *w, const saga_command *c, entry *l, char mark,
                     const char *what)
{
    if (!l->e.found || l->e.s[0] != mark) {
        violation(w, "effects: %s of saga %s whose entry is '%s'", what,
                  c->saga_id, l->e.found ? l->e.s : "absent");
        return 0;
    }
    sscanf(l->e.s + 2, "%d %d", &l->a, &l->b);
    return 1;
}

/* An action found its entry already there: applied twice, or after its
 * compensation (@p undone is the compensation's mark). */
static void ledger_twice(world *w, const saga_command *c, const entry *l,
                         const char *what, char undone)
{
    violation(w, "effects: %s twice for saga %s (ledger '%s')%s", what,
              c->saga_id, l->e.s,
              l->e.s[0] == undone ? ": a hanging action applied after its "
                                    "compensation"
                                  : "");
}

static int ledger_put(saga_store *s, entry *l, char mark, int a, int b)
{
    char v[32];
    int n = snprintf(v, sizeof v, "%c %d %d", mark, a, b);
    return s->kv_put(s, l->key, v, (size_t)n);
}

static int64_t data_int(const saga_command *c, const char *key)
{
    int64_t v = -1;
    saga_data_get_int(c->payload, c->payload_len, key, &v);
    return v;
}

/* The stock service: reserve / release, and confirm after the pivot.
 * stock/<sku> + held/<sku> + sold/<sku> is constant. e/<saga> is the
 * reservation: "R sku qty" reserved, "X ..." released, "S ..." sold. */
static int stock_cmd(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    world *w = arg;
    saga_store *s = saga_participant_store(p);
    entry l;
    int rc = ledger_read(w, p, c, &l);
    if (rc)
        return rc;
    int sku = (int)data_int(c, "sku"), qty = (int)data_int(c, "qty");
    if (sku < 0 || sku >= NSKU || qty <= 0)
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "bad order");
    if (strcmp(c->name, "reserve") == 0 && !c->compensating) {
        if (l.e.found) {
            ledger_twice(w, c, &l, "stock reserved", 'X');
            return SAGA_OK;
        }
        char k[32];
        int64_t have;
        snprintf(k, sizeof k, "stock/%d", sku);
        if ((rc = kv_int(s, k, &have)))
            return rc;
        if (have < qty)
            return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                                  "out of stock");
        rc = kv_move(s, "stock", "held", sku, qty);
        return rc ? rc : ledger_put(s, &l, 'R', sku, qty);
    }
    int release = strcmp(c->name, "reserve") == 0;
    if (!ledger_is(w, c, &l, 'R', release ? "release" : "confirm"))
        return SAGA_OK;
    if (release)
        rc = kv_move(s, "held", "stock", l.a, l.b);
    else
        rc = kv_move(s, "held", "sold", l.a, l.b);
    return rc ? rc : ledger_put(s, &l, release ? 'X' : 'S', l.a, l.b);
}

/* The payment service: charge / refund. bal/<acct> + merchant is
 * constant. e/<saga>: "C acct amt" charged, "F ..." refunded. */
static int pay_cmd(saga_participant *p, const saga_command *c, saga_reply *r,
                   void *arg)
{
    world *w = arg;
    saga_store *s = saga_participant_store(p);
    entry l;
    int rc = ledger_read(w, p, c, &l);
    if (rc)
        return rc;
    int acct = (int)data_int(c, "acct"), amt = (int)data_int(c, "amt");
    if (acct < 0 || acct >= NACCT || amt <= 0)
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "bad order");
    if (!c->compensating) {
        if (l.e.found) {
            ledger_twice(w, c, &l, "payment charged", 'F');
            return SAGA_OK;
        }
        char k[32];
        int64_t bal;
        snprintf(k, sizeof k, "bal/%d", acct);
        if ((rc = kv_int(s, k, &bal)))
            return rc;
        if (bal < amt)
            return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                                  "insufficient funds");
        rc = kv_move(s, "bal", NULL, acct, amt);
        return rc ? rc : ledger_put(s, &l, 'C', acct, amt);
    }
    if (!ledger_is(w, c, &l, 'C', "refund"))
        return SAGA_OK;
    rc = kv_move(s, "bal", NULL, l.a, -l.b);
    return rc ? rc : ledger_put(s, &l, 'F', l.a, l.b);
}

/* The shipping service (the pivot; it often answers late): refuses some
 * orders, is sometimes busy. e/<saga> = "S" once shipped. */
static int ship_cmd(saga_participant *p, const saga_command *c, saga_reply *r,
                    void *arg)
{
    world *w = arg;
    saga_store *s = saga_participant_store(p);
    entry l;
    int rc = ledger_read(w, p, c, &l);
    if (rc)
        return rc;
    if (l.e.found) {
        violation(w, "effects: saga %s shipped twice", c->saga_id);
        return SAGA_OK;
    }
    if (sim_chance(&w->rng, 120))
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                              "address rejected");
    if (sim_chance(&w->rng, 60))
        return saga_reply_set(r, SAGA_OUTCOME_RETRY, NULL, 0, "carrier busy");
    /* Choreography: the stock service hears of it by an event, in the
     * same transaction (outbox), deduplicated by its inbox. */
    rc = saga_participant_publish(p, "notify", c->saga_id, "shipped", "\x80",
                                  1);
    return rc ? rc : s->kv_put(s, l.key, "S", 1);
}

/* The stock service counts shipment notices: exactly one per shipment. */
static int shipped_ev(saga_participant *p, const saga_command *ev, void *arg)
{
    world *w = arg;
    saga_store *s = saga_participant_store(p);
    char k[64];
    snprintf(k, sizeof k, "n/%s", ev->saga_id);
    int64_t n;
    int rc = kv_int(s, k, &n);
    if (rc)
        return rc;
    if (n > 0)
        violation(w,
                  "effects: the shipment of saga %.32s was notified "
                  "twice (an event handled twice)",
                  ev->saga_id);
    return kv_put_int(s, k, n + 1);
}

/* ------------------------------------------------------------------------ */
/* The definition                                                           */

static saga_def *make_def(world *w)
{
    saga_def *d;
    if (saga_def_new(&d, "order", 1) != SAGA_OK)
        abort();
    saga_step_options o;
    saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    o.timeout_ms = (uint32_t)w->timeout_ms;
    o.service = "stock";
    o.command = o.comp_command = "reserve";
    saga_def_add_step(d, "reserve", NULL, NULL, &o, NULL);
    o.service = "payment";
    o.command = o.comp_command = "charge";
    saga_def_add_step(d, "charge", NULL, NULL, &o, NULL);
    o.kind = SAGA_STEP_PIVOT;
    o.service = "shipping";
    o.command = "ship";
    o.comp_command = NULL;
    saga_def_add_step(d, "ship", NULL, NULL, &o, NULL);
    o.kind = SAGA_STEP_RETRIABLE;
    o.service = "stock";
    o.command = "confirm";
    saga_def_add_step(d, "confirm", NULL, NULL, &o, NULL);
    if (w->deadline_ms)
        saga_def_set_deadline(d, (uint64_t)w->deadline_ms);
    if (saga_def_validate(d) != SAGA_OK) {
        fprintf(stderr, "sim: bad definition: %s\n", saga_def_errmsg(d));
        abort();
    }
    return d;
}

#define NSTEPS 4
static const int compensatable[NSTEPS] = {1, 1, 0, 0};

/* ------------------------------------------------------------------------ */
/* Checking one saga: its journal, and the participants' effects            */

typedef struct jctx {
    saga_journal_kind ev[256];
    int step[256];
    char err[256][24];
    int n;
} jctx;

static int journal_cb(const saga_journal_entry *j, void *arg)
{
    jctx *c = arg;
    if (c->n < 256) {
        c->ev[c->n] = j->kind;
        c->step[c->n] = j->step;
        snprintf(c->err[c->n], sizeof c->err[0], "%s",
                 j->error ? j->error : "");
        c->n++;
    }
    return 0;
}

static char ledger(world *w, int pi, const char *id)
{
    char ek[64];
    snprintf(ek, sizeof ek, "e/%s", id);
    kvbuf b;
    if (kv_read(w->procs[pi].inner, ek, &b) != SAGA_OK || !b.found)
        return 0;
    return b.s[0];
}

static void check_saga(world *w, const char *id, saga_state st)
{
    saga_store *os = w->procs[P_ORCH].inner;
    jctx *c = calloc(1, sizeof *c);
    os->journal_scan(os, id, journal_cb, c);
    int ok[NSTEPS] = {0}, timeout[NSTEPS] = {0}, comped[NSTEPS] = {0};
    int cur = 0, comp_phase = 0, maybe_step = -1, last_comp = INT_MAX;
    char pre[48];
    snprintf(pre, sizeof pre, "saga %.32s", id);
    for (int i = 0; i < c->n && !w->failed; i++) {
        int s = c->step[i];
        if (s >= NSTEPS) {
            violation(w, "journal: %s has an event for step %d", pre, s);
            break;
        }
        switch (c->ev[i]) {
        case SAGA_JOURNAL_STEP_OK:
            if (comp_phase)
                violation(w,
                          "journal: %s ran step %d forward while "
                          "compensating",
                          pre, s);
            ok[s] = 1;
            cur = s + 1;
            break;
        case SAGA_JOURNAL_STEP_TIMEOUT:
            timeout[s] = 1;
            cur = s;
            break;
        case SAGA_JOURNAL_STEP_FAIL:
        case SAGA_JOURNAL_STEP_RETRY:
            cur = s;
            break;
        case SAGA_JOURNAL_COMPENSATING:
            comp_phase = 1;
            if (strncmp(c->err[i], "cancelled", 9) == 0 ||
                strncmp(c->err[i], "saga deadline", 13) == 0)
                maybe_step = cur;
            break;
        case SAGA_JOURNAL_COMP_OK:
        case SAGA_JOURNAL_COMP_FAIL:
        case SAGA_JOURNAL_COMP_TIMEOUT:
            if (!ok[s] && !timeout[s] && s != maybe_step)
                violation(w,
                          "journal: %s compensated step %d, whose action "
                          "never ran (no STEP_OK or timeout, not in flight "
                          "at a cancel)",
                          pre, s);
            else if (s > last_comp || (s == last_comp && comped[s]))
                violation(w,
                          "journal: %s compensations out of order "
                          "(step %d after step %d)",
                          pre, s, last_comp);
            last_comp = s;
            if (c->ev[i] == SAGA_JOURNAL_COMP_OK)
                comped[s] = 1;
            break;
        default:
            break;
        }
    }
    saga_journal_kind last = c->n ? c->ev[c->n - 1] : 0;
    if (!w->failed) {
        if (st == SAGA_STATE_COMPLETED) {
            for (int s = 0; s < NSTEPS; s++)
                if (!ok[s])
                    violation(w,
                              "journal: %s COMPLETED without STEP_OK of "
                              "step %d",
                              pre, s);
            if (comp_phase)
                violation(w, "journal: %s COMPLETED after compensating", pre);
            if (last != SAGA_JOURNAL_COMPLETED)
                violation(w,
                          "journal: %s COMPLETED but its journal ends "
                          "with %s",
                          pre, saga_journal_kind_name(last));
        } else if (st == SAGA_STATE_COMPENSATED) {
            for (int s = 0; s < NSTEPS; s++)
                if (compensatable[s] && (ok[s] || timeout[s]) && !comped[s])
                    violation(w,
                              "journal: %s COMPENSATED without "
                              "compensating step %d, which %s",
                              pre, s, ok[s] ? "completed" : "may have run");
            if (last != SAGA_JOURNAL_COMPENSATED)
                violation(w,
                          "journal: %s COMPENSATED but its journal ends "
                          "with %s",
                          pre, saga_journal_kind_name(last));
        }
    }
    free(c);
    if (w->failed)
        return;
    char sk = ledger(w, P_STOCK, id), pk = ledger(w, P_PAY, id),
         hk = ledger(w, P_SHIP, id);
    if (w->quiescent) {
        char k[64];
        int64_t n;
        snprintf(k, sizeof k, "n/%s", id);
        kv_int(w->procs[P_STOCK].inner, k, &n);
        if (n != (hk == 'S'))
            violation(w,
                      "effects: saga %.32s shipped '%c' but notified "
                      "%lld times",
                      id, hk ? hk : '-', (long long)n);
    }
    if (st == SAGA_STATE_COMPLETED && (sk != 'S' || pk != 'C' || hk != 'S'))
        violation(w,
                  "effects: %s COMPLETED but stock '%c' payment '%c' "
                  "shipping '%c' (want S C S)",
                  pre, sk ? sk : '-', pk ? pk : '-', hk ? hk : '-');
    if (st == SAGA_STATE_COMPENSATED &&
        ((sk && sk != 'X') || (pk && pk != 'F') || hk))
        violation(w,
                  "effects: %s COMPENSATED but stock '%c' payment '%c' "
                  "shipping '%c' remain (want nothing, or X F -)",
                  pre, sk ? sk : '-', pk ? pk : '-', hk ? hk : '-');
}

static void check_conservation(world *w)
{
    saga_store *ss = w->procs[P_STOCK].inner, *ps = w->procs[P_PAY].inner;
    char k[32];
    for (int i = 0; i < NSKU; i++) {
        int64_t a, b, c;
        snprintf(k, sizeof k, "stock/%d", i);
        kv_int(ss, k, &a);
        snprintf(k, sizeof k, "held/%d", i);
        kv_int(ss, k, &b);
        snprintf(k, sizeof k, "sold/%d", i);
        kv_int(ss, k, &c);
        if (a < 0 || b < 0 || a + b + c != w->stock0[i])
            violation(w,
                      "conservation: sku %d has stock %lld held %lld sold "
                      "%lld, started with %d",
                      i, (long long)a, (long long)b, (long long)c,
                      w->stock0[i]);
    }
    int64_t sum = 0, v;
    for (int i = 0; i < NACCT; i++) {
        snprintf(k, sizeof k, "bal/%d", i);
        kv_int(ps, k, &v);
        if (v < 0)
            violation(w, "conservation: account %d is at %lld", i,
                      (long long)v);
        sum += v;
    }
    kv_int(ps, "merchant", &v);
    if (sum + v != w->money0)
        violation(w, "conservation: money %lld, started with %lld",
                  (long long)(sum + v), (long long)w->money0);
}

/* ------------------------------------------------------------------------ */
/* Processes                                                                */

static int64_t sim_clock(void *arg)
{
    (void)arg;
    return sim_now_ms;
}

static uint64_t proc_random(void *arg) { return sim_split(arg); }

static void quiet_log(saga_log_level l, const char *id, int step,
                      const char *text, void *arg)
{
    (void)l, (void)id, (void)step, (void)text, (void)arg;
}

static void on_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e;
    world *w = arg;
    tracef(w, "done %.32s %s", id, saga_state_name(st));
    if (st == SAGA_STATE_FAILED) {
        event *ev = ev_new(w, sim_now_ms + sim_range(&w->rng, 300, 3000),
                           EV_RETRY);
        snprintf(ev->id, sizeof ev->id, "%s", id);
    }
    check_saga(w, id, st);
}

static void start_cb(saga_engine *e, int status, const char *id, int existed,
                     void *arg);

static void proc_up(world *w, proc *pr)
{
    pr->incarnation++;
    pr->up = 1;
    if (disk_new(w, pr, &pr->dk) != SAGA_OK ||
        net_endpoint_new(w, pr, &pr->ep) != SAGA_OK)
        abort();
    tracef(w, "up %s #%d", pr->name, pr->incarnation);
    int rc;
    if (pr->id == P_ORCH) {
        saga_engine_options o;
        saga_engine_options_init(&o, SAGA_ENGINE_OPTIONS_VERSION);
        o.loop = &w->loop;
        o.clock = sim_clock;
        pr->rng = sim_split(&w->rng);
        o.random = proc_random;
        o.random_arg = &pr->rng;
        o.seed = 1;
        o.log = quiet_log;
        o.log_level = SAGA_LOG_ERROR;
        o.on_done = on_done;
        o.on_done_arg = w;
        o.housekeeping_interval_ms = 7ull * 24 * 3600 * 1000;
        o.max_active = sim_max_active;
        rc = saga_engine_new(&pr->e, &pr->dk->base, &pr->ep->base, &o);
        if (rc == SAGA_OK)
            rc = saga_engine_register(pr->e, make_def(w));
        if (rc == SAGA_OK)
            rc = saga_engine_start(pr->e);
        /* A crash right after a commit made by start itself (the
         * definitions' shapes) fails the start: the process is down, and
         * its crash event restarts it. */
        if (rc != SAGA_OK && !pr->dk->dead)
            violation(w, "liveness: the orchestrator cannot start: %s (%s)",
                      saga_err_name(rc), saga_engine_errmsg(pr->e));
        return;
    }
    saga_participant_options o;
    memset(&o, 0, sizeof o);
    o.version = SAGA_PARTICIPANT_OPTIONS_VERSION;
    o.service = pr->name;
    o.clock = sim_clock;
    o.log = quiet_log;
    o.log_level = SAGA_LOG_ERROR;
    rc = saga_participant_new(&pr->p, &w->loop, &pr->dk->base, &pr->ep->base,
                              &o);
    if (rc == SAGA_OK) {
        if (pr->id == P_STOCK) {
            saga_participant_on_command(pr->p, "reserve", stock_cmd, w);
            saga_participant_on_command(pr->p, "confirm", stock_cmd, w);
            saga_participant_on_event(pr->p, "notify", NULL, "shipped",
                                      shipped_ev, w);
        } else if (pr->id == P_PAY) {
            saga_participant_on_command(pr->p, "charge", pay_cmd, w);
        } else {
            saga_participant_on_command(pr->p, "ship", ship_cmd, w);
        }
        rc = saga_participant_start(pr->p);
    }
    if (rc != SAGA_OK && !pr->dk->dead)
        violation(w, "liveness: %s cannot start: %s", pr->name,
                  saga_err_name(rc));
}

static void reissue_unconfirmed(world *w, int64_t at);

static void proc_crash(world *w, proc *pr)
{
    if (!pr->up)
        return;
    tracef(w, "crash %s #%d", pr->name, pr->incarnation);
    w->res->crashes++;
    pr->dk->dead = 1;
    pr->ep->dead = 1;
    pr->up = 0;
    if (pr->e)
        saga_engine_close(pr->e, NULL, NULL);
    if (pr->p)
        saga_participant_close(pr->p, NULL, NULL);
    pr->e = NULL;
    pr->p = NULL;
    pr->dk = NULL;
    pr->ep = NULL;
    int64_t back = sim_now_ms + sim_range(&w->rng, 100, 3000);
    ev_new(w, back, EV_RESTART)->a = pr->id;
    if (pr->id == P_ORCH)
        reissue_unconfirmed(w, back + 100);
}

void proc_crash_soon(world *w, proc *pr)
{
    /* The commit is on disk; the process dies before it acts on it. */
    pr->dk->dead = 1;
    pr->ep->dead = 1;
    ev_new(w, sim_now_ms, EV_CRASH)->a = pr->id;
}

/* ------------------------------------------------------------------------ */
/* Workload                                                                 */

typedef struct startarg {
    world *w;
    int order;
} startarg;

static void start_cb(saga_engine *e, int status, const char *id, int existed,
                     void *arg)
{
    (void)e;
    startarg *sa = arg;
    world *w = sa->w;
    order *o = &w->orders[sa->order];
    free(sa);
    tracef(w, "started o%d %.32s %s%s", (int)(o - w->orders), id,
           saga_err_name(status), existed ? " (existed)" : "");
    if (status != SAGA_OK)
        return;
    o->tries = -1; /* confirmed */
    if (!o->key[0])
        return;
    for (int i = 0; i < w->nkeys; i++) {
        if (strcmp(w->keys[i].key, o->key) != 0)
            continue;
        if (strcmp(w->keys[i].id, id) != 0)
            violation(w,
                      "idempotency: key %s gave saga %.32s, and earlier "
                      "%.32s",
                      o->key, id, w->keys[i].id);
        return;
    }
    if (w->nkeys == w->ckeys) {
        w->ckeys = w->ckeys ? w->ckeys * 2 : 32;
        w->keys = realloc(w->keys, (size_t)w->ckeys * sizeof *w->keys);
    }
    keyent *k = &w->keys[w->nkeys++];
    snprintf(k->key, sizeof k->key, "%s", o->key);
    snprintf(k->id, sizeof k->id, "%s", id);
}

static void do_start(world *w, int idx)
{
    order *o = &w->orders[idx];
    proc *pr = &w->procs[P_ORCH];
    if (o->tries < 0)
        return;
    if (!pr->up) {
        if (++o->tries < 30)
            ev_new(w, sim_now_ms + sim_range(&w->rng, 300, 2000), EV_START)
                ->a = idx;
        return;
    }
    saga_map *m;
    saga_map_new(&m);
    saga_map_set_int(m, "sku", o->sku);
    saga_map_set_int(m, "qty", o->qty);
    saga_map_set_int(m, "acct", o->acct);
    saga_map_set_int(m, "amt", o->amt);
    const void *data;
    size_t len;
    saga_map_encode(m, &data, &len);
    char id[SAGA_ID_SIZE];
    startarg *sa = malloc(sizeof *sa);
    sa->w = w;
    sa->order = idx;
    saga_engine_counters before = SAGA_ENGINE_COUNTERS_INIT, after = before;
    saga_engine_stats(pr->e, &before);
    int rc = saga_start(pr->e, "order", o->key[0] ? o->key : NULL, data, len,
                        id, start_cb, sa);
    saga_map_free(m);
    saga_engine_stats(pr->e, &after);
    /* Admission (--max-active): refused only at the limit; a start that
     * added a saga found room for it. */
    if (rc == SAGA_EFULL &&
        (sim_max_active == 0 || before.active < sim_max_active))
        violation(w,
                  "admission: start refused with %" PRIu64 " active, "
                  "limit %zu",
                  before.active, sim_max_active);
    if (rc == SAGA_OK && sim_max_active > 0 && after.active > before.active &&
        before.active >= sim_max_active)
        violation(w,
                  "admission: a new saga started with %" PRIu64
                  " active, limit %zu",
                  before.active, sim_max_active);
    if (rc != SAGA_OK) {
        free(sa);
        tracef(w, "start o%d key=%s: %s", idx, o->key, saga_err_name(rc));
        if (++o->tries < 30)
            ev_new(w, sim_now_ms + sim_range(&w->rng, 300, 2000), EV_START)
                ->a = idx;
        return;
    }
    tracef(w, "start o%d key=%s -> %.32s", idx, o->key[0] ? o->key : "-", id);
    if (w->nids == w->cids) {
        w->cids = w->cids ? w->cids * 2 : 64;
        w->ids = realloc(w->ids, (size_t)w->cids * sizeof *w->ids);
    }
    snprintf(w->ids[w->nids++], SAGA_ID_SIZE, "%s", id);
}

/* The orchestrator died: a client whose keyed start was never confirmed
 * asks again (the key makes that safe). */
static void reissue_unconfirmed(world *w, int64_t at)
{
    for (int i = 0; i < w->norders; i++)
        if (w->orders[i].key[0] && w->orders[i].tries >= 0 &&
            w->orders[i].tries < 30) {
            w->orders[i].tries++;
            ev_new(w, at + sim_range(&w->rng, 0, 1000), EV_START)->a = i;
        }
}

static void do_cancel(world *w)
{
    proc *pr = &w->procs[P_ORCH];
    if (!pr->up || w->nids == 0)
        return;
    const char *id = w->ids[sim_range(&w->rng, 0, w->nids - 1)];
    int rc = saga_cancel(pr->e, id, "operator");
    tracef(w, "cancel %.32s: %s", id, saga_err_name(rc));
}

static void do_retry(world *w, const char *id)
{
    proc *pr = &w->procs[P_ORCH];
    if (!pr->up) {
        event *ev = ev_new(w, sim_now_ms + 1000, EV_RETRY);
        snprintf(ev->id, sizeof ev->id, "%s", id);
        return;
    }
    int rc = saga_retry(pr->e, id);
    tracef(w, "operator retry %.32s: %s", id, saga_err_name(rc));
}

static void build_world(world *w)
{
    uint64_t *r = &w->rng;
    w->p_commit_fail = (int)sim_range(r, 0, 40);
    w->p_crash_after_commit = (int)sim_range(r, 0, 6);
    w->p_drop = (int)sim_range(r, 0, 60);
    w->p_dup = (int)sim_range(r, 0, 60);
    w->p_reject = (int)sim_range(r, 0, 30);
    w->p_lost_ack = (int)sim_range(r, 0, 30);
    w->p_slow = (int)sim_range(r, 0, 80);
    w->p_late = (int)sim_range(r, 100, 400);
    w->timeout_ms = sim_range(r, 300, 1500);
    w->deadline_ms = sim_chance(r, 500) ? sim_range(r, 1500, 8000) : 0;
    w->faults_on = 1;
    int64_t window = sim_range(r, 5000, 20000);
    w->heal_at = T0 + window + 5000;
    w->end_at = w->heal_at + 20 * 60 * 1000;
    tracef(w,
           "world seed=%llu commit_fail=%d crash_after_commit=%d drop=%d "
           "dup=%d reject=%d lost_ack=%d slow=%d late=%d timeout=%lld "
           "deadline=%lld",
           (unsigned long long)w->seed, w->p_commit_fail,
           w->p_crash_after_commit, w->p_drop, w->p_dup, w->p_reject,
           w->p_lost_ack, w->p_slow, w->p_late, (long long)w->timeout_ms,
           (long long)w->deadline_ms);

    static const char *const names[NPROC] = {"orchestrator", "stock", "payment",
                                             "shipping"};
    for (int i = 0; i < NPROC; i++) {
        proc *pr = &w->procs[i];
        pr->id = i;
        pr->name = names[i];
        if (saga_store_memory_new(&pr->inner) != SAGA_OK)
            abort();
    }
    /* Initial business state, committed. */
    saga_store *ss = w->procs[P_STOCK].inner, *ps = w->procs[P_PAY].inner;
    char k[32];
    ss->begin(ss);
    for (int i = 0; i < NSKU; i++) {
        w->stock0[i] = (int)sim_range(r, 1, 8);
        snprintf(k, sizeof k, "stock/%d", i);
        kv_put_int(ss, k, w->stock0[i]);
    }
    ss->commit(ss);
    ps->begin(ps);
    w->money0 = 0;
    for (int i = 0; i < NACCT; i++) {
        int64_t b = sim_range(r, 20, 200);
        w->money0 += b;
        snprintf(k, sizeof k, "bal/%d", i);
        kv_put_int(ps, k, b);
    }
    ps->commit(ps);

    for (int i = 0; i < NPROC; i++)
        proc_up(w, &w->procs[i]);

    /* Orders: some share a key (a client retrying the same order). */
    w->norders = (int)sim_range(r, 8, 30);
    w->orders = calloc((size_t)w->norders, sizeof *w->orders);
    int nkeys = w->norders / 2 + 1;
    for (int i = 0; i < w->norders; i++) {
        order *o = &w->orders[i];
        int kn = (int)sim_range(r, 0, nkeys - 1);
        if (sim_chance(r, 750))
            snprintf(o->key, sizeof o->key, "order-%d", kn);
        else
            kn = 1000 + i;
        uint64_t ks = w->seed ^ (uint64_t)kn * 0x9e3779b97f4a7c15ull;
        o->sku = (int)sim_range(&ks, 0, NSKU - 1);
        o->qty = (int)sim_range(&ks, 1, 3);
        o->acct = (int)sim_range(&ks, 0, NACCT - 1);
        o->amt = (int)sim_range(&ks, 5, 80);
        ev_new(w, T0 + sim_range(r, 0, window), EV_START)->a = i;
    }
    int ncancel = (int)sim_range(r, 0, w->norders / 3);
    for (int i = 0; i < ncancel; i++)
        ev_new(w, T0 + sim_range(r, 0, window), EV_CANCEL);
    for (int i = 0; i < NPROC; i++) {
        int n = (int)sim_range(r, 0, 2);
        for (int j = 0; j < n; j++)
            ev_new(w, T0 + sim_range(r, 50, window), EV_CRASH)->a = i;
        n = (int)sim_range(r, 0, 2);
        for (int j = 0; j < n; j++) {
            event *ev = ev_new(w, T0 + sim_range(r, 50, window), EV_PARTITION);
            ev->a = i;
            ev->b = sim_range(r, 100, 4000);
        }
    }
    ev_new(w, w->heal_at, EV_HEAL);
}

/* ------------------------------------------------------------------------ */
/* The run loop                                                             */

typedef struct walkctx {
    int immediate;
    int64_t next;
    uv_handle_t *keepalive;
} walkctx;

static void walk_cb(uv_handle_t *h, void *arg)
{
    walkctx *c = arg;
    if (uv_is_closing(h)) {
        c->immediate = 1;
        return;
    }
    if (!uv_is_active(h))
        return;
    if (h->type == UV_IDLE) {
        c->immediate = 1;
    } else if (h->type == UV_TIMER) {
        uint64_t due = uv_timer_get_due_in((uv_timer_t *)h);
        int64_t at = (int64_t)uv_now(h->loop) + (int64_t)due;
        if (h == c->keepalive)
            return;
        if (at <= sim_now_ms)
            c->immediate = 1;
        else if (at < c->next)
            c->next = at;
    }
}

/* Run loop turns until nothing is left for this instant; returns the time
 * of the next uv timer (INT64_MAX if none). */
static int64_t settle(world *w)
{
    for (int i = 0;; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        walkctx c = {0, INT64_MAX, (uv_handle_t *)&w->keepalive};
        uv_walk(&w->loop, walk_cb, &c);
        if (!c.immediate)
            return c.next;
        if (i > 100000) {
            violation(w, "liveness: the loop never settles (busy at one "
                         "instant)");
            return INT64_MAX;
        }
    }
}

typedef struct scanctx {
    world *w;
    int active, failed, total;
    char (*keys)[SAGA_NAME_MAX + 1];
    int nkeys;
    int check; /* check each saga */
} scanctx;

static int scan_cb(const saga_record *r, void *arg)
{
    scanctx *c = arg;
    c->total++;
    if (r->state == SAGA_STATE_RUNNING || r->state == SAGA_STATE_COMPENSATING)
        c->active++;
    if (r->state == SAGA_STATE_FAILED)
        c->failed++;
    if (!c->check)
        return 0;
    if (r->state == SAGA_STATE_COMPLETED)
        c->w->res->completed++;
    if (r->state == SAGA_STATE_COMPENSATED)
        c->w->res->compensated++;
    if (r->idem_key) {
        for (int i = 0; i < c->nkeys; i++)
            if (strcmp(c->keys[i], r->idem_key) == 0)
                violation(c->w, "idempotency: two sagas with key %s",
                          r->idem_key);
        c->keys = realloc(c->keys, (size_t)(c->nkeys + 1) * sizeof *c->keys);
        snprintf(c->keys[c->nkeys++], SAGA_NAME_MAX + 1, "%s", r->idem_key);
    }
    check_saga(c->w, r->id, r->state);
    return c->w->failed;
}

static int settled(world *w)
{
    for (int i = 0; i < NPROC; i++)
        if (!w->procs[i].up)
            return 0;
    if (net_unacked(w) > 0)
        return 0;
    saga_store *os = w->procs[P_ORCH].inner;
    scanctx c = {w, 0, 0, 0, NULL, 0, 0};
    os->saga_scan(os, SAGA_STATE_MASK_ALL, scan_cb, &c);
    return c.active == 0 && c.failed == 0;
}

static int exists_cb(const saga_record *r, void *arg)
{
    *(saga_state *)arg = r->state;
    return 0;
}

static void final_checks(world *w)
{
    w->quiescent = 1;
    saga_store *os = w->procs[P_ORCH].inner;
    scanctx c = {w, 0, 0, 0, NULL, 0, 1};
    os->saga_scan(os, SAGA_STATE_MASK_ALL, scan_cb, &c);
    free(c.keys);
    w->res->sagas = c.total;
    if (c.active || c.failed)
        violation(w, "liveness: %d sagas active and %d FAILED at quiescence",
                  c.active, c.failed);
    /* Every saga a participant acted for exists. */
    for (int i = 0; i < w->nseen && !w->failed; i++) {
        saga_state st;
        if (os->saga_get(os, w->seen[i], exists_cb, &st) != SAGA_OK)
            violation(w,
                      "effects: a participant acted for saga %.32s, "
                      "which the orchestrator does not know",
                      w->seen[i]);
    }
    check_conservation(w);
}

typedef struct failedctx {
    char (*ids)[SAGA_ID_SIZE];
    int n;
} failedctx;

static int failed_cb(const saga_record *r, void *arg)
{
    failedctx *c = arg;
    c->ids = realloc(c->ids, (size_t)(c->n + 1) * sizeof *c->ids);
    snprintf(c->ids[c->n++], SAGA_ID_SIZE, "%s", r->id);
    return 0;
}

/* After the faults heal, an operator retries whatever is FAILED now and
 * then (a retry lost in a crash is not reported again). */
static void sweep(world *w, int round)
{
    proc *pr = &w->procs[P_ORCH];
    if (pr->up) {
        failedctx c = {NULL, 0};
        pr->inner->saga_scan(pr->inner, SAGA_STATE_BIT(SAGA_STATE_FAILED),
                             failed_cb, &c);
        for (int i = 0; i < c.n; i++)
            do_retry(w, c.ids[i]);
        free(c.ids);
    }
    if (round < 40)
        ev_new(w, sim_now_ms + 30000, EV_SWEEP)->a = round + 1;
}

static void heal(world *w)
{
    tracef(w, "heal: no more faults");
    w->faults_on = 0;
    for (int i = 0; i < NPROC; i++)
        w->procs[i].partitioned_until = 0;
    /* An operator looks at what is FAILED once more. */
    proc *pr = &w->procs[P_ORCH];
    if (pr->up)
        saga_engine_flush(pr->e);
    ev_new(w, sim_now_ms + 1000, EV_SWEEP)->a = 0;
}

static void process_event(world *w, event *ev)
{
    proc *pr = ev->kind != EV_SWEEP && ev->a >= 0 && ev->a < NPROC
                   ? &w->procs[ev->a]
                   : NULL;
    switch (ev->kind) {
    case EV_DELIVER:
        net_deliver(w, ev);
        break;
    case EV_SENT:
        net_sent(w, ev);
        break;
    case EV_CRASH:
        proc_crash(w, pr);
        break;
    case EV_RESTART:
        proc_up(w, pr);
        break;
    case EV_PARTITION:
        if (!w->faults_on)
            break;
        pr->partitioned_until = sim_now_ms + ev->b;
        tracef(w, "partition %s for %lld ms", pr->name, (long long)ev->b);
        break;
    case EV_START:
        do_start(w, ev->a);
        break;
    case EV_CANCEL:
        do_cancel(w);
        break;
    case EV_RETRY:
        do_retry(w, ev->id);
        break;
    case EV_HEAL:
        heal(w);
        break;
    case EV_SWEEP:
        sweep(w, ev->a);
        break;
    }
}

static void free_msg(void *ptr)
{
    msg *m = ptr;
    free(m->topic);
    free(m->key);
    free(m->buf);
    free(m);
}

static void teardown(world *w)
{
    for (int i = 0; i < NPROC; i++) {
        proc *pr = &w->procs[i];
        if (pr->e)
            saga_engine_close(pr->e, NULL, NULL);
        if (pr->p)
            saga_participant_close(pr->p, NULL, NULL);
        pr->e = NULL;
        pr->p = NULL;
    }
    uv_close((uv_handle_t *)&w->keepalive, NULL);
    for (int i = 0; i < 1000; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        if (uv_loop_close(&w->loop) == 0)
            break;
    }
    for (int i = 0; i < NPROC; i++)
        saga_store_free(w->procs[i].inner);
    while (w->nheap)
        free(ev_pop(w));
    free(w->heap);
    ptrvec_free(&w->msgs, free_msg);
    ptrvec_free(&w->deliveries, free);
    ptrvec_free(&w->sendrecs, free);
    ptrvec_free(&w->endpoints, free);
    free(w->orders);
    free(w->ids);
    free(w->keys);
    free(w->seen);
}

static void keepalive_cb(uv_timer_t *t) { (void)t; }

void sim_run(uint64_t seed, int trace, int quiet, sim_result *out)
{
    memset(out, 0, sizeof *out);
    world *w = calloc(1, sizeof *w);
    if (w == NULL)
        abort();
    w->seed = seed;
    w->rng = seed;
    w->res = out;
    w->print_trace = trace;
    w->hash = 1469598103934665603ull;
    sim_now_ms = T0;
    if (uv_loop_init(&w->loop) != 0)
        abort();
    /* Keeps the loop alive, so that a turn also runs the timers that do
     * not (a participant's unreferenced outbox timer). */
    uv_timer_init(&w->loop, &w->keepalive);
    uv_timer_start(&w->keepalive, keepalive_cb, UINT64_MAX / 2, 0);
    build_world(w);
    while (!w->failed) {
        int64_t next_uv = settle(w);
        if (w->failed)
            break;
        check_conservation(w);
        if (w->failed)
            break;
        if (sim_now_ms >= w->heal_at && settled(w))
            break;
        int64_t next = next_uv;
        if (w->nheap && w->heap[0]->at < next)
            next = w->heap[0]->at;
        if (next == INT64_MAX || next > w->end_at) {
            saga_store *os = w->procs[P_ORCH].inner;
            scanctx c = {w, 0, 0, 0, NULL, 0, 0};
            os->saga_scan(os, SAGA_STATE_MASK_ALL, scan_cb, &c);
            violation(w,
                      "liveness: not quiescent %lld s after the faults "
                      "healed: %d sagas active, %d FAILED, %d messages "
                      "unacked",
                      (long long)((w->end_at - w->heal_at) / 1000), c.active,
                      c.failed, net_unacked(w));
            break;
        }
        if (next > sim_now_ms)
            sim_now_ms = next;
        uv_update_time(&w->loop);
        while (w->nheap && w->heap[0]->at <= sim_now_ms && !w->failed) {
            event *ev = ev_pop(w);
            process_event(w, ev);
            free(ev);
        }
    }
    if (!w->failed) {
        final_checks(w);
        tracef(w, "end: %d sagas, %d completed, %d compensated, %d crashes",
               out->sagas, out->completed, out->compensated, out->crashes);
    }
    out->ok = !w->failed;
    out->trace_hash = w->hash;
    out->events = w->nevents;
    if (w->failed && !quiet) {
        fprintf(stderr,
                "\nsaga-sim: seed %llu FAILED\n  invariant: %s\n"
                "  last events:\n",
                (unsigned long long)seed, out->violation);
        for (int i = 0; i < 64; i++) {
            const char *l = w->ring[(w->ring_pos + i) % 64];
            if (l[0])
                fprintf(stderr, "    %s\n", l);
        }
        fprintf(stderr, "  replay: saga-sim --seed %llu --trace\n",
                (unsigned long long)seed);
    }
    teardown(w);
    free(w);
}

/*
 * gateway.c — a simulated card payment gateway (the outside world of the
 * payment service). Its outcome is chosen by the card token:
 *   tok_ok       charged            (after gateway_latency_ms)
 *   tok_decline  INSUFFICIENT_FUNDS
 *   tok_timeout  never answers      (the caller's own timeout then voids)
 *   tok_slow     charged, but only after gateway_slow_ms
 *   tok_flaky    fails (transient) twice per key, then charged
 * any other token behaves as tok_ok.
 *
 * Like a real gateway it deduplicates by idempotency key: a key that has
 * charged answers the same transaction again and never charges twice; a
 * voided key never charges. Its books (gateway_charges) live in the payment
 * service's file but are written outside the service's transactions, as an
 * outside system's would be.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck.h"

struct ck_gateway {
    ck_app *a;
    ck_db *db;
    struct gw_req *reqs; /* sent, not arrived yet */
    struct gw_req *due;  /* arrived in this loop turn: decided in flush() */
    uv_timer_t flush;
    int flush_init;
};

typedef struct gw_req {
    ck_gateway *g;
    struct gw_req *next, **prev;
    uv_timer_t timer;
    char key[256], token[64], order_id[64];
    int64_t amount;
    ck_gw_cb cb;
    void *arg;
    ck_gw_result res; /* flush(): the decision */
    char txn[64];
} gw_req;

static int schema(ck_db *db)
{
    return ck_schema(db, "CREATE TABLE IF NOT EXISTS gateway_charges ("
                         " key TEXT PRIMARY KEY, order_id TEXT, token TEXT,"
                         " amount INTEGER NOT NULL, state TEXT NOT NULL,"
                         " attempts INTEGER NOT NULL DEFAULT 0,"
                         " refunded INTEGER NOT NULL DEFAULT 0, txn_id TEXT,"
                         " created_at INTEGER NOT NULL,"
                         " updated_at INTEGER NOT NULL)");
}

int ck_gateway_new(ck_gateway **out, ck_app *a, ck_db *db)
{
    ck_gateway *g = calloc(1, sizeof *g);
    if (g == NULL || schema(db) != CK_OK) {
        free(g);
        return -1;
    }
    g->a = a;
    g->db = db;
    *out = g;
    return 0;
}

static void req_free(uv_handle_t *h) { free(h->data); }

static void unlink_req(gw_req *r)
{
    *r->prev = r->next;
    if (r->next)
        r->next->prev = r->prev;
    uv_close((uv_handle_t *)&r->timer, req_free);
}

static void gw_free(uv_handle_t *h) { free(h->data); }

void ck_gateway_close(ck_gateway *g)
{
    if (g == NULL)
        return;
    while (g->reqs)
        unlink_req(g->reqs);
    while (g->due)
        unlink_req(g->due);
    if (g->flush_init)
        uv_close((uv_handle_t *)&g->flush, gw_free);
    else
        free(g);
}

void ck_gateway_forget(ck_gateway *g, void *req)
{
    (void)g;
    if (req != NULL)
        unlink_req(req);
}

/* The state of @p key; 0 found, 1 none, -1 the books could not be read. */
static int lookup(ck_gateway *g, const char *key, char state[16], char txn[64],
                  int *attempts, int64_t *amount)
{
    ck_stmt *st = ck_prep(g->db, "SELECT state, COALESCE(txn_id, ''), "
                                 "attempts, amount FROM gateway_charges "
                                 "WHERE key = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, key);
    int rc = ck_step(st);
    if (rc != CK_ROW) {
        ck_done(st);
        return rc == CK_DONE ? 1 : -1;
    }
    snprintf(state, 16, "%s", ck_col_text(st, 0));
    snprintf(txn, 64, "%s", ck_col_text(st, 1));
    *attempts = ck_col_int(st, 2);
    *amount = ck_col_int(st, 3);
    ck_done(st);
    return 0;
}

/* @return 0, or -1 when the books could not be written. */
static int put(ck_gateway *g, const gw_req *r, const char *state, int attempts,
               const char *txn)
{
    int64_t now = ck_now_ms();
    ck_stmt *st = ck_prep(
        g->db, "INSERT INTO gateway_charges (key, order_id, token, amount, "
               "state, attempts, txn_id, created_at, updated_at) VALUES (?1, "
               "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT(key) DO UPDATE SET "
               "state = ?5, attempts = ?6, txn_id = ?7, updated_at = ?8");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, r->key);
    ck_bind_text(st, 2, r->order_id);
    ck_bind_text(st, 3, r->token);
    ck_bind_int(st, 4, r->amount);
    ck_bind_text(st, 5, state);
    ck_bind_int(st, 6, attempts);
    if (txn)
        ck_bind_text(st, 7, txn);
    ck_bind_int(st, 8, now);
    int rc = ck_step(st) == CK_DONE ? 0 : -1;
    ck_done(st);
    return rc;
}

/* The gateway decides (at the moment the request "arrives"). */
static ck_gw_result decide(ck_gateway *g, const gw_req *r, char txn[64])
{
    char state[16] = "";
    int attempts = 0;
    int64_t amount = 0;
    txn[0] = '\0';
    int rc = lookup(g, r->key, state, txn, &attempts, &amount);
    /* A gateway whose books cannot be read or written decides nothing: it
     * is unavailable (a charge it answered but did not record was found
     * by the PostgreSQL kill loop: a COMPLETED order the bank knows
     * nothing of, after the server restarted). */
    if (rc < 0)
        return CK_GW_TRANSIENT;
    if (rc == 0) {
        if (strcmp(state, "CHARGED") == 0 || strcmp(state, "REFUNDED") == 0)
            return CK_GW_CHARGED;
        if (strcmp(state, "VOIDED") == 0)
            return CK_GW_VOIDED;
        if (strcmp(state, "DECLINED") == 0)
            return CK_GW_DECLINED;
    }
    attempts++;
    if (strcmp(r->token, "tok_decline") == 0)
        return put(g, r, "DECLINED", attempts, NULL) == 0 ? CK_GW_DECLINED
                                                          : CK_GW_TRANSIENT;
    if (strcmp(r->token, "tok_flaky") == 0 && attempts <= 2) {
        put(g, r, "FAILED_TRANSIENT", attempts, NULL);
        return CK_GW_TRANSIENT;
    }
    ck_random_id("txn_", txn, 64);
    if (put(g, r, "CHARGED", attempts, txn) != 0) {
        txn[0] = '\0';
        return CK_GW_TRANSIENT;
    }
    return CK_GW_CHARGED;
}

/* The requests that arrived in one loop turn are decided in one
 * transaction of the gateway's books (one commit, instead of a read and a
 * write transaction per charge), then each is answered. The books stay
 * outside the payment service's transactions. If that commit fails,
 * nothing was decided: each answers as a gateway that is unavailable. */
static void flush(uv_timer_t *t)
{
    ck_gateway *g = t->data;
    gw_req *list = g->due;
    g->due = NULL;
    if (list == NULL)
        return;
    list->prev = &list;
    /* On PostgreSQL a failed statement aborts the whole transaction: there
     * each decision is written alone, as before. */
    int begun = !ck_db_is_pg(g->db) && ck_begin(g->db) == CK_OK;
    for (gw_req *r = list; r != NULL; r = r->next)
        r->res = decide(g, r, r->txn);
    if (begun && ck_commit(g->db) != CK_OK) {
        ck_rollback(g->db);
        for (gw_req *r = list; r != NULL; r = r->next)
            r->res = CK_GW_TRANSIENT;
    }
    while (list != NULL) {
        gw_req *r = list;
        ck_gw_cb cb = r->cb;
        void *arg = r->arg;
        ck_gw_result res = r->res;
        char txn[64];
        memcpy(txn, r->txn, sizeof txn);
        unlink_req(r);
        cb(res, txn, arg);
    }
}

static void fire(uv_timer_t *t)
{
    gw_req *r = t->data;
    ck_gateway *g = r->g;
    /* From the waiting list to the arrived ones. */
    *r->prev = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = g->due;
    r->prev = &g->due;
    if (g->due)
        g->due->prev = &r->next;
    g->due = r;
    if (!g->flush_init) {
        uv_timer_init(g->a->loop, &g->flush);
        g->flush.data = g;
        g->flush_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&g->flush))
        uv_timer_start(&g->flush, flush, 0, 0);
}

void *ck_gateway_charge(ck_gateway *g, const char *key, const char *token,
                        const char *order_id, int64_t amount, ck_gw_cb cb,
                        void *arg)
{
    gw_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->g = g;
    snprintf(r->key, sizeof r->key, "%s", key);
    snprintf(r->token, sizeof r->token, "%s", token);
    snprintf(r->order_id, sizeof r->order_id, "%s", order_id);
    r->amount = amount;
    r->cb = cb;
    r->arg = arg;
    uv_timer_init(g->a->loop, &r->timer);
    r->timer.data = r;
    r->next = g->reqs;
    r->prev = &g->reqs;
    if (g->reqs)
        g->reqs->prev = &r->next;
    g->reqs = r;
    if (strcmp(token, "tok_timeout") == 0)
        return r; /* the network ate it: no answer, ever */
    uint32_t delay = strcmp(token, "tok_slow") == 0
                         ? g->a->timing.gateway_slow_ms
                         : g->a->timing.gateway_latency_ms;
    uv_timer_start(&r->timer, fire, delay, 0);
    return r;
}

ck_gw_result ck_gateway_charge_now(ck_gateway *g, const char *key,
                                   const char *token, const char *order_id,
                                   int64_t amount, char txn[64])
{
    gw_req r;
    memset(&r, 0, sizeof r);
    snprintf(r.key, sizeof r.key, "%s", key);
    snprintf(r.token, sizeof r.token, "%s", token);
    snprintf(r.order_id, sizeof r.order_id, "%s", order_id);
    r.amount = amount;
    return decide(g, &r, txn);
}

int ck_gateway_void(ck_gateway *g, const char *key, char txn[64])
{
    char state[16] = "";
    int attempts = 0;
    int64_t amount = 0;
    int found = lookup(g, key, state, txn, &attempts, &amount);
    if (found < 0)
        return -1; /* unread books: a charge there must not be voided */
    if (found == 0 &&
        (strcmp(state, "CHARGED") == 0 || strcmp(state, "REFUNDED") == 0))
        return 1; /* too late: it charged */
    ck_stmt *st = ck_prep(
        g->db, "INSERT INTO gateway_charges (key, amount, state, created_at, "
               "updated_at) VALUES (?1, 0, 'VOIDED', ?2, ?2) ON "
               "CONFLICT(key) DO UPDATE SET state = 'VOIDED', updated_at = ?2");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, key);
    ck_bind_int(st, 2, ck_now_ms());
    int rc = ck_step(st) == CK_DONE ? 0 : -1;
    ck_done(st);
    return rc;
}

int ck_gateway_refund(ck_gateway *g, const char *key, int64_t *amount)
{
    char state[16] = "", txn[64];
    int attempts = 0;
    *amount = 0;
    int found = lookup(g, key, state, txn, &attempts, amount);
    if (found < 0)
        return -1; /* the books could not be read: try again */
    if (found != 0)
        return 1;
    if (strcmp(state, "REFUNDED") == 0)
        return 0;
    if (strcmp(state, "CHARGED") != 0)
        return 1;
    ck_stmt *st = ck_prep(g->db, "UPDATE gateway_charges SET state = "
                                 "'REFUNDED', refunded = amount, "
                                 "updated_at = ? WHERE key = ?");
    if (st == NULL)
        return -1;
    ck_bind_int(st, 1, ck_now_ms());
    ck_bind_text(st, 2, key);
    int rc = ck_step(st) == CK_DONE ? 0 : -1;
    ck_done(st);
    return rc;
}

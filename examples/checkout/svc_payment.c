/*
 * svc_payment.c — the payment service: the seed's payments table on
 * payment.db, the saga's payment.charge command (and its compensation, the
 * refund), and the internal POST /api/v1/payments/process.
 *
 * The gateway is called asynchronously: the handler defers its reply
 * (saga_reply_defer), a timer stands for the network, and the answer is
 * given when the gateway answers, or when our own gateway timeout passes
 * (then the key is voided at the gateway, so that a late answer cannot
 * charge). The idempotency key is derived from the saga and the step, so a
 * re-driven command after a crash asks the gateway again with the same key
 * and is never charged twice. A transient gateway failure answers RETRY:
 * the orchestrator retries with exponential backoff (the seed's "payment
 * retry").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int ck_payment_schema(ck_db *db)
{
    return ck_schema(
        db,
        "CREATE TABLE IF NOT EXISTS payments (payment_id TEXT PRIMARY KEY,"
        " order_id TEXT NOT NULL, amount INTEGER NOT NULL,"
        " payment_method TEXT NOT NULL, transaction_id TEXT,"
        " status TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE,"
        " error_code TEXT, refunded_amount INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS idx_pay_order ON payments(order_id);"
        "CREATE INDEX IF NOT EXISTS idx_pay_txn ON payments(transaction_id);"
        "CREATE TABLE IF NOT EXISTS gateway_charges ("
        " key TEXT PRIMARY KEY, order_id TEXT, token TEXT,"
        " amount INTEGER NOT NULL, state TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " refunded INTEGER NOT NULL DEFAULT 0, txn_id TEXT,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)");
}

/* Insert or update the payments row of @p key. */
static int record(ck_db *db, const char *pid, const char *order_id,
                  int64_t amount, const char *method, const char *key,
                  const char *status, const char *txn, const char *error)
{
    int64_t now = ck_now_ms();
    ck_stmt *st = ck_prep(
        db, "INSERT INTO payments (payment_id, order_id, amount, "
            "payment_method, transaction_id, status, idempotency_key, "
            "error_code, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, "
            "?6, ?7, ?8, ?9, ?9) ON CONFLICT(idempotency_key) DO UPDATE SET "
            "transaction_id = COALESCE(?5, payments.transaction_id), "
            "status = ?6, "
            "error_code = ?8, updated_at = ?9");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, pid);
    ck_bind_text(st, 2, order_id);
    ck_bind_int(st, 3, amount);
    ck_bind_text(st, 4, method);
    if (txn && txn[0])
        ck_bind_text(st, 5, txn);
    ck_bind_text(st, 6, status);
    ck_bind_text(st, 7, key);
    if (error)
        ck_bind_text(st, 8, error);
    ck_bind_int(st, 9, now);
    int rc = ck_step(st) == CK_DONE ? 0 : -1;
    ck_done(st);
    return rc;
}

typedef struct charge {
    ck_app *a;
    saga_participant *p;
    void *deferred; /* saga_deferred * */
    void *gw_req;
    uv_timer_t timeout;
    char key[256], pid[80], order_id[64], token[64], method[32];
    int64_t amount;
    uint64_t started; /* uv_now() when the command came */
    struct charge *next, **prev;
    ck_gw_result res; /* answered: the gateway's outcome, for the flush */
    int failed;       /* the flush could not record it */
    char txn[64];
} charge;

typedef struct pay_state {
    ck_app *a;
    ck_db *db;
    charge *inflight;
    charge *answered; /* by the gateway in this loop turn: see flush() */
    uv_timer_t flush;
    int flush_init;
} pay_state;

static void key_of(const saga_command *c, char *key, size_t size)
{
    snprintf(key, size, "pay_%s_%u", c->saga_id, c->step);
}

/* The payments row for a gateway outcome (in the flush's transaction). */
static int outcome_record(pay_state *s, const charge *ch)
{
    switch (ch->res) {
    case CK_GW_TRANSIENT:
        return record(s->db, ch->pid, ch->order_id, ch->amount, ch->method,
                      ch->key, "PENDING", NULL, "GATEWAY_UNAVAILABLE");
    case CK_GW_CHARGED:
        return record(s->db, ch->pid, ch->order_id, ch->amount, ch->method,
                      ch->key, "COMPLETED", ch->txn, NULL);
    default:
        return record(s->db, ch->pid, ch->order_id, ch->amount, ch->method,
                      ch->key, "FAILED", NULL,
                      ch->res == CK_GW_DECLINED ? "INSUFFICIENT_FUNDS"
                      : ch->res == CK_GW_LATE   ? "PAYMENT_LATE"
                                                : "PAYMENT_TIMEOUT");
    }
}

/* What the saga learns, and the event, for a recorded gateway outcome. */
static void outcome(ck_app *a, saga_participant *p, const charge *ch,
                    saga_outcome *oc, saga_map **out, const char **err)
{
    int64_t now = ck_now_ms();
    ck_gw_result res = ch->res;
    const char *txn = ch->txn;
    (void)a;
    *out = NULL;
    *err = NULL;
    if (res == CK_GW_TRANSIENT) {
        *oc = SAGA_OUTCOME_RETRY;
        *err = "GATEWAY_UNAVAILABLE";
        return;
    }
    if (res == CK_GW_CHARGED) {
        *oc = SAGA_OUTCOME_OK;
        json_t *ev = ck_event("PaymentProcessedEvent", ch->order_id, now);
        json_object_set_new(ev, "payment_id", json_string(ch->pid));
        json_object_set_new(ev, "transaction_id", json_string(txn));
        json_object_set_new(ev, "amount", ck_json_money(ch->amount));
        json_object_set_new(ev, "success", json_true());
        ck_publish(p, CK_T_PAYMENT, ch->order_id, ev);
        saga_map_new(out);
        saga_map_set_str(*out, "payment_id", ch->pid);
        saga_map_set_str(*out, "transaction_id", txn);
        saga_map_set_int(*out, "amount", ch->amount);
        return;
    }
    *oc = SAGA_OUTCOME_FAIL;
    const char *code = res == CK_GW_DECLINED ? "INSUFFICIENT_FUNDS"
                       : res == CK_GW_LATE   ? "PAYMENT_LATE"
                                             : "PAYMENT_TIMEOUT";
    *err = code;
    json_t *ev = ck_event("PaymentFailedEvent", ch->order_id, now);
    json_object_set_new(ev, "payment_id", json_string(ch->pid));
    json_object_set_new(ev, "error_code", json_string(code));
    json_object_set_new(ev, "error_message",
                        json_string(res == CK_GW_DECLINED
                                        ? "Payment failed: insufficient funds"
                                    : res == CK_GW_LATE
                                        ? "Payment failed: the gateway "
                                          "answered after the step's timeout; "
                                          "the charge was reversed"
                                        : "Payment failed: the gateway did "
                                          "not answer in time"));
    ck_publish(p, CK_T_PAYMENT, ch->order_id, ev);
}

static void charge_setup(charge *ch, ck_app *a, saga_participant *p,
                         const saga_command *c)
{
    memset(ch, 0, sizeof *ch);
    ch->a = a;
    ch->p = p;
    key_of(c, ch->key, sizeof ch->key);
    ck_data_str(c->payload, c->payload_len, "order_id", ch->order_id,
                sizeof ch->order_id);
    ck_data_str(c->payload, c->payload_len, "card_token", ch->token,
                sizeof ch->token);
    ck_data_str(c->payload, c->payload_len, "payment_type", ch->method,
                sizeof ch->method);
    snprintf(ch->pid, sizeof ch->pid, "pay_%.60s",
             strncmp(ch->order_id, "order_", 6) == 0 ? ch->order_id + 6
                                                     : ch->order_id);
    ch->amount = ck_data_int(c->payload, c->payload_len, "subtotal", 0) +
                 ck_data_int(c->payload, c->payload_len, "shipping_cost", 0);
}

static int refund(ck_app *a, saga_participant *p, const saga_command *c)
{
    pay_state *s = a->state[CK_SVC_PAYMENT];
    charge ch;
    charge_setup(&ch, a, p, c);
    int64_t amount = 0;
    int rc = ck_gateway_refund(a->gateway, ch.key, &amount);
    if (rc < 0)
        return SAGA_ESTORE;
    if (rc == 1) {
        /* Never charged: make sure a late request cannot charge either. */
        char txn[64];
        int v = ck_gateway_void(a->gateway, ch.key, txn);
        if (v < 0 ||
            (v == 1 && ck_gateway_refund(a->gateway, ch.key, &amount) != 0))
            return SAGA_ESTORE;
        if (amount == 0)
            return SAGA_OK;
    }
    ck_stmt *st = ck_prep(s->db, "UPDATE payments SET status = "
                                 "'REFUNDED', refunded_amount = ?, "
                                 "updated_at = ? WHERE idempotency_key "
                                 "= ?");
    if (st == NULL)
        return SAGA_ESTORE;
    ck_bind_int(st, 1, amount);
    ck_bind_int(st, 2, ck_now_ms());
    ck_bind_text(st, 3, ch.key);
    rc = ck_step(st);
    ck_done(st);
    if (rc != CK_DONE)
        return SAGA_ESTORE;
    json_t *ev = ck_event("PaymentRefundedEvent", ch.order_id, ck_now_ms());
    json_object_set_new(ev, "payment_id", json_string(ch.pid));
    json_object_set_new(ev, "amount", ck_json_money(amount));
    json_object_set_new(ev, "compensation", json_true());
    return ck_publish(p, CK_T_PAYMENT, ch.order_id, ev);
}

static void charge_close_cb(uv_handle_t *h) { free(h->data); }

/* The answers of one loop turn: their payments rows are written in one
 * transaction (one commit instead of one per charge), then, once that
 * is durable, each event is published and each deferred command
 * answered. If the transaction fails (a store error: disk full, I/O), the
 * answers are kept and written again after FLUSH_RETRY_MS: the gateway's
 * result is known, so nothing is charged again, and the saga goes on once
 * the store is back instead of waiting for a restart (at shutdown they
 * stay pending and are re-driven at the next start). */
#define FLUSH_RETRY_MS 500
static void flush(uv_timer_t *t)
{
    pay_state *s = t->data;
    charge *list = s->answered;
    s->answered = NULL;
    if (list == NULL)
        return;
    /* On PostgreSQL a failed statement aborts the whole transaction: there
     * each row is written alone, as before. */
    int begun = !ck_db_is_pg(s->db) && ck_begin(s->db) == CK_OK;
    for (charge *ch = list; ch != NULL; ch = ch->next) {
        /* A charge that comes back after the orchestrator's per-attempt
         * timeout is not trusted to be wanted any more: the saga may be
         * compensating. Reverse it at once and answer FAIL, so that a slow
         * gateway always ends in a cancelled order with nothing charged,
         * however loaded the machine is (the refund compensation then
         * finds it refunded). */
        if (ch->res == CK_GW_CHARGED &&
            uv_now(s->a->loop) - ch->started >
                s->a->timing.payment_step_timeout_ms) {
            int64_t amount;
            if (ck_gateway_refund(s->a->gateway, ch->key, &amount) == 0)
                ch->res = CK_GW_LATE;
        }
        ch->failed = outcome_record(s, ch) != 0;
    }
    if (begun && ck_commit(s->db) != CK_OK) {
        ck_rollback(s->db);
        for (charge *ch = list; ch != NULL; ch = ch->next)
            ch->failed = 1;
    }
    int again = 0;
    while (list != NULL) {
        charge *ch = list;
        list = ch->next;
        if (ch->failed) {
            /* Our books failed: try them again later (before, the answer
             * was abandoned, and the saga hung until a restart, its
             * payment step answered "pending" on every retry and its
             * refund compensation too, with the card charged). */
            ch->next = s->answered;
            ch->prev = NULL;
            s->answered = ch;
            again = 1;
        } else {
            saga_outcome oc;
            saga_map *out;
            const char *err;
            outcome(s->a, ch->p, ch, &oc, &out, &err);
            const void *b = NULL;
            size_t n = 0;
            if (out)
                saga_map_encode(out, &b, &n);
            saga_deferred_reply(ch->deferred, oc, b, n, err);
            saga_map_free(out);
            uv_close((uv_handle_t *)&ch->timeout, charge_close_cb);
        }
    }
    if (again) {
        ck_log(s->a,
               "payment: recording gateway answers failed; retrying "
               "in %d ms",
               FLUSH_RETRY_MS);
        uv_timer_start(&s->flush, flush, FLUSH_RETRY_MS, 0);
    }
}

static void charge_finish(charge *ch, ck_gw_result res, const char *txn)
{
    pay_state *s = ch->a->state[CK_SVC_PAYMENT];
    *ch->prev = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    uv_timer_stop(&ch->timeout);
    ch->res = res;
    snprintf(ch->txn, sizeof ch->txn, "%s", txn ? txn : "");
    ch->next = s->answered;
    ch->prev = NULL;
    s->answered = ch;
    if (!s->flush_init) {
        uv_timer_init(s->a->loop, &s->flush);
        s->flush.data = s;
        s->flush_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&s->flush))
        uv_timer_start(&s->flush, flush, 0, 0);
}

static void gw_answered(ck_gw_result res, const char *txn, void *arg)
{
    charge *ch = arg;
    ch->gw_req = NULL;
    charge_finish(ch, res, txn);
}

static void gw_timeout(uv_timer_t *t)
{
    charge *ch = t->data;
    ck_gateway_forget(ch->a->gateway, ch->gw_req);
    ch->gw_req = NULL;
    char txn[64] = "";
    int v = ck_gateway_void(ch->a->gateway, ch->key, txn);
    if (v < 0) {
        /* The books could not be read or written: whether it charged is
         * unknown, so nothing is answered yet; asked again shortly. */
        uv_timer_start(t, gw_timeout, 200, 0);
        return;
    }
    charge_finish(ch, v == 1 ? CK_GW_CHARGED : CK_GW_VOIDED, txn);
}

static int on_charge(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    pay_state *s = arg;
    ck_app *a = s->a;
    if (c->compensating)
        return refund(a, p, c);
    charge *ch = malloc(sizeof *ch);
    if (ch == NULL)
        return SAGA_ENOMEM;
    charge_setup(ch, a, p, c);
    if (record(s->db, ch->pid, ch->order_id, ch->amount, ch->method, ch->key,
               "PENDING", NULL, NULL) != 0) {
        free(ch);
        return SAGA_ESTORE;
    }
    saga_deferred *d;
    int rc = saga_reply_defer(r, &d);
    if (rc != SAGA_OK) {
        free(ch);
        return rc;
    }
    ch->deferred = d;
    ch->started = uv_now(a->loop);
    uv_timer_init(a->loop, &ch->timeout);
    ch->timeout.data = ch;
    ch->next = s->inflight;
    ch->prev = &s->inflight;
    if (s->inflight)
        s->inflight->prev = &ch->next;
    s->inflight = ch;
    uv_timer_start(&ch->timeout, gw_timeout, a->timing.gateway_timeout_ms, 0);
    ch->gw_req = ck_gateway_charge(a->gateway, ch->key, ch->token, ch->order_id,
                                   ch->amount, gw_answered, ch);
    return SAGA_OK;
}

int ck_payment_open(ck_app *a)
{
    saga_participant *p;
    pay_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->a = a;
    a->state[CK_SVC_PAYMENT] = s;
    if (ck_participant(a, CK_SVC_PAYMENT, &p, &s->db) != 0 ||
        ck_payment_schema(s->db) != CK_OK ||
        ck_gateway_new(&a->gateway, a, s->db) != 0)
        return -1;
    a->payment_db = s->db;
    if (saga_participant_on_command(p, "payment.charge", on_charge, s) ||
        saga_participant_start(p))
        return -1;
    return 0;
}

/* At shutdown: charges in flight stay pending, re-driven at the next start. */
void ck_payment_shutdown(ck_app *a);
void ck_payment_shutdown(ck_app *a)
{
    pay_state *s = a->state[CK_SVC_PAYMENT];
    if (s == NULL)
        return;
    while (s->inflight) {
        charge *ch = s->inflight;
        s->inflight = ch->next;
        ck_gateway_forget(a->gateway, ch->gw_req);
        saga_deferred_abandon(ch->deferred);
        uv_close((uv_handle_t *)&ch->timeout, charge_close_cb);
    }
    while (s->answered) {
        charge *ch = s->answered;
        s->answered = ch->next;
        saga_deferred_abandon(ch->deferred);
        uv_close((uv_handle_t *)&ch->timeout, charge_close_cb);
    }
    if (s->flush_init) {
        s->flush_init = 0;
        uv_close((uv_handle_t *)&s->flush, NULL);
    }
}

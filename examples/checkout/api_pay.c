/*
 * api_pay.c — POST /api/v1/payments/process (internal): charge a card
 * through the gateway, idempotent by the body's idempotency_key (the same
 * key answers the first result and never charges twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static json_t *payment_json(ck_db *db, const char *key, int *status)
{
    ck_stmt *st = ck_prep(db, "SELECT payment_id, order_id, "
                              "transaction_id, status, amount, "
                              "error_code, updated_at FROM payments "
                              "WHERE idempotency_key = ?");
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, key);
    json_t *o = NULL;
    if (ck_step(st) == CK_ROW) {
        const char *s = ck_col_text(st, 3);
        const char *err = ck_col_text(st, 5);
        if (strcmp(s, "COMPLETED") == 0 || strcmp(s, "REFUNDED") == 0) {
            *status = 200;
            o = json_pack("{s:s, s:s, s:s?, s:s, s:o, s:o}", "payment_id",
                          ck_col_text(st, 0), "order_id", ck_col_text(st, 1),
                          "transaction_id", ck_col_text(st, 2), "status", s,
                          "amount", ck_json_money(ck_col_int(st, 4)),
                          "processed_at", ck_json_time(ck_col_int(st, 6)));
        } else if (strcmp(s, "FAILED") == 0 && err) {
            *status = strcmp(err, "PAYMENT_TIMEOUT") == 0 ? 504 : 402;
            o = json_pack("{s:{s:s, s:s}}", "error", "code", err, "message",
                          *status == 504
                              ? "the gateway did not answer in time"
                              : "Payment failed: insufficient funds");
        }
    }
    ck_done(st);
    return o;
}

void ck_api_payment_process(ck_req *r)
{
    ck_app *a = r->a;
    json_t *b = ck_body_object(r);
    if (b == NULL)
        return;
    json_t *oid = json_object_get(b, "order_id");
    json_t *key = json_object_get(b, "idempotency_key");
    json_t *pm = json_object_get(b, "payment_method");
    int64_t amount = ck_money_parse(json_object_get(b, "amount"));
    const char *bad = !json_is_string(oid) || json_string_length(oid) == 0
                          ? "order_id (a non-empty string)"
                      : amount <= 0         ? "amount (a number > 0)"
                      : !json_is_object(pm) ? "payment_method (an object)"
                      : !json_is_string(json_object_get(pm, "type"))
                          ? "payment_method.type (a string)"
                      : !json_is_string(json_object_get(pm, "card_token"))
                          ? "payment_method.card_token (a string)"
                      : !json_is_string(key) || json_string_length(key) == 0 ||
                              json_string_length(key) > 200
                          ? "idempotency_key (a string of 1 to 200 bytes)"
                          : NULL;
    if (bad != NULL) {
        ck_error(r, 422, "invalid_field", "%s is required", bad);
        json_decref(b);
        return;
    }
    char k[256];
    snprintf(k, sizeof k, "api_%s", json_string_value(key));
    int status = 0;
    json_t *prior = payment_json(a->payment_db, k, &status);
    if (prior != NULL) {
        ck_reply(r, status, prior);
        json_decref(b);
        return;
    }
    const char *token = json_string_value(json_object_get(pm, "card_token"));
    char txn[64] = "", pid[64];
    ck_random_id("pay_", pid, sizeof pid);
    ck_gw_result res;
    if (strcmp(token, "tok_timeout") == 0)
        res = ck_gateway_void(a->gateway, k, txn) == 1 ? CK_GW_CHARGED
                                                       : CK_GW_VOIDED;
    else
        res = ck_gateway_charge_now(a->gateway, k, token,
                                    json_string_value(oid), amount, txn);
    if (res == CK_GW_TRANSIENT) {
        ck_error(r, 503, "gateway_unavailable",
                 "the gateway failed; retry with the same idempotency_key");
        json_decref(b);
        return;
    }
    const char *st = res == CK_GW_CHARGED ? "COMPLETED" : "FAILED";
    const char *err = res == CK_GW_DECLINED ? "INSUFFICIENT_FUNDS"
                      : res == CK_GW_VOIDED ? "PAYMENT_TIMEOUT"
                                            : NULL;
    ck_stmt *ins = ck_prep(
        a->payment_db,
        "INSERT INTO payments (payment_id, order_id, amount, "
        "payment_method, transaction_id, status, idempotency_key, error_code, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON "
        "CONFLICT DO NOTHING");
    if (ins != NULL) {
        int64_t now = ck_now_ms();
        ck_bind_text(ins, 1, pid);
        ck_bind_text(ins, 2, json_string_value(oid));
        ck_bind_int(ins, 3, amount);
        ck_bind_text(ins, 4, json_string_value(json_object_get(pm, "type")));
        if (txn[0])
            ck_bind_text(ins, 5, txn);
        ck_bind_text(ins, 6, st);
        ck_bind_text(ins, 7, k);
        if (err)
            ck_bind_text(ins, 8, err);
        ck_bind_int(ins, 9, now);
        ck_bind_int(ins, 10, now);
        ck_step(ins);
        ck_done(ins);
    }
    json_t *o = payment_json(a->payment_db, k, &status);
    if (o == NULL)
        ck_error(r, 500, "internal", "payment database unavailable");
    else
        ck_reply(r, status, o);
    json_decref(b);
}

/*
 * api_query.c — reads: an order with its payment and saga steps (from the
 * engine's journal), order history with pagination, the catalogue, stock
 * levels and the payment ledger.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const char *step_label(const char *name)
{
    static const char *const map[][2] = {
        {"create_order", "ORDER_CREATED"},
        {"reserve_inventory", "INVENTORY_RESERVED"},
        {"quote_shipping", "SHIPPING_CALCULATED"},
        {"process_payment", "PAYMENT_PROCESSED"},
        {"fulfill_order", "ORDER_FULFILLED"},
        {"commit_inventory", "INVENTORY_COMMITTED"},
        {"confirm_order", "ORDER_CONFIRMED"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], name) == 0)
            return map[i][1];
    return name;
}

static const char *const step_names[] = {"create_order",   "reserve_inventory",
                                         "quote_shipping", "process_payment",
                                         "fulfill_order",  "commit_inventory",
                                         "confirm_order"};
#define NSTEPS 7

/* The saga steps from the journal: one entry per step reached. */
static json_t *saga_steps(ck_app *a, const char *saga_id, json_t **state)
{
    json_t *arr = json_array();
    saga_info *info = NULL;
    if (saga_id == NULL || saga_get(a->engine, saga_id, &info) != SAGA_OK)
        return arr;
    json_t *steps[NSTEPS] = {0};
    for (size_t i = 0; i < saga_info_journal_count(info); i++) {
        const saga_journal_entry *e = saga_info_journal(info, i);
        if (e->step < 0 || e->step >= NSTEPS)
            continue;
        json_t *s = steps[e->step];
        if (s == NULL)
            s = steps[e->step] = json_pack("{s:s, s:s, s:n, s:i}", "step",
                                           step_label(step_names[e->step]),
                                           "status", "IN_PROGRESS",
                                           "completed_at", "attempts", 0);
        const char *st = NULL;
        switch (e->kind) {
        case SAGA_JOURNAL_STEP_OK:
            st = "COMPLETED";
            break;
        case SAGA_JOURNAL_STEP_FAIL:
            st = "FAILED";
            break;
        case SAGA_JOURNAL_STEP_RETRY:
        case SAGA_JOURNAL_STEP_TIMEOUT:
            st = "RETRYING";
            break;
        case SAGA_JOURNAL_COMP_OK:
            st = "COMPENSATED";
            break;
        case SAGA_JOURNAL_COMP_FAIL:
        case SAGA_JOURNAL_COMP_TIMEOUT:
            st = "COMPENSATING";
            break;
        default:
            break;
        }
        if (st == NULL)
            continue;
        if (!e->attempt || e->kind >= SAGA_JOURNAL_COMP_OK) {
        } else if ((json_int_t)e->attempt >
                   json_integer_value(json_object_get(s, "attempts")))
            json_object_set_new(s, "attempts", json_integer(e->attempt));
        json_object_set_new(s, "status", json_string(st));
        if (e->kind == SAGA_JOURNAL_STEP_OK ||
            e->kind == SAGA_JOURNAL_STEP_FAIL ||
            e->kind == SAGA_JOURNAL_COMP_OK)
            json_object_set_new(s, "completed_at", ck_json_time(e->at_ms));
        if (e->error != NULL && e->kind != SAGA_JOURNAL_STEP_OK &&
            e->kind != SAGA_JOURNAL_COMP_OK)
            json_object_set_new(s, "error", json_string(e->error));
    }
    /* The step in flight shows IN_PROGRESS even before its first report. */
    int cur = saga_info_step(info);
    saga_state ss = saga_info_state(info);
    if (ss == SAGA_STATE_RUNNING && cur >= 0 && cur < NSTEPS &&
        steps[cur] == NULL)
        steps[cur] = json_pack("{s:s, s:s, s:n, s:i}", "step",
                               step_label(step_names[cur]), "status",
                               "IN_PROGRESS", "completed_at", "attempts", 1);
    for (int i = 0; i < NSTEPS; i++)
        if (steps[i] != NULL)
            json_array_append_new(arr, steps[i]);
    if (state)
        *state = json_string(saga_state_name(ss));
    saga_info_free(info);
    return arr;
}

void ck_api_order_get(ck_req *r, const char *order_id)
{
    ck_app *a = r->a;
    ck_stmt *st = ck_prep(
        a->order_db,
        "SELECT user_id, status, total_amount, shipping_address, "
        "payment_id, payment_status, transaction_id, saga_id, created_at, "
        "updated_at, cancel_reason, subtotal, shipping_cost, cart_id, "
        "idempotency_key, refunded_amount FROM orders WHERE order_id = ?");
    if (st == NULL) {
        ck_error(r, 500, "internal", "order database unavailable");
        return;
    }
    ck_bind_text(st, 1, order_id);
    int rc = ck_step(st);
    if (rc != CK_ROW) {
        ck_done(st);
        if (rc == CK_DONE)
            ck_error(r, 404, "order_not_found", "no order %s", order_id);
        else /* a failed read is not "no order" */
            ck_error(r, 503, "unavailable",
                     "order database unavailable: "
                     "retry");
        return;
    }
#define COL(i) (ck_col_text(st, i))
    json_t *addr = json_loads(COL(3), 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:s}",
                          "order_id", order_id, "user_id", COL(0), "cart_id",
                          COL(13), "status", COL(1), "total_amount",
                          ck_json_money(ck_col_int(st, 2)), "subtotal",
                          ck_json_money(ck_col_int(st, 11)), "shipping_address",
                          addr ? addr : json_null(), "created_at",
                          ck_json_time(ck_col_int(st, 8)), "updated_at",
                          ck_json_time(ck_col_int(st, 9)), "idempotency_key",
                          COL(14));
    json_object_set_new(o, "shipping_cost",
                        ck_col_null(st, 12)
                            ? json_null()
                            : ck_json_money(ck_col_int(st, 12)));
    json_object_set_new(o, "cancel_reason",
                        COL(10) ? json_string(COL(10)) : json_null());
    if (COL(5) != NULL) {
        json_t *pay = json_pack("{s:s?, s:s, s:s?}", "payment_id", COL(4),
                                "status", COL(5), "transaction_id", COL(6));
        if (!ck_col_null(st, 15))
            json_object_set_new(pay, "refunded_amount",
                                ck_json_money(ck_col_int(st, 15)));
        json_object_set_new(o, "payment", pay);
    } else
        json_object_set_new(o, "payment", json_null());
    char saga_id[SAGA_ID_SIZE] = "";
    if (COL(7) != NULL)
        snprintf(saga_id, sizeof saga_id, "%s", COL(7));
#undef COL
    ck_done(st);
    json_t *sstate = NULL;
    json_object_set_new(o, "saga_id",
                        saga_id[0] ? json_string(saga_id) : json_null());
    json_object_set_new(o, "saga_steps",
                        saga_steps(a, saga_id[0] ? saga_id : NULL, &sstate));
    json_object_set_new(o, "saga_state", sstate ? sstate : json_null());
    json_t *items = json_array();
    st = ck_prep(a->order_db, "SELECT product_id, quantity, price FROM "
                              "order_items WHERE order_id = ? ORDER BY "
                              "order_item_id");
    if (st != NULL) {
        ck_bind_text(st, 1, order_id);
        while (ck_step(st) == CK_ROW)
            json_array_append_new(items,
                                  json_pack("{s:s, s:I, s:o}", "product_id",
                                            ck_col_text(st, 0), "quantity",
                                            (json_int_t)ck_col_int(st, 1),
                                            "price",
                                            ck_json_money(ck_col_int(st, 2))));
        ck_done(st);
    }
    json_object_set_new(o, "items", items);
    ck_reply(r, 200, o);
}

static int int_param(ck_req *r, const char *name, int dflt, int min, int max,
                     int *out)
{
    char buf[32];
    const char *v = ck_query(r, name, buf, sizeof buf);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    char *end;
    long n = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || n < min) {
        ck_error(r, 422, "invalid_parameter", "%s must be an integer >= %d",
                 name, min);
        return -1;
    }
    *out = n > max ? max : (int)n;
    return 0;
}

void ck_api_orders_list(ck_req *r)
{
    ck_app *a = r->a;
    char user[256], status[64];
    const char *u = ck_query(r, "user_id", user, sizeof user);
    const char *s = ck_query(r, "status", status, sizeof status);
    if (u == NULL || u[0] == '\0') {
        ck_error(r, 422, "invalid_parameter", "user_id is required");
        return;
    }
    if (strlen(u) > CK_USER_ID_MAX) {
        ck_error(r, 422, "invalid_parameter",
                 "user_id must be at most %d bytes", CK_USER_ID_MAX);
        return;
    }
    static const char *const valid[] = {
        "PENDING",   "INVENTORY_RESERVED", "PAYMENT_COMPLETED",
        "FULFILLED", "COMPLETED",          "CANCELLED"};
    if (s != NULL) {
        int ok = 0;
        for (int i = 0; i < 6; i++)
            ok |= strcmp(valid[i], s) == 0;
        if (!ok) {
            ck_error(r, 422, "invalid_parameter",
                     "status must be one of PENDING, INVENTORY_RESERVED, "
                     "PAYMENT_COMPLETED, FULFILLED, COMPLETED, CANCELLED");
            return;
        }
    }
    int page, limit;
    if (int_param(r, "page", 1, 1, 1000000, &page) != 0 ||
        int_param(r, "limit", 20, 1, 100, &limit) != 0)
        return;
    ck_stmt *st = ck_prep(a->order_db,
                          "SELECT COUNT(*) FROM orders WHERE user_id = ? "
                          "AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)");
    if (st == NULL) {
        ck_error(r, 500, "internal", "order database unavailable");
        return;
    }
    ck_bind_text(st, 1, u);
    if (s)
        ck_bind_text(st, 2, s);
    int64_t total = ck_step(st) == CK_ROW ? ck_col_int(st, 0) : 0;
    ck_done(st);
    st = ck_prep(
        a->order_db,
        "SELECT o.order_id, o.status, o.total_amount, "
        "(SELECT COALESCE(SUM(quantity), 0) FROM order_items i "
        "WHERE i.order_id = o.order_id), o.created_at FROM orders o "
        "WHERE o.user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR o.status = ?2) "
        "ORDER BY o.created_at DESC, o.order_id LIMIT ?3 OFFSET ?4");
    if (st == NULL) {
        ck_error(r, 500, "internal", "order database unavailable");
        return;
    }
    ck_bind_text(st, 1, u);
    if (s)
        ck_bind_text(st, 2, s);
    ck_bind_int(st, 3, limit);
    ck_bind_int(st, 4, (int64_t)(page - 1) * limit);
    json_t *orders = json_array();
    while (ck_step(st) == CK_ROW)
        json_array_append_new(
            orders, json_pack("{s:s, s:s, s:o, s:I, s:o}", "order_id",
                              ck_col_text(st, 0), "status", ck_col_text(st, 1),
                              "total_amount", ck_json_money(ck_col_int(st, 2)),
                              "item_count", (json_int_t)ck_col_int(st, 3),
                              "created_at", ck_json_time(ck_col_int(st, 4))));
    ck_done(st);
    ck_reply(r, 200,
             json_pack("{s:o, s:{s:i, s:i, s:I, s:I}}", "orders", orders,
                       "pagination", "page", page, "limit", limit, "total",
                       (json_int_t)total, "total_pages",
                       (json_int_t)((total + limit - 1) / limit)));
}

void ck_api_products(ck_req *r)
{
    ck_stmt *st = ck_prep(r->a->cart_db, "SELECT product_id, name, price "
                                         "FROM products ORDER BY "
                                         "product_id");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return;
    }
    json_t *arr = json_array();
    while (ck_step(st) == CK_ROW)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:o}", "product_id",
                                             ck_col_text(st, 0), "name",
                                             ck_col_text(st, 1), "price",
                                             ck_json_money(ck_col_int(st, 2))));
    ck_done(st);
    ck_reply(r, 200, json_pack("{s:o}", "products", arr));
}

void ck_api_inventory(ck_req *r)
{
    ck_stmt *st = ck_prep(
        r->a->inventory_db,
        "SELECT product_id, available_quantity, reserved_quantity, "
        "sold_quantity, total_quantity FROM inventory ORDER BY product_id");
    if (st == NULL) {
        ck_error(r, 500, "internal", "inventory database unavailable");
        return;
    }
    json_t *arr = json_array();
    while (ck_step(st) == CK_ROW)
        json_array_append_new(
            arr, json_pack("{s:s, s:I, s:I, s:I, s:I}", "product_id",
                           ck_col_text(st, 0), "available_quantity",
                           (json_int_t)ck_col_int(st, 1), "reserved_quantity",
                           (json_int_t)ck_col_int(st, 2), "sold_quantity",
                           (json_int_t)ck_col_int(st, 3), "total_quantity",
                           (json_int_t)ck_col_int(st, 4)));
    ck_done(st);
    ck_reply(r, 200, json_pack("{s:o}", "inventory", arr));
}

/* What the (simulated) bank saw: every charge and refund by key. */
void ck_api_ledger(ck_req *r)
{
    ck_stmt *st = ck_prep(
        r->a->payment_db,
        "SELECT key, order_id, state, amount, refunded, txn_id FROM "
        "gateway_charges ORDER BY created_at");
    if (st == NULL) {
        ck_error(r, 500, "internal", "payment database unavailable");
        return;
    }
    json_t *arr = json_array();
    int64_t charged = 0, refunded = 0;
    while (ck_step(st) == CK_ROW) {
        const char *state = ck_col_text(st, 2);
        int64_t amt = ck_col_int(st, 3), ref = ck_col_int(st, 4);
        int counted = strcmp(state, "CHARGED") == 0 ||
                      strcmp(state, "REFUNDED") == 0;
        if (counted) {
            charged += amt;
            refunded += ref;
        }
        json_array_append_new(arr,
                              json_pack("{s:s, s:s?, s:s, s:o, s:o, s:s?}",
                                        "idempotency_key", ck_col_text(st, 0),
                                        "order_id", ck_col_text(st, 1), "state",
                                        state, "amount", ck_json_money(amt),
                                        "refunded", ck_json_money(ref),
                                        "transaction_id", ck_col_text(st, 5)));
    }
    ck_done(st);
    ck_reply(r, 200,
             json_pack("{s:o, s:o, s:o, s:o}", "charges", arr, "total_charged",
                       ck_json_money(charged), "total_refunded",
                       ck_json_money(refunded), "net",
                       ck_json_money(charged - refunded)));
}

/*
 * svc_order.c — the order service: the saga orchestrator (a libsaga engine
 * on its own SQLite file, order-saga.db) and the "order" participant on
 * order.db, which holds the seed's orders and order_items tables.
 *
 * The saga (the seed's Part 8):
 *   0 create_order       order.create / order.cancel   (publishes OrderCreated;
 *                                                        its compensation runs
 *                                                        last: CANCELLED)
 *   1 reserve_inventory  inventory.reserve / inventory.release
 *   2 quote_shipping     shipping.quote (cost into the total, before payment)
 *   3 process_payment    payment.charge / payment.refund
 *   4 fulfill_order      warehouse.fulfill                (pivot)
 *   5 commit_inventory   inventory.commit                 (retriable)
 *   6 confirm_order      order.confirm: COMPLETED         (retriable)
 * Intermediate statuses follow the services' events (inventory-events,
 * payment-events, fulfillment-events), applied only forward.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck.h"

static const char *const ranks[] = {"PENDING",           "INVENTORY_RESERVED",
                                    "PAYMENT_COMPLETED", "FULFILLED",
                                    "COMPLETED",         "CANCELLED"};

static int rank(const char *s)
{
    for (int i = 0; i < 6; i++)
        if (strcmp(ranks[i], s) == 0)
            return i;
    return -1;
}

static int order_schema(ck_db *db)
{
    return ck_schema(
        db,
        "CREATE TABLE IF NOT EXISTS orders ("
        " order_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,"
        " cart_id TEXT NOT NULL, status TEXT NOT NULL,"
        " total_amount INTEGER NOT NULL, subtotal INTEGER NOT NULL,"
        " shipping_cost INTEGER, address_id TEXT NOT NULL,"
        " shipping_address TEXT NOT NULL, payment_method TEXT NOT NULL,"
        " cancel_reason TEXT, saga_id TEXT,"
        " idempotency_key TEXT NOT NULL UNIQUE, request TEXT NOT NULL,"
        " cart_max_item INTEGER NOT NULL, payment_id TEXT,"
        " payment_status TEXT, transaction_id TEXT, refunded_amount INTEGER,"
        " saga_data BLOB NOT NULL,"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS idx_orders_user ON orders(user_id,"
        " created_at);"
        "CREATE INDEX IF NOT EXISTS idx_orders_status ON orders(status);"
        "CREATE INDEX IF NOT EXISTS idx_orders_cart ON orders(cart_id);"
        "CREATE UNIQUE INDEX IF NOT EXISTS unique_cart_pending ON"
        " orders(cart_id) WHERE status NOT IN ('COMPLETED', 'CANCELLED');"
        "CREATE TABLE IF NOT EXISTS order_items ("
        " order_item_id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " order_id TEXT NOT NULL REFERENCES orders(order_id),"
        " product_id TEXT NOT NULL, quantity INTEGER NOT NULL,"
        " price INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS idx_order_items ON order_items(order_id);");
}

/* Move an order forward to @p status; prev_out gets the old status. 1 if it
 * changed, 0 if not (already there, past it, or terminal), -1 on error. */
static int set_status(ck_db *db, const char *order_id, const char *status,
                      const char *reason, int64_t now, char prev_out[32])
{
    ck_stmt *st = ck_prep(db, "SELECT status FROM orders WHERE "
                              "order_id = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, order_id);
    int rc = ck_step(st);
    if (rc != CK_ROW) {
        ck_done(st);
        return rc == CK_DONE ? 0 : -1;
    }
    snprintf(prev_out, 32, "%s", ck_col_text(st, 0));
    ck_done(st);
    int from = rank(prev_out), to = rank(status);
    if (from >= 4 || to <= from)
        return 0;
    st = ck_prep(db, "UPDATE orders SET status = ?, cancel_reason = "
                     "COALESCE(?, cancel_reason), updated_at = ? WHERE "
                     "order_id = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, status);
    if (reason)
        ck_bind_text(st, 2, reason);
    ck_bind_int(st, 3, now);
    ck_bind_text(st, 4, order_id);
    rc = ck_step(st);
    ck_done(st);
    return rc == CK_DONE ? 1 : -1;
}

static int status_event(saga_participant *p, const char *order_id,
                        const char *prev, const char *status, int64_t now,
                        json_t *extra)
{
    json_t *ev = ck_event("OrderStatusUpdatedEvent", order_id, now);
    json_object_set_new(ev, "previous_status", json_string(prev));
    json_object_set_new(ev, "new_status", json_string(status));
    if (extra)
        json_object_update(ev, extra);
    return ck_publish(p, CK_T_ORDER, order_id, ev);
}

/* --- commands ------------------------------------------------------------ */

static json_t *order_row_json(ck_db *db, const char *order_id, int items)
{
    ck_stmt *st = ck_prep(
        db, "SELECT user_id, cart_id, subtotal, shipping_address, "
            "created_at, cart_max_item FROM orders WHERE order_id = ?");
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, order_id);
    json_t *o = NULL;
    if (ck_step(st) == CK_ROW) {
        json_t *addr = json_loads(ck_col_text(st, 3), 0, NULL);
        o = json_pack("{s:s, s:s, s:o, s:o, s:I}", "user_id",
                      ck_col_text(st, 0), "cart_id", ck_col_text(st, 1),
                      "total_amount", ck_json_money(ck_col_int(st, 2)),
                      "shipping_address", addr ? addr : json_null(),
                      "cart_max_item", (json_int_t)ck_col_int(st, 5));
    }
    ck_done(st);
    if (o == NULL || !items)
        return o;
    json_t *arr = json_array();
    st = ck_prep(db, "SELECT product_id, quantity, price FROM order_items "
                     "WHERE order_id = ? ORDER BY order_item_id");
    if (st != NULL) {
        ck_bind_text(st, 1, order_id);
        while (ck_step(st) == CK_ROW)
            json_array_append_new(arr,
                                  json_pack("{s:s, s:I, s:o}", "product_id",
                                            ck_col_text(st, 0), "quantity",
                                            (json_int_t)ck_col_int(st, 1),
                                            "price",
                                            ck_json_money(ck_col_int(st, 2))));
        ck_done(st);
    }
    json_object_set_new(o, "items", arr);
    return o;
}

/* OrderCreatedEvent from the saga's data, which holds what the order row
 * and its items were written from (api_order.c: user_id, cart_id, items
 * with prices in cents, shipping_address, subtotal): the same fields in the
 * same order as from the row, without reading the row and its items back
 * (two statements on the main loop per checkout). NULL if a field is
 * missing: then the row is read. */
static json_t *created_from_data(const saga_command *c, const char *order_id,
                                 int64_t now)
{
    const char *u, *ca, *it, *ad;
    size_t ul, cl, il, al;
    int64_t sub = ck_data_int(c->payload, c->payload_len, "subtotal", -1);
    if (sub < 0 ||
        saga_data_get_str(c->payload, c->payload_len, "user_id", &u, &ul) ||
        saga_data_get_str(c->payload, c->payload_len, "cart_id", &ca, &cl) ||
        saga_data_get_str(c->payload, c->payload_len, "items", &it, &il) ||
        saga_data_get_str(c->payload, c->payload_len, "shipping_address", &ad,
                          &al))
        return NULL;
    json_t *items = json_loadb(it, il, 0, NULL);
    json_t *addr = json_loadb(ad, al, 0, NULL);
    json_t *user = json_stringn(u, ul), *cart = json_stringn(ca, cl);
    size_t i;
    json_t *x;
    int ok = json_is_array(items) && addr != NULL && user != NULL &&
             cart != NULL;
    json_array_foreach(items, i, x)
    {
        json_t *pr = json_object_get(x, "price");
        if (!json_is_integer(pr)) {
            ok = 0;
            break;
        }
        json_object_set_new(x, "price", ck_json_money(json_integer_value(pr)));
    }
    json_t *ev = ok ? ck_event("OrderCreatedEvent", order_id, now) : NULL;
    if (ev == NULL) {
        json_decref(items);
        json_decref(addr);
        json_decref(user);
        json_decref(cart);
        return NULL;
    }
    json_object_set_new(ev, "user_id", user);
    json_object_set_new(ev, "cart_id", cart);
    json_object_set_new(ev, "total_amount", ck_json_money(sub));
    json_object_set_new(ev, "shipping_address", addr);
    json_object_set_new(ev, "items", items);
    return ev;
}

static int on_create(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    ck_app *a = arg;
    ck_db *db = a->order_db;
    char order_id[64], prev[32];
    ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                sizeof order_id);
    int64_t now = ck_now_ms();
    if (c->compensating) {
        /* The last compensation: the order is CANCELLED. Why: what the
         * saga got furthest with. */
        int64_t sub = ck_data_int(c->payload, c->payload_len, "subtotal", 0);
        int64_t ship = ck_data_int(c->payload, c->payload_len, "shipping_cost",
                                   0);
        char rsv[64], pay[64];
        ck_data_str(c->payload, c->payload_len, "reservation_id", rsv,
                    sizeof rsv);
        ck_data_str(c->payload, c->payload_len, "payment_id", pay, sizeof pay);
        const char *reason = pay[0]   ? "fulfillment_failed"
                             : rsv[0] ? "payment_failed"
                                      : "inventory_failed";
        int ch = set_status(db, order_id, "CANCELLED", reason, now, prev);
        if (ch < 0)
            return SAGA_ESTORE;
        ck_stmt *st = ship > 0 ? ck_prep(db, "UPDATE orders SET "
                                             "shipping_cost = ?, "
                                             "total_amount = ? WHERE "
                                             "order_id = ?")
                               : NULL;
        if (st != NULL) {
            ck_bind_int(st, 1, ship);
            ck_bind_int(st, 2, sub + ship);
            ck_bind_text(st, 3, order_id);
            int urc = ck_step(st);
            ck_done(st);
            if (urc != CK_DONE)
                return SAGA_ESTORE;
        }
        if (ch == 1) {
            json_t *ev = ck_event("OrderCancelledEvent", order_id, now);
            json_t *row = order_row_json(db, order_id, 0);
            json_object_set_new(ev, "reason", json_string(reason));
            json_object_set_new(ev, "compensation_required",
                                json_boolean(rsv[0] != '\0'));
            json_object_set_new(ev, "previous_status", json_string(prev));
            if (row)
                json_object_set(ev, "user_id", json_object_get(row, "user_id"));
            json_decref(row);
            return ck_publish(p, CK_T_ORDER, order_id, ev);
        }
        return SAGA_OK;
    }
    json_t *ev = created_from_data(c, order_id, now);
    if (ev != NULL)
        return ck_publish(p, CK_T_ORDER, order_id, ev);
    json_t *row = order_row_json(db, order_id, 1);
    if (row == NULL)
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "no such order");
    ev = ck_event("OrderCreatedEvent", order_id, now);
    json_object_del(row, "cart_max_item");
    json_object_update(ev, row);
    json_decref(row);
    return ck_publish(p, CK_T_ORDER, order_id, ev);
}

static int on_confirm(saga_participant *p, const saga_command *c, saga_reply *r,
                      void *arg)
{
    ck_app *a = arg;
    ck_db *db = a->order_db;
    char order_id[64], prev[32];
    ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                sizeof order_id);
    int64_t now = ck_now_ms();
    int64_t sub = ck_data_int(c->payload, c->payload_len, "subtotal", 0);
    int64_t ship = ck_data_int(c->payload, c->payload_len, "shipping_cost", 0);
    ck_stmt *st = ck_prep(db, "UPDATE orders SET shipping_cost = ?, "
                              "total_amount = ? WHERE order_id = ?");
    if (st == NULL)
        return SAGA_ESTORE;
    ck_bind_int(st, 1, ship);
    ck_bind_int(st, 2, sub + ship);
    ck_bind_text(st, 3, order_id);
    int rc = ck_step(st);
    ck_done(st);
    if (rc != CK_DONE)
        return SAGA_ESTORE;
    int ch = set_status(db, order_id, "COMPLETED", NULL, now, prev);
    if (ch < 0)
        return SAGA_ESTORE;
    if (ch == 0)
        return saga_reply_set(r, SAGA_OUTCOME_OK, NULL, 0, NULL);
    json_t *row = order_row_json(db, order_id, 0);
    if (row == NULL)
        return SAGA_ESTORE;
    json_t *extra = json_pack("{s:O, s:o}", "user_id",
                              json_object_get(row, "user_id"), "total_amount",
                              ck_json_money(sub + ship));
    rc = status_event(p, order_id, prev, "COMPLETED", now, extra);
    json_decref(extra);
    if (rc == SAGA_OK) {
        /* The cart's items up to the checkout are bought: clear them. */
        json_t *ev = ck_event("CartCheckedOutEvent", order_id, now);
        json_object_set(ev, "cart_id", json_object_get(row, "cart_id"));
        json_object_set(ev, "max_cart_item_id",
                        json_object_get(row, "cart_max_item"));
        rc = ck_publish(p, CK_T_CART, order_id, ev);
    }
    json_decref(row);
    return rc;
}

/* --- events: statuses move forward ---------------------------------------- */

static int on_event(saga_participant *p, const saga_command *e, void *arg)
{
    ck_app *a = arg;
    ck_db *db = a->order_db;
    json_t *ev = json_loadb(e->payload, e->payload_len, 0, NULL);
    if (ev == NULL)
        return SAGA_OK; /* not ours to judge: dropped */
    const char *type = json_string_value(json_object_get(ev, "event_type"));
    const char *oid = json_string_value(json_object_get(ev, "order_id"));
    const char *to = NULL;
    int rc = SAGA_OK;
    int64_t now = ck_now_ms();
    if (type == NULL || oid == NULL)
        goto out;
    if (strcmp(type, "InventoryReservedEvent") == 0)
        to = "INVENTORY_RESERVED";
    else if (strcmp(type, "OrderFulfilledEvent") == 0)
        to = "FULFILLED";
    else if (strcmp(type, "PaymentProcessedEvent") == 0 ||
             strcmp(type, "PaymentFailedEvent") == 0 ||
             strcmp(type, "PaymentRefundedEvent") == 0) {
        int ok = strcmp(type, "PaymentProcessedEvent") == 0;
        int refund = strcmp(type, "PaymentRefundedEvent") == 0;
        ck_stmt *st = ck_prep(
            db, "UPDATE orders SET payment_id = COALESCE(?, payment_id), "
                "transaction_id = COALESCE(?, transaction_id), "
                "payment_status = ?, refunded_amount = COALESCE(?, "
                "refunded_amount), updated_at = ? WHERE order_id = ? AND "
                "(payment_status IS NULL OR payment_status != 'REFUNDED')");
        if (st == NULL) {
            rc = SAGA_ESTORE;
            goto out;
        }
        const char *pid = json_string_value(json_object_get(ev, "payment_id"));
        const char *txn = json_string_value(
            json_object_get(ev, "transaction_id"));
        if (pid)
            ck_bind_text(st, 1, pid);
        if (txn)
            ck_bind_text(st, 2, txn);
        ck_bind_text(st, 3, ok ? "COMPLETED" : refund ? "REFUNDED" : "FAILED");
        if (refund)
            ck_bind_int(st, 4, ck_money_parse(json_object_get(ev, "amount")));
        ck_bind_int(st, 5, now);
        ck_bind_text(st, 6, oid);
        if (ck_step(st) != CK_DONE)
            rc = SAGA_ESTORE;
        ck_done(st);
        if (ok)
            to = "PAYMENT_COMPLETED";
    }
    if (to != NULL && rc == SAGA_OK) {
        char prev[32];
        int ch = set_status(db, oid, to, NULL, now, prev);
        if (ch < 0)
            rc = SAGA_ESTORE;
        else if (ch == 1)
            rc = status_event(p, oid, prev, to, now, NULL);
    }
out:
    json_decref(ev);
    return rc;
}

/* --- the engine ------------------------------------------------------------ */

static void engine_log(saga_log_level level, const char *saga_id, int step,
                       const char *msg, void *arg)
{
    (void)arg, (void)step;
    if (level >= SAGA_LOG_ERROR ||
        (level >= SAGA_LOG_WARN && strstr(msg, "stale") == NULL))
        fprintf(stderr, "saga-checkout: orchestrator: %s%s%s\n",
                saga_id ? saga_id : "", saga_id ? ": " : "", msg);
}

static int add_remote(saga_def *d, const char *name, const char *svc,
                      const char *cmd, const char *comp, saga_step_kind kind,
                      uint32_t timeout_ms, uint32_t attempts)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.kind = kind;
    o.service = svc;
    o.command = cmd;
    o.comp_command = comp;
    o.timeout_ms = timeout_ms;
    o.retry.max_attempts = attempts;
    o.retry.initial_backoff_ms = 100;
    o.retry.max_backoff_ms = 2000;
    o.comp_retry.initial_backoff_ms = 100;
    o.comp_retry.max_backoff_ms = 1000;
    int rc = saga_def_add_step(d, name, NULL, NULL, &o, NULL);
    if (rc != SAGA_OK)
        fprintf(stderr, "saga-checkout: step %s: %s\n", name,
                saga_def_errmsg(d));
    return rc;
}

static int define(saga_def **out, const ck_timing *t)
{
    saga_def *d;
    if (saga_def_new(&d, "checkout", 1) != SAGA_OK)
        return -1;
    int rc = add_remote(d, "create_order", "order", "order.create",
                        "order.create", SAGA_STEP_COMPENSATABLE, 5000, 0);
    rc = rc ? rc
            : add_remote(d, "reserve_inventory", "inventory",
                         "inventory.reserve", "inventory.reserve",
                         SAGA_STEP_COMPENSATABLE, 5000, 0);
    rc = rc ? rc
            : add_remote(d, "quote_shipping", "shipping", "shipping.quote",
                         NULL, SAGA_STEP_COMPENSATABLE, 5000, 0);
    rc = rc ? rc
            : add_remote(d, "process_payment", "payment", "payment.charge",
                         "payment.charge", SAGA_STEP_COMPENSATABLE,
                         t->payment_step_timeout_ms, 4);
    rc = rc ? rc
            : add_remote(d, "fulfill_order", "warehouse", "warehouse.fulfill",
                         NULL, SAGA_STEP_PIVOT, 10000, SAGA_RETRY_FOREVER);
    rc = rc ? rc
            : add_remote(d, "commit_inventory", "inventory", "inventory.commit",
                         NULL, SAGA_STEP_RETRIABLE, 5000, 0);
    rc = rc ? rc
            : add_remote(d, "confirm_order", "order", "order.confirm", NULL,
                         SAGA_STEP_RETRIABLE, 5000, 0);
    if (rc == SAGA_OK)
        rc = saga_def_set_deadline(d, 120000);
    if (rc != SAGA_OK) {
        saga_def_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int ck_order_open(ck_app *a)
{
    saga_participant *p;
    if (ck_participant(a, CK_SVC_ORDER, &p, &a->order_db) != 0 ||
        order_schema(a->order_db) != CK_OK)
        return -1;
    if (saga_participant_on_command(p, "order.create", on_create, a) ||
        saga_participant_on_command(p, "order.confirm", on_confirm, a) ||
        saga_participant_on_event(p, CK_T_INVENTORY, "order", NULL, on_event,
                                  a) ||
        saga_participant_on_event(p, CK_T_PAYMENT, "order", NULL, on_event,
                                  a) ||
        saga_participant_on_event(p, CK_T_FULFILL, "order", NULL, on_event,
                                  a) ||
        saga_participant_start(p))
        return -1;

    /* The engine's store: DIR/order-saga.db or schema order_saga. */
    char spec[2200];
    saga_store *s;
    if (ck_store_spec(a, "order-saga", spec, sizeof spec, NULL) != 0)
        return -1;
    if (a->store != NULL) {
        if (saga_store_open(&s, spec) != SAGA_OK) {
            fprintf(stderr,
                    "saga-checkout: cannot open the orchestrator's "
                    "store: %s\n",
                    saga_open_errmsg());
            return -1;
        }
    } else {
        saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
        so.synchronous = ck_synchronous();
        if (saga_store_sqlite_open(&s, spec, &so) != SAGA_OK)
            return -1;
    }
    saga_transport *t = ck_transport(a, "orchestrator");
    if (t == NULL) {
        saga_store_free(s);
        return -1;
    }
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = a->loop;
    o.service = "orchestrator";
    o.log = engine_log;
    o.log_event = ck_log_sink(a);
    o.log_event_arg = stderr;
    o.log_level = a->log_json ? SAGA_LOG_INFO : 0;
    /* CK_MAX_PENDING: the engine refuses new sagas (SAGA_EFULL) past this
     * many; the checkout checks the same count before it records an order
     * (api_order.c, overloaded()) and answers 503 overloaded. */
    o.max_active = (size_t)a->timing.max_pending;
    saga_def *d;
    if (saga_engine_new(&a->engine, s, t, &o) != SAGA_OK) {
        saga_store_free(s);
        saga_transport_free(t);
        return -1;
    }
    if (define(&d, &a->timing) != 0)
        return -1;
    if (saga_engine_register(a->engine, d) != SAGA_OK) {
        saga_def_free(d);
        return -1;
    }
    /* The HTTP front reads the cart and payment databases. */
    if (a->svc[CK_SVC_CART] == NULL && a->cart_db == NULL) {
        if (ck_open_db(a, "cart", &a->cart_db) != 0 ||
            ck_cart_schema(a->cart_db) != CK_OK)
            return -1;
        a->own_db[0] = 1;
    }
    if (a->svc[CK_SVC_PAYMENT] == NULL && a->payment_db == NULL) {
        if (ck_open_db(a, "payment", &a->payment_db) != 0 ||
            ck_payment_schema(a->payment_db) != CK_OK ||
            ck_gateway_new(&a->gateway, a, a->payment_db) != 0)
            return -1;
        a->own_db[1] = 1;
    }
    if (a->svc[CK_SVC_INVENTORY] == NULL && a->inventory_db == NULL) {
        if (ck_open_db(a, "inventory", &a->inventory_db) != 0 ||
            ck_inventory_schema(a->inventory_db) != CK_OK)
            return -1;
        a->own_db[2] = 1;
    }
    return 0;
}

/* Re-issue the saga start of every order accepted before a crash whose start
 * was not yet durable (the idempotency key, the order id, makes this safe). */
int ck_order_restart_pending(ck_app *a);

int ck_order_start(ck_app *a)
{
    if (saga_engine_start(a->engine) != SAGA_OK) {
        fprintf(stderr, "saga-checkout: engine: %s\n",
                saga_engine_errmsg(a->engine));
        return -1;
    }
    return ck_order_restart_pending(a);
}

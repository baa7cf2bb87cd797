/*
 * svc_cart.c — the cart service: carts, cart_items and the products
 * catalogue on cart.db, the cart REST endpoints, and the participant that
 * clears a cart's bought items when its order completes (CartCheckedOutEvent
 * on cart-events).
 *
 * The cart's user is the X-User-Id header, which the seed's API gateway sets
 * after authentication: a cart belongs to the user who first added to it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define CK_CART_MAX_LINES 100

int ck_cart_schema(ck_db *db)
{
    return ck_schema(
        db,
        "CREATE TABLE IF NOT EXISTS products (product_id TEXT PRIMARY KEY,"
        " name TEXT NOT NULL, price INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS carts (cart_id TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL, created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS idx_carts_user ON carts(user_id);"
        "CREATE TABLE IF NOT EXISTS cart_items ("
        " cart_item_id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " cart_id TEXT NOT NULL REFERENCES carts(cart_id),"
        " product_id TEXT NOT NULL, quantity INTEGER NOT NULL,"
        " price INTEGER NOT NULL, added_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL, UNIQUE (cart_id, product_id));"
        "CREATE INDEX IF NOT EXISTS idx_cart_items ON cart_items(cart_id);");
}

/* Name and price follow the file; a product is never duplicated. */
int ck_cart_seed(ck_db *db, const ck_catalog *c, int64_t now)
{
    ck_stmt *st = ck_prep(
        db, "INSERT INTO products (product_id, name, price, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(product_id) DO UPDATE SET "
            "name = excluded.name, price = excluded.price, updated_at = "
            "excluded.updated_at");
    if (st == NULL)
        return -1;
    ck_begin(db);
    for (size_t i = 0; i < c->n; i++) {
        ck_reset(st);
        ck_bind_text(st, 1, c->v[i].id);
        ck_bind_text(st, 2, c->v[i].name);
        ck_bind_int(st, 3, c->v[i].price);
        ck_bind_int(st, 4, now);
        ck_step(st);
    }
    ck_done(st);
    return ck_commit(db) == CK_OK ? 0 : -1;
}

static int on_checked_out(saga_participant *p, const saga_command *e, void *arg)
{
    (void)p;
    ck_app *a = arg;
    json_t *ev = json_loadb(e->payload, e->payload_len, 0, NULL);
    const char *cart = json_string_value(json_object_get(ev, "cart_id"));
    json_t *max = json_object_get(ev, "max_cart_item_id");
    int rc = SAGA_OK;
    if (cart != NULL && json_is_integer(max)) {
        ck_stmt *st = ck_prep(a->cart_db,
                              "DELETE FROM cart_items WHERE cart_id = ? "
                              "AND cart_item_id <= ?");
        if (st == NULL)
            rc = SAGA_ESTORE;
        else {
            ck_bind_text(st, 1, cart);
            ck_bind_int(st, 2, json_integer_value(max));
            if (ck_step(st) != CK_DONE)
                rc = SAGA_ESTORE;
            ck_done(st);
        }
    }
    json_decref(ev);
    return rc;
}

int ck_cart_open(ck_app *a)
{
    saga_participant *p;
    if (ck_participant(a, CK_SVC_CART, &p, &a->cart_db) != 0 ||
        ck_cart_schema(a->cart_db) != CK_OK ||
        ck_cart_seed(a->cart_db, &a->catalog, ck_now_ms()) != 0)
        return -1;
    if (saga_participant_on_event(p, CK_T_CART, "cart", NULL, on_checked_out,
                                  a) ||
        saga_participant_start(p))
        return -1;
    return 0;
}

/* --- REST ------------------------------------------------------------------ */

static json_t *cart_json(ck_app *a, const char *cart_id, const char *user,
                         int64_t updated)
{
    ck_stmt *st = ck_prep(
        a->cart_db, "SELECT i.cart_item_id, i.product_id, i.quantity, "
                    "i.price, p.name, i.updated_at FROM cart_items i LEFT "
                    "JOIN products p ON p.product_id = i.product_id WHERE "
                    "i.cart_id = ? ORDER BY i.cart_item_id");
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, cart_id);
    json_t *items = json_array();
    int64_t total = 0, count = 0;
    while (ck_step(st) == CK_ROW) {
        char id[32];
        snprintf(id, sizeof id, "item_%lld", (long long)ck_col_int(st, 0));
        int64_t q = ck_col_int(st, 2), p = ck_col_int(st, 3);
        total += q * p;
        count += q;
        if (ck_col_int(st, 5) > updated)
            updated = ck_col_int(st, 5);
        json_array_append_new(items, json_pack("{s:s, s:s, s:I, s:o, s:s?}",
                                               "cart_item_id", id, "product_id",
                                               ck_col_text(st, 1), "quantity",
                                               (json_int_t)q, "price",
                                               ck_json_money(p), "name",
                                               ck_col_text(st, 4)));
    }
    ck_done(st);
    return json_pack("{s:s, s:s, s:o, s:o, s:I, s:o}", "cart_id", cart_id,
                     "user_id", user, "items", items, "total_amount",
                     ck_json_money(total), "item_count", (json_int_t)count,
                     "updated_at", ck_json_time(updated));
}

/* 1 found (owner copied), 0 not found, -1 error. */
static int cart_owner(ck_app *a, const char *cart_id, char *owner, size_t size,
                      int64_t *updated)
{
    ck_stmt *st = ck_prep(a->cart_db, "SELECT user_id, updated_at FROM "
                                      "carts WHERE cart_id = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, cart_id);
    int rc = ck_step(st);
    if (rc != CK_ROW && rc != CK_DONE) { /* a failed read is not "none" */
        ck_done(st);
        return -1;
    }
    int found = rc == CK_ROW;
    if (found) {
        snprintf(owner, size, "%s", ck_col_text(st, 0));
        *updated = ck_col_int(st, 1);
    }
    ck_done(st);
    return found;
}

static int quantity(ck_req *r, json_t *b, int64_t *q)
{
    json_t *v = json_object_get(b, "quantity");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) > 10000) {
        ck_error(r, 422, "invalid_quantity",
                 "quantity is required and must be an integer from 1 to "
                 "10000");
        return -1;
    }
    *q = json_integer_value(v);
    return 0;
}

static int64_t item_id(const char *s)
{
    if (strncmp(s, "item_", 5) == 0)
        s += 5;
    char *end;
    long long v = strtoll(s, &end, 10);
    return (*s && *end == '\0' && v > 0) ? v : -1;
}

static void add_item(ck_req *r, const char *cart_id, json_t *b, int exists)
{
    ck_app *a = r->a;
    json_t *pid = json_object_get(b, "product_id");
    if (!json_is_string(pid) || json_string_length(pid) == 0) {
        ck_error(r, 422, "invalid_field",
                 "product_id is required and must be a non-empty string");
        return;
    }
    int64_t q;
    if (quantity(r, b, &q) != 0)
        return;
    ck_db *db = a->cart_db;
    ck_stmt *st = ck_prep(db, "SELECT price FROM products WHERE "
                              "product_id = ?");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return;
    }
    ck_bind_text(st, 1, json_string_value(pid));
    int rc = ck_step(st);
    if (rc != CK_ROW) {
        ck_done(st);
        if (rc == CK_DONE)
            ck_error(r, 404, "product_not_found", "no product %s",
                     json_string_value(pid));
        else /* the database failed: the product may well exist */
            ck_error(r, 503, "unavailable",
                     "cart database unavailable: "
                     "retry");
        return;
    }
    int64_t price = ck_col_int(st, 0);
    ck_done(st);
    /* A bounded cart keeps every order's saga data small. */
    st = ck_prep(db, "SELECT COUNT(*) FROM cart_items WHERE cart_id = ? AND "
                     "product_id != ?");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return;
    }
    ck_bind_text(st, 1, cart_id);
    ck_bind_text(st, 2, json_string_value(pid));
    int lines = ck_step(st) == CK_ROW ? ck_col_int(st, 0) : 0;
    ck_done(st);
    if (lines >= CK_CART_MAX_LINES) {
        ck_error(r, 422, "cart_full", "a cart holds at most %d products",
                 CK_CART_MAX_LINES);
        return;
    }
    int64_t now = ck_now_ms();
    ck_begin(db);
    int ok = 1;
    if (!exists) {
        st = ck_prep(db, "INSERT INTO carts (cart_id, user_id, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?) ON CONFLICT DO "
                         "NOTHING");
        ok = st != NULL;
        if (ok) {
            ck_bind_text(st, 1, cart_id);
            ck_bind_text(st, 2, r->user_id);
            ck_bind_int(st, 3, now);
            ck_bind_int(st, 4, now);
            ok = ck_step(st) == CK_DONE;
            ck_done(st);
        }
    }
    /* The same product again adds to its line (the seed's unique
     * (cart_id, product_id)). */
    st = ok ? ck_prep(db, "INSERT INTO cart_items (cart_id, product_id, "
                          "quantity, price, added_at, updated_at) VALUES "
                          "(?, ?, ?, ?, ?, ?) ON CONFLICT(cart_id, "
                          "product_id) DO UPDATE SET quantity = CASE WHEN "
                          "cart_items.quantity + excluded.quantity > 10000 "
                          "THEN 10000 ELSE cart_items.quantity + "
                          "excluded.quantity END, price = "
                          "excluded.price, updated_at = excluded.updated_at "
                          "RETURNING cart_item_id, quantity, added_at")
            : NULL;
    int64_t id = 0, qty = 0, added = now;
    if (st != NULL) {
        ck_bind_text(st, 1, cart_id);
        ck_bind_text(st, 2, json_string_value(pid));
        ck_bind_int(st, 3, q);
        ck_bind_int(st, 4, price);
        ck_bind_int(st, 5, now);
        ck_bind_int(st, 6, now);
        ok = ck_step(st) == CK_ROW;
        if (ok) {
            id = ck_col_int(st, 0);
            qty = ck_col_int(st, 1);
            added = ck_col_int(st, 2);
        }
        ck_done(st);
    } else
        ok = 0;
    if (ok) {
        st = ck_prep(db, "UPDATE carts SET updated_at = ? WHERE "
                         "cart_id = ?");
        ok = st != NULL;
        if (st) {
            ck_bind_int(st, 1, now);
            ck_bind_text(st, 2, cart_id);
            ok = ck_step(st) == CK_DONE;
            ck_done(st);
        }
    }
    if (!ok || ck_commit(db) != CK_OK) {
        ck_rollback(db);
        ck_error(r, 503, "unavailable", "the cart could not be updated");
        return;
    }
    char ids[32];
    snprintf(ids, sizeof ids, "item_%lld", (long long)id);
    ck_reply(r, 201,
             json_pack("{s:s, s:s, s:s, s:I, s:o, s:o}", "cart_item_id", ids,
                       "cart_id", cart_id, "product_id", json_string_value(pid),
                       "quantity", (json_int_t)qty, "price",
                       ck_json_money(price), "added_at", ck_json_time(added)));
}

static void change_item(ck_req *r, const char *cart_id, const char *item,
                        json_t *b)
{
    ck_app *a = r->a;
    int64_t id = item_id(item), q = 0;
    if (b != NULL && quantity(r, b, &q) != 0)
        return;
    int64_t now = ck_now_ms();
    ck_stmt *st = ck_prep(
        a->cart_db, b ? "UPDATE cart_items SET quantity = ?3, updated_at = ?4 "
                        "WHERE cart_item_id = ?1 AND cart_id = ?2"
                      : "DELETE FROM cart_items WHERE cart_item_id = ?1 AND "
                        "cart_id = ?2");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return;
    }
    ck_bind_int(st, 1, id);
    ck_bind_text(st, 2, cart_id);
    if (b) {
        ck_bind_int(st, 3, q);
        ck_bind_int(st, 4, now);
    }
    int rc = ck_step(st);
    ck_done(st);
    if (rc != CK_DONE) {
        ck_error(r, 503, "unavailable", "the cart could not be updated");
        return;
    }
    if (ck_changes(a->cart_db) == 0) {
        ck_error(r, 404, "item_not_found", "no item %s in cart %s", item,
                 cart_id);
        return;
    }
    if (b == NULL) {
        ck_reply(r, 204, NULL);
        return;
    }
    ck_reply(r, 200,
             json_pack("{s:s, s:I, s:o}", "cart_item_id", item, "quantity",
                       (json_int_t)q, "updated_at", ck_json_time(now)));
}

void ck_api_cart(ck_req *r)
{
    ck_app *a = r->a;
    const char *cart_id = r->segs[3];
    if (r->user_id == NULL || r->user_id[0] == '\0') {
        ck_error(r, 401, "missing_user_id",
                 "the X-User-Id header (set by the API gateway) is required");
        return;
    }
    if (strlen(cart_id) > 50) {
        ck_error(r, 422, "invalid_field", "cart_id is longer than 50 bytes");
        return;
    }
    char owner[256];
    int64_t updated = 0;
    int found = cart_owner(a, cart_id, owner, sizeof owner, &updated);
    if (found < 0) {
        ck_error(r, 503, "unavailable", "cart database unavailable: retry");
        return;
    }
    if (found && strcmp(owner, r->user_id) != 0) {
        ck_error(r, 403, "forbidden", "cart %s belongs to another user",
                 cart_id);
        return;
    }
    int post = strcmp(r->method, "POST") == 0;
    if (!found && !post) {
        ck_error(r, 404, "cart_not_found", "no cart %s", cart_id);
        return;
    }
    if (strcmp(r->method, "GET") == 0) {
        json_t *c = cart_json(a, cart_id, owner, updated);
        if (c == NULL)
            ck_error(r, 500, "internal", "cart database unavailable");
        else
            ck_reply(r, 200, c);
        return;
    }
    if (strcmp(r->method, "DELETE") == 0) {
        change_item(r, cart_id, r->segs[5], NULL);
        return;
    }
    json_t *b = ck_body_object(r);
    if (b == NULL)
        return;
    if (post)
        add_item(r, cart_id, b, found);
    else
        change_item(r, cart_id, r->segs[5], b);
    json_decref(b);
}

/*
 * api_order.c — checkout (the seed's idempotency flow), order status with
 * its saga steps (from the saga journal), and order history.
 *
 * Checkout: the order row, its items and the idempotency key are written in
 * one SQLite transaction on order.db, then the saga is started with the
 * order id as the engine's idempotency key; the 202 is sent from the start
 * callback, once the start is durable. A request with a known key joins that
 * order: the same saga_start with the same key answers the same saga (also
 * for 50 clients at once, or after a crash between the two writes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define CHECKOUT_WAIT_MS 10000

typedef struct start_ctx {
    ck_app *a;
    ck_wait *w; /* NULL: a restart, nobody waits */
    char order_id[64];
    char key[256];
    int created; /* this request created the order: 202, else 200 */
} start_ctx;

static json_t *accepted_body(ck_db *db, const char *order_id)
{
    ck_stmt *st = ck_prep(db, "SELECT status, idempotency_key, "
                                   "created_at FROM orders WHERE order_id = ?");
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, order_id);
    json_t *b = NULL;
    if (ck_step(st) == CK_ROW) {
        int64_t created = ck_col_int(st, 2);
        b = json_pack("{s:s, s:s, s:o, s:s, s:o}", "order_id", order_id,
                      "status", ck_col_text(st, 0),
                      "estimated_completion",
                      ck_json_time(created + 3 * 60 * 1000), "idempotency_key",
                      ck_col_text(st, 1), "created_at",
                      ck_json_time(created));
    }
    ck_done(st);
    return b;
}

static void started(saga_engine *e, int status, const char *saga_id,
                    int existed, void *arg)
{
    (void)e, (void)existed;
    start_ctx *c = arg;
    ck_app *a = c->a;
    if (status == SAGA_OK) {
        ck_stmt *st = ck_prep(a->order_db,
                                   "UPDATE orders SET saga_id = ? WHERE "
                                   "order_id = ? AND saga_id IS NULL");
        if (st != NULL) {
            ck_bind_text(st, 1, saga_id);
            ck_bind_text(st, 2, c->order_id);
            ck_step(st);
            ck_done(st);
        }
    }
    if (c->w != NULL) {
        if (status != SAGA_OK)
            ck_wait_error(c->w, 503, "unavailable",
                          "the order is recorded but its processing could "
                          "not be started yet; retry with the same "
                          "Idempotency-Key");
        else
            ck_wait_reply(c->w, c->created ? 202 : 200,
                          accepted_body(a->order_db, c->order_id),
                          "x-idempotency-key", c->key);
    }
    free(c);
}

/* saga_start for an order whose row exists (new, duplicate or restart). */
static int start_saga(ck_app *a, const char *order_id, ck_req *r,
                      int created)
{
    ck_stmt *st = ck_prep(a->order_db, "SELECT saga_data, "
                                            "idempotency_key FROM orders "
                                            "WHERE order_id = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, order_id);
    if (ck_step(st) != CK_ROW) {
        ck_done(st);
        return -1;
    }
    start_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ck_done(st);
        return -1;
    }
    c->a = a;
    c->created = created;
    snprintf(c->order_id, sizeof c->order_id, "%s", order_id);
    snprintf(c->key, sizeof c->key, "%s",
             ck_col_text(st, 1));
    char id[SAGA_ID_SIZE];
    if (r != NULL)
        c->w = ck_defer(r, CHECKOUT_WAIT_MS);
    /* A request's W3C traceparent: the saga and its steps join its trace. */
    size_t dlen;
    const void *data = ck_col_blob(st, 0, &dlen);
    int rc = saga_start_traced(a->engine, "checkout", order_id, data, dlen,
                               r != NULL ? r->traceparent : NULL, id, started,
                               c);
    ck_done(st);
    if (rc != SAGA_OK) {
        ck_log(a, "saga start of %s: %s", order_id, saga_strerror(rc));
        if (c->w != NULL)
            ck_wait_error(c->w, 503, "unavailable",
                          "the order is recorded but its processing could "
                          "not be started yet; retry with the same "
                          "Idempotency-Key");
        free(c);
    }
    return 0;
}

int ck_order_restart_pending(ck_app *a);
int ck_order_restart_pending(ck_app *a)
{
    ck_stmt *st = ck_prep(a->order_db, "SELECT order_id FROM orders "
                                            "WHERE saga_id IS NULL");
    if (st == NULL)
        return -1;
    int n = 0;
    while (ck_step(st) == CK_ROW) {
        char id[64];
        snprintf(id, sizeof id, "%s", ck_col_text(st, 0));
        if (start_saga(a, id, NULL, 0) == 0)
            n++;
    }
    ck_done(st);
    if (n > 0)
        ck_log(a, "re-started %d order saga(s) accepted before a restart", n);
    return 0;
}

/* --- checkout ------------------------------------------------------------- */

static const char *field_str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) && json_string_length(v) > 0 ? json_string_value(v)
                                                          : NULL;
}

static int validate(ck_req *r, json_t *b)
{
    if (field_str(b, "cart_id") == NULL) {
        ck_error(r, 422, "invalid_field",
                 "cart_id is required and must be a non-empty string");
        return -1;
    }
    json_t *addr = json_object_get(b, "shipping_address");
    if (!json_is_object(addr)) {
        ck_error(r, 422, "invalid_field",
                 "shipping_address is required and must be an object");
        return -1;
    }
    static const char *const af[] = {"street", "city", "zip", "country"};
    for (size_t i = 0; i < 4; i++)
        if (field_str(addr, af[i]) == NULL) {
            ck_error(r, 422, "invalid_field",
                     "shipping_address.%s is required and must be a "
                     "non-empty string",
                     af[i]);
            return -1;
        }
    json_t *pm = json_object_get(b, "payment_method");
    if (!json_is_object(pm)) {
        ck_error(r, 422, "invalid_field",
                 "payment_method is required and must be an object");
        return -1;
    }
    if (field_str(pm, "type") == NULL) {
        ck_error(r, 422, "invalid_field",
                 "payment_method.type is required and must be a string");
        return -1;
    }
    if (field_str(pm, "card_token") == NULL) {
        ck_error(r, 422, "invalid_field",
                 "payment_method.card_token is required and must be a "
                 "string");
        return -1;
    }
    return 0;
}

static int existing_order(ck_app *a, const char *key, char *order_id,
                          size_t size, char **request, int *has_saga)
{
    ck_stmt *st = ck_prep(a->order_db,
                               "SELECT order_id, request, saga_id IS NOT NULL "
                               "FROM orders WHERE idempotency_key = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, key);
    int found = 0;
    if (ck_step(st) == CK_ROW) {
        found = 1;
        snprintf(order_id, size, "%s", ck_col_text(st, 0));
        *request = strdup(ck_col_text(st, 1));
        *has_saga = ck_col_int(st, 2);
    }
    ck_done(st);
    return found;
}

static void answer_known(ck_req *r, const char *order_id, const char *key,
                         int has_saga)
{
    ck_app *a = r->a;
    if (has_saga) {
        ck_reply_hdr(r, 200, accepted_body(a->order_db, order_id),
                     "x-idempotency-key", key);
        return;
    }
    if (start_saga(a, order_id, r, 0) != 0)
        ck_error(r, 503, "unavailable", "try again with the same key");
}

static json_t *load_cart(ck_req *r, const char *cart_id, int64_t *subtotal,
                         int64_t *max_item)
{
    ck_app *a = r->a;
    ck_stmt *st = ck_prep(a->cart_db, "SELECT user_id FROM carts WHERE "
                                           "cart_id = ?");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return NULL;
    }
    ck_bind_text(st, 1, cart_id);
    if (ck_step(st) != CK_ROW) {
        ck_done(st);
        ck_error(r, 404, "cart_not_found", "no cart %s", cart_id);
        return NULL;
    }
    int mine = strcmp(ck_col_text(st, 0), r->user_id) == 0;
    ck_done(st);
    if (!mine) {
        ck_error(r, 403, "forbidden", "cart %s belongs to another user",
                 cart_id);
        return NULL;
    }
    st = ck_prep(a->cart_db, "SELECT cart_item_id, product_id, quantity, "
                             "price FROM cart_items WHERE cart_id = ? ORDER "
                             "BY cart_item_id");
    if (st == NULL) {
        ck_error(r, 500, "internal", "cart database unavailable");
        return NULL;
    }
    ck_bind_text(st, 1, cart_id);
    json_t *items = json_array();
    *subtotal = 0;
    *max_item = 0;
    while (ck_step(st) == CK_ROW) {
        int64_t q = ck_col_int(st, 2), p = ck_col_int(st, 3);
        *max_item = ck_col_int(st, 0);
        *subtotal += q * p;
        json_array_append_new(items,
                              json_pack("{s:s, s:I, s:I}", "product_id",
                                        ck_col_text(st, 1),
                                        "quantity", (json_int_t)q, "price",
                                        (json_int_t)p));
    }
    ck_done(st);
    if (json_array_size(items) == 0) {
        json_decref(items);
        ck_error(r, 422, "cart_empty", "cart %s has no items", cart_id);
        return NULL;
    }
    return items;
}

static int pending_order(ck_app *a, const char *cart_id, char *out,
                         size_t size)
{
    ck_stmt *st = ck_prep(a->order_db,
                               "SELECT order_id FROM orders WHERE cart_id = ? "
                               "AND status NOT IN ('COMPLETED', 'CANCELLED')");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, cart_id);
    int found = ck_step(st) == CK_ROW;
    if (found)
        snprintf(out, size, "%s", ck_col_text(st, 0));
    ck_done(st);
    return found;
}

static int insert_order(ck_app *a, const char *order_id, const char *key,
                        const char *request, ck_req *r, json_t *b,
                        json_t *items, int64_t subtotal, int64_t max_item,
                        const void *data, size_t dlen)
{
    ck_db *db = a->order_db;
    int64_t now = ck_now_ms();
    char *addr = ck_dump(json_object_get(b, "shipping_address"));
    const char *type = json_string_value(
        json_object_get(json_object_get(b, "payment_method"), "type"));
    char addr_id[40];
    ck_random_id("addr_", addr_id, sizeof addr_id);
    int rc = ck_begin(db);
    ck_stmt *st = rc ? NULL : ck_prep(db,
        "INSERT INTO orders (order_id, user_id, cart_id, status, "
        "total_amount, subtotal, address_id, shipping_address, "
        "payment_method, idempotency_key, request, cart_max_item, saga_data, "
        "created_at, updated_at) VALUES (?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?)");
    int ok = st != NULL;
    if (ok) {
        ck_bind_text(st, 1, order_id);
        ck_bind_text(st, 2, r->user_id);
        ck_bind_text(st, 3, field_str(b, "cart_id"));
        ck_bind_int(st, 4, subtotal);
        ck_bind_int(st, 5, subtotal);
        ck_bind_text(st, 6, addr_id);
        ck_bind_text(st, 7, addr ? addr : "{}");
        ck_bind_text(st, 8, type);
        ck_bind_text(st, 9, key);
        ck_bind_text(st, 10, request);
        ck_bind_int(st, 11, max_item);
        ck_bind_blob(st, 12, data, dlen);
        ck_bind_int(st, 13, now);
        ck_bind_int(st, 14, now);
        rc = ck_step(st);
        ok = rc == CK_DONE;
        ck_done(st);
    }
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        if (!ok)
            break;
        st = ck_prep(db, "INSERT INTO order_items (order_id, product_id, "
                         "quantity, price) VALUES (?, ?, ?, ?)");
        if (st == NULL) {
            ok = 0;
            break;
        }
        ck_bind_text(st, 1, order_id);
        ck_bind_text(st, 2, json_string_value(json_object_get(it, "product_id")));
        ck_bind_int(st, 3,
                           json_integer_value(json_object_get(it, "quantity")));
        ck_bind_int(st, 4,
                           json_integer_value(json_object_get(it, "price")));
        ok = ck_step(st) == CK_DONE;
        ck_done(st);
    }
    free(addr);
    if (ok && ck_commit(db) == CK_OK)
        return 0;
    int constraint = rc == CK_CONSTRAINT;
    ck_rollback(db);
    return constraint ? 1 : -1;
}

void ck_api_checkout(ck_req *r)
{
    ck_app *a = r->a;
    if (r->user_id == NULL || r->user_id[0] == '\0') {
        ck_error(r, 401, "missing_user_id",
                 "the X-User-Id header (set by the API gateway) is required");
        return;
    }
    if (r->idem_key == NULL || r->idem_key[0] == '\0') {
        ck_error(r, 400, "missing_idempotency_key",
                 "the Idempotency-Key header is required");
        return;
    }
    if (strlen(r->idem_key) > 200) {
        ck_error(r, 400, "invalid_idempotency_key",
                 "the Idempotency-Key header is longer than 200 bytes");
        return;
    }
    json_t *b = ck_body_object(r);
    if (b == NULL)
        return;
    if (validate(r, b) != 0) {
        json_decref(b);
        return;
    }
    char *canon = ck_dump(b);
    size_t rl = strlen(canon) + strlen(r->user_id) + 2;
    char *request = malloc(rl);
    snprintf(request, rl, "%s|%s", r->user_id, canon);
    free(canon);

    char order_id[64], *prior = NULL;
    int has_saga = 0;
    int found = existing_order(a, r->idem_key, order_id, sizeof order_id,
                               &prior, &has_saga);
    if (found == 1) {
        if (strcmp(prior, request) != 0)
            ck_error(r, 422, "idempotency_key_reused",
                     "Idempotency-Key %s was used with a different request",
                     r->idem_key);
        else
            answer_known(r, order_id, r->idem_key, has_saga);
        goto done;
    }
    const char *cart_id = field_str(b, "cart_id");
    int64_t subtotal, max_item;
    json_t *items = load_cart(r, cart_id, &subtotal, &max_item);
    if (items == NULL)
        goto done;
    char other[64];
    if (pending_order(a, cart_id, other, sizeof other) == 1) {
        ck_error(r, 409, "checkout_in_progress",
                 "cart %s has a checkout in progress (order %s)", cart_id,
                 other);
        json_decref(items);
        goto done;
    }
    ck_random_id("order_", order_id, sizeof order_id);
    json_t *pm = json_object_get(b, "payment_method");
    char *items_s = ck_dump(items);
    char *addr_s = ck_dump(json_object_get(b, "shipping_address"));
    saga_map *m;
    const void *data = NULL;
    size_t dlen = 0;
    saga_map_new(&m);
    ck_map_str(m, "order_id", order_id);
    ck_map_str(m, "user_id", r->user_id);
    ck_map_str(m, "cart_id", cart_id);
    ck_map_str(m, "items", items_s);
    ck_map_str(m, "shipping_address", addr_s);
    ck_map_str(m, "card_token", field_str(pm, "card_token"));
    ck_map_str(m, "payment_type", field_str(pm, "type"));
    saga_map_set_int(m, "subtotal", subtotal);
    saga_map_encode(m, &data, &dlen);
    int rc = insert_order(a, order_id, r->idem_key, request, r, b, items,
                          subtotal, max_item, data, dlen);
    saga_map_free(m);
    free(items_s);
    free(addr_s);
    json_decref(items);
    if (rc == 1)
        ck_error(r, 409, "checkout_in_progress",
                 "cart %s has a checkout in progress", cart_id);
    else if (rc != 0)
        ck_error(r, 503, "unavailable", "the order could not be recorded");
    else if (start_saga(a, order_id, r, 1) != 0)
        ck_error(r, 503, "unavailable",
                 "the order is recorded but its processing could not be "
                 "started yet; retry with the same Idempotency-Key");
done:
    free(prior);
    free(request);
    json_decref(b);
}

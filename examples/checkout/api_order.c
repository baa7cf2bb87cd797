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

/* How long a checkout waits for its answer before it gets 503 timeout:
 * CHECKOUT_WAIT_MS, or CK_CHECKOUT_WAIT_MS (tests: answers that come after
 * the timeout, tests/checkout_http/latewait.sh). */
static uint32_t checkout_wait_ms(void)
{
    static uint32_t ms;
    if (ms == 0) {
        const char *v = getenv("CK_CHECKOUT_WAIT_MS");
        long n = v != NULL ? strtol(v, NULL, 10) : 0;
        ms = n > 0 && n <= 600000 ? (uint32_t)n : CHECKOUT_WAIT_MS;
    }
    return ms;
}
/* The saga data of one order (ids, items, address, card token) at its
 * start. The engine refuses data over its max_data_size (1 MiB), and the
 * steps' outputs are merged into it later: an order over this bound would
 * be recorded but its saga could never start, leaving it PENDING and its
 * cart locked for good. It is refused (413) before anything is written. */
#define CHECKOUT_DATA_MAX (256 * 1024)

typedef struct start_ctx {
    ck_app *a;
    ck_wait *w; /* NULL: a restart, nobody waits */
    char order_id[64];
    char key[256];
    int created; /* this request created the order: 202, else 200 */
    /* created: the new order's created_at; its 202 body is made from
     * these (status PENDING) instead of reading the row back */
    int64_t created_ms;
} start_ctx;

/* The 202 body of an order this request created. */
static json_t *created_body(const start_ctx *c)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:o}", "order_id", c->order_id,
                     "status", "PENDING", "estimated_completion",
                     ck_json_time(c->created_ms + 3 * 60 * 1000),
                     "idempotency_key", c->key, "created_at",
                     ck_json_time(c->created_ms));
}

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
                      "status", ck_col_text(st, 0), "estimated_completion",
                      ck_json_time(created + 3 * 60 * 1000), "idempotency_key",
                      ck_col_text(st, 1), "created_at", ck_json_time(created));
    }
    ck_done(st);
    return b;
}

static void queue_saga_id(ck_app *a, const char *order_id, const char *saga_id);
static void start_later(ck_app *a);

/* The 503 of a checkout past the admission limit (max_active). */
static json_t *overloaded_body(void)
{
    return json_pack("{s:{s:s, s:s}}", "error", "code", "overloaded", "message",
                     "too many checkouts in progress; retry later with the "
                     "same Idempotency-Key");
}

static void started(saga_engine *e, int status, const char *saga_id,
                    int existed, void *arg)
{
    (void)e, (void)existed;
    start_ctx *c = arg;
    ck_app *a = c->a;
    /* The saga id goes into the order row with the next group commit; a
     * row still without it is only started again, by its key, after a
     * restart (ck_order_restart_pending), which answers the same saga. */
    if (status == SAGA_OK)
        queue_saga_id(a, c->order_id, saga_id);
    if (c->w != NULL) {
        if (status != SAGA_OK)
            ck_wait_error(c->w, 503, "unavailable",
                          "the order is recorded but its processing could "
                          "not be started yet; retry with the same "
                          "Idempotency-Key");
        else
            ck_wait_reply(c->w, c->created ? 202 : 200,
                          c->created_ms > 0
                              ? created_body(c)
                              : accepted_body(a->order_db, c->order_id),
                          "x-idempotency-key", c->key);
    }
    free(c);
}

/* saga_start of order @p order_id with its saga data and key, answered on
 * @p w (NULL: nobody waits); @p created_ms > 0: this request created it
 * (202). -1 (nothing answered) if out of memory. */
static int start_saga_mem(ck_app *a, const char *order_id, const char *key,
                          const void *data, size_t dlen, ck_wait *w,
                          const char *trace, int created, int64_t created_ms)
{
    start_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->a = a;
    c->created = created;
    c->created_ms = created ? created_ms : 0;
    snprintf(c->order_id, sizeof c->order_id, "%s", order_id);
    snprintf(c->key, sizeof c->key, "%s", key);
    char id[SAGA_ID_SIZE];
    c->w = w;
    /* A request's W3C traceparent: the saga and its steps join its trace. */
    int rc = saga_start_traced(a->engine, "checkout", order_id, data, dlen,
                               trace, id, started, c);
    if (rc == SAGA_EFULL) {
        /* The engine runs max_active sagas: this order is recorded (the
         * check before it was written counted the sagas running and the
         * orders of the group, so only sagas brought back meanwhile, or
         * more resumed at a restart than max_active, get here). It starts
         * once there is room (start_later); a retry with the same key
         * answers it then. */
        start_later(a);
        if (c->w != NULL)
            ck_wait_reply(c->w, 503, overloaded_body(), "retry-after", "1");
        free(c);
        return 0;
    }
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

/* saga_start for an order whose row exists (duplicate or restart), with
 * the saga data and key read from the row; -1 (nothing answered) if the
 * row cannot be read. */
static int start_saga_w(ck_app *a, const char *order_id, ck_wait *w,
                        const char *trace, int created)
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
    size_t dlen;
    const void *data = ck_col_blob(st, 0, &dlen);
    int rc = start_saga_mem(a, order_id, ck_col_text(st, 1), data, dlen, w,
                            trace, created, 0);
    ck_done(st);
    return rc;
}

static int start_saga(ck_app *a, const char *order_id, ck_req *r, int created)
{
    ck_wait *w = NULL;
    if (r != NULL && (w = ck_defer(r, checkout_wait_ms())) == NULL)
        return -1;
    int rc = start_saga_w(a, order_id, w, r != NULL ? r->traceparent : NULL,
                          created);
    if (rc != 0 && w != NULL)
        ck_wait_error(w, 503, "unavailable", "try again with the same key");
    return rc == 0 || w == NULL ? rc : 0; /* answered */
}

int ck_order_restart_pending(ck_app *a);

/* Orders whose start the engine refused (SAGA_EFULL) are started again by
 * their key, every second until none is refused. */
static struct {
    uv_timer_t timer;
    int init;
    uint64_t refused; /* starts refused so far */
} L;

static void start_later_cb(uv_timer_t *t)
{
    ck_app *a = t->data;
    if (!a->closing)
        ck_order_restart_pending(a);
}

static void start_later(ck_app *a)
{
    L.refused++;
    if (!L.init) {
        uv_timer_init(a->loop, &L.timer);
        uv_unref((uv_handle_t *)&L.timer);
        L.timer.data = a;
        L.init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&L.timer))
        uv_timer_start(&L.timer, start_later_cb, 1000, 0);
}

int ck_order_restart_pending(ck_app *a)
{
    ck_stmt *st = ck_prep(a->order_db, "SELECT order_id FROM orders "
                                       "WHERE saga_id IS NULL");
    if (st == NULL)
        return -1;
    int n = 0;
    uint64_t refused = L.refused;
    while (ck_step(st) == CK_ROW) {
        char id[64];
        snprintf(id, sizeof id, "%s", ck_col_text(st, 0));
        if (start_saga(a, id, NULL, 0) == 0)
            n++;
    }
    ck_done(st);
    n -= (int)(L.refused - refused);
    if (n > 0)
        ck_log(a, "re-started %d order saga(s) accepted before a restart", n);
    if (L.refused > refused)
        ck_log(a, "%d order saga(s) wait for room (max_active)",
               (int)(L.refused - refused));
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
    json_t *state = json_object_get(addr, "state");
    if (state != NULL && !json_is_string(state) && !json_is_null(state)) {
        ck_error(r, 422, "invalid_field",
                 "shipping_address.state is optional but must be a string");
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
    int found = 0, rc = ck_step(st);
    if (rc != CK_ROW && rc != CK_DONE)
        found = -1; /* a failed read is not "no such key" */
    if (rc == CK_ROW) {
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

/* Why a checkout cannot go on (answered only if its key is new). */
typedef struct ck_fail {
    int status;
    const char *code;
    char msg[200];
} ck_fail;

static json_t *load_cart(ck_req *r, const char *cart_id, int64_t *subtotal,
                         int64_t *min_item, int64_t *max_item, ck_fail *f)
{
    ck_app *a = r->a;
    ck_stmt *st = ck_prep(a->cart_db, "SELECT user_id FROM carts WHERE "
                                      "cart_id = ?");
    *f = (ck_fail){500, "internal", "cart database unavailable"};
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, cart_id);
    int rc = ck_step(st);
    if (rc != CK_ROW) {
        ck_done(st);
        if (rc == CK_DONE) {
            *f = (ck_fail){404, "cart_not_found", ""};
            snprintf(f->msg, sizeof f->msg, "no cart %.120s", cart_id);
        } else { /* a failed read is not "no cart": retry the same key */
            *f = (ck_fail){503, "unavailable",
                           "cart database unavailable: retry with the same "
                           "key"};
        }
        return NULL;
    }
    int mine = strcmp(ck_col_text(st, 0), r->user_id) == 0;
    ck_done(st);
    if (!mine) {
        *f = (ck_fail){403, "forbidden", ""};
        snprintf(f->msg, sizeof f->msg, "cart %.120s belongs to another user",
                 cart_id);
        return NULL;
    }
    st = ck_prep(a->cart_db, "SELECT cart_item_id, product_id, quantity, "
                             "price FROM cart_items WHERE cart_id = ? ORDER "
                             "BY cart_item_id");
    if (st == NULL)
        return NULL;
    ck_bind_text(st, 1, cart_id);
    json_t *items = json_array();
    *subtotal = 0;
    *min_item = *max_item = 0;
    while (ck_step(st) == CK_ROW) {
        int64_t q = ck_col_int(st, 2), p = ck_col_int(st, 3);
        *max_item = ck_col_int(st, 0);
        if (*min_item == 0)
            *min_item = *max_item;
        *subtotal += q * p;
        json_array_append_new(items,
                              json_pack("{s:s, s:I, s:I}", "product_id",
                                        ck_col_text(st, 1), "quantity",
                                        (json_int_t)q, "price", (json_int_t)p));
    }
    ck_done(st);
    if (json_array_size(items) == 0) {
        json_decref(items);
        *f = (ck_fail){422, "cart_empty", ""};
        snprintf(f->msg, sizeof f->msg, "cart %.120s has no items", cart_id);
        return NULL;
    }
    return items;
}

/* The cart's order in progress: one not yet ended, or a COMPLETED one
 * whose items the cart still holds (the cart service clears the items up
 * to the order's cart_max_item when it hears of the completion, a moment
 * later; cart item ids are never reused, so a cart whose smallest item id
 * is at most that still holds items that order bought). */
static int pending_order(ck_app *a, const char *cart_id, int64_t min_item,
                         char *out, size_t size)
{
    ck_stmt *st = ck_prep(a->order_db,
                          "SELECT order_id FROM orders WHERE cart_id = ? "
                          "AND (status NOT IN ('COMPLETED', 'CANCELLED') OR "
                          "(status = 'COMPLETED' AND cart_max_item >= ?))");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, cart_id);
    ck_bind_int(st, 2, min_item);
    int found = ck_step(st) == CK_ROW;
    if (found)
        snprintf(out, size, "%s", ck_col_text(st, 0));
    ck_done(st);
    return found;
}

/* A new order waiting for the next group commit. */
typedef struct pend_order {
    struct pend_order *next;
    ck_wait *w;
    char order_id[64];
    char *key, *request, *user_id, *cart_id, *addr, *type, *trace;
    json_t *items;
    int64_t subtotal, min_item, max_item;
    int64_t created_ms; /* P_NEW: its created_at */
    void *data;
    size_t dlen;
    int state;      /* after the insert: see flush_orders */
    char known[64]; /* state JOIN: the order of the same key */
    int known_saga;
} pend_order;

/* A new order id: "order_", 12 hex digits of the wall clock in ms, then 12
 * random ones. Ordered by time, as the engine's saga ids are: every table
 * and index keyed by the order id (orders, order_items, reservations,
 * payments, shipping_quotes, pick_lists) then takes a checkout's rows at
 * its right edge, where the other orders of the same batch are, instead of
 * one random leaf page per order and tree, each a WAL frame of its own
 * (with random ids, one checkout wrote ~31 frames across the services; see
 * bench/checkout/cpu.sh). The random half keeps ids unguessable and
 * unique across processes. */
static void order_id_new(char *out, size_t size)
{
    char rnd[40];
    ck_random_id("", rnd, sizeof rnd);
    snprintf(out, size, "order_%012llx%.12s",
             (unsigned long long)ck_now_ms() & 0xffffffffffffull, rnd);
}

/* Write one order (its row and items) in the group's transaction. 0, 1 (a
 * constraint: the cart's pending order, or the key, came first) or -1. */
static int insert_order(ck_app *a, pend_order *p)
{
    ck_db *db = a->order_db;
    int64_t now = ck_now_ms();
    p->created_ms = now;
    const char *order_id = p->order_id;
    char addr_id[40];
    ck_random_id("addr_", addr_id, sizeof addr_id);
    int rc = CK_OK;
    ck_stmt *st = ck_prep(
        db,
        "INSERT INTO orders (order_id, user_id, cart_id, status, "
        "total_amount, subtotal, address_id, shipping_address, "
        "payment_method, idempotency_key, request, cart_max_item, saga_data, "
        "created_at, updated_at) VALUES (?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?)");
    int ok = st != NULL;
    if (ok) {
        ck_bind_text(st, 1, order_id);
        ck_bind_text(st, 2, p->user_id);
        ck_bind_text(st, 3, p->cart_id);
        ck_bind_int(st, 4, p->subtotal);
        ck_bind_int(st, 5, p->subtotal);
        ck_bind_text(st, 6, addr_id);
        ck_bind_text(st, 7, p->addr ? p->addr : "{}");
        ck_bind_text(st, 8, p->type);
        ck_bind_text(st, 9, p->key);
        ck_bind_text(st, 10, p->request);
        ck_bind_int(st, 11, p->max_item);
        ck_bind_blob(st, 12, p->data, p->dlen);
        ck_bind_int(st, 13, now);
        ck_bind_int(st, 14, now);
        rc = ck_step(st);
        ok = rc == CK_DONE;
        ck_done(st);
    }
    size_t i;
    json_t *it;
    json_array_foreach(p->items, i, it)
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
        ck_bind_text(st, 2,
                     json_string_value(json_object_get(it, "product_id")));
        ck_bind_int(st, 3, json_integer_value(json_object_get(it, "quantity")));
        ck_bind_int(st, 4, json_integer_value(json_object_get(it, "price")));
        ok = ck_step(st) == CK_DONE;
        ck_done(st);
    }
    if (ok)
        return 0;
    return rc == CK_CONSTRAINT ? 1 : -1;
}

/* --- group commit -----------------------------------------------------------
 * The new orders of one loop turn are written in one transaction (one WAL
 * commit instead of one per request), with the saga ids of the sagas that
 * started since the last one; each saga is started after that commit, and
 * its 202 still goes out only once its start is durable (started()). */

typedef struct pend_sid {
    struct pend_sid *next;
    char order_id[64];
    char saga_id[SAGA_ID_SIZE];
} pend_sid;

static struct {
    ck_app *a;
    uv_timer_t timer;
    int init;
    pend_order *head, **tail;
    pend_sid *sids;
} G;

enum { P_NEW, P_JOIN, P_REUSED, P_PENDING, P_CONFLICT, P_OVERLOADED };

static void flush_orders(uv_timer_t *t);

static void schedule_flush(ck_app *a)
{
    if (!G.init) {
        G.a = a;
        G.tail = &G.head;
        uv_timer_init(a->loop, &G.timer);
        G.init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&G.timer))
        uv_timer_start(&G.timer, flush_orders, 0, 0);
}

static void queue_saga_id(ck_app *a, const char *order_id, const char *saga_id)
{
    pend_sid *q = calloc(1, sizeof *q);
    if (q == NULL)
        return; /* the restart path starts it again by its key */
    snprintf(q->order_id, sizeof q->order_id, "%s", order_id);
    snprintf(q->saga_id, sizeof q->saga_id, "%s", saga_id);
    schedule_flush(a);
    q->next = G.sids;
    G.sids = q;
}

static void pend_free(pend_order *p)
{
    free(p->key);
    free(p->request);
    free(p->user_id);
    free(p->cart_id);
    free(p->addr);
    free(p->type);
    free(p->trace);
    free(p->data);
    json_decref(p->items);
    free(p);
}

/* Whether a new order would find no room in the order engine: the sagas
 * it runs (saga_engine_counters.active, which its max_active, set to
 * max_pending, bounds) and the @p news orders this group has already
 * added, whose sagas start once the group commits, reach max_pending (0:
 * no cap). Decided before the order is written, so that a refused
 * checkout records nothing and the engine does not refuse its start. */
static int overloaded(ck_app *a, uint64_t news)
{
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    return a->timing.max_pending > 0 && a->engine != NULL &&
           saga_engine_stats(a->engine, &st) == SAGA_OK &&
           st.active + news >= a->timing.max_pending;
}

/* Decide and write one order inside the group's transaction: the checks
 * of the request (the key, the cart's pending order) again, since an order
 * of the same group may have taken them. -1 on a database error. */
static int group_one(ck_app *a, pend_order *p, uint64_t *news)
{
    char *prior = NULL, other[64];
    int found = existing_order(a, p->key, p->known, sizeof p->known, &prior,
                               &p->known_saga);
    if (found < 0)
        return -1;
    if (found) {
        p->state = strcmp(prior, p->request) == 0 ? P_JOIN : P_REUSED;
        free(prior);
        return 0;
    }
    int pend = pending_order(a, p->cart_id, p->min_item, other, sizeof other);
    if (pend < 0)
        return -1;
    if (pend) {
        p->state = P_PENDING;
        snprintf(p->known, sizeof p->known, "%s", other);
        return 0;
    }
    /* Load shedding, once the request is known to create an order: a key
     * already used, and a cart with a pending order, are answered above
     * as when the shop is idle (a client retrying a lost 202 gets its
     * order, not 503). Nothing is written for a refused one. */
    if (overloaded(a, *news)) {
        p->state = P_OVERLOADED;
        return 0;
    }
    int rc = insert_order(a, p);
    if (rc == 0)
        (*news)++;
    if (rc == 1 && !ck_db_is_pg(a->order_db)) {
        /* SQLite undid that statement alone; PostgreSQL aborted the
         * transaction: then the whole group is answered 503. */
        p->state = P_CONFLICT;
        return 0;
    }
    p->state = P_NEW;
    return rc == 0 ? 0 : -1;
}

static void answer_group(ck_app *a, pend_order *p, int ok)
{
    char msg[300];
    if (!ok) {
        ck_wait_error(p->w, 503, "unavailable",
                      "the order could not be recorded");
        return;
    }
    switch (p->state) {
    case P_NEW:
    case P_JOIN:
        if (p->state == P_JOIN && p->known_saga) {
            ck_wait_reply(p->w, 200, accepted_body(a->order_db, p->known),
                          "x-idempotency-key", p->key);
            return;
        }
        /* A new order starts from what this request wrote; a joined
         * one from its row. */
        if ((p->state == P_NEW
                 ? start_saga_mem(a, p->order_id, p->key, p->data, p->dlen,
                                  p->w, p->trace, 1, p->created_ms)
                 : start_saga_w(a, p->known, p->w, p->trace, 0)) != 0)
            ck_wait_error(p->w, 503, "unavailable",
                          "the order is recorded but its processing could "
                          "not be started yet; retry with the same "
                          "Idempotency-Key");
        return;
    case P_REUSED:
        snprintf(msg, sizeof msg,
                 "Idempotency-Key %.200s was used with a different request",
                 p->key);
        ck_wait_error(p->w, 422, "idempotency_key_reused", msg);
        return;
    case P_OVERLOADED:
        ck_wait_reply(p->w, 503, overloaded_body(), "retry-after", "1");
        return;
    case P_PENDING:
        snprintf(msg, sizeof msg,
                 "cart %.120s has a checkout in progress (order %s)",
                 p->cart_id, p->known);
        ck_wait_error(p->w, 409, "checkout_in_progress", msg);
        return;
    default:
        snprintf(msg, sizeof msg, "cart %.120s has a checkout in progress",
                 p->cart_id);
        ck_wait_error(p->w, 409, "checkout_in_progress", msg);
        return;
    }
}

static void flush_orders(uv_timer_t *t)
{
    (void)t;
    ck_app *a = G.a;
    pend_order *list = G.head;
    pend_sid *sids = G.sids;
    G.head = NULL;
    G.tail = &G.head;
    G.sids = NULL;
    ck_db *db = a->order_db;
    int ok = !a->closing && ck_begin(db) == CK_OK;
    int begun = ok;
    for (pend_sid *q = sids; q != NULL && ok; q = q->next) {
        ck_stmt *st = ck_prep(db, "UPDATE orders SET saga_id = ? WHERE "
                                  "order_id = ? AND saga_id IS NULL");
        if (st == NULL) {
            ok = 0;
            break;
        }
        ck_bind_text(st, 1, q->saga_id);
        ck_bind_text(st, 2, q->order_id);
        ok = ck_step(st) == CK_DONE;
        ck_done(st);
    }
    uint64_t news = 0;
    for (pend_order *p = list; p != NULL && ok; p = p->next)
        ok = group_one(a, p, &news) == 0;
    if (ok)
        ok = ck_commit(db) == CK_OK;
    if (!ok && begun)
        ck_rollback(db);
    while (sids != NULL) {
        pend_sid *q = sids;
        sids = q->next;
        free(q);
    }
    while (list != NULL) {
        pend_order *p = list;
        list = p->next;
        answer_group(a, p, ok);
        pend_free(p);
    }
}

/* A checkout that cannot go on (@p f): a known key answers as its order
 * did, whatever the cart holds now; a new one gets @p f. */
static void answer_refused(ck_req *r, const char *request, const ck_fail *f)
{
    char order_id[64], *prior = NULL;
    int has_saga = 0;
    int found = existing_order(r->a, r->idem_key, order_id, sizeof order_id,
                               &prior, &has_saga);
    if (found < 0)
        ck_error(r, 503, "unavailable",
                 "the order database is unavailable: retry with the same "
                 "key");
    else if (found == 1 && strcmp(prior, request) != 0)
        ck_error(r, 422, "idempotency_key_reused",
                 "Idempotency-Key %s was used with a different request",
                 r->idem_key);
    else if (found == 1)
        answer_known(r, order_id, r->idem_key, has_saga);
    else
        ck_error(r, f->status, f->code, "%s", f->msg);
    free(prior);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

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

    char order_id[64];
    const char *cart_id = field_str(b, "cart_id");
    int64_t subtotal, min_item, max_item;
    ck_fail fail;
    /* A new key is the common case: its cart is read first, and the key is
     * looked up in the group's transaction (group_one), once. Only when the
     * cart cannot check out (the same key again after the order cleared
     * it, another user's cart, ...) is the key looked up here: a known key
     * answers as its order did, whatever its cart holds now. */
    json_t *items = load_cart(r, cart_id, &subtotal, &min_item, &max_item,
                              &fail);
    if (items == NULL) {
        answer_refused(r, request, &fail);
        goto done;
    }
    /* Load shedding (CK_MAX_PENDING) is decided in the group's transaction
     * too (group_one), once the key and the cart are known not to answer
     * otherwise. */
    /* A pending order of this cart is looked for in the group's
     * transaction (group_one): 409 from there. */
    order_id_new(order_id, sizeof order_id);
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
    if (dlen > CHECKOUT_DATA_MAX) {
        fail = (ck_fail){413, "payload_too_large", ""};
        snprintf(fail.msg, sizeof fail.msg,
                 "the order is too large: %zu bytes of address, items and "
                 "ids (at most %d)",
                 dlen, CHECKOUT_DATA_MAX);
        answer_refused(r, request, &fail);
        saga_map_free(m);
        free(items_s);
        free(addr_s);
        json_decref(items);
        goto done;
    }
    /* Written with the other new orders of this loop turn (one commit). */
    pend_order *p = calloc(1, sizeof *p);
    if (p != NULL) {
        snprintf(p->order_id, sizeof p->order_id, "%s", order_id);
        p->key = strdup(r->idem_key);
        p->request = request;
        request = NULL;
        p->user_id = strdup(r->user_id);
        p->cart_id = strdup(cart_id);
        p->addr = addr_s; /* the same dump */
        addr_s = NULL;
        p->type = dup_or_null(field_str(pm, "type"));
        p->trace = dup_or_null(r->traceparent);
        p->items = items;
        items = NULL;
        p->subtotal = subtotal;
        p->min_item = min_item;
        p->max_item = max_item;
        p->dlen = dlen;
        p->data = malloc(dlen ? dlen : 1);
        if (p->data != NULL && dlen)
            memcpy(p->data, data, dlen);
    }
    saga_map_free(m);
    free(items_s);
    free(addr_s);
    json_decref(items);
    if (p == NULL || p->key == NULL || p->request == NULL ||
        p->user_id == NULL || p->cart_id == NULL || p->data == NULL ||
        (p->w = ck_defer(r, checkout_wait_ms())) == NULL) {
        if (p != NULL)
            pend_free(p);
        ck_error(r, 503, "unavailable", "the order could not be recorded");
        goto done;
    }
    schedule_flush(a);
    *G.tail = p;
    G.tail = &p->next;
done:
    free(request);
    json_decref(b);
}

/*
 * svc_inventory.c — the inventory service: the seed's inventory table (plus
 * sold_quantity) and reservations with a TTL on inventory.db.
 *
 * Invariant, checked by the database (SQLite or PostgreSQL) on every
 * statement (a CHECK constraint), so at every commit: available + reserved
 * + sold == total, none negative.
 *
 * Commands (the saga's steps):
 *   inventory.reserve            hold stock for an order (TTL), or FAIL
 *   inventory.reserve (compensating)  release the hold (if still held)
 *   inventory.commit             the held stock is sold (after fulfilment)
 * A hold whose saga never goes on is released when its TTL passes (the
 * seed's "inventory reservation TTL"), by a sweep on a timer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck.h"

int ck_inventory_schema(ck_db *db)
{
    return ck_schema(
        db, "CREATE TABLE IF NOT EXISTS inventory (product_id TEXT PRIMARY KEY,"
            " available_quantity INTEGER NOT NULL,"
            " reserved_quantity INTEGER NOT NULL DEFAULT 0,"
            " sold_quantity INTEGER NOT NULL DEFAULT 0,"
            " total_quantity INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
            " CHECK (available_quantity >= 0 AND reserved_quantity >= 0 AND"
            "  sold_quantity >= 0 AND available_quantity + reserved_quantity +"
            "  sold_quantity = total_quantity));"
            "CREATE INDEX IF NOT EXISTS idx_available ON"
            " inventory(available_quantity);"
            "CREATE TABLE IF NOT EXISTS reservations ("
            " order_id TEXT NOT NULL, product_id TEXT NOT NULL,"
            " quantity INTEGER NOT NULL, status TEXT NOT NULL,"
            " expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL,"
            " updated_at INTEGER NOT NULL, PRIMARY KEY (order_id, product_id));"
            "CREATE INDEX IF NOT EXISTS idx_resv_expiry ON reservations(status,"
            " expires_at);");
}

/* New products get their stock; known ones keep what orders moved. */
int ck_inventory_seed(ck_db *db, const ck_catalog *c, int64_t now)
{
    ck_stmt *st = ck_prep(
        db, "INSERT INTO inventory (product_id, available_quantity,"
            " reserved_quantity, sold_quantity, total_quantity, updated_at) "
            "VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT DO NOTHING");
    if (st == NULL)
        return -1;
    ck_begin(db);
    for (size_t i = 0; i < c->n; i++) {
        ck_reset(st);
        ck_bind_text(st, 1, c->v[i].id);
        ck_bind_int(st, 2, c->v[i].stock);
        ck_bind_int(st, 3, c->v[i].stock);
        ck_bind_int(st, 4, now);
        ck_step(st);
    }
    ck_done(st);
    return ck_commit(db) == CK_OK ? 0 : -1;
}

static int step_done(ck_stmt *st)
{
    int rc = ck_step(st);
    ck_done(st);
    return rc == CK_DONE || rc == CK_ROW ? 0 : -1;
}

int ck_inv_reserve(ck_db *db, const char *order_id, const json_t *items,
                   int64_t now, int64_t ttl_ms, json_t **failed_out)
{
    *failed_out = NULL;
    /* Already held for this order (a retried action): nothing more. */
    ck_stmt *st = ck_prep(db, "SELECT COUNT(*) FROM reservations WHERE "
                              "order_id = ?");
    if (st == NULL)
        return -1;
    ck_bind_text(st, 1, order_id);
    int n = ck_step(st) == CK_ROW ? ck_col_int(st, 0) : -1;
    ck_done(st);
    if (n != 0)
        return n > 0 ? 0 : -1;
    json_t *failed = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        const char *pid = json_string_value(json_object_get(it, "product_id"));
        int64_t q = json_integer_value(json_object_get(it, "quantity"));
        st = ck_prep(db, "SELECT available_quantity FROM inventory WHERE "
                         "product_id = ?");
        if (st == NULL) {
            json_decref(failed);
            return -1;
        }
        ck_bind_text(st, 1, pid ? pid : "");
        int64_t avail = ck_step(st) == CK_ROW ? ck_col_int(st, 0) : 0;
        ck_done(st);
        if (avail < q)
            json_array_append_new(failed,
                                  json_pack("{s:s, s:I, s:I}", "product_id",
                                            pid ? pid : "", "requested",
                                            (json_int_t)q, "available",
                                            (json_int_t)avail));
    }
    if (json_array_size(failed) > 0) {
        *failed_out = failed;
        return 1;
    }
    json_decref(failed);
    json_array_foreach(items, i, it)
    {
        const char *pid = json_string_value(json_object_get(it, "product_id"));
        int64_t q = json_integer_value(json_object_get(it, "quantity"));
        st = ck_prep(db, "UPDATE inventory SET available_quantity = "
                         "available_quantity - ?1, reserved_quantity = "
                         "reserved_quantity + ?1, updated_at = ?2 WHERE "
                         "product_id = ?3 AND available_quantity >= ?1");
        if (st == NULL)
            return -1;
        ck_bind_int(st, 1, q);
        ck_bind_int(st, 2, now);
        ck_bind_text(st, 3, pid);
        /* Checked and taken in one statement: a writer that moved the
         * stock since the check above (none while one process serves this
         * schema) makes this an error, and the command is tried again. */
        if (step_done(st) != 0 || ck_changes(db) != 1)
            return -1;
        st = ck_prep(db, "INSERT INTO reservations (order_id, product_id, "
                         "quantity, status, expires_at, created_at, "
                         "updated_at) VALUES (?1, ?2, ?3, 'RESERVED', ?4, ?5, "
                         "?5) ON CONFLICT (order_id, product_id) DO UPDATE "
                         "SET quantity = reservations.quantity + "
                         "excluded.quantity");
        if (st == NULL)
            return -1;
        ck_bind_text(st, 1, order_id);
        ck_bind_text(st, 2, pid);
        ck_bind_int(st, 3, q);
        ck_bind_int(st, 4, now + ttl_ms);
        ck_bind_int(st, 5, now);
        if (step_done(st) != 0)
            return -1;
    }
    return 0;
}

/* Release the RESERVED rows of @p order_id (status -> @p why). */
json_t *ck_inv_release(ck_db *db, const char *order_id, const char *why,
                       int64_t now, int *err)
{
    *err = 0;
    ck_stmt *st = ck_prep(db, "SELECT product_id, quantity FROM "
                              "reservations WHERE order_id = ? AND "
                              "status = 'RESERVED'");
    if (st == NULL) {
        *err = 1;
        return NULL;
    }
    ck_bind_text(st, 1, order_id);
    json_t *rel = json_array();
    while (ck_step(st) == CK_ROW)
        json_array_append_new(rel, json_pack("{s:s, s:I}", "product_id",
                                             ck_col_text(st, 0), "quantity",
                                             (json_int_t)ck_col_int(st, 1)));
    ck_done(st);
    size_t i;
    json_t *it;
    json_array_foreach(rel, i, it)
    {
        st = ck_prep(db, "UPDATE inventory SET available_quantity = "
                         "available_quantity + ?1, reserved_quantity = "
                         "reserved_quantity - ?1, updated_at = ?2 WHERE "
                         "product_id = ?3");
        if (st == NULL) {
            *err = 1;
            break;
        }
        ck_bind_int(st, 1, json_integer_value(json_object_get(it, "quantity")));
        ck_bind_int(st, 2, now);
        ck_bind_text(st, 3,
                     json_string_value(json_object_get(it, "product_id")));
        if (step_done(st) != 0) {
            *err = 1;
            break;
        }
    }
    st = *err ? NULL
              : ck_prep(db, "UPDATE reservations SET status = ?, "
                            "updated_at = ? WHERE order_id = ? AND "
                            "status = 'RESERVED'");
    if (st != NULL) {
        ck_bind_text(st, 1, why);
        ck_bind_int(st, 2, now);
        ck_bind_text(st, 3, order_id);
        if (step_done(st) != 0)
            *err = 1;
    }
    if (*err || json_array_size(rel) == 0) {
        json_decref(rel);
        return NULL;
    }
    return rel;
}

/* Held stock becomes sold. A hold that expired first is taken from what is
 * available again when it can be (so the order still ships). */
int ck_inv_commit(ck_db *db, const char *order_id, int64_t now)
{
    /* Each element in parentheses: three statements, not one string. */
    static const char *const sql[] = {
        ("UPDATE inventory SET reserved_quantity = reserved_quantity - r.q, "
         "sold_quantity = sold_quantity + r.q, updated_at = ?2 FROM (SELECT "
         "product_id AS p, quantity AS q FROM reservations WHERE order_id = ?1 "
         "AND status = 'RESERVED') r WHERE inventory.product_id = r.p"),
        ("UPDATE inventory SET available_quantity = available_quantity - r.q, "
         "sold_quantity = sold_quantity + r.q, updated_at = ?2 FROM (SELECT "
         "product_id AS p, quantity AS q FROM reservations WHERE order_id = ?1 "
         "AND status = 'EXPIRED') r WHERE inventory.product_id = r.p AND "
         "inventory.available_quantity >= r.q"),
        ("UPDATE reservations SET status = 'COMMITTED', updated_at = ?2 WHERE "
         "order_id = ?1 AND status IN ('RESERVED', 'EXPIRED')")};
    for (int i = 0; i < 3; i++) {
        ck_stmt *st = ck_prep(db, sql[i]);
        if (st == NULL)
            return -1;
        ck_bind_text(st, 1, order_id);
        ck_bind_int(st, 2, now);
        if (step_done(st) != 0)
            return -1;
    }
    return 0;
}

int ck_inv_sweep(ck_db *db, int64_t now, json_t *released)
{
    ck_stmt *st = ck_prep(db, "SELECT DISTINCT order_id FROM "
                              "reservations WHERE status = 'RESERVED' "
                              "AND expires_at <= ? LIMIT 500");
    if (st == NULL)
        return -1;
    ck_bind_int(st, 1, now);
    json_t *ids = json_array();
    while (ck_step(st) == CK_ROW)
        json_array_append_new(ids, json_string(ck_col_text(st, 0)));
    ck_done(st);
    int n = 0;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        int err;
        json_t *rel = ck_inv_release(db, json_string_value(id), "EXPIRED", now,
                                     &err);
        if (err) {
            n = -1;
            break;
        }
        if (rel != NULL) {
            n++;
            if (released)
                json_array_append_new(released,
                                      json_pack("{s:O, s:o}", "order_id", id,
                                                "released_items", rel));
            else
                json_decref(rel);
        }
    }
    json_decref(ids);
    return n;
}

int ck_inv_check(ck_db *db)
{
    ck_stmt *st = ck_prep(
        db, "SELECT COUNT(*) FROM inventory WHERE available_quantity < 0 OR "
            "reserved_quantity < 0 OR available_quantity + reserved_quantity "
            "+ sold_quantity != total_quantity");
    if (st == NULL)
        return 0;
    int bad = ck_step(st) == CK_ROW ? ck_col_int(st, 0) : 1;
    ck_done(st);
    return bad == 0;
}

/* --- the service ------------------------------------------------------------ */

typedef struct inv_state {
    ck_app *a;
    ck_db *db;
    uv_timer_t sweep;
} inv_state;

static int on_reserve(saga_participant *p, const saga_command *c, saga_reply *r,
                      void *arg)
{
    inv_state *s = arg;
    char order_id[64], items_s[65536];
    ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                sizeof order_id);
    int64_t now = ck_now_ms();
    if (c->compensating) {
        int err;
        json_t *rel = ck_inv_release(s->db, order_id, "RELEASED", now, &err);
        if (err)
            return SAGA_ESTORE;
        if (rel == NULL)
            return SAGA_OK; /* nothing held: nothing to give back */
        json_t *ev = ck_event("InventoryReleasedEvent", order_id, now);
        json_object_set_new(ev, "compensation", json_true());
        json_object_set_new(ev, "released_items", rel);
        return ck_publish(p, CK_T_INVENTORY, order_id, ev);
    }
    ck_data_str(c->payload, c->payload_len, "items", items_s, sizeof items_s);
    json_t *items = json_loads(items_s, 0, NULL);
    if (!json_is_array(items)) {
        json_decref(items);
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "bad items");
    }
    json_t *failed = NULL;
    int rc = ck_inv_reserve(s->db, order_id, items, now,
                            s->a->timing.reservation_ttl_ms, &failed);
    if (rc < 0) {
        json_decref(items);
        return SAGA_ESTORE;
    }
    if (rc == 1) {
        json_decref(items);
        json_t *ev = ck_event("InventoryReservationFailedEvent", order_id, now);
        json_object_set_new(ev, "reason", json_string("insufficient_stock"));
        json_object_set_new(ev, "failed_items", failed);
        int prc = ck_publish(p, CK_T_INVENTORY, order_id, ev);
        if (prc != SAGA_OK)
            return prc;
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0,
                              "insufficient_stock");
    }
    json_t *resv = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) json_array_append_new(
        resv, json_pack("{s:O, s:O, s:b}", "product_id",
                        json_object_get(it, "product_id"), "quantity",
                        json_object_get(it, "quantity"), "reserved", 1));
    json_decref(items);
    json_t *ev = ck_event("InventoryReservedEvent", order_id, now);
    json_object_set_new(ev, "reservations", resv);
    json_object_set_new(ev, "success", json_true());
    json_object_set_new(ev, "expires_at",
                        ck_json_time(now + s->a->timing.reservation_ttl_ms));
    rc = ck_publish(p, CK_T_INVENTORY, order_id, ev);
    if (rc != SAGA_OK)
        return rc;
    saga_map *m;
    const void *b;
    size_t n;
    char rid[80];
    snprintf(rid, sizeof rid, "rsv_%s", order_id);
    saga_map_new(&m);
    saga_map_set_str(m, "reservation_id", rid);
    saga_map_encode(m, &b, &n);
    rc = saga_reply_set(r, SAGA_OUTCOME_OK, b, n, NULL);
    saga_map_free(m);
    return rc;
}

static int on_commit(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)p, (void)r;
    inv_state *s = arg;
    char order_id[64];
    ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                sizeof order_id);
    return ck_inv_commit(s->db, order_id, ck_now_ms()) == 0 ? SAGA_OK
                                                            : SAGA_ESTORE;
}

static void sweep_cb(uv_timer_t *t)
{
    inv_state *s = t->data;
    int64_t now = ck_now_ms();
    json_t *rel = json_array();
    if (ck_begin(s->db) != CK_OK) {
        json_decref(rel);
        return;
    }
    int n = ck_inv_sweep(s->db, now, rel);
    if (n < 0 || ck_commit(s->db) != CK_OK) {
        ck_rollback(s->db);
        json_decref(rel);
        return;
    }
    size_t i;
    json_t *o;
    json_array_foreach(rel, i, o)
    {
        const char *oid = json_string_value(json_object_get(o, "order_id"));
        ck_log(s->a, "reservation of %s expired: released", oid);
        json_t *ev = ck_event("InventoryReleasedEvent", oid, now);
        json_object_set_new(ev, "compensation", json_false());
        json_object_set_new(ev, "reason", json_string("reservation_expired"));
        json_object_set(ev, "released_items",
                        json_object_get(o, "released_items"));
        ck_publish(s->a->svc[CK_SVC_INVENTORY], CK_T_INVENTORY, oid, ev);
    }
    json_decref(rel);
}

int ck_inventory_open(ck_app *a)
{
    saga_participant *p;
    inv_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->a = a;
    a->state[CK_SVC_INVENTORY] = s;
    if (ck_participant(a, CK_SVC_INVENTORY, &p, &s->db) != 0 ||
        ck_inventory_schema(s->db) != CK_OK ||
        ck_inventory_seed(s->db, &a->catalog, ck_now_ms()) != 0)
        return -1;
    a->inventory_db = s->db;
    if (saga_participant_on_command(p, "inventory.reserve", on_reserve, s) ||
        saga_participant_on_command(p, "inventory.commit", on_commit, s) ||
        saga_participant_start(p))
        return -1;
    uv_timer_init(a->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, sweep_cb, (uint64_t)a->timing.ttl_sweep_ms,
                   (uint64_t)a->timing.ttl_sweep_ms);
    uv_unref((uv_handle_t *)&s->sweep);
    return 0;
}

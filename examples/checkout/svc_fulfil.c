/*
 * svc_fulfil.c — shipping (the cost that goes into the total before
 * payment), warehouse (the pick list; a product flagged fail_fulfillment in
 * the catalogue cannot be picked) and notification (choreography: it
 * subscribes to the order events and writes each email to its table and to
 * DIR/notifications.log).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ck.h"

/* --- shipping ------------------------------------------------------------- */

typedef struct plain_state {
    ck_app *a;
    ck_db *db;
    void *inflight; /* warehouse: picks in progress */
    void *picked;   /* warehouse: picks due, written with the next flush */
    uv_timer_t flush;
    int flush_init;
    FILE *log; /* notification: DIR/notifications.log, opened once */
} plain_state;

/* 5.99 flat, free from 100.00, 15.00 outside the USA. */
static int64_t shipping_cost(int64_t subtotal, const char *country)
{
    if (country[0] && strcmp(country, "USA") != 0 && strcmp(country, "US") != 0)
        return 1500;
    return subtotal >= 10000 ? 0 : 599;
}

static int on_quote(saga_participant *p, const saga_command *c, saga_reply *r,
                    void *arg)
{
    (void)p;
    plain_state *s = arg;
    char order_id[64], addr_s[4096];
    ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                sizeof order_id);
    ck_data_str(c->payload, c->payload_len, "shipping_address", addr_s,
                sizeof addr_s);
    json_t *addr = json_loads(addr_s, 0, NULL);
    const char *country = json_string_value(json_object_get(addr, "country"));
    int64_t sub = ck_data_int(c->payload, c->payload_len, "subtotal", 0);
    int64_t cost = shipping_cost(sub, country ? country : "");
    json_decref(addr);
    ck_stmt *st = ck_prep(s->db, "INSERT INTO shipping_quotes "
                                 "(order_id, cost, created_at) VALUES "
                                 "(?, ?, ?) ON CONFLICT (order_id) DO UPDATE "
                                 "SET cost = excluded.cost, created_at = "
                                 "excluded.created_at");
    if (st == NULL)
        return SAGA_ESTORE;
    ck_bind_text(st, 1, order_id);
    ck_bind_int(st, 2, cost);
    ck_bind_int(st, 3, ck_now_ms());
    int rc = ck_step(st);
    ck_done(st);
    if (rc != CK_DONE)
        return SAGA_ESTORE;
    saga_map *m;
    const void *b;
    size_t n;
    saga_map_new(&m);
    saga_map_set_int(m, "shipping_cost", cost);
    saga_map_encode(m, &b, &n);
    rc = saga_reply_set(r, SAGA_OUTCOME_OK, b, n, NULL);
    saga_map_free(m);
    return rc;
}

int ck_shipping_open(ck_app *a)
{
    saga_participant *p;
    plain_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->a = a;
    a->state[CK_SVC_SHIPPING] = s;
    if (ck_participant(a, CK_SVC_SHIPPING, &p, &s->db) != 0 ||
        ck_schema(s->db, "CREATE TABLE IF NOT EXISTS shipping_quotes ("
                         " order_id TEXT PRIMARY KEY, cost INTEGER NOT NULL,"
                         " created_at INTEGER NOT NULL)") != CK_OK)
        return -1;
    return saga_participant_on_command(p, "shipping.quote", on_quote, s) ||
                   saga_participant_start(p)
               ? -1
               : 0;
}

/* --- warehouse -------------------------------------------------------------- */

/* 0 picked (pick list written, event queued), 1 cannot (why set), <0 error. */
static int pick(plain_state *s, saga_participant *p, const char *order_id,
                const char *items_s, char pick_id[64], char *why, size_t wsize)
{
    json_t *items = json_loads(items_s, 0, NULL);
    size_t i;
    json_t *it;
    int bad = 0;
    json_array_foreach(items, i, it)
    {
        const char *pid = json_string_value(json_object_get(it, "product_id"));
        ck_stmt *st = ck_prep(s->db, "SELECT fail_fulfillment FROM "
                                     "warehouse_products WHERE "
                                     "product_id = ?");
        if (st == NULL) {
            json_decref(items);
            return SAGA_ESTORE;
        }
        ck_bind_text(st, 1, pid ? pid : "");
        if (ck_step(st) == CK_ROW && ck_col_int(st, 0)) {
            snprintf(why, wsize, "fulfillment_failed: %s cannot be picked",
                     pid);
            bad = 1;
        }
        ck_done(st);
        if (bad)
            break;
    }
    snprintf(pick_id, 64, "pick_%.50s",
             strncmp(order_id, "order_", 6) == 0 ? order_id + 6 : order_id);
    ck_stmt *st = ck_prep(
        s->db, "INSERT INTO pick_lists (pick_list_id, order_id, "
               "warehouse_id, status, items, created_at) VALUES (?, ?, "
               "'warehouse_001', ?, ?, ?) ON CONFLICT DO NOTHING");
    if (st == NULL) {
        json_decref(items);
        return SAGA_ESTORE;
    }
    ck_bind_text(st, 1, pick_id);
    ck_bind_text(st, 2, order_id);
    ck_bind_text(st, 3, bad ? "FAILED" : "PICKED");
    ck_bind_text(st, 4, items_s);
    ck_bind_int(st, 5, ck_now_ms());
    int rc = ck_step(st);
    ck_done(st);
    json_decref(items);
    if (rc != CK_DONE)
        return SAGA_ESTORE;
    if (bad)
        return 1;
    json_t *ev = ck_event("OrderFulfilledEvent", order_id, ck_now_ms());
    json_object_set_new(ev, "warehouse_id", json_string("warehouse_001"));
    json_object_set_new(ev, "pick_list_id", json_string(pick_id));
    json_object_set_new(ev, "success", json_true());
    rc = ck_publish(p, CK_T_FULFILL, order_id, ev);
    return rc == SAGA_OK ? 0 : rc;
}

typedef struct picking {
    plain_state *s;
    saga_participant *p;
    saga_deferred *d;
    uv_timer_t timer;
    struct picking *next, **prev;
    int rc; /* pick()'s answer, in the flush */
    char pick_id[64], why[256];
} picking;

static void picking_free(uv_handle_t *h) { free(h->data); }

/* The picks that came due in one loop turn are written in one transaction
 * (one commit instead of one per order), then each is answered. */
static void flush_picks(uv_timer_t *t)
{
    plain_state *s = t->data;
    picking *list = s->picked;
    s->picked = NULL;
    int pg = ck_db_is_pg(s->db);
    int ok = ck_begin(s->db) == CK_OK, begun = ok;
    for (picking *k = list; k != NULL; k = k->next) {
        k->rc = SAGA_ESTORE;
        if (!ok)
            continue;
        const saga_command *c = saga_deferred_command(k->d);
        char order_id[64], items[65536];
        ck_data_str(c->payload, c->payload_len, "order_id", order_id,
                    sizeof order_id);
        ck_data_str(c->payload, c->payload_len, "items", items, sizeof items);
        k->rc = pick(s, k->p, order_id, items, k->pick_id, k->why,
                     sizeof k->why);
        /* A failed statement: SQLite undid it alone (pick() writes one row,
         * last); PostgreSQL aborted the transaction, so every pick of the
         * group is answered RETRY. */
        if (k->rc < 0 && pg)
            ok = 0;
    }
    if (ok && ck_commit(s->db) != CK_OK)
        ok = 0;
    if (!ok && begun)
        ck_rollback(s->db);
    while (list != NULL) {
        picking *k = list;
        list = k->next;
        if (!ok || k->rc < 0)
            saga_deferred_reply(k->d, SAGA_OUTCOME_RETRY, NULL, 0,
                                "warehouse database busy");
        else if (k->rc == 1)
            saga_deferred_reply(k->d, SAGA_OUTCOME_FAIL, NULL, 0, k->why);
        else {
            saga_map *m;
            const void *b;
            size_t n;
            saga_map_new(&m);
            saga_map_set_str(m, "pick_list_id", k->pick_id);
            saga_map_encode(m, &b, &n);
            saga_deferred_reply(k->d, SAGA_OUTCOME_OK, b, n, NULL);
            saga_map_free(m);
        }
        uv_close((uv_handle_t *)&k->timer, picking_free);
    }
}

static void picked(uv_timer_t *t)
{
    picking *k = t->data;
    plain_state *s = k->s;
    *k->prev = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->next = s->picked;
    k->prev = NULL;
    s->picked = k;
    if (!s->flush_init) {
        uv_timer_init(s->a->loop, &s->flush);
        s->flush.data = s;
        s->flush_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&s->flush))
        uv_timer_start(&s->flush, flush_picks, 0, 0);
}

static int on_fulfil(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    plain_state *s = arg;
    picking *k = calloc(1, sizeof *k);
    if (k == NULL)
        return SAGA_ENOMEM;
    int rc = saga_reply_defer(r, &k->d);
    if (rc != SAGA_OK) {
        free(k);
        return rc;
    }
    k->s = s;
    k->p = p;
    uv_timer_init(s->a->loop, &k->timer);
    k->timer.data = k;
    k->next = s->inflight;
    k->prev = (picking **)&s->inflight;
    if (k->next)
        k->next->prev = &k->next;
    s->inflight = k;
    uv_timer_start(&k->timer, picked, s->a->timing.pick_ms, 0);
    return SAGA_OK;
}

void ck_warehouse_shutdown(ck_app *a);
void ck_warehouse_shutdown(ck_app *a)
{
    plain_state *s = a->state[CK_SVC_WAREHOUSE];
    while (s != NULL && s->inflight) {
        picking *k = s->inflight;
        s->inflight = k->next;
        saga_deferred_abandon(k->d);
        uv_close((uv_handle_t *)&k->timer, picking_free);
    }
    while (s != NULL && s->picked) {
        picking *k = s->picked;
        s->picked = k->next;
        saga_deferred_abandon(k->d);
        uv_close((uv_handle_t *)&k->timer, picking_free);
    }
    if (s != NULL && s->flush_init) {
        s->flush_init = 0;
        uv_close((uv_handle_t *)&s->flush, NULL);
    }
}

int ck_warehouse_open(ck_app *a)
{
    saga_participant *p;
    plain_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->a = a;
    a->state[CK_SVC_WAREHOUSE] = s;
    if (ck_participant(a, CK_SVC_WAREHOUSE, &p, &s->db) != 0 ||
        ck_schema(
            s->db,
            "CREATE TABLE IF NOT EXISTS warehouse_products ("
            " product_id TEXT PRIMARY KEY,"
            " fail_fulfillment INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS pick_lists ("
            " pick_list_id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE,"
            " warehouse_id TEXT NOT NULL, status TEXT NOT NULL,"
            " items TEXT NOT NULL, created_at INTEGER NOT NULL)") != CK_OK)
        return -1;
    ck_stmt *st = ck_prep(s->db, "INSERT INTO warehouse_products "
                                 "(product_id, fail_fulfillment) VALUES "
                                 "(?, ?) ON CONFLICT (product_id) DO UPDATE "
                                 "SET fail_fulfillment = "
                                 "excluded.fail_fulfillment");
    for (size_t i = 0; st && i < a->catalog.n; i++) {
        ck_reset(st);
        ck_bind_text(st, 1, a->catalog.v[i].id);
        ck_bind_int(st, 2, a->catalog.v[i].fail_fulfillment);
        ck_step(st);
    }
    ck_done(st);
    return saga_participant_on_command(p, "warehouse.fulfill", on_fulfil, s) ||
                   saga_participant_start(p)
               ? -1
               : 0;
}

/* --- notification (choreography) --------------------------------------------- */

static int on_order_event(saga_participant *p, const saga_command *e, void *arg)
{
    (void)p;
    plain_state *s = arg;
    /* Of the five order events of a checkout only two make an email: the
     * others are dropped before their JSON is parsed (json_loadb was two
     * thirds of this handler). The event's name is its event_type
     * (ck_publish). A status update to COMPLETED holds the JSON string
     * "COMPLETED" (quotes included: "PAYMENT_COMPLETED" does not), so one
     * without it is not one; one with it is parsed and judged as before. */
    int cancelled = strcmp(e->name, "OrderCancelledEvent") == 0;
    if (!cancelled &&
        (strcmp(e->name, "OrderStatusUpdatedEvent") != 0 ||
         memmem(e->payload, e->payload_len, "\"COMPLETED\"", 11) == NULL))
        return SAGA_OK;
    json_t *ev = json_loadb(e->payload, e->payload_len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "event_type"));
    const char *oid = json_string_value(json_object_get(ev, "order_id"));
    const char *user = json_string_value(json_object_get(ev, "user_id"));
    const char *newst = json_string_value(json_object_get(ev, "new_status"));
    char subject[256], body[1024], addr[300];
    int send = 0;
    if (type && oid && strcmp(type, "OrderStatusUpdatedEvent") == 0 && newst &&
        strcmp(newst, "COMPLETED") == 0) {
        char *total = ck_dump(json_object_get(ev, "total_amount"));
        snprintf(subject, sizeof subject, "Your order %s is confirmed", oid);
        snprintf(body, sizeof body,
                 "Thank you! Order %s is confirmed and on its way. Total "
                 "charged: %s.",
                 oid, total ? total : "?");
        free(total);
        send = 1;
    } else if (type && oid && strcmp(type, "OrderCancelledEvent") == 0) {
        const char *why = json_string_value(json_object_get(ev, "reason"));
        snprintf(subject, sizeof subject, "Your order %s was cancelled", oid);
        snprintf(body, sizeof body,
                 "Sorry, order %s was cancelled (%s). Any payment taken has "
                 "been refunded.",
                 oid, why ? why : "unknown");
        send = 1;
    }
    int rc = SAGA_OK;
    if (send) {
        snprintf(addr, sizeof addr, "%s@example.com", user ? user : "customer");
        int64_t now = ck_now_ms();
        ck_stmt *st = ck_prep(
            s->db, "INSERT INTO emails (event_id, order_id, address, "
                   "subject, body, sent_at) VALUES (?, ?, ?, ?, ?, ?) ON "
                   "CONFLICT DO NOTHING");
        if (st == NULL)
            rc = SAGA_ESTORE;
        else {
            ck_bind_text(st, 1, e->msg_id);
            ck_bind_text(st, 2, oid);
            ck_bind_text(st, 3, addr);
            ck_bind_text(st, 4, subject);
            ck_bind_text(st, 5, body);
            ck_bind_int(st, 6, now);
            if (ck_step(st) != CK_DONE)
                rc = SAGA_ESTORE;
            ck_done(st);
        }
        char ts[32];
        ck_iso8601(now, ts);
        /* The file stays open (it was opened and closed per email: an
         * openat and a close per checkout); each email is flushed, so the
         * log is readable as it was. */
        if (rc == SAGA_OK && s->log == NULL) {
            char path[1200];
            snprintf(path, sizeof path, "%s/notifications.log", s->a->dir);
            s->log = fopen(path, "a");
        }
        if (rc == SAGA_OK && s->log != NULL) {
            fprintf(s->log, "%s to=%s subject=\"%s\"\n    %s\n", ts, addr,
                    subject, body);
            fflush(s->log);
        }
    }
    json_decref(ev);
    return rc;
}

int ck_notification_open(ck_app *a)
{
    saga_participant *p;
    plain_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -1;
    s->a = a;
    a->state[CK_SVC_NOTIFICATION] = s;
    if (ck_participant(a, CK_SVC_NOTIFICATION, &p, &s->db) != 0 ||
        ck_schema(s->db,
                  "CREATE TABLE IF NOT EXISTS emails ("
                  " email_id INTEGER PRIMARY KEY AUTOINCREMENT,"
                  " event_id TEXT NOT NULL UNIQUE, order_id TEXT NOT NULL,"
                  " address TEXT NOT NULL, subject TEXT NOT NULL,"
                  " body TEXT NOT NULL, sent_at INTEGER NOT NULL)") != CK_OK)
        return -1;
    return saga_participant_on_event(p, CK_T_ORDER, "notification", NULL,
                                     on_order_event, s) ||
                   saga_participant_start(p)
               ? -1
               : 0;
}

/* --- shutdown ---------------------------------------------------------------- */

void ck_payment_shutdown(ck_app *a);

static int closing_count;
static void (*closing_done)(ck_app *);
static ck_app *closing_app;

static void one_closed(void *arg)
{
    (void)arg;
    if (--closing_count != 0)
        return;
    /* Every participant is closed: no email comes any more. */
    plain_state *n = closing_app->state[CK_SVC_NOTIFICATION];
    if (n != NULL && n->log != NULL) {
        fclose(n->log);
        n->log = NULL;
    }
    if (closing_done)
        closing_done(closing_app);
}

static void engine_closed(void *arg) { one_closed(arg); }

void ck_services_close(ck_app *a, void (*done)(ck_app *a))
{
    closing_done = done;
    closing_app = a;
    closing_count = 1;
    ck_payment_shutdown(a);
    ck_warehouse_shutdown(a);
    if (a->engine) {
        closing_count++;
        saga_engine_close(a->engine, engine_closed, NULL);
        a->engine = NULL;
    }
    for (int i = 0; i < CK_NSVC; i++)
        if (a->svc[i]) {
            closing_count++;
            saga_participant_close(a->svc[i], one_closed, NULL);
            a->svc[i] = NULL;
        }
    one_closed(NULL);
}

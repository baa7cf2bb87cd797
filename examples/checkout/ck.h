/*
 * ck.h — the checkout system built on libsaga: shared types of the seven
 * services, the HTTP front and the command line (saga-checkout).
 *
 * Money is integer cents everywhere inside; JSON shows it as a number with
 * two decimals. Times are milliseconds since the epoch inside, RFC 3339 UTC
 * in JSON.
 */
#ifndef CK_H
#define CK_H

#include <jansson.h>
#include <saga/saga.h>
#include <stdint.h>
#include <uv.h>

#include "db.h"

/* Topics (the seed's Part 7) and where each goes. */
#define CK_T_ORDER "order-events"         /* -> notification */
#define CK_T_INVENTORY "inventory-events" /* -> order (status) */
#define CK_T_PAYMENT "payment-events"     /* -> order (status) */
#define CK_T_FULFILL "fulfillment-events" /* -> order (status) */
#define CK_T_CART "cart-events"           /* -> cart (clear after order) */

enum {
    CK_SVC_ORDER,
    CK_SVC_CART,
    CK_SVC_INVENTORY,
    CK_SVC_PAYMENT,
    CK_SVC_SHIPPING,
    CK_SVC_WAREHOUSE,
    CK_SVC_NOTIFICATION,
    CK_NSVC
};
extern const char *const ck_svc_names[CK_NSVC];
int ck_svc_index(const char *name);

/* One catalogue entry. */
typedef struct ck_product {
    char id[64];
    char name[128];
    int64_t price; /* cents */
    int64_t stock;
    int fail_fulfillment; /* warehouse cannot pick it */
} ck_product;

typedef struct ck_catalog {
    ck_product *v;
    size_t n;
} ck_catalog;

/* Timing knobs (the demo and tests shorten nothing; these are the values). */
typedef struct ck_timing {
    int64_t reservation_ttl_ms;       /* inventory hold before auto-release */
    int64_t ttl_sweep_ms;             /* how often expired holds are swept */
    uint32_t payment_step_timeout_ms; /* engine's per-attempt timeout */
    uint32_t gateway_timeout_ms; /* payment service gives up on the gateway */
    uint32_t gateway_slow_ms;    /* tok_slow answers after this */
    uint32_t gateway_latency_ms; /* every other gateway answer */
    uint32_t pick_ms;            /* warehouse picking time */
    /* CK_MAX_PENDING: the order engine's max_active (engine options
     * version 3): new checkouts are refused (503 overloaded) while it runs
     * this many sagas (0: no cap). */
    uint64_t max_pending;
} ck_timing;

/* The process: what runs here, on one loop. */
typedef struct ck_app {
    uv_loop_t *loop;
    char dir[1024];
    ck_catalog catalog;
    ck_timing timing;
    int distributed; /* TCP transport, one service per process */
    /* --store postgres://...: every service in its own schema of that
     * database (NULL: SQLite files in dir). */
    const char *store;
    /* transports */
    saga_inmem_bus *bus;   /* one-process mode */
    json_t *config;        /* distributed: the config file */
    const char *transport; /* distributed: kafka://... (else TCP) */
    /* services (NULL when not in this process) */
    saga_engine *engine; /* the order service's orchestrator */
    saga_participant *svc[CK_NSVC];
    void *state[CK_NSVC]; /* per-service state */
    /* databases the HTTP front reads (own connections when the service runs
     * elsewhere) */
    ck_db *order_db, *cart_db, *inventory_db, *payment_db;
    int own_db[4];
    struct ck_http *http;
    struct ck_gateway *gateway;
    int closing;
    int pending_close;
    int quiet;
    /* operations (docs/operations.md) */
    int log_json;            /* --log-format json: JSON-lines logs */
    const char *admin_token; /* CK_ADMIN_TOKEN: the console at /console/ */
    saga_participant *parts[CK_NSVC]; /* for GET /metrics */
    size_t nparts;
    /* serve --threads N > 1: the participants running on the other loops
     * of this process, listed in GET /metrics only (their counters are
     * plain integers read from this thread: a value may be a moment
     * stale). Set before the other loops start; they outlive the HTTP
     * front. */
    saga_participant *peer_parts[CK_NSVC];
    size_t npeer_parts;
    void *metrics_http; /* a metrics-only server (distributed) */
} ck_app;

/* --- util.c ---------------------------------------------------------- */
int64_t ck_now_ms(void);
int ck_synchronous(void); /* saga_sqlite_options.synchronous */
/* ckpt.c (serve --threads > 1): the main loop's WAL checkpoints run on a
 * thread of their own, not on a participants' loop. init starts it (0 or
 * -1); attach a main-loop connection (0, or -1: it keeps SQLite's own
 * checkpoints); close (any thread) once the main loop's services are
 * closed: stops and joins it. */
struct sqlite3;
int ck_ckpt_init(void);
int ck_ckpt_attach(struct sqlite3 *conn);
void ck_ckpt_close(void);
void ck_iso8601(int64_t ms, char out[32]);
json_t *ck_json_time(int64_t ms);
json_t *ck_json_money(int64_t cents);
/* Parse a JSON number of money into cents; -1 if not a valid amount. */
int64_t ck_money_parse(const json_t *v);
void ck_random_id(const char *prefix, char *out, size_t size);
char *ck_dump(const json_t *j); /* compact, sorted keys; free() it */
void ck_log(ck_app *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int ck_catalog_load(ck_catalog *c, const char *path, char *err, size_t esz);
void ck_catalog_builtin(ck_catalog *c);
void ck_catalog_free(ck_catalog *c);
/* A msgpack map from a few strings / ints. */
int ck_map_str(saga_map *m, const char *k, const char *v);
/* Copy a saga data string into a NUL-terminated buffer; "" if absent. */
void ck_data_str(const void *d, size_t n, const char *k, char *out,
                 size_t size);
int64_t ck_data_int(const void *d, size_t n, const char *k, int64_t dflt);
/* Publish a JSON event (saga_participant_publish); the body is the dump. */
int ck_publish(saga_participant *p, const char *topic, const char *order_id,
               json_t *ev /* stolen */);
/* A new event object with event_id, event_type, order_id, timestamp. */
json_t *ck_event(const char *type, const char *order_id, int64_t now);

/* --- transport / service bootstrap (main.c) --------------------------- */
saga_transport *ck_transport(ck_app *a, const char *endpoint);
int ck_participant(ck_app *a, int svc, saga_participant **out, ck_db **db);
/* A connection of its own to service @p svc's tables (HTTP front). */
int ck_open_db(ck_app *a, const char *svc, ck_db **out);
/* The store spec of @p name ("cart", ..., "order-saga"): DIR/NAME.db, or
 * the --store URL with schema=NAME (a schema given in the URL is a
 * prefix: schema=shop gives shop_cart); @p schema_out (may be NULL) gets
 * the PostgreSQL schema, "" for SQLite. */
int ck_store_spec(ck_app *a, const char *name, char *out, size_t size,
                  char schema_out[64]);

/* --- services --------------------------------------------------------- */
int ck_order_open(ck_app *a);  /* engine + order participant */
int ck_order_start(ck_app *a); /* after every service is up */
int ck_cart_open(ck_app *a);
int ck_cart_schema(ck_db *db);
int ck_cart_seed(ck_db *db, const ck_catalog *c, int64_t now);
int ck_inventory_open(ck_app *a);
int ck_inventory_schema(ck_db *db);
int ck_inventory_seed(ck_db *db, const ck_catalog *c, int64_t now);
int ck_payment_open(ck_app *a);
int ck_payment_schema(ck_db *db);
int ck_shipping_open(ck_app *a);
int ck_warehouse_open(ck_app *a);
int ck_notification_open(ck_app *a);
void ck_services_close(ck_app *a, void (*done)(ck_app *a));

/* Inventory core (inventory.c), on a handle with the schema; a unit test
 * drives these with its own clock. Items: JSON array of {product_id,
 * quantity}. Returns 0 reserved, 1 insufficient stock (failed_out gets the
 * seed's failed_items), -1 on a database error. */
int ck_inv_reserve(ck_db *db, const char *order_id, const json_t *items,
                   int64_t now, int64_t ttl_ms, json_t **failed_out);
/* Release a reservation (compensation): returns released items or NULL if
 * there was nothing to release; *err set on a database error. */
json_t *ck_inv_release(ck_db *db, const char *order_id, const char *why,
                       int64_t now, int *err);
int ck_inv_commit(ck_db *db, const char *order_id, int64_t now);
/* Release every reservation expired at @p now; the order ids released go
 * to @p released (array, may be NULL). Returns the count or -1. */
int ck_inv_sweep(ck_db *db, int64_t now, json_t *released);
/* 1 if available+reserved+sold == total (and none negative) everywhere. */
int ck_inv_check(ck_db *db);

/* Payment gateway simulation (gateway.c). */
typedef struct ck_gateway ck_gateway;
typedef enum ck_gw_result {
    CK_GW_CHARGED,
    CK_GW_DECLINED,
    CK_GW_TRANSIENT,
    CK_GW_VOIDED,
    CK_GW_LATE /* charged too late, and reversed (payment service) */
} ck_gw_result;
typedef void (*ck_gw_cb)(ck_gw_result r, const char *txn_id, void *arg);
int ck_gateway_new(ck_gateway **out, ck_app *a, ck_db *db);
void ck_gateway_close(ck_gateway *g);
/* Charge asynchronously (a timer is the network). Deduplicated by @p key:
 * a key that charged answers the same transaction without charging. The
 * callback may never run (tok_timeout); the caller keeps its own timeout
 * and then calls ck_gateway_void(). Returns a request handle (cancel with
 * ck_gateway_forget()) or NULL. */
void *ck_gateway_charge(ck_gateway *g, const char *key, const char *token,
                        const char *order_id, int64_t amount, ck_gw_cb cb,
                        void *arg);
/* The same decision at once, without the network (no deferred replies). */
ck_gw_result ck_gateway_charge_now(ck_gateway *g, const char *key,
                                   const char *token, const char *order_id,
                                   int64_t amount, char txn[64]);
void ck_gateway_forget(ck_gateway *g, void *req);
/* Void a key that has not charged: a late request with it will not charge.
 * 0 voided, 1 it had charged already (txn set), -1 error. */
int ck_gateway_void(ck_gateway *g, const char *key, char txn[64]);
/* Refund a charge (idempotent by key); 0 ok, 1 nothing charged, -1 error. */
int ck_gateway_refund(ck_gateway *g, const char *key, int64_t *amount);

/* --- http.c -------------------------------------------------------------- */
int ck_http_start(ck_app *a, const char *listen, char *bound, size_t bsize);
/* GET /metrics alone, for a service without the REST front. */
int ck_metrics_start(ck_app *a, const char *listen);
/* The structured log sink to use (NULL: the services' own text lines). */
void (*ck_log_sink(ck_app *a))(const saga_log_event *ev, void *arg);
void ck_http_stop(ck_app *a);

/* --- demo.c ------------------------------------------------------------ */
int ck_demo(int argc, char **argv);

#endif /* CK_H */

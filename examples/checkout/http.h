/*
 * http.h — the REST front's request object, independent of libh2o: the API
 * code (api_*.c) sees only this; http.c owns the h2o server.
 */
#ifndef CK_HTTP_H
#define CK_HTTP_H

#include "ck.h"

#define CK_MAX_SEGS 8
/* X-User-Id (and the history's user_id): 1 to 128 bytes of UTF-8. */
#define CK_USER_ID_MAX 128

typedef struct ck_req {
    ck_app *a;
    void *h2o;          /* h2o_req_t, NULL once the client is gone */
    const char *method; /* "GET", ... (NUL-terminated copy); HEAD is "GET" */
    int head;           /* a HEAD request: answered as GET without a body */
    const char *body;
    size_t body_len;
    const char *user_id;     /* X-User-Id or NULL */
    const char *idem_key;    /* Idempotency-Key or NULL */
    const char *traceparent; /* W3C traceparent or NULL */
    char *segs[CK_MAX_SEGS]; /* path segments */
    int nsegs;
    const char *query;    /* after '?', or "" */
    struct ck_wait *wait; /* when deferred */
} ck_req;

/* A deferred answer: valid until ck_wait_reply() (which frees it), also
 * after its timeout or the client's going away (the answer is dropped). */
typedef struct ck_wait ck_wait;

/* Answer now; @p body is stolen (NULL: no body). */
void ck_reply(ck_req *r, int status, json_t *body);
/* Answer with an extra header (e.g. X-Idempotency-Key). */
void ck_reply_hdr(ck_req *r, int status, json_t *body, const char *hname,
                  const char *hval);
void ck_error(ck_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Answer later: the handler returns; the answer comes from ck_wait_reply.
 * An answer not given within @p timeout_ms becomes a 503. */
ck_wait *ck_defer(ck_req *r, uint32_t timeout_ms);
void ck_wait_reply(ck_wait *w, int status, json_t *body, const char *hname,
                   const char *hval);
void ck_wait_error(ck_wait *w, int status, const char *code, const char *msg);
/* The client went away (the answer would be dropped). */
int ck_wait_gone(const ck_wait *w);

/* Query parameter @p name, URL-decoded into @p buf; NULL if absent; "" if
 * its value holds a NUL or is longer than @p size - 1 bytes. */
const char *ck_query(const ck_req *r, const char *name, char *buf, size_t size);

/* Parse the body as a JSON object; on failure answers 400 and returns NULL. */
json_t *ck_body_object(ck_req *r);

/* api.c: route one request. */
void ck_route(ck_req *r);
/* api_cart.c, api_order.c, api_pay.c */
void ck_api_cart(ck_req *r);
void ck_api_products(ck_req *r);
void ck_api_checkout(ck_req *r);
void ck_api_order_get(ck_req *r, const char *order_id);
void ck_api_orders_list(ck_req *r);
void ck_api_payment_process(ck_req *r);
void ck_api_inventory(ck_req *r);
void ck_api_ledger(ck_req *r);

#endif

/*
 * api.c — the routing table of the REST API (the seed's Part 6 plus a few
 * read-only operator endpoints), 404 for unknown paths and 405 with Allow
 * for a known path with the wrong method.
 */
#include <stdio.h>
#include <string.h>

#include "http.h"

static int is(const ck_req *r, int i, const char *s)
{
    return i < r->nsegs && strcmp(r->segs[i], s) == 0;
}

static int method_ok(ck_req *r, const char *allow)
{
    /* allow: "GET" or "PUT, DELETE" ... */
    char buf[64];
    snprintf(buf, sizeof buf, "%s", allow);
    char *save = NULL;
    for (char *m = strtok_r(buf, ", ", &save); m != NULL;
         m = strtok_r(NULL, ", ", &save))
        if (strcmp(m, r->method) == 0)
            return 1;
    /* Where GET is allowed, so is HEAD (answered as GET without a body). */
    char hdr[80];
    snprintf(hdr, sizeof hdr, "%s%s", allow,
             strstr(allow, "GET") != NULL ? ", HEAD" : "");
    ck_reply_hdr(r, 405,
                 json_pack("{s:{s:s, s:s}}", "error", "code",
                           "method_not_allowed", "message",
                           "method not allowed on this path"),
                 "allow", hdr);
    return 0;
}

void ck_route(ck_req *r)
{
    if (r->nsegs == 1 && is(r, 0, "health")) {
        if (method_ok(r, "GET"))
            ck_reply(r, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (r->nsegs < 3 || !is(r, 0, "api") || !is(r, 1, "v1"))
        goto notfound;
    const char *res = r->segs[2];
    int n = r->nsegs;
    if (strcmp(res, "carts") == 0 && n >= 4) {
        if (n == 4) {
            if (method_ok(r, "GET"))
                ck_api_cart(r);
            return;
        }
        if (n == 5 && is(r, 4, "items")) {
            if (method_ok(r, "POST"))
                ck_api_cart(r);
            return;
        }
        if (n == 6 && is(r, 4, "items")) {
            if (method_ok(r, "PUT, DELETE"))
                ck_api_cart(r);
            return;
        }
        goto notfound;
    }
    if (strcmp(res, "orders") == 0) {
        if (n == 3) {
            if (method_ok(r, "GET"))
                ck_api_orders_list(r);
            return;
        }
        if (n == 4 && is(r, 3, "checkout")) {
            if (method_ok(r, "POST"))
                ck_api_checkout(r);
            return;
        }
        if (n == 4) {
            if (method_ok(r, "GET"))
                ck_api_order_get(r, r->segs[3]);
            return;
        }
        goto notfound;
    }
    if (strcmp(res, "payments") == 0 && n == 4 && is(r, 3, "process")) {
        if (method_ok(r, "POST"))
            ck_api_payment_process(r);
        return;
    }
    if (strcmp(res, "products") == 0 && n == 3) {
        if (method_ok(r, "GET"))
            ck_api_products(r);
        return;
    }
    if (strcmp(res, "inventory") == 0 && n == 3) {
        if (method_ok(r, "GET"))
            ck_api_inventory(r);
        return;
    }
    if (strcmp(res, "ledger") == 0 && n == 3) {
        if (method_ok(r, "GET"))
            ck_api_ledger(r);
        return;
    }
notfound:
    ck_error(r, 404, "not_found", "no such path");
}

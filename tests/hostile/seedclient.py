#!/usr/bin/env python3
"""A second REST client of the checkout, written from the seed's Parts 5-8
and docs/checkout-api.md alone (not from the project's other tests).

    seedclient.py BASE_URL DATA_DIR|-

Runs every Part 6 contract against a running server whose catalogue is
seedclient-catalog.json (the driver seedclient.sh starts it), then checks
the money, the stock and the emails from the services' SQLite files in
DATA_DIR ("-": PostgreSQL or no files: the checks through the API only).
Every request has a timeout; the whole run is bounded (about 20 s of
waiting at most per order). Exit status 0 when every check held; each
failed check prints one line "FAIL: ..." and the run goes on.
"""
import http.client
import json
import os
import re
import sqlite3
import sys
import threading
import time
import urllib.parse

BASE = urllib.parse.urlparse(sys.argv[1])
DATA = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
RUN = "%x" % int(time.time() * 1000)  # unique ids per run (shared PG DB)
FAILS = []
CHECKS = [0]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what, flush=True)
    return cond


def req(method, path, body=None, user=None, key=None, raw=None, headers=None):
    """One request on its own connection; returns (status, headers, json|None,
    text)."""
    c = http.client.HTTPConnection(BASE.hostname, BASE.port, timeout=30)
    h = {"Content-Type": "application/json"}
    if user is not None:
        h["X-User-Id"] = user
    if key is not None:
        h["Idempotency-Key"] = key
    if headers:
        h.update(headers)
    data = raw if raw is not None else (
        None if body is None else json.dumps(body).encode())
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    text = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    try:
        js = json.loads(text) if text else None
    except ValueError:
        js = None
    return r.status, hdrs, js, text


def err_is(res, status, code, what):
    st, _, js, text = res
    ok = st == status and isinstance(js, dict) and isinstance(
        js.get("error"), dict) and js["error"].get("code") == code and \
        isinstance(js["error"].get("message"), str)
    return check(ok, "%s: want %d %s, got %d %s" % (what, status, code, st,
                                                     text[:200]))


def money_ok(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        abs(round(v * 100) - v * 100) < 1e-6


API = "/api/v1"
ADDR = {"street": "123 Main St", "city": "San Francisco", "state": "CA",
        "zip": "94102", "country": "USA"}


def pm(tok):
    return {"type": "credit_card", "card_token": tok}


def body(cart, tok="tok_ok", addr=None):
    return {"cart_id": cart, "shipping_address": addr or ADDR,
            "payment_method": pm(tok)}


def add(cart, user, prod, q, want=201):
    r = req("POST", "%s/carts/%s/items" % (API, cart),
            {"product_id": prod, "quantity": q}, user=user)
    check(r[0] == want, "add %s x%d to %s: want %d, got %d %s" %
          (prod, q, cart, want, r[0], r[3][:200]))
    return r


def wait_terminal(oid, limit=25.0):
    end = time.time() + limit
    while True:
        st, _, js, _ = req("GET", "%s/orders/%s" % (API, oid))
        if st == 200 and js.get("status") in ("COMPLETED", "CANCELLED") and \
                js.get("saga_state") in ("COMPLETED", "COMPENSATED", "FAILED"):
            return js
        if time.time() > end:
            check(False, "order %s not terminal in %.0f s: %s" %
                  (oid, limit, js))
            return js
        time.sleep(0.05)


def checkout(cart, user, key, tok="tok_ok", want=202):
    r = req("POST", API + "/orders/checkout", body(cart, tok), user=user,
            key=key)
    check(r[0] == want, "checkout %s key %s: want %d, got %d %s" %
          (cart, key, want, r[0], r[3][:200]))
    return r


# ---------------------------------------------------------------- cart
def cart_contracts():
    c, u = "c_cart_" + RUN, "u_cart_" + RUN
    err_is(req("POST", "%s/carts/%s/items" % (API, c),
               {"product_id": "pA", "quantity": 1}), 401, "missing_user_id",
           "add without X-User-Id")
    st, _, js, _ = add(c, u, "pA", 2)
    check(js and js.get("cart_id") == c and js.get("product_id") == "pA" and
          js.get("quantity") == 2 and js.get("price") == 10.25 and
          isinstance(js.get("cart_item_id"), str) and
          TS.match(js.get("added_at", "")), "201 body of add: %s" % js)
    item = js["cart_item_id"]
    st, _, js, _ = add(c, u, "pA", 3)
    check(js and js.get("quantity") == 5 and js.get("cart_item_id") == item,
          "adding the same product adds to its line: %s" % js)
    err_is(req("POST", "%s/carts/%s/items" % (API, c),
               {"product_id": "pA", "quantity": 1}, user="intruder"),
           403, "forbidden", "another user's cart")
    # (an integer past 64 bits gives 400 invalid_json: ckapp's known leftover)
    for q in (2.5, "2", 0, -1, 10001, None, True, 1e30):
        b = {"product_id": "pA"}
        if q is not None:
            b["quantity"] = q
        err_is(req("POST", "%s/carts/%s/items" % (API, c), b, user=u), 422,
               "invalid_quantity", "quantity %r" % (q,))
    err_is(req("POST", "%s/carts/%s/items" % (API, c), {"quantity": 1},
               user=u), 422, "invalid_field", "product_id missing")
    err_is(req("POST", "%s/carts/%s/items" % (API, c),
               {"product_id": 7, "quantity": 1}, user=u), 422,
           "invalid_field", "product_id a number")
    err_is(req("POST", "%s/carts/%s/items" % (API, c),
               {"product_id": "nope", "quantity": 1}, user=u), 404,
           "product_not_found", "unknown product")
    err_is(req("POST", "%s/carts/%s/items" % (API, "x" * 51),
               {"product_id": "pA", "quantity": 1}, user=u), 422,
           "invalid_field", "cart_id of 51 bytes")
    check(req("POST", "%s/carts/%s/items" % (API, "y" * 50 + RUN[:0]),
              {"product_id": "pA", "quantity": 1},
              user=u + "b")[0] in (201, 403), "cart_id of 50 bytes accepted")
    for raw, what in ((b"{", "truncated"), (b"[1]", "array"),
                      (b'{"product_id":"pA","product_id":"pB","quantity":1}',
                       "duplicate key"), (b"", "empty"), (b"null", "null"),
                      (b'{"a":1} x', "trailing garbage")):
        err_is(req("POST", "%s/carts/%s/items" % (API, c), user=u, raw=raw),
               400, "invalid_json", "malformed body: " + what)
    # PUT, bare number id too
    st, _, js, _ = req("PUT", "%s/carts/%s/items/%s" % (API, c, item),
                       {"quantity": 3}, user=u)
    check(st == 200 and js.get("cart_item_id") == item and
          js.get("quantity") == 3 and TS.match(js.get("updated_at", "")),
          "PUT quantity: %d %s" % (st, js))
    num = item.split("_")[-1]
    st, _, js, _ = req("PUT", "%s/carts/%s/items/%s" % (API, c, num),
                       {"quantity": 4}, user=u)
    check(st == 200 and js.get("quantity") == 4, "PUT by bare number: %d %s"
          % (st, js))
    err_is(req("PUT", "%s/carts/%s/items/%s" % (API, c, item),
               {"quantity": 0}, user=u), 422, "invalid_quantity", "PUT 0")
    err_is(req("PUT", "%s/carts/%s/items/item_999999" % (API, c),
               {"quantity": 1}, user=u), 404, "item_not_found",
           "PUT unknown item")
    err_is(req("PUT", "%s/carts/nocart_%s/items/%s" % (API, RUN, item),
               {"quantity": 1}, user=u), 404, "cart_not_found",
           "PUT unknown cart")
    err_is(req("PUT", "%s/carts/%s/items/%s" % (API, c, item),
               {"quantity": 1}, user="intruder"), 403, "forbidden",
           "PUT another user's cart")
    err_is(req("PUT", "%s/carts/%s/items/%s" % (API, c, item),
               {"quantity": 1}), 401, "missing_user_id", "PUT without user")
    # GET
    add(c, u, "pB", 1)
    st, _, js, _ = req("GET", "%s/carts/%s" % (API, c), user=u)
    check(st == 200 and js.get("cart_id") == c and js.get("user_id") == u and
          len(js.get("items", [])) == 2 and js.get("item_count") == 5 and
          js.get("total_amount") == 4 * 10.25 + 5.5 and
          TS.match(js.get("updated_at", "")) and
          all(set(("cart_item_id", "product_id", "quantity", "price",
                   "name")) <= set(i) for i in js.get("items", [])),
          "GET cart: %d %s" % (st, js))
    err_is(req("GET", "%s/carts/%s" % (API, c), user="intruder"), 403,
           "forbidden", "GET another user's cart")
    err_is(req("GET", "%s/carts/%s" % (API, c)), 401, "missing_user_id",
           "GET cart without user")
    err_is(req("GET", "%s/carts/nocart_%s" % (API, RUN), user=u), 404,
           "cart_not_found", "GET unknown cart")
    # DELETE
    st, _, _, text = req("DELETE", "%s/carts/%s/items/%s" % (API, c, item),
                         user=u)
    check(st == 204 and text == b"", "DELETE: %d %r" % (st, text))
    err_is(req("DELETE", "%s/carts/%s/items/%s" % (API, c, item), user=u),
           404, "item_not_found", "DELETE twice")
    err_is(req("DELETE", "%s/carts/nocart_%s/items/1" % (API, RUN), user=u),
           404, "cart_not_found", "DELETE in unknown cart")
    # cart_full: 100 distinct products, the 101st refused
    f = "c_full_" + RUN
    for i in range(100):
        r = req("POST", "%s/carts/%s/items" % (API, f),
                {"product_id": "p_fill_%03d" % i, "quantity": 1}, user=u)
        if r[0] != 201:
            check(False, "filling cart: product %d got %d" % (i, r[0]))
            break
    err_is(req("POST", "%s/carts/%s/items" % (API, f),
               {"product_id": "p_fill_100", "quantity": 1}, user=u), 422,
           "cart_full", "the 101st distinct product")
    check(add(f, u, "p_fill_000", 1)[0] == 201,
          "adding to a line of a full cart")
    # methods and paths
    st, h, js, _ = req("PATCH", "%s/carts/%s" % (API, c), user=u)
    err_is((st, h, js, b""), 405, "method_not_allowed", "PATCH cart")
    check("allow" in h and "GET" in h.get("allow", ""), "Allow header: %s" % h)
    err_is(req("GET", API + "/orders/checkout"), 405,
           "method_not_allowed", "GET checkout")
    err_is(req("GET", API + "/nothing/here"), 404, "not_found",
           "unknown path")
    err_is(req("GET", API + "/carts/%ff%fe", user=u), 404, "not_found",
           "non-UTF-8 cart id")


# ------------------------------------------------------------ checkout
def checkout_contracts():
    u = "u_co_" + RUN
    c = "c_co_" + RUN
    add(c, u, "pA", 2)
    add(c, u, "pB", 1)
    ck = API + "/orders/checkout"
    err_is(req("POST", ck, body(c), user=u), 400, "missing_idempotency_key",
           "no key")
    err_is(req("POST", ck, body(c), user=u, key=""), 400,
           "missing_idempotency_key", "empty key")
    err_is(req("POST", ck, body(c), user=u, key="k" * 201), 400,
           "invalid_idempotency_key", "201-byte key")
    err_is(req("POST", ck, body(c), key="k_" + RUN), 401, "missing_user_id",
           "checkout without user")
    err_is(req("POST", ck, user=u, key="k_" + RUN, raw=b"{,}"), 400,
           "invalid_json", "checkout bad json")
    bad = [("cart_id", lambda b: b.pop("cart_id")),
           ("cart_id", lambda b: b.__setitem__("cart_id", 5)),
           ("shipping_address", lambda b: b.pop("shipping_address")),
           ("shipping_address", lambda b: b.__setitem__("shipping_address",
                                                        "x")),
           ("street", lambda b: b["shipping_address"].pop("street")),
           ("city", lambda b: b["shipping_address"].__setitem__("city", "")),
           ("zip", lambda b: b["shipping_address"].__setitem__("zip", 94102)),
           ("country", lambda b: b["shipping_address"].pop("country")),
           ("state", lambda b: b["shipping_address"].__setitem__("state", 1)),
           ("payment_method", lambda b: b.pop("payment_method")),
           ("type", lambda b: b["payment_method"].pop("type")),
           ("card_token", lambda b: b["payment_method"].__setitem__(
               "card_token", None))]
    for i, (field, mut) in enumerate(bad):
        b = json.loads(json.dumps(body(c)))
        mut(b)
        r = req("POST", ck, b, user=u, key="bad_%d_%s" % (i, RUN))
        if err_is(r, 422, "invalid_field", "checkout without " + field):
            check(field in r[2]["error"]["message"],
                  "message names %s: %s" % (field, r[2]["error"]["message"]))
    err_is(req("POST", ck, body("nocart_" + RUN), user=u, key="nc_" + RUN),
           404, "cart_not_found", "checkout unknown cart")
    err_is(req("POST", ck, body(c), user="intruder", key="in_" + RUN), 403,
           "forbidden", "checkout another user's cart")
    e = "c_empty_" + RUN
    add(e, u, "pA", 1)
    st, _, js, _ = req("GET", "%s/carts/%s" % (API, e), user=u)
    req("DELETE", "%s/carts/%s/items/%s" % (API, e,
                                            js["items"][0]["cart_item_id"]),
        user=u)
    err_is(req("POST", ck, body(e), user=u, key="em_" + RUN), 422,
           "cart_empty", "checkout of an empty cart")
    # the flow: 202, the same key again (reordered, respaced) 200, 409
    key = "k200_" + "x" * 190 + RUN[-5:]
    key = key[:200]
    st, h, js, _ = checkout(c, u, key, "tok_timeout")
    oid = js["order_id"]
    check(h.get("x-idempotency-key") == key, "X-Idempotency-Key: %s" % h)
    check(js.get("status") == "PENDING" and js.get("idempotency_key") == key
          and TS.match(js.get("created_at", "")) and
          TS.match(js.get("estimated_completion", "")), "202 body: %s" % js)
    t0 = time.strptime(js["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
    t1 = time.strptime(js["estimated_completion"][:19], "%Y-%m-%dT%H:%M:%S")
    check(time.mktime(t1) - time.mktime(t0) == 180 and
          js["created_at"][19:] == js["estimated_completion"][19:],
          "estimated_completion is created_at + 3 min: %s" % js)
    b2 = body(c, "tok_timeout")
    raw = json.dumps({k: b2[k] for k in reversed(list(b2))},
                     indent=3).encode()
    st, h, js2, _ = req("POST", ck, user=u, key=key, raw=raw)
    check(st == 200 and js2.get("order_id") == oid and
          js2.get("idempotency_key") == key, "same key again: %d %s" %
          (st, js2))
    err_is(req("POST", ck, body(c, "tok_ok"), user=u, key=key), 422,
           "idempotency_key_reused", "same key, other body")
    err_is(req("POST", ck, body(c, "tok_timeout"), user="intruder", key=key),
           422, "idempotency_key_reused", "same key, other user")
    err_is(req("POST", ck, body(c), user=u, key="other_" + RUN), 409,
           "checkout_in_progress", "second checkout of a pending cart")
    js = wait_terminal(oid)
    check(js.get("status") == "CANCELLED" and
          js.get("cancel_reason") == "payment_failed",
          "tok_timeout ends CANCELLED payment_failed: %s" % js.get("status"))
    st, _, js, _ = req("GET", "%s/carts/%s" % (API, c), user=u)
    check(st == 200 and len(js.get("items", [])) == 2,
          "a cancelled order leaves the cart: %s" % js)
    # 50 concurrent clients on one key
    key50 = "k50_" + RUN
    out = []
    lock = threading.Lock()
    go = threading.Barrier(50)

    def one():
        go.wait()
        r = req("POST", ck, body(c), user=u, key=key50)
        with lock:
            out.append((r[0], (r[2] or {}).get("order_id")))

    ts = [threading.Thread(target=one) for _ in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    codes = sorted(o[0] for o in out)
    ids = set(o[1] for o in out)
    check(len(out) == 50 and codes.count(202) == 1 and codes.count(200) == 49
          and len(ids) == 1 and None not in ids,
          "50 clients, one key: codes %s ids %s" % (codes, ids))
    oid = out[0][1]
    js = wait_terminal(oid)
    check(js.get("status") == "COMPLETED", "order of the 50: %s" %
          js.get("status"))
    order_shape(js, u, c, "tok_ok")
    st, _, cart, _ = req("GET", "%s/carts/%s" % (API, c), user=u)
    check(st == 200 and cart.get("items") == [],
          "a completed order empties the cart's bought items: %s" % cart)
    st, _, js, _ = req("POST", ck, body(c), user=u, key=key50)
    check(st == 200 and js.get("order_id") == oid and
          js.get("status") == "COMPLETED", "the key after completion: %d %s"
          % (st, js))
    err_is(req("GET", API + "/orders/order_nope_" + RUN), 404,
           "order_not_found", "unknown order")
    return oid


def order_shape(js, u, c, tok):
    need = ("order_id", "user_id", "cart_id", "status", "total_amount",
            "subtotal", "shipping_cost", "items", "shipping_address",
            "payment", "saga_id", "saga_state", "saga_steps", "cancel_reason",
            "idempotency_key", "created_at", "updated_at")
    check(all(k in js for k in need), "order fields: missing %s" %
          [k for k in need if k not in js])
    check(js.get("user_id") == u and js.get("cart_id") == c,
          "order user/cart: %s" % js)
    check(js.get("shipping_address") == ADDR, "shipping_address round "
          "trip: %s" % js.get("shipping_address"))
    sub = sum(round(i["price"] * 100) * i["quantity"]
              for i in js.get("items", []))
    check(round(js.get("subtotal", 0) * 100) == sub and
          round(js["total_amount"] * 100) ==
          sub + round((js.get("shipping_cost") or 0) * 100) and
          money_ok(js["total_amount"]), "amounts: %s" % js)
    p = js.get("payment") or {}
    check(p.get("status") == "COMPLETED" and isinstance(
        p.get("payment_id"), str) and isinstance(p.get("transaction_id"), str),
        "payment: %s" % p)
    names = [s.get("step") for s in js.get("saga_steps", [])]
    check(names == ["ORDER_CREATED", "INVENTORY_RESERVED",
                    "SHIPPING_CALCULATED", "PAYMENT_PROCESSED",
                    "ORDER_FULFILLED", "INVENTORY_COMMITTED",
                    "ORDER_CONFIRMED"] and
          all(s.get("status") == "COMPLETED" and TS.match(
              s.get("completed_at") or "") and s.get("attempts", 0) >= 1
              for s in js["saga_steps"]), "saga_steps: %s" % js["saga_steps"])
    check(js.get("saga_state") == "COMPLETED" and
          js.get("cancel_reason") is None, "saga_state: %s" % js)


# ------------------------------------------------------- outcomes
def outcomes():
    """Each card token and product outcome; returns {order_id: expected}."""
    u = "u_out_" + RUN
    cases = [("tok_ok", "pA", "COMPLETED", None, "COMPLETED"),
             ("tok_decline", "pA", "CANCELLED", "payment_failed", "FAILED"),
             ("tok_ok", "pOut", "CANCELLED", "inventory_failed", None),
             ("tok_ok", "pFrag", "CANCELLED", "fulfillment_failed",
              "REFUNDED"),
             ("tok_slow", "pA", "CANCELLED", "payment_failed", None),
             ("tok_flaky", "pA", "COMPLETED", None, "COMPLETED"),
             ("unknown_token_xyz", "pA", "COMPLETED", None, "COMPLETED")]
    started = []
    for i, (tok, prod, status, reason, pay) in enumerate(cases):
        c = "c_out_%d_%s" % (i, RUN)
        add(c, u, prod, 1)
        r = checkout(c, u, "ko_%d_%s" % (i, RUN), tok)
        if r[0] == 202:
            started.append((r[2]["order_id"], tok, prod, status, reason,
                            pay))
    for oid, tok, prod, status, reason, pay in started:
        js = wait_terminal(oid)
        check(js.get("status") == status and js.get("cancel_reason") ==
              reason, "%s/%s: want %s %s, got %s %s" %
              (tok, prod, status, reason, js.get("status"),
               js.get("cancel_reason")))
        p = js.get("payment")
        if pay is None:
            check(p is None or p.get("status") in ("FAILED", "REFUNDED"),
                  "%s/%s payment: %s" % (tok, prod, p))
        else:
            check(p is not None and p.get("status") == pay,
                  "%s/%s payment: %s" % (tok, prod, p))
        if pay == "REFUNDED":
            check(p.get("refunded_amount") == js.get("total_amount"),
                  "refunded_amount: %s" % p)
        steps = {s["step"]: s for s in js.get("saga_steps", [])}
        if tok == "tok_flaky":
            check(steps.get("PAYMENT_PROCESSED", {}).get("attempts") == 3,
                  "tok_flaky takes 3 attempts: %s" % steps)
        if status == "CANCELLED" and prod != "pOut":
            check(steps.get("INVENTORY_RESERVED", {}).get("status") ==
                  "COMPENSATED", "%s/%s: reservation compensated: %s" %
                  (tok, prod, js.get("saga_steps")))
            check(js.get("saga_state") == "COMPENSATED",
                  "saga_state: %s" % js.get("saga_state"))
    return [s[0] for s in started]


# ------------------------------------------------------------- history
def history():
    u = "u_hist_" + RUN
    ids = []
    for i in range(5):
        c = "c_hist_%d_%s" % (i, RUN)
        add(c, u, "pB", i + 1)
        r = checkout(c, u, "kh_%d_%s" % (i, RUN),
                     "tok_decline" if i == 2 else "tok_ok")
        ids.append(r[2]["order_id"])
        wait_terminal(ids[-1])
    q = API + "/orders?user_id=" + u
    seen = []
    for page in (1, 2, 3):
        st, _, js, _ = req("GET", "%s&limit=2&page=%d" % (q, page))
        check(st == 200 and js.get("pagination") == {
            "page": page, "limit": 2, "total": 5, "total_pages": 3},
            "pagination page %d: %s" % (page, js and js.get("pagination")))
        for o in js.get("orders", []):
            check(set(("order_id", "status", "total_amount", "item_count",
                       "created_at")) <= set(o), "history item: %s" % o)
            seen.append(o)
    check([o["order_id"] for o in seen] == list(reversed(ids)),
          "newest first, no repeat: %s vs %s" %
          ([o["order_id"] for o in seen], ids))
    check([o["item_count"] for o in seen] == [5, 4, 3, 2, 1],
          "item_count per order: %s" % [o["item_count"] for o in seen])
    st, _, js, _ = req("GET", "%s&limit=2&page=4" % q)
    check(st == 200 and js.get("orders") == [], "past the last page: %s" % js)
    st, _, js, _ = req("GET", "%s&status=CANCELLED" % q)
    check(st == 200 and [o["order_id"] for o in js.get("orders", [])] ==
          [ids[2]] and js["pagination"]["total"] == 1,
          "status filter: %s" % js)
    st, _, js, _ = req("GET", "%s&limit=1000" % q)
    check(st == 200 and js["pagination"]["limit"] == 100, "limit capped: %s"
          % (js and js.get("pagination")))
    st, _, js, _ = req("GET", q)
    check(st == 200 and js["pagination"]["limit"] == 20 and
          js["pagination"]["page"] == 1, "defaults: %s" %
          (js and js.get("pagination")))
    for bad in ("&limit=0", "&page=0", "&page=abc", "&limit=-3",
                "&status=BOGUS", "&page=1.5", "&limit="):
        err_is(req("GET", q + bad), 422, "invalid_parameter", "history " +
               bad)
    st, _, js, _ = req("GET", q + "&page=99999999999999999999999")
    check(st == 200 and js.get("orders") == [], "a huge page: %d %s" %
          (st, js))
    err_is(req("GET", API + "/orders"), 422, "invalid_parameter",
           "history without user_id")
    for other in (u + "%00x", u[:-1] + "%" + "%02x" % ord(u[-1]) + "%00"):
        st, _, js, _ = req("GET", API + "/orders?user_id=" + other)
        check(st == 422 or (st == 200 and js.get("orders") == []),
              "user_id %s is not %s: %d %s" % (other, u, st, str(js)[:120]))
    st, _, js, _ = req("GET", API + "/orders?user_id=nobody_" + RUN)
    check(st == 200 and js.get("orders") == [] and
          js["pagination"]["total"] == 0, "unknown user: %s" % js)


# ------------------------------------------------------------ payments
def payments():
    p = API + "/payments/process"

    def pb(tok, key, amount=12.34):
        return {"order_id": "order_ext_" + RUN, "amount": amount,
                "payment_method": pm(tok), "idempotency_key": key}
    st, _, js, _ = req("POST", p, pb("tok_ok", "pk1_" + RUN))
    check(st == 200 and js.get("status") == "COMPLETED" and
          js.get("amount") == 12.34 and js.get("order_id") ==
          "order_ext_" + RUN and isinstance(js.get("payment_id"), str) and
          isinstance(js.get("transaction_id"), str) and
          TS.match(js.get("processed_at", "")), "payment 200: %d %s" %
          (st, js))
    st2, _, js2, _ = req("POST", p, pb("tok_decline", "pk1_" + RUN, 99))
    check(st2 == 200 and js2.get("payment_id") == js.get("payment_id") and
          js2.get("transaction_id") == js.get("transaction_id"),
          "same payment key answers the first result: %s" % js2)
    err_is(req("POST", p, pb("tok_decline", "pk2_" + RUN)), 402,
           "INSUFFICIENT_FUNDS", "declined")
    err_is(req("POST", p, pb("tok_timeout", "pk3_" + RUN)), 504,
           "PAYMENT_TIMEOUT", "gateway timeout")
    err_is(req("POST", p, pb("tok_flaky", "pk4_" + RUN)), 503,
           "gateway_unavailable", "flaky 1")
    err_is(req("POST", p, pb("tok_flaky", "pk4_" + RUN)), 503,
           "gateway_unavailable", "flaky 2")
    st, _, js, _ = req("POST", p, pb("tok_flaky", "pk4_" + RUN))
    check(st == 200 and js.get("status") == "COMPLETED", "flaky 3rd: %d %s"
          % (st, js))
    for amount in (0, -1, 1.001, "5", None, 1e300):
        err_is(req("POST", p, pb("tok_ok", "pk5_%s_%s" % (amount, RUN),
                                 amount)), 422, "invalid_field",
               "payment amount %r" % (amount,))
    b = pb("tok_ok", "pk6_" + RUN)
    b.pop("idempotency_key")
    err_is(req("POST", p, b), 422, "invalid_field", "payment without key")
    err_is(req("POST", p, pb("tok_ok", "k" * 201)), 422, "invalid_field",
           "payment key of 201 bytes")
    err_is(req("POST", p, raw=b"[]"), 400, "invalid_json", "payment array")


# --------------------------------------------------------- operators
def operators():
    st, _, js, _ = req("GET", "/health")
    check(st == 200 and js == {"status": "ok"}, "health: %s" % js)
    st, _, js, _ = req("GET", API + "/products")
    check(st == 200 and any(p.get("product_id") == "pA" and
                            p.get("price") == 10.25
                            for p in js.get("products", [])),
          "products: %s" % str(js)[:200])
    st, _, js, _ = req("GET", API + "/inventory")
    inv = {i["product_id"]: i for i in js.get("inventory", [])}
    check(st == 200 and all(
        i["available_quantity"] + i["reserved_quantity"] +
        i["sold_quantity"] == i["total_quantity"] for i in inv.values()),
        "inventory invariant")
    return inv


def conservation(all_orders):
    """Over saga keys: net charged = sum of COMPLETED orders' totals."""
    st, _, led, _ = req("GET", API + "/ledger")
    check(st == 200 and "charges" in led, "ledger: %s" % str(led)[:200])
    completed = {}
    for oid in all_orders:
        js = req("GET", "%s/orders/%s" % (API, oid))[2]
        if js.get("status") == "COMPLETED":
            completed[oid] = round(js["total_amount"] * 100)
    by_order = {}
    for ch in led.get("charges", []):
        if not ch["idempotency_key"].startswith("pay_"):
            continue
        net = round(ch["amount"] * 100) - round(ch.get("refunded", 0) * 100) \
            if ch["state"] in ("CHARGED", "REFUNDED") else 0
        by_order[ch["order_id"]] = by_order.get(ch["order_id"], 0) + net
    for oid in all_orders:
        check(by_order.get(oid, 0) == completed.get(oid, 0),
              "money of %s: charged net %s, completed total %s" %
              (oid, by_order.get(oid, 0), completed.get(oid, 0)))


def databases(all_orders):
    """From the files: stock conserved, no charge without a COMPLETED order,
    one email per order event."""
    if not DATA:
        return
    db = lambda n: sqlite3.connect("file:%s/%s?mode=ro" % (DATA, n),
                                   uri=True, timeout=10)
    orders = dict(db("order.db").execute(
        "SELECT order_id, status FROM orders").fetchall())
    check(all(s in ("COMPLETED", "CANCELLED") for s in orders.values()),
          "every order terminal: %s" % [o for o, s in orders.items()
                                        if s not in ("COMPLETED",
                                                     "CANCELLED")])
    charged = db("payment.db").execute(
        "SELECT order_id, amount - refunded FROM gateway_charges WHERE "
        "state IN ('CHARGED','REFUNDED') AND amount - refunded <> 0 AND key "
        "LIKE 'pay_%'").fetchall()
    for oid, net in charged:
        check(orders.get(oid) == "COMPLETED", "charge of %d on %s order %s" %
              (net, orders.get(oid), oid))
    bad = db("inventory.db").execute(
        "SELECT product_id FROM inventory WHERE available_quantity + "
        "reserved_quantity + sold_quantity <> total_quantity").fetchall()
    check(not bad, "stock invariant: %s" % bad)
    held = db("inventory.db").execute(
        "SELECT order_id, status FROM reservations").fetchall()
    for oid, st in held:
        if orders.get(oid) == "CANCELLED":
            check(st != "HELD" and st != "COMMITTED",
                  "reservation %s of cancelled %s" % (st, oid))
    dup = db("notification.db").execute(
        "SELECT order_id, subject, count(*) FROM emails GROUP BY order_id, "
        "subject HAVING count(*) > 1").fetchall()
    check(not dup, "duplicate emails: %s" % dup)
    mails = dict(db("notification.db").execute(
        "SELECT order_id, count(*) FROM emails GROUP BY order_id").fetchall())
    for oid, st in orders.items():
        if st == "COMPLETED":
            check(mails.get(oid, 0) >= 1, "no email for completed %s" % oid)


def main():
    for _ in range(200):
        try:
            if req("GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    inv0 = operators()
    cart_contracts()
    o50 = checkout_contracts()
    outs = outcomes()
    history()
    payments()
    inv1 = operators()
    for pid, i in inv1.items():
        if pid in inv0:
            check(i["total_quantity"] == inv0[pid]["total_quantity"],
                  "total stock of %s moved" % pid)
    conservation([o50] + outs)
    databases([o50] + outs)
    print("seedclient: %d checks, %d failed" % (CHECKS[0], len(FAILS)))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()

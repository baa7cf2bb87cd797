#!/usr/bin/env python3
"""Load shedding of the checkout (CK_MAX_PENDING) attacked from outside,
from docs/checkout-api.md alone:

    overload.py SAGA_CHECKOUT

"While the order service has N sagas running, a checkout that would create
a new order gets 503 overloaded with Retry-After: 1 and nothing is
recorded; retrying later with the same Idempotency-Key is safe." So:

1. With CK_MAX_PENDING=1 and one slow checkout (tok_timeout, ~3 s) running:
   a new order is 503 overloaded with Retry-After and JSON error body; but
   a checkout that would NOT create an order is answered as the contract
   says even then: the same key again is 200 with the same order_id (the
   seed's idempotency flow: a client retrying a 202 whose answer it lost),
   the same key with another body is 422 idempotency_key_reused, and
   another key for the pending cart is 409 checkout_in_progress. Once the
   slow saga ended, the refused key is accepted (202) and makes one order.
2. With CK_MAX_PENDING=4, 40 carts checked out at once by 80 clients (each
   key sent twice, concurrently) while slow sagas run: per key the answers
   agree (one order id), every key that got a 2xx has exactly one order,
   and a key refused with 503 overloaded and never accepted has no order
   row, no saga and no reservation (nothing recorded). Then every key is
   sent again until accepted: one order per key, none lost.

Exit 0 when every check held; each failed check prints "FAIL: ...".
Bounded: every request has a timeout, the server is stopped at the end.
"""
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
WORK = tempfile.mkdtemp(prefix="overload.")
FAILS = []
API = "/api/v1"
ADDR = {"street": "1 Main St", "city": "Springfield", "zip": "12345",
        "country": "USA"}
CAT = [{"product_id": "pA", "name": "A", "price": 10.25, "stock": 100000}]
json.dump(CAT, open(os.path.join(WORK, "catalog.json"), "w"))


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what, flush=True)
    return cond


class Server:
    def __init__(self, name, max_pending):
        self.data = os.path.join(WORK, name)
        os.makedirs(self.data)
        env = dict(os.environ, CK_MAX_PENDING=str(max_pending))
        self.log = open(os.path.join(WORK, name + ".log"), "wb")
        self.p = subprocess.Popen(
            [BIN, "serve", "--data", self.data, "--listen", "127.0.0.1:0",
             "--catalog", os.path.join(WORK, "catalog.json")],
            stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.p.stdout.readline().decode()
        if not line.startswith("listening on http://"):
            raise SystemExit("server did not start: %r" % line)
        hp = line.split("//", 1)[1].strip()
        self.host, self.port = hp.rsplit(":", 1)
        self.port = int(self.port)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def req(self, method, path, body=None, user=None, key=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        h = {"Content-Type": "application/json"}
        if user is not None:
            h["X-User-Id"] = user
        if key is not None:
            h["Idempotency-Key"] = key
        c.request(method, path, body=None if body is None else
                  json.dumps(body).encode(), headers=h)
        r = c.getresponse()
        text = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        try:
            js = json.loads(text) if text else None
        except ValueError:
            js = None
        return r.status, hdrs, js, text

    def add(self, cart, user, q=1):
        st = self.req("POST", "%s/carts/%s/items" % (API, cart),
                      {"product_id": "pA", "quantity": q}, user=user)[0]
        check(st == 201, "add to %s: %d" % (cart, st))

    def checkout(self, cart, user, key, tok="tok_ok", addr=None):
        return self.req("POST", API + "/orders/checkout",
                        {"cart_id": cart, "shipping_address": addr or ADDR,
                         "payment_method": {"type": "credit_card",
                                            "card_token": tok}},
                        user=user, key=key)

    def order(self, oid):
        return self.req("GET", "%s/orders/%s" % (API, oid))

    def wait_terminal(self, oid, limit=60.0):
        end = time.time() + limit
        while time.time() < end:
            st, _, js, _ = self.order(oid)
            if st == 200 and js.get("status") in ("COMPLETED", "CANCELLED") \
                    and js.get("saga_state") in ("COMPLETED", "COMPENSATED"):
                return js
            time.sleep(0.05)
        check(False, "order %s not terminal in %.0f s" % (oid, limit))
        return None

    def db(self, name):
        return sqlite3.connect("file:%s?mode=ro" %
                               os.path.join(self.data, name), uri=True,
                               timeout=30)


def is_overloaded(res):
    st, h, js, _ = res
    return st == 503 and isinstance(js, dict) and \
        isinstance(js.get("error"), dict) and \
        js["error"].get("code") == "overloaded" and \
        h.get("retry-after") == "1"


def err_code(res):
    js = res[2]
    if isinstance(js, dict) and isinstance(js.get("error"), dict):
        return js["error"].get("code")
    return None


def part1():
    """One slow saga holds the only slot; everything that creates no order
    is answered as if the shop were idle."""
    s = Server("one", 1)
    try:
        for attempt in range(3):
            run = "r%d_" % attempt
            u = run + "u"
            s.add(run + "c1", u)
            s.add(run + "c2", u)
            slow = s.checkout(run + "c1", u, run + "k1", tok="tok_timeout")
            if not check(slow[0] == 202, "slow checkout: %d %s" %
                         (slow[0], slow[3][:200])):
                return
            oid = slow[2]["order_id"]
            refused = s.checkout(run + "c2", u, run + "k2")
            if refused[0] == 202:
                # The slow saga ended already (a very slow machine): the
                # slot was free. Try again with new carts.
                s.wait_terminal(refused[2]["order_id"])
                s.wait_terminal(oid)
                continue
            check(is_overloaded(refused),
                  "a new order past the cap: want 503 overloaded with "
                  "Retry-After: 1, got %d %r %s" %
                  (refused[0], refused[1].get("retry-after"),
                   refused[3][:200]))
            # The same key again (a client retrying a lost 202).
            again = s.checkout(run + "c1", u, run + "k1", tok="tok_timeout")
            check(again[0] == 200 and again[2] and
                  again[2].get("order_id") == oid,
                  "the same key again while overloaded: want 200 %s, got "
                  "%d %s" % (oid, again[0], again[3][:200]))
            # The same key with another body.
            other = s.checkout(run + "c1", u, run + "k1", tok="tok_ok")
            check(other[0] == 422 and
                  err_code(other) == "idempotency_key_reused",
                  "the same key, another body, while overloaded: want 422 "
                  "idempotency_key_reused, got %d %s" %
                  (other[0], other[3][:200]))
            # Another key for the cart whose order is pending.
            dup = s.checkout(run + "c1", u, run + "k1b", tok="tok_timeout")
            check(dup[0] == 409 and err_code(dup) == "checkout_in_progress",
                  "another key for a pending cart while overloaded: want "
                  "409 checkout_in_progress, got %d %s" %
                  (dup[0], dup[3][:200]))
            # The refused key recorded nothing.
            with s.db("order.db") as db:
                n = db.execute("SELECT count(*) FROM orders WHERE "
                               "idempotency_key IN (?, ?)",
                               (run + "k2", run + "k1b")).fetchone()[0]
            check(n == 0, "refused checkouts left %d order rows" % n)
            # Once the slot is free the refused key goes through, once.
            s.wait_terminal(oid)
            end = time.time() + 30
            while time.time() < end:
                late = s.checkout(run + "c2", u, run + "k2")
                if late[0] != 503:
                    break
                time.sleep(0.1)
            check(late[0] == 202, "the refused key once the cap is free: "
                  "want 202, got %d %s" % (late[0], late[3][:200]))
            if late[0] == 202:
                s.wait_terminal(late[2]["order_id"])
            with s.db("order.db") as db:
                n = db.execute("SELECT count(*) FROM orders WHERE "
                               "idempotency_key = ?",
                               (run + "k2",)).fetchone()[0]
            check(n == 1, "the refused key, accepted later: %d orders" % n)
            return
        check(False, "the cap was never reached in 3 attempts")
    finally:
        s.stop()


def part2():
    """Many clients at once against a small cap; same key twice."""
    s = Server("many", 4)
    try:
        carts = ["m_c%02d" % i for i in range(40)]
        for c in carts:
            s.add(c, "mu")
        # Slow sagas first, so that the cap is reached.
        answers = {}
        lock = threading.Lock()

        def one(i, c, rep):
            tok = "tok_timeout" if i % 4 == 0 else "tok_ok"
            r = s.checkout(c, "mu", "mk_" + c, tok=tok)
            with lock:
                answers.setdefault("mk_" + c, []).append(r)

        ts = [threading.Thread(target=one, args=(i, c, rep))
              for i, c in enumerate(carts) for rep in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        accepted = {}
        nover = 0
        for k, rs in answers.items():
            ids = set()
            for r in rs:
                if r[0] in (200, 202):
                    ids.add(r[2].get("order_id") if r[2] else None)
                elif is_overloaded(r):
                    nover += 1
                else:
                    check(False, "key %s: unexpected %d %s" %
                          (k, r[0], r[3][:200]))
            check(len(ids) <= 1, "key %s answered with orders %s" % (k, ids))
            check(sum(r[0] == 202 for r in rs) <= 1,
                  "key %s got two 202s" % k)
            if ids:
                accepted[k] = ids.pop()
        print("overload: %d keys accepted, %d answers 503 overloaded" %
              (len(accepted), nover), flush=True)
        check(nover > 0, "80 clients against a cap of 4: nothing refused")
        with s.db("order.db") as db:
            rows = dict(db.execute("SELECT idempotency_key, order_id FROM "
                                   "orders WHERE idempotency_key LIKE "
                                   "'mk_%'").fetchall())
        for k, oid in accepted.items():
            check(rows.get(k) == oid, "key %s accepted as %s, its row says "
                  "%s" % (k, oid, rows.get(k)))
        for k in rows:
            check(k in accepted, "key %s was refused but left an order" % k)
        # Nothing reserved for a refused key's cart (no saga ran).
        # Every key sent again until accepted: each one order.
        end = time.time() + 120
        pending = [c for c in carts if "mk_" + c not in accepted]
        while pending and time.time() < end:
            nxt = []
            for c in pending:
                r = s.checkout(c, "mu", "mk_" + c,
                               tok="tok_timeout" if carts.index(c) % 4 == 0
                               else "tok_ok")
                if r[0] in (200, 202):
                    accepted["mk_" + c] = r[2]["order_id"]
                elif is_overloaded(r):
                    nxt.append(c)
                else:
                    check(False, "retry of %s: %d %s" % (c, r[0],
                                                         r[3][:200]))
            pending = nxt
            if pending:
                time.sleep(0.2)
        check(not pending, "keys never accepted: %s" % pending)
        for k, oid in accepted.items():
            s.wait_terminal(oid)
        with s.db("order.db") as db:
            per = db.execute("SELECT idempotency_key, count(*) FROM orders "
                             "WHERE idempotency_key LIKE 'mk_%' GROUP BY "
                             "idempotency_key").fetchall()
        check(len(per) == len(carts) and all(n == 1 for _, n in per),
              "one order per key: %s" % per)
        with s.db("inventory.db") as db:
            av, rs, so, to = db.execute(
                "SELECT available_quantity, reserved_quantity, "
                "sold_quantity, total_quantity FROM inventory WHERE "
                "product_id = 'pA'").fetchone()
        check(av + rs + so == to and rs == 0,
              "stock after: available %d reserved %d sold %d total %d" %
              (av, rs, so, to))
    finally:
        s.stop()


try:
    part1()
    part2()
finally:
    if FAILS and os.environ.get("OVERLOAD_KEEP"):
        print("work dir kept: " + WORK)
    else:
        shutil.rmtree(WORK, ignore_errors=True)
print("overload: %s" % ("ok" if not FAILS else "%d failed" % len(FAILS)))
sys.exit(1 if FAILS else 0)

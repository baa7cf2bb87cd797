#!/usr/bin/env python3
"""The checkout on PostgreSQL while the server itself crashes and restarts.

    pgoutage.py SAGA_CHECKOUT RUN_DISTRIBUTED [RESTARTS]

Run under tests/pg/with-pg.sh with SAGA_PG_RESTARTABLE=1. Starts the seven
services of run-distributed.sh with every service's tables in a schema of
that server; four clients add items to new carts, read them back and read
the catalogue without pause while the server is stopped at once (pg_ctl
stop -m immediate: every backend dies) and started again RESTARTS times.
docs/checkout-api.md: "the HTTP front answers 503 only while the server is
unreachable". So every answer is the right one or a 503: a product or cart
that exists is never answered 404 (it was: a failed read was taken for "no
row"), nor 500; and once the server is back the API serves again (bounded).
Exit 0 when all held.
"""
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
from ckboot import free_ports, pg_server, run_distributed  # noqa: E402

BIN, RUNDIST = sys.argv[1], sys.argv[2]
RESTARTS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
PG_URL = os.environ["SAGA_PG_URL"]
WORK = tempfile.mkdtemp(prefix="pgoutage.")
FAILS = []
pick = random.SystemRandom()


def fail(what):
    FAILS.append(what)
    print("FAIL: " + what, flush=True)


PORT = free_ports(11)
HTTP, BASE = PORT, PORT + 1
CAT = [{"product_id": "pA", "name": "A", "price": 10.25, "stock": 100000}]
json.dump(CAT, open(os.path.join(WORK, "catalog.json"), "w"))


def call(method, path, body=None, user="u"):
    c = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=30)
    h = {"Content-Type": "application/json", "X-User-Id": user}
    c.request(method, path, body=json.dumps(body) if body else None,
              headers=h)
    r = c.getresponse()
    t = r.read()
    c.close()
    return r.status, (json.loads(t) if t else None)


def pg(action):
    if pg_server(action, os.path.join(WORK, "pg_ctl.log")) != 0:
        fail("pg_ctl %s failed" % action)


stop = threading.Event()
lock = threading.Lock()
seen = {}  # status -> count
last_ok = [time.time()]


def note(what, st, js, ok):
    with lock:
        seen[st] = seen.get(st, 0) + 1
        if st in ok:
            last_ok[0] = time.time()
        elif st != 503:
            fail("%s: %d %s" % (what, st, js))


def client(n):
    i = 0
    while not stop.is_set():
        i += 1
        cart, user = "c%d_%d" % (n, i), "u%d" % n
        try:
            st, js = call("POST", "/api/v1/carts/%s/items" % cart,
                          {"product_id": "pA", "quantity": 1}, user)
            note("add item to " + cart, st, js, (201,))
            if st == 201:
                # the cart exists now: 200 or 503, never 404
                for _ in range(20):
                    st, js = call("GET", "/api/v1/carts/" + cart, None, user)
                    note("get " + cart, st, js, (200,))
                    if st != 503 or stop.is_set():
                        break
                    time.sleep(0.05)
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.02)


def main():
    store = PG_URL + ("&" if "?" in PG_URL else "?") + \
        "schema=po_%d" % os.getpid()
    rd, ok = run_distributed(RUNDIST, BIN, WORK, os.path.join(WORK, "data"),
                             HTTP, BASE, store)
    try:
        if not ok:
            fail("the services did not start")
            return
        ts = [threading.Thread(target=client, args=(n,), daemon=True)
              for n in range(4)]
        for t in ts:
            t.start()
        for k in range(RESTARTS):
            time.sleep(pick.uniform(0.5, 1.5))
            print("pgoutage: restart %d" % (k + 1), flush=True)
            pg("stop")
            time.sleep(pick.uniform(0.1, 0.8))
            pg("start")
        # once the server is back, the API serves again (bounded)
        back = time.time()
        while time.time() - back < 30 and last_ok[0] < back + 0.5:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in ts:
            t.join(40)
        if last_ok[0] < back + 0.5:
            fail("nothing served in 30 s after the last restart")
        # and keeps serving: a last round, every answer right
        for i in range(20):
            st, js = call("POST", "/api/v1/carts/last%d/items" % i,
                          {"product_id": "pA", "quantity": 1}, "ul")
            if st != 201:
                fail("after the restarts: add item %d %s" % (st, js))
                break
        print("pgoutage: %d restarts, answers %s" %
              (RESTARTS, dict(sorted(seen.items()))), flush=True)
    finally:
        try:
            os.killpg(rd.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rd.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(rd.pid, signal.SIGKILL)
            rd.wait()
        print("pgoutage: %d failed (work dir %s)" % (len(FAILS), WORK),
              flush=True)
        if not FAILS or os.environ.get("PGOUTAGE_KEEP") is None:
            subprocess.call(["rm", "-rf", WORK])


if __name__ == "__main__":
    main()
    sys.exit(1 if FAILS else 0)

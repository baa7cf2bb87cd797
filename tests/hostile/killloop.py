#!/usr/bin/env python3
"""SIGKILL loop against the checkout, checked from its databases.

    killloop.py serve|distributed|serve-pg|distributed-pg SAGA_CHECKOUT
                RUN_DISTRIBUTED KILLS

The -pg modes keep every service's tables in its own schema of the
PostgreSQL server that tests/pg/with-pg.sh started (run under it with
SAGA_PG_RESTARTABLE=1) and attack the server too: besides the SIGKILLs of
the services, some rounds stop the server at once (pg_ctl stop -m
immediate: every backend dies, nothing is flushed but the WAL) and start it
again, and some cut every client connection (pg_terminate_backend); the
databases are then checked from the schemas with psql.

Clients check out carts without pause (every card token, a product that
cannot be picked, a product that runs out); the server (serve) or the
order, payment and inventory processes (distributed) are SIGKILLed at
random moments KILLS times and restarted on the same files. A request cut
by a kill is sent again with its key after the restart. At the end, with
every service up, it waits (bounded) for the sagas to end and checks from
the SQLite files: every order terminal and every saga ended; each key that
got an answer names one order and the same one again; every 202 order
exists; over saga keys the gateway holds, per order, exactly the order's
total when COMPLETED and nothing net when CANCELLED (a late answer of the
gateway charged no cancelled order); stock: available + reserved + sold =
total, nothing left reserved, each product's sold quantity = the quantity
in COMPLETED orders and its total unchanged; one email per order, of the
right kind. Exit 0 when all held.
"""
import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
from ckboot import free_ports, pg_server as pg_ctl, run_distributed  # noqa

MODE, BIN, RUNDIST, KILLS = sys.argv[1], sys.argv[2], sys.argv[3], \
    int(sys.argv[4])
PG = MODE.endswith("-pg")
MODE = MODE[:-3] if PG else MODE
if PG:
    PG_URL = os.environ["SAGA_PG_URL"]
    PG_PREFIX = "kl_%d" % os.getpid()
    STORE = PG_URL + ("&" if "?" in PG_URL else "?") + \
        "schema=" + PG_PREFIX
SEED = int(os.environ.get("KILLLOOP_SEED", str(int(time.time()))))
rnd = random.Random(SEED)
WORK = tempfile.mkdtemp(prefix="killloop.")
DATA = os.path.join(WORK, "data")
os.makedirs(DATA)
FAILS = []
CAT = [{"product_id": "pA", "name": "A", "price": 10.25, "stock": 100000},
       {"product_id": "pLow", "name": "Low", "price": 3.5, "stock": 25},
       {"product_id": "pFrag", "name": "Frag", "price": 7.1, "stock": 100000,
        "fail_fulfillment": True}]
json.dump(CAT, open(os.path.join(WORK, "catalog.json"), "w"))
TOKENS = ["tok_ok"] * 6 + ["tok_decline", "tok_slow", "tok_flaky",
                           "tok_timeout"]


def fail(what):
    FAILS.append(what)
    print("FAIL: " + what, flush=True)


HTTP = free_ports(1)
BASE = free_ports(10, avoid=(HTTP,))
procs = {}  # name -> Popen
ENV = dict(os.environ)


def start(name):
    log = open(os.path.join(WORK, name + ".log"), "ab")
    if MODE == "serve":
        cmd = [BIN, "serve", "--data", DATA, "--listen",
               "127.0.0.1:%d" % HTTP, "--catalog",
               os.path.join(WORK, "catalog.json")]
        if PG:
            cmd += ["--store", STORE]
    else:
        cmd = [BIN, "service", name, "--data", DATA, "--config",
               os.path.join(DATA, "config.json")]
    procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, env=ENV)


def up():
    end = time.time() + 60
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    fail("the API did not come back")
    return False


def boot():
    if MODE == "serve":
        start("serve")
        return None
    # run-distributed.sh writes the config and starts the seven; we restart
    # the ones we kill ourselves with the same command line
    rd, _ = run_distributed(RUNDIST, BIN, WORK, DATA, HTTP, BASE,
                            STORE if PG else None)
    for s in ("order", "payment", "inventory", "cart", "shipping",
              "warehouse", "notification"):
        procs[s] = int(open(os.path.join(DATA, s + ".pid")).read())
    return rd


def pg_server(action):
    """Stops the PostgreSQL server at once (every backend killed, as a
    crash) or starts it again on the same port and data."""
    rc = pg_ctl(action, os.path.join(WORK, "pg_ctl.log"))
    if rc != 0:
        fail("pg_ctl %s: exit %d" % (action, rc))


def pg_cut():
    """Cuts every client connection of the services (not this one)."""
    try:
        psql("postgres", "SELECT count(pg_terminate_backend(pid)) FROM "
             "pg_stat_activity WHERE pid <> pg_backend_pid() AND "
             "backend_type = 'client backend'")
    except subprocess.CalledProcessError as e:
        fail("pg_terminate_backend: %s" % e)


def kill(name):
    p = procs[name]
    pid = p if isinstance(p, int) else p.pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if not isinstance(p, int):
        p.wait()
    else:
        for _ in range(200):
            try:
                os.kill(pid, 0)
                time.sleep(0.01)
            except ProcessLookupError:
                break


def revive_exited():
    """A service restarted while the server was down cannot open its store
    and exits (saga-checkout: cannot start ...): started again, as its
    supervisor would."""
    for name, p in list(procs.items()):
        if not isinstance(p, int) and p.poll() is not None:
            print("killloop: %.1f s: %s had exited (%d): started again" %
                  (time.time() - T0, name, p.returncode), flush=True)
            start(name)


# -------------------------------------------------------------- clients
lock = threading.Lock()
answers = {}  # key -> set of order ids
trail = []  # "time key status order" of every 2xx answer, for a failure
accepted = set()  # order ids answered 202
stop = threading.Event()


def call(method, path, body, user, key=None):
    c = http.client.HTTPConnection("127.0.0.1", HTTP, timeout=20)
    h = {"Content-Type": "application/json", "X-User-Id": user}
    if key:
        h["Idempotency-Key"] = key
    c.request(method, path, body=json.dumps(body), headers=h)
    r = c.getresponse()
    t = r.read()
    c.close()
    return r.status, (json.loads(t) if t else None)


def client(n):
    r = random.Random(SEED * 100 + n)
    i = 0
    while not stop.is_set():
        i += 1
        user, cart, key = "u%d" % n, "c%d_%d" % (n, i), "k%d_%d" % (n, i)
        prod = r.choice(["pA", "pA", "pA", "pLow", "pFrag"])
        body = {"cart_id": cart, "shipping_address": {
            "street": "s", "city": "c", "zip": "z", "country": "US"},
            "payment_method": {"type": "credit_card",
                               "card_token": r.choice(TOKENS)}}
        step = 0
        tries = 0
        while not stop.is_set() and tries < 200:
            tries += 1
            try:
                if step == 0:
                    st, js = call("POST", "/api/v1/carts/%s/items" % cart,
                                  {"product_id": prod,
                                   "quantity": r.randint(1, 3)}, user)
                    if st in (201,):
                        step = 1
                        continue
                    if st == 403 or st == 404:
                        fail("add item: %d %s" % (st, js))
                        break
                else:
                    st, js = call("POST", "/api/v1/orders/checkout", body,
                                  user, key)
                    if st in (200, 202):
                        with lock:
                            trail.append("%.3f %s %d %s" % (
                                time.time() - T0, key, st, js["order_id"]))
                            answers.setdefault(key, set()).add(
                                js["order_id"])
                            if st == 202:
                                accepted.add(js["order_id"])
                        break
                    if st not in (503,):
                        fail("checkout %s: %d %s" % (key, st, js))
                        break
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        # a cut add-item may have been applied: the next cart is new anyway


T0 = time.time()


def main():
    rd = boot()
    if not up():
        return finish(rd)
    ts = [threading.Thread(target=client, args=(n,), daemon=True)
          for n in range(4)]
    for t in ts:
        t.start()
    victims = ["serve"] if MODE == "serve" else ["order", "payment",
                                                 "inventory"]
    if PG:
        victims += ["pg-cut"]
        # KILLLOOP_PG_SERVER=1: the server itself is stopped at once and
        # started again among the kills (see the redteam report: the
        # services do not all come back from it yet)
        if os.environ.get("KILLLOOP_PG_SERVER") == "1":
            victims += ["pg-server"]
    for k in range(KILLS):
        time.sleep(rnd.uniform(0.2, 1.2))
        revive_exited()
        v = rnd.choice(victims)
        print("killloop: %.1f s: %s" % (time.time() - T0, v), flush=True)
        if v == "pg-server":
            pg_server("stop")
            time.sleep(rnd.uniform(0, 1.0))
            pg_server("start")
            continue
        if v == "pg-cut":
            pg_cut()
            continue
        kill(v)
        time.sleep(rnd.uniform(0, 0.3))
        start(v)
        if v in ("serve", "order"):
            up()
    time.sleep(1.0)
    revive_exited()
    stop.set()
    for t in ts:
        t.join(30)
    up()
    check_dbs()
    return finish(rd)


def psql(schema, sql):
    """Rows of SQL in SCHEMA of the PostgreSQL server, each a list of
    values (integers where the text is one)."""
    out = subprocess.run(
        ["psql", PG_URL, "-X", "-q", "-A", "-t", "-F", "\x1f",
         "-v", "ON_ERROR_STOP=1", "-c", "SET search_path TO " + schema,
         "-c", sql], check=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=60).stdout.decode()
    rows = []
    for line in out.split("\n"):
        if not line:
            continue
        row = []
        for v in line.split("\x1f"):
            try:
                row.append(int(v))
            except ValueError:
                row.append(v)
        rows.append(tuple(row))
    return rows


def q(name, sql):
    if PG:
        # order.db -> schema PREFIX_order, order-saga.db -> PREFIX_order_saga
        schema = PG_PREFIX + "_" + name[:-3].replace("-", "_")
        for _ in range(50):  # the server may be starting again
            try:
                return psql(schema, sql)
            except subprocess.CalledProcessError as e:
                err = e.stderr.decode()
                if "does not exist" in err:
                    raise
                time.sleep(0.2)
        return psql(schema, sql)
    c = sqlite3.connect("file:%s/%s?mode=ro" % (DATA, name), uri=True,
                        timeout=10)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


def check_dbs():
    # bounded wait: every order and saga ended, and every email written
    end = time.time() + 90
    last, since = -1, time.time()
    while True:
        orders = {o: (s, t) for o, s, t in q(
            "order.db", "SELECT order_id, status, total_amount FROM orders")}
        open_ = [o for o, (s, _) in orders.items()
                 if s not in ("COMPLETED", "CANCELLED")]
        sagas = q("order-saga.db", "SELECT id, state FROM sagas")
        mails = q("notification.db", "SELECT order_id, subject FROM emails")
        mailed = set(m[0] for m in mails)
        # a payment event may still be on its way (its relay backing off
        # after a kill): waited for too, within the bound
        unpaid = q("order.db", "SELECT count(*) FROM orders WHERE status = "
                   "'COMPLETED' AND (payment_status IS NULL OR "
                   "payment_status <> 'COMPLETED')")[0][0]
        if len(mails) != last:
            last, since = len(mails), time.time()
        if not open_ and not unpaid and (len(mailed) >= len(orders) or
                                         time.time() - since > 3) or \
                time.time() > end:
            break
        time.sleep(0.2)
    if open_:
        fail("orders not terminal after the wait: %s" % open_[:5])
    states = set(s for _, s in sagas)
    print("killloop: seed %d, %d kills, %d orders (%d completed), saga "
          "states %s" % (SEED, KILLS, len(orders), sum(
              1 for s, _ in orders.values() if s == "COMPLETED"), states))
    for key, ids in answers.items():
        if len(ids) != 1:
            fail("key %s answered several orders %s" % (key, ids))
    keys = dict(q("order.db", "SELECT idempotency_key, order_id FROM orders"))
    for key, ids in answers.items():
        if keys.get(key) not in ids:
            fail("key %s: answered %s, the table says %s" %
                 (key, ids, keys.get(key)))
    for o in accepted:
        if o not in orders:
            fail("202 order %s lost" % o)
    # money over saga keys
    net = {}
    for oid, amount, refunded, state in q(
            "payment.db", "SELECT order_id, amount, refunded, state FROM "
            "gateway_charges WHERE key LIKE 'pay_%'"):
        if state in ("CHARGED", "REFUNDED"):
            net[oid] = net.get(oid, 0) + amount - refunded
    told = 0
    for oid, (s, total) in orders.items():
        want = total if s == "COMPLETED" else 0
        if net.get(oid, 0) != want:
            fail("money of %s %s: gateway net %d, want %d" %
                 (s, oid, net.get(oid, 0), want))
            if told < 3:  # a ctest run keeps no files: say what we know
                told += 1
                money_evidence(oid)
    for oid in net:
        if oid not in orders:
            fail("charge for an unknown order %s" % oid)
    # stock
    sold = {}
    for oid, pid, qty in q("order.db", "SELECT order_id, product_id, "
                           "quantity FROM order_items"):
        if orders.get(oid, ("",))[0] == "COMPLETED":
            sold[pid] = sold.get(pid, 0) + qty
    stock = {c["product_id"]: c["stock"] for c in CAT}
    for pid, av, res, sd, tot in q(
            "inventory.db", "SELECT product_id, available_quantity, "
            "reserved_quantity, sold_quantity, total_quantity FROM "
            "inventory"):
        if av + res + sd != tot or tot != stock.get(pid) or res != 0 or \
                sd != sold.get(pid, 0):
            fail("stock of %s: available %d reserved %d sold %d total %d; "
                 "completed orders hold %d, catalogue %s" %
                 (pid, av, res, sd, tot, sold.get(pid, 0), stock.get(pid)))
    # Events (Part 7), through their effects: one email per order, of its
    # kind (order-events), the payment on a COMPLETED order
    # (payment-events). Both buses confirm a send only after every
    # consumer group acked it (the in-memory one since it was found here
    # losing the events still on the bus at a kill), so none may be lost.
    per = {}
    for oid, subj in mails:
        per.setdefault(oid, []).append(subj)
    pay = dict(q("order.db", "SELECT order_id, payment_status FROM orders"))
    for oid, (s, _) in orders.items():
        got = per.get(oid, [])
        kind = "confirmed" if s == "COMPLETED" else "cancelled"
        if len(got) > 1 or got and kind not in got[0]:
            fail("emails of %s order %s: %s" % (s, oid, got))
        elif not got:
            fail("no email for %s order %s" % (s, oid))
        if s == "COMPLETED" and pay.get(oid) != "COMPLETED":
            fail("COMPLETED order %s shows payment %s" % (oid, pay.get(oid)))


JOURNAL_EVENTS = {1: "STARTED", 2: "STEP_OK", 3: "STEP_FAIL", 4: "STEP_RETRY",
                  5: "STEP_TIMEOUT", 6: "COMP_OK", 7: "COMP_FAIL",
                  8: "COMP_TIMEOUT", 9: "COMPLETED", 10: "COMPENSATING",
                  11: "COMPENSATED", 12: "FAILED"}


def money_evidence(oid):
    """Prints (bounded) what the databases say of order OID's money: the
    gateway's rows, the payments rows, every saga started with the order's
    key and its journal, the payment participant's barrier of each saga's
    payment step, and the services' log lines naming those sagas. A run
    from ctest keeps no files; this goes to its output."""
    def show(what, fn):
        try:
            for row in fn():
                print("  %s: %s" % (what, row), flush=True)
        except Exception as e:  # evidence only
            print("  %s: cannot read: %s" % (what, e), flush=True)
    show("gateway", lambda: q(
        "payment.db", "SELECT key, state, amount, refunded, attempts, "
        "created_at, updated_at FROM gateway_charges WHERE order_id = '%s'"
        % oid)[:12])
    show("payment", lambda: q(
        "payment.db", "SELECT idempotency_key, status, error_code, "
        "refunded_amount, created_at, updated_at FROM payments WHERE "
        "order_id = '%s'" % oid))
    show("order", lambda: q(
        "order.db", "SELECT status, payment_status, saga_id, created_at, "
        "updated_at FROM orders WHERE order_id = '%s'" % oid))
    sagas = []
    try:
        sagas = [r[0] for r in q("order-saga.db", "SELECT id FROM sagas "
                                 "WHERE idem_key = '%s'" % oid)]
    except Exception as e:
        print("  sagas: cannot read: %s" % e, flush=True)
    print("  sagas with the order's key: %s" % sagas, flush=True)
    for sid in sagas[:3]:
        show("journal " + sid[:12], lambda: [
            (seq, JOURNAL_EVENTS.get(ev, ev), step, att, at, err)
            for seq, ev, step, att, at, err in q(
                "order-saga.db", "SELECT seq, event, step, attempt, at_ms, "
                "error FROM journal WHERE saga_id = '%s' ORDER BY seq" %
                sid)][:40])
        show("gateway " + sid[:12], lambda: q(
            "payment.db", "SELECT key, state, amount, refunded, attempts, "
            "created_at, updated_at FROM gateway_charges WHERE key LIKE "
            "'pay_%s_%%' AND order_id IS NULL" % sid))
        # the state byte after the row's 9-byte header (participant_keep.c)
        show("barrier " + sid[:12], lambda: q(
            "payment.db", "SELECT key, chr(get_byte(val, 9)), length(val) "
            "FROM kv WHERE key LIKE 'b/%s/%%'" % sid if PG else
            "SELECT key, substr(val, 10, 1), length(val) FROM kv WHERE key "
            "LIKE 'b/%s/%%'" % sid))
        for name in ("payment", "order"):
            try:
                lines = [ln.rstrip() for ln in open(
                    os.path.join(WORK, name + ".log"), errors="replace")
                    if sid in ln]
            except OSError:
                lines = []
            for ln in lines[:25]:
                print("  %s.log: %s" % (name, ln[:300]), flush=True)


def keep_evidence():
    """With KILLLOOP_KEEP, a failed run leaves its answers and orders."""
    with open(os.path.join(WORK, "answers.txt"), "w") as f:
        f.write("\n".join(trail) + "\n")
    try:
        with open(os.path.join(WORK, "orders.txt"), "w") as f:
            for row in q("order.db", "SELECT order_id, user_id, "
                         "idempotency_key, status, payment_status "
                         "FROM orders"):
                f.write(" ".join(str(v) for v in row) + "\n")
        with open(os.path.join(WORK, "payments.txt"), "w") as f:
            for row in q("payment.db", "SELECT order_id, status, "
                         "payment_id FROM payments"):
                f.write(" ".join(str(v) for v in row) + "\n")
    except Exception as e:  # evidence only
        print("killloop: cannot dump the orders: %s" % e)
    if PG:
        # every table of the run's schemas (journal, inboxes, outboxes,
        # batch logs): the server goes away with the run
        subprocess.call(["pg_dump", PG_URL, "-n", PG_PREFIX + "_*", "-f",
                         os.path.join(WORK, "dump.sql")])


def finish(rd):
    if FAILS and os.environ.get("KILLLOOP_KEEP") is not None:
        keep_evidence()
    for name, p in procs.items():
        try:
            os.kill(p if isinstance(p, int) else p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if rd is not None:
        try:
            os.killpg(rd.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        rd.wait()
    for p in procs.values():
        if not isinstance(p, int):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    print("killloop: %s%s, %d failed (work dir %s)" %
          (MODE, "-pg" if PG else "", len(FAILS), WORK), flush=True)
    if not FAILS or os.environ.get("KILLLOOP_KEEP") is None:
        subprocess.call(["rm", "-rf", WORK])
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())

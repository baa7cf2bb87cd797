"""What killloop.py and pgoutage.py share: free ports below the kernel's
ephemeral range, the checkout's seven services of run-distributed.sh
started and awaited, and the PostgreSQL server of tests/pg/with-pg.sh
(SAGA_PG_RESTARTABLE=1) stopped at once and started again.

Imported from the scripts' own directory (sys.path[0]); they set
sys.dont_write_bytecode first, so that nothing is written into the source
tree.
"""
import os
import random
import socket
import subprocess
import time


def free_ports(n, avoid=()):
    """n consecutive free ports below the kernel's ephemeral range
    (32768-60999 by default): a port that bind(0) or an outgoing connection
    can be handed would be taken by another test while a killed service is
    down, and the restarted one could not listen again."""
    pick = random.SystemRandom()  # not a replay seed: runs at once differ
    while True:
        first = 20000 + pick.randrange(12000 - n)
        if any(first <= a < first + n for a in avoid):
            continue
        socks = []
        try:
            for p in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return first
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()


def run_distributed(rundist, binary, work, data, http, base, store=None,
                    wait_s=90):
    """Starts run-distributed.sh (the seven services, catalogue
    WORK/catalog.json, their tables in schemas of STORE if given) in a
    session of its own, its output in WORK/rd.out, and waits (at most
    wait_s) for the order service's "listening on" line. Returns the
    Popen and whether the services came up."""
    env = dict(os.environ, SAGA_CHECKOUT=binary,
               CATALOG=os.path.join(work, "catalog.json"))
    if store is not None:
        env["STORE"] = store
    out = os.path.join(work, "rd.out")
    rd = subprocess.Popen(["bash", rundist, data, str(http), str(base)],
                          stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                          env=env, start_new_session=True)
    end = time.time() + wait_s
    while time.time() < end and rd.poll() is None:
        if b"listening on" in open(out, "rb").read():
            return rd, True
        time.sleep(0.05)
    return rd, b"listening on" in open(out, "rb").read()


def pg_server(action, log):
    """Stops the PostgreSQL server of with-pg.sh at once (pg_ctl stop -m
    immediate: every backend dies, as in a crash) or starts it again on
    the same port and data. Returns pg_ctl's exit code."""
    ctl = os.environ["SAGA_PG_CTL"].split()
    args = ["-m", "immediate", "stop"] if action == "stop" else \
        ["-w", "-t", "60", "-o", os.environ["SAGA_PG_OPTS"], "start"]
    with open(log, "ab") as f:
        return subprocess.call(ctl + args, stdout=f, stderr=f)

#!/usr/bin/env bash
# operate_cli: sagactl against order_svc on a SQLite store.
#   usage: cli.sh SAGACTL ORDER_SVC
# 1. order_svc leaves one FAILED saga (its compensation keeps failing) and
#    two COMPLETED ones; list / show / stats / graph read them (text, JSON).
# 2. Exit codes: unknown id 3, wrong state 4, missing store 5, locked
#    store 6, usage 2.
# 3. Nothing running: `sagactl retry` applies the request to the store;
#    the service, started later, resumes the saga to COMPENSATED.
# 4. Service running: a second FAILED saga; `sagactl retry` is taken by the
#    running engine (applied_by "engine"), which compensates it; a
#    `compensate` and a `resolve` go the same way.
set -euo pipefail
sagactl=$1
svc=$2
work=$(mktemp -d)
svc_pid=
cleanup() {
    [ -z "$svc_pid" ] || kill "$svc_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export SAGA_STORE=$work/orders.db
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_rc() { # expect_rc CODE CMD...
    local want=$1 rc=0
    shift
    "$@" > out.txt 2> err.txt || rc=$?
    [ "$rc" -eq "$want" ] || { cat out.txt err.txt >&2; fail "$* -> rc $rc, want $want"; }
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
state_of() { "$sagactl" show "$1" --json | json 'd["saga"]["state"]'; }
wait_state() { # wait_state ID STATE
    for _ in $(seq 1 100); do
        [ "$(state_of "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "saga $1 did not reach $2 (it is $(state_of "$1"))"
}

echo "== 1. a FAILED saga and two COMPLETED ones"
"$svc" --store "$SAGA_STORE" --orders 100,2000,50 --comp-failures 2 \
    > ids.txt 2> svc1.log
failed=$(grep ' ord-2-2000$' ids.txt | cut -d' ' -f1)
completed=$(grep ' ord-1-100$' ids.txt | cut -d' ' -f1)
"$sagactl" list | tee list.txt
grep -q "$failed  order  *FAILED  *reserve-stock (undo)" list.txt || fail "list"
[ "$("$sagactl" list --state FAILED --json | json 'len(d["sagas"])')" = 1 ]
[ "$("$sagactl" list --state completed --json | json 'd["total"]')" = 2 ]
[ "$("$sagactl" list --definition nosuch --json | json 'd["total"]')" = 0 ]
[ "$("$sagactl" list --limit 1 --json | json 'd["sagas"][0]["id"]')" = \
  "$(tail -n 1 ids.txt | cut -d' ' -f1)" ] || fail "newest first"
"$sagactl" show "$failed" | tee show.txt
grep -q 'COMP_FAIL .*warehouse API unavailable' show.txt || fail "show"
grep -q '"order_id": "ord-2-2000"' show.txt || fail "show data"
[ "$("$sagactl" show "$failed" --json | json 'd["journal"][-1]["event"]')" = FAILED ]
"$sagactl" stats | tee stats.txt
grep -qE '^order +0 +0 +2 +0 +1' stats.txt || fail "stats"
"$sagactl" graph order > g.mmd
grep -q 'charge-card<br/>(pivot)' g.mmd || fail "graph mermaid"
"$sagactl" graph order --format dot > g.dot
grep -q 'shape=hexagon' g.dot || fail "graph dot"
if command -v dot > /dev/null; then dot -Tsvg -o /dev/null g.dot; fi
"$sagactl" list --help | grep -q 'usage: sagactl' || fail "--help"

echo "== 2. exit codes"
expect_rc 3 "$sagactl" show 0123456789abcdef0123456789abcdef
expect_rc 3 "$sagactl" retry 0123456789abcdef0123456789abcdef
expect_rc 4 "$sagactl" retry "$completed"
grep -q 'COMPLETED, not FAILED' err.txt || fail "wrong-state message"
expect_rc 3 "$sagactl" graph nosuch
expect_rc 2 "$sagactl" resolve "$failed" --reason x
expect_rc 2 "$sagactl" compensate "$failed"
expect_rc 2 "$sagactl" frobnicate
expect_rc 2 "$sagactl" list --bogus
expect_rc 5 "$sagactl" --store "$work/missing.db" list
python3 - "$SAGA_STORE" "$sagactl" "$failed" <<'EOF'
import sqlite3, subprocess, sys
db, sagactl, sid = sys.argv[1:]
c = sqlite3.connect(db, isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
r = subprocess.run([sagactl, "retry", sid, "--wait", "0"], capture_output=True)
c.execute("ROLLBACK")
sys.exit(0 if r.returncode == 6 else "locked store: rc %d %s" % (r.returncode, r.stderr))
EOF

echo "== 3. nothing running: the request is applied to the store"
"$sagactl" retry "$failed" --reason "warehouse is back" --actor alice \
    --wait 300 --json | tee r.json
[ "$(json 'd["applied_by"]' < r.json)" = store ] || fail "applied_by store"
[ "$(state_of "$failed")" = COMPENSATING ]
"$sagactl" show "$failed" | grep -q 'OPERATOR_RETRY .*by alice: warehouse is back' ||
    fail "journal records who and why"
"$svc" --store "$SAGA_STORE" --serve --until-idle 2> svc2.log
[ "$(state_of "$failed")" = COMPENSATED ] || fail "resumed to COMPENSATED"

echo "== 4. the service running: its engine takes the requests"
"$svc" --store "$SAGA_STORE" --orders 3000,4000,5000 --comp-failures 6 \
    > ids2.txt 2> svc3.log
f2=$(sed -n 1p ids2.txt | cut -d' ' -f1)
f3=$(sed -n 2p ids2.txt | cut -d' ' -f1)
f4=$(sed -n 3p ids2.txt | cut -d' ' -f1)
for id in "$f2" "$f3" "$f4"; do [ "$(state_of "$id")" = FAILED ]; done
"$svc" --store "$SAGA_STORE" --serve 2> svc4.log &
svc_pid=$!
for _ in $(seq 1 50); do grep -q 'serving' svc4.log && break; sleep 0.1; done
"$sagactl" retry "$f2" --reason "retry while running" --json | tee r2.json
[ "$(json 'd["applied_by"]' < r2.json)" = engine ] || fail "applied_by engine"
wait_state "$f2" COMPENSATED
"$sagactl" compensate "$f3" --reason "undo it" --json | tee r3.json
[ "$(json 'd["applied_by"]' < r3.json)" = engine ] || fail "compensate by engine"
wait_state "$f3" COMPENSATED
"$sagactl" resolve "$f4" --as completed --reason "refunded by hand" --json |
    tee r4.json
[ "$(json 'd["applied_by"]' < r4.json)" = engine ] || fail "resolve by engine"
wait_state "$f4" COMPLETED
"$sagactl" show "$f4" | grep -q 'OPERATOR_RESOLVE .*refunded by hand' ||
    fail "resolve journaled"
expect_rc 4 "$sagactl" retry "$f2"
# The engine ran each saga once: one COMPENSATED entry each.
for id in "$f2" "$f3"; do
    [ "$("$sagactl" show "$id" --json |
        json 'sum(1 for e in d["journal"] if e["event"]=="COMPENSATED")')" = 1 ]
done
kill "$svc_pid"
wait "$svc_pid" || true
svc_pid=
echo "operate_cli: OK"

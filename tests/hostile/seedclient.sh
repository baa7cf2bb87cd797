#!/usr/bin/env bash
# seedclient.sh MODE: the second REST client (seedclient.py, written from the
# seed alone) against a fresh checkout server with its own catalogue.
#   serve        saga-checkout serve (SQLite files; the database checks)
#   distributed  examples/checkout/run-distributed.sh (one process per service)
#   serve-pg     serve --store $SAGA_PG_URL (run under tests/pg/with-pg.sh)
# SAGA_CHECKOUT names the binary. Bounded: the server is stopped on exit.
set -euo pipefail
mode=${1:?usage: seedclient.sh serve|distributed|serve-pg}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${SAGA_CHECKOUT:?SAGA_CHECKOUT must name saga-checkout}
dir=$(mktemp -d /tmp/seedclient.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        # run-distributed.sh's children, by their pid files
        for f in "$dir"/*.pid; do
            [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
        done
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

python3 - "$dir/catalog.json" <<'PY'
import json, sys
c = [{"product_id": "pA", "name": "A", "price": 10.25, "stock": 1000},
     {"product_id": "pB", "name": "B", "price": 5.5, "stock": 1000},
     {"product_id": "pOut", "name": "Out", "price": 3, "stock": 0},
     {"product_id": "pFrag", "name": "Frag", "price": 7.1, "stock": 50,
      "fail_fulfillment": True}]
c += [{"product_id": "p_fill_%03d" % i, "name": "F%d" % i, "price": 1,
       "stock": 10} for i in range(101)]
json.dump(c, open(sys.argv[1], "w"))
PY

freeport() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

data=$dir/data
mkdir -p "$data"
case $mode in
serve | serve-pg)
    store=()
    if [ "$mode" = serve-pg ]; then
        store=(--store "${SAGA_PG_URL:?run under tests/pg/with-pg.sh}?schema=sc$$")
    fi
    "$bin" serve --data "$data" --listen 127.0.0.1:0 --catalog "$dir/catalog.json" \
        "${store[@]}" > "$dir/out" 2> "$dir/err" &
    pid=$!
    ;;
distributed)
    base=$(( 20000 + RANDOM % 20000 ))
    http=$(freeport)
    SAGA_CHECKOUT=$bin CATALOG=$dir/catalog.json \
        bash "$here/../../examples/checkout/run-distributed.sh" "$data" \
        "$http" "$base" > "$dir/out" 2> "$dir/err" &
    pid=$!
    ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
url=
for _ in $(seq 1 600); do
    url=$(sed -n 's/^listening on //p' "$dir/out" 2>/dev/null | head -n 1 || true)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
[ -n "$url" ] || { echo "server did not start" >&2; cat "$dir/err" >&2; exit 1; }
files=$data
[ "$mode" = serve-pg ] && files=-
rc=0
timeout 240 python3 "$here/seedclient.py" "$url" "$files" || rc=$?
if [ $rc -ne 0 ]; then
    tail -n 20 "$dir/err" >&2 || true
    for l in "$data"/*.log; do [ -f "$l" ] && { echo "== $l"; tail -n 5 "$l"; } >&2; done
fi
exit $rc

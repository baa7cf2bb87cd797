#!/usr/bin/env bash
# The operator console in a real browser (run by scripts/test.sh, so by
# .ci/run): headless chromium driven by puppeteer-core (a test-only npm
# dependency installed here into build/operate-node, never committed).
# Twice, each time with a FAILED order and the order service running:
#  1. `sagactl serve` on the service's store (actions go through the
#     store's control queue, which the running engine picks up);
#  2. the console mounted in the service itself (actions call its engine).
# Screenshots: build-logs/console-*.png.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SAGA_BUILD_DIR:-$root/build}
logs=$root/build-logs
mkdir -p "$logs"
sagactl=$build/tools/sagactl
svc=$build/tests/operate/order_svc
for f in "$sagactl" "$svc"; do
    [ -x "$f" ] || { echo "ci(operate): $f is not built" >&2; exit 1; }
done
command -v chromium > /dev/null || { echo "ci(operate): chromium missing (scripts/deps.sh)" >&2; exit 1; }
command -v node > /dev/null || { echo "ci(operate): node missing (scripts/deps.sh)" >&2; exit 1; }

node_dir=$build/operate-node
if [ ! -d "$node_dir/node_modules/puppeteer-core" ]; then
    mkdir -p "$node_dir"
    (cd "$node_dir" && [ -f package.json ] || echo '{"private":true}' > package.json)
    (cd "$node_dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund \
        --loglevel=error puppeteer-core@24)
fi
cp "$root/tests/operate/console_test.mjs" "$node_dir/"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
db=$work/orders.db
token=browser-test-token-$$

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://$1/console/" && return 0
        sleep 0.1
    done
    echo "ci(operate): nothing listens on $1" >&2
    return 1
}

# Two FAILED orders (their compensations fail twice each), one COMPLETED.
"$svc" --store "$db" --orders 100,2500,3500 --comp-failures 4 > "$work/ids" 2> "$logs/console-orders.log"
id1=$(grep ' ord-2-2500$' "$work/ids" | cut -d' ' -f1)
id2=$(grep ' ord-3-3500$' "$work/ids" | cut -d' ' -f1)

# The order service, running, with its own console too.
p2=$(port)
"$svc" --store "$db" --serve --console "127.0.0.1:$p2" --token "$token" \
    --log-format json 2> "$logs/console-service.log" &
pids+=($!)
p1=$(port)
"$sagactl" --store "$db" serve --listen "127.0.0.1:$p1" --token "$token" \
    > "$logs/console-sagactl-serve.log" 2>&1 &
pids+=($!)
wait_http "127.0.0.1:$p1"
wait_http "127.0.0.1:$p2"

echo "== the console of sagactl serve (control queue)"
(cd "$node_dir" && node console_test.mjs "http://127.0.0.1:$p1" "$token" "$id1" \
    "$logs/console-sagactl.png")
echo "== the console in the order service (its engine)"
(cd "$node_dir" && node console_test.mjs "http://127.0.0.1:$p2" "$token" "$id2" \
    "$logs/console-service.png")
"$sagactl" --store "$db" show "$id1" | grep -q 'OPERATOR_RETRY .*by console: warehouse API is back'
grep -q '"trace_id"' "$logs/console-service.log"
echo "ci(operate): browser tests OK"

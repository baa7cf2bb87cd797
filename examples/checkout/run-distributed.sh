#!/usr/bin/env bash
# run-distributed.sh — the checkout system with one process per service over
# the TCP transport (saga-checkout service NAME --data DIR --config FILE).
#
#   examples/checkout/run-distributed.sh DIR [HTTP_PORT [BASE_PORT]]
#
# Writes DIR/config.json (HTTP on 127.0.0.1:HTTP_PORT, default 8080; the
# eight transport endpoints on BASE_PORT.., default 7100), starts the seven
# services (logs in DIR/<service>.log, pids in DIR/<service>.pid), prints
# the order process's "listening on http://..." line once the API accepts
# requests, and runs until SIGINT/SIGTERM, which it passes to every service.
# SAGA_CHECKOUT names the binary (default: next to this script's build).
# CATALOG names a catalogue file. KAFKA_URL=kafka://HOST:PORT[?props] runs
# the services over Kafka (--transport) instead of TCP.
# STORE=postgres://USER@HOST:PORT/DB[?schema=PREFIX] keeps every service's
# tables in its own schema of that PostgreSQL database (the config's
# "store") instead of SQLite files in DIR.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: run-distributed.sh DIR [HTTP_PORT [BASE_PORT]]}
http=${2:-8080}
base=${3:-7100}
bin=${SAGA_CHECKOUT:-$here/../../build/examples/checkout/saga-checkout}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
names=(orchestrator order cart inventory payment shipping warehouse notification)
{
    printf '{\n  "http": "127.0.0.1:%s",\n' "$http"
    [ -n "${CATALOG:-}" ] && printf '  "catalog": "%s",\n' "$CATALOG"
    [ -n "${STORE:-}" ] && printf '  "store": "%s",\n' "$STORE"
    printf '  "endpoints": {\n'
    for i in "${!names[@]}"; do
        sep=,
        [ "$i" -eq $((${#names[@]} - 1)) ] && sep=
        printf '    "%s": "127.0.0.1:%d"%s\n' "${names[$i]}" $((base + i)) "$sep"
    done
    printf '  }\n}\n'
} > "$dir/config.json"

pids=()
stop() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait || true
    exit 0
}
trap stop INT TERM

for s in cart inventory payment shipping warehouse notification order; do
    "$bin" service "$s" --data "$dir" --config "$dir/config.json" \
        ${KAFKA_URL:+--transport "$KAFKA_URL"} > "$dir/$s.log" 2>&1 &
    pids+=($!)
    echo $! > "$dir/$s.pid"
done
# Ready when every service says so: the API reads what the others wrote at
# their start (the cart's catalogue), so it is announced last.
for _ in $(seq 1 600); do
    up=1
    for s in cart inventory payment shipping warehouse notification; do
        grep -q "^service $s running" "$dir/$s.log" 2>/dev/null || up=0
    done
    if [ $up = 1 ] && line=$(grep -m1 '^listening on ' "$dir/order.log" 2>/dev/null); then
        echo "$line"
        break
    fi
    line=
    sleep 0.05
done
[ -n "${line:-}" ] || { echo "run-distributed: the order service did not start" >&2; cat "$dir/order.log" >&2; stop; }
wait

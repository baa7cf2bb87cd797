#!/usr/bin/env bash
# The demo's seven scenarios against the one-process-per-service deployment
# (run-distributed.sh: seven processes over the TCP transport).
#   distributed.sh SAGA_CHECKOUT_BINARY
set -euo pipefail
bin=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$(mktemp -d /tmp/ck-dist.XXXXXX)
# Ports: a random block of 9 in 20000-31999, below the ephemeral range
# (32768-60999) where outgoing connections of other tests take theirs.
base=$((20000 + (RANDOM * 7 + $$) % 12000))
SAGA_CHECKOUT=$bin "$here/../../examples/checkout/run-distributed.sh" \
    "$dir" "$base" $((base + 1)) > "$dir/run.out" 2>&1 &
runner=$!
cleanup() {
    kill -TERM "$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 200); do
    grep -q '^listening on ' "$dir/run.out" 2>/dev/null && break
    sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$dir/run.out" | head -1)
[ -n "$url" ] || { cat "$dir/run.out" "$dir"/*.log >&2; exit 1; }
timeout 120 "$bin" demo --url "$url"

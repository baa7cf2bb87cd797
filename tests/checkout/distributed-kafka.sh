#!/usr/bin/env bash
# The demo's seven scenarios against the one-process-per-service deployment
# over Kafka (saga-checkout service NAME --transport kafka://...), through
# librdkafka's mock cluster in a process of its own; then kcat (Debian's
# Kafka client) reads order-events and payment-events from outside and
# kafka-events.py checks every event body against the seed's Part 7
# contracts and its key against the order id.
#   distributed-kafka.sh SAGA_CHECKOUT_BINARY MOCK_CLUSTER_BINARY
set -euo pipefail
bin=$1
mock=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v kcat > /dev/null || { echo "distributed-kafka: kcat is not installed" >&2; exit 1; }
dir=$(mktemp -d /tmp/ck-kafka.XXXXXX)
topics=(orchestrator order cart inventory payment shipping warehouse
        notification order-events inventory-events payment-events
        fulfillment-events cart-events)
targs=()
for t in "${topics[@]}"; do targs+=(-t "$t:4"); done
mkfifo "$dir/mock.in"
"$mock" "${targs[@]}" < "$dir/mock.in" > "$dir/mock.out" 2> "$dir/mock.err" &
mockpid=$!
exec 9> "$dir/mock.in" # the mock lives while this is open
runner=
cleanup() {
    [ -z "$runner" ] || kill -TERM "$runner" 2>/dev/null || true
    [ -z "$runner" ] || wait "$runner" 2>/dev/null || true
    exec 9>&-
    wait "$mockpid" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    [ -s "$dir/mock.out" ] && break
    sleep 0.05
done
bs=$(head -1 "$dir/mock.out")
[ -n "$bs" ] || { cat "$dir/mock.err" >&2; exit 1; }
# The mock answers an empty fetch only after fetch.wait.max.ms and finishes
# a rebalance a member left only after the session timeout: keep both short.
export KAFKA_URL="kafka://$bs?consumer.fetch.wait.max.ms=10&producer.linger.ms=1&consumer.session.timeout.ms=6000"
base=$((20000 + (RANDOM * 7 + $$) % 12000))
SAGA_CHECKOUT=$bin "$here/../../examples/checkout/run-distributed.sh" \
    "$dir" "$base" $((base + 1)) > "$dir/run.out" 2>&1 &
runner=$!
for _ in $(seq 1 400); do
    grep -q '^listening on ' "$dir/run.out" 2>/dev/null && break
    sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$dir/run.out" | head -1)
[ -n "$url" ] || { cat "$dir/run.out" "$dir"/*.log >&2; exit 1; }
timeout 150 "$bin" demo --url "$url"
# Every message as "key<TAB>length<NL>payload<NL>" (the payload is the
# envelope: msgpack around the JSON body).
for t in order-events payment-events; do
    timeout 30 kcat -q -b "$bs" -C -t "$t" -o beginning -e \
        -f '%k\t%S\n%s\n' > "$dir/$t.bin"
done
python3 "$here/kafka-events.py" "$dir/order-events.bin" "$dir/payment-events.bin"

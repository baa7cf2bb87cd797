#!/usr/bin/env bash
# operate_checkout: the operations parts wired into the checkout
# (saga-checkout serve, one process, the seven services):
#  - GET /metrics is Prometheus text that promtool accepts, with the
#    checkout's saga counted and every service's participant series;
#  - a checkout sent with a W3C traceparent: the same trace id in the JSON
#    log lines (--log-format json) of every
#    service that handled a step, and in the saga's step commands;
#  - the console at /console/ with CK_ADMIN_TOKEN: 401 without the token,
#    the order's saga readable through the admin API; sagactl reads the
#    order service's store (list, show, graph of "checkout").
#   usage: checkout.sh SAGA_CHECKOUT SAGACTL
set -euo pipefail
ck=$1
sagactl=$2
work=$(mktemp -d)
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -n 20 "$work/ck.log" >&2 || true; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base=http://127.0.0.1:$port
token=checkout-admin-token
CK_ADMIN_TOKEN=$token "$ck" serve --data "$work/data" --listen "127.0.0.1:$port" \
    --log-format json > "$work/ck.out" 2> "$work/ck.log" &
pid=$!
for _ in $(seq 1 100); do curl -sf "$base/health" > /dev/null && break; sleep 0.1; done

trace=0af7651916cd43dd8448eb211c80319c
tp="00-$trace-b7ad6b7169203331-01"
curl -sf -X POST "$base/api/v1/carts/cart_ops/items" -H 'X-User-Id: user_ops' \
    -d '{"product_id": "prod_123", "quantity": 1}' > /dev/null
curl -sf -X POST "$base/api/v1/orders/checkout" -H 'X-User-Id: user_ops' \
    -H 'Idempotency-Key: ops-key-1' -H "traceparent: $tp" \
    -d '{"cart_id": "cart_ops", "shipping_address": {"street": "1 Main St",
         "city": "SF", "state": "CA", "zip": "94102", "country": "USA"},
         "payment_method": {"type": "credit_card", "card_token": "tok_ok"}}' \
    > "$work/order.json"
order=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["order_id"])' "$work/order.json")
for _ in $(seq 1 100); do
    st=$(curl -s "$base/api/v1/orders/$order" -H 'X-User-Id: user_ops' |
         python3 -c 'import json,sys; print(json.load(sys.stdin).get("status"))')
    [ "$st" = COMPLETED ] && break
    sleep 0.1
done
[ "$st" = COMPLETED ] || fail "order $order is $st"

echo "== metrics"
curl -sf "$base/metrics" > "$work/m.prom"
promtool check metrics < "$work/m.prom" || fail "promtool"
grep -q '^saga_sagas_completed_total{definition="checkout",version="1"} 1$' "$work/m.prom" ||
    fail "completed counter"
for svc in inventory payment shipping warehouse; do
    grep -q "^saga_participant_commands_total{service=\"$svc\"} [1-9]" "$work/m.prom" ||
        fail "participant $svc in /metrics"
done

echo "== trace"
python3 - "$work/ck.log" "$trace" <<'PY'
import json, sys
log, trace = sys.argv[1], sys.argv[2]
services = set()
for line in open(log):
    line = line.strip()
    if not line.startswith('{'):
        continue
    ev = json.loads(line)
    if ev.get('trace_id') == trace:
        services.add(ev.get('service'))
need = {'order', 'inventory', 'payment', 'shipping', 'warehouse'}
missing = need - services
if missing:
    sys.exit('trace %s missing in the logs of %s (seen: %s)' % (trace, sorted(missing), sorted(services)))
print('trace id in the logs of', sorted(services))
PY

echo "== console and sagactl"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/console/api/stats")" = 401 ] || fail "401"
curl -sf -H "Authorization: Bearer $token" "$base/console/api/stats" | grep -q '"COMPLETED":1' ||
    fail "console stats"
curl -sf "$base/console/" | grep -q 'libsaga console' || fail "console page"
export SAGA_STORE=$work/data/order-saga.db
"$sagactl" list --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["sagas"][0]["state"]=="COMPLETED", d'
"$sagactl" graph checkout --format dot > "$work/checkout.dot"
if command -v dot > /dev/null; then dot -Tsvg -o /dev/null "$work/checkout.dot"; fi
kill "$pid"; wait "$pid" || true; pid=
echo "operate_checkout: OK"

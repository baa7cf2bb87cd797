#!/usr/bin/env bash
# tests/checkout_http/latewait.sh: a checkout's answer that comes after its
# timeout goes nowhere. With CK_CHECKOUT_WAIT_MS=1 most checkouts are
# answered 503 timeout before their saga start is durable; the start's
# late answer must not reach another request. Six clients check out at
# once, each retrying a 503 with its key until 2xx (bounded); every 2xx
# names the key it was asked with, and an order of that key. Before the
# fix the timeout freed the request's deferred answer, and the late start
# answered into it, or into another request's one allocated there since:
# user u2's checkout was answered with user u0's order
# (hostile_killloop_distributed_pg with the PostgreSQL server restarted).
. "$(dirname "$0")/lib.sh"
CO_MODE=serve
export CK_CHECKOUT_WAIT_MS=1
co_start serve "$CO_TMP/data"

body() { co_checkout_body "$1" tok_ok; }

# client N: 6 carts of one item each, checked out one after the other; one
# line "KEY ANSWERED_KEY ORDER" per 2xx, a line "503" per timeout.
client() {
    local n=$1 i try st out=$CO_TMP/c$1
    for i in $(seq 1 6); do
        st=$(curl -sS -m 30 -o "$out.body" -w '%{http_code}' \
            -H 'Content-Type: application/json' -H "X-User-Id: u$n" \
            --data-binary '{"product_id":"p_widget","quantity":1}' \
            "$CO_URL/api/v1/carts/c${n}_$i/items") || st=000
        [ "$st" = 201 ] || { echo "add $st" >> "$out"; continue; }
        for try in $(seq 1 200); do
            st=$(curl -sS -m 30 -o "$out.body" -w '%{http_code}' \
                -H 'Content-Type: application/json' -H "X-User-Id: u$n" \
                -H "Idempotency-Key: k${n}_$i" \
                --data-binary "$(body "c${n}_$i")" \
                "$CO_URL/api/v1/orders/checkout") || st=000
            case $st in
                200 | 202)
                    echo "k${n}_$i $(jq -r '"\(.idempotency_key) \(.order_id)"' "$out.body")" >> "$out"
                    break ;;
                503) echo 503 >> "$out" ;;
                *) echo "checkout $st $(cat "$out.body")" >> "$out"; break ;;
            esac
            sleep 0.01
        done
    done
}

pids=()
for n in 0 1 2 3 4 5; do
    client "$n" &
    pids+=($!)
done
wait "${pids[@]}"

timeouts=$(cat "$CO_TMP"/c[0-9] | grep -c '^503$')
[ "$timeouts" -ge 1 ] && pass || bad "no checkout timed out: nothing was answered late"
answered=0
while read -r key got oid rest; do
    case $key in
        503) continue ;;
        add | checkout) bad "$key $got $oid $rest"; continue ;;
    esac
    answered=$((answered + 1))
    [ "$got" = "$key" ] && pass || bad "checkout $key answered with key $got (order $oid)"
    want=$(co_sql "$(co_db order)" "SELECT order_id FROM orders WHERE idempotency_key = '$key'")
    [ "$oid" = "$want" ] && pass || bad "checkout $key answered order $oid; its order is $want"
done < <(cat "$CO_TMP"/c[0-9])
[ "$answered" = 36 ] && pass || bad "$answered of 36 checkouts answered 2xx"
log "latewait: $timeouts answers 503 timeout, $answered checkouts answered"
co_finish

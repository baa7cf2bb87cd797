#!/usr/bin/env bash
# tests/checkout/concurrency.sh [serve|distributed]: 200 clients check out at
# once (one curl, 200 parallel connections through libcurl's multi
# interface), 50 of them reusing another client's Idempotency-Key with the
# same request (a double click from another tab). Afterwards: exactly one
# order per key, every duplicate got the same order_id, one charge per order,
# and stock and money are conserved, checked through the API and in the
# services' SQLite files.
. "$(dirname "$0")/lib.sh"
CO_MODE=${1:-serve}
co_start "$CO_MODE" "$CO_TMP/data"
N=150          # distinct keys (carts)
DUP=50         # clients that reuse one of them
cfg=$CO_TMP/burst.cfg
: > "$cfg"

# 150 carts. The mix puts money and stock through every path: most pay,
# some are declined, some are flaky, some hold the product the warehouse
# refuses (refund), some ask for scarce p_rare (one unit: inventory fails).
token_of() {
    case $(($1 % 10)) in
        0) echo tok_decline ;; 1) echo tok_flaky ;; *) echo tok_ok ;;
    esac
}
for i in $(seq 1 $N); do
    CO_USER=u_c$i
    co_add_item "c_c$i" p_widget $((1 + i % 3))
    [ $((i % 7)) -eq 0 ] && co_add_item "c_c$i" p_fragile 1
    [ $((i % 11)) -eq 0 ] && co_add_item "c_c$i" p_rare 1
    co_checkout_body "c_c$i" "$(token_of "$i")" > "$CO_TMP/b$i.json"
done
# Client j < N uses key j; clients N..N+DUP-1 reuse the keys of clients
# 1, 4, 7, ... Both copies go into the burst in a shuffled order.
order=$( { seq 1 $N; for d in $(seq 0 $((DUP - 1))); do echo "$((1 + 3 * d))d"; done; } | shuf)
for t in $order; do
    i=${t%d}
    co_burst_add "$cfg" "$t" "k_c$i" "u_c$i" "$CO_TMP/b$i.json"
done
co_burst "$cfg" "$CO_TMP/burst.out"

# ---- the answers ----------------------------------------------------------
[ "$(wc -l < "$CO_TMP/burst.out")" = $((N + DUP)) ] && pass ||
    bad "$(wc -l < "$CO_TMP/burst.out") answers for $((N + DUP)) requests"
declare -A oid_of=()
while read -r t st; do
    i=${t%d}
    oid=$(jq -r '.order_id // empty' "$CO_TMP/r_$t.json" 2>/dev/null)
    if [ "$st" != 202 ] && [ "$st" != 200 ]; then
        bad "client $t (key k_c$i): status $st: $(head -c 200 "$CO_TMP/r_$t.json")"
    elif [ -z "$oid" ]; then
        bad "client $t: no order_id"
    elif [ -n "${oid_of[$i]:-}" ] && [ "${oid_of[$i]}" != "$oid" ]; then
        bad "key k_c$i gave two orders: ${oid_of[$i]} and $oid"
    else
        oid_of[$i]=$oid
        pass
    fi
done < "$CO_TMP/burst.out"
[ "$(printf '%s\n' "${oid_of[@]}" | sort -u | wc -l)" = $N ] && pass ||
    bad "$(printf '%s\n' "${oid_of[@]}" | sort -u | wc -l) distinct orders for $N keys"

# ---- every saga ends; its outcome matches its token and products ------------
for i in $(seq 1 $N); do
    oid=${oid_of[$i]:-}
    [ -n "$oid" ] || continue
    co_wait_final "$oid" 180 || { bad "order $oid (cart c_c$i) never ended"; continue; }
    case $(jq -r '.status + "/" + (.cancel_reason // "")' <<< "$BODY") in
        COMPLETED/)
            [ "$(token_of "$i")" != tok_decline ] && [ $((i % 7)) -ne 0 ] && pass ||
                bad "cart c_c$i completed ($(token_of "$i"), i%7=$((i % 7)))" ;;
        CANCELLED/payment_failed)
            [ "$(token_of "$i")" = tok_decline ] && pass || bad "c_c$i: payment_failed with $(token_of "$i")" ;;
        CANCELLED/fulfillment_failed)
            [ $((i % 7)) -eq 0 ] && jqt '.payment.status == "REFUNDED"' && pass ||
                bad "c_c$i: fulfillment_failed: $BODY" ;;
        CANCELLED/inventory_failed)
            [ $((i % 11)) -eq 0 ] && jqt '.payment == null' && pass ||
                bad "c_c$i: inventory_failed: $BODY" ;;
        *) bad "c_c$i: unexpected end $(jq -c '{status, cancel_reason}' <<< "$BODY")" ;;
    esac
    # A replay after the end still answers the same order.
    [ $((i % 25)) -eq 0 ] || continue
    CO_USER=u_c$i
    req POST /api/v1/orders/checkout "@$CO_TMP/b$i.json" -H "Idempotency-Key: k_c$i"
    jqt ".order_id == \"$oid\"" && pass || bad "replay of k_c$i after the end: $ST $BODY"
done
# p_rare has one unit: at most one of the carts that want it completes.
sold=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders o JOIN order_items i
    ON i.order_id = o.order_id WHERE o.status = 'COMPLETED' AND i.product_id = 'p_rare'")
[ "$sold" -le 1 ] && pass || bad "p_rare (1 unit) sold $sold times"

# ---- through the API: each user's history has exactly one order ------------
for i in $(seq 1 $N); do
    req GET "/api/v1/orders?user_id=u_c$i"
    jqt ".pagination.total == 1 and .orders[0].order_id == \"${oid_of[$i]:-}\"" && pass ||
        bad "history of u_c$i: $BODY"
done

# ---- in the SQLite files: one order per key, one charge per order ----------
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders WHERE user_id LIKE 'u_c%'")
[ "$n" = $N ] && pass || bad "$n rows in orders for $N keys"
co_invariants
co_finish

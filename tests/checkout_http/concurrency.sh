#!/usr/bin/env bash
# tests/checkout_http/concurrency.sh [serve|distributed]: 200 clients check
# out at once (one curl, 200 parallel connections through libcurl's multi
# interface), 50 of them reusing another client's Idempotency-Key with the
# same request (a double click from another tab). Afterwards: exactly one
# order per key, every duplicate got the same order_id, one charge per
# order, and stock and money are conserved, checked through the API and in
# the services' SQLite files.
. "$(dirname "$0")/lib.sh"
CO_MODE=${1:-serve}
co_start "$CO_MODE" "$CO_TMP/data"
N=150          # distinct keys (carts)
DUP=50         # clients that reuse one of them

# 150 carts. The mix puts money and stock through every path: most pay,
# some are declined, some are flaky, some hold the product the warehouse
# refuses (refund), some ask for scarce p_rare (one unit: inventory fails;
# the %11 order that gets it may still be declined, key 110, or refused by
# the warehouse, keys 77 and 154: then that is its outcome).
token_of() { # sets TOK (no subshell)
    case $(($1 % 10)) in
        0) TOK=tok_decline ;; 1) TOK=tok_flaky ;; *) TOK=tok_ok ;;
    esac
}
cfg=$CO_TMP/carts.cfg
: > "$cfg"
for i in $(seq 1 $N); do
    printf '{"product_id":"p_widget","quantity":%d}' $((1 + i % 3)) > "$CO_TMP/w$i.json"
    co_burst_add "$cfg" "w$i" - "u_c$i" "$CO_TMP/w$i.json" "/api/v1/carts/c_c$i/items"
    if [ $((i % 7)) -eq 0 ]; then
        echo '{"product_id":"p_fragile","quantity":1}' > "$CO_TMP/f$i.json"
        co_burst_add "$cfg" "f$i" - "u_c$i" "$CO_TMP/f$i.json" "/api/v1/carts/c_c$i/items"
    fi
    if [ $((i % 11)) -eq 0 ]; then
        echo '{"product_id":"p_rare","quantity":1}' > "$CO_TMP/r$i.json"
        co_burst_add "$cfg" "r$i" - "u_c$i" "$CO_TMP/r$i.json" "/api/v1/carts/c_c$i/items"
    fi
    token_of "$i"
    co_checkout_body "c_c$i" "$TOK" > "$CO_TMP/b$i.json"
done
co_burst "$cfg" "$CO_TMP/carts.out"
[ "$(grep -vc ' 201$' "$CO_TMP/carts.out")" = 0 ] ||
    die "cart setup: $(grep -v ' 201$' "$CO_TMP/carts.out" | head -n 3)"

# Client j <= N uses key j; clients N+1..N+DUP reuse the keys of clients
# 1, 4, 7, ... Both copies go into the burst in a shuffled order.
cfg=$CO_TMP/burst.cfg
: > "$cfg"
for t in $( { seq 1 $N; for d in $(seq 0 $((DUP - 1))); do echo "$((1 + 3 * d))d"; done; } | shuf); do
    i=${t%d}
    co_burst_add "$cfg" "$t" "k_c$i" "u_c$i" "$CO_TMP/b$i.json"
done
co_burst "$cfg" "$CO_TMP/burst.out"

# ---- the answers: one 202 per key, every other answer 200, same order_id ----
[ "$(wc -l < "$CO_TMP/burst.out")" = $((N + DUP)) ] && pass ||
    bad "$(wc -l < "$CO_TMP/burst.out") answers for $((N + DUP)) requests"
while read -r t st; do
    [ -s "$CO_TMP/r_$t.json" ] || echo '{}' > "$CO_TMP/r_$t.json"
    printf '%s\t%s\t%s\n' "${t%d}" "$st" "$(< "$CO_TMP/r_$t.json")"
done < "$CO_TMP/burst.out" | sort -n > "$CO_TMP/answers.tsv"
errs=$(awk -F'\t' '{ if ($2 != 202 && $2 != 200) { print "key k_c" $1 ": status " $2 ": " $3; next }
        if (!match($3, /"order_id":"[^"]*"/)) { print "key k_c" $1 ": no order_id"; next }
        o = substr($3, RSTART + 12, RLENGTH - 13)
        if ($1 in oid && oid[$1] != o) print "key k_c" $1 ": two orders " oid[$1] " and " o
        oid[$1] = o; if ($2 == 202) n202[$1]++ }
    END { for (k in oid) if (n202[k] != 1) print "key k_c" k ": " n202[k] + 0 " answers 202, want 1"
          for (k in oid) seen[oid[k]]++; for (o in seen) if (seen[o] > 1) print "order " o " for two keys" }' \
    "$CO_TMP/answers.tsv" | head -n 20)
[ -z "$errs" ] && pass || bad "answers:"$'\n'"$errs"
declare -A oid_of=()
while IFS=$'\t' read -r i o; do oid_of[$i]=$o; done < <(
    awk -F'\t' 'match($3, /"order_id":"[^"]*"/) { print $1 "\t" substr($3, RSTART + 12, RLENGTH - 13) }' \
        "$CO_TMP/answers.tsv" | sort -u)
[ ${#oid_of[@]} = $N ] && pass || bad "${#oid_of[@]} keys got an order, of $N"

# ---- every saga ends; its outcome follows from its token and products -------
co_wait_all_final 240 || bad "orders still pending after 240 s"
paths=()
for i in $(seq 1 $N); do paths+=("/api/v1/orders/${oid_of[$i]:-none}"); done
co_get_many "$CO_TMP/orders.tsv" "${paths[@]}"
# One jq over all answers (token_of in jq: i%10 0 decline, 1 flaky, else ok).
errs=$(jq -Rr 'split("\t") as [$i, $st, $b] | ($i | tonumber) as $n | ($b | fromjson) as $o |
    (if $n % 11 == 0 and $o.status == "CANCELLED" and
        (($n % 10 != 0 and $n % 7 != 0) or $o.cancel_reason == "inventory_failed")
     then "CANCELLED/inventory_failed"
     elif $n % 10 == 0 then "CANCELLED/payment_failed"
     elif $n % 7 == 0 then "CANCELLED/fulfillment_failed" else "COMPLETED/" end) as $want |
    ("\($o.status)/\($o.cancel_reason // "")" +
     (if $o.status == "COMPLETED" and $o.payment.status != "COMPLETED" then " payment \($o.payment.status)"
      elif $o.cancel_reason == "fulfillment_failed" and $o.payment.status != "REFUNDED" then " payment \($o.payment.status)"
      elif $o.cancel_reason == "inventory_failed" and $o.payment != null then " payment \($o.payment.status)"
      else "" end)) as $got |
    select($st != "200" or $got != $want) | "order of k_c\($i): \($st) \($got), want \($want)"' \
    "$CO_TMP/orders.tsv" | head -n 20)
[ -z "$errs" ] && [ "$(wc -l < "$CO_TMP/orders.tsv")" = $N ] && pass || bad "outcomes:"$'\n'"$errs"
sold=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders o JOIN order_items i
    ON i.order_id = o.order_id WHERE o.status = 'COMPLETED' AND i.product_id = 'p_rare'")
[ "$sold" -le 1 ] && pass || bad "p_rare (1 unit) sold $sold times"

# ---- replays after the end answer the same order ----------------------------
cfg=$CO_TMP/replay.cfg
: > "$cfg"
for i in $(seq 1 5 $N); do co_burst_add "$cfg" "$i" "k_c$i" "u_c$i" "$CO_TMP/b$i.json"; done
co_burst "$cfg" "$CO_TMP/replay.out"
while read -r i st; do
    [ "$st" = 200 ] && grep -q "\"order_id\":\"${oid_of[$i]:-none}\"" "$CO_TMP/r_$i.json" && pass ||
        bad "replay of k_c$i: $st $(< "$CO_TMP/r_$i.json")"
done < "$CO_TMP/replay.out"

# ---- through the API: each user's history has exactly that one order --------
paths=()
for i in $(seq 1 $N); do paths+=("/api/v1/orders?user_id=u_c$i"); done
co_get_many "$CO_TMP/hist.tsv" "${paths[@]}"
for i in $(seq 1 $N); do printf '%s\t%s\n' "$i" "${oid_of[$i]:-none}"; done > "$CO_TMP/keys.tsv"
errs=$(jq -Rr --rawfile keys "$CO_TMP/keys.tsv" '
    ($keys | split("\n") | map(select(. != "") | split("\t") | {key: .[0], value: .[1]}) | from_entries) as $k |
    split("\t") as [$i, $st, $b] | ($b | fromjson) as $o |
    select($st != "200" or $o.pagination.total != 1 or $o.orders[0].order_id != $k[$i]) |
    "history of u_c\($i): \($st) \($b)"' "$CO_TMP/hist.tsv" | head -n 20)
[ -z "$errs" ] && [ "$(wc -l < "$CO_TMP/hist.tsv")" = $N ] && pass || bad "histories:"$'\n'"$errs"

# ---- in the SQLite files: one order per key, one charge per order ------------
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders WHERE user_id LIKE 'u_c%'")
[ "$n" = $N ] && pass || bad "$n rows in orders for $N keys"
co_invariants
co_finish

#!/usr/bin/env bash
# tests/checkout/crash.sh serve|distributed [KILLS]: SIGKILL while about 100
# sagas are in flight, restart on the same data, many times.
#
#   serve:        `saga-checkout serve` itself is killed KILLS times (>= 20).
#   distributed:  the payment and inventory processes (and the order service
#                 now and then) are killed and restarted mid-run.
#
# Each round sends 100 new checkouts at once, plus a retry (same key, same
# body) of every checkout that got no answer before, as a client would;
# kills at a moment that varies from round to round (before, during and
# after the 202s, while the payments wait on the gateway). At the end every
# key has exactly one order, every order is COMPLETED or CANCELLED, no charge
# stands without a COMPLETED order (no late gateway answer charged a
# cancelled one), and stock and money are conserved.
. "$(dirname "$0")/lib.sh"
CO_MODE=${1:-serve}
KILLS=${2:-${CO_KILLS:-20}}
PER_ROUND=100
data=$CO_TMP/data
co_start "$CO_MODE" "$data"

token_of() {
    case $(($1 % 20)) in
        0 | 1) echo tok_decline ;; 2 | 3) echo tok_flaky ;; 4 | 5) echo tok_slow ;;
        6) echo tok_timeout ;; *) echo tok_ok ;;
    esac
}

# Carts for every round, created up front (in bursts; 8 connections).
total=$((PER_ROUND * KILLS))
cfg=$CO_TMP/carts.cfg
: > "$cfg"
for i in $(seq 1 $total); do
    p=p_widget
    [ $((i % 13)) -eq 0 ] && p=p_fragile
    printf '{"product_id":"%s","quantity":%d}' $p $((1 + i % 2)) > "$CO_TMP/item$i.json"
    co_burst_add "$cfg" "cart$i" - "u_k$((i % 40))" "$CO_TMP/item$i.json" "/api/v1/carts/c_k$i/items"
    co_checkout_body "c_k$i" "$(token_of "$i")" > "$CO_TMP/b$i.json"
done
sed -i '$d' "$cfg"
curl -s -Z --parallel-max 8 -K "$cfg" > "$CO_TMP/carts.out" 2> /dev/null
[ "$(grep -c ' 201$' "$CO_TMP/carts.out")" = $total ] ||
    die "cart setup: $(grep -vc ' 201$' "$CO_TMP/carts.out") of $total failed"

declare -A oid_of=()   # key index -> order_id, once a 2xx was seen
unanswered=()          # key indexes sent but not answered yet

# send_round FIRST LAST: sends checkouts FIRST..LAST plus every unanswered
# one, in the background; sets BURST_PID.
send_round() {
    local c=$CO_TMP/round.cfg i
    : > "$c"
    for i in "${unanswered[@]}" $(seq "$1" "$2"); do
        co_burst_add "$c" "$i" "k_k$i" "u_k$((i % 40))" "$CO_TMP/b$i.json"
    done
    unanswered=()
    co_burst "$c" "$CO_TMP/round.out" &
    BURST_PID=$!
}

# collect: reads the round's answers; keeps the unanswered ones for later.
collect() {
    local t st oid
    while read -r t st; do
        oid=$(jq -r '.order_id // empty' "$CO_TMP/r_$t.json" 2> /dev/null)
        if { [ "$st" = 202 ] || [ "$st" = 200 ]; } && [ -n "$oid" ]; then
            if [ -n "${oid_of[$t]:-}" ] && [ "${oid_of[$t]}" != "$oid" ]; then
                bad "key k_k$t answered two orders: ${oid_of[$t]} and $oid"
            fi
            oid_of[$t]=$oid
        elif [ "$st" = 000 ] || [ "$st" = 503 ]; then
            unanswered+=("$t")
        else
            bad "key k_k$t: status $st: $(head -c 200 "$CO_TMP/r_$t.json")"
        fi
        rm -f "$CO_TMP/r_$t.json"
    done < "$CO_TMP/round.out"
}

# The victim of round r: serve mode always the one process; distributed
# mode payment and inventory in turn, both at once, and the order service.
victims() {
    if [ "$CO_MODE" = serve ]; then
        echo serve
    else
        case $(($1 % 4)) in
            0) echo payment ;; 1) echo inventory ;; 2) echo payment inventory ;;
            3) echo order ;;
        esac
    fi
}

for r in $(seq 1 "$KILLS"); do
    send_round $(((r - 1) * PER_ROUND + 1)) $((r * PER_ROUND))
    # 0 to 0.57 s, a different moment each round.
    sleep "0.$(printf '%02d' $(((r * 37) % 58)))"
    vs=$(victims "$r")
    for v in $vs; do co_stop "$v" KILL; done
    if [ "$CO_MODE" = distributed ]; then sleep 0.$((r % 5)); fi
    for v in $vs; do co_revive "$v"; done
    wait "$BURST_PID"
    collect
    log "round $r: killed [$vs]; ${#oid_of[@]} keys answered, ${#unanswered[@]} to retry"
done

# Every client retries until it gets its answer.
for try in 1 2 3 4 5; do
    [ ${#unanswered[@]} -eq 0 ] && break
    send_round 1 0
    wait "$BURST_PID"
    collect
done
[ ${#unanswered[@]} -eq 0 ] && pass || bad "${#unanswered[@]} checkouts never answered"
[ ${#oid_of[@]} = $total ] && pass || bad "${#oid_of[@]} keys answered of $total"
[ "$(printf '%s\n' "${oid_of[@]}" | sort -u | wc -l)" = ${#oid_of[@]} ] && pass ||
    bad "two keys share an order"

# Every saga ends (the ones waiting on tok_slow and tok_timeout too).
co_wait_all_final 240 || bad "not every order ended: $(co_sql "$(co_db order)" \
    "SELECT status, COUNT(*) FROM orders GROUP BY status")"
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders WHERE user_id LIKE 'u_k%'")
[ "$n" = $total ] && pass || bad "$n orders in the order database for $total keys"
# Replays after the end answer the same order (a sample).
for i in $(seq 7 97 $total); do
    CO_USER=u_k$((i % 40))
    req POST /api/v1/orders/checkout "@$CO_TMP/b$i.json" -H "Idempotency-Key: k_k$i"
    jqt ".order_id == \"${oid_of[$i]:-none}\"" && pass || bad "replay of k_k$i: $ST $BODY"
done
# Outcomes that follow from the token whatever the crashes did.
for i in $(seq 1 $total); do
    tok=$(token_of "$i")
    case $tok in tok_decline | tok_slow | tok_timeout) ;; *) continue ;; esac
    st=$(co_sql "$(co_db order)" "SELECT status FROM orders WHERE order_id = '${oid_of[$i]:-}'")
    [ "$st" = CANCELLED ] && pass || bad "order of k_k$i ($tok) is $st, want CANCELLED"
done
co_invariants
co_finish

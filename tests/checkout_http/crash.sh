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

# token_of I: sets TOK, the card token of checkout I (no subshell: on a
# loaded machine every fork counts).
token_of() {
    case $(($1 % 20)) in
        0 | 1) TOK=tok_decline ;; 2 | 3) TOK=tok_flaky ;; 4 | 5) TOK=tok_slow ;;
        6) TOK=tok_timeout ;; *) TOK=tok_ok ;;
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
    token_of "$i"
    co_checkout_body "c_k$i" "$TOK" > "$CO_TMP/b$i.json"
done
sed -i '$d' "$cfg"
curl -s -Z --parallel-max 8 -K "$cfg" > "$CO_TMP/carts.out" 2> /dev/null
rm -f "$CO_TMP"/r_cart*.json
log "$total carts ready ($SECONDS s)"
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
    local t st rest oid
    while read -r t st; do
        oid= rest=
        if [ -s "$CO_TMP/r_$t.json" ]; then
            read -r rest < "$CO_TMP/r_$t.json"
            [[ $rest =~ \"order_id\":\"([^\"]*)\" ]] && oid=${BASH_REMATCH[1]}
        fi
        if { [ "$st" = 202 ] || [ "$st" = 200 ]; } && [ -n "$oid" ]; then
            if [ -n "${oid_of[$t]:-}" ] && [ "${oid_of[$t]}" != "$oid" ]; then
                bad "key k_k$t answered two orders: ${oid_of[$t]} and $oid"
            fi
            oid_of[$t]=$oid
        elif [ "$st" = 000 ] || [ "$st" = 503 ]; then
            unanswered+=("$t")
        else
            bad "key k_k$t: status $st: ${rest:0:200}"
        fi
    done < "$CO_TMP/round.out"
    rm -f "$CO_TMP"/r_[0-9]*.json
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

# answered: N_ANSWERED = how many answers of the round have arrived (curl writes each
# body to its file as it comes; no process started for the count).
answered() {
    local f
    N_ANSWERED=0
    for f in "$CO_TMP"/r_[0-9]*.json; do [ -s "$f" ] && N_ANSWERED=$((N_ANSWERED + 1)); done
    return 0
}

for r in $(seq 1 "$KILLS"); do
    t0=$SECONDS
    send_round $(((r - 1) * PER_ROUND + 1)) $((r * PER_ROUND))
    # A different moment each round: once 0, 10, ... 90 of its checkouts
    # have been answered (or 5 s have passed), then 0-90 ms more.
    want=$(((r * 37) % 10 * 10))
    # The services alone go faster: kill them earlier to catch sagas mid-way.
    [ "$CO_MODE" = serve ] || want=$((want / 4))
    while answered && [ "$N_ANSWERED" -lt "$want" ] && [ $((SECONDS - t0)) -lt 5 ]; do sleep 0.02; done
    sleep "0.0$((r % 10))"
    vs=$(victims "$r")
    for v in $vs; do co_stop "$v" KILL; done
    flight=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders
        WHERE status NOT IN ('COMPLETED', 'CANCELLED')")
    if [ "$CO_MODE" = distributed ]; then sleep 0.$((r % 5)); fi
    for v in $vs; do co_revive "$v"; done
    wait "$BURST_PID"
    collect
    log "round $r ($((SECONDS - t0)) s): killed [$vs] after $want answers, $flight orders in flight; ${#oid_of[@]} keys answered, ${#unanswered[@]} to retry"
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
cfg=$CO_TMP/replay.cfg
: > "$cfg"
for i in $(seq 7 37 $total); do
    co_burst_add "$cfg" "$i" "k_k$i" "u_k$((i % 40))" "$CO_TMP/b$i.json"
done
co_burst "$cfg" "$CO_TMP/replay.out"
while read -r i st; do
    [ "$st" = 200 ] && grep -q "\"order_id\":\"${oid_of[$i]:-none}\"" "$CO_TMP/r_$i.json" && pass ||
        bad "replay of k_k$i: $st $(< "$CO_TMP/r_$i.json")"
done < "$CO_TMP/replay.out"
# Outcomes that follow from the token whatever the crashes did: the keys
# and orders recorded by the order service match what the clients were told.
for i in $(seq 1 $total); do
    token_of "$i"
    printf 'k_k%s\t%s\t%s\n' "$i" "${oid_of[$i]:-none}" "$TOK"
done > "$CO_TMP/keys.tsv"
co_sql "$(co_db order)" "SELECT idempotency_key, order_id, status FROM orders
    WHERE user_id LIKE 'u_k%'" | tr '|' '\t' > "$CO_TMP/korders.tsv"
errs=$(awk -F'\t' 'NR == FNR { oid[$1] = $2; tok[$1] = $3; next }
    { seen[$1] = 1
      if (oid[$1] != $2) print "key " $1 ": order " $2 " in order.db, the client was told " oid[$1]
      if (tok[$1] ~ /decline|slow|timeout/ && $3 != "CANCELLED") print "key " $1 " (" tok[$1] "): " $3 }
    END { for (k in oid) if (!(k in seen)) print "key " k ": no order in order.db" }' \
    "$CO_TMP/keys.tsv" "$CO_TMP/korders.tsv" | head -n 20)
[ -z "$errs" ] && pass || bad "keys and outcomes:"$'\n'"$errs"
co_invariants
co_finish

#!/usr/bin/env bash
# tests/checkout_http/ckpt.sh: the WAL checkpoints of the main loop's files
# (order.db, order-saga.db) never hold a loop that runs sagas (issue 8).
#
# serve (two loops) with CK_CKPT_HOLD set: while that file exists, a
# checkpoint waits before it runs (a test hook of examples/checkout/ckpt.c).
# Checkouts go in rounds of 100 until the server says a checkpoint is held;
# then, with the checkpoint still held, another 100 checkouts must be
# accepted and every saga must end. When the checkpoints ran on the
# participants' loop (a4d39e7) the held checkpoint stopped all six
# participants: no saga could end and this fails. Then the hold is released
# and the server must stop cleanly.
. "$(dirname "$0")/lib.sh"
CO_MODE=serve
HOLD=$CO_TMP/hold
touch "$HOLD"
export CK_CKPT_HOLD=$HOLD
co_start serve "$CO_TMP/data"
LOG=$CO_TMP/data/serve.log

k=0
round() { # 100 carts filled, then 100 checkouts at once
    local cfg=$CO_TMP/r$1.cfg out=$CO_TMP/r$1.out i
    : > "$cfg"
    echo '{"product_id":"p_widget","quantity":1}' > "$CO_TMP/item.json"
    for i in $(seq 1 100); do
        co_burst_add "$cfg" "a$1_$i" - "u_$1_$i" "$CO_TMP/item.json" "/api/v1/carts/c_$1_$i/items"
    done
    co_burst "$cfg" "$out"
    [ "$(grep -c ' 201$' "$out")" = 100 ] || die "round $1: carts not filled: $(sort -k2 "$out" | uniq -c -f1 | head -3)"
    : > "$cfg"
    for i in $(seq 1 100); do
        co_checkout_body "c_$1_$i" tok_ok > "$CO_TMP/b_$1_$i.json"
        co_burst_add "$cfg" "k$1_$i" "key_$1_$i" "u_$1_$i" "$CO_TMP/b_$1_$i.json"
    done
    co_burst "$cfg" "$out"
    ACCEPTED=$(grep -c ' 202$' "$out")
}

held=0
for r in $(seq 1 40); do
    round "$r"
    [ "$ACCEPTED" = 100 ] || die "round $r: $ACCEPTED of 100 checkouts accepted"
    if ! co_wait_all_final 120; then
        grep -q 'checkpoint held' "$LOG" || die "round $r: sagas did not end (no checkpoint held yet)"
        die "round $r: a checkpoint was held and $(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders
            WHERE status NOT IN ('COMPLETED', 'CANCELLED')") sagas did not end: it holds a loop that runs sagas"
    fi
    if grep -q 'checkpoint held' "$LOG"; then
        held=$r
        break
    fi
done
[ "$held" -gt 0 ] && pass || die "no checkpoint was asked for after 40 rounds of 100 checkouts"
log "a checkpoint is held after round $held"

# The checkpoint is still held: sagas must go on.
round x
[ "$ACCEPTED" = 100 ] && pass || bad "with a checkpoint held: $ACCEPTED of 100 checkouts accepted"
if co_wait_all_final 120; then
    pass
else
    bad "with a checkpoint held, $(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders
        WHERE status NOT IN ('COMPLETED', 'CANCELLED')") sagas did not end: a checkpoint holds a loop that runs sagas"
fi
[ -e "$HOLD" ] && grep -q 'checkpoint held' "$LOG" && pass || bad "the checkpoint was not held throughout"
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders WHERE status = 'COMPLETED'")
[ "$n" = $(((held + 1) * 100)) ] && pass || bad "$n orders COMPLETED, expected $(((held + 1) * 100))"

# Released: the server stops cleanly (the checkpoint thread is joined).
rm -f "$HOLD"
kill -TERM "${CO_PID[serve]}"
for i in $(seq 1 300); do
    kill -0 "${CO_PID[serve]}" 2> /dev/null || break
    sleep 0.1
done
if kill -0 "${CO_PID[serve]}" 2> /dev/null; then
    bad "serve did not stop on SIGTERM once the checkpoint was released"
else
    wait "${CO_PID[serve]}" && pass || bad "serve exited with $? on SIGTERM"
    unset 'CO_PID[serve]'
fi
co_finish

#!/usr/bin/env bash
# tests/checkout_http/overload.sh: load shedding (issue 8). With
# CK_MAX_PENDING=1, a new checkout while one saga runs gets 503 overloaded
# with Retry-After and records nothing; the same key once the running saga
# ended is accepted (202), and the key's order is the one kept; after a
# restart with more sagas to resume than the cap, new checkouts are refused
# and an order recorded without its saga starts once there is room. Without the
# cap a backlog grows without bound: its steps time out and retry, and past
# some size no saga ends any more (bench/README.md, "Overload").
. "$(dirname "$0")/lib.sh"
CO_MODE=serve
export CK_MAX_PENDING=1
co_start serve "$CO_TMP/data"

co_add_item c_slow p_widget 1
co_add_item c_next p_widget 1
# tok_timeout: the gateway never answers, so this saga runs until its
# payment step has timed out (seconds).
co_checkout c_slow tok_timeout key_slow
expect "the first checkout is accepted" 202 '.order_id != null'
SLOW=$OID

co_checkout c_next tok_ok key_next -D "$CO_TMP/hdr"
expect_error "a checkout past CK_MAX_PENDING is refused" 503 overloaded
grep -qi '^retry-after: 1' "$CO_TMP/hdr" && pass || bad "no Retry-After on the 503: $(cat "$CO_TMP/hdr")"
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders")
[ "$n" = 1 ] && pass || bad "$n orders recorded after the refused checkout, want 1"

# Once the running saga ended, the same key is accepted and completes.
co_wait_final "$SLOW" 120 || die "the tok_timeout order never ended"
expect "the slow order ends cancelled" 200 '.status == "CANCELLED"'
co_checkout c_next tok_ok key_next
expect "the same key after the backlog cleared is accepted" 202 '.order_id != null'
co_wait_final "$OID" 120 || die "the retried order never ended"
expect "the retried order completes" 200 '.status == "COMPLETED"'
co_checkout c_next tok_ok key_next
expect "the key answers with its order" 200 ".order_id == \"$OID\""

# The cap is the engine's (max_active): recovery is never refused, and an
# order recorded without its saga waits for room. Two slow checkouts
# without a cap, then a kill; order B's saga is removed from the engine's
# store and its saga_id cleared, as if the process had died between the
# order's commit and its saga's (the window ck_order_restart_pending
# covers). Restarted with a cap of 1: A resumes (active 1, the cap), B's
# start is refused by the engine (SAGA_EFULL) and waits; a new checkout
# gets 503 and records nothing; once A has ended, B starts by itself.
co_stop serve TERM
export CK_MAX_PENDING=0
co_revive serve
co_add_item c_a p_widget 1
co_add_item c_b p_widget 1
co_add_item c_c p_widget 1
co_checkout c_a tok_timeout key_a
expect "A is accepted without a cap" 202 '.order_id != null'
A=$OID
co_checkout c_b tok_timeout key_b
expect "B is accepted without a cap" 202 '.order_id != null'
B=$OID
co_stop serve KILL
sqlite3 -batch "$(co_db order-saga)" "
  DELETE FROM journal WHERE saga_id IN (SELECT id FROM sagas WHERE idem_key = '$B');
  DELETE FROM sagas WHERE idem_key = '$B';
  DELETE FROM idem WHERE key = '$B';" || die "cannot edit order-saga.db"
sqlite3 -batch "$(co_db order)" \
    "UPDATE orders SET saga_id = NULL WHERE order_id = '$B'" ||
    die "cannot edit order.db"
export CK_MAX_PENDING=1
co_revive serve
n=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders")
co_checkout c_c tok_ok key_c
expect_error "past the cap after recovery, a new checkout is refused" 503 overloaded
m=$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders")
[ "$n" = "$m" ] && pass || bad "$m orders after the refused checkout, want $n"
# B's status may still move with what its first saga's participants
# publish; whether its saga started is the order's saga_id and the
# engine's store.
b_saga() { co_sql "$(co_db order)" "SELECT saga_id IS NOT NULL FROM orders WHERE order_id = '$B'"; }
[ "$(b_saga)" = 0 ] && pass || bad "order B got a saga past the cap"
co_wait_final "$A" 120 || die "the recovered order A never ended"
expect "the recovered order ends" 200 '.status == "CANCELLED"'
end=$((SECONDS + 60))
while [ "$(b_saga)" != 1 ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
[ "$(b_saga)" = 1 ] && pass || bad "order B never got its saga once there was room"
k=$(co_sql "$(co_db order-saga)" "SELECT COUNT(*) FROM sagas WHERE idem_key = '$B'")
[ "$k" = 1 ] && pass || bad "$k sagas of order B in the engine's store, want 1"
co_finish

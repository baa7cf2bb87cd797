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
# order recorded without its saga waits for room. Without a cap, order B
# completes; then order A (tok_timeout: its payment runs for seconds) is
# accepted and the server stopped at once, A still running. While it is
# down, B2, a copy of B under a new id and key with no saga, is written to
# order.db: an order recorded whose saga never started, as a crash between
# the two commits leaves it (ck_order_restart_pending starts those).
# Restarted with a cap of 1: A resumes (recovery is never refused: active
# 1, the cap), B2's start is refused by the engine (SAGA_EFULL) and waits;
# once A has ended, B2 starts by itself and completes.
co_stop serve TERM
export CK_MAX_PENDING=0
co_revive serve
co_add_item c_a p_widget 1
co_add_item c_b p_widget 1
co_checkout c_b tok_ok key_b
expect "B is accepted" 202 '.order_id != null'
B=$OID
co_wait_final "$B" 120 || die "order B never ended"
expect "B completes" 200 '.status == "COMPLETED"'
co_checkout c_a tok_timeout key_a
expect "A is accepted" 202 '.order_id != null'
A=$OID
co_stop serve TERM
running=$(co_sql "$(co_db order-saga)" "SELECT COUNT(*) FROM sagas WHERE idem_key = '$A' AND state IN (1, 2)")
[ "$running" = 1 ] || die "order A's saga is not running at the stop ($running)"
case $B in *0) B2=${B%?}1 ;; *) B2=${B%?}0 ;; esac
sqlite3 -batch "$(co_db order)" "
  CREATE TEMP TABLE o AS SELECT * FROM orders WHERE order_id = '$B';
  UPDATE o SET order_id = '$B2', idempotency_key = 'key_b2',
    status = 'PENDING', saga_id = NULL, cancel_reason = NULL,
    saga_data = CAST(replace(saga_data, '$B', '$B2') AS BLOB);
  INSERT INTO orders SELECT * FROM o;
  INSERT INTO order_items (order_id, product_id, quantity, price)
    SELECT '$B2', product_id, quantity, price FROM order_items
    WHERE order_id = '$B';" || die "cannot write order B2"
export CK_MAX_PENDING=1
co_revive serve
grep -q "1 order saga(s) wait for room (max_active)" "$CO_DATA/serve.log" && pass ||
    bad "B2's start was not refused while the recovered A ran: $(tail -n 5 "$CO_DATA/serve.log")"
co_wait_final "$A" 120 || die "the recovered order A never ended"
expect "the recovered order A ends" 200 '.status == "CANCELLED"'
co_wait_final "$B2" 120 || die "order B2 never got its saga once there was room"
expect "B2's saga started once there was room and completed" 200 \
    '.status == "COMPLETED" and (.saga_steps | length) > 0'
s=$(co_sql "$(co_db order)" "SELECT saga_id IS NOT NULL FROM orders WHERE order_id = '$B2'")
[ "$s" = 1 ] && pass || bad "order B2 has no saga id after its saga ran"
co_finish

#!/usr/bin/env bash
# tests/checkout_http/overload.sh: load shedding (issue 8). With
# CK_MAX_PENDING=1, a new checkout while one saga runs gets 503 overloaded
# with Retry-After and records nothing; the same key once the running saga
# ended is accepted (202), and the key's order is the one kept. Without the
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
co_finish

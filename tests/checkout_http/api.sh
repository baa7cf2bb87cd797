#!/usr/bin/env bash
# tests/checkout/api.sh serve|distributed: the REST contract of issue 8 (the
# seed's Part 6) over HTTP with curl: every path, method, status code and
# error. The saga outcomes are in saga.sh.
. "$(dirname "$0")/lib.sh"
CO_MODE=${1:-serve}
co_start "$CO_MODE" "$CO_TMP/data"
big=$CO_TMP/big.json

# ---- cart: add, update, get, delete --------------------------------------
CO_USER=u_api
req POST /api/v1/carts/c_api/items '{"product_id":"p_widget","quantity":2}'
expect "add item" 201 '.cart_item_id != null and .cart_id == "c_api" and
    .product_id == "p_widget" and .quantity == 2 and .price == 10 and
    (.added_at|type) == "string"'
item=$(jq -r .cart_item_id <<< "$BODY")
req POST /api/v1/carts/c_api/items '{"product_id":"p_gadget","quantity":1}'
expect "add second item" 201 '.product_id == "p_gadget" and .price == 25.5'
item2=$(jq -r .cart_item_id <<< "$BODY")

req PUT "/api/v1/carts/c_api/items/$item" '{"quantity":3}'
expect "update quantity" 200 ".cart_item_id == $(jq -R . <<< "$item") and
    .quantity == 3 and (.updated_at|type) == \"string\""

req GET /api/v1/carts/c_api
expect "get cart" 200 '.cart_id == "c_api" and .user_id == "u_api" and
    (.items|length) == 2 and .total_amount == 55.5 and .item_count == 4 and
    (.items|map(select(.product_id == "p_widget"))[0] |
        .quantity == 3 and .price == 10 and .name == "Widget") and
    (.updated_at|type) == "string"'

req DELETE "/api/v1/carts/c_api/items/$item2"
expect "delete item" 204
[ -z "$BODY" ] && pass || bad "204 has a body: $BODY"
req GET /api/v1/carts/c_api
expect "cart after delete" 200 '(.items|length) == 1 and .total_amount == 30'
req DELETE "/api/v1/carts/c_api/items/$item2"
expect_error "delete it again" 404 item_not_found
req PUT "/api/v1/carts/c_api/items/$item2" '{"quantity":1}'
expect_error "update a deleted item" 404 item_not_found
req GET /api/v1/carts/c_nobody
expect_error "unknown cart" 404 cart_not_found
req POST /api/v1/carts/c_api/items '{"product_id":"p_nothing","quantity":1}'
expect_error "unknown product" 404 product_not_found
CO_USER=- req GET /api/v1/carts/c_api
expect_error "cart without X-User-Id" 401 missing_user_id
CO_USER=- req POST /api/v1/carts/c_api/items '{"product_id":"p_widget","quantity":1}'
expect_error "add without X-User-Id" 401 missing_user_id
CO_USER=u_other
req GET /api/v1/carts/c_api
expect_error "another user's cart" 403 forbidden
req DELETE "/api/v1/carts/c_api/items/$item"
expect_error "another user's item" 403 forbidden
CO_USER=u_api

# ---- bad input on the cart endpoints -------------------------------------
req POST /api/v1/carts/c_api/items '{"product_id":"p_widget","quantity":'
expect_error "malformed JSON" 400
req POST /api/v1/carts/c_api/items 'not json at all'
expect_error "not JSON" 400
req POST /api/v1/carts/c_api/items '[1,2]'
expect_error "JSON but not an object" 400 invalid_json
for q in 0 -1 1.5 '"2"' null true '[1]'; do
    req POST /api/v1/carts/c_api/items "{\"product_id\":\"p_widget\",\"quantity\":$q}"
    expect_error "quantity $q" 422 invalid_quantity quantity
done
req PUT "/api/v1/carts/c_api/items/$item" '{"quantity":0}'
expect_error "update to quantity 0" 422 "" quantity
req PUT "/api/v1/carts/c_api/items/$item" '{"quantity":2.5}'
expect_error "update to quantity 2.5" 422 "" quantity
req PUT "/api/v1/carts/c_api/items/$item" '{}'
expect_error "update without quantity" 422 "" quantity
req POST /api/v1/carts/c_api/items '{"quantity":1}'
expect_error "missing product_id" 422 invalid_field product_id
req POST /api/v1/carts/c_api/items '{"product_id":7,"quantity":1}'
expect_error "product_id a number" 422 invalid_field product_id
req GET /api/v1/carts/c_api
expect "bad input changed nothing" 200 '(.items|length) == 1 and .item_count == 3'

head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' ' ' > "$big"
req POST /api/v1/carts/c_api/items "@$big"
expect_error "body over 1 MiB" 413 payload_too_large
req POST /api/v1/orders/checkout "@$big" -H 'Idempotency-Key: k_big'
expect_error "checkout body over 1 MiB" 413 payload_too_large
printf '{"product_id":"p_widget","quantity":1,"pad":"%s"}' \
    "$(head -c 900000 /dev/zero | tr '\0' x)" > "$big"
req POST /api/v1/carts/c_big/items "@$big"
expect "a 900 KB body is accepted" 201

# ---- unknown paths and wrong methods -------------------------------------
for p in /api/v1/nothing /api/v2/carts/c_api /api/v1/carts/c_api/items/1/x / /api/v1; do
    req GET "$p"
    expect_error "unknown path $p" 404 not_found
done
for mp in "PATCH /api/v1/carts/c_api" "DELETE /api/v1/carts/c_api" \
          "PUT /api/v1/carts/c_api/items" "GET /api/v1/carts/c_api/items" \
          "POST /api/v1/carts/c_api/items/$item" "GET /api/v1/orders/checkout" \
          "PUT /api/v1/orders/checkout" "DELETE /api/v1/orders/o_x" \
          "POST /api/v1/orders" "GET /api/v1/payments/process"; do
    req ${mp% *} "${mp#* }" "" -D "$CO_TMP/headers"
    expect_error "wrong method $mp" 405 method_not_allowed
    grep -qi '^allow: ' "$CO_TMP/headers" && pass || bad "405 for $mp without an Allow header"
done

# ---- checkout: idempotency key, replays, conflicts -----------------------
co_add_item c_co p_widget 1
body=$(co_checkout_body c_co tok_timeout)      # stays pending for a while
req POST /api/v1/orders/checkout "$body"
expect_error "checkout without Idempotency-Key" 400 missing_idempotency_key
req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key;'
expect_error "checkout with an empty Idempotency-Key" 400
req POST /api/v1/orders/checkout "$body" -H "Idempotency-Key: $(printf 'k%.0s' $(seq 201))"
expect_error "checkout with a 201-byte Idempotency-Key" 400 invalid_idempotency_key
CO_USER=- req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key: k_co_0'
expect_error "checkout without X-User-Id" 401 missing_user_id
req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key: k_co_1' -D "$CO_TMP/headers"
expect "checkout" 202 '(.order_id|type) == "string" and .idempotency_key == "k_co_1" and
    (.status|type) == "string" and (.created_at|type) == "string" and
    (.estimated_completion|type) == "string"'
oid=$(jq -r .order_id <<< "$BODY")
# tok_timeout keeps it pending for about 3 s: ask at once.
req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key: k_co_2'
expect_error "second checkout of a pending cart" 409 checkout_in_progress
req GET "/api/v1/orders/$oid"
expect "the pending order" 200 ".order_id == \"$oid\" and .user_id == \"u_api\" and
    (.status == \"PENDING\" or .status == \"INVENTORY_RESERVED\") and
    (.saga_steps|type) == \"array\""
grep -qi '^x-idempotency-key: k_co_1' "$CO_TMP/headers" && pass || bad "202 without X-Idempotency-Key"
req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key: k_co_1'
expect "same key, same body: the same order" 200 ".order_id == \"$oid\" and .idempotency_key == \"k_co_1\""
req POST /api/v1/orders/checkout "$(jq -S . <<< "$body")" -H 'Idempotency-Key: k_co_1'
expect "same key, same body reformatted" 200 ".order_id == \"$oid\""
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok)" -H 'Idempotency-Key: k_co_1'
expect_error "same key, other body" 422 idempotency_key_reused
CO_USER=u_other req POST /api/v1/orders/checkout "$body" -H 'Idempotency-Key: k_co_1'
expect_error "same key, other user" 422 idempotency_key_reused

req POST /api/v1/orders/checkout "$(co_checkout_body c_nobody tok_ok)" -H 'Idempotency-Key: k_co_3'
expect_error "checkout of an unknown cart" 404 cart_not_found
req POST /api/v1/orders/checkout '{"cart_id":' -H 'Idempotency-Key: k_co_4'
expect_error "checkout malformed JSON" 400 invalid_json
req POST /api/v1/orders/checkout '{"shipping_address":{},"payment_method":{"type":"credit_card","card_token":"tok_ok"}}' \
    -H 'Idempotency-Key: k_co_5'
expect_error "checkout without cart_id" 422 invalid_field cart_id
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok | jq -c '.cart_id = 12')" \
    -H 'Idempotency-Key: k_co_6'
expect_error "checkout with a numeric cart_id" 422 invalid_field cart_id
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok | jq -c 'del(.payment_method.card_token)')" \
    -H 'Idempotency-Key: k_co_7'
expect_error "checkout without card_token" 422 invalid_field card_token
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok | jq -c 'del(.shipping_address)')" \
    -H 'Idempotency-Key: k_co_8'
expect_error "checkout without shipping_address" 422 invalid_field shipping_address
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok | jq -c 'del(.shipping_address.street)')" \
    -H 'Idempotency-Key: k_co_8b'
expect_error "checkout without shipping_address.street" 422 invalid_field street
req POST /api/v1/orders/checkout "$(co_checkout_body c_co tok_ok | jq -c '.payment_method = "visa"')" \
    -H 'Idempotency-Key: k_co_8c'
expect_error "checkout with a string payment_method" 422 invalid_field payment_method
CO_USER=u_empty
req POST /api/v1/carts/c_empty/items '{"product_id":"p_widget","quantity":1}'
req DELETE "/api/v1/carts/c_empty/items/$(jq -r .cart_item_id <<< "$BODY")"
req POST /api/v1/orders/checkout "$(co_checkout_body c_empty tok_ok)" -H 'Idempotency-Key: k_co_9'
expect_error "checkout of an empty cart" 422 cart_empty
CO_USER=u_api

# ---- an order that completes: GET with payment and saga_steps ------------
co_add_item c_ok p_gadget 2
co_checkout c_ok tok_ok k_ok
oid=$OID
co_wait_final "$oid" || bad "order $oid never ended"
expect "completed order" 200 ".order_id == \"$oid\" and .status == \"COMPLETED\" and
    .user_id == \"u_api\" and .total_amount >= 51 and
    (.items == [{product_id: \"p_gadget\", quantity: 2, price: 25.5}] or
     (.items|length == 1 and .[0].product_id == \"p_gadget\" and .[0].quantity == 2)) and
    .shipping_address.city == \"San Francisco\" and
    .payment.status == \"COMPLETED\" and (.payment.payment_id|type) == \"string\" and
    (.payment.transaction_id|type) == \"string\" and
    ([.saga_steps[] | select(.status == \"COMPLETED\") | .step] as \$s |
        [\"INVENTORY_RESERVED\", \"PAYMENT_PROCESSED\", \"ORDER_FULFILLED\"] - \$s == []) and
    ([.saga_steps[].completed_at | select(. != null) | type] | all(. == \"string\")) and
    (.created_at|type) == \"string\" and (.updated_at|type) == \"string\""
req GET /api/v1/orders/o_nothing
expect_error "unknown order" 404 order_not_found
req POST /api/v1/orders/checkout "$(co_checkout_body c_ok tok_ok)" -H 'Idempotency-Key: k_ok'
expect "replay after completion" 200 ".order_id == \"$oid\" and .status == \"COMPLETED\""
req GET /api/v1/carts/c_ok
expect "a completed order empties its cart" 200 '.items == [] and .item_count == 0'

# ---- history: filters, default and maximum limit, pagination -------------
CO_USER=u_hist
for i in $(seq 1 25); do
    co_add_item "c_hist$i" p_widget 1
    tok=tok_ok
    [ "$i" -le 5 ] && tok=tok_decline
    co_checkout "c_hist$i" "$tok" "k_hist$i"
    [ "$ST" = 202 ] || bad "history checkout $i: $ST $BODY"
    last=$OID
done
co_wait_final "$last" || bad "history order $last never ended"
for i in $(seq 1 25); do
    req GET "/api/v1/orders?user_id=u_hist&limit=100"
    [ "$(jq '[.orders[] | select(.status == "COMPLETED" or .status == "CANCELLED")] | length' <<< "$BODY")" = 25 ] && break
    sleep 0.2
done
req GET "/api/v1/orders?user_id=u_hist"
expect "history, default limit" 200 '(.orders|length) == 20 and
    .pagination == {page: 1, limit: 20, total: 25, total_pages: 2} and
    (.orders[0] | (.order_id|type) == "string" and (.status|type) == "string" and
        .total_amount > 0 and .item_count == 1 and (.created_at|type) == "string")'
req GET "/api/v1/orders?user_id=u_hist&page=3&limit=10"
expect "history, page 3 of 10" 200 '(.orders|length) == 5 and
    .pagination == {page: 3, limit: 10, total: 25, total_pages: 3}'
req GET "/api/v1/orders?user_id=u_hist&page=9&limit=10"
expect "history, past the last page" 200 '(.orders|length) == 0 and .pagination.total == 25'
req GET "/api/v1/orders?user_id=u_hist&limit=1000"
expect "history, limit capped at 100" 200 '(.orders|length) == 25 and .pagination.limit == 100'
req GET "/api/v1/orders?user_id=u_hist&status=CANCELLED"
expect "history, status filter" 200 '(.orders|length) == 5 and
    all(.orders[]; .status == "CANCELLED") and .pagination.total == 5'
req GET "/api/v1/orders?user_id=u_hist&status=COMPLETED&limit=7&page=2"
expect "history, filter and page" 200 '(.orders|length) == 7 and
    all(.orders[]; .status == "COMPLETED") and .pagination.total == 20 and
    .pagination.total_pages == 3'
a=$(curl -s "$CO_URL/api/v1/orders?user_id=u_hist&limit=10&page=1" | jq -c '[.orders[].order_id]')
b=$(curl -s "$CO_URL/api/v1/orders?user_id=u_hist&limit=10&page=2" | jq -c '[.orders[].order_id]')
[ "$(jq -n "$a + $b | unique | length")" = 20 ] && pass || bad "pages overlap: $a $b"
req GET "/api/v1/orders?user_id=u_nobody"
expect "history of a user without orders" 200 '.orders == [] and .pagination.total == 0'
req GET "/api/v1/orders"
expect_error "history without user_id" 422 invalid_parameter user_id
for q in "limit=0" "limit=-5" "limit=abc" "page=0" "page=x" "status=NOPE"; do
    req GET "/api/v1/orders?user_id=u_hist&$q"
    expect_error "history with $q" 422 invalid_parameter "${q%%=*}"
done

# ---- the internal payments endpoint: idempotent by idempotency_key -------
pay='{"order_id":"o_pay_1","amount":12.34,"payment_method":{"type":"credit_card","card_token":"tok_ok"},"idempotency_key":"pk_1"}'
req POST /api/v1/payments/process "$pay"
expect "process payment" 200 '.order_id == "o_pay_1" and .status == "COMPLETED" and
    .amount == 12.34 and (.payment_id|type) == "string" and
    (.transaction_id|type) == "string" and (.processed_at|type) == "string"'
first=$BODY
req POST /api/v1/payments/process "$pay"
expect "process payment again: the first result" 200 "
    .payment_id == $(jq .payment_id <<< "$first") and
    .transaction_id == $(jq .transaction_id <<< "$first")"
# The doc's choice: the same key answers the first result whatever the body.
req POST /api/v1/payments/process "$(jq -c '.amount = 99' <<< "$pay")"
expect "same payment key, other amount: the first result, no new charge" 200 "
    .payment_id == $(jq .payment_id <<< "$first") and .amount == 12.34"
req GET /api/v1/ledger
expect "one charge at the bank for pk_1" 200 '[.charges[] | select(.idempotency_key == "api_pk_1")] |
    length == 1 and .[0].state == "CHARGED" and .[0].amount == 12.34'
req POST /api/v1/payments/process "$(jq -c '.idempotency_key = "pk_2" |
    .payment_method.card_token = "tok_decline"' <<< "$pay")"
expect_error "declined payment" 402 INSUFFICIENT_FUNDS
req POST /api/v1/payments/process "$(jq -c '.idempotency_key = "pk_3" |
    .payment_method.card_token = "tok_timeout"' <<< "$pay")"
expect_error "gateway timeout" 504 PAYMENT_TIMEOUT
flaky=$(jq -c '.idempotency_key = "pk_4" | .payment_method.card_token = "tok_flaky"' <<< "$pay")
req POST /api/v1/payments/process "$flaky"
expect_error "flaky gateway, first call" 503 gateway_unavailable
req POST /api/v1/payments/process "$flaky"
expect_error "flaky gateway, second call" 503 gateway_unavailable
req POST /api/v1/payments/process "$flaky"
expect "flaky gateway, third call charges" 200 '.status == "COMPLETED"'
req POST /api/v1/payments/process "$(jq -c 'del(.idempotency_key)' <<< "$pay")"
expect_error "payment without idempotency_key" 422 invalid_field idempotency_key
req POST /api/v1/payments/process "$(jq -c '.amount = "12" | .idempotency_key = "pk_5"' <<< "$pay")"
expect_error "payment with a string amount" 422 invalid_field amount
req POST /api/v1/payments/process "$(jq -c '.amount = -1 | .idempotency_key = "pk_6"' <<< "$pay")"
expect_error "payment with a negative amount" 422 invalid_field amount
req POST /api/v1/payments/process "$(jq -c 'del(.payment_method.card_token) | .idempotency_key = "pk_7"' <<< "$pay")"
expect_error "payment without card_token" 422 invalid_field card_token
req POST /api/v1/payments/process '{"order_id":'
expect_error "payment malformed JSON" 400 invalid_json

# ---- the server survived all of it, and keep-alive works -----------------
CO_USER=u_api
req GET /api/v1/carts/c_api
expect "still serving" 200
n=$(curl -s -o /dev/null -o /dev/null -w '%{num_connects}\n' \
    "$CO_URL/api/v1/nothing" "$CO_URL/api/v1/carts/c_api" | awk '{ s += $1 } END { print s }')
[ "$n" = 1 ] && pass || bad "an error answer closed the connection ($n connects for 2 requests)"
co_finish

#!/usr/bin/env bash
# tests/checkout_http/edges.sh serve|distributed: the REST front's edges found
# by the outside attack (docs/checkout-api.md, Conventions): numbers JSON
# allows but the service cannot hold, the length of X-User-Id, path segments
# decoded exactly once, and HEAD.
. "$(dirname "$0")/lib.sh"
CO_MODE=${1:-serve}
co_start "$CO_MODE" "$CO_TMP/data"
CO_USER=u_edges

# ---- numbers out of range: well-formed JSON, an invalid field -> 422 -------
for q in 1e400 -1e999 123456789012345678901234567890 -99999999999999999999; do
    req POST /api/v1/carts/c_num/items "{\"product_id\":\"p_widget\",\"quantity\":$q}"
    expect_error "quantity $q" 422 invalid_field quantity
done
co_add_item c_put p_widget 1
req PUT "/api/v1/carts/c_put/items/$ITEM" '{"quantity":1e400}'
expect_error "PUT quantity 1e400" 422 invalid_field quantity
req GET /api/v1/carts/c_put
expect "its quantity is unchanged" 200 '.items[0].quantity == 1'
req GET /api/v1/carts/c_num
expect_error "none of them created the cart" 404 cart_not_found
# Several of them: the first one is named.
req POST /api/v1/carts/c_num/items '{"product_id":"p_widget","quantity":1e400,"x":[1e999,2e999]}'
expect_error "three out of range, the first named" 422 invalid_field quantity
# Out of range and malformed after it: malformed wins (400).
req POST /api/v1/carts/c_num/items '{"product_id":"p_widget","quantity":1e400,'
expect_error "out of range, then malformed" 400 invalid_json
req POST /api/v1/carts/c_num/items '1e400'
expect_error "a bare number out of range is not an object" 400 invalid_json
co_add_item c_nest p_widget 1
req POST /api/v1/orders/checkout "$(co_checkout_body c_nest tok_ok | jq -c '.shipping_address.zip = 7' |
    sed 's/"zip":7/"zip":1e400/')" -H 'Idempotency-Key: k_nest'
expect_error "a nested field out of range is named with its path" 422 invalid_field shipping_address.zip
pay='{"order_id":"o_e","amount":1e400,"payment_method":{"type":"credit_card","card_token":"tok_ok"},"idempotency_key":"pk_e"}'
req POST /api/v1/payments/process "$pay"
expect_error "payment amount 1e400" 422 invalid_field amount
req POST /api/v1/payments/process "${pay/1e400/99999999999999999999999}"
expect_error "payment amount, 23 digits" 422 invalid_field amount
req GET /api/v1/ledger
expect "no charge for either" 200 '[.charges[] | select(.idempotency_key == "api_pk_e")] == []'

# ---- X-User-Id: 1 to 128 bytes ---------------------------------------------
u128=$(head -c 128 /dev/zero | tr '\0' u)
CO_USER=$u128 req POST /api/v1/carts/c_u128/items '{"product_id":"p_widget","quantity":1}'
expect "128-byte X-User-Id" 201 '.cart_id == "c_u128"'
CO_USER=$u128 req GET /api/v1/carts/c_u128
expect "its cart" 200 ".user_id == \"$u128\""
CO_USER=${u128}u req POST /api/v1/carts/c_u129/items '{"product_id":"p_widget","quantity":1}'
expect_error "129-byte X-User-Id" 400 invalid_user_id
CO_USER=$(head -c 6000 /dev/zero | tr '\0' u) req GET /api/v1/carts/c_u128
expect_error "6000-byte X-User-Id" 400 invalid_user_id
CO_USER=$u128 req GET /api/v1/carts/c_u129
expect_error "nothing was written for the 129-byte one" 404 cart_not_found
req GET "/api/v1/orders?user_id=${u128}u"
expect_error "history for a 129-byte user_id" 422 invalid_parameter user_id
req GET "/api/v1/orders?user_id=$u128"
expect "history for a 128-byte user_id" 200 '.pagination.total == 0'

# ---- path segments are percent-decoded exactly once ------------------------
req POST '/api/v1/carts/c%2541/items' '{"product_id":"p_widget","quantity":1}'
expect "cart id c%2541 is c%41" 201 '.cart_id == "c%41"'
req GET '/api/v1/carts/c%2541'
expect "GET of it" 200 '.cart_id == "c%41"'
req GET '/api/v1/carts/cA'
expect_error "it is not cart cA" 404 cart_not_found
req GET '/api/v1/carts/c%41'
expect_error "nor c%41 decoded (cA)" 404 cart_not_found
req POST '/api/v1/carts/c+1/items' '{"product_id":"p_widget","quantity":1}'
expect "a + in a path is a +" 201 '.cart_id == "c+1"'
req GET '/api/v1/carts/c%2B1'
expect "%2B is the same +" 200 '.cart_id == "c+1"'
req GET '/api/v1/orders/o%25zz'
expect_error "order o%zz: unknown, not malformed" 404 order_not_found

# ---- HEAD: GET without the body ---------------------------------------------
# head PATH: HEAD with curl -I; ST = status, HDRS = the headers, BODYLEN =
# bytes after the headers.
head_req() {
    ST=$(curl -sS -m 30 -I -o "$CO_TMP/head" -w '%{http_code}' \
        -H "X-User-Id: u_edges" "$CO_URL$1" 2> "$CO_TMP/curl.err") || ST=000
    HDRS=$(tr -d '\r' < "$CO_TMP/head")
}
clen() { grep -i '^content-length:' <<< "$1" | head -n 1 | tr -dc 0-9; }
get_len() { # the GET body's length and headers of PATH
    curl -sS -m 30 -D "$CO_TMP/gh" -o "$CO_TMP/gb" -H "X-User-Id: u_edges" "$CO_URL$1"
    GLEN=$(stat -c %s "$CO_TMP/gb")
}
for p in /health /api/v1/carts/c%2541 /api/v1/products "/api/v1/orders?user_id=u_edges"; do
    head_req "$p"
    get_len "$p"
    [ "$ST" = 200 ] && pass || bad "HEAD $p: status $ST"
    [ "$(clen "$HDRS")" = "$GLEN" ] && pass ||
        bad "HEAD $p: Content-Length $(clen "$HDRS"), the GET body has $GLEN bytes"
    grep -qi '^content-type: application/json' <<< "$HDRS" && pass || bad "HEAD $p: no Content-Type"
done
# No body may follow a HEAD answer: the next request on the same
# connection must read a clean answer.
out=$(curl -sS -m 30 -o /dev/null -w '%{http_code} ' -I "$CO_URL/health" \
    --next -o /dev/null -w '%{http_code}' "$CO_URL/health" 2>&1)
[ "$out" = "200 200" ] && pass || bad "HEAD then GET on one connection: $out"
head_req /api/v1/carts/c_nobody
[ "$ST" = 404 ] && pass || bad "HEAD of an unknown cart: $ST"
head_req /api/v1/nothing
[ "$ST" = 404 ] && pass || bad "HEAD of an unknown path: $ST"
head_req /api/v1/orders/checkout
[ "$ST" = 405 ] && grep -qi '^allow: POST$' <<< "$HDRS" && pass ||
    bad "HEAD of a POST-only path: $ST, $HDRS"
req POST /health
expect_error "POST /health" 405 method_not_allowed
curl -sS -m 30 -D "$CO_TMP/h405" -o /dev/null -X DELETE "$CO_URL/health"
grep -qi '^allow: GET, HEAD' "$CO_TMP/h405" && pass || bad "Allow of /health: $(cat "$CO_TMP/h405")"
co_finish

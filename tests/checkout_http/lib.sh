# tests/checkout/lib.sh: helpers shared by the checkout tests (sourced, bash).
#
# An independent HTTP client of saga-checkout, written from the seed's Part 6
# and issue 8 (not from the service code). It starts and stops its own
# servers on free loopback ports in a temporary directory and kills them on
# any exit. Needs: curl, jq, sqlite3; SAGA_CHECKOUT = the saga-checkout binary.
#
#   co_start_serve DIR              all seven services in one process
#   co_start_distributed DIR        one process per service (TCP transport)
#   (modes serve-pg and distributed-pg: the same with --store $SAGA_PG_URL,
#   every service in its own schema of that PostgreSQL database; the
#   tables are read with psql)
#   req METHOD PATH [BODY|@FILE] [curl args...]   sets ST (status) and BODY
#   expect NAME STATUS [JQ]         ST == STATUS and JQ true on BODY
#   expect_error NAME STATUS [CODE] [FIELD]       plus the error body shape
#   co_finish                       prints the tally; exits 1 on any failure
set -uo pipefail

CO_BIN=${SAGA_CHECKOUT:?set SAGA_CHECKOUT to the saga-checkout binary}
CO_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CO_TMP=$(mktemp -d "${TMPDIR:-/tmp}/co-test.XXXXXX")
CO_URL=
CO_MODE=
CO_PASS=0
CO_FAIL=0
declare -A CO_PID=()      # service name -> pid of the process we started
declare -A CO_PORT=()     # service name -> its TCP port (distributed mode)

co_cleanup() {
    local rc=$? n
    for n in "${!CO_PID[@]}"; do
        kill -KILL "${CO_PID[$n]}" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "$rc" -eq 0 ] && [ "${CO_KEEP:-0}" != 1 ]; then
        rm -rf "$CO_TMP"
    else
        echo "(files kept in $CO_TMP)" >&2
    fi
    exit "$rc"
}
trap co_cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }
pass() { CO_PASS=$((CO_PASS + 1)); }
bad() {
    CO_FAIL=$((CO_FAIL + 1))
    log "FAIL[$CO_MODE]: $*"
}
# Stops at once: the test cannot go on (a server did not start...).
die() {
    log "FATAL[$CO_MODE]: $*"
    exit 1
}
co_finish() {
    log "${0##*/} [$CO_MODE]: $CO_PASS checks passed, $CO_FAIL failed"
    [ "$CO_FAIL" -eq 0 ] || exit 1
}

# A port nobody listens on now. Collisions are retried by co_start_*.
co_free_port() {
    local p
    while :; do
        # Below the ephemeral range (32768-60999): a port that another
        # test's outgoing connection holds cannot be bound, and nothing
        # listening there would show it.
        p=$((20000 + RANDOM % 12000))
        (exec 3<> "/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# The catalogue every test starts with (the format of issue 8's --catalog).
# p_fragile is the product whose pick list the warehouse refuses
# (the flag is named in docs/checkout-api.md); p_rare has one unit.
co_catalog() {
    cat > "$CO_TMP/catalog.json" <<'EOF'
[
 {"product_id": "p_widget",  "name": "Widget",  "price": 10.00, "stock": 100000},
 {"product_id": "p_gadget",  "name": "Gadget",  "price": 25.50, "stock": 100000},
 {"product_id": "p_rare",    "name": "Rare",    "price": 99.99, "stock": 1},
 {"product_id": "p_fragile", "name": "Fragile", "price": 7.25,  "stock": 1000,
  "fail_fulfillment": true}
]
EOF
    echo "$CO_TMP/catalog.json"
}

# co_wait_line FILE PATTERN PID [OFFSET]: waits (bounded) for PATTERN in
# FILE after byte OFFSET while PID lives.
co_wait_line() {
    local i
    for i in $(seq 1 300); do
        tail -c +"$((${4:-0} + 1))" "$1" 2>/dev/null | grep -q "$2" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# co_start_serve DIR [PORT]: starts `saga-checkout serve` on DIR (kept
# across restarts) and PORT (default: a free one), sets CO_URL. The catalogue
# is passed on every start: loading it again must not reset stock.
co_start_serve() {
    local dir=$1 want=${2:-} try port off log=$1/serve.log
    mkdir -p "$dir"
    for try in 1 2 3 4 5; do
        port=${want:-$(co_free_port)}
        off=$(stat -c %s "$log" 2>/dev/null || echo 0)
        "$CO_BIN" serve --data "$dir" --listen "127.0.0.1:$port" \
            --catalog "$CO_CATALOG" ${CO_STORE:+--store "$CO_STORE"} >> "$log" 2>&1 &
        CO_PID[serve]=$!
        if co_wait_line "$log" "listening on http://127.0.0.1:$port" "${CO_PID[serve]}" "$off"; then
            CO_URL=http://127.0.0.1:$port
            return 0
        fi
        co_stop serve KILL
        grep -qi 'in use' "$log" || break
        want=
    done
    tail -n 20 "$log" >&2
    die "saga-checkout serve did not start (log: $log)"
}

# co_start_distributed DIR: one process per service over TCP
# (`saga-checkout service NAME --data DIR --config FILE`), with a config in
# the documented format on free ports; the order process serves the API.
CO_SERVICES=(cart inventory payment shipping warehouse notification order)
co_start_distributed() {
    local dir=$1 n i sep eps=(orchestrator order cart inventory payment shipping warehouse notification)
    mkdir -p "$dir"
    if [ ! -f "$dir/config.json" ]; then
        CO_PORT[http]=$(co_free_port)
        {
            printf '{"http": "127.0.0.1:%s", "catalog": "%s", ' \
                "${CO_PORT[http]}" "$CO_CATALOG"
            [ -z "${CO_STORE:-}" ] || printf '"store": "%s", ' "$CO_STORE"
            printf '"endpoints": {'
            sep=
            for n in "${eps[@]}"; do
                CO_PORT[$n]=$(co_free_port)
                printf '%s"%s": "127.0.0.1:%s"' "$sep" "$n" "${CO_PORT[$n]}"
                sep=", "
            done
            printf '}}\n'
        } > "$dir/config.json"
    fi
    for n in "${CO_SERVICES[@]}"; do
        [ "$n" = order ] || co_start_service "$n"
    done
    co_start_service order
}

# co_start_service NAME: starts one service process on CO_DATA; for
# order, waits until it serves HTTP and sets CO_URL.
co_start_service() {
    local n=$1 log=$CO_DATA/$1.log off
    off=$(stat -c %s "$log" 2>/dev/null || echo 0)
    "$CO_BIN" service "$n" --data "$CO_DATA" --config "$CO_DATA/config.json" >> "$log" 2>&1 &
    CO_PID[$n]=$!
    if [ "$n" != order ]; then
        # The API in the order process reads what the other services wrote
        # at their start (the cart's catalogue): wait until each is up.
        co_wait_line "$log" "service $n running" "${CO_PID[$n]}" "$off" || {
            tail -n 20 "$log" >&2
            die "saga-checkout service $n did not start (log: $log)"
        }
        return 0
    fi
    co_wait_line "$log" "listening on http://" "${CO_PID[order]}" "$off" || {
        tail -n 20 "$log" >&2
        die "saga-checkout service order did not start (log: $log)"
    }
    CO_URL=$(tail -c +"$((off + 1))" "$log" | grep -o 'listening on http://[0-9.:]*' |
        head -n 1 | cut -d' ' -f3)
}

co_stop() { # co_stop NAME [SIGNAL]: signals one process we started and reaps it
    local pid=${CO_PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill "-${2:-TERM}" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "CO_PID[$1]"
}

# req METHOD PATH [BODY] [curl args...]: one request; ST = status, BODY = body.
# BODY may be @file, or "" for none. Every request carries X-User-Id:
# $CO_USER (default u1; CO_USER=- sends none).
req() {
    local m=$1 p=$2 data=() user=()
    shift 2
    if [ $# -gt 0 ]; then
        [ -n "$1" ] && data=(--data-binary "$1")
        shift
    fi
    [ "${CO_USER:-u1}" = - ] || user=(-H "X-User-Id: ${CO_USER:-u1}")
    ST=$(curl -sS -m 30 -o "$CO_TMP/body" -w '%{http_code}' -X "$m" \
        -H 'Content-Type: application/json' "${user[@]}" \
        "${data[@]}" "$@" "$CO_URL$p" 2> "$CO_TMP/curl.err") || ST=000
    BODY=$(< "$CO_TMP/body")
    : > "$CO_TMP/body"
}

# jqt JQ: true when the filter yields true on BODY.
jqt() { [ "$(jq -r "$1" <<< "$BODY" 2>/dev/null)" = true ]; }

expect() { # expect NAME STATUS [JQ]
    if [ "$ST" != "$2" ]; then
        bad "$1: status $ST, want $2; body: ${BODY:0:300}"
    elif [ $# -ge 3 ] && ! jqt "$3"; then
        bad "$1: body fails [$3]: ${BODY:0:300}"
    else
        pass
    fi
}

# expect_error NAME STATUS [CODE] [FIELD]: the error body is
# {"error": {"code": "...", "message": "..."}}, with CODE if given, and the
# field named (in the message, or in error.field) if FIELD is given.
expect_error() {
    local shape='(.error.code|type) == "string" and (.error.message|type) == "string"'
    [ -n "${3:-}" ] && shape="$shape and .error.code == \"$3\""
    [ -n "${4:-}" ] && shape="$shape and ((.error.message|contains(\"$4\")) or .error.field == \"$4\")"
    expect "$1" "$2" "$shape"
}

# co_add_item CART PRODUCT QTY: adds an item; ITEM = its cart_item_id.
co_add_item() {
    req POST "/api/v1/carts/$1/items" "{\"product_id\":\"$2\",\"quantity\":$3}"
    [ "$ST" = 201 ] || die "adding $2 to $1: $ST $BODY"
    ITEM=$(jq -r .cart_item_id <<< "$BODY")
}

# co_checkout_body CART TOKEN: a checkout request in the seed's shape.
co_checkout_body() {
    printf '{"cart_id":"%s","shipping_address":{"street":"123 Main St","city":"San Francisco","state":"CA","zip":"94102","country":"USA"},"payment_method":{"type":"credit_card","card_token":"%s"}}' "$1" "$2"
}

# co_checkout CART TOKEN KEY [curl args...]: POSTs a checkout; sets ST,
# BODY and OID.
co_checkout() {
    req POST /api/v1/orders/checkout "$(co_checkout_body "$1" "$2")" \
        -H "Idempotency-Key: $3" "${@:4}"
    OID=$(jq -r '.order_id // empty' <<< "$BODY" 2>/dev/null)
}

# co_wait_final ORDER [SECONDS]: polls GET /orders/ORDER until COMPLETED or
# CANCELLED (bounded; the bound is not an assertion about speed). Leaves
# the order in BODY; returns 1 if it never ended.
co_wait_final() {
    local end=$((SECONDS + ${2:-90}))
    while [ $SECONDS -lt $end ]; do
        req GET "/api/v1/orders/$1"
        jqt '.status == "COMPLETED" or .status == "CANCELLED"' && return 0
        sleep 0.2
    done
    return 1
}

# co_sql DB SQL: reads a service's SQLite file (read-only), or with psql
# the service's PostgreSQL schema when DB is pg:SCHEMA (co_db).
co_sql() {
    case $1 in
        pg:*) psql "${CO_PG_URL:?}" -X -q -A -t -F '|' -v ON_ERROR_STOP=1 \
                -c "SET search_path TO ${1#pg:}" -c "$2" ;;
        *) sqlite3 -readonly -batch -noheader "$1" "$2" ;;
    esac
}

# co_burst_add CFG TAG KEY USER BODYFILE [PATH]: appends one POST (a
# checkout by default; KEY "-" sends no Idempotency-Key) to a curl config
# for co_burst; its answer goes to $CO_TMP/r_TAG.json.
co_burst_add() {
    {
        echo "url = \"$CO_URL${6:-/api/v1/orders/checkout}\""
        echo 'header = "Content-Type: application/json"'
        [ "$3" = - ] || echo "header = \"Idempotency-Key: $3\""
        echo "header = \"X-User-Id: $4\""
        echo "data-binary = \"@$5\""
        echo "output = \"$CO_TMP/r_$2.json\""
        echo "write-out = \"$2 %{http_code}\\n\""
        echo "max-time = 60"
        echo next
    } >> "$1"
}

# co_burst CFG OUT: sends every request of CFG at once (one curl process,
# one connection each, libcurl multi); OUT gets "TAG STATUS" per request
# (status 000: no answer, e.g. the server was killed).
co_burst() {
    sed '$d' "$1" > "$1.k"     # no "next" after the last request
    curl -s -Z --parallel-max 300 --parallel-immediate -K "$1.k" \
        > "$2" 2> "$1.err"
    return 0
}

# ---- the deployment ---------------------------------------------------------
# co_start MODE DIR: serve (one process) or distributed (one per service).
co_start() {
    CO_MODE=$1
    CO_DATA=$2
    CO_CATALOG=${CO_CATALOG:-$(co_catalog)}
    case $1 in
        *-pg)
            # One database (tests/pg/with-pg.sh's), a schema per service
            # under a prefix of this run (schema=co_<pid>_cart, ...).
            CO_PG_URL=${SAGA_PG_URL:?the -pg modes run under tests/pg/with-pg.sh}
            CO_PG_PREFIX=co_$$
            case $CO_PG_URL in
                *\?*) CO_STORE="$CO_PG_URL&schema=$CO_PG_PREFIX" ;;
                *) CO_STORE="$CO_PG_URL?schema=$CO_PG_PREFIX" ;;
            esac
            command -v psql > /dev/null || die "psql is needed for the -pg modes"
            set -- "${1%-pg}" "$2" ;;
    esac
    case $1 in
        serve) co_start_serve "$2" ;;
        distributed) co_start_distributed "$2" ;;
        *) die "unknown mode $1" ;;
    esac
}

# co_revive NAME: starts again a process that co_stop stopped, on the same
# data (and, for serve, the same port).
co_revive() {
    if [ "$1" = serve ]; then
        co_start_serve "$CO_DATA" "${CO_URL##*:}"
    else
        co_start_service "$1"
    fi
}

# co_restart: stops everything cleanly (SIGTERM) and starts it again.
co_restart() {
    local n
    for n in "${!CO_PID[@]}"; do co_stop "$n" TERM; done
    if [ "$CO_MODE" = serve ]; then
        co_revive serve
    else
        co_start_distributed "$CO_DATA"
    fi
}

# co_db SERVICE: the service's SQLite file, or pg:SCHEMA on PostgreSQL.
co_db() {
    if [ -n "${CO_STORE:-}" ]; then
        echo "pg:${CO_PG_PREFIX}_${1//-/_}"
    else
        echo "$CO_DATA/$1.db"
    fi
}

# co_saga_store: the orchestrator's store, as sagactl names it.
co_saga_store() {
    if [ -n "${CO_STORE:-}" ]; then
        case $CO_PG_URL in
            *\?*) echo "$CO_PG_URL&schema=${CO_PG_PREFIX}_order_saga" ;;
            *) echo "$CO_PG_URL?schema=${CO_PG_PREFIX}_order_saga" ;;
        esac
    else
        echo "$CO_DATA/order-saga.db"
    fi
}

# ---- reading the services' SQLite files (the seed's Part 5 tables) ----------
# Money is kept in integer cents in every table (docs/checkout-api.md).
# co_stock PRODUCT: "available reserved sold total" from the inventory table.
co_stock() {
    co_sql "$(co_db inventory)" "SELECT available_quantity || ' ' || reserved_quantity
        || ' ' || sold_quantity || ' ' || total_quantity FROM inventory
        WHERE product_id = '$1'"
}
# The simulated bank's record (payment.db gateway_charges): one row per
# gateway idempotency key; the saga's keys start with pay_, the internal
# endpoint's with api_.
CO_SAGA_KEYS="key LIKE 'pay\_%' ESCAPE '\'"
# co_charged ORDER: cents that stand charged at the bank for ORDER.
co_charged() {
    co_sql "$(co_db payment)" "SELECT COALESCE(SUM(amount - refunded), 0) FROM gateway_charges
        WHERE order_id = '$1' AND state IN ('CHARGED', 'REFUNDED') AND $CO_SAGA_KEYS"
}
# co_charges ORDER: how many times the bank charged the card for ORDER.
co_charges() {
    co_sql "$(co_db payment)" "SELECT COUNT(*) FROM gateway_charges
        WHERE order_id = '$1' AND state IN ('CHARGED', 'REFUNDED') AND $CO_SAGA_KEYS"
}
# co_refunds ORDER: how many charges of ORDER were refunded.
co_refunds() {
    co_sql "$(co_db payment)" "SELECT COUNT(*) FROM gateway_charges
        WHERE order_id = '$1' AND refunded > 0 AND $CO_SAGA_KEYS"
}

# co_wait_all_final SECONDS: waits until no order is pending (bounded).
co_wait_all_final() {
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        [ "$(co_sql "$(co_db order)" "SELECT COUNT(*) FROM orders
            WHERE status NOT IN ('COMPLETED', 'CANCELLED')")" = 0 ] && return 0
        sleep 0.3
    done
    return 1
}

# co_wait_emails ORDER...: the notification service wrote an email for each
# (in its emails table and in DIR/notifications.log).
co_wait_emails() {
    local o i
    for o in "$@"; do
        for i in $(seq 1 100); do
            [ "$(co_sql "$(co_db notification)" "SELECT COUNT(*) FROM emails
                WHERE order_id = '$o'")" -ge 1 ] && grep -q "$o" "$CO_DATA/notifications.log" && break
            sleep 0.1
        done
        [ "$i" -lt 100 ] || return 1
    done
}

# co_invariants: once every saga has ended, across the services' files and
# the operator endpoints:
#  - every order is COMPLETED or CANCELLED;
#  - a COMPLETED order was charged exactly once, and its net charge at the
#    bank is its total; a CANCELLED order has no net charge (no late
#    gateway answer left a charge standing); no charge for an unknown order;
#  - the payments table agrees: one COMPLETED payment of the total per
#    COMPLETED order, none standing for a CANCELLED one;
#  - money: charges - refunds = sum of totals of COMPLETED orders, in the
#    SQLite file and in GET /api/v1/ledger;
#  - stock per product: nothing reserved, sold = units in COMPLETED orders,
#    available + sold = total = the catalogue's stock, and
#    GET /api/v1/inventory says the same.
co_invariants() {
    local t=$CO_TMP/inv errs net sum
    mkdir -p "$t"
    co_wait_all_final 240 || bad "orders still pending: $(co_sql "$(co_db order)" \
        "SELECT status, COUNT(*) FROM orders GROUP BY status")"
    co_sql "$(co_db order)" "SELECT order_id, status, total_amount FROM orders" |
        tr '|' '\t' > "$t/orders"
    co_sql "$(co_db payment)" "SELECT order_id, SUM(amount - refunded), COUNT(*)
        FROM gateway_charges WHERE state IN ('CHARGED', 'REFUNDED') AND $CO_SAGA_KEYS
        GROUP BY order_id" | tr '|' '\t' > "$t/bank"
    co_sql "$(co_db payment)" "SELECT order_id,
        SUM(CASE WHEN status IN ('COMPLETED', 'REFUNDED') THEN amount - refunded_amount ELSE 0 END),
        SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) FROM payments
        GROUP BY order_id" | tr '|' '\t' > "$t/payments"
    errs=$(awk -F'\t' 'FILENAME ~ /orders/ { st[$1] = $2; tot[$1] = $3; next }
        FILENAME ~ /bank/ { net[$1] = $2; n[$1] = $3; next }
        { pnet[$1] = $2; pok[$1] = $3 }
        END {
            for (id in st) {
                if (st[id] == "COMPLETED" && (n[id] != 1 || net[id] != tot[id]))
                    printf "COMPLETED %s: %d charges, net %d cents, total %d\n", id, n[id], net[id], tot[id]
                if (st[id] == "COMPLETED" && (pok[id] != 1 || pnet[id] != tot[id]))
                    printf "COMPLETED %s: payments table has %d COMPLETED, net %d, total %d\n", id, pok[id], pnet[id], tot[id]
                if (st[id] == "CANCELLED" && (net[id] != 0 || pnet[id] != 0 || pok[id] > 0))
                    printf "CANCELLED %s: %d cents stand charged (payments table: %d)\n", id, net[id], pnet[id]
            }
            for (id in net) if (!(id in st)) printf "charge of %d cents for unknown order %s\n", net[id], id
        }' "$t/orders" "$t/bank" "$t/payments" | sort | head -n 20)
    [ -z "$errs" ] && pass || bad "payments vs orders:"$'\n'"$errs"
    sum=$(awk -F'\t' '$2 == "COMPLETED" { s += $3 } END { print s + 0 }' "$t/orders")
    net=$(awk -F'\t' '{ s += $2 } END { print s + 0 }' "$t/bank")
    [ "$net" = "$sum" ] && pass ||
        bad "money: charges - refunds = $net cents, COMPLETED orders total $sum cents"
    req GET /api/v1/ledger
    net=$(jq '[.charges[] | select(.idempotency_key | startswith("pay_")) |
        select(.state == "CHARGED" or .state == "REFUNDED") | (.amount - .refunded) * 100]
        | add // 0 | round' <<< "$BODY")
    [ "$ST" = 200 ] && [ "$net" = "$sum" ] && pass ||
        bad "GET /api/v1/ledger: $ST, saga net $net cents, COMPLETED orders total $sum cents"

    co_sql "$(co_db order)" "SELECT i.product_id, SUM(i.quantity) FROM order_items i
        JOIN orders o ON o.order_id = i.order_id WHERE o.status = 'COMPLETED'
        GROUP BY i.product_id" | tr '|' '\t' > "$t/sold"
    jq -r '.[] | [.product_id, .stock] | @tsv' "$CO_CATALOG" > "$t/cat"
    co_sql "$(co_db inventory)" "SELECT product_id, available_quantity, reserved_quantity,
        sold_quantity, total_quantity FROM inventory ORDER BY product_id" |
        tr '|' '\t' > "$t/stock"
    errs=$(awk -F'\t' 'FILENAME ~ /sold/ { sold[$1] = $2; next }
        FILENAME ~ /cat/ { cat[$1] = $2; next }
        { s = sold[$1] + 0
          if ($3 != 0) printf "%s: %d still reserved\n", $1, $3
          if ($4 != s) printf "%s: sold %d, COMPLETED orders hold %d\n", $1, $4, s
          if ($1 in cat && $5 != cat[$1]) printf "%s: total %d, catalogue %d\n", $1, $5, cat[$1]
          if ($2 + $3 + $4 != $5) printf "%s: available %d + reserved %d + sold %d != total %d\n", $1, $2, $3, $4, $5 }' \
        "$t/sold" "$t/cat" "$t/stock")
    [ -z "$errs" ] && pass || bad "stock:"$'\n'"$errs"
    req GET /api/v1/inventory
    [ "$(jq -r '.inventory | sort_by(.product_id)[] | [.product_id, .available_quantity,
        .reserved_quantity, .sold_quantity, .total_quantity] | @tsv' <<< "$BODY")" = \
        "$(cat "$t/stock")" ] && pass || bad "GET /api/v1/inventory differs from inventory.db: $BODY"
}

# co_get_many OUT PATH...: GETs every PATH with one curl (8 connections);
# OUT gets one line per answer: the path's index (1-based), its status and
# its compact JSON body, tab-separated. One process for many requests: on
# a loaded machine each process start costs more than a request.
co_get_many() {
    local out=$1 i=0 p cfg=$CO_TMP/get.cfg
    shift
    : > "$cfg"
    for p in "$@"; do
        i=$((i + 1))
        printf 'url = "%s%s"\nheader = "X-User-Id: %s"\noutput = "%s/g_%d.json"\nwrite-out = "%d %%{http_code}\\n"\nnext\n' \
            "$CO_URL" "$p" "${CO_USER:-u1}" "$CO_TMP" "$i" "$i" >> "$cfg"
    done
    sed -i '$d' "$cfg"
    curl -s -Z --parallel-max 8 -K "$cfg" 2> /dev/null | sort -n > "$cfg.st"
    for p in $(seq -f "$CO_TMP/g_%g.json" 1 $i); do
        [ -s "$p" ] || echo '{}' > "$p"
    done
    jq -c . $(seq -f "$CO_TMP/g_%g.json" 1 $i) > "$cfg.js"
    paste "$cfg.st" "$cfg.js" | sed 's/ /\t/' > "$out"
    rm -f "$CO_TMP"/g_*.json
}

#!/usr/bin/env bash
# bench/checkout/run.sh SAGA_CHECKOUT BENCH_H2O_202 [options]: the checkout
# benchmark (bench/run checkout builds both programs and calls this).
#
#   -n N   checkouts per wrk thread in the full-speed phase (default 15000)
#   -s S   seconds of the half-rate phase (default 10)
#   -c C   connections (default 64), -t T wrk threads (default 2)
#   -d DIR data directory (default: a new temporary one, removed afterwards)
#   -r R   the latency phase at R checkouts/s instead of half the accepted
#          rate (to compare the p99 of two builds at the same rate)
#
# 1. `saga-checkout serve` on a fresh DIR, catalogue of one product with
#    ample stock; every checkout has its own cart, filled beforehand by wrk
#    (not timed).
# 2. Full speed: wrk, C connections, each thread N checkouts (tok_ok), a
#    unique Idempotency-Key per request. Accepted checkouts/s = 202s / time
#    from the first send to the last 202. Then wait until every saga ended
#    (the order service's SQLite file, read with sqlite3): completed sagas/s
#    = COMPLETED orders / time from the first send to the last end.
# 3. Half rate: open-loop pacing in the wrk script (see checkout.lua) at half
#    the accepted rate for S seconds; p50/p99 of the 202 from wrk's latency
#    histogram (send to answer), and the count of sends that went out late.
# 4. The same two wrk runs against bench_h2o_202 (plain libh2o, answers 202,
#    no libsaga): the HTTP ceiling, and the ratios.
# The last line is checkout_per_s=<accepted checkouts/s at full speed>.
set -euo pipefail
CO=$1
H2O=$2
shift 2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LUA=$HERE/checkout.lua
N=15000 S=10 C=64 T=2 DIR= R=
while getopts n:s:c:t:d:r: o; do
    case $o in
        r) R=$OPTARG ;; n) N=$OPTARG ;; s) S=$OPTARG ;; c) C=$OPTARG ;; t) T=$OPTARG ;;
        d) DIR=$OPTARG ;; *) exit 2 ;;
    esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-checkout.XXXXXX")
[ -n "$DIR" ] || DIR=$tmp/data
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

now() { date +%s.%N; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range
        (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return; }
    done
}
# start NAME CMD...: starts a server that prints "listening on URL"; sets URL.
start() {
    local name=$1 log=$tmp/$1.log i
    shift
    "$@" > "$log" 2>&1 &
    pids+=($!)
    for i in $(seq 1 300); do
        URL=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | cut -d' ' -f3 || true)
        [ -n "$URL" ] && return 0
        kill -0 "${pids[-1]}" 2> /dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    echo "bench checkout: $name did not start" >&2
    exit 1
}
# wrk_run MODE PREFIX COUNT [RATE_PER_THREAD]: prints the script's RESULT line.
wrk_run() {
    local secs=$((3600))
    wrk -t"$T" -c"$C" -d"$secs" --timeout 30s -s "$LUA" "$URL" -- "$@" \
        > "$tmp/wrk.out" 2> "$tmp/wrk.err" &
    local w=$!
    # wrk always runs for -d; the script stops each thread after COUNT, so
    # stop wrk (SIGINT prints the summary) once every thread is done.
    while kill -0 $w 2> /dev/null; do
        if [ "$(grep -c '^THREAD_DONE' "$tmp/wrk.err" 2> /dev/null)" -ge "$T" ]; then
            kill -INT $w
            break
        fi
        sleep 0.05
    done
    wait $w || true
    grep -v '^THREAD_DONE' "$tmp/wrk.err" | head -n 5 >&2 || true
    grep '^RESULT' "$tmp/wrk.out" || { cat "$tmp/wrk.out" >&2; exit 1; }
}
field() { sed -E "s/.* $1=([^ ]*).*/\1/" <<< "$2"; }
# pending: orders of the order service not yet COMPLETED or CANCELLED.
orders_db() { echo "$DIR/order.db"; }
count_status() {
    sqlite3 -readonly "$(orders_db)" "PRAGMA busy_timeout=5000;
        SELECT COUNT(*) FROM orders WHERE $1;" | tail -n 1
}
wait_sagas() { # wait_sagas T0: waits until no order is pending; prints the end time
    local end=$((SECONDS + 600))
    while [ "$(count_status "status NOT IN ('COMPLETED','CANCELLED')")" != 0 ]; do
        [ $SECONDS -lt $end ] || { echo "bench checkout: sagas did not end" >&2; exit 1; }
        sleep 0.05
    done
    now
}

cat > "$tmp/catalog.json" << 'EOF'
[{"product_id": "p_bench", "name": "Bench item", "price": 1.00, "stock": 1000000000}]
EOF
port=$(free_port)
start serve "$CO" serve --data "$DIR" --listen "127.0.0.1:$port" --catalog "$tmp/catalog.json"
echo "bench checkout: saga-checkout serve, wrk -t$T -c$C, $N checkouts per thread, half rate for ${S}s; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- full speed ---------------------------------------------------------
fill=$(wrk_run carts f $((N + C)))
echo "carts filled: $(field ok "$fill") at $(field per_s "$fill")/s (not part of the figures)"
t0=$(now)
full=$(wrk_run checkout f "$N")
acc=$(field per_s "$full")
t_end=$(wait_sagas)
done_n=$(count_status "status = 'COMPLETED'")
all_n=$(count_status "1")
sagas_per_s=$(awk -v n="$done_n" -v a="$t0" -v b="$t_end" 'BEGIN { printf "%.0f", n / (b - a) }')
echo "full speed: $(field ok "$full") accepted (202) in $(field secs "$full") s: $acc checkouts/s, p50 $(field p50_ms "$full") ms, p99 $(field p99_ms "$full") ms; other statuses $(field other "$full")"
echo "sagas: $done_n of $all_n COMPLETED, $sagas_per_s completed sagas/s (first send to last end)"
[ "$done_n" = "$all_n" ] || echo "WARNING: $((all_n - done_n)) sagas did not complete" >&2

# ---- half rate ------------------------------------------------------------
rate=$(awk -v a="${R:-0}" -v h="$acc" -v t="$T" 'BEGIN { if (a <= 0) a = h / 2; r = a / t; if (r < 1) r = 1; printf "%.1f", r }')
cnt=$(awk -v r="$rate" -v s="$S" 'BEGIN { printf "%d", r * s + 0.5 }')
[ "$cnt" -ge 1 ] || cnt=1
wrk_run carts h $((cnt + C)) > /dev/null
half=$(wrk_run checkout h "$cnt" "$rate")
wait_sagas > /dev/null
hrate=$(awk -v r="$rate" -v t="$T" 'BEGIN { printf "%.0f", r * t }')
echo "half rate: $hrate/s open loop for ${S}s: $(field ok "$half") accepted at $(field per_s "$half")/s, 202 p50 $(field p50_ms "$half") ms, p99 $(field p99_ms "$half") ms, max $(field max_ms "$half") ms; late sends $(field late "$half") (max $(field late_max_ms "$half") ms)"
kill -TERM "${pids[0]}"
wait "${pids[0]}" 2> /dev/null || echo "WARNING: saga-checkout serve did not exit cleanly on SIGTERM" >&2

# ---- the HTTP ceiling: plain h2o, same script and load --------------------
start h2o "$H2O" "$(free_port)"
hfull=$(wrk_run checkout f "$N")
hhalf=$(wrk_run checkout h "$cnt" "$rate")
echo "h2o 202 (no libsaga): $(field per_s "$hfull") req/s full speed (p99 $(field p99_ms "$hfull") ms); at $hrate/s: p50 $(field p50_ms "$hhalf") ms, p99 $(field p99_ms "$hhalf") ms"
awk -v a="$acc" -v b="$(field per_s "$hfull")" -v p="$(field p99_ms "$half")" -v q="$(field p99_ms "$hhalf")" \
    'BEGIN { printf "ratios: checkout/h2o throughput %.3f, p99 at half rate checkout/h2o %.1f\n", a / b, p / (q > 0 ? q : 1e-3) }'
echo "checkout_per_s=$acc"

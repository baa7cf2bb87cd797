#!/usr/bin/env bash
# bench/checkout/drain.sh: where the sagas of a burst wait, per thread of
# `saga-checkout serve`, from the kernel's schedstat (load-independent: a
# thread's wall time splits into on-CPU, waiting for a CPU (runnable, the
# machine's load) and asleep (the thread itself waits: nothing to do, or a
# lock, an fsync)).
#
#   drain.sh [-n N] [-c C] BINARY [BINARY2 ...]
#
# For each binary (alternated, one fresh DIR each): fill N carts, send N
# checkouts (wrk -t1 -cC), then wait until every saga ended. Two phases:
# "burst" (first send to the last 202) and "drain" (last 202 to the last
# saga end). Per phase and thread: ms of CPU per checkout, and the shares of
# the phase's wall time on CPU / runnable / asleep. A thread that sleeps
# while sagas are pending is waiting for something; a thread on CPU or
# runnable all the drain long is the one the drain is made of.
set -euo pipefail
N=3000 C=32
while getopts n:c: o; do
    case $o in
        n) N=$OPTARG ;; c) C=$OPTARG ;; *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: drain.sh [-n N] [-c C] BINARY..." >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LUA=$HERE/checkout.lua
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-drain.XXXXXX")
pid=
cleanup() {
    [ -z "$pid" ] || kill -KILL "$pid" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return; }
    done
}
now_ns() { date +%s%N; }
# snap PID: "tid oncpu_ns runq_ns" per thread
snap() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(cut -d' ' -f1-2 "$t/schedstat" 2> /dev/null || echo '0 0')"
    done
}
cat > "$tmp/catalog.json" << 'EOF'
[{"product_id": "p_bench", "name": "Bench item", "price": 1.00, "stock": 1000000000}]
EOF
q="SELECT COUNT(*) FROM orders WHERE status NOT IN ('COMPLETED','CANCELLED');"
pending() { sqlite3 -readonly "$1/order.db" "PRAGMA busy_timeout=5000; $q" | tail -n 1; }
# report NAME FILE_A FILE_B T_A T_B COUNT
report() {
    awk -v name="$1" -v ta="$4" -v tb="$5" -v n="$6" -v main="$pid" '
        FNR == NR { c[$1] = $2; w[$1] = $3; next }
        { dc = $2 - c[$1]; dw = $3 - w[$1]; wall = tb - ta;
          if (dc < wall / 200) next; # idle threads (< 0.5%)
          printf "  %-6s tid %-8s %s %6.3f ms CPU/checkout; wall: %5.1f%% on CPU, %5.1f%% runnable, %5.1f%% asleep\n",
              name, $1, ($1 == main ? "main  " : "worker"), dc / 1e6 / n,
              100 * dc / wall, 100 * dw / wall, 100 * (wall - dc - dw) / wall }' "$2" "$3"
}
echo "drain.sh: $N checkouts, wrk -t1 -c$C; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for bin in "$@"; do
    dir=$tmp/d$RANDOM
    port=$(free_port)
    "$bin" serve --data "$dir" --listen "127.0.0.1:$port" --catalog "$tmp/catalog.json" > "$tmp/serve.log" 2>&1 &
    pid=$!
    for i in $(seq 1 300); do
        grep -q 'listening on' "$tmp/serve.log" && break
        sleep 0.1
    done
    url=http://127.0.0.1:$port
    wrk -t1 -c"$C" -d3600 --timeout 30s -s "$LUA" "$url" -- carts d $((N + C)) > /dev/null 2> "$tmp/wrk.err" &
    w=$!
    until grep -q '^THREAD_DONE' "$tmp/wrk.err" 2> /dev/null; do sleep 0.05; done
    kill -INT $w; wait $w 2> /dev/null || true
    snap $pid > "$tmp/s0"; t0=$(now_ns)
    wrk -t1 -c"$C" -d3600 --timeout 30s -s "$LUA" "$url" -- checkout d "$N" > /dev/null 2> "$tmp/wrk.err" &
    w=$!
    until grep -q '^THREAD_DONE' "$tmp/wrk.err" 2> /dev/null; do sleep 0.02; done
    snap $pid > "$tmp/s1"; t1=$(now_ns)
    kill -INT $w; wait $w 2> /dev/null || true
    p1=$(pending "$dir")
    while [ "$(pending "$dir")" != 0 ]; do sleep 0.05; done
    snap $pid > "$tmp/s2"; t2=$(now_ns)
    echo "$bin: burst $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", (b-a)/1e9}') s ($N accepted), then $p1 sagas pending, drained in $(awk -v a=$t1 -v b=$t2 'BEGIN{printf "%.2f", (b-a)/1e9}') s"
    report burst "$tmp/s0" "$tmp/s1" "$t0" "$t1" "$N"
    report drain "$tmp/s1" "$tmp/s2" "$t1" "$t2" "$N"
    kill -TERM $pid; wait $pid 2> /dev/null || true
    pid=
    rm -rf "$dir"
done

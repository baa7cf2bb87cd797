#!/usr/bin/env bash
# bench/checkout/cpu.sh: CPU time of `saga-checkout serve` per checkout, for
# two builds alternated in one run (the steadiest figure on a shared
# machine: it counts the server's own user + system time, not the wall).
#
#   cpu.sh [-n N] [-r R] [-c C] BASE_BINARY NEW_BINARY
#
# Each round starts each binary on a fresh DIR, fills N carts (not timed),
# reads utime + stime of the server from /proc/PID/stat, sends N checkouts
# (tok_ok, wrk, C connections, 1 thread), waits until every saga is
# COMPLETED or CANCELLED and reads the CPU time again. Prints per round
# and build the ms of CPU per checkout (all threads, and the main thread
# alone: with serve's default two loops the main loop, HTTP front + engine
# + order participant, is the one that limits the rate), then the median
# of each and the ratios new/base. R rounds (default 3), alternating base
# and new.
set -euo pipefail
N=3000 R=3 C=32
while getopts n:r:c: o; do
    case $o in
        n) N=$OPTARG ;; r) R=$OPTARG ;; c) C=$OPTARG ;; *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { echo "usage: cpu.sh [-n N] [-r R] [-c C] BASE NEW" >&2; exit 2; }
BIN=("$1" "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LUA=$HERE/checkout.lua
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-cpu.XXXXXX")
pid=
cleanup() {
    [ -z "$pid" ] || kill -KILL "$pid" 2> /dev/null || true
    [ ! -f "$tmp/serve.pid" ] || kill -KILL "$(cat "$tmp/serve.pid")" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
main_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/$1/stat"; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return; }
    done
}
wrk_n() { # wrk_n URL MODE PREFIX COUNT
    wrk -t1 -c"$C" -d3600 --timeout 30s -s "$LUA" "$1" -- "$2" "$3" "$4" \
        > "$tmp/wrk.out" 2> "$tmp/wrk.err" &
    local w=$!
    while kill -0 $w 2> /dev/null; do
        if grep -q '^THREAD_DONE' "$tmp/wrk.err" 2> /dev/null; then
            kill -INT $w
            break
        fi
        sleep 0.05
    done
    # wrk sometimes hangs after SIGINT on a loaded machine (its summary is
    # not needed here: the figures come from the server's CPU time).
    local k
    for k in $(seq 1 100); do
        kill -0 $w 2> /dev/null || break
        sleep 0.1
    done
    kill -KILL $w 2> /dev/null || true
    wait $w || true
    grep '^RESULT' "$tmp/wrk.out" || true
}
cat > "$tmp/catalog.json" << 'EOF'
[{"product_id": "p_bench", "name": "Bench item", "price": 1.00, "stock": 1000000000}]
EOF
# one BIN: prints "ms_per_checkout completed total main_ms_per_checkout"
one() {
    local dir=$tmp/d$RANDOM port url i
    port=$(free_port)
    "$1" serve --data "$dir" --listen "127.0.0.1:$port" --catalog "$tmp/catalog.json" > "$tmp/serve.log" 2>&1 &
    pid=$!
    echo "$pid" > "$tmp/serve.pid" # for cleanup (this runs in a subshell)
    for i in $(seq 1 300); do
        grep -q 'listening on' "$tmp/serve.log" && break
        sleep 0.1
    done
    url=http://127.0.0.1:$port
    wrk_n "$url" carts c $((N + C)) > /dev/null
    local t0 m0 end q
    t0=$(cpu_ticks $pid)
    m0=$(main_ticks $pid)
    wrk_n "$url" checkout c "$N" > /dev/null
    end=$((SECONDS + 600))
    q="SELECT COUNT(*) FROM orders WHERE status NOT IN ('COMPLETED','CANCELLED');"
    while [ "$(sqlite3 -readonly "$dir/order.db" "PRAGMA busy_timeout=5000; $q" | tail -n 1)" != 0 ]; do
        [ $SECONDS -lt $end ] || { echo "cpu.sh: sagas did not end" >&2; exit 1; }
        sleep 0.05
    done
    local t1 m1 done_n all_n
    t1=$(cpu_ticks $pid)
    m1=$(main_ticks $pid)
    done_n=$(sqlite3 -readonly "$dir/order.db" "SELECT COUNT(*) FROM orders WHERE status = 'COMPLETED';")
    all_n=$(sqlite3 -readonly "$dir/order.db" "SELECT COUNT(*) FROM orders;")
    kill -TERM $pid
    wait $pid 2> /dev/null || true
    rm -f "$tmp/serve.pid"
    pid=
    rm -rf "$dir"
    awk -v a="$t0" -v b="$t1" -v n="$all_n" -v t="$tck" -v d="$done_n" -v m="$m0" -v k="$m1" \
        'BEGIN { printf "%.3f %d %d %.3f\n", (b - a) * 1000 / t / n, d, n, (k - m) * 1000 / t / n }'
}
echo "cpu.sh: $N checkouts per run, $R rounds, wrk -t1 -c$C; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
res=("" "")
mres=("" "")
for r in $(seq 1 "$R"); do
    for k in 0 1; do
        out=$(one "${BIN[$k]}")
        name=$([ $k = 0 ] && echo base || echo new)
        echo "round $r $name: $(cut -d' ' -f1 <<< "$out") ms CPU/checkout, main thread $(cut -d' ' -f4 <<< "$out") ($(cut -d' ' -f2 <<< "$out") of $(cut -d' ' -f3 <<< "$out") COMPLETED)"
        res[$k]="${res[$k]} $(cut -d' ' -f1 <<< "$out")"
        mres[$k]="${mres[$k]} $(cut -d' ' -f4 <<< "$out")"
    done
done
med() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
b=$(med "${res[0]}") n=$(med "${res[1]}")
awk -v b="$b" -v n="$n" 'BEGIN { printf "median ms CPU/checkout: base %.3f new %.3f; new/base %.3f\n", b, n, n / b }'
b=$(med "${mres[0]}") n=$(med "${mres[1]}")
awk -v b="$b" -v n="$n" 'BEGIN { printf "median ms CPU/checkout of the main thread: base %.3f new %.3f; new/base %.3f\n", b, n, n / b }'

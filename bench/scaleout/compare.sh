#!/usr/bin/env bash
# bench/scaleout/compare.sh NEW BASE [-n N] [-W "WINDOWS"] [-L "0 LEASE"] [-r R]
#
# The engine rows of bench/run scaleout for two builds of bench_scaleout
# (NEW: this tree, BASE: another commit's, see bench/run scaleout-vs) on
# one throwaway server, alternately, R rounds (default 2): for each window
# of -W and each lease of -L (0: no lease, one process; >0: the store with
# a lease, as the orchestrator rows), base then new, each on a fresh
# schema. Prints every run, then per row each side's best sagas/s and
# new/base. A same-server, same-script pair: the ratio is the figure, the
# absolute numbers depend on what else the machine runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
new=$1 base=$2
shift 2
N=20000 WINDOWS="1024" LEASES="0 10000" R=2
while getopts "n:W:L:r:" o; do
  case $o in
    n) N=$OPTARG ;;
    W) WINDOWS=$OPTARG ;;
    L) LEASES=$OPTARG ;;
    r) R=$OPTARG ;;
    *) echo "usage: compare.sh NEW BASE [-n N] [-W \"W..\"] [-L \"0 10000\"] [-r R]" >&2; exit 2 ;;
  esac
done
if [ -z "${SAGA_PG_URL:-}" ] || [ "${SCALEOUT_INNER:-}" != 1 ]; then
  export SCALEOUT_INNER=1
  exec bash "$ROOT/tests/pg/with-pg.sh" bash "$0" "$new" "$base" -n "$N" \
    -W "$WINDOWS" -L "$LEASES" -r "$R"
fi
out=$(mktemp -d /tmp/bench_scaleout_vs.XXXXXX)
trap 'rm -rf "$out"' EXIT
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1"; }
# CPU ticks of the server's processes (the postmaster's children), measured
# from outside so that both builds are measured the same way.
pm=$(psql "$SAGA_PG_URL" -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'" | xargs -I{} awk '{ print $4 }' /proc/{}/stat)
server_ticks() { # live children's utime + stime, and the postmaster's
  # cutime + cstime (the backends that ended)
  awk -v pm="$pm" '{ pid = $1; sub(/^.*\) /, "");
      if ($2 == pm) t += $12 + $13; if (pid == pm) t += $14 + $15 }
    END { print t + 0 }' < <(cat /proc/[0-9]*/stat 2>/dev/null)
}
hz=$(getconf CLK_TCK)
k=0
echo "scaleout-vs: n=$N windows: $WINDOWS leases: $LEASES rounds: $R (shared machine: compare the ratios)"
for r in $(seq 1 "$R"); do
  for w in $WINDOWS; do
    for l in $LEASES; do
      for side in base new; do
        bin=$base; [ "$side" = new ] && bin=$new
        k=$((k + 1))
        args=(engine -n "$N" -w "$w" -S "vs_$k")
        [ "$l" = 0 ] || args+=(-L "$l")
        t0=$(server_ticks)
        "$bin" "${args[@]}" > "$out/$k"
        t1=$(server_ticks)
        us=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$N" 'BEGIN { printf "%.0f", (b - a) / hz * 1e6 / n }')
        echo "$side w=$w lease=$l $(field "$out/$k" sagas_per_s) sagas/s p50 $(field "$out/$k" p50_ms) ms commits $(field "$out/$k" commits) server_cpu_us/saga $us"
        echo "$side $w $l $(field "$out/$k" sagas_per_s) $us" >> "$out/all"
      done
    done
  done
done
echo "== best of $R (new/base) =="
for w in $WINDOWS; do
  for l in $LEASES; do
    b=$(awk -v w="$w" -v l="$l" '$1 == "base" && $2 == w && $3 == l && $4 > m { m = $4 } END { print m + 0 }' "$out/all")
    n=$(awk -v w="$w" -v l="$l" '$1 == "new" && $2 == w && $3 == l && $4 > m { m = $4 } END { print m + 0 }' "$out/all")
    bu=$(awk -v w="$w" -v l="$l" '$1 == "base" && $2 == w && $3 == l && (m == "" || $5 < m) { m = $5 } END { print m + 0 }' "$out/all")
    nu=$(awk -v w="$w" -v l="$l" '$1 == "new" && $2 == w && $3 == l && (m == "" || $5 < m) { m = $5 } END { print m + 0 }' "$out/all")
    awk -v w="$w" -v l="$l" -v b="$b" -v n="$n" -v bu="$bu" -v nu="$nu" 'BEGIN {
      printf "  window %-5s lease %-6s base %7d  new %7d sagas/s  new/base %.2f | server CPU us/saga base %5d  new %5d  new/base %.2f\n", w, l, b, n, (b > 0 ? n / b : 0), bu, nu, (bu > 0 ? nu / bu : 0) }'
  done
done

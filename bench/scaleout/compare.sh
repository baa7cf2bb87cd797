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
        "$bin" "${args[@]}" > "$out/$k"
        echo "$side w=$w lease=$l $(field "$out/$k" sagas_per_s) sagas/s p50 $(field "$out/$k" p50_ms) ms commits $(field "$out/$k" commits) $(sed -n 's/.*\(limit=[^ ]*\).*/\1/p' "$out/$k")"
        echo "$side $w $l $(field "$out/$k" sagas_per_s)" >> "$out/all"
      done
    done
  done
done
echo "== best of $R (new/base) =="
for w in $WINDOWS; do
  for l in $LEASES; do
    b=$(awk -v w="$w" -v l="$l" '$1 == "base" && $2 == w && $3 == l && $4 > m { m = $4 } END { print m + 0 }' "$out/all")
    n=$(awk -v w="$w" -v l="$l" '$1 == "new" && $2 == w && $3 == l && $4 > m { m = $4 } END { print m + 0 }' "$out/all")
    awk -v w="$w" -v l="$l" -v b="$b" -v n="$n" 'BEGIN {
      printf "  window %-5s lease %-6s base %7d  new %7d sagas/s  new/base %.2f\n", w, l, b, n, b > 0 ? n / b : 0 }'
  done
done

#!/usr/bin/env bash
# bench/vs.sh BASE NAME [args] — `bench/run NAME args` of this tree against
# BASE's (a commit), alternately, in one run.
#
# BASE is checked out in a throwaway git worktree in /tmp and built there the
# way bench/run builds this tree. The two sides then run alternately,
# $VS_ROUNDS times each (default 3), base first in odd rounds and new first
# in even ones, so that a machine that gets busier or quieter during the run
# weighs on both. Each run's output is kept; the summary gives the medians of
# the figures that matter for NAME and new/base.
#
#   bench/vs.sh 38298a0 core -s 0          the engine batch, before/after
#   bench/vs.sh 38298a0 remote -n 20000    orchestrator + participants
#
# Only core and remote have a summary; for other names the outputs are
# printed and compared by hand.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
base=$1
name=$2
shift 2
rounds=${VS_ROUNDS:-3}
dir=$(mktemp -d /tmp/bench_vs.XXXXXX)
cleanup() {
  git -C "$ROOT" worktree remove --force "$dir/base" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
git -C "$ROOT" worktree add --detach "$dir/base" "$base" >/dev/null 2>&1
echo "base: $(git -C "$ROOT" rev-parse --short "$base") ($base)   new: this tree ($(git -C "$ROOT" rev-parse --short HEAD))"
echo "bench/run $name $*   rounds: $rounds"

run() { # side round
  local tree=$ROOT build=$ROOT/build-bench
  local side=$1 round=$2
  shift 2
  if [ "$side" = base ]; then tree=$dir/base build=$dir/base/build-bench; fi
  SAGA_BENCH_BUILD=$build bash "$tree/bench/run" "$name" "$@" \
    >"$dir/$side.$round.out" 2>&1 || { cat "$dir/$side.$round.out" >&2; exit 1; }
}
# The figures of one output, as "key value" lines.
figures() {
  case $name in
  core)
    awk '$1 == "engine-batch" { for (i = 2; i <= NF; i++) {
           if ($i ~ /^sagas\/s=/) { v = $i; sub(/.*=/, "", v); if (v == "") v = $(i + 1); print "engine_sagas/s", v }
           if ($i ~ /^cpu=/) { v = $i; sub(/cpu=/, "", v); if (v == "") v = $(i + 1); print "engine_cpu_s", v + 0 } } }
         $1 == "floor-batch" { for (i = 2; i <= NF; i++) if ($i ~ /^cpu=/) { v = $i; sub(/cpu=/, "", v); if (v == "") v = $(i + 1); print "floor_cpu_s", v + 0 } }
         /^engine_vs_floor=/ { sub(/.*=/, ""); print "engine_vs_floor", $0 }' "$1" ;;
  remote)
    # CPU is for the whole run: the throughput phase and the latency phase,
    # whose count depends on the rate found; per saga it compares.
    awk '/^remote_sagas_per_s=/ { sub(/.*=/, ""); print "sagas/s", $0 }
         /^throughput:/ { n += $2 }
         /^latency:/ { for (i = 1; i <= NF; i++) {
                         if ($i == "p99") { v = $(i + 1); sub(/,/, "", v); print "p99_ms", v }
                         if ($i ~ /^\([0-9]+$/) { v = $i; sub(/\(/, "", v); n += v } } }
         /^cpu:/ { for (i = 1; i <= NF; i++) { if ($i == "orchestrator") o = $(i + 1) + 0
                                             if ($i == "participants") q = $(i + 1) + 0 } }
         END { if (n > 0) { printf "orch_cpu_us/saga %.1f\n", o * 1e6 / n; printf "part_cpu_us/saga %.1f\n", q * 1e6 / n } }' "$1" ;;
  esac
}

# bench/run builds before it runs, so the first round's builds land outside
# the programs' own timings.
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="base new"; else order="new base"; fi
  for side in $order; do
    run "$side" "$r" "$@"
    printf '%-4s round %d:' "$side" "$r"
    figures "$dir/$side.$r.out" | awk '{ printf "  %s %s", $1, $2 } END { print "" }'
  done
done
[ "$name" = core ] || [ "$name" = remote ] || { for f in "$dir"/*.out; do echo "== $f"; cat "$f"; done; exit 0; }
echo "== summary: medians of $rounds rounds each; new/base (lower is better for cpu, p99 and engine_vs_floor)"
for side in base new; do
  for f in "$dir"/$side.*.out; do figures "$f"; done >"$dir/$side.fig"
done
median() { # key file
  awk -v k="$1" '$1 == k { print $2 }' "$2" | sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
awk '{ print $1 }' "$dir/new.fig" | awk '!seen[$0]++' | while read -r k; do
  b=$(median "$k" "$dir/base.fig")
  n=$(median "$k" "$dir/new.fig")
  awk -v k="$k" -v b="$b" -v n="$n" 'BEGIN { printf "  %-16s base %10s   new %10s   new/base %.2f\n", k, b, n, (b > 0 ? n / b : 0) }'
done

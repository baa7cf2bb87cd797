#!/usr/bin/env bash
# bench/codec.sh [BASE] [args] — bench/codec.c against this tree's codec and
# against BASE's (a commit; default: main), in one run.
#
# Both sides are compiled the same way (cc -O2, the few library sources the
# codec needs, as tests/fuzz/run.sh does); BASE's sources come from a
# throwaway git worktree in /tmp. The two programs run alternately, 3 times
# each; the summary gives each side's best median and new/base.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=main
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  base=$1
  shift
fi
dir=$(mktemp -d /tmp/bench_codec.XXXXXX)
cleanup() {
  git -C "$ROOT" worktree remove --force "$dir/base" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
git -C "$ROOT" worktree add --detach "$dir/base" "$base" >/dev/null 2>&1
pc=msgpack
pkg-config --exists $pc 2>/dev/null || pc=msgpack-c
CC=${CC:-cc}
build() { # tree out
  local t=$1
  # shellcheck disable=SC2046
  $CC -std=c11 -D_GNU_SOURCE -O2 -DNDEBUG -I"$t/include" -I"$t/lib" \
    $(pkg-config --cflags $pc) \
    $(ls "$t/lib/common.c" "$t/lib/alloc.c" "$t/lib/errors.c" 2>/dev/null) \
    "$t/lib/mpread.c" \
    "$t/lib/codec.c" "$t/lib/data.c" "$ROOT/bench/codec.c" -o "$2" \
    $(pkg-config --libs $pc)
}
build "$dir/base" "$dir/bench_base"
build "$ROOT" "$dir/bench_new"
echo "base: $(git -C "$ROOT" rev-parse --short "$base") ($base)   new: this tree"
for _ in 1 2 3; do
  "$dir/bench_base" "$@" | sed 's/^/base /' | tee -a "$dir/base.out"
  "$dir/bench_new" "$@" | sed 's/^/new  /' | tee -a "$dir/new.out"
done
echo "== summary (shared machine: figures are noisy; compare the ratio) =="
for k in command reply event+unknown; do
  b=$(awk -v k="$k" '$3 == k { v = $(NF-6); if (m == "" || v < m) m = v } END { print m }' "$dir/base.out")
  n=$(awk -v k="$k" '$3 == k { v = $(NF-6); if (m == "" || v < m) m = v } END { print m }' "$dir/new.out")
  awk -v k="$k" -v b="$b" -v n="$n" 'BEGIN {
    printf "  %-14s base %7.1f ns/msg   new %7.1f ns/msg   new/base %.2f\n", k, b, n, n / b }'
done

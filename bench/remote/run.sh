#!/usr/bin/env bash
# bench/remote/run.sh — build and run the remote benchmark: sagas of 4
# remote steps across three processes (orchestrator + 2 participants) over
# TCP on loopback, each on its own SQLite file (WAL).
#
#   bench/remote/run.sh [bench_remote args]
#     -n N        sagas in the throughput phase (default 50000)
#     -w WINDOW   sagas in flight in the throughput phase (default 2000)
#     -l SECONDS  length of the latency phase (default 5)
#     -r RATE     latency phase start rate (default: half the throughput)
#     -s SYNC     SQLite synchronous: 0 FULL (default), 1 NORMAL
#
# Prints the throughput, then p50/p99 latency at half that rate; the last
# line is remote_sagas_per_s=<n>. Builds (Release, -O2 -g) into
# $SAGA_BENCH_BUILD/remote (default build-bench/remote).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${SAGA_BENCH_BUILD:-$ROOT/build-bench}/remote
mkdir -p "$BUILD"
log=$BUILD/build.log
if ! { cmake -S "$ROOT/bench/remote" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_C_FLAGS_RELEASE="-O2 -g -DNDEBUG" &&
       cmake --build "$BUILD" -j2 --target bench_remote bench_remote_part; } \
       >"$log" 2>&1; then
  cat "$log" >&2
  echo "bench/remote/run.sh: build failed (log: $log)" >&2
  exit 1
fi
dir=$(mktemp -d /tmp/bench_remote.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$BUILD/bench_remote" -p "$BUILD/bench_remote_part" -d "$dir" "$@"

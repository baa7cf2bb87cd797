#!/usr/bin/env bash
# bench/scaleout/run.sh BIN [-n N] [-s SEQ] [-W "WINDOWS"]
#
# The core workload (sagas of 4 no-op local steps) on the PostgreSQL store,
# against a plain-libpq floor that writes the same rows with the same
# batching (bench/scaleout/scaleout.c). Starts its own throwaway server
# (tests/pg/with-pg.sh: initdb in a temporary directory, 127.0.0.1, a free
# port, the defaults synchronous_commit=on and fsync=on) and runs:
#   sequential     one saga at a time, each durable before the next (-s)
#   in-flight-64   N sagas (-n), 64 in flight
#   window-W       N sagas, W in flight, for each W of -W; the best is
#                  "highest"
#   highest+lease, 2-/3-orchestrators  1, 2 and 3 engine processes at
#                  once on one shared schema (stores with leases), N sagas
#                  between them, the best window each
# Each engine row is followed by its floor (the engine's commit count, the
# same walk of the rows). Figures: sagas/s, p50/p99 of start -> durable
# completion. The last line is pg_sagas_per_s=<highest, one process>.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$1
shift
N=20000 SEQ=300 WINDOWS="256 1024 2048 4096"
while getopts "n:s:W:" o; do
  case $o in
    n) N=$OPTARG ;;
    s) SEQ=$OPTARG ;;
    W) WINDOWS=$OPTARG ;;
    *) echo "usage: bench/run scaleout [-n N] [-s SEQ] [-W \"256 1024\"]" >&2; exit 2 ;;
  esac
done

if [ -z "${SAGA_PG_URL:-}" ] || [ "${SCALEOUT_INNER:-}" != 1 ]; then
  # Start the throwaway server and come back in.
  export SCALEOUT_INNER=1
  exec bash "$ROOT/tests/pg/with-pg.sh" bash "$0" "$bin" -n "$N" -s "$SEQ" \
    -W "$WINDOWS"
fi

out=$(mktemp -d /tmp/bench_scaleout.XXXXXX)
trap 'rm -rf "$out"' EXIT
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1"; }
schema() { echo "b_$1" | tr -- '-' '_'; } # a fresh schema per run

ver=$(psql "$SAGA_PG_URL" -Atc "SELECT current_setting('server_version') || ' synchronous_commit=' || current_setting('synchronous_commit') || ' fsync=' || current_setting('fsync')" 2>/dev/null || echo "?")
echo "bench scaleout: PostgreSQL $ver; sagas of 4 no-op local steps; n=$N, sequential $SEQ"
echo "(the machine is shared with other work: absolute figures are noisy; compare the ratios within this run)"
printf '%-18s %5s %6s %9s %9s %9s %8s | %9s %9s %9s | %-12s | %s\n' \
  row procs window sagas/s p50_ms p99_ms commits floor/s f_p50_ms f_p99_ms engine/floor "limit (engine/server us per saga)"
row() { # name procs window engine-file floor-file
  local es fs
  es=$(field "$4" sagas_per_s); fs=$(field "$5" sagas_per_s)
  printf '%-18s %5s %6s %9s %9s %9s %8s | %9s %9s %9s | %-12s | %s\n' "$1" "$2" "$3" \
    "$es" "$(field "$4" p50_ms)" "$(field "$4" p99_ms)" "$(field "$4" commits)" \
    "$fs" "$(field "$5" p50_ms)" "$(field "$5" p99_ms)" \
    "$(awk -v e="$es" -v f="$fs" 'BEGIN { if (e > 0) printf "%.2f", f / e; else print "n/a" }')" \
    "$(field "$4" limit) ($(field "$4" engine_us_per_saga)/$(field "$4" server_us_per_saga))"
}
# engine-then-floor for one process: run NAME N W
pair() {
  local name=$1 n=$2 w=$3
  "$bin" engine -n "$n" -w "$w" -S "$(schema "$name-e")" > "$out/$name.e"
  "$bin" floor -n "$n" -w "$w" -c "$(field "$out/$name.e" commits)" \
    -S "$(schema "$name-f")" > "$out/$name.f"
  row "$name" 1 "$w" "$out/$name.e" "$out/$name.f"
}

pair sequential "$SEQ" 1
pair in-flight-64 "$N" 64
best=0 bestw=64 bestname=in-flight-64
best=$(field "$out/in-flight-64.e" sagas_per_s)
for w in $WINDOWS; do
  pair "window-$w" "$N" "$w"
  s=$(field "$out/window-$w.e" sagas_per_s)
  if awk -v a="$s" -v b="$best" 'BEGIN { exit !(a > b) }'; then
    best=$s bestw=$w bestname=window-$w
  fi
done
cp "$out/$bestname.e" "$out/highest.e"
cp "$out/$bestname.f" "$out/highest.f"
row highest 1 "$bestw" "$out/highest.e" "$out/highest.f"

# Several orchestrator processes at once on one schema: N sagas between
# them, each store with a lease (multi-engine ownership: fenced writes,
# checked row by row inside the same array statements as without a
# lease). The 1-process baseline for them is the same with one process
# ("highest+lease"). Their floors run one process per schema
# at once (plain rows, no fencing).
LEASE=10000
count_done() { # schema
  # journal entries: rows, and those packed in the saga rows (counted
  # without decoding them, as the view journal would)
  psql "$SAGA_PG_URL" -Atc "SELECT (SELECT count(*) FROM $1.sagas WHERE state = 3) || ' ' || ((SELECT count(*) FROM $1.journal_rows) + (SELECT coalesce(sum($1.jrn_count(jrn)), 0) FROM $1.sagas))"
}
multi() { # k
  local k=$1 i pids=() per=$(($N / $1)) sch
  sch=$(schema "m$k")
  for i in $(seq 1 "$k"); do
    "$bin" engine -n "$per" -w "$bestw" -S "$sch" -L "$LEASE" > "$out/m$k.$i.e" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  read -r done jn <<< "$(count_done "$sch")"
  if [ "$done" != $((per * k)) ] || [ "$jn" != $((6 * per * k)) ]; then
    echo "bench scaleout: $k orchestrators: $done COMPLETED, $jn journal rows (want $((per * k)), $((6 * per * k)))" >&2
    exit 1
  fi
  pids=()
  for i in $(seq 1 "$k"); do
    "$bin" floor -n "$per" -w "$bestw" -c "$(field "$out/m$k.$i.e" commits)" \
      -S "$(schema "m$k-$i-f")" > "$out/m$k.$i.f" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  # Aggregate: all sagas over the slowest process's time; latencies: the
  # worst process's.
  for t in e f; do
    cat "$out"/m$k.*.$t | awk -v bw="$bestw" '
      { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        n += v["n"]; if (v["time"] > tm) tm = v["time"];
        if (v["p50_ms"] > p50) p50 = v["p50_ms"]; if (v["p99_ms"] > p99) p99 = v["p99_ms"];
        c += v["commits"]; eus += v["engine_us_per_saga"] * v["n"]
        # each process saw the CPU of every backend of the server: the
        # server'"'"'s CPU is the largest of them
        s = v["server_cpu"] * v["time"]; if (s > sv) sv = s
        if (lim == "") lim = v["limit"] }
      END { printf "result multi n=%d window=%d time=%.3f sagas_per_s=%.0f p50_ms=%.3f p99_ms=%.3f commits=%d limit=%s engine_us_per_saga=%.0f server_us_per_saga=%.0f\n", n, bw, tm, n / tm, p50, p99, c, lim, eus / n, sv * 1e6 / n }' \
      > "$out/multi$k.$t"
  done
}
multi 1
row "highest+lease" 1 "$bestw" "$out/multi1.e" "$out/multi1.f"
for k in 2 3; do
  multi "$k"
  row "$k-orchestrators" "$k" "$bestw" "$out/multi$k.e" "$out/multi$k.f"
done
echo "  +lease and 2-/3-orchestrators: one schema shared by the processes, each store"
echo "  with a ${LEASE} ms lease (fenced writes); floors: one schema each"
one=$(field "$out/highest.e" sagas_per_s)
onel=$(field "$out/multi1.e" sagas_per_s)
two=$(field "$out/multi2.e" sagas_per_s)
three=$(field "$out/multi3.e" sagas_per_s)
awk -v a="$onel" -v b="$two" -v c="$three" 'BEGIN {
  printf "ratios (shared schema, leases): 2 procs / 1 = %.2f, 3 procs / 1 = %.2f\n", b / a, c / a }'
echo "floor line: $(cat "$out/highest.f")"
echo "pg_sagas_per_s=$one"

#!/usr/bin/env bash
# pgm_driver.sh CHILD [N] [KILLS]: three engine processes on one PostgreSQL
# schema, with leases; SIGKILL and restart them mid-run KILLS times, SIGSTOP
# one past its lease and SIGCONT it; then check from the database that
#   - every saga is terminal, one per idempotency key;
#   - no saga was acted on by an engine that did not own it at that instant
#     (the ledger row of every action and compensation names its executor
#     and the saga row's owner, read in the same statement);
#   - no (owner, epoch) acted on or wrote a saga again after another one
#     had (in the ledger by time, in the journal by seq): owners never
#     overlap on a saga;
#   - every step outcome in the journal comes from an attempt that ran,
#     and every compensation matches an applied action.
# Runs under tests/pg/with-pg.sh (SAGA_PG_URL). Bounded: 240 s at most.
set -euo pipefail

child=$1
n=${2:-400}
kills=${3:-5}
lease_ms=1000
psql="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/psql"
dir=$(mktemp -d /tmp/pgm.XXXXXX)
pids=(0 0 0)

sql() { "$psql" "$SAGA_PG_URL" -v ON_ERROR_STOP=1 -qAt -c "$1"; }

cleanup() {
    for p in "${pids[@]}"; do
        [ "$p" -gt 0 ] && kill -CONT "$p" 2> /dev/null || true
        [ "$p" -gt 0 ] && kill -9 "$p" 2> /dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

sql "DROP SCHEMA IF EXISTS pgm CASCADE; DROP TABLE IF EXISTS public.ledger;
     CREATE TABLE public.ledger(saga_id text NOT NULL, step int NOT NULL,
       attempt int NOT NULL, kind text NOT NULL, executor text NOT NULL,
       owner text, epoch bigint, at timestamptz NOT NULL,
       n bigserial PRIMARY KEY)"

spawn() {
    "$child" "p$1" "$n" "$lease_ms" >> "$dir/p$1.log" 2>&1 &
    pids[$1]=$!
}

for i in 0 1 2; do spawn "$i"; done

# Mid-run: SIGKILL p0 or p2 and restart it (same owner id: a new epoch),
# every 0.4 s; after the second kill, SIGSTOP p1 for 2.5 leases.
stopped=0
for k in $(seq 1 "$kills"); do
    sleep 0.4
    v=$(( k % 2 == 1 ? 0 : 2 ))
    kill -9 "${pids[$v]}" 2> /dev/null || true
    wait "${pids[$v]}" 2> /dev/null || true
    echo "pgm: SIGKILL p$v (kill $k)"
    spawn "$v"
    if [ "$k" -eq 2 ]; then
        kill -STOP "${pids[1]}"
        echo "pgm: SIGSTOP p1 for $((lease_ms * 5 / 2)) ms"
        sleep "$(awk "BEGIN { print $lease_ms * 2.5 / 1000 }")"
        kill -CONT "${pids[1]}"
        echo "pgm: SIGCONT p1"
        stopped=1
    fi
done
[ "$stopped" -eq 1 ] || { echo "pgm: give at least 2 kills" >&2; exit 1; }

# Every process ends by itself once every saga has ended.
deadline=$((SECONDS + 240))
rc=0
for i in 0 1 2; do
    while kill -0 "${pids[$i]}" 2> /dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "pgm: p$i did not finish in time" >&2
            sql "SELECT state, count(*) FROM pgm.sagas GROUP BY state" >&2
            cat "$dir"/p*.log >&2
            exit 1
        fi
        sleep 0.2
    done
    if ! wait "${pids[$i]}"; then
        echo "pgm: p$i failed" >&2
        rc=1
    fi
    pids[$i]=0
done
if [ "$rc" -ne 0 ]; then cat "$dir"/p*.log >&2; exit 1; fi

fail=0
check() { # NAME SQL: the query must return 0
    local got
    got=$(sql "$2")
    if [ "$got" != "0" ]; then
        echo "pgm: FAILED $1: $got" >&2
        fail=1
    else
        echo "pgm: ok $1"
    fi
}

check "every saga terminal, one per key" \
    "SELECT (SELECT count(*) FROM pgm.sagas WHERE state NOT IN (3, 4))
          + abs((SELECT count(*) FROM pgm.sagas) - $n)
          + abs((SELECT count(*) FROM pgm.idem) - $n)"
check "every action ran on the saga's owner of that instant" \
    "SELECT count(*) FROM public.ledger WHERE owner IS DISTINCT FROM executor"
check "no owner acted on a saga again after another one had" \
    "SELECT count(*) FROM public.ledger a
       JOIN public.ledger b ON b.saga_id = a.saga_id AND b.n > a.n
                           AND b.epoch <> a.epoch
       JOIN public.ledger c ON c.saga_id = a.saga_id AND c.n > b.n
                           AND c.epoch = a.epoch"
check "no owner wrote a saga again after another one had (journal)" \
    "SELECT count(*) FROM pgm.journal a
       JOIN pgm.journal b ON b.saga_id = a.saga_id AND b.seq > a.seq
                         AND b.epoch <> a.epoch
       JOIN pgm.journal c ON c.saga_id = a.saga_id AND c.seq > b.seq
                         AND c.epoch = a.epoch"
check "every step outcome in the journal comes from an attempt that ran" \
    "SELECT count(*) FROM pgm.journal j WHERE j.event IN (2, 3, 4, 6, 7)
       AND NOT EXISTS (SELECT 1 FROM public.ledger l
         WHERE l.saga_id = j.saga_id AND l.step = j.step
           AND l.attempt = j.attempt
           AND l.kind = CASE WHEN j.event IN (6, 7) THEN 'C' ELSE 'A' END)"
check "every compensation matches an applied action" \
    "SELECT count(*) FROM public.ledger c WHERE c.kind = 'C'
       AND NOT EXISTS (SELECT 1 FROM public.ledger a WHERE a.kind = 'A'
         AND a.saga_id = c.saga_id AND a.step = c.step AND a.n < c.n)"
check "every journal entry names its owner and epoch" \
    "SELECT count(*) FROM pgm.journal WHERE owner IS NULL OR epoch = 0"

echo "pgm: $(sql "SELECT count(*) FROM pgm.sagas WHERE state = 3") completed," \
     "$(sql "SELECT count(*) FROM pgm.sagas WHERE state = 4") compensated;" \
     "$(sql "SELECT count(*) FROM public.ledger") ledger rows;" \
     "$(sql "SELECT count(DISTINCT epoch) FROM pgm.journal") epochs wrote;" \
     "$(sql "SELECT count(*) FROM (SELECT saga_id FROM pgm.journal
             GROUP BY saga_id HAVING count(DISTINCT epoch) > 1) t")" \
     "sagas changed owner mid-run"
# The kills and the stop must have moved sagas between owners, or the
# test proved nothing.
check "some sagas changed owner mid-run" \
    "SELECT CASE WHEN count(*) > 0 THEN 0 ELSE 1 END FROM (SELECT saga_id
       FROM pgm.journal GROUP BY saga_id HAVING count(DISTINCT epoch) > 1) t"
exit "$fail"

#!/bin/bash
# postgres.sh — `make bench-postgres`: the PostgreSQL store (docs/POSTGRES.md)
# on a private PostgreSQL server at its defaults (fsync and
# synchronous_commit on), on the disk of the build directory:
#   pg.submit_rate, pg.claim_complete_rate   the store as one node uses it,
#       medians of JOBQ_BENCH_PG_RUNS (3) runs taking turns with the SQLite one
#       (bench/postgres/store.c: 16 submitters; 4 workers claiming 256 and
#       completing them in one call, as bench/store/front.c does)
#   store.claim_complete_rate                the SQLite reference, measured
#       now on the same machine by bench/store/front.c
#   pg.scale_N_rate                          N real jobqd nodes (1, 2, 4) with
#       --concurrency 50 each running `sleep 0.2` jobs: jobs finished per
#       second from the first start to the last end (ideal: 250 per node)
# and the ratios the goals are stated in. Needs root (the server runs as
# the postgres user); prints "# skip" with the reason otherwise.
set -eu
build=${JOBQ_BUILD:?run through bench/run.sh}
src=${JOBQ_SRC:?run through bench/run.sh}
work=$(mktemp -d "${JOBQ_BENCH_DIR:-$build}/bench-postgres.XXXXXX")
chmod 755 "$work"
out=$work/results
declare -a pids=()
pg_bin= pg_user=postgres pg_running=

cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "$pg_running" ]; then
        runuser -u "$pg_user" -- "$pg_bin/pg_ctl" -D "$work/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    echo "# skip bench-postgres: needs root to run PostgreSQL as its own user"
    exit 0
fi
if ! "$src/scripts/deps.sh" postgresql >"$work/deps.log" 2>&1; then
    echo "# skip bench-postgres: PostgreSQL cannot be installed: $(tail -n 1 "$work/deps.log")"
    exit 0
fi
pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin | sort -V | tail -n 1)
id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
chown "$pg_user" "$work"
runuser -u "$pg_user" -- "$pg_bin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 \
    --locale=C.UTF-8 >"$work/initdb.log" 2>&1
runuser -u "$pg_user" -- "$pg_bin/pg_ctl" -D "$work/data" -l "$work/pg.log" \
    -o "-c listen_addresses='' -c unix_socket_directories=$work -c max_connections=200" \
    -w -t 60 start >/dev/null
pg_running=1
url="postgresql:///postgres?host=$work&user=postgres"
psql() { PGOPTIONS="-c client_min_messages=warning" "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$work" -U postgres -d postgres -c "$1"; }
echo "# $("$pg_bin/postgres" --version), data on $(df -h "$work" | awk 'NR == 2 {print $1}')"

# ---- the store, one node, and the SQLite reference -----------------------------
# They take turns, $runs times, each on an empty database, so that the
# machine's and the disk's moods hit both; each figure is the median of
# its runs (as bench/store.sh does).
runs=${JOBQ_BENCH_PG_RUNS:-3}
all=$work/runs
for ((i = 1; i <= runs; i++)); do
    psql "DROP SCHEMA IF EXISTS jobq CASCADE" >/dev/null
    "$build/bench/postgres/store" "$url" | tee -a "$all" | sed "s/^RESULT/# run $i:/"
    mkdir -p "$work/sqlite"
    "$build/bench/store/front" "$work/sqlite" cycle | tee -a "$all" | sed "s/^RESULT/# run $i:/"
    rm -rf "$work/sqlite"
done
awk -f "$(dirname "${BASH_SOURCE[0]}")/median.awk" "$all" | tee -a "$out"

# ---- scaling: N jobqd nodes, sleep 0.2 jobs ------------------------------------
jobs_per_node=1500
for nodes in 1 2 4; do
    psql "DROP SCHEMA IF EXISTS jobq CASCADE" >/dev/null
    pids=()
    for n in $(seq 1 "$nodes"); do
        "$build/jobqd" --state-dir "$work/n$n" --foreground --store "$url" --concurrency 50 \
            --log-level warn >>"$work/node$n.log" 2>&1 &
        pids+=($!)
    done
    for n in $(seq 1 "$nodes"); do
        for _ in $(seq 1 200); do
            "$build/jobq" --socket "$work/n$n/jobq.sock" ping >/dev/null 2>&1 && break
            sleep 0.05
        done
    done
    total=$((jobs_per_node * nodes))
    "$build/jobq" --socket "$work/n1/jobq.sock" pause scale >/dev/null
    for _ in $(seq 1 "$total"); do
        echo '{"queue":"scale","command":["sleep","0.2"]}'
    done | "$build/jobq" --socket "$work/n1/jobq.sock" submit --batch - >/dev/null
    "$build/jobq" --socket "$work/n1/jobq.sock" resume scale >/dev/null
    # The rate comes from the jobs' own start and end times; this loop
    # only learns that they are done, once a second, so that a psql
    # process and a count over the table do not take CPU from the nodes.
    for _ in $(seq 1 120); do
        sleep 1
        done_n=$(psql "SELECT count(*) FROM jobq.jobs WHERE queue = 'scale' AND state >= 4")
        [ "$done_n" -ge "$total" ] && break
    done
    rate=$(psql "SELECT round(count(*) * 1000.0 / greatest(max(finished_at) - min(started_at), 1))
                 FROM jobq.jobs WHERE queue = 'scale' AND state = 4")
    echo "RESULT pg.scale_${nodes}_rate $rate jobs/s" | tee -a "$out"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    rm -rf "$work"/n*
done

# ---- the goals, as ratios of this run's figures ----------------------------------
awk '
    $1 == "RESULT" { v[$2] = $3 }
    END {
        r("pg.scale_4_rate", "pg.scale_1_rate", "pg.scale_4_vs_1", 3.2)
        r("pg.scale_2_rate", "pg.scale_1_rate", "pg.scale_2_vs_1", 0)
        r("pg.claim_complete_rate", "store.claim_complete_rate", "pg.claim_complete_vs_sqlite", 0.5)
    }
    function r(a, b, key, goal) {
        if ((a in v) && (b in v) && v[b] > 0)
            printf "RESULT %s %.2f x%s\n", key, v[a] / v[b], goal ? sprintf(" (goal >= %s)", goal) : ""
    }' "$out"

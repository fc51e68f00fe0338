#!/bin/bash
# store.sh — `make bench-store`: the store's figures (bench/store/front.c,
# big.c) and, in the same run, on the same disk, the references they are
# judged against (bench/store/raw.c): fsync latency and plain SQLite insert
# rates with the store's pragmas and row shape. Prints "RESULT key value
# unit" lines, then the ratios the issue's goals are stated in.
#
# The databases live under $JOBQ_BENCH_DIR (default: the build directory,
# i.e. the disk jobqd's ./var would be on), about 200 MB, removed after.
set -euo pipefail
build=${JOBQ_BUILD:?run through bench/run.sh}
base=${JOBQ_BENCH_DIR:-$build}
dir=$(mktemp -d "$base/bench-store.XXXXXX")
out=$(mktemp)

df -h "$dir" | awk 'NR == 2 { print "# disk: " $1 " mounted on " $6 }'
# raw and front take turns, $runs times, so that the disk's and the
# machine's moods hit both; each figure below is the median of its runs.
# big (a million jobs, 1.8 s to build) runs once.
runs=${JOBQ_BENCH_STORE_RUNS:-3}
all=$(mktemp)
trap 'rm -rf "$dir" "$out" "$all"' EXIT
for ((i = 1; i <= runs; i++)); do
    for prog in raw front; do
        "$build/bench/store/$prog" "$dir" | tee -a "$all" | sed "s/^RESULT/# run $i:/"
        rm -f "$dir"/*
    done
done
awk -f "$(dirname "${BASH_SOURCE[0]}")/median.awk" "$all" | tee -a "$out"
"$build/bench/store/big" "$dir" | tee -a "$out"
rm -f "$dir"/*

# The goals are ratios to the raw figures of this same run.
awk '
    $1 == "RESULT" { v[$2] = $3 }
    END {
        r("store.submit_rate", "raw.insert_batch64_rate", "store.submit_vs_raw_batch64")
        r("store.batch_submit_rate", "raw.insert_batch1000_rate", "store.batch_vs_raw_batch1000")
        r("store.submit_lat_p50_us", "raw.fsync_us", "store.submit_p50_vs_fsync")
        r("store.submit_rate", "raw.insert_batch64_indexed_rate", "store.submit_vs_raw_batch64_indexed")
        r("store.batch_submit_rate", "raw.insert_batch1000_indexed_rate", "store.batch_vs_raw_batch1000_indexed")
    }
    function r(a, b, key) {
        if ((a in v) && (b in v) && v[b] > 0)
            printf "RESULT %s %.2f x\n", key, v[a] / v[b]
    }' "$out"

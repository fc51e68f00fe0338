#!/bin/bash
# fuzz — the libFuzzer targets of tests/fuzz/ (request lines, durations and
# times, config files), built with clang under ASan+UBSan into
# $JOBQ_BUILD/fuzz and run FUZZ_SECONDS each (20 here; `make fuzz`: 600).
# Each starts from its seed corpus (tests/fuzz/corpus/<target>) and from
# what earlier runs found ($JOBQ_BUILD/fuzz/corpus/<target>, kept between
# runs so coverage accumulates). A crash, a sanitizer report, a leak or a
# broken property fails the target; the input that did it is kept under
# $JOBQ_BUILD/fuzz/crashes/ and named in the failure. Prints executions,
# speed and coverage (libFuzzer's cov: edges and ft: features) as FIGUREs.
. "$(dirname "$0")/lib.sh"

SRC=$(cd "$(dirname "$0")/../.." && pwd)
FB=$JOBQ_BUILD/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=${FUZZ_TARGETS:-"request duration config"}

if [ -n "${JOBQ_SANITIZER:-}" ]; then
    skip fuzz "the fuzz targets already run under ASan+UBSan in make test"
    exit 0
fi
if ! command -v clang >/dev/null 2>&1; then
    skip fuzz "clang is not installed (apt-get install clang libclang-rt-14-dev)"
    exit 0
fi
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' \
    >"$T/probe.c"
if ! clang -fsanitize=fuzzer,address,undefined -o "$T/probe" "$T/probe.c" >"$T/probe.log" 2>&1; then
    skip fuzz "clang has no libFuzzer runtime (apt-get install libclang-rt-14-dev): $(head -c 200 "$T/probe.log")"
    exit 0
fi

if ! make -C "$SRC" --no-print-directory -j2 BUILD="$FB" SAN=fuzz CC=clang OPT=-O1 fuzzers \
    >"$T/build.log" 2>&1; then
    fail "fuzz targets build with clang" "$(grep -m3 -E 'error|Error' "$T/build.log")"
    exit 1
fi
mkdir -p "$FB/crashes"

# max_len: a request line may be long (4 KiB of mutations reach every
# member; the 1 MiB limit is badinput.sh's); the others are short texts.
declare -A MAXLEN=([request]=8192 [duration]=256 [config]=4096)

for t in $TARGETS; do
    bin=$FB/fuzz/$t
    if [ ! -x "$bin" ]; then
        fail "fuzz $t" "$bin was not built"
        continue
    fi
    mkdir -p "$FB/corpus/$t" "$T/tmp.$t"
    dict=()
    [ -f "$SRC/tests/fuzz/$t.dict" ] && dict=(-dict="$SRC/tests/fuzz/$t.dict")
    # TMPDIR: the request target's state directory, removed with $T.
    TMPDIR=$T/tmp.$t ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -max_len="${MAXLEN[$t]:-4096}" "${dict[@]}" \
        -artifact_prefix="$FB/crashes/$t-" "$FB/corpus/$t" "$SRC/tests/fuzz/corpus/$t" \
        >"$T/$t.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$T/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$T/$t.log")
    last=$(grep -E '^#[0-9]+' "$T/$t.log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$T/$t.log")
    # Edges instrumented in the binary: everything the target links.
    edges=$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' \
        "$T/$t.log" | head -1)
    echo "FIGURE fuzz target=$t seconds=$SECONDS_EACH execs=${execs:-0} execs_per_s=${rate:-0}" \
        "cov=${cov:-0} edges=${edges:-0} ft=${ft:-0} corpus=${corp:-0} peak_rss_mb=${rss:-0}"
    if [ $rc -eq 0 ] && [ -n "$execs" ]; then
        pass "fuzz $t: ${execs} executions, cov ${cov:-0}, ft ${ft:-0}"
    else
        what=$(grep -m1 -E 'SUMMARY|ERROR: libFuzzer|runtime error|deadly signal' "$T/$t.log")
        art=$(sed -n "s/.*Test unit written to \(.*\)/\1/p" "$T/$t.log" | tail -1)
        fail "fuzz $t" "${what:-exit status $rc}${art:+; input kept in $art}"
        grep -v -E '^#[0-9]+|^(INFO|MS):' "$T/$t.log" | tail -n 40
    fi
done
finish

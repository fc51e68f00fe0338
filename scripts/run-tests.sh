#!/bin/bash
# run-tests.sh BUILD — runs every cmocka unit-test binary in BUILD/tests and
# every integration script in tests/integ, then prints one summary line
# "N passed, N failed, N skipped" and exits non-zero on any failure.
#
# Unit binaries report through cmocka's standard summary lines; integration
# scripts print "PASS: name", "FAIL: name: why" or "SKIP: name: why" per
# case. A binary or script that crashes or times out counts as one failure.
# TESTS=pattern runs only the suites whose name matches.
set -u
build=${1:-build}
export JOBQ_BUILD=$(cd "$build" && pwd)
export JOBQ_SRC=$(cd "$(dirname "$0")/.." && pwd)
pattern=${TESTS:-}
passed=0 failed=0 skipped=0
failures=()
suite_timeout=${SUITE_TIMEOUT:-600}

count() { # file suite
    local f=$1 suite=$2 p fl s
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$f" | awk '{s+=$1} END {print s+0}')
    fl=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$f" | awk '{s+=$1} END {print s+0}')
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$f" | awk '{s+=$1} END {print s+0}')
    p=$((p + $(grep -c '^PASS: ' "$f")))
    fl=$((fl + $(grep -c '^FAIL: ' "$f")))
    s=$((s + $(grep -c '^SKIP: ' "$f")))
    echo "$p $fl $s"
}

run_suite() { # name command...
    local name=$1 out rc p fl s
    shift
    [ -n "$pattern" ] && [[ $name != *$pattern* ]] && return
    out=$(mktemp)
    echo "== $name"
    local t0=$SECONDS
    timeout -k 10 "$suite_timeout" "$@" >"$out" 2>&1 </dev/null
    rc=$?
    read -r p fl s < <(count "$out" "$name")
    if [ $rc -ne 0 ] && [ "$fl" -eq 0 ]; then
        fl=1 # crashed, timed out or failed outside a test case
        echo "FAIL: $name exited with status $rc" >>"$out"
    fi
    if [ "$fl" -ne 0 ] || [ -n "${VERBOSE:-}" ]; then
        cat "$out"
    else
        grep -E '^(SKIP: |\[  SKIPPED|RESULT |FIGURE )' "$out" || true
    fi
    [ "$fl" -ne 0 ] && failures+=("$name")
    echo "-- $name: $p passed, $fl failed, $s skipped ($((SECONDS - t0))s)"
    passed=$((passed + p)) failed=$((failed + fl)) skipped=$((skipped + s))
    rm -f "$out"
}

for t in "$JOBQ_BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    # needs a PostgreSQL server: integ/pg_store starts one and runs it
    [ "$(basename "$t")" = test_store_pg ] && continue
    run_suite "$(basename "$t")" "$t"
done
for t in "$JOBQ_SRC"/tests/integ/*.sh; do
    [ -f "$t" ] || continue
    case $(basename "$t") in lib.sh | pglib.sh) continue ;; esac # sourced by the others
    run_suite "integ/$(basename "$t" .sh)" bash "$t"
done

[ ${#failures[@]} -gt 0 ] && echo "failed suites: ${failures[*]}"
if [ $((passed + failed)) -eq 0 ]; then
    echo "no test ran"
    failed=1
fi
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]

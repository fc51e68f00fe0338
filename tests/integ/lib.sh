# lib.sh — sourced by the integration scripts in tests/integ/: they start
# the real build/jobqd on a fresh state directory and drive it with the real
# build/jobq, as a user would. Each case prints "PASS: name", "FAIL: name:
# why" or "SKIP: name: why" (scripts/run-tests.sh counts them). Waits are
# conditions polled against a deadline, never fixed sleeps, and everything
# started here is killed on exit, including jobs a killed daemon left.

set -u

JOBQ_BUILD=${JOBQ_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}
JOBQD=$JOBQ_BUILD/jobqd
JOBQ=$JOBQ_BUILD/jobq
JGET=$JOBQ_BUILD/tools/jget
PROBE=$JOBQ_BUILD/tools/sockprobe
for bin in "$JOBQD" "$JOBQ" "$JGET" "$PROBE"; do
    if [ ! -x "$bin" ]; then
        echo "SKIP: $(basename "$0" .sh): $bin is not built"
        exit 0
    fi
done

T=$(mktemp -d /tmp/jobq-integ.XXXXXX)
chmod 755 "$T"
STATE=$T/state
SOCK=$STATE/jobq.sock
DAEMON_PID=
FAILURES=0
unset JOBQ_SOCKET XDG_STATE_HOME JOBQD_CONFIG
export LC_ALL=C.UTF-8 COLUMNS=100

# Kills every process of this test: the daemon, and any job process of a
# daemon on $STATE (found by the JOBQ_INSTANCE marker jobs carry).
kill_jobs() {
    local p
    for p in /proc/[0-9]*; do
        if grep -qzs "^JOBQ_INSTANCE=$STATE/" "$p/environ" 2>/dev/null; then
            kill -9 "${p#/proc/}" 2>/dev/null
        fi
    done
}

# Sanitizer builds report into jobqd's log: any report fails the script.
check_sanitizers() {
    if [ -f "$T/jobqd.log" ] &&
        grep -qE 'ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:' \
            "$T/jobqd.log"; then
        fail "no sanitizer report in jobqd's log" \
            "$(grep -m1 -E 'Sanitizer|runtime error:' "$T/jobqd.log")"
        grep -A30 -m1 -E 'Sanitizer|runtime error:' "$T/jobqd.log"
    fi
}

cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        kill -9 "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
    fi
    kill_jobs
    check_sanitizers
    if [ "$FAILURES" -gt 0 ] && [ -f "$T/jobqd.log" ]; then
        echo "--- last lines of jobqd's log:"
        tail -n 30 "$T/jobqd.log"
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { echo "PASS: $1"; }
fail() {
    echo "FAIL: $1: $2"
    FAILURES=$((FAILURES + 1))
}
skip() { echo "SKIP: $1: $2"; }

# jq ARGS...: the real client on this test's daemon.
jq() { "$JOBQ" --socket "$SOCK" "$@"; }

# until_ok SECONDS 'SHELL CONDITION': evaluates the condition (a string,
# so $(...) in it runs again each time) every 20 ms until it holds or the
# deadline passes. Returns 1 on timeout.
until_ok() {
    local limit=$1 end
    shift
    end=$(($(date +%s%N) + limit * 1000000000))
    while ! eval "$*" >/dev/null 2>&1; do
        if [ "$(date +%s%N)" -gt "$end" ]; then
            return 1
        fi
        sleep 0.02
    done
    return 0
}

# start_daemon [jobqd options...]: a daemon on $STATE in the background,
# ready when ping answers (deadline 10 s). With JOBQ_TEST_STORE set (a
# postgresql:// URL: tests/integ/pg_contract.sh), its store is that.
start_daemon() {
    "$JOBQD" --state-dir "$STATE" --foreground --log-level debug \
        ${JOBQ_TEST_STORE:+--store "$JOBQ_TEST_STORE"} "$@" >>"$T/jobqd.log" 2>&1 &
    DAEMON_PID=$!
    if ! until_ok 10 'jq ping'; then
        echo "jobqd did not become ready; its log:" >&2
        tail -n 20 "$T/jobqd.log" >&2
        return 1
    fi
}

# stop_daemon [SIGNAL]: stops it (SIGTERM by default) and waits for it;
# sets DAEMON_STATUS.
stop_daemon() {
    local sig=${1:-TERM}
    DAEMON_STATUS=
    if [ -n "$DAEMON_PID" ]; then
        kill -"$sig" "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID"
        DAEMON_STATUS=$?
        DAEMON_PID=
    fi
}

# state_of ID: the job's state name.
state_of() { jq show --json "$1" 2>/dev/null | "$JGET" .state; }

# wait_state ID STATE [SECONDS]
wait_state() { until_ok "${3:-10}" "test \"\$(state_of $1)\" = $2"; }

# expect NAME WANT GOT: a PASS/FAIL line comparing two strings.
expect() {
    if [ "$2" = "$3" ]; then
        pass "$1"
    else
        fail "$1" "expected '$2', got '$3'"
    fi
}

# finish: the script's exit status.
finish() {
    [ "$FAILURES" -eq 0 ]
}

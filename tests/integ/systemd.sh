#!/bin/bash
# systemd.sh — jobqd under a service manager, without one: a test receiver
# on a NOTIFY_SOCKET datagram socket stands in for systemd (READY=1 once
# the socket answers, STATUS= lines that move as jobs run, RELOADING=1 and
# READY=1 around SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 when asked), and
# systemd-socket-activate passes the listening socket (LISTEN_FDS,
# LISTEN_PID, LISTEN_FDNAMES) as jobqd.socket would.
. "$(dirname "$0")/lib.sh"

RECV=$JOBQ_BUILD/tools/notifyrecv
if [ ! -x "$RECV" ]; then
    echo "SKIP: systemd: $RECV is not built"
    exit 0
fi
RECV_PID=
stop_recv() {
    if [ -n "$RECV_PID" ]; then
        kill "$RECV_PID" 2>/dev/null
        wait "$RECV_PID" 2>/dev/null
        RECV_PID=
    fi
}
trap 'stop_recv; cleanup' EXIT

# start_recv ADDRESS FILE: a receiver printing each message as a line of
# TAB-separated assignments, prefixed with the sender's pid.
start_recv() {
    stop_recv
    : >"$2"
    "$RECV" --pid "$1" >"$2" 2>&1 &
    RECV_PID=$!
    if [ "${1:0:1}" = @ ]; then
        until_ok 5 "grep -q '@${1:1}\$' /proc/net/unix"
    else
        until_ok 5 "test -S '$1'"
    fi
}

# run_daemon [ENV=VALUE...] -- [jobqd options...]: jobqd in the background
# without waiting for it (start_daemon waits with ping; here readiness is
# what is tested).
run_daemon() {
    local envs=()
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    env "${envs[@]}" "$JOBQD" --state-dir "$STATE" --foreground --log-level debug "$@" \
        >>"$T/jobqd.log" 2>&1 &
    DAEMON_PID=$!
}

NS=$T/notify.sock
OUT=$T/notify.out

# ---- readiness, status, reload, stopping ----------------------------------

start_recv "$NS" "$OUT"
run_daemon NOTIFY_SOCKET="$NS" --
if until_ok 10 "grep -q 'READY=1' '$OUT'"; then
    # Ready means ready: the very first try must get through.
    if jq ping >/dev/null 2>&1; then
        pass "READY=1 comes once the socket answers"
    else
        fail "READY=1 comes once the socket answers" "ping failed right after READY=1"
    fi
else
    fail "READY=1 comes once the socket answers" "no READY=1: $(cat "$OUT")"
fi
expect "READY=1 carries MAINPID and the first status, from the main pid" \
    "pid=$DAEMON_PID	READY=1	MAINPID=$DAEMON_PID	STATUS=running 0, queued 0, 0 done" \
    "$(grep -m1 READY=1 "$OUT")"

a=$(jq submit -- sh -c 'sleep 0.3')
b=$(jq submit -- true)
c=$(jq submit -- false)
if until_ok 10 "grep -q 'STATUS=running 0, queued 0, 3 done; 1 failed\$' '$OUT'"; then
    pass "STATUS= lines follow the jobs to 3 done, 1 failed"
else
    fail "STATUS= lines follow the jobs to 3 done, 1 failed" "$(grep STATUS= "$OUT")"
fi
n=$(grep -c '^pid=[0-9]*	STATUS=' "$OUT")
if [ "$n" -ge 2 ]; then
    pass "STATUS= moved as the jobs ran ($n updates)"
else
    fail "STATUS= moved as the jobs ran" "$(cat "$OUT")"
fi
id=$(jq submit --wait -- sh -c 'echo "${NOTIFY_SOCKET-unset} ${WATCHDOG_USEC-unset}"')
expect "jobs do not inherit NOTIFY_SOCKET" "unset unset" "$(jq logs "$id")"

kill -HUP "$DAEMON_PID"
if until_ok 5 "grep -A1 RELOADING=1 '$OUT' | grep -q 'READY=1'"; then
    pass "SIGHUP sends RELOADING=1, then READY=1"
else
    fail "SIGHUP sends RELOADING=1, then READY=1" "$(cat "$OUT")"
fi
grep -q 'RELOADING=1	MONOTONIC_USEC=[0-9]' "$OUT" &&
    pass "RELOADING=1 carries MONOTONIC_USEC" || fail "RELOADING=1 carries MONOTONIC_USEC" \
    "$(grep RELOADING "$OUT")"

stop_daemon TERM
expect "SIGTERM: jobqd exits 0" 0 "$DAEMON_STATUS"
expect "SIGTERM sends STOPPING=1 with a status" \
    "STOPPING=1	STATUS=draining: 0 running, grace 30000 ms" \
    "$(grep STOPPING=1 "$OUT" | cut -f2-)"

# ---- watchdog and addresses --------------------------------------------------

start_recv "$NS" "$OUT"
run_daemon NOTIFY_SOCKET="$NS" WATCHDOG_USEC=200000 --
if until_ok 10 "[ \$(grep -c 'WATCHDOG=1' '$OUT') -ge 3 ]"; then
    pass "WATCHDOG_USEC=200000 gets WATCHDOG=1 pings"
else
    fail "WATCHDOG_USEC=200000 gets WATCHDOG=1 pings" "$(cat "$OUT")"
fi
stop_daemon TERM

start_recv "@jobq-test-$$" "$OUT"
run_daemon NOTIFY_SOCKET="@jobq-test-$$" WATCHDOG_USEC=200000 WATCHDOG_PID=1 --
if until_ok 10 "grep -q READY=1 '$OUT'"; then
    pass "an abstract NOTIFY_SOCKET (@name) gets READY=1"
else
    fail "an abstract NOTIFY_SOCKET (@name) gets READY=1" "$(cat "$OUT")"
fi
jq ping >/dev/null
stop_daemon TERM
expect "no WATCHDOG=1 when WATCHDOG_PID is another process" 0 "$(grep -c WATCHDOG=1 "$OUT")"
stop_recv

run_daemon NOTIFY_SOCKET=relative/notify --
if until_ok 10 'jq ping' && grep -q 'notify.disabled' "$T/jobqd.log"; then
    pass "a bad NOTIFY_SOCKET is logged and jobqd runs without it"
else
    fail "a bad NOTIFY_SOCKET is logged and jobqd runs without it" "$(tail -n 3 "$T/jobqd.log")"
fi
stop_daemon TERM

# ---- socket activation ----------------------------------------------------

ACTIVATE=$(command -v systemd-socket-activate)
if [ -z "$ACTIVATE" ]; then
    skip "socket activation" "systemd-socket-activate is not installed (Debian: systemd)"
    finish
    exit
fi

# activate [activate options...]: jobqd started by systemd-socket-activate on
# the first connection to $SOCK (it execs jobqd: the pid stays the same).
activate() {
    mkdir -p "$STATE"
    "$ACTIVATE" "$@" -E NOTIFY_SOCKET="$NS" -- "$JOBQD" --state-dir "$STATE" --foreground \
        --log-level debug >>"$T/jobqd.log" 2>&1 &
    DAEMON_PID=$!
    until_ok 5 "test -S '$SOCK'"
}

start_recv "$NS" "$OUT"
activate -l "$SOCK"
expect "the first connection starts jobqd, which answers it" pong "$(jq ping)"
until_ok 5 "grep -q READY=1 '$OUT'" && pass "a socket-activated jobqd sends READY=1" ||
    fail "a socket-activated jobqd sends READY=1" "$(cat "$OUT")"
if grep "jobqd.ready" "$T/jobqd.log" | tail -n 1 | grep -q "socket=\"$SOCK\""; then
    pass "jobqd serves the passed socket"
else
    fail "jobqd serves the passed socket" "$(grep jobqd.ready "$T/jobqd.log" | tail -n 1)"
fi
id=$(jq submit --wait -- sh -c 'for f in /proc/$$/fd/*; do readlink "$f"; done; env | grep ^LISTEN_ || true')
expect "jobs inherit neither the listening socket nor LISTEN_*" "" \
    "$(jq logs "$id" | grep -E 'socket:|LISTEN_')"
stop_daemon TERM
expect "a socket-activated jobqd drains and exits 0" 0 "$DAEMON_STATUS"
if [ -S "$SOCK" ]; then
    pass "the passed socket's file is left to its owner"
else
    fail "the passed socket's file is left to its owner" "jobqd removed $SOCK"
fi
rm -f "$SOCK"

# Several sockets: the one named "jobq" is the job socket, wherever it is.
activate -l "$T/other.sock" -l "$SOCK" --fdname=metrics:jobq
if out=$(timeout 5 "$JOBQ" --socket "$SOCK" ping 2>&1) && [ "$out" = pong ]; then
    pass "with several passed sockets, LISTEN_FDNAMES picks the one named jobq"
else
    fail "with several passed sockets, LISTEN_FDNAMES picks the one named jobq" "$out"
fi
stop_daemon TERM
rm -f "$SOCK" "$T/other.sock"

# LISTEN_* meant for another process: jobqd makes its own socket.
run_daemon LISTEN_FDS=1 LISTEN_PID=1 LISTEN_FDNAMES=jobq --
if until_ok 10 'jq ping'; then
    pass "LISTEN_FDS for another pid is ignored: jobqd creates its socket"
else
    fail "LISTEN_FDS for another pid is ignored: jobqd creates its socket" \
        "$(tail -n 3 "$T/jobqd.log")"
fi
stop_daemon TERM
expect "a socket jobqd created is removed at exit" "gone" "$([ -e "$SOCK" ] && echo there || echo gone)"

finish

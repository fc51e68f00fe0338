#!/bin/bash
# lifecycle — what happens to jobs over time: timeouts kill whole process
# trees, deadlines, cancel before and while running, priority order,
# retries within their backoff, a drain that interrupts and re-runs, and
# kill -9 of the daemon: nothing acknowledged lost, nothing run twice.
. "$(dirname "$0")/lib.sh"

start_daemon --concurrency 8 --kill-grace 1s --queue pq=1 || exit 1
cd "$T" || exit 1

alive() { kill -0 "$1" 2>/dev/null; }

# --- a timeout kills the whole process tree -------------------------------
id=$(jq submit --timeout 500ms -- sh -c 'sleep 100 & echo $! > bg.pid; sleep 100')
jq wait "$id" >/dev/null 2>&1
rc=$?
until_ok 5 'test -s bg.pid'
bg=$(cat bg.pid 2>/dev/null)
if [ "$rc" = 124 ] && [ -n "$bg" ] && until_ok 5 "! kill -0 $bg"; then
    pass "timeout: exits 124 and the background child is gone too"
else
    fail "timeout: exits 124 and the background child is gone too" "rc=$rc bg=$bg alive=$(alive "$bg" && echo yes)"
fi

# A job that ignores SIGTERM is killed after the grace.
id=$(jq submit --timeout 300ms -- sh -c 'trap "" TERM; sleep 100')
start=$(date +%s%N)
jq wait "$id" >/dev/null 2>&1
rc=$?
took=$((($(date +%s%N) - start) / 1000000))
if [ "$rc" = 124 ] && [ "$took" -lt 6000 ]; then
    pass "timeout: SIGTERM ignored, SIGKILL after the grace (${took}ms)"
else
    fail "timeout: SIGTERM ignored, SIGKILL after the grace" "rc=$rc took=${took}ms"
fi

# A job that leaves a straggler behind: the straggler dies with the job.
id=$(jq submit -- sh -c 'sleep 100 & echo $! > straggler.pid')
jq wait "$id" >/dev/null 2>&1
s=$(cat straggler.pid 2>/dev/null)
if [ -n "$s" ] && until_ok 5 "! kill -0 $s"; then
    pass "a backgrounded straggler is killed when the job ends"
else
    fail "a backgrounded straggler is killed when the job ends" "pid $s still alive"
fi

# --- deadlines ----------------------------------------------------------------
id=$(jq submit --deadline +700ms -- sleep 30)
jq wait "$id" >/dev/null 2>&1
expect "deadline: a running attempt is stopped (124)" 124 $?
expect "deadline: outcome" deadline "$(jq show --json "$id" | "$JGET" .outcome)"

jq pause dq >/dev/null
id=$(jq submit --queue dq --deadline +300ms -- true)
# A held wait must hear of the failure the dispatcher's claim records.
jq wait --timeout 10s "$id" >/dev/null 2>&1 &
waiter=$!
sleep 0.5
jq resume dq >/dev/null
wait "$waiter"
expect "deadline: a held wait ends when the claim fails the job (124)" 124 $?
expect "deadline: passed while queued, never started" "failed 0" \
    "$(state_of "$id") $(jq show --json "$id" | "$JGET" .attempts.#)"

# --- cancel -------------------------------------------------------------------
jq pause cq >/dev/null
id=$(jq submit --queue cq -- touch ran)
jq cancel "$id" >/dev/null
jq resume cq >/dev/null
sleep 0.3
if [ "$(state_of "$id")" = canceled ] && [ ! -e ran ] &&
    [ "$(jq show --json "$id" | "$JGET" .attempts.#)" = 0 ]; then
    pass "cancel queued: it never runs"
else
    fail "cancel queued: it never runs" "state $(state_of "$id")"
fi
id=$(jq submit -- sleep 100)
wait_state "$id" running
jq cancel "$id" >/dev/null
jq wait "$id" >/dev/null 2>&1
expect "cancel running: exits 125, attempt outcome canceled" "125 canceled" \
    "$? $(jq show --json "$id" | "$JGET" .attempts.0.outcome)"
jq cancel "$id" >/dev/null 2>&1
expect "cancel twice: no error" 0 $?
# Canceled between attempts: wait's line says so, with the last error.
id=$(jq submit --attempts 3 --backoff 1h -- sh -c 'exit 3')
wait_state "$id" retrying
jq cancel "$id" >/dev/null
msg=$(jq wait "$id" 2>&1 >/dev/null)
expect "cancel retrying: 125, says it was canceled before its next attempt" \
    "125 jobq: job $id was canceled before its next attempt (the last one: exited with status 3)" \
    "$? $msg"

# Retry at once after canceling a running job whose TERM trap takes 0.6 s:
# the daemon holds the retry until the canceled run has ended, then runs
# it again, never both at once (the runs hold a lock and log their order).
id=$(jq submit -- sh -c 'exec 9>>rlock; flock -n 9 || echo overlap >>runs
if [ -e r1 ]; then echo second >>runs; exit 0; fi
trap "sleep 0.6; echo end1 >>runs; exit 0" TERM; : >r1; sleep 100 & wait')
until_ok 10 'test -e r1'
msg=$(jq cancel "$id" >/dev/null && jq retry "$id" 2>&1 >/dev/null)
expect "cancel && retry of a running job: retry succeeds" "0 " "$? $msg"
jq wait "$id" >/dev/null 2>&1
expect "cancel && retry: the job ran again, after the first run ended" \
    "0 end1 second 2" "$? $(tr '\n' ' ' <runs)$(jq show --json "$id" | "$JGET" .attempts.#)"

# --- priority order -----------------------------------------------------------
# Queue pq runs one job at a time (--queue pq=1), so the order they run in
# is the order the dispatcher picked them: highest priority first.
jq pause pq >/dev/null
for p in 1 5 3 9 0; do
    jq submit --queue pq --priority "$p" -- sh -c "echo $p >> order" >/dev/null
done
jq resume pq >/dev/null
until_ok 10 'test "$(wc -l <order)" = 5'
expect "priority: higher runs first" "9 5 3 1 0 " "$(tr '\n' ' ' <order)"

# --- retries with backoff -----------------------------------------------------
id=$(jq submit --attempts 3 --backoff 400ms:2s -- false)
jq wait "$id" >/dev/null 2>&1
js=$(jq show --json "$id")
n=$(echo "$js" | "$JGET" .attempts.#)
ok=1
gaps=
for i in 1 2; do
    prev_end=$(echo "$js" | "$JGET" .attempts.$((i - 1)).finished_at)
    start=$(echo "$js" | "$JGET" .attempts.$i.started_at)
    gap=$(($(date -d "$start" +%s%3N) - $(date -d "$prev_end" +%s%3N)))
    cap=$((400 * (1 << (i - 1))))
    # Full jitter: anywhere in [0, cap]; 300 ms for scheduling slack.
    [ "$gap" -ge 0 ] && [ "$gap" -le $((cap + 300)) ] || ok=0
    gaps="$gaps $gap"
done
if [ "$n" = 3 ] && [ "$ok" = 1 ]; then
    pass "retries: 3 attempts, gaps within full-jitter backoff (ms:$gaps)"
else
    fail "retries: 3 attempts, gaps within full-jitter backoff" "attempts=$n gaps=$gaps"
fi

# --- drain and restart --------------------------------------------------------
stop_daemon TERM
start_daemon --concurrency 8 --shutdown-grace 1s --kill-grace 1s || exit 1
a=$(jq submit -- sleep 30)
b=$(jq submit -- sh -c 'sleep 0.2; echo done')
wait_state "$a" running
start=$(date +%s%N)
stop_daemon TERM
took=$((($(date +%s%N) - start) / 1000000))
if [ "$DAEMON_STATUS" = 0 ] && [ "$took" -lt 3000 ]; then
    pass "drain: SIGTERM exits 0 within grace + 1s (${took}ms)"
else
    fail "drain: SIGTERM exits 0 within grace + 1s" "status=$DAEMON_STATUS took=${took}ms"
fi
start_daemon --concurrency 8 || exit 1
expect "drain: the job that finished in the grace succeeded" succeeded "$(state_of "$b")"
expect "drain: the interrupted attempt is recorded" interrupted \
    "$(jq show --json "$a" | "$JGET" .attempts.0.outcome)"
wait_state "$a" running 10
expect "drain: the interrupted job runs again after the restart" running "$(state_of "$a")"
jq cancel "$a" >/dev/null

# --- kill -9: acknowledged submits survive -----------------------------------
: >acked
(
    for i in $(seq 1 400); do
        id=$("$JOBQ" --socket "$SOCK" submit -- true 2>/dev/null) || break
        echo "$id" >>acked
    done
) &
loop=$!
until_ok 10 'test "$(wc -l <acked)" -ge 50'
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
wait "$loop" 2>/dev/null
start_daemon --concurrency 8 || exit 1
lost=0
while read -r id; do
    jq show --json "$id" >/dev/null 2>&1 || lost=$((lost + 1))
done <acked
expect "kill -9: every acknowledged id is still there ($(wc -l <acked) acked)" 0 "$lost"

# --- kill -9 while jobs run: no job runs twice at once -------------------------
: >runs
ids=
for i in $(seq 1 10); do
    ids="$ids $(jq submit -- flock -n "$T/lock.$i" sh -c "echo start $i >> $T/runs; sleep 3; echo end $i >> $T/runs")"
done
until_ok 10 'test "$(grep -c start runs)" -ge 10'
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
start_daemon --concurrency 8 || exit 1
# shellcheck disable=SC2086
jq wait --timeout 60s $ids >/dev/null 2>&1
rc=$?
states=$(for id in $ids; do state_of "$id"; done | sort | uniq -c | tr -s ' ')
if [ "$rc" = 0 ]; then
    pass "kill -9 mid-run: every job completes after restart, none ran twice at once"
else
    fail "kill -9 mid-run: every job completes after restart, none ran twice at once" \
        "wait rc=$rc states:$states"
fi

stop_daemon TERM
finish

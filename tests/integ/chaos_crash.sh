#!/bin/bash
# chaos_crash — kill -9 of jobqd while it works, and a graceful drain
# (docs/RELIABILITY.md, issue 6 points 1, 2 and 12):
#  - crash during submits: 16 submitters on their own connections, kill -9
#    at a random moment, restart; every acknowledged id is still there with
#    its own unique key, no id was acknowledged twice. A submit whose reply
#    was lost is sent again with the same unique key, as a careful client
#    would, in the next round. Half the submitters use a paused queue,
#    half a running one (the crashes then cut claims and completions too).
#    Then kill -9 during start-up (recovery, the integrity check) a few
#    times, and check again.
#  - crash while running: 50 jobs each holding an flock; kill -9, restart:
#    the leftovers are killed before anything runs again, every job
#    completes, no two runs of a job overlapped.
#  - drain: SIGTERM with 20 jobs running and --shutdown-grace 2s.
# JOBQ_CHAOS=1 (make chaos) scales the rounds up: 50 submit crashes instead
# of 10, 20 start-up crashes instead of 5, 5 running crashes instead of 1,
# 3 drains instead of 1.
. "$(dirname "$0")/lib.sh"

SUBMITTER=$JOBQ_BUILD/tools/submitter
if [ ! -x "$SUBMITTER" ]; then
    skip "chaos_crash" "$SUBMITTER is not built"
    exit 0
fi
if [ -n "${JOBQ_CHAOS:-}" ]; then
    SUBMIT_ROUNDS=50 BOOT_ROUNDS=20 RUN_ROUNDS=5 DRAIN_ROUNDS=3
else
    SUBMIT_ROUNDS=10 BOOT_ROUNDS=5 RUN_ROUNDS=1 DRAIN_ROUNDS=1
fi
NSUB=16
cd "$T" || exit 1

now_ns() { date +%s%N; }

# crash: kill -9 of the daemon, reaped.
crash() {
    kill -9 "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PID=
}

# marked [ATTEMPT]: pids of live (not zombie) processes carrying this
# daemon's job marker, of that attempt if given.
marked() {
    local p st
    for p in /proc/[0-9]*; do
        grep -qzs "^JOBQ_INSTANCE=$STATE/jobq.db\$" "$p/environ" 2>/dev/null || continue
        if [ -n "${1:-}" ] && ! grep -qzs "^JOBQ_ATTEMPT=$1\$" "$p/environ"; then
            continue
        fi
        st=$(awk '{print $3}' "$p/stat" 2>/dev/null)
        [ -n "$st" ] && [ "$st" != Z ] && echo "${p#/proc/}"
    done
}

# recovered: the processes_killed figure of the daemon's last recovery.
last_recover() { grep ' recover ' "$T/jobqd.log" | tail -1; }

# --- 1. crash during submits -------------------------------------------------
start_daemon --concurrency 16 || exit 1
# Half into a paused queue (a backlog of running jobs would only slow the
# rounds down), half into one that runs.
jq pause crash >/dev/null
for s in $(seq 1 $NSUB); do : >"acks.$s"; done
: >sub.err
t0=$(now_ns)
for r in $(seq 1 "$SUBMIT_ROUNDS"); do
    pids=
    for s in $(seq 1 $NSUB); do
        # The next key is the one after the last acknowledged: a key sent
        # but not acknowledged is sent again (idempotent by --unique).
        next=$(($(wc -l <"acks.$s") + 1))
        q=crash
        [ $((s % 2)) = 0 ] && q=run
        "$SUBMITTER" "$SOCK" submit "s$s" "$next" $q >>"acks.$s" 2>>sub.err &
        pids="$pids $!"
    done
    # The random moment of the crash (fault timing, not a wait for a
    # condition): between 50 ms and 1.5 s into the round.
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", 0.05 + r % 1450 / 1000 }')"
    crash
    # shellcheck disable=SC2086
    wait $pids
    start_daemon --concurrency 16 || {
        fail "crash during submits: restart after round $r" "jobqd did not come back"
        exit 1
    }
done
took_ms=$((($(now_ns) - t0) / 1000000))
# kill -9 during start-up: in recovery, in the integrity check, before
# the socket is up.
for r in $(seq 1 "$BOOT_ROUNDS"); do
    crash
    "$JOBQD" --state-dir "$STATE" --foreground --concurrency 16 >>"$T/jobqd.log" 2>&1 &
    DAEMON_PID=$!
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", r % 200 / 1000 }')"
done
crash
start_daemon --concurrency 16 || {
    fail "crash during start-up: the daemon comes back" "see its log"
    exit 1
}
cat acks.* >acks.all
acked=$(wc -l <acks.all)
inflight=$(grep -c '^inflight' sub.err)
out=$("$SUBMITTER" "$SOCK" verify <acks.all)
vrc=$?
lost=$(echo "$out" | grep -c '^missing')
mismatched=$(echo "$out" | grep -c '^mismatch')
dup=$(awk '{print $2}' acks.all | sort | uniq -d | wc -l)
total=$(jq stats --json | "$JGET" .store.jobs)
# Jobs committed whose reply never arrived and whose key was not sent
# again (the last round's in-flight submits): at most one per submitter.
unacked=$((total - acked))
echo "FIGURE crash_submit rounds=$SUBMIT_ROUNDS startup_kills=$BOOT_ROUNDS submitters=$NSUB acked=$acked lost=$lost" \
    "duplicated=$dup mismatched=$mismatched committed_unacked=$unacked inflight_at_kill=$inflight" \
    "took_ms=$took_ms"
if [ "$acked" -gt 0 ] && [ "$vrc" = 0 ] && [ "$lost" = 0 ] && [ "$mismatched" = 0 ]; then
    pass "crash during submits: every acknowledged id survives $((SUBMIT_ROUNDS + BOOT_ROUNDS)) kill -9 ($acked acked)"
else
    fail "crash during submits: every acknowledged id survives" \
        "acked=$acked lost=$lost mismatched=$mismatched verify: $(echo "$out" | tail -1)"
fi
expect "crash during submits: no id acknowledged twice" 0 "$dup"
if [ "$unacked" -ge 0 ] && [ "$unacked" -le "$NSUB" ]; then
    pass "crash during submits: jobs = acks + at most one unacknowledged per submitter ($unacked)"
else
    fail "crash during submits: jobs = acks + at most one unacknowledged per submitter" \
        "jobs=$total acked=$acked"
fi
# One jobqd per state directory: a second one is refused at once (exit 4),
# also when the first has detached (the lock file names the serving pid).
t=$(now_ns)
"$JOBQD" --state-dir "$STATE" --foreground >second.out 2>&1
rc=$?
expect "a second jobqd on the state directory exits 4 at once" "4 yes" \
    "$rc $([ $((($(now_ns) - t) / 1000000)) -lt 2000 ] && grep -q 'already running' second.out && echo yes)"
# The database itself after all that: a clean stop, then SQLite's check.
stop_daemon TERM
expect "crash during submits: the database passes integrity_check" ok \
    "$(sqlite3 "file:$STATE/jobq.db?mode=ro" 'PRAGMA integrity_check' 2>&1)"

# A lock still held when the jobqd that took it is gone (the kernel may
# release a killed jobqd's last reference to it seconds later, when it was
# spawning a job): the next jobqd waits for it instead of refusing.
echo 999999999 >"$STATE/jobqd.lock"
flock "$STATE/jobqd.lock" sleep 1.5 &
holder=$!
until_ok 5 "! flock -n $STATE/jobqd.lock true"
t=$(now_ns)
start_daemon --concurrency 16 || fail "lock held by a dead jobqd's leftover: waited for" "did not start"
took=$((($(now_ns) - t) / 1000000))
wait $holder
if [ -n "$DAEMON_PID" ] && grep -q 'jobqd.lock_wait' "$T/jobqd.log" && [ "$took" -ge 1000 ]; then
    pass "lock held by a gone jobqd's leftover: the next one waits for it (${took}ms)"
else
    fail "lock held by a gone jobqd's leftover: the next one waits for it" "took ${took}ms"
fi
# Detached (no --foreground): the pid in the lock file is the serving one.
stop_daemon TERM
"$JOBQD" --state-dir "$STATE" >>"$T/jobqd.log" 2>&1
until_ok 10 'jq ping'
DAEMON_PID=$(cat "$STATE/jobqd.lock")
t=$(now_ns)
"$JOBQD" --state-dir "$STATE" --foreground >second.out 2>&1
rc=$?
expect "a second jobqd, the first detached: exit 4 at once" "4 yes" \
    "$rc $([ $((($(now_ns) - t) / 1000000)) -lt 2000 ] && echo yes)"
kill -TERM "$DAEMON_PID"
until_ok 10 "! kill -0 $DAEMON_PID"
DAEMON_PID=

# --- 2. crash while running -------------------------------------------------
# A fresh state directory for each part from here on.
use_state() {
    kill_jobs
    STATE=$T/$1
    SOCK=$STATE/jobq.sock
}
use_state running
# Each job holds an flock while it runs and logs start and end under it
# with its attempt and a timestamp. A second run of the same job while the
# first still lives would find the lock taken (flock -n: exit 1, the job
# fails) or would interleave its lines with the first's.
NJOBS=50
start_daemon --concurrency 64 --kill-grace 1s || exit 1
killed_total=0
for round in $(seq 1 "$RUN_ROUNDS"); do
    rm -f runs.* lock.* release
    ids=
    # Each run holds on until the test releases it (after the restart), so
    # that all 50 are alive at the kill however slowly they started.
    for i in $(seq 1 $NJOBS); do
        ids="$ids $(jq submit --backoff 200ms:1s -- flock -n "$T/lock.$i" sh -c \
            "echo start \$JOBQ_ATTEMPT \$(date +%s%N) >> $T/runs.$i; n=0; while [ ! -e $T/release ] && [ \$n -lt 600 ]; do sleep 0.1; n=\$((n + 1)); done; echo end \$JOBQ_ATTEMPT \$(date +%s%N) >> $T/runs.$i")"
    done
    if ! until_ok 30 "test \$(cat runs.* 2>/dev/null | grep -c '^start') -ge $NJOBS"; then
        fail "crash while running: $NJOBS jobs start" "$(cat runs.* 2>/dev/null | grep -c start) started"
        break
    fi
    alive_before=$(marked 1 | wc -l)
    nrec=$(grep -c ' recover ' "$T/jobqd.log")
    crash
    t_crash=$(now_ns)
    start_daemon --concurrency 64 --kill-grace 1s || exit 1
    t_ready=$(now_ns)
    [ "$(grep -c ' recover ' "$T/jobqd.log")" -gt "$nrec" ] || echo "no recover line after the restart"
    # Recovery ran before the socket opened: nothing of the first runs
    # may be alive now.
    survivors=$(marked 1 | wc -l)
    rec=$(last_recover)
    pk=$(echo "$rec" | sed -n 's/.*processes_killed=\([0-9]*\).*/\1/p')
    killed_total=$((killed_total + ${pk:-0}))
    touch release
    # shellcheck disable=SC2086
    jq wait --timeout 60s $ids >/dev/null 2>&1
    wrc=$?
    states=$(for id in $ids; do state_of "$id"; done | sort | uniq -c | tr -s ' ' | tr '\n' ',')
    # Overlap check: per job, each run's lines in file order must be
    # "start a, [end a]" before "start b"; and a killed run (no end) never
    # writes after a later run started. Timestamps must increase.
    overlaps=0 twice=0
    for i in $(seq 1 $NJOBS); do
        awk -v job="$i" '
            { if ($3 < last) bad = 1; last = $3 }
            $1 == "start" { open = $2; starts[$2]++ }
            $1 == "end" { if ($2 != open) bad = 1; ended[$2] = 1 }
            END { for (a in starts) if (starts[a] > 1) twice = 1; print bad + 0, twice + 0 }
        ' "runs.$i" >"chk.$i"
        read -r b t <"chk.$i"
        overlaps=$((overlaps + b))
        twice=$((twice + t))
    done
    late=$(marked | wc -l)
    echo "FIGURE crash_running round=$round jobs=$NJOBS processes_alive_at_kill=$alive_before" \
        "processes_killed=${pk:-?} survivors_after_restart=$survivors overlaps=$overlaps" \
        "recovery_ms=$(((t_ready - t_crash) / 1000000)) states=$states"
    if [ "$survivors" = 0 ] && [ "${pk:-0}" -ge $NJOBS ]; then
        pass "crash while running ($round): leftovers killed at recovery (processes_killed=$pk)"
    else
        fail "crash while running ($round): leftovers killed at recovery" \
            "processes_killed=${pk:-none} survivors=$survivors log: $rec"
    fi
    if [ "$wrc" = 0 ] && [ "$overlaps" = 0 ] && [ "$twice" = 0 ]; then
        pass "crash while running ($round): every job completes, no run overlapped another"
    else
        fail "crash while running ($round): every job completes, no run overlapped another" \
            "wait rc=$wrc overlaps=$overlaps attempt-twice=$twice states:$states"
    fi
    first=$(echo "$ids" | awk '{print $1}')
    expect "crash while running ($round): the killed attempt is recorded interrupted" \
        "interrupted succeeded" \
        "$(jq show --json "$first" | "$JGET" .attempts.0.outcome) $(state_of "$first")"
    expect "crash while running ($round): no job process left" 0 "$late"
done
stop_daemon TERM

# --- 12. graceful drain -----------------------------------------------------
# 10 jobs finish inside the grace, 10 do not: those are stopped, recorded
# interrupted and run again at the next start.
use_state drain
for round in $(seq 1 "$DRAIN_ROUNDS"); do
    start_daemon --concurrency 32 --shutdown-grace 2s --kill-grace 5s || exit 1
    short= long=
    # Held in a paused queue until all 20 are in: they start together.
    jq pause dq >/dev/null
    for i in $(seq 1 10); do
        short="$short $(jq submit --queue dq -- sleep 0.5)"
        long="$long $(jq submit --queue dq -- sh -c 'trap "" TERM; sleep 60')"
    done
    jq resume dq >/dev/null
    if ! until_ok 20 'test "$(jq stats --json | "$JGET" .running)" = 20'; then
        fail "drain ($round): 20 jobs running" "$(jq stats --json | "$JGET" .running) running"
    fi
    t=$(now_ns)
    stop_daemon TERM
    took=$((($(now_ns) - t) / 1000000))
    left=$(marked | wc -l)
    echo "FIGURE drain round=$round running=20 grace_ms=2000 exit=$DAEMON_STATUS took_ms=$took" \
        "processes_left=$left"
    # Sanitizer builds run several times slower: the bound is the grace
    # plus 1 s of a normal build, plus 2 s of slack for them.
    bound=3000
    [ -n "${JOBQ_SANITIZER:-}" ] && bound=5000
    if [ "$DAEMON_STATUS" = 0 ] && [ "$took" -lt "$bound" ] && [ "$left" = 0 ]; then
        pass "drain ($round): SIGTERM with 20 running exits 0 within grace + 1s (${took}ms)"
    else
        fail "drain ($round): SIGTERM with 20 running exits 0 within grace + 1s" \
            "status=$DAEMON_STATUS took=${took}ms processes left=$left"
    fi
    start_daemon --concurrency 32 || exit 1
    ok=0
    for id in $short; do
        [ "$(jq show --json "$id" | "$JGET" .state)" = succeeded ] && ok=$((ok + 1))
    done
    expect "drain ($round): the jobs that fit in the grace succeeded" 10 "$ok"
    ok=0
    for id in $long; do
        o=$(jq show --json "$id" | "$JGET" .attempts.0.outcome)
        [ "$o" = interrupted ] && ok=$((ok + 1))
    done
    expect "drain ($round): the others are recorded interrupted" 10 "$ok"
    # shellcheck disable=SC2086
    if until_ok 20 "test \$(for id in $long; do jq show --json \$id | \"$JGET\" .attempt; done | grep -c '^2\$') = 10"; then
        pass "drain ($round): the interrupted jobs run again after the restart"
    else
        fail "drain ($round): the interrupted jobs run again after the restart" \
            "$(for id in $long; do state_of "$id"; done | sort | uniq -c | tr -s ' ')"
    fi
    # shellcheck disable=SC2086
    jq cancel $long >/dev/null
    stop_daemon TERM
done
finish

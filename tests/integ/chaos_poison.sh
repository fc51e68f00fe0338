#!/bin/bash
# chaos_poison — jobs that misbehave (docs/RELIABILITY.md, issue 6 point
# 11): one that always fails, one killed by a signal, ones that fork a
# daemonised grandchild (setsid, keeping or closing stdout), one that
# closes stdout and spins. Each ends failed (or succeeded, for a leader
# that exits 0) within its attempts and timeout, the grandchildren are
# killed with the job (the executor sweeps the job's session and the
# processes carrying its marker), and nothing loops for ever.
# JOBQ_CHAOS=1 (make chaos) runs 10 of each at once instead of 1.
. "$(dirname "$0")/lib.sh"

N=1
[ -n "${JOBQ_CHAOS:-}" ] && N=10
start_daemon --concurrency 64 --kill-grace 500ms || exit 1
cd "$T" || exit 1
mkdir pids

now_ns() { date +%s%N; }
# marked: live processes carrying this daemon's job marker.
marked() {
    local p st
    for p in /proc/[0-9]*; do
        grep -qzs "^JOBQ_INSTANCE=$STATE/jobq.db\$" "$p/environ" 2>/dev/null || continue
        st=$(awk '{print $3}' "$p/stat" 2>/dev/null)
        [ -n "$st" ] && [ "$st" != Z ] && echo "${p#/proc/}"
    done
}
alive_pids() { # the pids written in FILES that still run
    local f p n=0
    for f in "$@"; do
        p=$(cat "$f" 2>/dev/null) || continue
        [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
            [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && n=$((n + 1))
    done
    echo $n
}

t0=$(now_ns)
fails= sigs= gc_out= gc_closed= spins= forks=
for i in $(seq 1 $N); do
    fails="$fails $(jq submit --attempts 3 --backoff 100ms:200ms -- false)"
    sigs="$sigs $(jq submit --attempts 2 --backoff 100ms -- sh -c 'kill -SEGV $$')"
    # The leader exits at once; its grandchild lives on in a session of
    # its own, holding the job's stdout (so the capture pipe stays open).
    gc_out="$gc_out $(jq submit -- sh -c "setsid sh -c 'echo \$\$ > $T/pids/out.$i; exec sleep 300' & sleep 0.2")"
    # The same, with stdout and stderr closed: only the marker finds it.
    gc_closed="$gc_closed $(jq submit -- sh -c "setsid sh -c 'exec >/dev/null 2>&1 </dev/null; echo \$\$ > $T/pids/closed.$i; exec sleep 300' & sleep 0.2")"
    # Closes its output and spins: only the timeout ends it.
    spins="$spins $(jq submit --timeout 1s -- sh -c 'exec >&- 2>&-; while :; do :; done')"
    # A fork bomb in miniature that fails: its children outlive it.
    forks="$forks $(jq submit --attempts 2 --backoff 100ms -- sh -c "for k in 1 2 3; do (sleep 300 &); done; exit 3")"
done
all="$fails $sigs $gc_out $gc_closed $spins $forks"
# shellcheck disable=SC2086
jq wait --timeout 60s $all >/dev/null 2>&1
took=$((($(now_ns) - t0) / 1000000))

count() { # STATE IDS...: how many of IDS are in STATE
    local want=$1 n=0 id
    shift
    for id in "$@"; do [ "$(state_of "$id")" = "$want" ] && n=$((n + 1)); done
    echo $n
}
attempts_ok() { # N IDS...: how many of IDS made exactly N attempts
    local want=$1 n=0 id
    shift
    for id in "$@"; do
        [ "$(jq show --json "$id" | "$JGET" .attempts.#)" = "$want" ] && n=$((n + 1))
    done
    echo $n
}
# shellcheck disable=SC2086
{
    expect "poison: a job that always fails ends failed after its 3 attempts" "$N $N" \
        "$(count failed $fails) $(attempts_ok 3 $fails)"
    expect "poison: a job killed by SIGSEGV ends failed after its 2 attempts" "$N $N" \
        "$(count failed $sigs) $(attempts_ok 2 $sigs)"
    first=$(echo $sigs | awk '{print $1}')
    expect "poison: its outcome names the signal" "signaled 11" \
        "$(jq show --json "$first" | "$JGET" .attempts.0.outcome) $(jq show --json "$first" | "$JGET" .attempts.0.signal)"
    jq wait "$first" >/dev/null 2>&1
    expect "poison: wait exits 128+11 for it" 139 $?
    expect "poison: daemonised grandchild keeping stdout: the job ends (succeeded)" $N \
        "$(count succeeded $gc_out)"
    expect "poison: daemonised grandchild closing stdout: the job ends (succeeded)" $N \
        "$(count succeeded $gc_closed)"
    expect "poison: a job that closes stdout and spins ends failed by its timeout" $N \
        "$(count failed $spins)"
    first=$(echo $spins | awk '{print $1}')
    expect "poison: ... with outcome timeout" timeout "$(jq show --json "$first" | "$JGET" .outcome)"
    expect "poison: a job whose children outlive it ends failed after 2 attempts" "$N $N" \
        "$(count failed $forks) $(attempts_ok 2 $forks)"
}
if until_ok 5 "test \$(alive_pids pids/*) = 0"; then
    pass "poison: every daemonised grandchild was killed with its job"
else
    fail "poison: every daemonised grandchild was killed with its job" \
        "$(alive_pids pids/*) of $(ls pids | wc -l) alive"
fi
if until_ok 5 'test -z "$(marked)"'; then
    pass "poison: no process with a job's marker survives"
else
    fail "poison: no process with a job's marker survives" \
        "$(for p in $(marked); do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done | head -5)"
fi
running=$(jq stats --json | "$JGET" .running)
echo "FIGURE poison jobs=$(echo $all | wc -w) all_ended_ms=$took running_after=$running" \
    "marked_left=$(marked | wc -l) grandchildren_left=$(alive_pids pids/*)"
expect "poison: nothing is left running" 0 "$running"
stop_daemon TERM
expect "poison: the daemon stops cleanly afterwards" 0 "$DAEMON_STATUS"
finish

#!/bin/bash
# chaos_clock — the wall clock jumps under a running daemon
# (docs/RELIABILITY.md, issue 6 point 10). jobqd runs under libfaketime
# (Debian's faketime package: LD_PRELOAD, the offset read from a file at
# every call), which moves CLOCK_REALTIME and leaves CLOCK_MONOTONIC alone,
# as an NTP step or a hand-set clock would:
#  - a --timeout 2s job still times out at ~2 s when the clock jumps an
#    hour forward (not at once), and when it jumps an hour back (not never);
#  - an --at job waits for its wall-clock time across a backward jump, runs
#    once when the clock comes back (promptly: the dispatcher does not sleep
#    through a forward jump), and not again when the clock goes back again.
# Skipped when libfaketime is not installed, and under the sanitizers.
. "$(dirname "$0")/lib.sh"

FT=
for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -f "$f" ] && FT=$f && break
done
if [ -z "$FT" ]; then
    skip "clock" "libfaketime is not installed (apt-get install faketime)"
    exit 0
fi
if [ -n "${JOBQ_SANITIZER:-}" ]; then
    skip "clock" "LD_PRELOAD of libfaketime does not mix with $JOBQ_SANITIZER"
    exit 0
fi
ROUNDS=1
[ -n "${JOBQ_CHAOS:-}" ] && ROUNDS=3
cd "$T" || exit 1

now_ns() { date +%s%N; }
# jump OFFSET: the daemon's wall clock from now on (libfaketime syntax).
jump() { echo "$1" >"$T/faketime"; }

jump +0
FAKETIME_TIMESTAMP_FILE=$T/faketime FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
    LD_PRELOAD=$FT start_daemon || exit 1

for round in $(seq 1 "$ROUNDS"); do
    for dir in +1h -1h; do
        jump +0
        id=$(jq submit --timeout 2s -- sleep 30)
        wait_state "$id" running
        t=$(now_ns)
        jump "$dir"
        jq wait --timeout 20s "$id" >/dev/null 2>&1
        rc=$?
        took=$((($(now_ns) - t) / 1000000))
        # The attempt's duration in the log is measured on the monotonic
        # clock: ~2 s, not an hour.
        until_ok 5 "grep -q 'job.finish id=$id ' $T/jobqd.log"
        dur=$(grep "job.finish id=$id " "$T/jobqd.log" | sed -n 's/.* dur_ms=\([0-9-]*\).*/\1/p')
        echo "FIGURE clock_timeout round=$round jump=$dir timeout_ms=2000 fired_after_ms=$took exit=$rc logged_dur_ms=$dur"
        if [ -n "$dur" ] && [ "$dur" -ge 1000 ] && [ "$dur" -lt 5000 ]; then
            pass "clock ($round): the logged duration is ~2s across a $dir jump (${dur}ms)"
        else
            fail "clock ($round): the logged duration is ~2s across a $dir jump" "dur_ms=$dur"
        fi
        if [ "$rc" = 124 ] && [ "$took" -ge 1000 ] && [ "$took" -lt 5000 ]; then
            pass "clock ($round): a 2s timeout fires at ~2s across a $dir jump (${took}ms)"
        else
            fail "clock ($round): a 2s timeout fires at ~2s across a $dir jump" "rc=$rc after ${took}ms"
        fi
    done

    # --at across a backward jump: it waits for its wall-clock time.
    jump +0
    rm -f "ran.$round"
    id=$(jq submit --at +2s -- sh -c "echo \$(date +%s%N) >> $T/ran.$round")
    jump -1h
    # Nothing to wait for: what is checked is that it does NOT run while
    # its time passes on the monotonic clock.
    sleep 4
    expect "clock ($round): an --at job waits for its wall time after a backward jump" \
        "scheduled 0" "$(state_of "$id") $(cat "ran.$round" 2>/dev/null | wc -l)"
    # The clock comes back (a forward jump of an hour): due now, it runs.
    t=$(now_ns)
    jump +0
    if until_ok 10 "test -s ran.$round"; then
        took=$((($(now_ns) - t) / 1000000))
        pass "clock ($round): it runs once its time has come, after the forward jump (${took}ms)"
    else
        took=never
        fail "clock ($round): it runs once its time has come, after the forward jump" \
            "state $(state_of "$id") after 10 s"
    fi
    wait_state "$id" succeeded 5
    # Back again: it has run; it must not run a second time.
    jump -1h
    sleep 2
    jump +0
    sleep 1
    echo "FIGURE clock_at round=$round ran_after_forward_jump_ms=$took runs=$(wc -l <"ran.$round")"
    expect "clock ($round): an --at job runs exactly once across the jumps" "1 succeeded 1" \
        "$(wc -l <"ran.$round") $(state_of "$id") $(jq show --json "$id" | "$JGET" .attempts.#)"
done
stop_daemon TERM
finish

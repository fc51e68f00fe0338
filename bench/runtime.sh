#!/bin/bash
# runtime.sh — `make bench-runtime` (run by bench/run.sh with JOBQ_BUILD and
# JOBQ_SRC set): jobq's coroutine runtime against Go's on the same work.
#
# Every figure is the median of several runs, each in a fresh process, the
# jobq and Go runs interleaved so that noise on a shared machine hits both.
# Output, one line per figure:
#   RESULT <key> <value> <unit>        jobq (bench/runtime/rtbench.c)
#   RESULT go.<key> <value> <unit>     Go (bench/runtime/go/main.go)
#   RESULT ratio.<key> <jobq/go> jobq/go   lower is better; n/a if Go's is 0
#   RESULT raw.spin_handoff_ns <value> ns  the cross-CPU hand-off floor
#   RESULT raw.lock_handoff_ns <value> ns  the floor of a channel with a
#                                          lock: no scheduler, two lines
#   RESULT raw.rendezvous_handoff_ns <value> ns  the floor of an unbuffered
#                                          hand-off: one word per channel,
#                                          no lock, no scheduler
#   RESULT raw.stall_max_ms <value> ms     the longest the machine stopped
#                                          running a busy thread (no timer
#                                          can be less late than that)
# Lines starting with '#' are context: thread counts, the goal of each key
# and whether this run met it.
#
# Thread counts: switch and chan use one scheduler thread (GOMAXPROCS=1);
# everything else two (GOMAXPROCS=2), the two ends of chan_pingpong_mt are
# pinned to threads 0 and 1 and those to CPUs 0 and 1.
set -euo pipefail

build=${JOBQ_BUILD:?run through bench/run.sh}
src=${JOBQ_SRC:?run through bench/run.sh}
rtbench=$build/bench/runtime/rtbench
gobench=$build/bench/runtime/gobench
runs=${RUNS:-5}             # quick figures
heavy_runs=${HEAVY_RUNS:-3} # a million coroutines, or 3 s of idling, per run
# The timers figure is a ratio of two runs of ~2 and ~3.4 s whose Go side
# moved by 10% from run to run (3.18-3.59 s in one day): five each.
timer_runs=${TIMER_RUNS:-5}
quiet_wait=${QUIET_WAIT:-5}  # most seconds to wait for a quiet CPU per figure

if [ ! -x "$rtbench" ]; then
    echo "runtime.sh: $rtbench missing (make BUILD=$build benches)" >&2
    exit 1
fi
if ! command -v go >/dev/null 2>&1; then
    "$src/scripts/deps.sh" bench
fi

# Go's build cache and GOPATH live in the build tree: nothing in $HOME,
# nothing fetched (standard library only, GOPATH mode).
mkdir -p "$build/go/home"
(cd "$src/bench/runtime/go" &&
    HOME=$build/go/home GOCACHE=$build/go/cache GOPATH=$build/go/path GOENV=off \
        GO111MODULE=off GOFLAGS= GOPROXY=off go build -o "$gobench" .)

declare -A val

median() {
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# collect SIDE FILE: medians of the "key value" lines of FILE into val[].
collect() {
    local side=$1 file=$2 key
    for key in $(awk '{print $1}' "$file" | sort -u); do
        val[$side.$key]=$(awk -v k="$key" '$1 == k {print $2}' "$file" | median)
    done
}

# repeat SIDE N CMD...: runs CMD N times and keeps the medians of the
# "key value" lines it prints under SIDE.key.
repeat() {
    local side=$1 n=$2 i tmp
    shift 2
    tmp=$(mktemp)
    for ((i = 0; i < n; i++)); do
        "$@" >>"$tmp"
    done
    collect "$side" "$tmp"
    rm -f "$tmp"
}

# The Go side of idle is counted from outside: the program blocks reading a
# pipe with no timer armed, and we sum voluntary context switches over all
# its threads across 3 s.
go_idle() {
    local dir pid a b
    dir=$(mktemp -d)
    mkfifo "$dir/in"
    GOMAXPROCS=2 "$gobench" idle <"$dir/in" >"$dir/out" &
    pid=$!
    exec 3>"$dir/in"
    while ! grep -q ready "$dir/out" 2>/dev/null; do sleep 0.01; done
    sleep 0.2
    a=$(cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}')
    sleep 3
    b=$(cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}')
    exec 3>&-
    wait "$pid" || true
    rm -rf "$dir"
    awk -v a="$a" -v b="$b" 'BEGIN {printf "idle_wakeups_per_s %.2f\n", (b - a) / 3}'
}

# cpu_idle: the share of CPU time nobody used over the next second, in %
# (other engineers' builds and tests share this machine).
cpu_idle() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    awk -v t="$((b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[4] - a[5] - a[6] - a[7] - a[8]))" \
        -v i="$((b[4] - a[4]))" 'BEGIN {printf "%.0f\n", t ? 100 * i / t : 0}'
}

# settle WHAT: before each figure, waits up to $quiet_wait seconds for a
# second with at least 80% of the CPUs idle (both sides need both CPUs),
# and says what it saw.
settle() {
    local end=$(($(date +%s) + quiet_wait)) idle
    while :; do
        idle=$(cpu_idle)
        if [ "$idle" -ge 80 ] || [ "$(date +%s)" -ge "$end" ]; then
            break
        fi
    done
    echo "# $1: CPU idle ${idle}% before, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# interleave WHAT N GOMAXPROCS: N runs of rtbench WHAT and gobench WHAT,
# alternating.
interleave() {
    local what=$1 n=$2 procs=$3 i
    local tj tg
    settle "$what"
    tj=$(mktemp)
    tg=$(mktemp)
    for ((i = 0; i < n; i++)); do
        "$rtbench" "$what" >>"$tj"
        if [ "$what" = idle ]; then
            go_idle >>"$tg"
        else
            GOMAXPROCS=$procs "$gobench" "$what" >>"$tg"
        fi
    done
    collect jobq "$tj"
    collect go "$tg"
    rm -f "$tj" "$tg"
}

echo "# runs per figure: $runs ($heavy_runs for parked and idle, $timer_runs for timers); medians"
echo "# threads: switch, chan 1 (GOMAXPROCS=1); chan_mt, spawn_join, parked, timers, idle 2 (GOMAXPROCS=2)"
echo "# $(go version)"

settle spin
repeat raw "$runs" "$rtbench" spin
repeat raw "$runs" "$rtbench" lockspin
repeat raw "$runs" "$rtbench" rendezvous
repeat raw 1 "$rtbench" stall
interleave switch "$runs" 1
interleave chan "$runs" 1
interleave chan_mt "$runs" 2
interleave spawn_join "$runs" 2
interleave parked "$heavy_runs" 2
interleave timers "$timer_runs" 2
interleave idle "$heavy_runs" 2

unit() {
    case $1 in
    *_ns) echo ns ;;
    *_ms) echo ms ;;
    *_bytes) echo bytes ;;
    *_per_s) echo per_s ;;
    stacks_*) echo stacks ;;
    *) echo count ;;
    esac
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "n/a"; else printf "%.3f\n", a / b}'
}

keys="switch_ns chan_pingpong_ns chan_pingpong_mt_ns spawn_join_ns parked_bytes timers_1m_ms
timers_late_max_ms idle_wakeups_per_s"
spin=${val[raw.spin_handoff_ns]}
echo "RESULT raw.spin_handoff_ns $spin ns"
echo "RESULT raw.lock_handoff_ns ${val[raw.lock_handoff_ns]} ns"
echo "RESULT raw.rendezvous_handoff_ns ${val[raw.rendezvous_handoff_ns]} ns"
echo "RESULT raw.stall_max_ms ${val[raw.stall_max_ms]} ms"
for k in $keys; do
    echo "RESULT $k ${val[jobq.$k]} $(unit "$k")"
    echo "RESULT go.$k ${val[go.$k]} $(unit "$k")"
    echo "RESULT ratio.$k $(ratio "${val[jobq.$k]}" "${val[go.$k]}") jobq/go"
done
echo "RESULT stacks_guarded ${val[jobq.stacks_guarded]} stacks"
echo "RESULT stacks_canary_only ${val[jobq.stacks_canary_only]} stacks"
echo "# page tables per parked coroutine (not in RSS): ${val[jobq.parked_pte_bytes]} bytes"

# The goals of issue 2, judged on this run's medians.
goal() {
    local what=$1 ok=$2
    if [ "$ok" = 1 ]; then echo "# goal $what: met"; else echo "# goal $what: NOT met"; fi
}
r() { ratio "${val[jobq.$1]}" "${val[go.$1]}"; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a != "n/a" && a + 0 <= b + 0) ? 1 : 0}'; }
both() { [ "$1" = 1 ] && [ "$2" = 1 ] && echo 1 || echo 0; }
goal "switch_ns <= 8 and ratio <= 0.25" "$(both "$(le "${val[jobq.switch_ns]}" 8)" "$(le "$(r switch_ns)" 0.25)")"
goal "chan_pingpong_ns ratio <= 0.3" "$(le "$(r chan_pingpong_ns)" 0.3)"
goal "chan_pingpong_mt_ns <= 1.5 x raw.spin_handoff_ns ($(awk -v s="$spin" 'BEGIN {printf "%.1f", 1.5 * s}') ns)" \
    "$(le "${val[jobq.chan_pingpong_mt_ns]}" "$(awk -v s="$spin" 'BEGIN {print 1.5 * s}')")"
awk -v s="$spin" -v l="${val[raw.lock_handoff_ns]}" -v r="${val[raw.rendezvous_handoff_ns]}" \
    -v c="${val[jobq.chan_pingpong_mt_ns]}" \
    'BEGIN {printf "#   (in units of the spin floor: a bare lock-free rendezvous %.1f, a bare lock-based hand-off %.1f, jobq %.1f)\n", r / s, l / s, c / s}'
goal "spawn_join_ns ratio <= 0.1" "$(le "$(r spawn_join_ns)" 0.1)"
goal "parked_bytes ratio <= 0.9, all stacks guarded" \
    "$(both "$(le "$(r parked_bytes)" 0.9)" "$(le "${val[jobq.stacks_canary_only]}" 0)")"
goal "timers_1m_ms ratio <= 0.6" "$(le "$(r timers_1m_ms)" 0.6)"
goal "timers_late_max_ms <= 50" "$(le "${val[jobq.timers_late_max_ms]}" 50)"
echo "#   (the machine itself stopped a busy thread for up to ${val[raw.stall_max_ms]} ms)"
goal "idle_wakeups_per_s == 0" "$(le "${val[jobq.idle_wakeups_per_s]}" 0)"

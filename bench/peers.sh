#!/bin/bash
# peers.sh — `make bench-peers` (run by bench/run.sh with JOBQ_BUILD and
# JOBQ_SRC set): the same workloads against jobq and the tools its users
# would pick instead, on this machine, in one run. Peers: beanstalkd (no
# binlog, binlog -b, binlog with -f0 fsync on every write), task-spooler
# (tsp) and nq from Debian; BullMQ on redis-server and pg-boss on
# PostgreSQL through npm (bench/peers/node/), skipped with a reason if they
# cannot be set up. Every system starts fresh for every workload (its own
# temporary state), and the systems take turns within each round, so that
# noise on a shared machine hits all of them.
#
# Workloads (bench/peers/drive.c, bench/peers/node/drive.js do the timing):
#   enqueue_1_rate, enqueue_16_rate  jobs acknowledged per second, from 1
#       client submitting one job at a time and from 16 such clients, with
#       execution held back (queue paused, no worker, or blocker jobs in
#       every slot); jobq.enqueue_batch_rate: one `jobq submit --batch`.
#   exec_rate  /bin/true jobs, first submit to last completion; jobq 64 at
#       once (submitted in batches of 500), beanstalkd/BullMQ/pg-boss
#       workers 64, tsp and nq 2 (one CLI call per job, as is jobq_cli).
#   start_latency_p50_us, _p99_us  on an idle system: from the moment the
#       client starts the submit to the moment the job's process runs (the
#       job is a static program writing CLOCK_REALTIME to a file).
#   idle_rss_kib, rss_1000_queued_kib, rss_200_running_kib  the system's
#       own processes (daemon, workers, per-job helper processes; never the
#       jobs' commands), VmRSS summed; PSS in the table.
#   lost_on_kill9  acknowledge N jobs with execution held back, kill -9 the
#       system's processes, restart it, count what it still has or runs.
# Output: "RESULT <system>.<workload> <median> <unit>" lines, "#" context,
# bench/results/peers.md (medians and min-max of the runs) and
# bench/results/peers_*.png (gnuplot).
#
# docs/BENCHMARKS.md (section Peers) says why each system is driven the way
# it is. Knobs (environment): RUNS (3), N_ENQUEUE (10000), N_EXEC (5000),
# N_LATENCY (200), T_ENQUEUE (5), T_EXEC (8), PEERS ("jobq beanstalkd tsp
# nq bullmq pgboss"), RESULTS_DIR (bench/results of the source tree),
# KEEP_WORK (keep the temporary directory, for a post-mortem).
set -euo pipefail
shopt -s inherit_errexit

build=${JOBQ_BUILD:?run through bench/run.sh}
src=${JOBQ_SRC:?run through bench/run.sh}
runs=${RUNS:-3}
n_enq=${N_ENQUEUE:-10000}
n_exec=${N_EXEC:-5000}
n_lat=${N_LATENCY:-200}
peers=${PEERS:-jobq beanstalkd tsp nq bullmq pgboss}
results=${RESULTS_DIR:-$src/bench/results}
# Process-per-job spoolers (tsp, nq, and jobq's CLI for comparison) enqueue
# 900 jobs: tsp holds at most ~995 (its server's compile-time limit of 1000
# connections, one per queued job; TS_MAXCONN can only lower it), and nq's
# 2 processes per queued job must stay well inside pid_max on a shared host.
n_cli=900
# pg-boss polls (every 0.5 s at best) and fetches one batch per poll: its
# exec run uses 1000 jobs and its latency 20 samples to fit the time budget.
n_exec_pgboss=1000
n_lat_pgboss=20
# Time caps, so that the slowest systems fit the 15-minute budget: an
# enqueue run stops after t_enq seconds, an exec run stops submitting after
# t_exec seconds (then waits for what it submitted); the rate is over the
# jobs actually submitted. Only systems slower than N/t reach them.
t_enq=${T_ENQUEUE:-5}
t_exec=${T_EXEC:-8}
n_kill=1000     # jobs acknowledged before kill -9
n_kill_cli=500  # for tsp and nq (process per job)
t_start=$(date +%s)

"$src/scripts/deps.sh" bench

drive=$build/bench/peers/drive
jobqd=$build/jobqd
jobq=$build/jobq
for bin in "$drive" "$jobqd" "$jobq"; do
    if [ ! -x "$bin" ]; then
        echo "peers.sh: $bin missing (make BUILD=$build all benches)" >&2
        exit 1
    fi
done

# A short path: Unix socket paths must fit in 108 bytes.
work=$(mktemp -d /tmp/jobq-peers.XXXXXX)
chmod 755 "$work" # PostgreSQL runs as its own user under it
raw=$work/raw.txt # "system key run value" lines
: >"$raw"
pg_running=
pg_dir=
redis_pid=

# Every process a system runs carries JOBQ_PEERS=$work/<system> in its
# environment (jobqd passes its environment on to jobs, tsp and nq to the
# processes they fork), so a system's processes are found, measured and
# killed by that tag alone, and nothing else on a shared machine is.
# redis-server and PostgreSQL write their process titles over their
# environment: they are found as the process trees under their pids.
tagof() { echo "JOBQ_PEERS=$work/$1"; }
roots() {
    case $1 in
    bullmq) echo "${redis_pid:-}" ;;
    pgboss) if [ -n "$pg_running" ]; then head -qn 1 "$pg_dir/data/postmaster.pid" 2>/dev/null || true; fi ;;
    esac
}
procs() {
    local r
    r=$(roots "$1")
    # shellcheck disable=SC2086 # r is a list of pids
    "$drive" procs "$(tagof "$1")" $r
}
# As a crash would: all at once. SIGSTOP first, so that no process runs
# between two kills (a waiting nq job would start the moment the job ahead
# of it dies), then SIGKILL; again until none is left (a CLI caught
# between two forks leaves a child that was not in the list).
kill_tagged() {
    local pids i
    for ((i = 0; i < 100; i++)); do
        pids=$(procs "$1" | awk '{print $1}')
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086 # a list of pids
        kill -STOP $pids 2>/dev/null || true
        pids=$(procs "$1" | awk '{print $1}')
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.02
    done
    echo "peers.sh: processes of $1 survive kill -9" >&2
}
cleanup() {
    local s
    if [ -n "$pg_running" ]; then pg_stop; fi
    for s in jobq beanstalkd tsp nq bullmq pgboss; do kill_tagged "$s"; done
    if [ -n "${KEEP_WORK:-}" ]; then
        echo "peers.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# bash reports each background daemon this script kills ("line N: PID
# Killed ..."): expected, so filtered out.
exec 2> >(grep -v --line-buffered -E '^[^ ]+: line [0-9]+: +[0-9]+ Killed ' >&2)

# until_ok SECONDS CMD...: polls CMD every 10 ms until it succeeds.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "peers.sh: timed out waiting for: $*" >&2
            return 1
        fi
        sleep 0.01
    done
}
now_ns() { date +%s%N; }
# field KEY: the value of the "KEY value" line on stdin.
field() { awk -v k="$1" '$1 == k {print $2; found = 1} END {exit !found}'; }
# rec SYSTEM KEY RUN VALUE: one figure; anything but a number means the
# workload went wrong, and a run with a hole in it is not reported.
rec() {
    if ! [[ $4 =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
        echo "peers.sh: $1.$2 (run $3): no figure ('$4')" >&2
        exit 1
    fi
    echo "$1 $2 $3 $4" >>"$raw"
}
# rss SYSTEM [EXCLUDE_COMM]: "rss_kib pss_kib" summed over the system's
# processes, leaving out the jobs' own commands.
rss() {
    procs "$1" | awk -v ex="${2:-sleep}" '$2 != ex {r += $3; p += $4} END {print r + 0, p + 0}'
}
count_comm() { procs "$1" | awk -v c="$2" '$2 == c {n++} END {print n + 0}'; }
# has_procs SYSTEM COMM N: the system runs at least N processes named COMM.
has_procs() { [ "$(count_comm "$1" "$2")" -ge "$3" ]; }
rec_mem() { # SYSTEM KEY RUN "rss pss"
    rec "$1" "$2" "$3" "${4% *}"
    rec "$1" "${2%_kib}_pss_kib" "$3" "${4#* }"
}

# The latency job: no libc, its own _start (bench/peers/stamp.c says why),
# else static, else the Makefile's build; the run says which.
stamp=$work/stamp
stamp_kind="no libc, static"
if ! "${CC:-cc}" -O2 -DSTAMP_NOLIBC -nostdlib -static -fno-stack-protector -o "$stamp" \
    "$src/bench/peers/stamp.c" 2>/dev/null || ! "$stamp" "$work/stamp.test"; then
    stamp_kind="static libc: adds libc's start-up to every latency"
    if ! "${CC:-cc}" -O2 -static -o "$stamp" "$src/bench/peers/stamp.c" 2>/dev/null; then
        stamp_kind="dynamic: adds the loader's time to every latency"
        cp "$build/bench/peers/stamp" "$stamp"
    fi
fi
rm -f "$work/stamp.test"

# shellcheck disable=SC1091
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r)"
echo "# machine: $machine"
echo "# disk of the state directories: $(df -h "$work" | awk 'NR == 2 {print $1 " on " $6}')"
echo "# load at start: $(uptime | sed 's/.*load average: //')"
echo "# latency job: $stamp_kind"
echo "# runs: $runs; enqueue $n_enq jobs ($n_cli for tsp, nq and jobq's CLI), exec $n_exec ($n_exec_pgboss for pg-boss), latency $n_lat samples ($n_lat_pgboss for pg-boss)"

# ---------------------------------------------------------------- jobq

jobq_pid=
# jobq_start DIR [FLAGS...]: jobqd with its defaults (info log to a file).
jobq_start() {
    local dir=$1
    shift
    mkdir -p "$dir"
    env "$(tagof jobq)" "$jobqd" --state-dir "$dir/s" --foreground "$@" 2>>"$dir/jobqd.log" &
    jobq_pid=$!
    until_ok 10 "$jobq" --socket "$dir/s/jobq.sock" ping
}
jobq_stop() {
    kill -TERM "$jobq_pid" 2>/dev/null || true
    wait "$jobq_pid" 2>/dev/null || true
    kill_tagged jobq
}
jq_sock() { echo "$1/s/jobq.sock"; }
# jobq_done DIR N: N jobs have succeeded.
jobq_done() { [ "$("$drive" count jobq "$(jq_sock "$1")" | field succeeded)" -ge "$2" ]; }

jobq_round() {
    local r=$1 c d t0 t1 out
    # enqueue, 1 and 16 clients, and the batch path, queue paused
    for c in 1 16; do
        d=$work/jobq.enq$c.$r
        jobq_start "$d"
        "$jobq" --socket "$(jq_sock "$d")" pause default >/dev/null
        rec jobq "enqueue_${c}_rate" "$r" "$(DRIVE_MAX_SECONDS=$t_enq "$drive" enqueue jobq "$(jq_sock "$d")" "$n_enq" "$c" | field rate)"
        jobq_stop
        rm -rf "$d"
    done
    d=$work/jobq.batch.$r
    jobq_start "$d"
    "$jobq" --socket "$(jq_sock "$d")" pause default >/dev/null
    awk -v n="$n_enq" 'BEGIN {for (i = 0; i < n; i++) print "{\"command\":[\"/bin/true\"]}"}' >"$d/batch.ndjson"
    t0=$(now_ns)
    "$jobq" --socket "$(jq_sock "$d")" submit --batch "$d/batch.ndjson" >/dev/null
    t1=$(now_ns)
    rec jobq enqueue_batch_rate "$r" "$(awk -v n="$n_enq" -v dt=$((t1 - t0)) 'BEGIN {printf "%.1f", n * 1e9 / dt}')"
    jobq_stop
    rm -rf "$d"
    # exec: batches of 500, --concurrency 64 (the default)
    d=$work/jobq.exec.$r
    jobq_start "$d"
    rec jobq exec_rate "$r" "$("$drive" exec jobq "$(jq_sock "$d")" "$n_exec" 500 | field rate)"
    jobq_stop
    rm -rf "$d"
    # start latency, through the protocol and through the CLI
    d=$work/jobq.lat.$r
    jobq_start "$d"
    mkdir -p "$d/lat" "$d/latcli"
    out=$("$drive" latency jobq "$(jq_sock "$d")" "$n_lat" "$stamp" "$d/lat")
    rec jobq start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec jobq start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    rec jobq ack_latency_p50_us "$r" "$(field ack_latency_p50_us <<<"$out")"
    out=$("$drive" latency cli - "$n_lat" "$stamp" "$d/latcli" -- "$jobq" --socket "$(jq_sock "$d")" submit --)
    rec jobq_cli start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec jobq_cli start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    jobq_stop
    rm -rf "$d"
    # the CLI's enqueue and exec, one `jobq submit` per job, as tsp and nq
    # are driven (context)
    for c in 1 16; do
        d=$work/jobq.cli$c.$r
        jobq_start "$d"
        "$jobq" --socket "$(jq_sock "$d")" pause default >/dev/null
        rec jobq_cli "enqueue_${c}_rate" "$r" "$(DRIVE_MAX_SECONDS=$t_enq "$drive" enqueue cli - "$n_cli" "$c" -- "$jobq" --socket "$(jq_sock "$d")" submit -- | field rate)"
        jobq_stop
        rm -rf "$d"
    done
    d=$work/jobq.cliexec.$r
    jobq_start "$d"
    out=$(DRIVE_MAX_SECONDS=$t_exec "$drive" enqueue cli - "$n_exec" 1 -- "$jobq" --socket "$(jq_sock "$d")" submit --)
    t0=$(field t0 <<<"$out")
    until_ok 120 jobq_done "$d" "$(field n <<<"$out")"
    t1=$(now_ns)
    rec jobq_cli exec_rate "$r" "$(awk -v n="$(field n <<<"$out")" -v dt=$((t1 - t0)) 'BEGIN {printf "%.1f", n * 1e9 / dt}')"
    jobq_stop
    rm -rf "$d"
    # memory: idle, 1000 queued (paused), 200 running (--concurrency 256
    # so that 200 can run at once)
    d=$work/jobq.mem.$r
    jobq_start "$d"
    sleep 1
    rec_mem jobq idle_rss_kib "$r" "$(rss jobq)"
    "$jobq" --socket "$(jq_sock "$d")" pause default >/dev/null
    "$drive" enqueue jobq "$(jq_sock "$d")" 1000 16 >/dev/null
    sleep 0.5
    rec_mem jobq rss_1000_queued_kib "$r" "$(rss jobq)"
    jobq_stop
    rm -rf "$d"
    jobq_start "$d" --concurrency 256
    DRIVE_JOB="/bin/sleep 120" "$drive" enqueue jobq "$(jq_sock "$d")" 200 16 >/dev/null
    until_ok 30 has_procs jobq sleep 200
    sleep 0.5
    rec_mem jobq rss_200_running_kib "$r" "$(rss jobq)"
    kill -9 "$jobq_pid"
    wait "$jobq_pid" 2>/dev/null || true
    kill_tagged jobq
    rm -rf "$d"
}

jobq_kill9() {
    local d=$work/jobq.kill total
    jobq_start "$d"
    "$jobq" --socket "$(jq_sock "$d")" pause default >/dev/null
    "$drive" enqueue jobq "$(jq_sock "$d")" "$n_kill" 16 >/dev/null
    kill -9 "$jobq_pid"
    wait "$jobq_pid" 2>/dev/null || true
    jobq_start "$d"
    total=$("$drive" count jobq "$(jq_sock "$d")" | field total)
    rec jobq lost_on_kill9 1 $((n_kill - total))
    rec jobq acked_before_kill9 1 "$n_kill"
    jobq_stop
    rm -rf "$d"
}

# ----------------------------------------------------------- beanstalkd

bs_pid=
# bs_start SYSTEM DIR: beanstalkd in one of its three set-ups, on a Unix
# socket, with everything else at its defaults.
bs_start() {
    local sys=$1 dir=$2 args=()
    mkdir -p "$dir/binlog"
    case $sys in
    beanstalkd) ;;
    beanstalkd_binlog) args=(-b "$dir/binlog") ;;
    beanstalkd_fsync) args=(-b "$dir/binlog" -f0) ;;
    esac
    env "$(tagof "$sys")" beanstalkd -l "unix:$dir/bs.sock" "${args[@]}" 2>>"$dir/beanstalkd.log" &
    bs_pid=$!
    until_ok 10 "$drive" count beanstalk "$dir/bs.sock"
}
bs_stop() {
    kill -9 "$bs_pid" 2>/dev/null || true
    wait "$bs_pid" 2>/dev/null || true
    kill_tagged "$1"
}

bs_round() {
    local sys=$1 r=$2 c d out wpid
    for c in 1 16; do
        d=$work/$sys.enq$c.$r
        bs_start "$sys" "$d"
        rec "$sys" "enqueue_${c}_rate" "$r" "$(DRIVE_MAX_SECONDS=$t_enq "$drive" enqueue beanstalk "$d/bs.sock" "$n_enq" "$c" | field rate)"
        bs_stop "$sys"
        rm -rf "$d"
    done
    d=$work/$sys.exec.$r
    bs_start "$sys" "$d"
    rec "$sys" exec_rate "$r" "$(env "$(tagof "$sys")" DRIVE_MAX_SECONDS="$t_exec" "$drive" exec beanstalk "$d/bs.sock" "$n_exec" 64 | field rate)"
    bs_stop "$sys"
    rm -rf "$d"
    d=$work/$sys.lat.$r
    bs_start "$sys" "$d"
    mkdir -p "$d/lat"
    env "$(tagof "$sys")" "$drive" work "$d/bs.sock" 2 &
    wpid=$!
    out=$("$drive" latency beanstalk "$d/bs.sock" "$n_lat" "$stamp" "$d/lat")
    kill -9 "$wpid"
    wait "$wpid" 2>/dev/null || true
    rec "$sys" start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec "$sys" start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    rec "$sys" ack_latency_p50_us "$r" "$(field ack_latency_p50_us <<<"$out")"
    bs_stop "$sys"
    rm -rf "$d"
    # memory: the daemon idle and with 1000 jobs ready (no worker); with
    # 200 running, the daemon and the worker (200 connections)
    d=$work/$sys.mem.$r
    bs_start "$sys" "$d"
    sleep 1
    rec_mem "$sys" idle_rss_kib "$r" "$(rss "$sys")"
    "$drive" enqueue beanstalk "$d/bs.sock" 1000 16 >/dev/null
    sleep 0.5
    rec_mem "$sys" rss_1000_queued_kib "$r" "$(rss "$sys")"
    bs_stop "$sys"
    rm -rf "$d"
    bs_start "$sys" "$d"
    env "$(tagof "$sys")" "$drive" work "$d/bs.sock" 200 &
    wpid=$!
    DRIVE_JOB="/bin/sleep 120" "$drive" enqueue beanstalk "$d/bs.sock" 200 16 >/dev/null
    until_ok 30 has_procs "$sys" sleep 200
    sleep 0.5
    rec_mem "$sys" rss_200_running_kib "$r" "$(rss "$sys")"
    kill -9 "$wpid"
    wait "$wpid" 2>/dev/null || true
    bs_stop "$sys"
    rm -rf "$d"
}

bs_kill9() {
    local sys=$1 d=$work/$1.kill total
    bs_start "$sys" "$d"
    "$drive" enqueue beanstalk "$d/bs.sock" "$n_kill" 16 >/dev/null
    bs_stop "$sys"
    bs_start "$sys" "$d"
    total=$("$drive" count beanstalk "$d/bs.sock" | field total)
    rec "$sys" lost_on_kill9 1 $((n_kill - total))
    rec "$sys" acked_before_kill9 1 "$n_kill"
    bs_stop "$sys"
    rm -rf "$d"
}

# ------------------------------------------------------------------ tsp

# tspenv DIR CMD...: CMD with tsp's socket and output directory in DIR.
tspenv() {
    local dir=$1
    shift
    mkdir -p "$dir/tmp"
    env "$(tagof tsp)" TS_SOCKET="$dir/tsp.sock" TMPDIR="$dir/tmp" "$@"
}
# The server is the process the first command (tsp -S) forked off.
tsp_server() {
    local pid rest
    while read -r pid rest; do
        if [ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" = "tsp -S 2 " ]; then
            echo "$pid"
        fi
    done < <(procs tsp | awk '$2 == "tsp"')
}
# tsp_start DIR SLOTS: a fresh server (the first tsp command starts it),
# at tsp's defaults but for the number of slots.
tsp_start() {
    tspenv "$1" tsp -S "$2"
}
tsp_blockers() { # DIR N: N jobs that hold a slot each until killed
    local i
    for ((i = 0; i < $2; i++)); do tspenv "$1" tsp sleep 600 >/dev/null; done
    until_ok 10 has_procs tsp sleep "$2"
}
tsp_busy() { tspenv "$1" tsp -l | grep -qE '^[0-9]+ +(running|queued) '; }

tsp_round() {
    local r=$1 c d t0 t1 out
    for c in 1 16; do
        d=$work/tsp.enq$c.$r
        tsp_start "$d" 2
        tsp_blockers "$d" 2
        rec tsp "enqueue_${c}_rate" "$r" "$(tspenv "$d" env DRIVE_MAX_SECONDS="$t_enq" "$drive" enqueue cli - "$n_cli" "$c" -- tsp | field rate)"
        kill_tagged tsp
        rm -rf "$d"
    done
    # exec: tsp -S 2, one CLI call per job, then until the list is done
    d=$work/tsp.exec.$r
    tsp_start "$d" 2
    out=$(tspenv "$d" env DRIVE_MAX_SECONDS="$t_exec" "$drive" enqueue cli - "$n_exec" 1 -- tsp)
    t0=$(field t0 <<<"$out")
    tspenv "$d" tsp -w >/dev/null || true
    while tsp_busy "$d"; do sleep 0.005; done
    t1=$(now_ns)
    rec tsp exec_rate "$r" "$(awk -v n="$(field n <<<"$out")" -v dt=$((t1 - t0)) 'BEGIN {printf "%.1f", n * 1e9 / dt}')"
    kill_tagged tsp
    rm -rf "$d"
    d=$work/tsp.lat.$r
    tsp_start "$d" 2
    mkdir -p "$d/lat"
    out=$(tspenv "$d" "$drive" latency cli - "$n_lat" "$stamp" "$d/lat" -- tsp)
    rec tsp start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec tsp start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    kill_tagged tsp
    rm -rf "$d"
    # memory: the server; then the server and the client process each
    # queued or running job keeps (990 queued: tsp's limit, see n_cli)
    d=$work/tsp.mem.$r
    tsp_start "$d" 2
    sleep 1
    rec_mem tsp idle_rss_kib "$r" "$(rss tsp)"
    tsp_blockers "$d" 2
    tspenv "$d" "$drive" enqueue cli - 990 16 -- tsp >/dev/null
    sleep 0.5
    rec_mem tsp rss_1000_queued_kib "$r" "$(rss tsp)"
    kill_tagged tsp
    rm -rf "$d"
    tsp_start "$d" 200
    DRIVE_JOB="/bin/sleep 120" tspenv "$d" "$drive" enqueue cli - 200 16 -- tsp >/dev/null
    until_ok 30 has_procs tsp sleep 200
    sleep 0.5
    rec_mem tsp rss_200_running_kib "$r" "$(rss tsp)"
    kill_tagged tsp
    rm -rf "$d"
}

tsp_kill9() {
    local d=$work/tsp.kill ran queued
    tsp_start "$d" 2
    tsp_blockers "$d" 2
    mkdir -p "$d/k"
    DRIVE_JOB="$stamp $d/k/%d" tspenv "$d" "$drive" enqueue cli - "$n_kill_cli" 16 -- tsp >/dev/null
    kill -9 "$(tsp_server)"
    sleep 0.5
    # Restart (any tsp command starts a server), free the slots, let
    # whatever survived run.
    tsp_start "$d" 2
    procs tsp | awk '$2 == "sleep" {print $1}' | xargs -r kill -9
    sleep 3
    ran=$(find "$d/k" -type f | wc -l)
    queued=$(tspenv "$d" tsp -l | grep -cE '^[0-9]+ +(running|queued) ' || true)
    rec tsp lost_on_kill9 1 $((n_kill_cli - ran - queued))
    rec tsp acked_before_kill9 1 "$n_kill_cli"
    kill_tagged tsp
    rm -rf "$d"
}

# ------------------------------------------------------------------- nq

# nq runs one job at a time per queue directory (each job waits on an
# flock of every earlier job file). "2 at once" is two directories with
# the jobs dealt round-robin (drive's NQDIR=PREFIX:2), as a user's wrapper
# would; -c removes each successful job's file, which keeps the scans
# short (faster than nq's default), -q only silences the id.
nqenv() { env "$(tagof nq)" "$@"; }
nq_blocker() { # DIR: a first job that holds the queue until killed
    mkdir -p "$1"
    NQDIR=$1 nqenv nq -q sleep 600
    until_ok 10 has_procs nq sleep 1
}
nq_done() { test "$(procs nq | awk '$2 == "nq"' | wc -l)" -eq 0; }

nq_round() {
    local r=$1 c d i t0 t1 out
    for c in 1 16; do
        d=$work/nq.enq$c.$r
        nq_blocker "$d/q0"
        rec nq "enqueue_${c}_rate" "$r" "$(nqenv DRIVE_MAX_SECONDS="$t_enq" "$drive" enqueue cli "NQDIR=$d/q:1" "$n_cli" "$c" -- nq -q -c | field rate)"
        kill_tagged nq
        rm -rf "$d"
    done
    d=$work/nq.exec.$r
    mkdir -p "$d/q0" "$d/q1"
    out=$(nqenv DRIVE_MAX_SECONDS="$t_exec" "$drive" enqueue cli "NQDIR=$d/q:2" "$n_exec" 1 -- nq -q -c)
    t0=$(field t0 <<<"$out")
    # Every job's nq process exits after its command has.
    until_ok 300 nq_done
    t1=$(now_ns)
    rec nq exec_rate "$r" "$(awk -v n="$(field n <<<"$out")" -v dt=$((t1 - t0)) 'BEGIN {printf "%.1f", n * 1e9 / dt}')"
    kill_tagged nq
    rm -rf "$d"
    d=$work/nq.lat.$r
    mkdir -p "$d/q0" "$d/lat"
    out=$(nqenv "$drive" latency cli "NQDIR=$d/q:1" "$n_lat" "$stamp" "$d/lat" -- nq -q -c)
    rec nq start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec nq start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    until_ok 30 nq_done
    rm -rf "$d"
    # memory: nq has no daemon (idle 0); a queued job is two nq
    # processes, a running one the nq process waiting for its command.
    rec_mem nq idle_rss_kib "$r" "0 0"
    d=$work/nq.mem.$r
    nq_blocker "$d/q0"
    nqenv "$drive" enqueue cli "NQDIR=$d/q:1" 1000 16 -- nq -q -c >/dev/null
    until_ok 60 has_procs nq nq 2000
    sleep 0.5
    rec_mem nq rss_1000_queued_kib "$r" "$(rss nq)"
    kill_tagged nq
    rm -rf "$d"
    mkdir -p "$d"
    for ((i = 0; i < 200; i++)); do mkdir -p "$d/q$i"; done
    DRIVE_JOB="/bin/sleep 120" nqenv "$drive" enqueue cli "NQDIR=$d/q:200" 200 16 -- nq -q -c >/dev/null
    until_ok 30 has_procs nq sleep 200
    sleep 0.5
    rec_mem nq rss_200_running_kib "$r" "$(rss nq)"
    kill_tagged nq
    rm -rf "$d"
}

# nq keeps its queue in its waiting processes: a crash or reboot (here
# kill -9 of them) leaves job files that nothing runs again.
nq_kill9() {
    local d=$work/nq.kill ran
    nq_blocker "$d/q0"
    mkdir -p "$d/k"
    DRIVE_JOB="$stamp $d/k/%d" nqenv "$drive" enqueue cli "NQDIR=$d/q:1" "$n_kill_cli" 16 -- nq -q -c >/dev/null
    kill_tagged nq
    sleep 3
    ran=$(find "$d/k" -type f | wc -l)
    rec nq lost_on_kill9 1 $((n_kill_cli - ran))
    rec nq acked_before_kill9 1 "$n_kill_cli"
    rm -rf "$d"
}

# -------------------------------------------------- BullMQ and pg-boss

node_dir=$build/peers-node
node_ok=0
node_setup() {
    [ "$node_ok" = 1 ] && return 0
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "# skip bullmq, pgboss: node or npm is not installed"
        return 1
    fi
    mkdir -p "$node_dir"
    cp "$src/bench/peers/node/package.json" "$src/bench/peers/node/package-lock.json" \
        "$src/bench/peers/node/drive.js" "$node_dir/"
    if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.copy" 2>/dev/null; then
        if ! (cd "$node_dir" && timeout 180 npm ci --no-audit --no-fund --loglevel=error --fetch-retries=1 --fetch-timeout=30000 >"$node_dir/npm.log" 2>&1); then
            echo "# skip bullmq, pgboss: npm ci failed: $(grep -m 2 -E '^npm (ERR|error)' "$node_dir/npm.log" | tr '\n' ' ')(all in $node_dir/npm.log)"
            return 1
        fi
        cp "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.copy"
    fi
    node_ok=1
}
nodedrv() { node "$node_dir/drive.js" "$@"; }

# redis_start DIR: redis-server at its defaults (RDB snapshots on the
# default schedule, no AOF), Unix socket only.
redis_start() {
    mkdir -p "$1"
    env "$(tagof bullmq)" redis-server --port 0 --unixsocket "$1/redis.sock" --dir "$1" \
        --logfile "$1/redis.log" &
    redis_pid=$!
    until_ok 10 redis-cli -s "$1/redis.sock" ping
    export REDIS_SOCK=$1/redis.sock
}
redis_stop() {
    kill_tagged bullmq
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=
}

# The Node peers' rounds, one function for both: SYSTEM start stop DIRFN
node_round() {
    local sys=$1 r=$2 start=$3 stop=$4 c d out n_x=$n_exec n_l=$n_lat wpid
    if [ "$sys" = pgboss ]; then
        n_x=$n_exec_pgboss
        n_l=$n_lat_pgboss
    fi
    for c in 1 16; do
        d=$work/$sys.enq$c.$r
        $start "$d"
        rec "$sys" "enqueue_${c}_rate" "$r" "$(DRIVE_MAX_SECONDS=$t_enq nodedrv "$sys" enqueue "$n_enq" "$c" | field rate)"
        $stop
        rm -rf "$d"
    done
    d=$work/$sys.exec.$r
    $start "$d"
    rec "$sys" exec_rate "$r" "$(env "$(tagof "$sys")" node "$node_dir/drive.js" "$sys" exec "$n_x" 64 | field rate)"
    $stop
    rm -rf "$d"
    d=$work/$sys.lat.$r
    $start "$d"
    mkdir -p "$d/lat"
    out=$(env "$(tagof "$sys")" node "$node_dir/drive.js" "$sys" latency "$n_l" "$stamp" "$d/lat")
    rec "$sys" start_latency_p50_us "$r" "$(field start_latency_p50_us <<<"$out")"
    rec "$sys" start_latency_p99_us "$r" "$(field start_latency_p99_us <<<"$out")"
    rec "$sys" ack_latency_p50_us "$r" "$(field ack_latency_p50_us <<<"$out")"
    $stop
    rm -rf "$d"
    # memory: the server idle and with 1000 jobs (no worker); with 200
    # running, the server and the worker process
    d=$work/$sys.mem.$r
    $start "$d"
    sleep 1
    rec_mem "$sys" idle_rss_kib "$r" "$(rss "$sys" node)"
    nodedrv "$sys" put 1000 /bin/true
    sleep 0.5
    rec_mem "$sys" rss_1000_queued_kib "$r" "$(rss "$sys" node)"
    $stop
    rm -rf "$d"
    $start "$d"
    env "$(tagof "$sys")" node "$node_dir/drive.js" "$sys" work 200 >/dev/null &
    wpid=$!
    nodedrv "$sys" put 200 /bin/sleep 120
    until_ok 60 has_procs "$sys" sleep 200
    sleep 0.5
    rec_mem "$sys" rss_200_running_kib "$r" "$(rss "$sys")"
    kill -9 "$wpid"
    wait "$wpid" 2>/dev/null || true
    $stop
    rm -rf "$d"
}

node_kill9() {
    local sys=$1 start=$2 stop=$3 kill=$4 d=$work/$1.kill total
    $start "$d"
    nodedrv "$sys" enqueue "$n_kill" 16 >/dev/null
    $kill
    $start "$d"
    total=$(nodedrv "$sys" count | field total)
    rec "$sys" lost_on_kill9 1 $((n_kill - total))
    rec "$sys" acked_before_kill9 1 "$n_kill"
    $stop
    rm -rf "$d"
}

pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
pg_user=postgres
pg_template=$work/pg.template
pg_setup() {
    if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
        echo "# skip pgboss: PostgreSQL is not installed"
        return 1
    fi
    id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
    mkdir -p "$pg_template"
    chown "$pg_user" "$pg_template"
    # initdb at its defaults (fsync on, synchronous_commit on); --no-sync
    # only skips flushing the template itself to disk.
    if ! runuser -u "$pg_user" -- "$pg_bin/initdb" -D "$pg_template/data" -U postgres \
        --no-sync >"$work/initdb.log" 2>&1; then
        echo "# skip pgboss: initdb failed: $(tail -n 1 "$work/initdb.log")"
        return 1
    fi
}
# pg_start DIR: a private cluster copied from the template, listening on
# a Unix socket in DIR only, at PostgreSQL's defaults otherwise.
pg_start() {
    pg_dir=$1
    if [ ! -d "$pg_dir/data" ]; then
        mkdir -p "$pg_dir"
        cp -a "$pg_template/data" "$pg_dir/data"
        chown "$pg_user" "$pg_dir"
    fi
    runuser -u "$pg_user" -- env "$(tagof pgboss)" "$pg_bin/pg_ctl" -D "$pg_dir/data" \
        -l "$pg_dir/pg.log" -o "-c listen_addresses='' -c unix_socket_directories=$pg_dir" \
        -w -t 60 start >/dev/null
    pg_running=1
    export PGHOST=$pg_dir PGUSER=postgres PGDATABASE=postgres
    # pg-boss's schema and queue, once: two processes creating them at
    # the same time deadlock.
    nodedrv pgboss count >/dev/null
}
pg_stop() {
    runuser -u "$pg_user" -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate -w stop \
        >/dev/null 2>&1 || true
    kill_tagged pgboss
    pg_running=
}
# A crash: kill -9 of every process of the cluster at once.
pg_crash() {
    kill_tagged pgboss
    pg_running=
}

# --------------------------------------------------------------- rounds

declare -A active
for s in $peers; do active[$s]=1; done
if [ -n "${active[bullmq]:-}${active[pgboss]:-}" ]; then
    # redis-server and postgresql: the optional peers' servers.
    if ! "$src/scripts/deps.sh" bench-optional >"$work/deps.log" 2>&1; then
        echo "# skip bullmq, pgboss: their servers are not installed: $(tail -n 1 "$work/deps.log")"
        unset 'active[bullmq]' 'active[pgboss]'
    elif ! node_setup; then
        unset 'active[bullmq]' 'active[pgboss]'
    fi
fi
if [ -n "${active[bullmq]:-}" ] && ! command -v redis-server >/dev/null; then
    echo "# skip bullmq: redis-server is not installed"
    unset 'active[bullmq]'
fi
if [ -n "${active[pgboss]:-}" ] && ! pg_setup; then
    unset 'active[pgboss]'
fi

on() { [ -n "${active[$1]:-}" ]; }
# timed LABEL CMD...: CMD, then how long it took, as a context line.
timed() {
    local label=$1 t=$SECONDS
    shift
    "$@"
    timings="$timings $label $((SECONDS - t))s"
}
for ((r = 1; r <= runs; r++)); do
    timings=
    echo "# round $r of $runs, load $(uptime | sed 's/.*load average: //')"
    rec raw spawn_rate "$r" "$("$drive" raw 2 2 | field rate)"
    if on jobq; then timed jobq jobq_round "$r"; fi
    if on beanstalkd; then
        for s in beanstalkd beanstalkd_binlog beanstalkd_fsync; do timed "$s" bs_round "$s" "$r"; done
    fi
    if on tsp; then timed tsp tsp_round "$r"; fi
    if on nq; then timed nq nq_round "$r"; fi
    if on bullmq; then timed bullmq node_round bullmq "$r" redis_start redis_stop; fi
    if on pgboss; then timed pgboss node_round pgboss "$r" pg_start pg_stop; fi
    echo "# round $r took:$timings"
done
if on jobq; then jobq_kill9; fi
if on beanstalkd; then
    for s in beanstalkd beanstalkd_binlog beanstalkd_fsync; do bs_kill9 "$s"; done
fi
if on tsp; then tsp_kill9; fi
if on nq; then nq_kill9; fi
if on bullmq; then node_kill9 bullmq redis_start redis_stop redis_stop; fi
if on pgboss; then node_kill9 pgboss pg_start pg_stop pg_crash; fi

echo "# load at end: $(uptime | sed 's/.*load average: //'); took $(($(date +%s) - t_start)) s"

# ------------------------------------------------------------- reporting

mkdir -p "$results"
cp "$raw" "$results/peers.raw" # every run's figures (not committed)
load_end=$(uptime | sed 's/.*load average: //')
"$src/bench/peers/report.sh" "$raw" "$results" "$runs" "$load_end" "$machine"

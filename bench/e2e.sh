#!/bin/bash
# e2e.sh — `make bench-e2e` (run by bench/run.sh with JOBQ_BUILD and
# JOBQ_SRC set): the real jobqd, driven over its socket by a protocol
# client (bench/e2e/client.c), against what the machine allows without it
# (bench/e2e/raw.c), measured in this run. Prints one line per figure,
#   RESULT <key> <value> <unit>
# and '#' lines of context: the settings, the load of the machine, each
# goal of issue 4 and whether this run met it. docs/BENCHMARKS.md explains
# the figures.
#
# Every figure gets a fresh jobqd on a fresh state directory under
# $JOBQ_BENCH_DIR (default /tmp), with the default flags but those named
# below, its log to a file. Short figures are the median of $RUNS runs
# (default 3), each with its own daemon; exec and its raw reference are
# interleaved so that noise on a shared machine hits both. Everything
# started here is killed on exit, job processes included.
set -euo pipefail

build=${JOBQ_BUILD:?run through bench/run.sh}
src=${JOBQ_SRC:?run through bench/run.sh}
bin=$build/bench/e2e
runs=${RUNS:-3}
exec_jobs=${EXEC_JOBS:-20000}        # e2e.exec_rate: jobs per run
exec_batch=${EXEC_BATCH:-1000}       #   jobs per submit request
submit_conns=${SUBMIT_CONNS:-16}     # e2e.submit_rate: connections
submit_depth=${SUBMIT_DEPTH:-64}     #   requests in flight on each
submit_n=${SUBMIT_N:-100000}         #   one-job submits per run
latency_n=${LATENCY_N:-300}          # start latency: jobs per run
fill_n=${FILL_N:-2000}               # RSS per running job: jobs
idle_s=${IDLE_S:-5}                  # idle wake-ups: seconds observed
quiet_wait=${QUIET_WAIT:-5}          # most seconds to wait for a quiet CPU

for prog in client raw; do
    if [ ! -x "$bin/$prog" ]; then
        echo "e2e.sh: $bin/$prog missing (make BUILD=$build benches)" >&2
        exit 1
    fi
done

T=$(mktemp -d "${JOBQ_BENCH_DIR:-/tmp}/jobq-bench-e2e.XXXXXX")
DPID=
n_daemon=0
unset JOBQ_SOCKET JOBQD_CONFIG XDG_STATE_HOME

# Kills the daemon of the moment and every job process of a daemon of
# this run: jobs carry JOBQ_INSTANCE=<state dir>/jobq.db, and each runs in
# its own session, so killing the daemon does not reach them.
kill_all() {
    local p
    if [ -n "$DPID" ]; then
        kill -9 "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
        DPID=
    fi
    for p in /proc/[0-9]*; do
        if grep -qzs "^JOBQ_INSTANCE=$T/" "$p/environ" 2>/dev/null; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
}
trap 'kill_all; rm -rf "$T"' EXIT
trap 'exit 1' INT TERM

# 2000 running jobs hold a pipe and a pidfd each.
need_fds=$((2 * fill_n + 1000))
if [ "$(ulimit -n)" -lt "$need_fds" ]; then
    ulimit -n "$need_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

# The stamp job: its own _start, no libc (bench/e2e/stamp.c says why);
# failing that a static libc build, failing that the Makefile's.
stamp_kind="no libc, static"
if ! "${CC:-cc}" -O2 -static -nostdlib -fno-stack-protector -fno-pie -no-pie -DSTAMP_NOLIBC \
    -o "$T/stamp" "$src/bench/e2e/stamp.c" 2>/dev/null || ! "$T/stamp" >/dev/null; then
    stamp_kind="static libc"
    if ! "${CC:-cc}" -O2 -static -o "$T/stamp" "$src/bench/e2e/stamp.c" 2>/dev/null; then
        stamp_kind="dynamic (adds the loader's time)"
        cp "$bin/stamp" "$T/stamp"
    fi
fi

# start_daemon [jobqd flags...]: a fresh jobqd, ready when ping answers.
# Sets DPID and SOCK.
start_daemon() {
    local dir end
    n_daemon=$((n_daemon + 1))
    dir=$T/d$n_daemon
    mkdir -p "$dir"
    SOCK=$dir/jobq.sock
    "$build/jobqd" --state-dir "$dir" --foreground "$@" 2>"$dir/jobqd.log" &
    DPID=$!
    end=$(($(date +%s) + 10))
    until "$build/jobq" --socket "$SOCK" ping >/dev/null 2>&1; do
        if [ "$(date +%s)" -gt "$end" ] || ! kill -0 "$DPID" 2>/dev/null; then
            echo "e2e.sh: jobqd did not become ready; its log:" >&2
            tail -n 20 "$dir/jobqd.log" >&2
            exit 1
        fi
        sleep 0.02
    done
}

stop_daemon() {
    kill_all
    rm -rf "$T/d$n_daemon"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Voluntary context switches of every thread of the process: each is a
# thread going to sleep, i.e. one wake-up later.
vcsw() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}'; }

median() {
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

out=$T/figures # "key value" lines of every run
declare -A val

# med KEY: the median over the runs of KEY.
med() { awk -v k="$1" '$1 == k {print $2}' "$out" | median; }

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
noise() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), CPU idle $(cpu_idle)% over 1 s"; }

# settle: before each measurement, waits up to $quiet_wait seconds for a
# second with at least 60% of the CPUs idle, and records what it saw.
settle() {
    local end=$(($(date +%s) + quiet_wait)) idle
    while :; do
        idle=$(cpu_idle)
        if [ "$idle" -ge 60 ] || [ "$(date +%s)" -ge "$end" ]; then
            break
        fi
    done
    echo "cpu_idle_pct $idle" >>"$out"
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
echo "# state dirs on $(df -P "$T" | awk 'NR == 2 {print $1 " (" $6 ")"}'); $("$build/jobqd" --version 2>&1 | head -1)"
echo "# runs per figure: $runs (medians) for spawn/exec, submit, latency; 1 for idle and RSS"
echo "# before: $(noise)"

# ---- idle: RSS after start, wake-ups over idle_s seconds ---------------
# Measured from 2 s after ready: the store checkpoints the WAL once, 1 s
# after the start-up's last commit; nothing is periodic after that.
settle
start_daemon
sleep 2
echo "e2e.idle_rss_kib $(rss_kib "$DPID")" >>"$out"
a=$(vcsw "$DPID")
sleep "$idle_s"
b=$(vcsw "$DPID")
awk -v a="$a" -v b="$b" -v s="$idle_s" 'BEGIN {printf "e2e.idle_wakeups_per_s %.2f\n", (b - a) / s}' >>"$out"
echo "idle_threads $(ls /proc/"$DPID"/task | wc -l)" >>"$out"
stop_daemon

# ---- start latency: one job at a time on an idle daemon, and the floors
# under it: a plain posix_spawn of the same program, one durable write ---
for ((i = 0; i < runs; i++)); do
    settle
    "$bin/raw" start "$latency_n" "$T/stamp" >>"$out"
    "$bin/raw" fsync "$T" 200 >>"$out"
    start_daemon
    "$bin/client" "$SOCK" latency "$latency_n" "$T/stamp" >>"$out"
    stop_daemon
done

# ---- exec rate, interleaved with its raw reference ---------------------
for ((i = 0; i < runs; i++)); do
    settle
    "$bin/raw" spawn 3 2 >>"$out"
    start_daemon --concurrency 64
    "$bin/client" "$SOCK" exec "$exec_jobs" "$exec_batch" /bin/true >>"$out"
    stop_daemon
done

# ---- submit rate: one job per request, pipelined ------------------------
for ((i = 0; i < runs; i++)); do
    settle
    start_daemon
    "$bin/client" "$SOCK" submit "$submit_conns" "$submit_depth" "$submit_n" >>"$out"
    stop_daemon
done

# ---- RSS per running job ------------------------------------------------
settle
start_daemon --concurrency "$fill_n"
sleep 0.5
before=$(rss_kib "$DPID")
"$bin/client" "$SOCK" fill "$fill_n" sleep 30 >>"$out"
sleep 0.5 # every copier parked, every pgid recorded
after=$(rss_kib "$DPID")
echo "fill_rss_before_kib $before" >>"$out"
echo "fill_rss_after_kib $after" >>"$out"
awk -v a="$before" -v b="$after" -v n="$fill_n" \
    'BEGIN {printf "e2e.rss_per_running_job_bytes %.0f\n", (b - a) * 1024 / n}' >>"$out"
stop_daemon

echo "# after: $(noise)"

# ---- the figures --------------------------------------------------------
for k in raw.spawn_rate raw.spawn_start_p50_us raw.spawn_start_p99_us raw.fsync_p50_us \
    e2e.exec_rate exec_submit_ms e2e.submit_rate submit_req_p50_us submit_req_p99_us \
    submit_writes_per_commit submit_commit_ms e2e.start_latency_p50_us e2e.start_latency_p99_us \
    start_latency_min_us start_latency_max_us start_before_ack_pct send_to_start_p50_us send_to_start_p99_us \
    e2e.rss_per_running_job_bytes fill_start_ms e2e.idle_rss_kib e2e.idle_wakeups_per_s \
    idle_threads; do
    val[$k]=$(med "$k")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b}'; }
exec_ratio=$(ratio "${val[e2e.exec_rate]}" "${val[raw.spawn_rate]}")

echo "# exec: $exec_jobs x /bin/true in submit requests of $exec_batch jobs, all pipelined on one"
echo "#   connection, --concurrency 64; first submit sent to last job terminal (wait, then list)"
echo "# submit: $submit_conns connections x $submit_depth requests in flight, one job per request"
echo "#   (/bin/true scheduled 1 h ahead, so no job runs), $submit_n requests per run"
echo "# latency: $latency_n jobs per run, one at a time, 2-5 ms idle between; the job is a program"
echo "#   ($stamp_kind) printing CLOCK_REALTIME, compared with the time the submit reply was read;"
echo "#   signed: a job that started before the reply arrived counts negative; raw.spawn_start:"
echo "#   the same program started by a plain posix_spawn, call to print; raw.fsync: one 4 KiB"
echo "#   append + fdatasync on the state dirs' disk (the floor of one durable commit)"
echo "# RSS: $fill_n x 'sleep 30', --concurrency $fill_n; VmRSS after all run minus before"
echo "RESULT raw.spawn_rate ${val[raw.spawn_rate]} per_s"
echo "RESULT e2e.exec_rate ${val[e2e.exec_rate]} per_s"
echo "RESULT e2e.exec_vs_raw_spawn $exec_ratio x"
echo "RESULT raw.spawn_start_p50_us ${val[raw.spawn_start_p50_us]} us"
echo "RESULT raw.spawn_start_p99_us ${val[raw.spawn_start_p99_us]} us"
echo "RESULT raw.fsync_p50_us ${val[raw.fsync_p50_us]} us"
echo "RESULT e2e.submit_rate ${val[e2e.submit_rate]} per_s"
echo "RESULT e2e.start_latency_p50_us ${val[e2e.start_latency_p50_us]} us"
echo "RESULT e2e.start_latency_p99_us ${val[e2e.start_latency_p99_us]} us"
echo "RESULT e2e.rss_per_running_job_bytes ${val[e2e.rss_per_running_job_bytes]} bytes"
echo "RESULT e2e.idle_rss_kib ${val[e2e.idle_rss_kib]} KiB"
echo "RESULT e2e.idle_wakeups_per_s ${val[e2e.idle_wakeups_per_s]} per_s"
echo "# exec: submitting took ${val[exec_submit_ms]} ms of the run"
echo "# submit: request latency p50 ${val[submit_req_p50_us]} us, p99 ${val[submit_req_p99_us]} us;" \
    "${val[submit_writes_per_commit]} writes per commit, ${val[submit_commit_ms]} ms per commit"
echo "# latency: min ${val[start_latency_min_us]} us, max ${val[start_latency_max_us]} us," \
    "${val[start_before_ack_pct]}% started before the reply arrived;" \
    "submit sent -> started p50 ${val[send_to_start_p50_us]} us, p99 ${val[send_to_start_p99_us]} us"
echo "# RSS: $(awk '$1 == "fill_rss_before_kib" {print $2}' "$out") KiB before," \
    "$(awk '$1 == "fill_rss_after_kib" {print $2}' "$out") KiB with $fill_n running;" \
    "all running ${val[fill_start_ms]} ms after the first submit"
echo "# idle: ${val[idle_threads]} threads"
echo "# noise: CPU idle in the second before each measurement (waiting up to ${quiet_wait} s for" \
    "60%): $(awk '$1 == "cpu_idle_pct" {printf "%s%s%%", sep, $2; sep = " "}' "$out")"

goal() {
    local what=$1 ok
    ok=$(awk "BEGIN {print ($2) ? 1 : 0}")
    if [ "$ok" = 1 ]; then echo "# goal $what: met"; else echo "# goal $what: NOT met"; fi
}
goal "e2e.exec_rate >= 0.8 x raw.spawn_rate (ratio $exec_ratio)" "$exec_ratio >= 0.8"
goal "e2e.submit_rate >= 50000" "${val[e2e.submit_rate]} >= 50000"
goal "e2e.start_latency_p50_us <= 500" "${val[e2e.start_latency_p50_us]} <= 500"
goal "e2e.start_latency_p99_us <= 2000" "${val[e2e.start_latency_p99_us]} <= 2000"
goal "e2e.rss_per_running_job_bytes <= 16384" "${val[e2e.rss_per_running_job_bytes]} <= 16384"
goal "e2e.idle_rss_kib <= 8192" "${val[e2e.idle_rss_kib]} <= 8192"
goal "e2e.idle_wakeups_per_s <= 1" "${val[e2e.idle_wakeups_per_s]} <= 1"

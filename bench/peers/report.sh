#!/bin/bash
# report.sh RAW RESULTS_DIR RUNS LOAD MACHINE — the reporting half of bench/peers.sh:
# reads the "system key run value" lines of one run, prints the RESULT lines
# (medians), the context lines and the goals of issue 7, and writes
# RESULTS_DIR/peers.md (medians with the min-max of the runs) and
# RESULTS_DIR/peers_{exec,enqueue,latency,memory}.png with gnuplot.
set -euo pipefail
raw=$1 out=$2 runs=$3 load=$4 machine=$5
systems="jobq beanstalkd beanstalkd_binlog beanstalkd_fsync tsp nq bullmq pgboss"
# jobq's CLI is a row of its own in the table and plots, for comparison
# with tsp and nq, which can only be driven through theirs.
all="jobq jobq_cli ${systems#jobq }"
workloads="enqueue_1_rate enqueue_16_rate exec_rate start_latency_p50_us start_latency_p99_us
idle_rss_kib rss_1000_queued_kib rss_200_running_kib lost_on_kill9"
stats=$(mktemp)
trap 'rm -f "$stats"' EXIT

# "system key median min max n" per pair.
awk '{v[$1 " " $2] = v[$1 " " $2] " " $4}
    END {
        for (k in v) {
            n = split(substr(v[k], 2), a, " ")
            for (i = 1; i <= n; i++)
                for (j = i + 1; j <= n; j++)
                    if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            print k, med, a[1], a[n], n
        }
    }' "$raw" | sort >"$stats"

get() { # SYSTEM KEY [FIELD: 3 median, 4 min, 5 max]
    awk -v s="$1" -v k="$2" -v f="${3:-3}" '$1 == s && $2 == k {print $f; found = 1}
        END {if (!found) print "n/a"}' "$stats"
}
has() { grep -q "^$1 " "$stats"; }
unit() {
    case $1 in
    *_rate) echo jobs/s ;;
    *_us) echo us ;;
    *_kib) echo KiB ;;
    lost_on_kill9) echo "of_$(get "$2" acked_before_kill9)_acked" ;;
    esac
}
fmt() { # a number as printed in the table: integers, 3 significant digits below 100
    awk -v x="$1" 'BEGIN {if (x == "n/a") print x; else if (x + 0 >= 100 || x == int(x)) printf "%d", x + 0.5; else printf "%.3g", x}'
}

echo "RESULT raw.spawn_rate $(get raw spawn_rate) jobs/s"
for s in $systems; do
    has "$s" || continue
    for w in $workloads; do
        echo "RESULT $s.$w $(get "$s" "$w") $(unit "$w" "$s")"
    done
done
echo "RESULT jobq.enqueue_batch_rate $(get jobq enqueue_batch_rate) jobs/s"
if has jobq_cli; then
    echo "# jobq through its CLI (one process per job, as tsp and nq are driven): enqueue_1 $(get jobq_cli enqueue_1_rate) jobs/s, enqueue_16 $(get jobq_cli enqueue_16_rate) jobs/s, exec $(get jobq_cli exec_rate) jobs/s, start latency p50 $(get jobq_cli start_latency_p50_us) us, p99 $(get jobq_cli start_latency_p99_us) us"
fi
range() { echo "$(fmt "$(get "$1" "$2" 4)")-$(fmt "$(get "$1" "$2" 5)")"; }
for s in raw $systems; do
    has "$s" || continue
    if [ "$s" = raw ]; then
        echo "# spread (min-max of $runs runs): raw.spawn_rate $(range raw spawn_rate)"
        continue
    fi
    echo "# spread: $s enqueue_1 $(range "$s" enqueue_1_rate), enqueue_16 $(range "$s" enqueue_16_rate), exec $(range "$s" exec_rate), start p50 $(range "$s" start_latency_p50_us), p99 $(range "$s" start_latency_p99_us), RSS idle $(range "$s" idle_rss_kib), 1000 queued $(range "$s" rss_1000_queued_kib), 200 running $(range "$s" rss_200_running_kib)"
done
for s in $systems; do
    has "$s" || continue
    if [ "$(get "$s" ack_latency_p50_us)" != n/a ]; then
        echo "# $s: submit acknowledged after $(get "$s" ack_latency_p50_us) us (p50)"
    fi
    echo "# $s: PSS idle $(get "$s" idle_rss_pss_kib) KiB, 1000 queued $(get "$s" rss_1000_queued_pss_kib) KiB, 200 running $(get "$s" rss_200_running_pss_kib) KiB"
done

# The goals of issue 7, judged on this run's medians.
goal() { # TEXT A OP B
    local ok
    ok=$(awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN {
        if (a == "n/a" || b == "n/a") { print "n/a"; exit }
        print ((op == ">=" && a + 0 >= b + 0) || (op == "<=" && a + 0 <= b + 0) || (op == "==" && a + 0 == b + 0)) ? "met" : "NOT met" }')
    echo "# goal $1 ($2 $3 $4): $ok"
}
x() { awk -v a="$1" -v k="$2" 'BEGIN {if (a == "n/a") print a; else printf "%.1f", a * k}'; }
goal "jobq.exec_rate >= 3 x tsp.exec_rate" "$(get jobq exec_rate)" ">=" "$(x "$(get tsp exec_rate)" 3)"
goal "jobq.exec_rate >= nq.exec_rate" "$(get jobq exec_rate)" ">=" "$(get nq exec_rate)"
goal "jobq.enqueue_16_rate >= beanstalkd.enqueue_16_rate" "$(get jobq enqueue_16_rate)" ">=" "$(get beanstalkd enqueue_16_rate)"
goal "jobq.idle_rss_kib <= 4 x beanstalkd.idle_rss_kib" "$(get jobq idle_rss_kib)" "<=" "$(x "$(get beanstalkd idle_rss_kib)" 4)"
goal "jobq.lost_on_kill9 == 0" "$(get jobq lost_on_kill9)" "==" 0

# ---- peers.md

label() {
    case $1 in
    jobq) echo "jobq" ;;
    jobq_cli) echo "jobq, through its CLI" ;;
    beanstalkd) echo "beanstalkd (no binlog)" ;;
    beanstalkd_binlog) echo "beanstalkd -b (binlog, fsync every 50 ms)" ;;
    beanstalkd_fsync) echo "beanstalkd -b -f0 (fsync every write)" ;;
    tsp) echo "task-spooler (tsp -S 2)" ;;
    nq) echo "nq (-c, 2 queue dirs)" ;;
    bullmq) echo "BullMQ on Redis" ;;
    pgboss) echo "pg-boss on PostgreSQL" ;;
    esac
}
cell() { # SYSTEM KEY: "median (min-max)" or the median alone for one run
    local m lo hi
    m=$(get "$1" "$2")
    [ "$m" = n/a ] && { echo "–"; return; }
    lo=$(get "$1" "$2" 4)
    hi=$(get "$1" "$2" 5)
    if [ "$(get "$1" "$2" 6)" -gt 1 ]; then
        echo "$(fmt "$m") ($(fmt "$lo")–$(fmt "$hi"))"
    else
        fmt "$m"
    fi
}
{
    echo "# jobq and its peers: \`make bench-peers\`"
    echo
    echo "Generated by bench/peers.sh on $(date -u +%F) — $machine; load average at the end: $load."
    echo "Each figure is the median of $runs runs, with the lowest and highest in brackets; the"
    echo "systems took turns within each run. docs/BENCHMARKS.md (section Peers) says how each system"
    echo "was driven and what the figures mean."
    echo
    echo "Ceiling: \`raw.spawn_rate\` (posix_spawn + wait of /bin/true, 2 plain C loops) $(cell raw spawn_rate) jobs/s."
    echo
    echo "| system | enqueue, 1 client (jobs/s) | enqueue, 16 clients (jobs/s) | exec /bin/true (jobs/s) | start latency p50 (µs) | start latency p99 (µs) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for s in $all; do
        has "$s" || continue
        echo "| $(label "$s") | $(cell "$s" enqueue_1_rate) | $(cell "$s" enqueue_16_rate) | $(cell "$s" exec_rate) | $(cell "$s" start_latency_p50_us) | $(cell "$s" start_latency_p99_us) |"
    done
    echo
    echo "jobq's durable batch path (\`jobq submit --batch\`, one transaction): $(cell jobq enqueue_batch_rate) jobs/s."
    echo
    echo "| system | idle RSS (KiB) | RSS, 1000 queued (KiB) | RSS, 200 running (KiB) | PSS idle / 1000 queued / 200 running (KiB) | lost on kill -9 |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for s in $systems; do
        has "$s" || continue
        echo "| $(label "$s") | $(cell "$s" idle_rss_kib) | $(cell "$s" rss_1000_queued_kib) | $(cell "$s" rss_200_running_kib) | $(fmt "$(get "$s" idle_rss_pss_kib)") / $(fmt "$(get "$s" rss_1000_queued_pss_kib)") / $(fmt "$(get "$s" rss_200_running_pss_kib)") | $(get "$s" lost_on_kill9) of $(get "$s" acked_before_kill9) |"
    done
    echo
    echo "Plots: [exec](peers_exec.png), [enqueue](peers_enqueue.png), [latency](peers_latency.png), [memory](peers_memory.png)."
} >"$out/peers.md"

# ---- plots

if ! command -v gnuplot >/dev/null; then
    echo "# no gnuplot: plots not drawn" >&2
    exit 0
fi
dat=$(mktemp -d)
trap 'rm -rf "$dat" "$stats"' EXIT
short() {
    case $1 in
    beanstalkd) echo "beanstalkd" ;;
    beanstalkd_binlog) echo "beanstalkd -b" ;;
    beanstalkd_fsync) echo "beanstalkd -b -f0" ;;
    jobq_cli) echo "jobq CLI" ;;
    bullmq) echo "BullMQ" ;;
    pgboss) echo "pg-boss" ;;
    *) echo "$1" ;;
    esac
}
table() { # FILE KEY... : one row per system, "label med min max" per key
    local f=$1 s k row
    shift
    : >"$f"
    for s in $all; do
        has "$s" || continue
        row="\"$(short "$s")\""
        for k in "$@"; do
            row="$row $(get "$s" "$k") $(get "$s" "$k" 4) $(get "$s" "$k" 5)"
        done
        case $row in *n/a*) row=${row//n\/a/NaN} ;; esac
        echo "$row" >>"$f"
    done
}
table "$dat/exec" exec_rate
table "$dat/enq" enqueue_1_rate enqueue_16_rate
table "$dat/lat" start_latency_p50_us start_latency_p99_us
table "$dat/mem" idle_rss_kib rss_1000_queued_kib rss_200_running_kib
sed -i '/^"jobq CLI"/d' "$dat/mem"
# How many jobs ran at once in the exec workload; nq's missing idle bar.
sed -i -e 's/^"jobq"/"jobq (64)"/' -e 's/^"jobq CLI"/"jobq CLI (64)"/' -e 's/^"beanstalkd\([^"]*\)"/"beanstalkd\1 (64)"/' \
    -e 's/^"tsp"/"tsp (2)"/' -e 's/^"nq"/"nq (2)"/' -e 's/^"BullMQ"/"BullMQ (64)"/' \
    -e 's/^"pg-boss"/"pg-boss (64)"/' "$dat/exec"
sed -i 's/^"nq"/"nq (no daemon)"/' "$dat/mem"
spawn=$(get raw spawn_rate)
common="set terminal pngcairo size 1000,560 font 'DejaVu Sans,11' noenhanced
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics lc rgb '#dddddd'
set xtics rotate by -25 nomirror
set key top right
set bars front"
gnuplot <<EOF
$common
set output '$out/peers_exec.png'
set title "exec: /bin/true jobs, first submit to last completion (median, min-max of $runs runs)"
set ylabel 'jobs/s'
set yrange [0:*]
set key top right
plot '$dat/exec' using 2:3:4:xtic(1) title 'exec rate (jobs at once in brackets)' lc rgb '#3b6ea8', \
     $spawn with lines dt 2 lw 2 lc rgb '#c0392b' title sprintf('raw.spawn_rate %.0f/s: spawn+wait of /bin/true, 2 loops', $spawn)

set output '$out/peers_enqueue.png'
set title "enqueue: jobs acknowledged per second (log scale)"
set ylabel 'jobs/s'
set logscale y
set format y '%.0s%c'
set yrange [10:*]
plot '$dat/enq' using 2:3:4:xtic(1) title '1 client' lc rgb '#3b6ea8', \
     '' using 5:6:7 title '16 clients' lc rgb '#e08e2b'

set output '$out/peers_latency.png'
set title "start latency on an idle system: submit to job start (log scale)"
set ylabel 'milliseconds'
set format y '%g'
set yrange [0.1:*]
set key top left
plot '$dat/lat' using (\$2/1000):(\$3/1000):(\$4/1000):xtic(1) title 'p50' lc rgb '#3b6ea8', \
     '' using (\$5/1000):(\$6/1000):(\$7/1000) title 'p99' lc rgb '#e08e2b'

set output '$out/peers_memory.png'
set title "memory: RSS of the system's own processes, not the jobs' (log scale)"
set ylabel 'MiB'
set yrange [0.1:*]
plot '$dat/mem' using (\$2/1024):(\$3/1024):(\$4/1024):xtic(1) title 'idle' lc rgb '#3b6ea8', \
     '' using (\$5/1024):(\$6/1024):(\$7/1024) title '1000 queued' lc rgb '#e08e2b', \
     '' using (\$8/1024):(\$9/1024):(\$10/1024) title '200 running' lc rgb '#5a9e4b'
EOF

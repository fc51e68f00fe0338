#!/bin/bash
# http.sh — jobqd --http: /livez, /readyz and /metrics scraped with a tiny
# client while real jobs run, the numbers checked to move; unknown paths,
# other methods, oversized and slow requests; /readyz during the drain; a
# port in use at start; and the --threads default following a fake cgroup
# CPU quota (the JOBQ_TEST_CGROUP_ROOT hook).
. "$(dirname "$0")/lib.sh"

HTTPGET=$JOBQ_BUILD/tools/httpget
if [ ! -x "$HTTPGET" ]; then
    echo "SKIP: http: $HTTPGET is not built"
    exit 0
fi
PORT=$("$HTTPGET" --free-port)

# get [OPTIONS] PATH: status line, blank line, body.
get() { "$HTTPGET" --timeout 5 "${@:1:$#-1}" "$PORT" "${@: -1}"; }
status_of() { get "$@" | head -n 1; }
scrape() { get /metrics | tail -n +3; }
# value SCRAPE SERIES: the sample of one series ("name" or 'name{labels}').
value() { awk -v s="$2" '$1 == s { print $2; found = 1 } END { exit !found }' <<<"$1"; }

start_daemon --http "127.0.0.1:$PORT" --request-timeout 1s --shutdown-grace 2s || exit 1

# ---- start-up -------------------------------------------------------------

out=$(timeout 10 "$JOBQD" --state-dir "$T/other" --foreground --http "127.0.0.1:$PORT" 2>&1)
rc=$?
if [ $rc -eq 1 ] && grep -q "cannot listen for HTTP on 127.0.0.1:$PORT" <<<"$out"; then
    pass "a port in use at start is a clear error and exit 1"
else
    fail "a port in use at start is a clear error and exit 1" "status $rc: $out"
fi

# ---- endpoints ------------------------------------------------------------

expect "/livez answers 200 ok" "HTTP/1.1 200 OK|ok" "$(get /livez | sed -n '1p;3p' | paste -sd'|')"
expect "/readyz answers 200 while serving" "HTTP/1.1 200 OK" "$(status_of /readyz)"
expect "an unknown path is 404" "HTTP/1.1 404 Not Found" "$(status_of /nope)"
expect "a path below an endpoint is 404" "HTTP/1.1 404 Not Found" "$(status_of /metrics/x)"
expect "a query string does not change the endpoint" "HTTP/1.1 200 OK" \
    "$(status_of '/livez?verbose=1')"
expect "POST is 405" "HTTP/1.1 405 Method Not Allowed" "$(get --method POST /metrics | head -n 1)"
h=$(get --head --headers /metrics)
if [ "$(head -n 1 <<<"$h")" = "HTTP/1.1 200 OK" ] && grep -q '^Content-Length: [1-9]' <<<"$h" &&
    [ -z "$(sed '1,/^$/d' <<<"$h")" ]; then
    pass "HEAD /metrics has the headers and no body"
else
    fail "HEAD /metrics has the headers and no body" "$h"
fi
ct=$(get --headers /metrics | grep -i '^Content-Type:')
expect "/metrics is the Prometheus text format" \
    "Content-Type: text/plain; version=0.0.4; charset=utf-8" "$ct"

# ---- metrics move as jobs run ----------------------------------------------

before=$(scrape)
sub0=$(value "$before" jobq_jobs_submitted_total)
commits0=$(value "$before" jobq_store_commit_seconds_count)
batch0=$(value "$before" jobq_store_batch_size_count)
a=$(jq submit -- true)
b=$(jq submit -- sh -c 'sleep 0.2')
c=$(jq submit -- false)
jq wait "$a" "$b" "$c" >/dev/null 2>&1
after=$(scrape)
expect "jobq_jobs_submitted_total counts the submits" $((sub0 + 3)) \
    "$(value "$after" jobq_jobs_submitted_total)"
expect "jobq_jobs_completed_total counts successes by queue" 2 \
    "$(value "$after" 'jobq_jobs_completed_total{queue="default",outcome="succeeded"}')"
expect "jobq_jobs_completed_total counts failures by outcome" 1 \
    "$(value "$after" 'jobq_jobs_completed_total{queue="default",outcome="exited"}')"
expect "jobq_job_duration_seconds counts each attempt" 3 \
    "$(value "$after" jobq_job_duration_seconds_count)"
expect "jobq_job_duration_seconds puts the 0.2 s job above 0.1 s" 2 \
    "$(value "$after" 'jobq_job_duration_seconds_bucket{le="0.1"}')"
expect "jobq_job_wait_seconds counts each start" 3 "$(value "$after" jobq_job_wait_seconds_count)"
expect "jobq_jobs shows the store's counts" "2 1 0" \
    "$(value "$after" 'jobq_jobs{queue="default",state="succeeded"}') $(value "$after" \
        'jobq_jobs{queue="default",state="failed"}') $(value "$after" \
        'jobq_jobs{queue="default",state="queued"}')"
if [ "$(value "$after" jobq_store_commit_seconds_count)" -gt "$commits0" ] &&
    [ "$(value "$after" jobq_store_batch_size_count)" -gt "$batch0" ]; then
    pass "jobq_store_commit_seconds and jobq_store_batch_size grow with commits"
else
    fail "jobq_store_commit_seconds and jobq_store_batch_size grow with commits" \
        "commits $commits0 -> $(value "$after" jobq_store_commit_seconds_count)"
fi
ok=1
for m in process_resident_memory_bytes process_open_fds process_cpu_seconds_total \
    process_start_time_seconds; do
    v=$(value "$after" $m) || { ok=0; echo "missing $m"; continue; }
    awk -v v="$v" 'BEGIN { exit !(v > 0) }' || { ok=0; echo "$m = $v"; }
done
[ $ok = 1 ] && pass "process metrics are there and positive" ||
    fail "process metrics are there and positive" "see above"
if [ "$(value "$after" 'jobq_coroutines{state="running"}')" -ge 1 ] &&
    [ "$(value "$after" 'jobq_coroutines{state="parked_chan"}')" -ge 1 ]; then
    pass "jobq_coroutines counts coroutines by state (the scrape's own is running)"
else
    fail "jobq_coroutines counts coroutines by state (the scrape's own is running)" \
        "$(grep '^jobq_coroutines' <<<"$after")"
fi

# The text format, line by line: comments are HELP or TYPE, samples are
# name{labels} value, and every sample's family has a TYPE.
bad=$(awk '
    /^# (HELP|TYPE) / { if ($2 == "TYPE") typed[$3] = 1; next }
    /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.eE+-]+$/ {
        n = $1; sub(/\{.*/, "", n); f = n; sub(/_(bucket|sum|count)$/, "", f)
        if (!(n in typed) && !(f in typed)) print "untyped: " $0
        next
    }
    { print "bad line: " $0 }' <<<"$after")
expect "every line of /metrics is valid exposition format" "" "$bad"

long=$(jq submit -- sleep 30)
wait_state "$long" running
during=$(scrape)
expect "jobq_running and jobq_jobs{state=running} see the running job" "1 1" \
    "$(value "$during" jobq_running) $(value "$during" 'jobq_jobs{queue="default",state="running"}')"
jq cancel "$long" >/dev/null
wait_state "$long" canceled

# ---- oversized and slow requests --------------------------------------------

big=$("$HTTPGET" --big 20000 "$PORT" /metrics)
case $big in
"HTTP/1.1 4"* | closed) pass "an oversized header is refused (${big#HTTP/1.1 })" ;;
*) fail "an oversized header is refused" "$big" ;;
esac
"$HTTPGET" --slow 140 100 --timeout 15 "$PORT" /metrics >"$T/slow.out" 2>&1 &
slow_pid=$!
# Under way once the listener is full.
until_ok 5 "grep -q 'http.connection_cap' '$T/jobqd.log'" || fail "the slow clients fill the listener" \
    "no http.connection_cap line"
t0=$(date +%s%N)
pinged=$(jq ping 2>&1 >/dev/null && echo ok)
t1=$(date +%s%N)
if [ "$pinged" = ok ] && [ $(((t1 - t0) / 1000000)) -lt 1000 ]; then
    pass "the job socket answers at once while slow HTTP clients hold the listener"
else
    fail "the job socket answers at once while slow HTTP clients hold the listener" \
        "ping: $pinged after $(((t1 - t0) / 1000000)) ms"
fi
wait "$slow_pid"
slow_rc=$?
if [ $slow_rc -eq 0 ] && grep -q '^closed 140 of 140' "$T/slow.out"; then
    pass "slow requests are cut off after --request-timeout, past the connection cap too"
else
    fail "slow requests are cut off after --request-timeout, past the connection cap too" \
        "$(cat "$T/slow.out")"
fi
expect "HTTP serves again after the slow clients are gone" "HTTP/1.1 200 OK" "$(status_of /livez)"
id=$(jq submit --wait -- true 2>&1)
expect "jobs still run after the HTTP abuse" 0 $?

# ---- draining -------------------------------------------------------------

long=$(jq submit -- sleep 30)
wait_state "$long" running
kill -TERM "$DAEMON_PID"
if until_ok 5 "test \"\$(status_of /readyz)\" = 'HTTP/1.1 503 Service Unavailable'"; then
    pass "/readyz is 503 while draining"
else
    fail "/readyz is 503 while draining" "$(get /readyz)"
fi
expect "/livez is still 200 while draining" "HTTP/1.1 200 OK" "$(status_of /livez)"
expect "jobq_draining is 1 while draining" 1 "$(value "$(scrape)" jobq_draining)"
stop_daemon TERM
expect "the drain ends with exit 0" 0 "$DAEMON_STATUS"
if get /livez >/dev/null 2>&1; then
    fail "the HTTP port is closed after exit" "still answering"
else
    pass "the HTTP port is closed after exit"
fi

# ---- --threads follows the cgroup CPU quota ---------------------------------

# A fresh state directory: the drain above left its job to be re-run.
STATE=$T/state-cpu
SOCK=$STATE/jobq.sock
cpus=$(nproc)
for case in "150000 100000:2" "50000 100000:1" "max 100000:$cpus"; do
    quota=${case%:*} want=${case##*:}
    [ "$want" -gt "$cpus" ] && want=$cpus # the affinity mask caps it too
    mkdir -p "$T/cgroup"
    echo "$quota" >"$T/cgroup/cpu.max"
    export JOBQ_TEST_CGROUP_ROOT=$T/cgroup
    start_daemon || exit 1
    unset JOBQ_TEST_CGROUP_ROOT
    got=$(jq stats --json | "$JGET" .coroutines.threads)
    expect "cpu.max \"$quota\" gives $want scheduler threads" "$want" "$got"
    stop_daemon
done

finish

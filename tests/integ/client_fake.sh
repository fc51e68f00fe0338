#!/bin/bash
# client_fake — the real build/jobq driven against tests/tools/fake_jobqd,
# a stand-in daemon with canned replies: what a user sees (stdout, the one
# line on stderr, the exit code) for every verb, the requests the client
# sends, pipelining, and every way of failing to talk to the daemon.
# Needs no daemon. Prints "PASS: name" or "FAIL: name: why" per case.
set -u

build=${JOBQ_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
JOBQ=$build/jobq
FAKE=$build/tools/fake_jobqd
if [ ! -x "$JOBQ" ] || [ ! -x "$FAKE" ]; then
    echo "SKIP: client_fake: $JOBQ or $FAKE not built"
    exit 0
fi

tmp=$(mktemp -d)
fake_pid=
stop_fake() {
    if [ -n "$fake_pid" ]; then
        kill "$fake_pid" 2>/dev/null
        wait "$fake_pid" 2>/dev/null
        fake_pid=
    fi
}
cleanup() {
    stop_fake
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

unset JOBQ_SOCKET XDG_STATE_HOME
export HOME=$tmp/home COLUMNS=80 LC_ALL=C.UTF-8
mkdir -p "$HOME" "$tmp/r" "$tmp/work"
cd "$tmp/work" || exit 1
sock=$tmp/jobq.sock
replies=$tmp/r
failures=0

pass() { echo "PASS: $1"; }
fail() {
    echo "FAIL: $1: $2"
    failures=$((failures + 1))
}

# Waits (deadline 5 s, no fixed sleep) until path is a socket.
wait_socket() {
    local i
    for ((i = 0; i < 500; i++)); do
        [ -S "$1" ] && return 0
        sleep 0.01
    done
    return 1
}

# start_fake [fake options...]: a fresh fake (call counters reset) on $sock.
start_fake() {
    stop_fake
    rm -f "$sock" "$tmp/log"
    "$FAKE" --socket "$sock" --replies "$replies" --log "$tmp/log" "$@" &
    fake_pid=$!
    wait_socket "$sock" || { echo "FAIL: client_fake: fake_jobqd did not start"; exit 1; }
}

reply() { # method[.n] json
    printf '%s\n' "$2" >"$replies/$1.json"
}

# jobq ARGS...: runs the client on $sock; sets rc, out in $tmp/out, err in $tmp/err.
jobq() {
    "$JOBQ" --socket "$sock" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
}

# check NAME RC OUT ERR: OUT is the exact stdout ("-" to skip); ERR an
# extended regex for the single stderr line ("" for none, "-" to skip).
check() {
    local name=$1 want_rc=$2 want_out=$3 want_err=$4 lines
    if [ "$rc" != "$want_rc" ]; then
        fail "$name" "exit $rc, want $want_rc (stderr: $(head -c 300 "$tmp/err"))"
        return
    fi
    if [ "$want_out" != "-" ] && [ "$(cat "$tmp/out")" != "$want_out" ]; then
        fail "$name" "stdout was: $(head -c 400 "$tmp/out")"
        return
    fi
    lines=$(wc -l <"$tmp/err")
    if [ "$want_err" = "" ] && [ -s "$tmp/err" ]; then
        fail "$name" "unexpected stderr: $(head -c 300 "$tmp/err")"
        return
    fi
    if [ "$want_err" != "-" ] && [ "$want_err" != "" ]; then
        if [ "$lines" -ne 1 ]; then
            fail "$name" "want one stderr line, got $lines: $(head -c 300 "$tmp/err")"
            return
        fi
        if ! grep -Eq -- "$want_err" "$tmp/err"; then
            fail "$name" "stderr was: $(cat "$tmp/err")"
            return
        fi
    fi
    pass "$name"
}

# logged STRING: the fake received a request line containing STRING.
logged() {
    grep -Fq -- "$1" "$tmp/log"
}

# job ID STATE [OUTCOME EXIT_CODE SIGNAL]: a job object.
job() {
    local outcome=${3:-null} code=${4:-null} sig=${5:-null}
    [ "$outcome" != null ] && outcome="\"$outcome\""
    printf '{"id":%s,"name":null,"queue":"default","state":"%s","priority":0,' "$1" "$2"
    printf '"command":["echo","hi"],"env":[],"cwd":"/tmp","unique_key":null,"attempt":1,'
    printf '"max_attempts":3,"backoff_base_ms":1000,"backoff_max_ms":600000,"timeout_ms":null,'
    printf '"deadline":null,"run_at":null,"created_at":"2026-12-04T16:18:16.100Z",'
    printf '"started_at":null,"finished_at":null,"updated_at":"2026-12-04T16:18:16.100Z",'
    printf '"outcome":%s,"exit_code":%s,"signal":%s,"error":null,"uid":1000,' \
        "$outcome" "$code" "$sig"
    printf '"log_truncated":false,"attempts":[]}'
}

# ---- reaching the daemon ---------------------------------------------------

"$JOBQ" --socket "$tmp/none.sock" ping >"$tmp/out" 2>"$tmp/err"
rc=$?
check unreachable_no_socket 69 "" \
    "^jobq: cannot reach jobqd at $tmp/none.sock: no such file \(is it running\? see 'make run'\)$"

rm -f "$sock"
"$FAKE" --socket "$sock" --stale
jobq ping
check unreachable_stale_socket 69 "" "^jobq: cannot reach jobqd at $sock: connection refused"

start_fake --refuse -32008
jobq ping
check too_many_connections_is_temporary 75 "" "^jobq: jobqd has too many connections open; try again"

start_fake --hangup
jobq ping
check daemon_hangs_up 69 "" "^jobq: jobqd at $sock closed the connection before replying"

start_fake --garbage
jobq ping
check garbage_reply_is_protocol_error 70 "" "^jobq: bad reply from jobqd"

start_fake
reply ping '{"result":"pong"}'
jobq ping
check ping 0 "pong" ""

# The default chain: ./var/jobq.sock of a checkout, then the per-user state
# directory, with JOBQ_SOCKET above both.
mkdir -p "$tmp/chk/var" "$tmp/xdg/jobq"
stop_fake
"$FAKE" --socket "$tmp/chk/var/jobq.sock" --replies "$replies" &
fake_pid=$!
wait_socket "$tmp/chk/var/jobq.sock"
out=$(cd "$tmp/chk" && "$JOBQ" ping 2>&1)
[ "$out" = pong ] && pass default_chain_checkout_socket ||
    fail default_chain_checkout_socket "$out"
out=$(JOBQ_SOCKET=$tmp/chk/var/jobq.sock "$JOBQ" ping 2>&1)
[ "$out" = pong ] && pass default_chain_env || fail default_chain_env "$out"
stop_fake
"$FAKE" --socket "$tmp/xdg/jobq/jobq.sock" --replies "$replies" &
fake_pid=$!
wait_socket "$tmp/xdg/jobq/jobq.sock"
out=$(XDG_STATE_HOME=$tmp/xdg "$JOBQ" ping 2>&1)
[ "$out" = pong ] && pass default_chain_user_state_dir || fail default_chain_user_state_dir "$out"
stop_fake

# ---- submit ------------------------------------------------------------------

start_fake
reply submit "{\"result\":$(job 42 queued)}"
jobq submit --queue q --timeout 5s --env A=1 --attempts 3 -- echo hi
check submit_prints_the_id_alone 0 "42" ""
if logged "\"method\":\"submit\",\"params\":{\"command\":[\"echo\",\"hi\"],\"queue\":\"q\",\"max_attempts\":3,\"timeout_ms\":5000,\"env\":[\"A=1\"],\"cwd\":\"$tmp/work\"}"; then
    pass submit_sends_the_spec
else
    fail submit_sends_the_spec "$(cat "$tmp/log")"
fi

jobq submit --json -- echo hi
if [ $rc -eq 0 ] && grep -q '"id": 42' "$tmp/out" && grep -q '"state": "queued"' "$tmp/out"; then
    pass submit_json_prints_the_job
else
    fail submit_json_prints_the_job "exit $rc: $(cat "$tmp/out" "$tmp/err")"
fi

reply wait "{\"result\":{\"jobs\":[$(job 42 failed exited 3)],\"timed_out\":false}}"
jobq submit --wait -- sh -c 'exit 3'
check submit_wait_exits_with_the_status 3 "42" \
    "^jobq: job 42 failed: exited with status 3 \(see 'jobq logs 42'"
logged '"method":"wait","params":{"ids":[42]}' && pass submit_wait_holds_on_the_server ||
    fail submit_wait_holds_on_the_server "$(cat "$tmp/log")"

jobq submit --timeout 5x -- true
check usage_error_bad_duration 64 "" \
    '^jobq: --timeout: bad duration "5x": unit must be ms, s, m, h or d$'

for e in '-32602 65 jobqd rejected the request: queue: too long' \
    '-32003 75 jobqd is full' '-32002 77 permission denied: nope' \
    '-32004 74 jobqd could not store the change: disk full' \
    '-32005 75 jobqd is shutting down'; do
    read -r code want msg <<<"$e"
    reply submit "{\"error\":{\"code\":$code,\"message\":\"m\",\"data\":{\"field\":\"queue\",\"reason\":\"too long\",\"queued\":5,\"max_queued\":5}}}"
    [ "$code" = -32002 ] && reply submit '{"error":{"code":-32002,"message":"m","data":{"reason":"nope"}}}'
    [ "$code" = -32004 ] && reply submit '{"error":{"code":-32004,"message":"m","data":{"reason":"disk full"}}}'
    jobq submit -- true
    check "submit_error_$code" "$want" "" "^jobq: $msg"
done

# --batch: one request, one transaction; ids one per line.
printf '%s\n' '{"command":["a"]}' '' '{"command":["b"],"priority":5}' '{"command":["c"]}' \
    >"$tmp/batch.ndjson"
start_fake
reply submit '{"result":{"jobs":[{"id":10,"state":"queued"},{"id":11,"state":"queued"},{"id":7,"state":"succeeded","existing":true}]}}'
jobq submit --batch "$tmp/batch.ndjson" --queue bulk
check batch_prints_ids 0 "$(printf '10\n11\n7')" ""
n=$(grep -c '"method":"submit"' "$tmp/log")
if [ "$n" = 1 ] && logged '"params":{"jobs":[{"command":["a"],"queue":"bulk","cwd":' &&
    logged '{"command":["b"],"priority":5,"queue":"bulk",'; then
    pass batch_is_one_request
else
    fail batch_is_one_request "$n submit requests: $(cat "$tmp/log")"
fi
"$JOBQ" --socket "$sock" submit --batch - <"$tmp/batch.ndjson" >"$tmp/out" 2>"$tmp/err"
rc=$?
check batch_from_stdin 0 "$(printf '10\n11\n7')" ""

reply submit '{"error":{"code":-32602,"message":"bad","data":{"index":1,"field":"priority","reason":"out of range"}}}'
jobq submit --batch "$tmp/batch.ndjson"
check batch_rejection_names_the_line 65 "" \
    "^jobq: $tmp/batch.ndjson:3: jobqd rejected this job: priority: out of range; nothing was submitted$"
printf '%s\n' '{"command":["a"]}' 'not json' >"$tmp/bad.ndjson"
jobq submit --batch "$tmp/bad.ndjson"
check batch_bad_line_is_caught_before_sending 65 "" "^jobq: --batch $tmp/bad.ndjson: line 2: not valid JSON"

# ---- list, show ----------------------------------------------------------------

created=$(date -u -d '-200 sec' +%Y-%m-%dT%H:%M:%S.000Z)
long='for i in $(seq 1 100); do echo "line $i"; sleep 1; done'
start_fake
reply list "{\"result\":{\"jobs\":[{\"id\":1042,\"state\":\"running\",\"queue\":\"default\",\"attempt\":1,\"max_attempts\":3,\"created_at\":\"$created\",\"name\":null,\"command\":[\"sh\",\"-c\",\"$(printf '%s' "$long" | sed 's/"/\\"/g')\"]},{\"id\":7,\"state\":\"succeeded\",\"queue\":\"mail\",\"attempt\":1,\"max_attempts\":1,\"created_at\":\"$created\",\"name\":\"nightly\",\"command\":[\"x\"]}],\"next_before_id\":null}}"
COLUMNS=60 jobq list --state running,succeeded
check list_table 0 "$(printf '%s\n' \
    'ID    STATE      QUEUE    ATTEMPTS  AGE     NAME/COMMAND' \
    "1042  running    default  1/3       3m ago  sh -c 'for i in…" \
    '7     succeeded  mail     1/1       3m ago  nightly')" ""
logged '"method":"list","params":{"state":["running","succeeded"],"limit":100}' &&
    pass list_sends_filters || fail list_sends_filters "$(cat "$tmp/log")"
jobq list --json
if [ $rc -eq 0 ] && [ "$(head -c 1 "$tmp/out")" = "[" ] && grep -q '"id": 1042' "$tmp/out"; then
    pass list_json_is_an_array
else
    fail list_json_is_an_array "exit $rc: $(head -c 300 "$tmp/out")"
fi

# show with several ids: the gets are pipelined, the fake answers newest
# first, and the client still prints them in the order asked.
start_fake --reverse 3
reply get '{"result":{"id":"@params.id","state":"succeeded","queue":"default","command":["true"],"attempt":1,"max_attempts":1,"attempts":[{"attempt":1,"started_at":"2026-12-04T16:18:16.123Z","finished_at":"2026-12-04T16:18:17.123Z","outcome":"succeeded","exit_code":0,"signal":null,"error":null,"log_bytes":3,"log_truncated":false}]}}'
jobq show 3 1 2
order=$(grep '^id:' "$tmp/out" | awk '{print $2}' | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$order" = "3 1 2 " ] && logged '# flush 3'; then
    pass pipelined_replies_matched_by_id
else
    fail pipelined_replies_matched_by_id "exit $rc, order '$order', log: $(cat "$tmp/log")"
fi
grep -q '^1        2026-12-04T16:18:16.123Z  1.0s      succeeded' "$tmp/out" &&
    pass show_has_attempts_table || fail show_has_attempts_table "$(cat "$tmp/out")"

start_fake
reply get '{"error":{"code":-32001,"message":"no job 9","data":{"id":9}}}'
jobq show 9
check show_unknown_job 66 "" "^jobq: no job 9 \(see 'jobq list'\)$"

# ---- logs ------------------------------------------------------------------------

for ((i = 0; i < 256; i++)); do printf "\\$(printf %03o $i)"; done >"$tmp/bytes"
printf 'end\n' >>"$tmp/bytes"
start_fake
reply logs "{\"result\":{\"id\":1,\"attempt\":1,\"offset\":0,\"next_offset\":260,\"data\":\"$(base64 -w0 "$tmp/bytes")\",\"eof\":true,\"done\":true,\"truncated\":false,\"state\":\"succeeded\"}}"
jobq logs 1
if [ $rc -eq 0 ] && cmp -s "$tmp/out" "$tmp/bytes"; then
    pass logs_are_exact_bytes
else
    fail logs_are_exact_bytes "exit $rc, $(wc -c <"$tmp/out") bytes"
fi
rm -f "$replies/logs.json"

# --follow: output while running, then the next attempt after a retry,
# until the job is terminal.
start_fake
reply logs.1 '{"result":{"id":5,"attempt":1,"offset":0,"next_offset":2,"data":"YQo=","eof":true,"done":false,"truncated":false,"state":"running"}}'
reply logs.2 '{"result":{"id":5,"attempt":1,"offset":2,"next_offset":4,"data":"Ygo=","eof":true,"done":true,"truncated":false,"state":"retrying"}}'
reply logs.3 '{"result":{"id":5,"attempt":2,"offset":0,"next_offset":2,"data":"Ywo=","eof":true,"done":true,"truncated":false,"state":"succeeded"}}'
jobq logs 5 --follow
check logs_follow_across_attempts 0 "$(printf 'a\nb\nc')" ""
logged '"params":{"id":5,"offset":2,"limit":262144,"wait_ms":30000,"attempt":1}' &&
    logged '"params":{"id":5,"offset":0,"limit":262144,"wait_ms":30000,"attempt":2}' &&
    pass logs_follow_requests || fail logs_follow_requests "$(cat "$tmp/log")"
rm -f "$replies"/logs.*.json

# ---- wait: the exit code is the job's outcome -------------------------------------

start_fake
while read -r name want state outcome code sig msg; do
    reply wait "{\"result\":{\"jobs\":[$(job 8 "$state" "$outcome" "$code" "$sig")],\"timed_out\":false}}"
    jobq wait 8
    [ "$msg" = none ] && msg=""
    check "wait_$name" "$want" "" "$msg"
done <<'EOF'
succeeded 0 succeeded succeeded 0 null none
exited 3 failed exited 3 null ^jobq: job 8 failed: exited with status 3
timeout 124 failed timeout null 15 ^jobq: job 8 failed: timed out
deadline 124 failed deadline null 15 ^jobq: job 8 failed
signal 137 failed signaled null 9 ^jobq: job 8 failed: killed by signal 9 \(SIGKILL\)
canceled 125 canceled canceled null 15 ^jobq: job 8 was canceled
not_found 127 failed spawn_error 127 null ^jobq: job 8 failed
not_executable 126 failed spawn_error 126 null ^jobq: job 8 failed
EOF

reply wait "{\"result\":{\"jobs\":[$(job 8 succeeded succeeded 0),$(job 9 failed exited 4),$(job 10 failed timeout null 15)],\"timed_out\":false}}"
jobq wait 8 9 10
check wait_several_first_failure 4 "" "^jobq: job 9 failed: exited with status 4"

reply wait "{\"result\":{\"jobs\":[$(job 8 running)],\"timed_out\":true}}"
jobq wait 8 --timeout 1s
check wait_timeout_elapsed 79 "" "^jobq: job 8 is still running after 1.0s"
logged '"method":"wait","params":{"ids":[8],"timeout_ms":1000}' && pass wait_sends_timeout ||
    fail wait_sends_timeout "$(cat "$tmp/log")"

reply wait '{"error":{"code":-32001,"message":"no job 77","data":{"id":77}}}'
jobq wait 77
check wait_unknown_job 66 "" "^jobq: no job 77 \(see 'jobq list'\)$"

# ---- cancel, retry, pause, resume, purge, stats, version ----------------------------

reply cancel '{"result":{"results":[{"id":50,"state":"canceled"},{"id":99,"error":{"code":-32001,"message":"no job 99","data":{"id":99}}}]}}'
jobq cancel 50 99
check cancel_reports_per_job 66 "50 canceled" "^jobq: no job 99 \(see 'jobq list'\)$"

reply retry '{"result":{"results":[{"id":4,"error":{"code":-32009,"message":"running","data":{"id":4,"state":"running"}}}]}}'
jobq retry 4
check retry_conflict 65 "" "^jobq: cannot retry job 4: it is running$"

reply pause '{"result":{"queue":"mail","paused":true}}'
jobq pause mail
check pause 0 "queue mail paused" ""
reply resume '{"error":{"code":-32002,"message":"denied","data":{"reason":"only administrators may resume queues"}}}'
jobq resume mail
check resume_denied 77 "" "^jobq: permission denied: only administrators may resume queues"

reply purge '{"result":{"purged":118}}'
jobq purge --older-than 1d --state succeeded
check purge 0 "purged 118 jobs" ""
logged '"params":{"older_than_ms":86400000,"states":["succeeded"]}' && pass purge_sends_filters ||
    fail purge_sends_filters "$(cat "$tmp/log")"

reply stats '{"result":{"states":{"scheduled":0,"queued":3,"running":2,"retrying":0,"succeeded":120,"failed":4,"canceled":1},"queues":{"default":{"paused":false,"concurrency":null,"running":2,"states":{"scheduled":0,"queued":3,"running":2,"retrying":0,"succeeded":120,"failed":4,"canceled":1}}},"running":2,"concurrency":64,"max_queued":null,"throughput":{"window_s":60,"submitted":30,"finished":28,"finished_per_s":0.47},"coroutines":{"total":9,"running":1,"ready":0,"parked":8},"store":{"jobs":130,"db_bytes":262144},"connections":1,"uptime_ms":3600000}}'
jobq stats
if [ $rc -eq 0 ] && grep -q '^running      2 of 64 at once$' "$tmp/out" &&
    grep -q '^default  no      2' "$tmp/out" && grep -q 'parked 8' "$tmp/out"; then
    pass stats
else
    fail stats "exit $rc: $(cat "$tmp/out" "$tmp/err")"
fi
jobq stats --json
grep -q '"finished_per_s": 0.47' "$tmp/out" && pass stats_json || fail stats_json "$(cat "$tmp/out")"

reply version '{"result":{"version":"9.9.9","git":"abc1234","protocol":1}}'
jobq version
if [ $rc -eq 0 ] && [ "$(sed -n 2p "$tmp/out")" = "jobqd 9.9.9 (git abc1234, protocol 1)" ] &&
    grep -q '^jobq [0-9]' "$tmp/out"; then
    pass version_client_and_daemon
else
    fail version_client_and_daemon "exit $rc: $(cat "$tmp/out" "$tmp/err")"
fi

rm -f "$replies/stats.json"
jobq stats
check unknown_method_means_old_daemon 70 "" "^jobq: jobqd does not know 'stats'"

jobq help
if [ $rc -eq 0 ] && grep -q '^exit status:' "$tmp/out" && grep -q 'XDG_STATE_HOME' "$tmp/out"; then
    pass help_lists_exit_codes_and_socket_chain
else
    fail help_lists_exit_codes_and_socket_chain "exit $rc"
fi
jobq frobnicate
check unknown_command 64 "" "^jobq: unknown command 'frobnicate' \(see 'jobq help'\)$"

stop_fake
[ "$failures" -eq 0 ]

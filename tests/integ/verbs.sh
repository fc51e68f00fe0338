#!/bin/bash
# verbs — every verb of jobq against a real jobqd, with its output and its
# exit code as docs and `jobq --help` promise them.
. "$(dirname "$0")/lib.sh"

start_daemon --concurrency 4 || exit 1
cd "$T" || exit 1

# ping, version
expect "ping answers pong" "pong" "$(jq ping)"
case "$(jq version)" in
*jobqd*) pass "version names the daemon's version" ;;
*) fail "version names the daemon's version" "$(jq version)" ;;
esac

# submit prints the id alone; wait exits with the outcome
id=$(jq submit -- echo hello)
if [[ $id =~ ^[0-9]+$ ]]; then pass "submit prints the id alone"; else fail "submit prints the id alone" "'$id'"; fi
jq wait "$id"
expect "wait: succeeded job exits 0" 0 $?
expect "logs: exact output" "hello" "$(jq logs "$id")"
expect "show --json: state" succeeded "$(jq show --json "$id" | "$JGET" .state)"
expect "show --json: exit_code" 0 "$(jq show --json "$id" | "$JGET" .exit_code)"
expect "show --json: command" '["echo","hello"]' "$(jq show --json "$id" | "$JGET" .command)"
expect "show --json: attempts" 1 "$(jq show --json "$id" | "$JGET" .attempts.#)"
for f in id name queue state priority command attempt max_attempts timeout_ms deadline run_at \
    created_at started_at finished_at exit_code error attempts; do
    if ! jq show --json "$id" | "$JGET" ".$f" >/dev/null; then
        fail "show --json has $f" "missing"
        continue
    fi
done
pass "show --json carries the contract's fields"

id=$(jq submit -- sh -c 'echo out; echo err >&2; exit 3')
jq wait "$id" 2>/dev/null
expect "wait: exit status of a failed job" 3 $?
expect "logs: stdout and stderr interleaved" "$(printf 'out\nerr')" "$(jq logs "$id")"
# logs --json: the logs result of PROTOCOL 7.4 for the whole log, data in base64
out=$(jq logs --json "$id")
expect "logs --json: the whole log in base64" "$(printf 'out\nerr\n' | base64) 1 true" \
    "$("$JGET" .data <<<"$out") $("$JGET" .attempt <<<"$out") $("$JGET" .done <<<"$out")"
# logs --follow --json: one object per line, across attempts, the last one done
id=$(jq submit --attempts 2 --backoff 10ms -- sh -c 'echo "try $JOBQ_ATTEMPT"; sleep 0.2; exit 1')
lines=$(timeout 20 "$JOBQ" --socket "$SOCK" logs --follow --json "$id")
data="" ends=""
while IFS= read -r l; do
    d=$("$JGET" .data <<<"$l" | base64 -d | tr -d '\n')
    [ -n "$d" ] && data="$data $("$JGET" .attempt <<<"$l"):$d"
    [ "$("$JGET" .done <<<"$l")" = true ] && ends="$ends $("$JGET" .attempt <<<"$l")"
done <<<"$lines"
expect "logs --follow --json: NDJSON, the output of each attempt, then its end" \
    " 1:try 1 2:try 2 / 1 2" "$data /$ends"

jq submit --wait -- sh -c 'exit 7' >/dev/null 2>&1
expect "submit --wait: exit status" 7 $?

id=$(jq submit --timeout 300ms -- sleep 30)
jq wait "$id" 2>/dev/null
expect "wait: timeout exits 124" 124 $?
expect "show: outcome timeout" timeout "$(jq show --json "$id" | "$JGET" .outcome)"

id=$(jq submit -- sh -c 'kill -9 $$')
jq wait "$id" 2>/dev/null
expect "wait: killed by signal 9 exits 137" 137 $?

id=$(jq submit -- /nonexistent/command)
jq wait "$id" 2>/dev/null
expect "wait: command not found exits 127" 127 $?

id=$(jq submit -- sleep 30)
wait_state "$id" running
jq cancel "$id" >/dev/null
jq wait "$id" 2>/dev/null
expect "cancel running: wait exits 125" 125 $?
expect "cancel running: state" canceled "$(state_of "$id")"

# retry a failed job: it runs again
id=$(jq submit -- sh -c 'test -e flag || { touch flag; exit 1; }')
jq wait "$id" 2>/dev/null
jq retry "$id" >/dev/null
expect "retry: the exit code of the retried job" 0 "$(jq wait "$id" >/dev/null 2>&1; echo $?)"
expect "retry: two attempts recorded" 2 "$(jq show --json "$id" | "$JGET" .attempts.#)"

# refusals say what stands in the way, without contradicting the state
msg=$(jq cancel "$id" 2>&1 >/dev/null)
expect "cancel of a succeeded job: exit 65 and why" "65 jobq: cannot cancel job $id: it already succeeded" "$? $msg"
msg=$(jq retry "$id" 2>&1 >/dev/null)
expect "retry of a succeeded job: exit 65 and why" \
    "65 jobq: cannot retry job $id: it already succeeded; only a failed or canceled job can be retried" "$? $msg"
id=$(jq submit --deadline +300ms -- sleep 30)
jq wait "$id" >/dev/null 2>&1
msg=$(jq retry "$id" 2>&1 >/dev/null)
expect "retry past the deadline: exit 65 and why" "65 jobq: cannot retry job $id: its deadline has passed" "$? $msg"

# attempts and backoff
id=$(jq submit --attempts 3 --backoff 50ms -- false)
jq wait "$id" 2>/dev/null
expect "attempts: failed after 3" "failed 3" "$(state_of "$id") $(jq show --json "$id" | "$JGET" .attempt)"

# unique keys
a=$(jq submit --unique k1 -- true)
b=$(jq submit --unique k1 -- true)
expect "unique: same key returns the same id" "$a" "$b"

# env and cwd
mkdir -p "$T/wd"
id=$(jq submit --env FOO=bar --cwd "$T/wd" -- sh -c 'echo $FOO; pwd')
jq wait "$id"
expect "env and cwd applied" "$(printf 'bar\n%s' "$T/wd")" "$(jq logs "$id")"

# delay: scheduled first, then runs
id=$(jq submit --delay 1s -- true)
expect "delay: scheduled at first" scheduled "$(state_of "$id")"
jq wait --timeout 10s "$id"
expect "delay: runs when due" succeeded "$(state_of "$id")"

# deadline in the past is refused with a usage-class code
jq submit --deadline 2000-01-01T00:00:00Z -- true >/dev/null 2>&1
expect "deadline in the past is refused (65)" 65 $?

# list, its filters and --json
out=$(jq list --state failed --limit 2 --json | "$JGET" .#)
expect "list --state --limit --json" 2 "$out"
if jq list | head -1 | grep -q '^ID  *STATE'; then pass "list prints a table"; else fail "list prints a table" "$(jq list | head -1)"; fi

# pause and resume a queue
jq pause q1 >/dev/null
id=$(jq submit --queue q1 -- true)
sleep 0.3
expect "pause: a paused queue does not dispatch" queued "$(state_of "$id")"
jq resume q1 >/dev/null
wait_state "$id" succeeded 10
expect "resume: the queue dispatches again" succeeded "$(state_of "$id")"

# batch submit: one id per line
printf '{"command":["true"]}\n{"command":["echo","b"],"name":"two"}\n' >"$T/batch.ndjson"
n=$(jq submit --batch "$T/batch.ndjson" | wc -l)
expect "submit --batch prints one id per line" 2 "$n"

# show --json, pretty-printed over many lines, submits again as it is;
# several ids print an array, which submits as several jobs.
a=$(jq submit --name again -- echo again)
b=$(jq submit -- echo other)
new=$(jq show --json "$a" | jq submit --batch -)
if [[ $new =~ ^[0-9]+$ && $new != "$a" ]]; then
    expect "show --json | submit --batch -: a new job with the same spec" \
        'again ["echo","again"]' "$(jq show --json "$new" | "$JGET" .name) $(jq show --json "$new" | "$JGET" .command)"
else
    fail "show --json | submit --batch -: a new job with the same spec" "'$new'"
fi
expect "show --json of two ids | submit --batch -: two jobs" 2 "$(jq show --json "$a" "$b" | jq submit --batch - | wc -l)"
before=$(jq list --limit 1 --json | "$JGET" .0.id)
msg=$(printf '{"command":["true"]}\n{\n  "name": "x"\n}\n' | jq submit --batch - 2>&1 >/dev/null)
expect "submit --batch: a bad multi-line spec exits 65" 65 $?
expect "submit --batch: the error names the line the spec starts on" \
    'jobq: --batch stdin: line 2: no "command" array (like "command": ["echo", "hi"])' "$msg"
expect "submit --batch: nothing submitted after a bad spec" "$before" "$(jq list --limit 1 --json | "$JGET" .0.id)"

# stats
if jq stats --json | "$JGET" .states.succeeded >/dev/null; then pass "stats --json"; else fail "stats --json" "no states"; fi
expect "stats, help ping, help version: no line ends in a space" 0 \
    "$({ jq stats; jq help ping; jq help version; } | grep -c ' $')"
expect "show: the usage in the error matches help" "jobq: show: no job id given; usage: jobq show ID... [--json]" \
    "$(jq show 2>&1)"
expect "help show: usage" "usage: jobq show ID... [--json]" "$(jq help show | head -1)"

# purge
before=$(jq list --state canceled --json | "$JGET" .#)
jq purge --state canceled >/dev/null
expect "purge: canceled jobs are gone" "1 0" "$before $(jq list --state canceled --json | "$JGET" .#)"

# logs of the attempt after the last one, held, when the job ends without
# starting it: empty and done (PROTOCOL 7.4), not not_found.
jq pause lq >/dev/null
id=$(jq submit --queue lq -- echo never)
timeout 20 "$JOBQ" --socket "$SOCK" logs --attempt 1 --follow --json "$id" >"$T/held.out" 2>&1 &
held=$!
jq cancel "$id" >/dev/null
wait "$held"
expect "logs --attempt 1 --follow of a job canceled before it started: done, exit 0" \
    "0 1 true true" "$? $("$JGET" .attempt <"$T/held.out") $("$JGET" .done <"$T/held.out") $("$JGET" .eof <"$T/held.out")"
expect "logs of an attempt two past the last: not_found" -32001 \
    "$("$PROBE" "$SOCK" send '{"jsonrpc":"2.0","id":1,"method":"logs","params":{"id":'"$id"',"attempt":2}}\n' 1 | "$JGET" .error.code)"
jq resume lq >/dev/null

# cancel and retry of more than one request's 1000 ids: several requests
jq pause many >/dev/null
ids=$(for i in $(seq 1001); do echo '{"command":["true"]}'; done | jq submit --batch - --queue many)
jq cancel $ids >"$T/cancel.out"
expect "cancel of 1001 ids: exit 0, one line each" "0 1001" "$? $(grep -c ' canceled$' "$T/cancel.out")"
expect "retry of 1001 ids --json: one results array" 1001 "$(jq retry --json $ids | "$JGET" .results.#)"
jq cancel $ids >/dev/null
jq resume many >/dev/null

# exit codes of client-side errors
jq show 999999 >/dev/null 2>&1
expect "unknown job exits 66" 66 $?
jq frobnicate >/dev/null 2>&1
expect "usage error exits 64" 64 $?
msg=$(jq show 9007199254740992 2>&1 >/dev/null)
expect "an id over 2^53-1 is a usage error" \
    '64 jobq: bad job id "9007199254740992": too large (ids go up to 9007199254740991, 2^53-1)' "$? $msg"
jq show 9007199254740991 >/dev/null 2>&1
expect "the largest id is asked for: unknown job exits 66" 66 $?
"$JOBQ" --socket "$T/nowhere.sock" ping >/dev/null 2>&1
expect "unreachable daemon exits 69" 69 $?
msg=$("$JOBQ" --socket "$T/nowhere.sock" ping 2>&1 >/dev/null)
case "$msg" in
"jobq: cannot reach jobqd at $T/nowhere.sock"*) pass "unreachable: one actionable line" ;;
*) fail "unreachable: one actionable line" "$msg" ;;
esac

stop_daemon TERM
expect "SIGTERM: jobqd exits 0" 0 "$DAEMON_STATUS"
finish

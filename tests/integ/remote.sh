#!/bin/bash
# remote.sh — jobq --url against jobqd --http --http-token-file: every verb
# over HTTP gives what it gives over the socket (output and exit status);
# no token, a wrong one or an unreadable token file is 77, an unreachable
# URL 69; a token file others can read is refused at start; /rpc is off
# without a token file; raw requests (a notification is 204, a batch, GET
# is 405, an oversized body 413 and cut off); the token never reaches the
# log; SIGHUP rotates it; a client that hangs up abandons its held wait;
# a held wait is ended by the drain with shutting_down (75).
. "$(dirname "$0")/lib.sh"

HTTPGET=$JOBQ_BUILD/tools/httpget
if [ ! -x "$HTTPGET" ]; then
    echo "SKIP: remote: $HTTPGET is not built"
    exit 0
fi
PORT=$("$HTTPGET" --free-port)
URL=http://127.0.0.1:$PORT
# A fresh token each run: 32 random bytes in hex.
TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$TOKEN" >"$T/token"

# rq ARGS...: the real client over HTTP, as jq is over the socket.
rq() { "$JOBQ" --url "$URL" --token-file "$T/token" "$@"; }
# both NAME ARGS...: the same command over the socket and over HTTP gives
# the same output and exit status.
both() {
    local name=$1 a b
    shift
    a=$(jq "$@" 2>&1)
    a="$?:$a"
    b=$(rq "$@" 2>&1)
    b="$?:$b"
    expect "$name" "$a" "$b"
}
# post BODY [AUTHORIZATION]: a raw POST /rpc (bash's /dev/tcp, as a client
# in another language would); prints the status line, then the body.
post() {
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 || exit 1
        printf "POST /rpc HTTP/1.1\r\nHost: jobq\r\nConnection: close\r\n" >&3
        [ -n "$2" ] && printf "Authorization: %s\r\n" "$2" >&3
        printf "Content-Length: %d\r\n\r\n%s" "${#1}" "$1" >&3
        tr -d "\r" <&3 | sed -n "1p; /^\$/,\$p" | sed "/^\$/d"' "$PORT" "$1" "${2-Bearer $TOKEN}"
}

# ---- start-up ---------------------------------------------------------------

chmod 0644 "$T/token"
out=$(timeout 10 "$JOBQD" --state-dir "$T/other" --foreground --http "127.0.0.1:$PORT" \
    --http-token-file "$T/token" 2>&1)
rc=$?
if [ $rc -eq 2 ] && grep -q "lets others read" <<<"$out"; then
    pass "a token file others can read is refused at start (exit 2)"
else
    fail "a token file others can read is refused at start (exit 2)" "status $rc: $out"
fi
chmod 0600 "$T/token"
start_daemon --http "127.0.0.1:$PORT" --http-token-file "$T/token" --shutdown-grace 1s || exit 1
grep -q 'http.listen .*rpc=on' "$T/jobqd.log" && pass "the listener says /rpc is on" ||
    fail "the listener says /rpc is on" "$(grep http.listen "$T/jobqd.log")"

# ---- every verb, as over the socket -----------------------------------------

out=$(rq ping 2>&1)
expect "ping over HTTP" "0:pong" "$?:$out"
both "version is the same" version
hello=$(rq submit --name hello -- sh -c 'echo hello; sleep 0.3; echo bye')
expect "submit prints the new id" 1 "$hello"
out=$(rq logs --follow "$hello" 2>&1)
expect "logs --follow streams to the end" "0:hello
bye" "$?:$out"
both "wait: 0 for a success" wait "$hello"
both "show --json" show --json "$hello"
three=$(rq submit --wait -- sh -c 'exit 3' 2>/dev/null)
expect "submit --wait exits with the command's status" 3 $?
both "wait: the command's status" wait "$three"
both "show of two ids (pipelined requests)" show "$hello" "$three"
both "logs" logs "$hello"
both "list --json" list --json
both "show of an unknown job: 66" show 9999
both "retry of a succeeded job: 65" retry "$hello"
both "wait for an unknown job: 66" wait 9999
printf '{"command":["true"]}\n{"command":["sh","-c","exit 1"],"queue":"batch"}\n' >"$T/batch.ndjson"
ids=$(rq submit --batch "$T/batch.ndjson")
expect "submit --batch" "3 4" "$(echo $ids)"
rq wait 3 >/dev/null 2>&1
expect "wait of a batch job" 0 $?
slow=$(rq submit -- sleep 30)
wait_state "$slow" running
out=$(rq wait --timeout 300ms "$slow" 2>&1)
expect "wait --timeout elapses: 79" 79 $?
out=$(rq cancel "$slow")
expect "cancel of a running job" "0:$slow canceled" "$?:$out"
rq wait "$slow" 2>/dev/null
expect "wait of a canceled job: 125" 125 $?
out=$(rq retry "$slow")
expect "retry of a canceled job" "0:$slow queued" "$?:$out"
rq cancel "$slow" >/dev/null
both "pause of a queue" pause mail
both "resume of a queue" resume mail
out=$(rq stats --json)
expect "stats --json over HTTP" 0 $?
expect "stats counts what the socket counts" "$(jq stats --json | "$JGET" .states.succeeded)" \
    "$("$JGET" .states.succeeded <<<"$out")"
out=$(rq purge --state canceled)
expect "purge over HTTP" 0 $?
both "show of the purged job: 66" show "$slow"
out=$(JOBQ_URL=$URL JOBQ_TOKEN_FILE=$T/token "$JOBQ" ping 2>&1)
expect "JOBQ_URL and JOBQ_TOKEN_FILE" "0:pong" "$?:$out"
out=$(JOBQ_URL=$URL "$JOBQ" --socket "$SOCK" ping 2>&1)
expect "--socket beats JOBQ_URL" "0:pong" "$?:$out"
out=$("$JOBQ" --socket "$SOCK" --url "$URL" ping 2>&1)
expect "--socket and --url together: 64" 64 $?
out=$("$JOBQ" --url "$URL/jobq/" --token-file "$T/token" ping 2>&1)
rc=$?
if [ $rc -eq 69 ] && grep -q "no JSON-RPC at $URL/jobq/ (HTTP 404)" <<<"$out"; then
    pass "a URL prefix is posted to PREFIX/rpc: 404 here, 69"
else
    fail "a URL prefix is posted to PREFIX/rpc: 404 here, 69" "$rc: $out"
fi

# ---- tokens -----------------------------------------------------------------

out=$("$JOBQ" --url "$URL" ping 2>&1)
rc=$?
if [ $rc -eq 77 ] && grep -q "bad or missing token: see --token-file" <<<"$out"; then
    pass "no token: 77, and what to do"
else
    fail "no token: 77, and what to do" "$rc: $out"
fi
printf 'not-the-token-at-all\n' >"$T/wrong"
out=$("$JOBQ" --url "$URL" --token-file "$T/wrong" submit -- true 2>&1)
expect "a wrong token: 77" 77 $?
out=$("$JOBQ" --url "$URL" --token-file "$T/nothing" ping 2>&1)
expect "a token file that is not there: 77" 77 $?
expect "a wrong token is refused and logged" 2 \
    "$(grep -c 'http.unauthorized .*reason=' "$T/jobqd.log")"
expect "a raw request without a token: 401" "HTTP/1.1 401 Unauthorized" \
    "$(post '{"jsonrpc":"2.0","id":1,"method":"ping"}' "" | head -n 1)"
expect "a raw request with another scheme: 401" "HTTP/1.1 401 Unauthorized" \
    "$(post '{"jsonrpc":"2.0","id":1,"method":"ping"}' "Basic $TOKEN" | head -n 1)"

# ---- raw requests -----------------------------------------------------------

expect "a raw request: the reply is the body" \
    'HTTP/1.1 200 OK|{"jsonrpc":"2.0","id":7,"result":"pong"}' \
    "$(post '{"jsonrpc":"2.0","id":7,"method":"ping"}' | paste -sd'|')"
expect "a notification: 204 and no body" "HTTP/1.1 204 No Content" \
    "$(post '{"jsonrpc":"2.0","method":"ping"}')"
expect "a batch: an array" \
    'HTTP/1.1 200 OK|[{"jsonrpc":"2.0","id":1,"result":"pong"},{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no method \"nope\"","data":{"method":"nope"}}}]' \
    "$(post '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"nope"}]' |
        paste -sd'|')"
expect "not JSON: parse_error, as on the socket" "-32700" \
    "$(post '{"jsonrpc":' | tail -n 1 | "$JGET" .error.code)"
expect "GET /rpc: 405" "HTTP/1.1 405 Method Not Allowed" \
    "$("$HTTPGET" --timeout 5 "$PORT" /rpc | head -n 1)"
big=$(timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 || exit 1
    printf "POST /rpc HTTP/1.1\r\nHost: jobq\r\nAuthorization: Bearer %s\r\n" "$1" >&3
    printf "Content-Length: 1048577\r\n\r\n{" >&3
    head -n 1 <&3 | cut -c1-12; cat <&3 >/dev/null; echo closed' "$PORT" "$TOKEN")
expect "a body over 1 MiB: 413, and the connection is closed" "HTTP/1.1 413
closed" "$big"
expect "the daemon still serves after that" "pong" "$(rq ping 2>&1)"
n=$(grep -cF "$TOKEN" "$T/jobqd.log")
expect "the token never appears in the log" 0 "$n"
expect "neither does a wrong one" 0 "$(grep -c 'not-the-token-at-all' "$T/jobqd.log")"

# ---- SIGHUP: a new token ----------------------------------------------------

OLD=$TOKEN
TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
cp "$T/token" "$T/old"
printf '%s\n' "$TOKEN" >"$T/token.new"
chmod 0600 "$T/token.new"
mv "$T/token.new" "$T/token"
kill -HUP "$DAEMON_PID"
until_ok 5 "rq ping" && pass "SIGHUP: the new token is taken" ||
    fail "SIGHUP: the new token is taken" "$(rq ping 2>&1)"
"$JOBQ" --url "$URL" --token-file "$T/old" ping >/dev/null 2>&1
expect "SIGHUP: the old token is refused" 77 $?
chmod 0666 "$T/token"
kill -HUP "$DAEMON_PID"
until_ok 5 "grep -q 'http.token_failed' '$T/jobqd.log'"
expect "SIGHUP: a token file others can read keeps the old token" "pong" "$(rq ping 2>&1)"
chmod 0600 "$T/token"
expect "the rotated tokens never appear in the log" 0 \
    "$(grep -cF -e "$TOKEN" -e "$OLD" "$T/jobqd.log")"

# ---- held requests ----------------------------------------------------------

held() { grep -c 'http.rpc ' "$T/jobqd.log"; }
long=$(rq submit -- sleep 30)
wait_state "$long" running
n=$(held)
"$JOBQ" --url "$URL" --token-file "$T/token" wait "$long" >/dev/null 2>&1 &
client=$!
until_ok 5 "[ \$(held) -gt $n ]"
kill -9 "$client"
wait "$client" 2>/dev/null
until_ok 5 "grep -q 'http.rpc_abandoned' '$T/jobqd.log'" &&
    pass "a client that hangs up abandons its held wait" ||
    fail "a client that hangs up abandons its held wait" "no http.rpc_abandoned line"
n=$(held)
"$JOBQ" --url "$URL" --token-file "$T/token" wait "$long" >"$T/held.out" 2>&1 &
client=$!
until_ok 5 "[ \$(held) -gt $n ]"
t0=$(date +%s%N)
kill -TERM "$DAEMON_PID"
wait "$client"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
if [ $rc -eq 75 ] && grep -q "shutting down" "$T/held.out" && [ $ms -lt 1000 ]; then
    pass "the drain ends a held wait with shutting_down: 75 (${ms} ms)"
else
    fail "the drain ends a held wait with shutting_down: 75" "$rc after ${ms} ms: $(cat "$T/held.out")"
fi
stop_daemon
expect "jobqd exits 0 after the drain" 0 "$DAEMON_STATUS"
expect "no coroutine leaked" 0 "$(grep -c 'jobqd.leak' "$T/jobqd.log")"

# ---- /rpc off ---------------------------------------------------------------

start_daemon --http "127.0.0.1:$PORT" --shutdown-grace 1s || exit 1
jq cancel "$long" >/dev/null # re-queued by the drain
out=$(rq ping 2>&1)
rc=$?
if [ $rc -eq 69 ] && grep -q -- "--http-token-file" <<<"$out"; then
    pass "without a token file /rpc is off: 69, and why"
else
    fail "without a token file /rpc is off: 69, and why" "$rc: $out"
fi
expect "without a token file a raw POST /rpc is 404" "HTTP/1.1 404 Not Found" \
    "$(post '{"jsonrpc":"2.0","id":1,"method":"ping"}' | head -n 1)"
stop_daemon
out=$(rq ping 2>&1)
expect "an unreachable URL: 69" 69 $?
grep -q "connection refused" <<<"$out" && pass "an unreachable URL says what happened" ||
    fail "an unreachable URL says what happened" "$out"

finish

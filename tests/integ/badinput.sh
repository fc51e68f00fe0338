#!/bin/bash
# badinput — whatever arrives on the socket gets an error or a close, and
# the daemon keeps serving everyone else: garbage, invalid UTF-8, deep
# nesting, huge numbers, a 4 MiB message, a message stalled mid-line,
# half-closed connections, connections dropped mid-request, many
# connections at once, and the connection cap.
. "$(dirname "$0")/lib.sh"

start_daemon --request-timeout 1s --max-connections 2100 || exit 1

reply() { "$PROBE" "$SOCK" send "$1" "${2:-1}" 2>/dev/null; }
code_of() { "$JGET" .error.code 2>/dev/null; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$DAEMON_PID/status"; }

base_rss=$(rss_kib)

expect "garbage: parse error" -32700 "$(reply 'this is not json\n' | code_of)"
expect "invalid UTF-8: parse error" -32700 "$(reply '{"jsonrpc":"2.0","id":1,"method":"ping","x":"\xc3\x28"}\n' | code_of)"
expect "NUL escape in a string: parse error" -32700 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"submit","params":{"command":["a\u0000b"]}}\n' | code_of)"
deep=$(printf '%.0s[' $(seq 1 10000))
expect "10k nested brackets: parse error" -32700 "$(reply "$deep\n" | code_of)"
expect "huge number as an id field: invalid params" -32602 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"get","params":{"id":1e308}}\n' | code_of)"
expect "huge priority: invalid params" -32602 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"submit","params":{"command":["true"],"priority":99999999999999999999}}\n' | code_of)"
expect "positional params: invalid params" -32602 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"get","params":[1]}\n' | code_of)"
expect "no jsonrpc member: invalid request" -32600 "$(reply '{"id":1,"method":"ping"}\n' | code_of)"
expect "unknown method: method not found" -32601 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"launch_missiles"}\n' | code_of)"
expect "unknown spec member: invalid params" -32602 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"submit","params":{"command":["true"],"timout_ms":5}}\n' | code_of)"
expect "empty command: invalid params" -32602 \
    "$(reply '{"jsonrpc":"2.0","id":1,"method":"submit","params":{"command":[]}}\n' | code_of)"
expect "notification: no reply" "TIMEOUT" \
    "$("$PROBE" "$SOCK" send '{"jsonrpc":"2.0","method":"ping"}\n' 1 2>/dev/null | head -1 | sed 's/.*TIMEOUT.*/TIMEOUT/')"

out=$("$PROBE" "$SOCK" big $((4 * 1024 * 1024)) 2>/dev/null)
if [ "$(echo "$out" | head -1 | code_of)" = -32006 ] && echo "$out" | grep -q '^EOF$'; then
    pass "4 MiB message: too_large, then closed"
else
    fail "4 MiB message: too_large, then closed" "$(echo "$out" | head -c 200)"
fi

start=$(date +%s%N)
out=$("$PROBE" "$SOCK" stall 10 2>/dev/null)
took=$((($(date +%s%N) - start) / 1000000))
if [ "$(echo "$out" | head -1 | code_of)" = -32007 ] && [ "$took" -lt 5000 ]; then
    pass "stalled mid-line: request_timeout after --request-timeout (${took}ms)"
else
    fail "stalled mid-line: request_timeout" "took ${took}ms: $out"
fi

out=$("$PROBE" "$SOCK" halfclose '{"jsonrpc":"2.0","id":7,"method":"ping"}\n' 2>/dev/null)
expect "half-closed connection still gets its reply" pong "$(echo "$out" | head -1 | "$JGET" .result)"

"$PROBE" "$SOCK" drop 1000 >/dev/null 2>&1
expect "1000 connections dropped mid-request: still serving" pong "$(jq ping 2>&1)"

# 2000 connections at once, each idle; the daemon still answers a new one.
"$PROBE" "$SOCK" hold 2000 5 >"$T/hold.out" 2>&1 &
holder=$!
until_ok 20 'grep -q connected "$T/hold.out"'
expect "2000 concurrent connections accepted" "connected 2000" "$(cat "$T/hold.out")"
expect "... and a new client is served meanwhile" pong "$(jq ping 2>&1)"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
until_ok 10 'test "$(jq stats --json | "$JGET" .connections)" -le 1'
expect "connections go back down" 1 "$(jq stats --json | "$JGET" .connections)"

end_rss=$(rss_kib)
if [ "$end_rss" -le $((base_rss * 2 + 8192)) ]; then
    pass "memory returns near its baseline (${base_rss} -> ${end_rss} KiB)"
else
    fail "memory returns near its baseline" "${base_rss} -> ${end_rss} KiB"
fi
expect "the daemon still works after all that" 0 "$(jq submit --wait -- true >/dev/null 2>&1; echo $?)"
stop_daemon TERM

# The connection cap: one past it gets a clear refusal, others go on.
start_daemon --max-connections 5 || exit 1
"$PROBE" "$SOCK" hold 5 60 >"$T/hold.out" 2>&1 &
holder=$!
until_ok 10 'grep -q connected "$T/hold.out"'
out=$("$PROBE" "$SOCK" send '{"jsonrpc":"2.0","id":1,"method":"ping"}\n' 2>/dev/null | head -1)
expect "over the connection cap: too_many_connections" -32008 "$(echo "$out" | code_of)"
msg=$(jq ping 2>&1)
case "$msg" in
*"too many connections"* | *"try again"*) pass "the client says so in one line" ;;
*) fail "the client says so in one line" "$msg" ;;
esac
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
until_ok 10 'jq ping'
expect "below the cap again: served" pong "$(jq ping 2>&1)"
stop_daemon TERM
finish

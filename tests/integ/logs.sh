#!/bin/bash
# logs.sh — jobqd's own log: --log-format json parses line by line, every
# job lifecycle event (submit, start, finish, retry, cancel, pause, resume)
# has one line with the job id, queue, attempt, outcome and duration where
# they apply, --log-file receives the lines, and a logrotate-style mv +
# SIGHUP moves writing to a fresh file without losing a line.
. "$(dirname "$0")/lib.sh"

LOG=$T/jobqd.json

# fields FILE KEY...: one line per log line, the values of KEY... separated
# by spaces ("-" where a line has no such member).
fields() {
    local f=$1 line out k
    shift
    while IFS= read -r line; do
        out=
        for k in "$@"; do
            out="$out $("$JGET" ".$k" <<<"$line" 2>/dev/null || echo -)"
        done
        echo "${out# }"
    done <"$f"
}

start_daemon --log-format json --log-level info --log-file "$LOG" || exit 1

# ---- lifecycle lines ---------------------------------------------------------

ok=$(jq submit -- true)
bad=$(jq submit --queue build --attempts 2 --backoff 10ms -- sh -c 'exit 3')
later=$(jq submit --delay 1h -- true)
long=$(jq submit -- sleep 30)
jq wait "$ok" >/dev/null
wait_state "$bad" failed
wait_state "$long" running
jq cancel "$later" "$long" >/dev/null
wait_state "$long" canceled
jq retry "$bad" >/dev/null
wait_state "$bad" failed
jq pause build >/dev/null
jq resume build >/dev/null
until_ok 5 "grep -q '\"event\":\"queue.resume\"' '$LOG'"

bad_lines=0
while IFS= read -r line; do
    "$JGET" .event <<<"$line" >/dev/null 2>&1 || bad_lines=$((bad_lines + 1))
done <"$LOG"
lines=$(wc -l <"$LOG")
if [ "$lines" -gt 10 ] && [ $bad_lines -eq 0 ]; then
    pass "--log-file gets the lines, each one JSON object ($lines lines)"
else
    fail "--log-file gets the lines, each one JSON object" "$bad_lines of $lines do not parse"
fi
expect "json lines carry ts and level" "info" "$(head -n 1 "$LOG" | "$JGET" .level)"
fields "$LOG" event id queue attempt outcome dur_ms next state >"$T/ev"

expect "a successful job: submit, start, finish" \
    "job.submit $ok default - - - - queued|job.start $ok default 1 - - - -|job.finish $ok default 1 succeeded 0 succeeded -" \
    "$(grep -E "^job\.[a-z]+ $ok " "$T/ev" | sed -E 's/succeeded [0-9]+ /succeeded 0 /' | paste -sd'|')"
expect "a failing job: one finish line per attempt, retrying then failed" \
    "1 exited retrying|2 exited failed|3 exited failed" \
    "$(awk -v id="$bad" '$1 == "job.finish" && $2 == id { print $4, $5, $7 }' "$T/ev" | paste -sd'|')"
expect "the failing job's lines name its queue" "build" \
    "$(awk -v id="$bad" '$2 == id { print $3 }' "$T/ev" | sort -u | paste -sd'|')"
expect "retry has one line with queue, attempts so far and the new state" \
    "job.retry $bad build 2 - - - queued" "$(grep "^job.retry " "$T/ev")"
expect "cancel of a scheduled job has one line" "job.cancel $later default 0 - - - canceled" \
    "$(grep "^job.cancel $later " "$T/ev")"
expect "cancel of a running job: a cancel line, then its finish line says canceled" \
    "job.cancel $long default 1 - - - canceled|job.finish $long default 1 canceled - canceled -" \
    "$(grep -E "^job\.(cancel|finish) $long " "$T/ev" | sed -E 's/canceled [0-9]+ canceled/canceled - canceled/' |
        paste -sd'|')"
durs=$(awk '$1 == "job.finish" && $6 !~ /^[0-9]+$/' "$T/ev")
expect "every finish line has a numeric dur_ms" "" "$durs"
expect "pause and resume have a line each" "queue.pause|queue.resume" \
    "$(grep -oE '"event":"queue\.(pause|resume)"' "$LOG" | cut -d'"' -f4 | paste -sd'|')"

# ---- logrotate: mv, SIGHUP, nothing lost -----------------------------------

n=40
(for i in $(seq $n); do jq submit --name "rot$i" -- true >>"$T/rot.ids" || echo "submit $i failed"; done) &
sub=$!
until_ok 10 "[ \$(wc -l <'$T/rot.ids' 2>/dev/null || echo 0) -ge 10 ]"
mv "$LOG" "$LOG.1"
kill -HUP "$DAEMON_PID"
wait "$sub"
until_ok 10 "[ -s '$LOG' ] && grep -q '\"event\":\"config.reload\"' '$LOG'" &&
    pass "SIGHUP reopens a fresh file after mv" ||
    fail "SIGHUP reopens a fresh file after mv" "$(ls -l "$T")"
for id in $(cat "$T/rot.ids"); do jq wait "$id" >/dev/null; done
missing=0 dup=0
for id in $(cat "$T/rot.ids"); do
    c=$(cat "$LOG.1" "$LOG" | grep -c "\"event\":\"job.submit\",\"id\":$id,")
    [ "$c" -eq 0 ] && missing=$((missing + 1))
    [ "$c" -gt 1 ] && dup=$((dup + 1))
done
expect "every submit line of the rotation is in the old or the new file, once" \
    "$n ids, 0 missing, 0 twice" "$(wc -l <"$T/rot.ids") ids, $missing missing, $dup twice"
before=$(grep -c '"event":"job.submit"' "$LOG.1")
after=$(grep -c '"event":"job.submit"' "$LOG")
if [ "$after" -gt 0 ] && [ "$before" -gt 0 ]; then
    pass "lines before the rotation stay in the old file, later ones go to the new"
else
    fail "lines before the rotation stay in the old file, later ones go to the new" \
        "old $before, new $after"
fi
torn=$(cat "$LOG.1" "$LOG" | while IFS= read -r line; do
    "$JGET" .event <<<"$line" >/dev/null 2>&1 || echo "$line"
done)
expect "no torn line in either file" "" "$torn"
stop_daemon

# ---- text format and levels ------------------------------------------------

STATE=$T/state-text
SOCK=$STATE/jobq.sock
start_daemon --log-file "$T/text.log" --log-level warn || exit 1
jq submit --wait -- true >/dev/null
jq submit --wait -- sh -c 'exit 1' >/dev/null 2>&1
kill -HUP "$DAEMON_PID" # a reload line is info: filtered too
stop_daemon
expect "--log-level warn drops the info lines" "" "$(grep -E ' info ' "$T/text.log")"
start_daemon --log-file "$T/text.log" --log-level info || exit 1
id=$(jq submit -- true)
jq wait "$id" >/dev/null
until_ok 5 "grep -q 'job.finish id=$id ' '$T/text.log'"
line=$(grep "job.finish id=$id " "$T/text.log")
if [[ $line =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z\ info\ job\.finish\ id=$id\ queue=\"default\"\ attempt=1\ outcome=succeeded\ .*dur_ms=[0-9]+ ]]; then
    pass "text lines: time, level, event, key=value fields"
else
    fail "text lines: time, level, event, key=value fields" "$line"
fi
stop_daemon

finish

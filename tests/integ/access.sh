#!/bin/bash
# access — SO_PEERCRED access control, as another uid would meet it: a
# second uid (via setpriv) sees and controls only its own jobs; a root
# daemon runs each job as its submitter; a daemon that is not root refuses
# other uids' jobs; the state directory, socket and database have the
# documented modes. Needs root and setpriv; skipped otherwise.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    skip "access" "needs root and setpriv to act as a second uid"
    exit 0
fi

OTHER=65534 # nobody
as_other() { setpriv --reuid $OTHER --regid $OTHER --clear-groups "$@"; }
jq_other() { as_other "$JOBQ" --socket "$SOCK" "$@"; }

start_daemon --socket-mode 0666 || exit 1
cd "$T" || exit 1

mode() { stat -c %a "$1"; }
expect "socket mode as --socket-mode" 666 "$(mode "$SOCK")"
expect "state directory: traversable, not listable" 711 "$(mode "$STATE")"
if [ -z "${JOBQ_TEST_STORE:-}" ]; then
    expect "database readable by the daemon alone" 600 "$(mode "$STATE/jobq.db")"
else
    skip "database readable by the daemon alone" "the store is PostgreSQL (pg_contract.sh)"
fi
expect "logs directory private" 700 "$(mode "$STATE/logs")"

mine=$(jq submit -- sh -c 'echo root-secret')
jq wait "$mine" >/dev/null

# The other uid submits: the job runs as that uid.
theirs=$(jq_other submit -- sh -c 'id -u; id -g')
jq_other wait "$theirs" >/dev/null 2>&1
expect "root daemon runs the job as its submitter" "$(printf '%s\n%s' $OTHER $OTHER)" \
    "$(jq_other logs "$theirs")"

# What the other uid may not see or touch.
expect "other uid: list shows only its own job" "1 $theirs" \
    "$(jq_other list --json | "$JGET" .#) $(jq_other list --json | "$JGET" .0.id)"
jq_other show "$mine" >/dev/null 2>&1
expect "other uid: show of root's job is unknown (66)" 66 $?
jq_other logs "$mine" >/dev/null 2>&1
expect "other uid: logs of root's job is unknown (66)" 66 $?
jq_other cancel "$mine" >/dev/null 2>&1
expect "other uid: cancel of root's job is unknown (66)" 66 $?
jq_other retry "$mine" >/dev/null 2>&1
expect "other uid: retry of root's job is unknown (66)" 66 $?
jq_other wait "$mine" >/dev/null 2>&1
expect "other uid: wait on root's job is unknown (66)" 66 $?
jq_other pause default >/dev/null 2>&1
expect "other uid: pause is denied (77)" 77 $?
expect "root sees every job" 2 "$(jq list --json | "$JGET" .#)"

# A job cannot read the database: it runs as its submitter and the file
# is the daemon's alone; no descriptor of the daemon's leaks into it.
id=$(jq_other submit -- sh -c "cat $STATE/jobq.db >/dev/null 2>&1 && echo readable || echo denied; ls /proc/self/fd | wc -l")
jq_other wait "$id" >/dev/null 2>&1
out=$(jq_other logs "$id")
expect "a job cannot read the database" denied "$(echo "$out" | head -1)"
# 0, 1, 2 and ls's own directory: nothing of the daemon's is inherited.
expect "a job inherits no descriptor of the daemon's" 4 "$(echo "$out" | sed -n 2p)"

# More of what a job of another uid cannot reach: root's attempt logs, the
# daemon itself, root's supplementary groups.
log=$(find "$STATE/logs" -name "$mine.1.log" | head -1)
id=$(jq_other submit -- sh -c "cat $log >/dev/null 2>&1 && echo readable || echo denied
kill -0 $DAEMON_PID 2>/dev/null && echo signalable || echo no-signal
id -G")
jq_other wait "$id" >/dev/null 2>&1
out=$(jq_other logs "$id")
expect "a job cannot read another uid's attempt log ($log)" denied "$(echo "$out" | sed -n 1p)"
expect "a job cannot signal the daemon" no-signal "$(echo "$out" | sed -n 2p)"
expect "a job has its submitter's groups only" "$OTHER" "$(echo "$out" | sed -n 3p)"

# stats and purge, as the other uid, count and touch its own jobs only.
expect "other uid: stats counts its own jobs only" 3 \
    "$(jq_other stats --json | "$JGET" .states.succeeded)"
jq_other purge >/dev/null 2>&1
expect "other uid: purge leaves root's jobs alone" succeeded "$(state_of "$mine")"
expect "other uid: purge removed its own" 0 "$(jq_other list --json | "$JGET" .#)"
stop_daemon TERM

# A daemon running as a plain user refuses other uids' jobs.
install -d -o $OTHER -g $OTHER "$T/userstate"
# setpriv itself, not the as_other function: a backgrounded function is a
# subshell, and $! would name it rather than the daemon.
setpriv --reuid $OTHER --regid $OTHER --clear-groups "$JOBQD" --state-dir "$T/userstate" \
    --foreground --socket-mode 0666 >>"$T/jobqd.log" 2>&1 &
DAEMON_PID=$!
SOCK=$T/userstate/jobq.sock
until_ok 10 'jq ping'
jq submit -- true >/dev/null 2>&1
expect "non-root daemon refuses another uid's submit (77)" 77 $?
id=$(jq_other submit -- sh -c 'id -u')
jq_other wait "$id" >/dev/null 2>&1
expect "non-root daemon runs its own uid's jobs" $OTHER "$(jq_other logs "$id")"
stop_daemon TERM

# A root daemon without CAP_DAC_READ_SEARCH (as under the systemd unit)
# cannot look into a submitter's 0700 directory: the command is then
# searched by the job itself, as the submitter.
install -d -o $OTHER -g $OTHER -m 700 "$T/privbin"
install -o $OTHER -g $OTHER -m 755 /bin/true "$T/privbin/mytrue"
STATE=$T/capstate
SOCK=$STATE/jobq.sock
setpriv --bounding-set -dac_override,-dac_read_search "$JOBQD" --state-dir "$STATE" \
    --foreground --socket-mode 0666 >>"$T/jobqd.log" 2>&1 &
DAEMON_PID=$!
until_ok 10 'jq ping'
id=$(jq_other submit --env PATH="$T/privbin" -- mytrue)
jq_other wait "$id" >/dev/null 2>&1
expect "a PATH entry only the submitter can enter is searched as them" 0 $?
id=$(jq_other submit -- no-such-command-anywhere)
jq_other wait "$id" >/dev/null 2>&1
expect "... and a missing command is still 'not found' (127)" 127 $?
stop_daemon TERM
finish

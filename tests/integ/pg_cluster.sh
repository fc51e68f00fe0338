#!/bin/bash
# pg_cluster — several jobqd nodes on one PostgreSQL (docs/POSTGRES.md):
#  - three nodes run 5000 jobs, each exactly once: every job appends its id
#    ($JOBQ_JOB_ID) to one file under flock; no duplicate, no gap, and the
#    work is spread over the nodes;
#  - kill -9 of a node while it runs 20 jobs: once its lease expires, the
#    others kill what it left running (same machine), record the
#    interrupted attempts and run the jobs again, each once;
#  - a queue limited to 3 is never exceeded across the cluster (jobs record
#    their start and end; the overlap is computed);
#  - cancel through one node stops a job running on another, and a held
#    wait on one node ends when the job finishes on another.
# JOBQ_CHAOS=1 scales up: 20000 jobs, five kill -9 rounds, and a node
# frozen (SIGSTOP) past its lease, which must stop its jobs and exit when
# it wakes up.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pglib.sh"

if ! pg_start; then
    skip "pg_cluster" "$PG_SKIP"
    exit 0
fi
cd "$T" || exit 1

LEASE_MS=2000
NJOBS=5000
KILL_ROUNDS=1
if [ -n "${JOBQ_CHAOS:-}" ]; then
    NJOBS=20000
    KILL_ROUNDS=5
fi
declare -A NODE_PID

# node_start N [jobqd options]: node N on state dir $T/nN, ready when ping
# answers.
node_start() {
    local n=$1
    shift
    JOBQ_PG_LEASE_MS=$LEASE_MS "$JOBQD" --state-dir "$T/n$n" --foreground --store "$PGURL" \
        "$@" >>"$T/node$n.log" 2>&1 &
    NODE_PID[$n]=$!
    until_ok 20 "jqn $n ping"
}
jqn() {
    local n=$1
    shift
    "$JOBQ" --socket "$T/n$n/jobq.sock" "$@"
}
node_stop() { # N [SIGNAL]
    local pid=${NODE_PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill -"${2:-TERM}" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    NODE_PID[$1]=
}
# Kills the nodes and every job process of theirs (JOBQ_INSTANCE marker).
nodes_cleanup() {
    local p
    for p in "${NODE_PID[@]}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null
    done
    for p in /proc/[0-9]*; do
        grep -qzs "^JOBQ_INSTANCE=$T/n" "$p/environ" 2>/dev/null && kill -9 "${p#/proc/}" 2>/dev/null
    done
    if [ "$FAILURES" -gt 0 ]; then
        for f in "$T"/node*.log; do
            echo "--- last lines of $(basename "$f"):"
            tail -n 15 "$f"
        done
    fi
}
trap 'nodes_cleanup; pg_stop; cleanup' EXIT

# Node 1 can run the 20 jobs of the kill -9 test at once.
for n in 1 2 3; do
    node_start $n --concurrency $((n == 1 ? 24 : 16)) --queue lim=3 || {
        fail "three nodes start on one database" "node $n: $(tail -n 3 "$T/node$n.log")"
        exit 1
    }
done
pass "three nodes start on one database (migrations under the advisory lock)"

# --- 5000 jobs, each exactly once -----------------------------------------------
: >ran
for i in $(seq 1 "$NJOBS"); do
    printf '{"command":["sh","-c","exec 9>>%s/ran; flock 9; echo $JOBQ_JOB_ID >&9"]}\n' "$T"
done >batch.ndjson
# Submitted through all three nodes: each takes a third.
split -n l/3 -d batch.ndjson part.
: >ids
for n in 1 2 3; do
    jqn $n submit --batch - <part.0$((n - 1)) >>ids || fail "submit --batch to node $n" "exit $?"
done
sort -n ids >ids.sorted
t0=$(date +%s)
if until_ok $((60 + NJOBS / 50)) "[ \$(wc -l <ran) -ge $NJOBS ] && [ \"\$(jqn 1 stats --json | $JGET .states.succeeded)\" = $NJOBS ]"; then
    pass "$NJOBS jobs finish on three nodes ($(($(date +%s) - t0))s)"
else
    fail "$NJOBS jobs finish on three nodes" "ran $(wc -l <ran), stats $(jqn 1 stats --json | $JGET .states)"
fi
expect "$NJOBS ids acknowledged" "$NJOBS" "$(wc -l <ids.sorted)"
expect "no job ran twice" "" "$(sort -n ran | uniq -d | head -n 5 | tr '\n' ' ')"
expect "no job missing" "" "$(sort -n ran | comm -3 - ids.sorted | head -n 5 | tr '\n' ' ')"
spread=
for n in 1 2 3; do
    c=$(grep -c 'info job.start ' "$T/node$n.log")
    spread="$spread $c"
    [ "$c" -gt 0 ] || fail "every node ran some of the jobs" "node $n ran none (starts:$spread)"
done
pass "the work spread over the nodes (starts per node:$spread)"

# --- a queue limited to 3 across the cluster ------------------------------------
: >span
for i in $(seq 1 30); do
    printf '{"queue":"lim","command":["sh","-c","exec 9>>%s/span; s=$(date +%%s%%N); sleep 0.2; e=$(date +%%s%%N); flock 9; echo \\"$s $e\\" >&9"]}\n' "$T"
done >lim.ndjson
jqn 2 submit --batch - <lim.ndjson >lim.ids
if until_ok 60 "[ \$(wc -l <span) -ge 30 ]"; then
    # Sweep: +1 at each start, -1 at each end (an end before a start at
    # the same instant).
    max=$(awk '{print $1, 1; print $2, -1}' span | sort -k1,1n -k2,2n |
        awk '{c += $2; if (c > m) m = c} END {print m + 0}')
    nodes=$(for id in $(cat lim.ids); do grep -l "job.start id=$id " "$T"/node*.log; done | sort -u | wc -l)
    if [ "$max" -le 3 ] && [ "$max" -ge 2 ]; then
        pass "queue limit 3 holds across the cluster (max overlap $max, ran on $nodes nodes)"
    else
        fail "queue limit 3 holds across the cluster" "max overlap $max (ran on $nodes nodes)"
    fi
else
    fail "queue limit 3 holds across the cluster" "only $(wc -l <span) of 30 jobs ran"
fi

# --- cancel and wait across nodes ---------------------------------------------------
id=$(jqn 1 submit -- sleep 60)
until_ok 10 "[ \"\$(jqn 1 show --json $id | $JGET .state)\" = running ]"
ran_on=$(grep -l "job.start id=$id " "$T"/node*.log | head -n 1)
other=1
[ "$ran_on" = "$T/node1.log" ] && other=2
jqn $other wait "$id" >/dev/null 2>&1 &
waiter=$!
jqn $other cancel "$id" >/dev/null
if until_ok 10 "! kill -0 $waiter" && wait "$waiter"; [ $? = 125 ]; then
    pass "cancel through another node stops the job, and a wait there ends (125)"
else
    fail "cancel through another node stops the job" "state $(jqn 1 show --json $id | $JGET .state)"
    kill "$waiter" 2>/dev/null
fi

# --- kill -9 of a node running 20 jobs ----------------------------------------------
for round in $(seq 1 "$KILL_ROUNDS"); do
    node_stop 2
    node_stop 3
    : >kran
    # Long enough that what the dead node left would still be running
    # when the others take over: it must be killed, not run twice.
    for i in $(seq 1 20); do
        printf '{"queue":"k%s","command":["sh","-c","sleep 6; exec 9>>%s/kran; flock 9; echo $JOBQ_JOB_ID >&9"]}\n' "$round" "$T"
    done >k.ndjson
    jqn 1 submit --batch - <k.ndjson | sort -n >k.ids
    until_ok 20 "[ \"\$(jqn 1 stats --json | $JGET .running)\" = 20 ]" ||
        fail "round $round: node 1 runs 20 jobs" "running $(jqn 1 stats --json | $JGET .running)"
    node_stop 1 9
    killed_at=$(date +%s%N)
    node_start 2 --concurrency 16 --queue lim=3 && node_start 3 --concurrency 16 --queue lim=3
    if until_ok 60 "[ \$(wc -l <kran) -ge 20 ] && [ \"\$(jqn 2 list --queue k$round --state succeeded --json | $JGET .#)\" = 20 ]"; then
        took=$((($(date +%s%N) - killed_at) / 1000000))
        pass "round $round: kill -9 of a node running 20 jobs: they finish on the others (${took}ms)"
    else
        fail "round $round: the dead node's jobs finish on the others" "ran $(wc -l <kran)"
    fi
    expect "round $round: each of them ran once" "$(tr '\n' ' ' <k.ids)" "$(sort -n kran | tr '\n' ' ')"
    first=$(head -n 1 k.ids)
    expect "round $round: the interrupted attempt is recorded" "interrupted succeeded" \
        "$(jqn 2 show --json "$first" | $JGET .attempts.0.outcome) $(jqn 2 show --json "$first" | $JGET .attempts.1.outcome)"
    node_start 1 --concurrency 24 --queue lim=3 ||
        fail "round $round: the killed node starts again" "$(tail -n 3 "$T/node1.log")"
done

# --- a node frozen past its lease stops its jobs (chaos only) --------------------------
if [ -n "${JOBQ_CHAOS:-}" ]; then
    : >fran
    id=$(jqn 3 submit -- sh -c "sleep 5; echo \$JOBQ_JOB_ID >>$T/fran")
    until_ok 10 "grep -q 'job.start id=$id ' $T/node3.log" || true
    holder=$(grep -l "job.start id=$id " "$T"/node*.log | head -n 1)
    n=${holder##*node}
    n=${n%.log}
    kill -STOP "${NODE_PID[$n]}"
    sleep $((LEASE_MS * 2 / 1000 + 1))
    kill -CONT "${NODE_PID[$n]}"
    if until_ok 20 "! kill -0 ${NODE_PID[$n]}"; then
        wait "${NODE_PID[$n]}"
        expect "frozen node: exits 1 when it finds its lease lost" 1 $?
        NODE_PID[$n]=
    else
        fail "frozen node: exits when it finds its lease lost" "still running"
    fi
    until_ok 30 "[ \"\$(jqn $((n % 3 + 1)) show --json $id | $JGET .state)\" = succeeded ]"
    expect "frozen node: its job ran once more, never twice at once" "$id" "$(sort -u fran)"
fi

finish

#!/bin/bash
# chaos_disk — the disk under the store fails (docs/RELIABILITY.md, issue 6
# points 3, 4 and 5):
#  - corrupt database: a truncated file, scribbled pages, a scribbled
#    header and a foreign SQLite file are refused at start with exit 3 and
#    a clear message, and left byte-identical with no -wal or -shm beside;
#  - disk full: the state directory on a 16 MiB tmpfs (root only; skipped
#    with the reason otherwise) is filled: submits fail with storage_error
#    (jobq exit 74), reads and running jobs go on, nothing acknowledged is
#    lost, a full disk does not hold up the drain, submits work again once
#    space is freed; log capture that fails is marked in `show`;
#  - I/O errors: tests/tools/eio_shim.so (LD_PRELOAD) fails writes or
#    fsyncs of the database with EIO: a failed write fails its request and
#    the daemon goes on; a failed fsync stops the daemon loudly (exit 1,
#    store.fatal in its log) and a restart recovers what was acknowledged
#    (docs/STORE.md, "Failures"). Skipped under the sanitizers.
# JOBQ_CHAOS=1 (make chaos) repeats the disk-full and fsync cases 3 times.
. "$(dirname "$0")/lib.sh"

SUBMITTER=$JOBQ_BUILD/tools/submitter
SHIM=$JOBQ_BUILD/tools/eio_shim.so
ROUNDS=1
[ -n "${JOBQ_CHAOS:-}" ] && ROUNDS=3
MNT=
cd "$T" || exit 1

now_ns() { date +%s%N; }

use_state() {
    kill_jobs
    STATE=$T/$1
    SOCK=$STATE/jobq.sock
}

# The tmpfs must go even when the script fails: the daemon first.
disk_cleanup() {
    if [ -n "$DAEMON_PID" ]; then
        kill -9 "$DAEMON_PID" 2>/dev/null
        wait "$DAEMON_PID" 2>/dev/null
        DAEMON_PID=
    fi
    kill_jobs
    [ -n "$MNT" ] && umount -l "$MNT" 2>/dev/null
    cleanup
}
trap disk_cleanup EXIT

# exited_within SECONDS: waits (bounded) for the daemon to exit by
# itself; sets DAEMON_STATUS ("hung" if it did not: it is killed then).
exited_within() {
    if until_ok "$1" "exited $DAEMON_PID"; then
        wait "$DAEMON_PID"
        DAEMON_STATUS=$?
    else
        kill -9 "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null
        DAEMON_STATUS=hung
    fi
    DAEMON_PID=
}
# exited PID: a child of ours that has exited (a zombie until waited for).
exited() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z)" = Z ]; }

# missing FILE: how many of the ids in FILE the daemon does not have.
missing() {
    local n=0 id
    while read -r id; do
        jq show --json "$id" >/dev/null 2>&1 || n=$((n + 1))
    done <"$1"
    echo $n
}

# --- 5. corrupt database -----------------------------------------------------
use_state corrupt
start_daemon || exit 1
for i in $(seq 1 400); do echo '{"command":["true"],"queue":"hold"}'; done >batch
jq pause hold >/dev/null
jq submit --batch batch >/dev/null
stop_daemon TERM
cp "$STATE/jobq.db" good.db
size=$(stat -c %s good.db)
sqlite3 foreign.db 'CREATE TABLE t (x); INSERT INTO t VALUES (1);'
for kind in truncated scribbled header foreign; do
    rm -f "$STATE"/jobq.db*
    case $kind in
    truncated) head -c $((size / 2)) good.db >"$STATE/jobq.db" ;;
    scribbled)
        cp good.db "$STATE/jobq.db"
        # Pages 2-5 overwritten with random bytes: b-tree pages garbled.
        head -c $((4 * 4096)) /dev/urandom |
            dd of="$STATE/jobq.db" bs=4096 seek=1 conv=notrunc status=none
        ;;
    header)
        cp good.db "$STATE/jobq.db"
        printf 'this is no longer SQLite' | dd of="$STATE/jobq.db" conv=notrunc status=none
        ;;
    foreign) cp foreign.db "$STATE/jobq.db" ;;
    esac
    before=$(sha256sum <"$STATE/jobq.db")
    timeout 30 "$JOBQD" --state-dir "$STATE" --foreground >"corrupt.$kind" 2>&1
    rc=$?
    after=$(sha256sum <"$STATE/jobq.db")
    extra=$(ls "$STATE" | grep -c -- '-wal\|-shm')
    msg=$(grep -m1 'jobqd:' "corrupt.$kind")
    echo "FIGURE corrupt kind=$kind exit=$rc unchanged=$([ "$before" = "$after" ] && echo yes || echo no) wal_or_shm=$extra"
    if [ "$rc" = 3 ] && [ "$before" = "$after" ] && [ "$extra" = 0 ] &&
        echo "$msg" | grep -qE 'damaged|not a jobq database|not an SQLite database|malformed'; then
        pass "corrupt database ($kind): refused with exit 3, file untouched: $msg"
    else
        fail "corrupt database ($kind): refused with exit 3, file untouched" \
            "exit=$rc changed=$([ "$before" = "$after" ] || echo yes) wal/shm=$extra: $(head -3 "corrupt.$kind")"
    fi
done
# The good copy still opens: the refusals were about the damage.
rm -f "$STATE"/jobq.db*
cp good.db "$STATE/jobq.db"
start_daemon || exit 1
expect "corrupt database: the intact copy opens with its 400 jobs" 400 \
    "$(jq stats --json | "$JGET" .store.jobs)"
stop_daemon TERM

# --- 3. disk full --------------------------------------------------------------
use_state full
mkdir -p "$STATE"
if [ "$(id -u)" != 0 ]; then
    skip "disk full" "needs root to mount a 16 MiB tmpfs"
elif ! mount -t tmpfs -o size=16m,mode=0711 jobq-test "$STATE" 2>mount.err; then
    skip "disk full" "cannot mount a tmpfs here: $(cat mount.err)"
else
    MNT=$STATE
    start_daemon --kill-grace 1s --shutdown-grace 1s || exit 1
    for round in $(seq 1 "$ROUNDS"); do
        : >acked
        for i in $(seq 1 20); do jq submit -- true >>acked; done
        rm -f go go2
        # A job running through the whole episode; it writes 200 kB once
        # the disk is full.
        big=$(jq submit -- sh -c "while [ ! -e $T/go ]; do sleep 0.05; done; head -c 200000 /dev/zero | tr '\\0' x; echo; echo done >$T/big.done")
        wait_state "$big" running
        # Fill it: a big file, then small ones for the last pages.
        dd if=/dev/zero of="$STATE/fill" bs=1M status=none 2>/dev/null
        for i in $(seq 1 64); do dd if=/dev/zero of="$STATE/fill.$i" bs=4k count=16 status=none 2>/dev/null || break; done
        # Submits may still fit in pages SQLite holds; soon one must fail.
        refused=0 ok=0 other=0 msg=
        for i in $(seq 1 2000); do
            out=$(jq submit -- true 2>err)
            rc=$?
            if [ "$rc" = 0 ]; then
                echo "$out" >>acked
                ok=$((ok + 1))
            elif [ "$rc" = 74 ]; then
                refused=$((refused + 1))
                msg=$(cat err)
                [ "$refused" -ge 3 ] && break
            else
                other=$((other + 1))
                break
            fi
        done
        echo "FIGURE disk_full round=$round accepted_after_fill=$ok refused=$refused other_errors=$other"
        if [ "$refused" -ge 3 ] && [ "$other" = 0 ] && echo "$msg" | grep -q 'No space left'; then
            pass "disk full ($round): submits fail with storage_error, exit 74: $msg"
        else
            fail "disk full ($round): submits fail with storage_error, exit 74" \
                "refused=$refused other=$other last: $msg"
        fi
        first=$(head -1 acked)
        jq list >/dev/null 2>&1 && jq show "$first" >/dev/null 2>&1 && jq stats >/dev/null 2>&1
        expect "disk full ($round): list, show and stats still answer" 0 $?
        # The running job goes on: it writes its output (which cannot be
        # kept) and ends by itself.
        touch go
        if until_ok 10 'test -e big.done'; then
            pass "disk full ($round): the running job runs to its end"
        else
            fail "disk full ($round): the running job runs to its end" "no big.done"
        fi
        expect "disk full ($round): nothing acknowledged is missing while full" 0 "$(missing acked)"
        # Space returns: writes work again, and the job's end is recorded.
        rm -f "$STATE"/fill*
        if until_ok 10 'jq submit -- true >>acked'; then
            pass "disk full ($round): submits succeed again once space is freed"
        else
            fail "disk full ($round): submits succeed again once space is freed" "$(jq submit -- true 2>&1)"
        fi
        wait_state "$big" succeeded 10
        js=$(jq show --json "$big")
        expect "disk full ($round): failed log capture is marked (log_truncated, error note)" \
            "succeeded true yes" \
            "$(echo "$js" | "$JGET" .state) $(echo "$js" | "$JGET" .attempts.0.log_truncated) $(echo "$js" | "$JGET" .attempts.0.error | grep -q 'log capture failed: No space left' && echo yes)"
        jq show "$big" | grep -q 'log capture failed'
        expect "disk full ($round): show prints the capture failure" 0 $?

        # A drain while the disk is full and a job's end cannot be written:
        # the daemon still stops within its grace; the job runs again.
        stuck=$(jq submit -- sh -c "while [ ! -e $T/go2 ]; do sleep 0.05; done")
        wait_state "$stuck" running
        dd if=/dev/zero of="$STATE/fill" bs=1M status=none 2>/dev/null
        for i in $(seq 1 64); do dd if=/dev/zero of="$STATE/fill.$i" bs=4k count=16 status=none 2>/dev/null || break; done
        touch go2
        until_ok 10 "grep -q 'job.complete_failed id=$stuck ' $T/jobqd.log"
        t=$(now_ns)
        kill -TERM "$DAEMON_PID"
        exited_within 10
        took=$((($(now_ns) - t) / 1000000))
        echo "FIGURE disk_full_drain round=$round exit=$DAEMON_STATUS took_ms=$took grace_ms=1000"
        if [ "$DAEMON_STATUS" = 0 ] && [ "$took" -lt 2500 ]; then
            pass "disk full ($round): a drain with an unrecordable job end stops in time (${took}ms)"
        else
            fail "disk full ($round): a drain with an unrecordable job end stops in time" \
                "status=$DAEMON_STATUS took=${took}ms"
        fi
        rm -f "$STATE"/fill*
        start_daemon --kill-grace 1s --shutdown-grace 1s || exit 1
        wait_state "$stuck" succeeded 15
        # Either its end was never written and it ran again (interrupted,
        # then succeeded), or the drain's last try found room after all
        # (SQLite reuses the WAL's pages after a checkpoint).
        js=$(jq show --json "$stuck")
        got="$(echo "$js" | "$JGET" .state) $(echo "$js" | "$JGET" .attempts.#)"
        [ "$got" = "succeeded 2" ] && got="$got $(echo "$js" | "$JGET" .attempts.0.outcome)"
        case $got in
        "succeeded 2 interrupted" | "succeeded 1")
            pass "disk full ($round): that job ends once: re-run after the restart, or recorded ($got)"
            ;;
        *) fail "disk full ($round): that job ends once: re-run after the restart, or recorded" "$got" ;;
        esac
        # kill -9 and restart: still everything.
        kill -9 "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null
        DAEMON_PID=
        start_daemon --kill-grace 1s --shutdown-grace 1s || exit 1
        expect "disk full ($round): every acknowledged id after a restart ($(wc -l <acked))" 0 \
            "$(missing acked)"
    done
    stop_daemon TERM
    umount "$MNT" && MNT=
fi

# --- 4. I/O errors -------------------------------------------------------------
if [ -n "${JOBQ_SANITIZER:-}" ]; then
    skip "I/O errors" "LD_PRELOAD shims do not mix with $JOBQ_SANITIZER (it must load first)"
    finish
    exit
fi
if [ ! -f "$SHIM" ] || [ ! -x "$SUBMITTER" ]; then
    skip "I/O errors" "$SHIM or $SUBMITTER is not built"
    finish
    exit
fi
use_state eio
# start_shimmed [jobqd options]: the daemon with the shim on its database.
start_shimmed() {
    EIO_SHIM_PATH=$STATE/jobq.db EIO_SHIM_TRIGGER=$T/trigger EIO_SHIM_LOG=$T/shim.log \
        LD_PRELOAD=$SHIM start_daemon "$@"
}
rm -f trigger
start_shimmed || exit 1
: >acked
for i in $(seq 1 10); do jq submit -- true >>acked; done

# marked: live processes carrying this daemon's job marker.
marked() {
    local p
    for p in /proc/[0-9]*; do
        grep -qzs "^JOBQ_INSTANCE=$STATE/jobq.db\$" "$p/environ" 2>/dev/null || continue
        [ "$(awk '{print $3}' "$p/stat" 2>/dev/null)" != Z ] && echo "${p#/proc/}"
    done
}

# A failed write: the request fails, the daemon goes on. A job that ends
# meanwhile has its end recorded once writes work again.
w=$(jq submit -- sh -c "while [ ! -e $T/go.w ]; do sleep 0.05; done")
wait_state "$w" running
echo write >trigger
jq submit -- true >/dev/null 2>err
rc=$?
expect "I/O error on write: the submit fails with storage_error (74)" "74 yes" \
    "$rc $(grep -q 'Input/output error' err && echo yes)"
jq list >/dev/null 2>&1 && jq show "$(head -1 acked)" >/dev/null 2>&1
expect "I/O error on write: reads still answer" 0 $?
touch go.w
until_ok 10 "grep -q 'job.complete_failed id=$w ' $T/jobqd.log"
rm -f trigger
wait_state "$w" succeeded 10
expect "I/O error on write: a job that ended during the fault is recorded once it is gone" \
    succeeded "$(state_of "$w")"
if until_ok 5 'jq submit -- true >>acked'; then
    pass "I/O error on write: writes work again once the fault is gone"
else
    fail "I/O error on write: writes work again once the fault is gone" "$(jq submit -- true 2>&1)"
fi
kill -0 "$DAEMON_PID" 2>/dev/null
expect "I/O error on write: the daemon keeps running" 0 $?
writes=$(grep -c '^pwrite\|^write' shim.log)

for round in $(seq 1 "$ROUNDS"); do
    # A failed fsync, under load from 4 submitters and with a job running:
    # the daemon stops, loudly, acknowledges nothing it could not sync,
    # and leaves no job process behind; the job runs again after.
    rm -f acks.* "go.f$round"
    : >shim.log
    f=$(jq submit -- sh -c "while [ ! -e $T/go.f$round ]; do sleep 0.05; done")
    wait_state "$f" running
    pids=
    for s in 1 2 3 4; do
        "$SUBMITTER" "$SOCK" submit "r$round-s$s" 1 >"acks.$s" 2>/dev/null &
        pids="$pids $!"
    done
    until_ok 10 'test "$(cat acks.* | wc -l)" -ge 200'
    t=$(now_ns)
    echo fsync >trigger
    exited_within 15
    status=$DAEMON_STATUS
    took=$((($(now_ns) - t) / 1000000))
    # shellcheck disable=SC2086
    wait $pids
    rm -f trigger
    cat acks.* >acks.all
    fatal=$(grep -c 'error store.fatal' "$T/jobqd.log")
    echo "FIGURE eio_fsync round=$round exit=$status stop_ms=$took acked=$(wc -l <acks.all)" \
        "fsyncs_failed=$(grep -c 'sync' shim.log) writes_failed_before=$writes"
    if [ "$status" = 1 ] && [ "$fatal" -ge "$round" ]; then
        pass "I/O error on fsync ($round): the daemon stops loudly (exit 1, store.fatal, ${took}ms)"
    else
        fail "I/O error on fsync ($round): the daemon stops loudly" \
            "exit=$status store.fatal lines=$fatal"
    fi
    left=$(marked | wc -l)
    expect "I/O error on fsync ($round): no job process outlives the daemon" 0 "$left"
    start_shimmed || exit 1
    wait_state "$f" running 10
    expect "I/O error on fsync ($round): the running job was interrupted and runs again" \
        "interrupted 2" \
        "$(jq show --json "$f" | "$JGET" .attempts.0.outcome) $(jq show --json "$f" | "$JGET" .attempt)"
    touch "go.f$round"
    wait_state "$f" succeeded 10
    out=$("$SUBMITTER" "$SOCK" verify <acks.all)
    expect "I/O error on fsync ($round): after a restart every acknowledged id is there" \
        "checked $(wc -l <acks.all) missing 0 mismatched 0" "$(echo "$out" | tail -1)"
    expect "I/O error on fsync ($round): and the earlier ones too" 0 "$(missing acked)"
done
stop_daemon TERM
finish

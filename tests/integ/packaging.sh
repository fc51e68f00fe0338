# packaging — what jobq ships around the binaries, checked against the
# real binaries as far as this machine allows (no systemd as PID 1, no
# Docker engine, no cluster):
#   systemd     systemd-analyze verify of every unit; the security score
#               of jobqd.service (<= 2.0); ExecStart flags exist; stop
#               timeout vs shutdown-grace; jobqd under exactly the unit's
#               capability bounding set and NoNewPrivileges still runs jobs
#               as their submitters and stops them, and each capability is
#               needed
#   config      etc/jobqd.conf parses, names every key, and its socket mode
#               is jobqd.socket's
#   docker      the Dockerfile, linted by hand; its packages exist in
#               Debian and cover the binaries' libraries; its HEALTHCHECK
#               command against a real jobqd; an image size estimate
#   kubernetes  the YAML parses (tests/tools/yamlcheck); required fields,
#               the restricted Pod Security Standard; the container's
#               arguments run a real jobqd whose /livez and /readyz answer
#               on the probes' port; grace vs shutdown-grace; the same for
#               the PostgreSQL Deployment, plus its Secret (JOBQD_STORE,
#               the token file's mount and mode), Service for /rpc and
#               PodDisruptionBudget, and /rpc answering with the token
#   man         mandoc -Tlint; every flag, verb, option, key and exit code
#   completion  bash and zsh: commands, options and job ids from a daemon;
#               nothing and no hang when the daemon is down
# Each part skips with a reason when its tool is missing.
. "$(dirname "$0")/lib.sh"

SRC=$(cd "$(dirname "$0")/../.." && pwd)
ETC=$SRC/etc
YAMLCHECK=$JOBQ_BUILD/tools/yamlcheck
VERSION=$(cat "$SRC/VERSION")
HELP=$("$JOBQD" --help)
args=()

# ---- helpers ---------------------------------------------------------------

# to_ms DUR: milliseconds of a duration as jobqd reads it (250ms, 30s, 5m,
# 1h30m, 90 = seconds); empty if it does not parse.
to_ms() {
    local s=$1 total=0 n u
    [[ $s =~ ^[0-9]+$ ]] && { echo $((s * 1000)); return; }
    while [[ $s =~ ^([0-9]+)(ms|s|min|m|h|d)(.*)$ ]]; do
        n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
        case $u in
        ms) total=$((total + n)) ;;
        s) total=$((total + n * 1000)) ;;
        m | min) total=$((total + n * 60000)) ;;
        h) total=$((total + n * 3600000)) ;;
        d) total=$((total + n * 86400000)) ;;
        esac
    done
    [ -z "$s" ] && echo "$total"
}

# help_flags: every --flag of jobqd --help.
help_flags() { sed -n 's/^  --\([a-z][a-z-]*\).*/\1/p' <<<"$HELP"; }

# help_default FLAG: the "Default: X" of a flag in jobqd --help.
help_default() {
    awk -v f="--$1" '
        $1 == f { on = 1; text = $0; next }
        on && /^  --/ { exit }
        on && /^$/ { exit }
        on { text = text " " $0 }
        END {
            gsub(/ +/, " ", text)
            if (match(text, /Default: [^ ]+/)) print substr(text, RSTART + 9, RLENGTH - 9)
        }
    ' <<<"$HELP" | sed 's/\.$//'
}

# help_live FLAG: "live" if jobqd --help marks the flag [live].
help_live() {
    awk -v f="--$1" '
        $1 == f { on = 1; text = $0; next }
        on && (/^  --/ || /^$/) { exit }
        on { text = text " " $0 }
        END { if (text ~ /\[live\]/) print "live" }
    ' <<<"$HELP"
}

# conf_value FILE KEY: the value of an uncommented key in a config file.
conf_value() {
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*\\(.*[^[:space:]]\\)[[:space:]]*\$/\\1/p" "$1" |
        tail -n 1
}

# flags_exist NAME WORDS...: every --flag among WORDS is one of jobqd's.
flags_exist() {
    local name=$1 w missing=""
    shift
    for w in "$@"; do
        case $w in
        --*)
            w=${w%%=*}
            help_flags | grep -qx -- "${w#--}" || missing="$missing $w"
            ;;
        esac
    done
    expect "$name" "" "${missing# }"
}

# http_get PORT PATH: the status code of GET PATH on 127.0.0.1:PORT, as
# the Dockerfile's HEALTHCHECK asks it (bash's /dev/tcp, no curl).
http_get() {
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 || exit 1
        printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$1" >&3
        read -r _ code _ <&3 && echo "$code"' "$1" "$2" 2>/dev/null
}

# start_jobqd SOCKET COMMAND...: jobqd started by exactly COMMAND, as a
# unit or a pod would start it, into DAEMON_PID; 0 once ping answers on
# SOCKET, else 1 (the daemon stopped, its log in $T/jobqd.log).
start_jobqd() {
    local sock=$1
    shift
    "$@" >>"$T/jobqd.log" 2>&1 &
    DAEMON_PID=$!
    if ! until_ok 10 "kill -0 $DAEMON_PID && '$JOBQ' --socket '$sock' ping"; then
        stop_daemon KILL
        return 1
    fi
}
# log_tail: the last lines of jobqd's log, on one line.
log_tail() { tail -n 3 "$T/jobqd.log" | tr '\n' ' '; }

# ---- systemd ---------------------------------------------------------------

UNITS="jobqd.service jobqd.socket jobqd-metrics.socket jobqd-metrics.service"
if ! command -v systemd-analyze >/dev/null; then
    skip "systemd units" "systemd-analyze is not installed (scripts/deps.sh installs systemd)"
else
    # verify checks that ExecStart's binary exists: point it at ours.
    mkdir -p "$T/units/user"
    for u in $UNITS; do
        sed "s|/usr/local/sbin/jobqd|$JOBQD|" "$ETC/systemd/$u" >"$T/units/$u"
    done
    for u in jobqd.service jobqd.socket; do
        sed "s|/usr/local/sbin/jobqd|$JOBQD|" "$ETC/systemd/user/$u" >"$T/units/user/$u"
    done
    out=$(cd "$T/units" && systemd-analyze verify --man=no $(printf './%s ' $UNITS) 2>&1)
    expect "systemd: verify of the system units is clean" "0:" "$?:$out"
    mkdir -p -m 0700 "$T/xdg-runtime"
    out=$(cd "$T/units/user" &&
        XDG_RUNTIME_DIR=$T/xdg-runtime systemd-analyze --user verify --man=no \
            ./jobqd.service ./jobqd.socket 2>&1)
    expect "systemd: verify of the user units is clean" "0:" "$?:$out"

    # The score, as the issue asks for it: offline, on the file itself.
    sec=$(systemd-analyze security --offline=yes "$ETC/systemd/jobqd.service" 2>&1)
    score=$(sed -n 's/.*Overall exposure level for jobqd.service: \([0-9.]*\).*/\1/p' <<<"$sec")
    echo "FIGURE systemd.security_exposure ${score:-none}"
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
        pass "systemd: security exposure of jobqd.service $score <= 2.0"
    else
        fail "systemd: security exposure of jobqd.service <= 2.0" "got '${score:-no score}'"
        grep '✗' <<<"$sec"
    fi
fi

exec_line=$(sed -n 's/^ExecStart=//p' "$ETC/systemd/jobqd.service")
# shellcheck disable=SC2086 # split the command line into words
flags_exist "systemd: ExecStart flags are jobqd's" $exec_line
for f in --foreground "--socket /run/jobq/jobq.sock" "--state-dir /var/lib/jobq" \
    "--config /etc/jobq/jobqd.conf"; do
    if [[ " $exec_line " != *" $f "* ]]; then
        fail "systemd: ExecStart has $f" "ExecStart=$exec_line"
    fi
done
user_exec=$(sed -n 's/^ExecStart=//p' "$ETC/systemd/user/jobqd.service")
# shellcheck disable=SC2086
flags_exist "systemd: user ExecStart flags are jobqd's" $user_exec

for u in jobqd.service user/jobqd.service; do
    grep -qx 'Type=notify' "$ETC/systemd/$u" || fail "systemd: $u is Type=notify" "no Type=notify"
done
expect "systemd: the socket unit listens where ExecStart says" "/run/jobq/jobq.sock" \
    "$(sed -n 's/^ListenStream=//p' "$ETC/systemd/jobqd.socket")"
expect "systemd: the user socket is on the client's default path" \
    "%h/.local/state/jobq/jobq.sock" "$(sed -n 's/^ListenStream=//p' "$ETC/systemd/user/jobqd.socket")"

# TimeoutStopSec must outlast the drain: shutdown-grace + kill-grace.
grace=$(conf_value "$ETC/jobqd.conf" shutdown-grace)
kill_grace=$(conf_value "$ETC/jobqd.conf" kill-grace)
drain_ms=$(($(to_ms "${grace:-$(help_default shutdown-grace)}") + $(to_ms \
    "${kill_grace:-$(help_default kill-grace)}")))
for u in jobqd.service user/jobqd.service; do
    stop_ms=$(to_ms "$(sed -n 's/^TimeoutStopSec=//p' "$ETC/systemd/$u")")
    if [ -n "$stop_ms" ] && [ "$stop_ms" -gt "$drain_ms" ]; then
        pass "systemd: $u TimeoutStopSec ${stop_ms}ms > drain ${drain_ms}ms"
    else
        fail "systemd: $u TimeoutStopSec > shutdown-grace + kill-grace" \
            "stop ${stop_ms:-unset}ms, drain ${drain_ms}ms"
    fi
done

# ---- the default config, and jobqd under the unit's capabilities -----------

missing=""
for k in $(help_flags); do
    case $k in help | version | config) continue ;; esac
    grep -qE "^#?$k =" "$ETC/jobqd.conf" || missing="$missing $k"
done
expect "config: etc/jobqd.conf lists every key of jobqd --help" "" "${missing# }"
expect "config: socket-mode is jobqd.socket's SocketMode" \
    "$(sed -n 's/^SocketMode=//p' "$ETC/systemd/jobqd.socket")" \
    "$(conf_value "$ETC/jobqd.conf" socket-mode)"

# ExecStart's flags with this test's paths; the config file is the real one.
unit_args=(--foreground --socket "$STATE/unit/run/jobq.sock" --state-dir "$STATE/unit"
    --config "$ETC/jobqd.conf" --http off --kill-grace 300ms)
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$ETC/systemd/jobqd.service")
OTHER=65534
as_other() { setpriv --reuid $OTHER --regid $OTHER --clear-groups "$@"; }

# under_caps CAPS: runs jobqd with that bounding set, as the unit would
# (root, NoNewPrivileges), on $STATE/unit.
under_caps() {
    local bset="-all" c
    for c in $1; do
        c=${c#CAP_}
        bset="$bset,+${c,,}"
    done
    rm -rf "$STATE/unit"
    mkdir -p "$STATE/unit/run"
    start_jobqd "$STATE/unit/run/jobq.sock" setpriv --bounding-set="$bset" --inh-caps=-all \
        --no-new-privs "$JOBQD" "${unit_args[@]}" ||
        { fail "caps: jobqd starts with ${1:-no capability}" "$(log_tail)"; return 1; }
}
uq() { "$JOBQ" --socket "$STATE/unit/run/jobq.sock" "$@"; }

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    # Still prove that the shipped config starts a daemon.
    mkdir -p "$STATE/unit/run"
    if start_jobqd "$STATE/unit/run/jobq.sock" "$JOBQD" "${unit_args[@]}"; then
        pass "config: etc/jobqd.conf starts jobqd"
        stop_daemon
    else
        fail "config: etc/jobqd.conf starts jobqd" "$(log_tail)"
    fi
    skip "caps" "needs root and setpriv to run jobqd with the unit's capabilities"
elif under_caps "$caps"; then
    pass "config: etc/jobqd.conf starts jobqd"
    expect "config: the socket jobqd creates has mode 0666" 666 \
        "$(stat -c %a "$STATE/unit/run/jobq.sock")"
    chmod 755 "$STATE" "$STATE/unit" "$STATE/unit/run"
    mask=0
    for c in $caps; do
        case $c in
        CAP_KILL) mask=$((mask | 1 << 5)) ;;
        CAP_SETGID) mask=$((mask | 1 << 6)) ;;
        CAP_SETUID) mask=$((mask | 1 << 7)) ;;
        *) fail "caps: known capability" "$c: add its number here" ;;
        esac
    done
    expect "caps: jobqd holds exactly $caps" "$(printf '%016x' $mask)" \
        "$(sed -n 's/^CapPrm:[[:space:]]*//p' "/proc/$DAEMON_PID/status")"
    # A job of another uid runs as that uid, its groups set.
    id=$(cd /tmp && as_other "$JOBQ" --socket "$STATE/unit/run/jobq.sock" submit -- sh -c 'id -u; id -g')
    as_other "$JOBQ" --socket "$STATE/unit/run/jobq.sock" wait "$id" >/dev/null
    expect "caps: another uid's job runs as that uid" "$OTHER
$OTHER" "$(uq logs "$id")"
    # ... and is stopped on cancel: the daemon can signal it.
    id=$(cd /tmp && as_other "$JOBQ" --socket "$STATE/unit/run/jobq.sock" submit -- \
        sh -c 'timeout 60 sleep 71.3 & sleep 72.9')
    until_ok 5 "[ \$(pgrep -c -u $OTHER -f '^sleep 7[12][.][39]') = 2 ]"
    uq cancel "$id" >/dev/null
    if until_ok 10 "! pgrep -u $OTHER -f '^sleep 7[12][.][39]'"; then
        pass "caps: cancel stops another uid's job, its other process groups too"
    else
        fail "caps: cancel stops another uid's job" "running: $(pgrep -u $OTHER -fa 'sleep 7')"
    fi
    stop_daemon
    expect "caps: jobqd under the unit's capabilities drains and exits 0" 0 "$DAEMON_STATUS"

    # Each capability is needed: without it, jobs break.
    for c in $caps; do
        under_caps "${caps//$c/}" || continue
        id=$(cd /tmp && as_other "$JOBQ" --socket "$STATE/unit/run/jobq.sock" submit -- sleep 73.1)
        if [ "$c" = CAP_KILL ]; then
            # Cancel cannot signal the job: it outlives the kill-grace.
            until_ok 5 "pgrep -u $OTHER -f '^sleep 73[.]1' >/dev/null"
            uq cancel "$id" >/dev/null
            sleep 0.6 # twice the kill-grace
            left=$(pgrep -u $OTHER -f '^sleep 73[.]1') && got=broken || got=works
            [ -n "$left" ] && kill -9 $left # this test's job: the daemon could not
        else
            # The job cannot become its submitter: 126, cannot run as uid.
            as_other "$JOBQ" --socket "$STATE/unit/run/jobq.sock" wait "$id" >/dev/null 2>&1
            [ $? = 126 ] && got=broken || got=works
        fi
        expect "caps: without $c, jobs of other uids break" broken "$got"
        stop_daemon KILL 2>/dev/null
    done
fi

# ---- docker ----------------------------------------------------------------

DF=$ETC/docker/Dockerfile
# Instructions with their continuation lines joined.
df=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$DF" | grep -v '^[[:space:]]*#')
expect "docker: two stages on debian:12-slim" "debian:12-slim AS build
debian:12-slim" "$(sed -n 's/^FROM //p' <<<"$df")"
user=$(sed -n 's/^USER //p' <<<"$df")
if [[ $user =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]]; then
    pass "docker: runs as a numeric non-root user ($user)"
else
    fail "docker: runs as a numeric non-root user" "USER $user"
fi
grep -q '^VOLUME \["/var/lib/jobq"\]' <<<"$df" && pass "docker: the state is a volume" ||
    fail "docker: the state is a volume" "no VOLUME [\"/var/lib/jobq\"]"
expect "docker: STOPSIGNAL SIGTERM" SIGTERM "$(sed -n 's/^STOPSIGNAL //p' <<<"$df")"
entry=$(sed -n 's/^ENTRYPOINT \[\(.*\)\]$/\1/p' <<<"$df" | tr -d '",')
# shellcheck disable=SC2086
flags_exist "docker: ENTRYPOINT flags are jobqd's" $entry
for f in --foreground "--state-dir /var/lib/jobq"; do
    [[ " $entry " == *" $f "* ]] || fail "docker: ENTRYPOINT has $f" "$entry"
done
http=$(sed -n 's/.* --http \([^ ]*\).*/\1/p' <<<" $entry ")
port=${http##*:}
expect "docker: ENTRYPOINT serves HTTP on every address" "0.0.0.0:9090" "$http"
expect "docker: EXPOSE is the --http port" "$port" "$(sed -n 's/^EXPOSE //p' <<<"$df")"
hc=$(sed -n 's/^HEALTHCHECK .*CMD \(\[.*\]\)$/\1/p' <<<"$df")
[[ $hc == *"/dev/tcp/127.0.0.1/$port"* && $hc == *"GET /livez "* ]] &&
    pass "docker: HEALTHCHECK gets /livez on the --http port" ||
    fail "docker: HEALTHCHECK gets /livez on the --http port" "$hc"
expect "docker: JOBQ_SOCKET is in the state directory" "/var/lib/jobq/jobq.sock" \
    "$(sed -n 's/^ENV JOBQ_SOCKET=//p' <<<"$df")"
# hadolint's rules that matter here, by hand: every apt-get install without
# recommends and followed by removing the lists, in the same RUN.
bad=$(grep '^RUN .*apt-get install' <<<"$df" |
    grep -v -e '--no-install-recommends.*rm -rf /var/lib/apt/lists' | head -n 1)
expect "docker: apt-get install --no-install-recommends, lists removed" "" "$bad"
for c in $(sed -n 's/^COPY \([^-][^ ]*\( [^ ]*\)*\) [^ ]*$/\1/p' <<<"$df"); do
    [ -e "$SRC/$c" ] || fail "docker: COPY source $c exists" "missing"
done
runtime_pkgs=$(awk '/^FROM/ { stage++ } stage == 2 && /apt-get install/' <<<"$df" |
    sed 's/.*--no-install-recommends//; s/&&.*//')
build_pkgs=$(awk '/^FROM/ { stage++ } stage == 1 && /apt-get install/' <<<"$df" |
    sed 's/.*--no-install-recommends//; s/&&.*//')
# One apt-cache call for all of them: it takes half a second each.
# shellcheck disable=SC2086
apt_info=$(apt-cache show libc6 $runtime_pkgs $build_pkgs 2>/dev/null)
if ! grep -q '^Package: libc6$' <<<"$apt_info"; then
    skip "docker: packages exist in Debian" "apt has no package lists (apt-get update)"
    apt_info=""
else
    missing=""
    for p in $runtime_pkgs $build_pkgs; do
        grep -qx "Package: $p" <<<"$apt_info" || missing="$missing $p"
    done
    expect "docker: every package of both stages exists in Debian" "" "${missing# }"
fi
# The runtime stage must hold every shared library the binaries load.
if [ -n "${JOBQ_SANITIZER:-}" ] || ! command -v dpkg >/dev/null; then
    skip "docker: runtime packages cover the libraries" "sanitizer build or no dpkg"
else
    uncovered=""
    libs=$(ldd "$JOBQD" "$JOBQ" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u)
    # One dpkg -S for every name a library may be registered under
    # (merged /usr: /lib/x.so is /usr/lib/x.so).
    owners=$(for l in $libs; do echo "$l" "/usr$l" "$(readlink -f "$l")"; done | xargs dpkg -S 2>/dev/null)
    for lib in $libs; do
        pkg=$(for n in "$lib" "/usr$lib" "$(readlink -f "$lib")"; do
            awk -v n="$n" '$NF == n { sub(/:.*/, "", $1); print $1 }' <<<"$owners"
        done | head -n 1)
        case " $runtime_pkgs libc6 " in
        *" $pkg "*) ;;
        *) uncovered="$uncovered $lib(${pkg:-?})" ;;
        esac
    done
    expect "docker: runtime packages cover every library of jobqd and jobq" "" "${uncovered# }"
    # No engine here: estimate the image from its parts.
    if command -v strip >/dev/null && [ -n "$apt_info" ]; then
        strip -o "$T/jobqd.s" "$JOBQD" && strip -o "$T/jobq.s" "$JOBQ"
        kib=0
        for p in $runtime_pkgs; do # the first version listed
            s=$(awk -v p="$p" '$0 == "Package: " p { on = 1 } on && /^Installed-Size:/ { print $2; exit }' \
                <<<"$apt_info")
            kib=$((kib + ${s:-0}))
        done
        bin_kib=$((($(stat -c %s "$T/jobqd.s") + $(stat -c %s "$T/jobq.s")) / 1024))
        # debian:12-slim unpacks to about 75 MB (74.8 MB on amd64).
        est=$(((74800 + kib + bin_kib) / 1000))
        echo "FIGURE docker.image_estimate_mb $est"
        [ "$est" -lt 100 ] && pass "docker: image estimate ${est} MB < 100 MB" ||
            fail "docker: image estimate < 100 MB" "$est MB"
    fi
fi

# ---- kubernetes ------------------------------------------------------------

K=$ETC/kubernetes
if [ ! -x "$YAMLCHECK" ]; then
    skip "kubernetes" "$YAMLCHECK is not built (make tools; needs libyaml-dev)"
else
    out=$("$YAMLCHECK" "$K"/*.yaml 2>&1)
    expect "k8s: every manifest parses, no repeated keys" "0:" "$?:$out"
    y() { "$YAMLCHECK" -g "$1" "$2" 2>/dev/null; }
    ss=$K/statefulset.yaml svc=$K/service.yaml cm=$K/configmap.yaml
    c=/spec/template/spec/containers/0
    for f in configmap.yaml service.yaml statefulset.yaml; do
        [ -n "$(y /apiVersion "$K/$f")" ] && [ -n "$(y /kind "$K/$f")" ] &&
            [ -n "$(y /metadata/name "$K/$f")" ] || fail "k8s: $f has apiVersion, kind, name" "missing"
        grep -qx -- "  - $f" "$K/kustomization.yaml" || fail "k8s: kustomization lists $f" "no"
    done
    expect "k8s: kustomization tags the image with VERSION" "$VERSION" \
        "$(y /images/0/newTag "$K/kustomization.yaml")"
    expect "k8s: one replica" 1 "$(y /spec/replicas "$ss")"
    expect "k8s: serviceName is the Service" "$(y /metadata/name "$svc")" "$(y /spec/serviceName "$ss")"
    expect "k8s: selector matches the pod's labels" "$(y /spec/template/metadata/labels/app.kubernetes.io~1name "$ss")" \
        "$(y /spec/selector/matchLabels/app.kubernetes.io~1name "$ss")"
    expect "k8s: the Service selects the pod" "$(y /spec/template/metadata/labels/app.kubernetes.io~1name "$ss")" \
        "$(y /spec/selector/app.kubernetes.io~1name "$svc")"
    expect "k8s: the state is a ReadWriteOnce claim" "ReadWriteOnce" \
        "$(y /spec/volumeClaimTemplates/0/spec/accessModes "$ss")"
    mapfile -t args < <(y $c/args "$ss")
    flags_exist "k8s: container args are jobqd's flags" "${args[@]}"
    argval() { # FLAG: its value in args
        local i
        for ((i = 0; i < ${#args[@]}; i++)); do
            [ "${args[i]}" = "$1" ] && echo "${args[i + 1]}"
        done
    }
    state_dir=$(argval --state-dir) config=$(argval --config) http=$(argval --http)
    port=${http##*:}
    expect "k8s: --http listens on every address" "0.0.0.0" "${http%:*}"
    expect "k8s: containerPort is the --http port" "$port" "$(y $c/ports/0/containerPort "$ss")"
    expect "k8s: liveness probe: GET /livez on the --http port" "/livez $port" \
        "$(y $c/livenessProbe/httpGet/path "$ss") $(y $c/livenessProbe/httpGet/port "$ss")"
    expect "k8s: readiness probe: GET /readyz on the --http port" "/readyz $port" \
        "$(y $c/readinessProbe/httpGet/path "$ss") $(y $c/readinessProbe/httpGet/port "$ss")"
    expect "k8s: startup probe: GET /livez on the --http port" "/livez $port" \
        "$(y $c/startupProbe/httpGet/path "$ss") $(y $c/startupProbe/httpGet/port "$ss")"
    expect "k8s: the Service targets the --http port" "$(y $c/ports/0/name "$ss") $port" \
        "$(y /spec/ports/0/targetPort "$svc") $(y /spec/ports/0/port "$svc")"
    expect "k8s: the Prometheus annotation names the port" "$port" \
        "$(y /metadata/annotations/prometheus.io~1port "$svc")"
    # Volumes: the claim at --state-dir, the ConfigMap at --config.
    mounts=$(for ((i = 0; i < $(y $c/volumeMounts/# "$ss"); i++)); do
        echo "$(y $c/volumeMounts/$i/name "$ss") $(y $c/volumeMounts/$i/mountPath "$ss")"
    done)
    grep -qx "$(y /spec/volumeClaimTemplates/0/metadata/name "$ss") $state_dir" <<<"$mounts" &&
        pass "k8s: the claim is mounted at --state-dir" ||
        fail "k8s: the claim is mounted at --state-dir" "$mounts"
    cm_mount=$(awk '$1 == "config" { print $2 }' <<<"$mounts")
    expect "k8s: the ConfigMap volume is the ConfigMap" "$(y /metadata/name "$cm")" \
        "$(y /spec/template/spec/volumes/0/configMap/name "$ss")"
    [ -n "$(y "/data/$(basename "$config")" "$cm")" ] && [ "$cm_mount" = "$(dirname "$config")" ] &&
        pass "k8s: --config is the ConfigMap's file" ||
        fail "k8s: --config is the ConfigMap's file" "$config vs mount $cm_mount"
    expect "k8s: JOBQ_SOCKET is in --state-dir" "$state_dir/jobq.sock" "$(y $c/env/0/value "$ss")"
    y "/data/$(basename "$config")" "$cm" >"$T/k8s-jobqd.conf"
    # Termination: the drain (shutdown-grace + kill-grace) must fit.
    g=$(conf_value "$T/k8s-jobqd.conf" shutdown-grace)
    kg=$(conf_value "$T/k8s-jobqd.conf" kill-grace)
    drain=$((($(to_ms "${g:-$(help_default shutdown-grace)}") + $(to_ms "${kg:-$(help_default kill-grace)}")) / 1000))
    tgp=$(y /spec/template/spec/terminationGracePeriodSeconds "$ss")
    [ -n "$tgp" ] && [ "$tgp" -gt "$drain" ] &&
        pass "k8s: terminationGracePeriodSeconds $tgp > drain ${drain}s" ||
        fail "k8s: terminationGracePeriodSeconds > shutdown-grace + kill-grace" "$tgp vs $drain"
    # The restricted Pod Security Standard, and what the issue adds.
    p=/spec/template/spec/securityContext s=$c/securityContext
    expect "k8s: pod runAsNonRoot" true "$(y $p/runAsNonRoot "$ss")"
    expect "k8s: pod seccomp RuntimeDefault" RuntimeDefault "$(y $p/seccompProfile/type "$ss")"
    expect "k8s: container runAsNonRoot" true "$(y $s/runAsNonRoot "$ss")"
    expect "k8s: allowPrivilegeEscalation false" false "$(y $s/allowPrivilegeEscalation "$ss")"
    expect "k8s: readOnlyRootFilesystem" true "$(y $s/readOnlyRootFilesystem "$ss")"
    expect "k8s: capabilities drop ALL, add none" "ALL:" \
        "$(y $s/capabilities/drop "$ss"):$(y $s/capabilities/add "$ss")"
    expect "k8s: container seccomp RuntimeDefault" RuntimeDefault "$(y $s/seccompProfile/type "$ss")"
    expect "k8s: runAsUser is the image's USER" "${user%%:*}" "$(y $p/runAsUser "$ss")"
    grep -qE 'hostPath|hostNetwork|hostPID|hostIPC|privileged' "$ss" &&
        fail "k8s: no host namespaces, hostPath or privileged" "found" ||
        pass "k8s: no host namespaces, hostPath or privileged"
    [ -n "$(y $c/resources/limits/cpu "$ss")" ] && [ -n "$(y $c/resources/limits/memory "$ss")" ] &&
        pass "k8s: CPU and memory limits" || fail "k8s: CPU and memory limits" "missing"
    if command -v kubectl >/dev/null && timeout 20 kubectl kustomize "$K" >"$T/rendered.yaml" 2>&1; then
        "$YAMLCHECK" "$T/rendered.yaml" && grep -q "image: jobq:$VERSION" "$T/rendered.yaml" &&
            pass "k8s: kubectl kustomize renders the manifests" ||
            fail "k8s: kubectl kustomize renders the manifests" "$(head -n 3 "$T/rendered.yaml")"
    else
        skip "k8s: kubectl kustomize" "kubectl is not installed (not in Debian)"
    fi
fi

# ---- kubernetes: the PostgreSQL Deployment ---------------------------------
# etc/kubernetes/postgres/: replicas sharing one database, /rpc behind a
# Service, a PodDisruptionBudget, the store URL and the token from a
# Secret. Checked as the StatefulSet is, then its container's arguments
# run a real jobqd (on SQLite: no database here) whose probes and /rpc
# answer with a token file mounted as the Secret's.

KP=$K/postgres
if [ ! -x "$YAMLCHECK" ]; then
    skip "k8s postgres" "$YAMLCHECK is not built (make tools; needs libyaml-dev)"
elif [ ! -d "$KP" ]; then
    fail "k8s postgres: etc/kubernetes/postgres exists" "missing"
else
    out=$("$YAMLCHECK" "$KP"/*.yaml 2>&1)
    expect "k8s postgres: every manifest parses, no repeated keys" "0:" "$?:$out"
    y() { "$YAMLCHECK" -g "$1" "$2" 2>/dev/null; }
    dep=$KP/deployment.yaml psvc=$KP/service.yaml pdb=$KP/pdb.yaml pcm=$KP/configmap.yaml
    c=/spec/template/spec/containers/0
    for f in configmap.yaml deployment.yaml service.yaml pdb.yaml; do
        [ -n "$(y /apiVersion "$KP/$f")" ] && [ -n "$(y /kind "$KP/$f")" ] &&
            [ -n "$(y /metadata/name "$KP/$f")" ] ||
            fail "k8s postgres: $f has apiVersion, kind, name" "missing"
        grep -qx -- "  - $f" "$KP/kustomization.yaml" ||
            fail "k8s postgres: kustomization lists $f" "no"
    done
    expect "k8s postgres: kinds" "Deployment Service PodDisruptionBudget ConfigMap" \
        "$(y /kind "$dep") $(y /kind "$psvc") $(y /kind "$pdb") $(y /kind "$pcm")"
    expect "k8s postgres: kustomization tags the image with VERSION" "$VERSION" \
        "$(y /images/0/newTag "$KP/kustomization.yaml")"
    expect "k8s postgres: three replicas" 3 "$(y /spec/replicas "$dep")"
    plabel=$(y /spec/template/metadata/labels/app.kubernetes.io~1name "$dep")
    expect "k8s postgres: selector matches the pod's labels" "$plabel" \
        "$(y /spec/selector/matchLabels/app.kubernetes.io~1name "$dep")"
    expect "k8s postgres: the Service selects the pods" "$plabel" \
        "$(y /spec/selector/app.kubernetes.io~1name "$psvc")"
    expect "k8s postgres: the PodDisruptionBudget selects the pods" "$plabel" \
        "$(y /spec/selector/matchLabels/app.kubernetes.io~1name "$pdb")"
    [ "$plabel" != "$(y /spec/template/metadata/labels/app.kubernetes.io~1name "$K/statefulset.yaml")" ] &&
        pass "k8s postgres: its pods are not the StatefulSet's Service's" ||
        fail "k8s postgres: its pods are not the StatefulSet's Service's" "both select $plabel"
    mu=$(y /spec/maxUnavailable "$pdb")
    [ -n "$mu" ] && [ "$mu" -ge 1 ] && [ $(($(y /spec/replicas "$dep") - mu)) -ge 2 ] &&
        pass "k8s postgres: disruptions leave at least two replicas (maxUnavailable $mu)" ||
        fail "k8s postgres: disruptions leave at least two replicas" "maxUnavailable '$mu'"
    mapfile -t pargs < <(y $c/args "$dep")
    flags_exist "k8s postgres: container args are jobqd's flags" "${pargs[@]}"
    pargval() {
        local i
        for ((i = 0; i < ${#pargs[@]}; i++)); do
            [ "${pargs[i]}" = "$1" ] && echo "${pargs[i + 1]}"
        done
    }
    pstate=$(pargval --state-dir) pconfig=$(pargval --config) phttp=$(pargval --http)
    ptoken=$(pargval --http-token-file)
    pport=${phttp##*:}
    expect "k8s postgres: --http listens on every address" "0.0.0.0" "${phttp%:*}"
    expect "k8s postgres: containerPort is the --http port" "$pport" "$(y $c/ports/0/containerPort "$dep")"
    for probe in liveness:/livez readiness:/readyz startup:/livez; do
        expect "k8s postgres: ${probe%%:*} probe: GET ${probe#*:} on the --http port" "${probe#*:} $pport" \
            "$(y $c/${probe%%:*}Probe/httpGet/path "$dep") $(y $c/${probe%%:*}Probe/httpGet/port "$dep")"
    done
    expect "k8s postgres: the Service targets the --http port for /rpc" "$(y $c/ports/0/name "$dep") $pport" \
        "$(y /spec/ports/0/targetPort "$psvc") $(y /spec/ports/0/port "$psvc")"
    expect "k8s postgres: the pods' Prometheus annotation names the port" "$pport" \
        "$(y /spec/template/metadata/annotations/prometheus.io~1port "$dep")"
    # The Secret: the store URL as JOBQD_STORE, the token as a file.
    store_env="" secret=""
    for ((i = 0; i < $(y $c/env/# "$dep"); i++)); do
        if [ "$(y $c/env/$i/name "$dep")" = JOBQD_STORE ]; then
            store_env=$(y $c/env/$i/valueFrom/secretKeyRef/key "$dep")
            secret=$(y $c/env/$i/valueFrom/secretKeyRef/name "$dep")
        fi
    done
    expect "k8s postgres: JOBQD_STORE comes from the Secret's store key" store "$store_env"
    grep -q 'store *=' "$pcm" && fail "k8s postgres: no store URL in the ConfigMap" "found" ||
        pass "k8s postgres: no store URL in the ConfigMap"
    pmounts=$(for ((i = 0; i < $(y $c/volumeMounts/# "$dep"); i++)); do
        echo "$(y $c/volumeMounts/$i/name "$dep") $(y $c/volumeMounts/$i/mountPath "$dep")"
    done)
    tvol="" tmode="" tkey="" tpath="" pcmname="" svol=""
    for ((i = 0; i < $(y /spec/template/spec/volumes/# "$dep"); i++)); do
        v=/spec/template/spec/volumes/$i
        if [ -n "$(y $v/secret/secretName "$dep")" ]; then
            tvol=$(y $v/name "$dep") tmode=$(y $v/secret/defaultMode "$dep")
            tkey=$(y $v/secret/items/0/key "$dep") tpath=$(y $v/secret/items/0/path "$dep")
            [ "$(y $v/secret/secretName "$dep")" = "$secret" ] || secret="mismatch"
        fi
        [ -n "$(y $v/configMap/name "$dep")" ] && pcmname=$(y $v/configMap/name "$dep") &&
            cvol=$(y $v/name "$dep")
        [ "$(y $v/name "$dep")" = "$(awk -v p="$pstate" '$2 == p { print $1 }' <<<"$pmounts")" ] &&
            "$YAMLCHECK" -g $v/emptyDir "$dep" >/dev/null 2>&1 && svol=1
    done
    [ "$secret" != mismatch ] && [ -n "$secret" ] &&
        pass "k8s postgres: the token volume is the store's Secret ($secret)" ||
        fail "k8s postgres: the token volume is the store's Secret" "'$secret'"
    expect "k8s postgres: --http-token-file is the Secret's token key" \
        "$(awk -v n="$tvol" '$1 == n { print $2 }' <<<"$pmounts")/$tpath token" "$ptoken $tkey"
    [[ $tmode =~ ^0?[0-7]?[0-7][0-7]0$ ]] && (((8#${tmode#0} & 8#027) == 0)) &&
        pass "k8s postgres: the token file's mode ($tmode) is nobody else's (jobqd refuses it else)" ||
        fail "k8s postgres: the token file's mode is nobody else's" "defaultMode '$tmode'"
    expect "k8s postgres: fsGroup lets the pod's group read the root-owned token" \
        "$(y /spec/template/spec/securityContext/runAsGroup "$dep")" \
        "$(y /spec/template/spec/securityContext/fsGroup "$dep")"
    expect "k8s postgres: the ConfigMap volume is the ConfigMap" "$(y /metadata/name "$pcm")" "$pcmname"
    [ -n "$(y "/data/$(basename "$pconfig")" "$pcm")" ] &&
        [ "$(awk -v n="$cvol" '$1 == n { print $2 }' <<<"$pmounts")" = "$(dirname "$pconfig")" ] &&
        pass "k8s postgres: --config is the ConfigMap's file" ||
        fail "k8s postgres: --config is the ConfigMap's file" "$pconfig vs $pmounts"
    [ -n "$svol" ] && pass "k8s postgres: --state-dir is a volume of the pod's own" ||
        fail "k8s postgres: --state-dir is a volume of the pod's own" "$pstate: $pmounts"
    y "/data/$(basename "$pconfig")" "$pcm" >"$T/k8s-pg-jobqd.conf"
    g=$(conf_value "$T/k8s-pg-jobqd.conf" shutdown-grace)
    kg=$(conf_value "$T/k8s-pg-jobqd.conf" kill-grace)
    drain=$((($(to_ms "${g:-$(help_default shutdown-grace)}") + $(to_ms "${kg:-$(help_default kill-grace)}")) / 1000))
    tgp=$(y /spec/template/spec/terminationGracePeriodSeconds "$dep")
    [ -n "$tgp" ] && [ "$tgp" -gt "$drain" ] &&
        pass "k8s postgres: terminationGracePeriodSeconds $tgp > drain ${drain}s" ||
        fail "k8s postgres: terminationGracePeriodSeconds > shutdown-grace + kill-grace" "$tgp vs $drain"
    # The restricted Pod Security Standard, as for the StatefulSet.
    p=/spec/template/spec/securityContext s=$c/securityContext
    expect "k8s postgres: pod runAsNonRoot" true "$(y $p/runAsNonRoot "$dep")"
    expect "k8s postgres: pod seccomp RuntimeDefault" RuntimeDefault "$(y $p/seccompProfile/type "$dep")"
    expect "k8s postgres: container runAsNonRoot" true "$(y $s/runAsNonRoot "$dep")"
    expect "k8s postgres: allowPrivilegeEscalation false" false "$(y $s/allowPrivilegeEscalation "$dep")"
    expect "k8s postgres: readOnlyRootFilesystem" true "$(y $s/readOnlyRootFilesystem "$dep")"
    expect "k8s postgres: capabilities drop ALL, add none" "ALL:" \
        "$(y $s/capabilities/drop "$dep"):$(y $s/capabilities/add "$dep")"
    expect "k8s postgres: container seccomp RuntimeDefault" RuntimeDefault "$(y $s/seccompProfile/type "$dep")"
    expect "k8s postgres: runAsUser is the image's USER" "${user%%:*}" "$(y $p/runAsUser "$dep")"
    expect "k8s postgres: no service account token in the pods" false \
        "$(y /spec/template/spec/automountServiceAccountToken "$dep")"
    grep -qE 'hostPath|hostNetwork|hostPID|hostIPC|privileged' "$KP"/*.yaml &&
        fail "k8s postgres: no host namespaces, hostPath or privileged" "found" ||
        pass "k8s postgres: no host namespaces, hostPath or privileged"
    [ -n "$(y $c/resources/limits/cpu "$dep")" ] && [ -n "$(y $c/resources/limits/memory "$dep")" ] &&
        pass "k8s postgres: CPU and memory limits" || fail "k8s postgres: CPU and memory limits" "missing"

    # The container's arguments, for real: paths into this test, the
    # token file as the kubelet mounts it (root's, 0440), a free port.
    mkdir -p "$T/pg-secret"
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$T/pg-secret/token"
    chmod "$tmode" "$T/pg-secret/token"
    run_pargs=()
    for a in "${pargs[@]}"; do
        case $a in
        "$pstate") a=$T/pg-state ;;
        "$pconfig") a=$T/k8s-pg-jobqd.conf ;;
        "$ptoken") a=$T/pg-secret/token ;;
        0.0.0.0:*) a=127.0.0.1:@PORT@ ;;
        esac
        run_pargs+=("$a")
    done
    up=""
    for _ in 1 2 3 4 5; do
        pgport=$((20000 + RANDOM % 40000))
        if start_jobqd "$T/pg-state/jobq.sock" env -u JOBQD_STORE "$JOBQD" "${run_pargs[@]//@PORT@/$pgport}"; then
            up=1
            break
        fi
        grep -qi "in use" "$T/jobqd.log" || break
    done
    if [ -z "$up" ]; then
        fail "k8s postgres: jobqd runs with the container's arguments" "$(log_tail)"
    else
        pass "k8s postgres: jobqd runs with the container's arguments (and the token file's mode)"
        until_ok 5 "[ \"\$(http_get $pgport /readyz)\" = 200 ]"
        expect "k8s postgres: readiness probe path answers 200" 200 "$(http_get $pgport /readyz)"
        expect "k8s postgres: liveness probe path answers 200" 200 "$(http_get $pgport /livez)"
        expect "k8s postgres: jobq reaches /rpc with the mounted token" pong \
            "$("$JOBQ" --url "http://127.0.0.1:$pgport" --token-file "$T/pg-secret/token" ping 2>&1)"
        "$JOBQ" --url "http://127.0.0.1:$pgport" ping >/dev/null 2>&1
        expect "k8s postgres: and not without it" 77 $?
        stop_daemon
    fi
fi

# ---- the container's command line, run for real ---------------------------
# jobqd with the pod's exact arguments (paths moved into this test, a free
# loopback port for 0.0.0.0:9090) answers the probes; the Dockerfile's
# HEALTHCHECK command passes against it and fails once it is gone. The same
# daemon serves the completion tests below.

if [ "${#args[@]}" -gt 0 ]; then
    run_args=()
    for a in "${args[@]}"; do
        case $a in
        "$state_dir") a=$STATE ;;
        "$config") a=$T/k8s-jobqd.conf ;;
        0.0.0.0:*) a=127.0.0.1:@PORT@ ;;
        esac
        run_args+=("$a")
    done
    up=""
    for _ in 1 2 3 4 5; do # a random port, again if it is taken
        hport=$((20000 + RANDOM % 40000))
        if start_jobqd "$SOCK" "$JOBQD" "${run_args[@]//@PORT@/$hport}"; then
            up=1
            break
        fi
        grep -qi "in use" "$T/jobqd.log" || break
    done
    if [ -z "$up" ]; then
        fail "k8s: jobqd runs with the container's arguments" "$(log_tail)"
    elif ! grep -q 'http.listen' "$T/jobqd.log" && [ -z "$(http_get $hport /livez)" ]; then
        pass "k8s: jobqd runs with the container's arguments"
        skip "k8s: probes and HEALTHCHECK against jobqd" "this jobqd does not serve --http yet"
    else
        pass "k8s: jobqd runs with the container's arguments"
        until_ok 5 "[ \"\$(http_get $hport /readyz)\" = 200 ]"
        expect "k8s: readiness probe path answers 200" 200 "$(http_get $hport /readyz)"
        expect "k8s: liveness probe path answers 200" 200 "$(http_get $hport /livez)"
        hc_cmd=$(sed -n 's/.*"bash", "-c", "\(.*\)"\]$/\1/p' <<<"$hc" | sed 's/\\"/"/g; s/\\\\/\\/g')
        hc_cmd=${hc_cmd//\/dev\/tcp\/127.0.0.1\/$port//dev/tcp/127.0.0.1/$hport}
        timeout 5 bash -c "$hc_cmd" 2>/dev/null
        expect "docker: the HEALTHCHECK command passes against jobqd" 0 "$?"
    fi
fi

# ---- completion ------------------------------------------------------------

# comp WORDS...: what bash completes for "jobq WORDS..." (the last word is
# the one being completed).
comp() {
    bash -c 'source "$0"; _jobq_bin=$1; shift
        COMP_WORDS=(jobq "$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _jobq
        [ ${#COMPREPLY[@]} -eq 0 ] || printf "%s\n" "${COMPREPLY[@]}"' \
        "$ETC/completion/jobq.bash" "$JOBQ" "$@" | sort | tr '\n' ' '
}
bash -n "$ETC/completion/jobq.bash" && pass "completion: bash syntax" ||
    fail "completion: bash syntax" "bash -n failed"
verbs=$(sed -n '/^commands:/,/^$/p' <<<"$("$JOBQ" --help)" | awk '/^  [a-z]/ { print $1 }' | sort | tr '\n' ' ')
expect "completion: bash offers every command" "$verbs" "$(comp "")"
expect "completion: bash completes a command" "submit " "$(comp sub)"
missing=""
for v in $verbs; do
    [ "$v" = help ] && continue # its argument is a command, not options
    want=$("$JOBQ" help "$v" 2>/dev/null | grep -oE '^  (-[a-z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+')
    got=" $(comp "$v" --) "
    for o in $want; do
        [[ $got == *" $o "* ]] || missing="$missing $v:$o"
    done
done
expect "completion: bash offers every option of every command" "" "${missing# }"
expect "completion: bash completes states after a comma" "queued,failed " "$(comp list --state queued,fa)"
[[ " $(comp submit --wait -- sh) " == *" sh "* ]] && pass "completion: bash completes the job's command" ||
    fail "completion: bash completes the job's command" "$(comp submit --wait -- sh)"

if [ -n "$DAEMON_PID" ]; then
    run=$(jq submit -- sleep 30)
    bad=$(jq submit -- false)
    jq wait "$bad" >/dev/null 2>&1
    until_ok 5 "test \"\$(state_of $run)\" = running"
    expect "completion: bash offers job ids for show" "$(printf '%s\n' "$run" "$bad" | sort | tr '\n' ' ')" \
        "$(comp --socket "$SOCK" show "")"
    expect "completion: bash offers running jobs for cancel" "$run " "$(comp --socket "$SOCK" cancel "")"
    expect "completion: bash offers failed jobs for retry" "$bad " "$(comp --socket "$SOCK" retry "")"
    if command -v zsh >/dev/null; then
        # The helpers, with the completion system's builtins stubbed to print.
        zids=$(zsh -f -c '
            _describe() { print -rl -- "${(@P)4}"; } # -t jobs DESCRIPTION ARRAY
            _wanted() { shift 3; "$@"; }
            compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }
            _arguments() { return 1; }
            _jobq_bin=$1
            source $0
            _jobq_sock=(--socket $2)
            _jobq_unfinished_ids -J -default-' "$ETC/completion/_jobq" "$JOBQ" "$SOCK")
        expect "completion: zsh offers running jobs with their state" "$run:running sleep 30" "$zids"
        # And for real: an interactive zsh on a pseudo-terminal (zpty), the
        # line after one TAB. The completion system's own directories only
        # on fpath: scanning all of them takes half a second per shell.
        zf=/usr/share/zsh/functions/Completion
        cat >"$T/zcomplete.zsh" <<'ZSH'
zmodload zsh/zpty || exit 2
out=$1.out
rm -f $out
zpty -b z zsh -f -i
zpty -w z "fpath=($2 $3 $3/Base $3/Unix $3/Zsh); autoload -U compinit; compinit -u -D; _jobq_bin=$4"
zpty -w z "dump() { print -r -- \"\$BUFFER\" > $out }; zle -N dump; bindkey '^X' dump"
zpty -w -n z "$5"$'\t\x18'
for i in {1..100}; do [[ -s $out ]] && break; sleep 0.05; done
zpty -d z
cat $out
ZSH
        zcomp() { zsh -f "$T/zcomplete.zsh" "$T/zc" "$ETC/completion" "$zf" "$JOBQ" "$1" 2>/dev/null; }
        if [ -d "$zf" ]; then
            expect "completion: zsh completes a command" "jobq stats " "$(zcomp "jobq sta")"
            expect "completion: zsh completes an option" "jobq submit --timeout=" \
                "$(zcomp "jobq submit --tim")"
            expect "completion: zsh completes the one unfinished job for cancel" \
                "jobq --socket $SOCK cancel $run " "$(zcomp "jobq --socket $SOCK cancel ")"
        fi
    fi
    stop_daemon KILL 2>/dev/null # its sleep is killed on exit, with every job of $STATE
    if [ -n "${hc_cmd:-}" ]; then
        timeout 5 bash -c "$hc_cmd" 2>/dev/null
        [ $? != 0 ] && pass "docker: the HEALTHCHECK command fails once jobqd is gone" ||
            fail "docker: the HEALTHCHECK command fails once jobqd is gone" "it passed"
    fi
fi
t0=$(date +%s%N)
got=$(comp --socket "$T/nothing.sock" cancel "")
ms=$((($(date +%s%N) - t0) / 1000000))
[ -z "$got" ] && [ "$ms" -lt 3000 ] &&
    pass "completion: bash completes nothing, at once, when jobqd is down (${ms}ms)" ||
    fail "completion: bash when jobqd is down" "'$got' after ${ms}ms"
if command -v zsh >/dev/null; then
    zsh -n "$ETC/completion/_jobq" && pass "completion: zsh syntax" ||
        fail "completion: zsh syntax" "zsh -n failed"
else
    skip "completion: zsh" "zsh is not installed"
fi

# ---- man pages -------------------------------------------------------------

if ! command -v mandoc >/dev/null; then
    skip "man" "mandoc is not installed (scripts/deps.sh installs it)"
else
    # Only references to pages that are not installed here may remain.
    out=$(mandoc -Tlint -Wstyle "$SRC"/man/* 2>&1 |
        grep -v -e 'referenced manual not found' -e 'outdated mandoc.db')
    expect "man: mandoc -Tlint is clean" "" "$out"
fi
missing=""
for f in $(help_flags); do
    grep -q "^\.It Fl -$f\( \|$\)" "$SRC/man/jobqd.8" || missing="$missing jobqd.8:--$f"
    case $f in help | version | config) continue ;; esac
    grep -q "^\.It Cm $f Ns" "$SRC/man/jobqd.conf.5" || missing="$missing jobqd.conf.5:$f"
done
for v in $verbs; do
    grep -q "^\.It Cm $v\( \|$\)" "$SRC/man/jobq.1" || missing="$missing jobq.1:$v"
    for o in $("$JOBQ" help "$v" 2>/dev/null | grep -oE '^  (-[a-z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+'); do
        grep -q "Fl $(sed 's/^-//' <<<"$o")\( \|$\)" "$SRC/man/jobq.1" || missing="$missing jobq.1:$v:$o"
    done
done
# Codes as the help writes them: 0, 1-255, 124, 128+N ... (1 is in 1-255).
for code in $("$JOBQ" --help | sed -n '/^exit status:/,$p' | awk '/^  [0-9]/ { print $1 }'); do
    case $code in
    1 | 1-255) re='^\.It 1\\(en255$' ;;
    *+N) re="^\\.It ${code%+N}+ Ns Ar n\$" ;;
    *) re="^\\.It $code\$" ;;
    esac
    grep -q "$re" "$SRC/man/jobq.1" || missing="$missing jobq.1:exit-$code"
done
for code in 0 1 2 3 4; do
    grep -q "^\.It $code\$" "$SRC/man/jobqd.8" || missing="$missing jobqd.8:exit-$code"
done
expect "man: every flag, key, command, option and exit status is documented" "" "${missing# }"

# Each flag's default and [live] mark in jobqd.8 are --help's. (threads:
# its default is this machine's CPU count.)
wrong=""
for f in $(help_flags); do
    item=$(awk -v f="-$f" '$1 == ".It" || $1 == ".El" { on = ($2 == "Fl" && $3 == f) } on' \
        "$SRC/man/jobqd.8" |
        tr '\n' ' ')
    d=$(help_default "$f")
    if [ -n "$d" ] && [ "$f" != threads ] && [[ $item != *"$d"* ]]; then
        wrong="$wrong --$f:default=$d"
    fi
    live=$([[ $item == *"Sy [live]"* ]] && echo live)
    [ "$live" = "$(help_live "$f")" ] || wrong="$wrong --$f:live=$(help_live "$f")"
    case $f in help | version | config) continue ;; esac
    item=$(awk -v f="$f" '$1 == ".It" || $1 == ".El" { on = ($2 == "Cm" && $3 == f) } on' \
        "$SRC/man/jobqd.conf.5" | tr '\n' ' ')
    if [ -n "$d" ] && [ "$f" != threads ] && [[ $item != *"$d"* ]]; then
        wrong="$wrong $f:default=$d"
    fi
    live=$([[ $item == *"Sy [live]"* ]] && echo live)
    [ "$live" = "$(help_live "$f")" ] || wrong="$wrong $f:live=$(help_live "$f")"
done
expect "man: jobqd.8 and jobqd.conf.5 give each flag --help's default and [live] mark" "" \
    "${wrong# }"

finish

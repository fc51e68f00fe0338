# install — `make install DESTDIR=... PREFIX=/usr/local` into a temporary
# tree (never the real system): every file where it belongs with its mode,
# units that name the installed paths, man pages that lint clean, and
# installed binaries that run: jobqd starts with the installed config and
# the installed jobq talks to it. A second install keeps an edited config.
# PREFIX=/usr puts the zsh completion where Debian's zsh looks for vendors.
. "$(dirname "$0")/lib.sh"

SRC=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=$(cat "$SRC/VERSION")
D=$T/dest
P=$D/usr/local

out=$(make --no-print-directory -C "$SRC" BUILD="$JOBQ_BUILD" install DESTDIR="$D" \
    PREFIX=/usr/local 2>&1)
expect "install: make install DESTDIR PREFIX succeeds" 0 "$?"
[ -n "${VERBOSE:-}" ] && echo "$out"

# Every file, with its mode; and nothing else.
want="755 usr/local/bin/jobq
755 usr/local/sbin/jobqd
644 usr/local/share/man/man1/jobq.1
644 usr/local/share/man/man5/jobqd.conf.5
644 usr/local/share/man/man8/jobqd.8
644 usr/local/lib/systemd/system/jobqd.service
644 usr/local/lib/systemd/system/jobqd.socket
644 usr/local/lib/systemd/system/jobqd-metrics.service
644 usr/local/lib/systemd/system/jobqd-metrics.socket
644 usr/local/lib/systemd/user/jobqd.service
644 usr/local/lib/systemd/user/jobqd.socket
644 etc/jobq/jobqd.conf
644 usr/local/share/bash-completion/completions/jobq
644 usr/local/share/zsh/site-functions/_jobq
644 usr/local/share/doc/jobq/README.md
644 usr/local/share/doc/jobq/examples/docker/Dockerfile"
for f in "$SRC"/docs/*.md; do
    want="$want
644 usr/local/share/doc/jobq/$(basename "$f")"
done
for f in "$SRC"/etc/kubernetes/*.yaml; do
    want="$want
644 usr/local/share/doc/jobq/examples/kubernetes/$(basename "$f")"
done
got=$(cd "$D" && find . -type f -printf '%m %P\n' | sort)
expect "install: every file, with its mode" "$(sort <<<"$want")" "$got"
bad=$(cd "$D" && find . -type d ! -perm 755 ! -path . -printf '%m %P\n')
expect "install: directories are 0755" "" "$bad"

# The installed files are the sources, the units with the installed paths.
for pair in man/jobq.1:share/man/man1/jobq.1 man/jobqd.8:share/man/man8/jobqd.8 \
    etc/completion/jobq.bash:share/bash-completion/completions/jobq; do
    cmp -s "$SRC/${pair%%:*}" "$P/${pair#*:}" || fail "install: ${pair#*:} is ${pair%%:*}" "differs"
done
cmp -s "$SRC/etc/jobqd.conf" "$D/etc/jobq/jobqd.conf" &&
    pass "install: the default config is etc/jobqd.conf" ||
    fail "install: the default config is etc/jobqd.conf" "differs"
expect "install: the system unit runs the installed jobqd" \
    "/usr/local/sbin/jobqd --foreground --socket /run/jobq/jobq.sock --state-dir /var/lib/jobq --config /etc/jobq/jobqd.conf" \
    "$(sed -n 's/^ExecStart=//p' "$P/lib/systemd/system/jobqd.service")"
expect "install: the user unit runs the installed jobqd" "/usr/local/sbin/jobqd --foreground" \
    "$(sed -n 's/^ExecStart=//p' "$P/lib/systemd/user/jobqd.service")"
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$T/units"
    for u in "$P"/lib/systemd/system/*; do
        sed "s|^ExecStart=/usr/local/sbin/jobqd|ExecStart=$P/sbin/jobqd|" "$u" >"$T/units/${u##*/}"
    done
    out=$(cd "$T/units" && systemd-analyze verify --man=no ./* 2>&1)
    expect "install: the installed units verify clean" "0:" "$?:$out"
else
    skip "install: units verify" "systemd-analyze is not installed"
fi

if command -v mandoc >/dev/null; then
    out=$(mandoc -Tlint -Wstyle "$P"/share/man/man*/* 2>&1 |
        grep -v -e 'referenced manual not found' -e 'outdated mandoc.db')
    expect "install: installed man pages lint clean" "" "$out"
    # Found by name in the installed tree, as man(1) would (mandoc's man).
    out=$(for m in jobq jobqd jobqd.conf; do mman -M "$P/share/man" -w "$m" 2>/dev/null; done)
    expect "install: man finds jobq(1), jobqd(8), jobqd.conf(5) under PREFIX/share/man" \
        "$P/share/man/man1/jobq.1 $P/share/man/man8/jobqd.8 $P/share/man/man5/jobqd.conf.5" \
        "$(echo $out)"
else
    skip "install: man pages" "mandoc is not installed"
fi

# The installed binaries run, and work together with the installed config.
expect "install: installed jobq --version" "jobq $VERSION" \
    "$("$P/bin/jobq" --version | awk '{ print $1, $2 }')"
expect "install: installed jobqd --version" "jobqd $VERSION" \
    "$("$P/sbin/jobqd" --version | awk '{ print $1, $2 }')"
"$P/sbin/jobqd" --config "$D/etc/jobq/jobqd.conf" --state-dir "$STATE" --http off \
    --foreground >>"$T/jobqd.log" 2>&1 &
DAEMON_PID=$!
if until_ok 10 "'$P/bin/jobq' --socket '$SOCK' ping"; then
    id=$("$P/bin/jobq" --socket "$SOCK" submit -- echo installed)
    "$P/bin/jobq" --socket "$SOCK" wait "$id"
    expect "install: installed jobqd runs a job with the installed config" installed \
        "$("$P/bin/jobq" --socket "$SOCK" logs "$id")"
    stop_daemon
else
    fail "install: installed jobqd starts with the installed config" "$(tail -n 2 "$T/jobqd.log")"
fi
bash -n "$P/share/bash-completion/completions/jobq" && pass "install: bash completion loads" ||
    fail "install: bash completion loads" "bash -n failed"

# Again over an edited config: it is kept, the new default lands beside it.
echo "concurrency = 3" >>"$D/etc/jobq/jobqd.conf"
sh "$SRC/scripts/install.sh" "$D" /usr/local "$JOBQ_BUILD" >/dev/null
grep -q '^concurrency = 3$' "$D/etc/jobq/jobqd.conf" && cmp -s "$SRC/etc/jobqd.conf" \
    "$D/etc/jobq/jobqd.conf.new" && pass "install: a second install keeps an edited config" ||
    fail "install: a second install keeps an edited config" "$(ls "$D/etc/jobq")"

# PREFIX=/usr: Debian's own layout.
sh "$SRC/scripts/install.sh" "$T/usr-dest" /usr "$JOBQ_BUILD" >/dev/null
[ -f "$T/usr-dest/usr/share/zsh/vendor-completions/_jobq" ] &&
    [ -x "$T/usr-dest/usr/sbin/jobqd" ] &&
    grep -q '^ExecStart=/usr/sbin/jobqd ' "$T/usr-dest/usr/lib/systemd/system/jobqd.service" &&
    pass "install: PREFIX=/usr installs the units and zsh completion where Debian looks" ||
    fail "install: PREFIX=/usr layout" "$(cd "$T/usr-dest" && find . -name '_jobq' -o -name jobqd)"
sh "$SRC/scripts/install.sh" "$T/x" relative "$JOBQ_BUILD" >/dev/null 2>&1
expect "install: a relative PREFIX is a usage error" 64 "$?"

finish

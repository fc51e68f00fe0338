#!/bin/sh
# install.sh DESTDIR PREFIX BUILD — what `make install` runs: copies the
# built binaries and everything else jobq ships into DESTDIR/PREFIX (and
# the config into DESTDIR/etc), ready for a package or for use in place.
# DESTDIR may be empty (the running system); nothing outside DESTDIR is
# touched. SYSCONFDIR (default /etc) moves the config file.
#
#   PREFIX/bin/jobq                       the client
#   PREFIX/sbin/jobqd                     the daemon (an administrator's command)
#   PREFIX/share/man/man{1,5,8}/          jobq.1, jobqd.conf.5, jobqd.8
#   PREFIX/lib/systemd/system/            jobqd.service, jobqd.socket, jobqd-metrics.*
#   PREFIX/lib/systemd/user/              jobqd.service, jobqd.socket (systemctl --user)
#   SYSCONFDIR/jobq/jobqd.conf            the commented default config; an
#                                         existing, edited one is kept and the
#                                         new one written beside it as .new
#   PREFIX/share/bash-completion/completions/jobq
#   PREFIX/share/zsh/vendor-completions/_jobq  (site-functions for a prefix
#                                         other than /usr: Debian's zsh looks
#                                         there for /usr/local)
#   PREFIX/share/doc/jobq/                README, docs, examples (Dockerfile,
#                                         Kubernetes manifests)
# The units name PREFIX/sbin/jobqd and SYSCONFDIR/jobq/jobqd.conf.
set -eu

if [ $# -ne 3 ]; then
    echo "usage: install.sh DESTDIR PREFIX BUILD   (see make install)" >&2
    exit 64
fi
destdir=$1 prefix=$2 build=$3
sysconfdir=${SYSCONFDIR:-/etc}
src=$(cd "$(dirname "$0")/.." && pwd)

case $prefix in
/*) ;;
*) echo "install.sh: PREFIX must be an absolute path, not '$prefix'" >&2; exit 64 ;;
esac
for bin in jobqd jobq; do
    if [ ! -x "$build/$bin" ]; then
        echo "install.sh: $build/$bin is not built (run make first)" >&2
        exit 1
    fi
done

root=$destdir$prefix
if [ "$prefix" = /usr ]; then
    zshdir=$root/share/zsh/vendor-completions
else
    zshdir=$root/share/zsh/site-functions
fi

# inst MODE SOURCE TARGET: copies, creating the directories (0755).
inst() {
    install -d -m 0755 "$(dirname "$3")"
    install -m "$1" "$2" "$3"
}

# unit SOURCE TARGET: a unit with the paths of this installation.
unit() {
    install -d -m 0755 "$(dirname "$2")"
    sed -e "s|/usr/local/sbin/jobqd|$prefix/sbin/jobqd|g" \
        -e "s|/etc/jobq/jobqd.conf|$sysconfdir/jobq/jobqd.conf|g" "$1" >"$2.tmp"
    chmod 0644 "$2.tmp"
    mv "$2.tmp" "$2"
}

inst 0755 "$build/jobq" "$root/bin/jobq"
inst 0755 "$build/jobqd" "$root/sbin/jobqd"

inst 0644 "$src/man/jobq.1" "$root/share/man/man1/jobq.1"
inst 0644 "$src/man/jobqd.conf.5" "$root/share/man/man5/jobqd.conf.5"
inst 0644 "$src/man/jobqd.8" "$root/share/man/man8/jobqd.8"

for u in jobqd.service jobqd.socket jobqd-metrics.socket jobqd-metrics.service; do
    unit "$src/etc/systemd/$u" "$root/lib/systemd/system/$u"
done
for u in jobqd.service jobqd.socket; do
    unit "$src/etc/systemd/user/$u" "$root/lib/systemd/user/$u"
done

# The administrator's config is never overwritten.
conf=$destdir$sysconfdir/jobq/jobqd.conf
if [ -f "$conf" ] && ! cmp -s "$src/etc/jobqd.conf" "$conf"; then
    inst 0644 "$src/etc/jobqd.conf" "$conf.new"
    echo "install.sh: kept your $sysconfdir/jobq/jobqd.conf; the new default is jobqd.conf.new"
else
    inst 0644 "$src/etc/jobqd.conf" "$conf"
fi

inst 0644 "$src/etc/completion/jobq.bash" "$root/share/bash-completion/completions/jobq"
inst 0644 "$src/etc/completion/_jobq" "$zshdir/_jobq"

doc=$root/share/doc/jobq
inst 0644 "$src/README.md" "$doc/README.md"
for f in "$src"/docs/*.md; do
    inst 0644 "$f" "$doc/$(basename "$f")"
done
inst 0644 "$src/etc/docker/Dockerfile" "$doc/examples/docker/Dockerfile"
for f in "$src"/etc/kubernetes/*.yaml; do
    inst 0644 "$f" "$doc/examples/kubernetes/$(basename "$f")"
done

echo "installed jobq $(cat "$src/VERSION" 2>/dev/null) into ${destdir:-/}${destdir:+ }(prefix $prefix)"
if [ -z "$destdir" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    echo "  systemctl daemon-reload && systemctl enable --now jobqd.socket   # the system service"
    echo "  systemctl --user enable --now jobqd.socket                      # or one per user"
fi

#!/bin/sh
# deps.sh — make sure the Debian packages jobq builds and tests with are
# installed. As root it installs what is missing with apt-get; otherwise it
# prints the exact command to run and fails. `deps.sh aarch64` adds the
# cross toolchain and arm64 libraries used by `make test-aarch64`;
# `deps.sh bench` adds what the benchmarks compare against;
# `deps.sh bench-optional` the servers of the optional peers of
# `make bench-peers` (BullMQ on redis-server, pg-boss on PostgreSQL), which
# bench/peers.sh skips with a reason if they cannot be installed;
# `deps.sh postgresql` the server the PostgreSQL store's tests start
# (tests/integ/pglib.sh asks for it, and skips them with a reason if it
# cannot be installed).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)

# libevent-dev is not Multi-Arch: same (its event-config.h differs per
# architecture): installing libevent-dev:arm64 removes the native one and
# breaks every native build. Its files are unpacked into
# build/aarch64/sysroot instead, where scripts/pkg-config-aarch64.sh finds
# them, with the .pc prefixes pointing there (the test links it
# statically, so no arm64 libevent is needed at run time).
arm_sysroot() {
    sysroot=$root/build/aarch64/sysroot
    pcdir=$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig
    [ -f "$pcdir/libevent_core.pc" ] && return 0
    tmp=$(mktemp -d)
    [ "$(id -u)" = 0 ] && chown _apt "$tmp" 2>/dev/null || true
    if ! (cd "$tmp" && apt-get download -q libevent-dev:arm64 >/dev/null 2>&1); then
        if [ "$(id -u)" != 0 ]; then
            echo "deps.sh: cannot download libevent-dev:arm64; as root run:" >&2
            echo "deps.sh:   dpkg --add-architecture arm64 && apt-get update" >&2
            rm -rf "$tmp"
            exit 1
        fi
        apt-get update -q >/dev/null
        (cd "$tmp" && apt-get download -q libevent-dev:arm64 >/dev/null)
    fi
    mkdir -p "$sysroot"
    dpkg-deb -x "$tmp"/libevent-dev_*_arm64.deb "$sysroot"
    sed -i "s|^prefix=.*|prefix=$sysroot/usr|" "$pcdir"/*.pc
    rm -rf "$tmp"
}

pkgs="build-essential pkg-config libevent-dev libsqlite3-dev libpq-dev libcjson-dev libcmocka-dev sqlite3 util-linux procps libyaml-dev mandoc systemd faketime clang libclang-rt-dev zsh"
case "${1:-}" in
aarch64)
    pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static"
    arm_pkgs="libcmocka-dev:arm64" # libevent: see arm_sysroot
    ;;
bench) pkgs="$pkgs golang-go gnuplot-nox beanstalkd task-spooler nq" ;;
bench-optional) pkgs="$pkgs redis-server postgresql" ;;
postgresql) pkgs="$pkgs postgresql" ;;
"") ;;
*) echo "deps.sh: unknown set '$1' (expected aarch64, bench, bench-optional or postgresql)" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs ${arm_pkgs:-}; do
    # dpkg-query prints "install ok installed" only for a complete install.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    [ -n "${arm_pkgs:-}" ] && arm_sysroot
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: missing packages:$missing, and this is not a Debian system (no apt-get)." >&2
    echo "deps.sh: install their equivalents and run make again." >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: missing packages:$missing" >&2
    echo "deps.sh: run as root:  apt-get update && apt-get install -y$missing" >&2
    exit 1
fi
if [ -n "${arm_pkgs:-}" ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
echo "deps.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh image has empty package lists; refresh only when an install fails.
apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing; }
[ -n "${arm_pkgs:-}" ] && arm_sysroot
exit 0

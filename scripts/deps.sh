#!/bin/sh
# deps.sh — make sure the Debian packages jobq builds and tests with are
# installed. As root it installs what is missing with apt-get; otherwise it
# prints the exact command to run and fails. `deps.sh aarch64` adds the
# cross toolchain and arm64 libraries used by `make test-aarch64`;
# `deps.sh bench` adds what the benchmarks compare against;
# `deps.sh bench-optional` the servers of the optional peers of
# `make bench-peers` (BullMQ on redis-server, pg-boss on PostgreSQL), which
# bench/peers.sh skips with a reason if they cannot be installed.
set -eu

pkgs="build-essential pkg-config libevent-dev libsqlite3-dev libcjson-dev libcmocka-dev sqlite3 util-linux procps libyaml-dev mandoc systemd faketime clang libclang-rt-dev zsh"
case "${1:-}" in
aarch64)
    pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static"
    arm_pkgs="libevent-dev:arm64 libcmocka-dev:arm64"
    ;;
bench) pkgs="$pkgs golang-go gnuplot-nox beanstalkd task-spooler nq" ;;
bench-optional) pkgs="$pkgs redis-server postgresql" ;;
"") ;;
*) echo "deps.sh: unknown set '$1' (expected aarch64, bench or bench-optional)" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs ${arm_pkgs:-}; do
    # dpkg-query prints "install ok installed" only for a complete install.
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

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

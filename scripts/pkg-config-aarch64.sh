#!/bin/sh
# pkg-config-aarch64.sh — pkg-config for the aarch64 cross build (make
# test-aarch64): arm64 .pc files only, never the native ones. libevent's
# come from build/aarch64/sysroot, where `scripts/deps.sh aarch64` unpacks
# libevent-dev:arm64 (installing it would remove the native libevent-dev).
root=$(cd "$(dirname "$0")/.." && pwd)
PKG_CONFIG_LIBDIR="$root/build/aarch64/sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
export PKG_CONFIG_LIBDIR
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
exec pkg-config "$@"

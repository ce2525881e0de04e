#!/usr/bin/env bash
# CI: cross-builds the aarch64 release binary (cross/build.sh, static) and runs it under
# qemu-user: `version` and `validate static-manifests` must behave as on x86_64. Then packages
# it as an arm64 .deb (cross/deb.sh) and checks the package's architecture and binary.
# Run as root on Debian 12 (installs packages). Fails on any mismatch.
#
#   cross/ci-check.sh [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf]
# (armv7: the same checks under qemu-arm-static, and an armhf package.)
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/apt.sh

target=${1:-aarch64-unknown-linux-gnu}
case "$target" in
    aarch64-unknown-linux-gnu) qemu=qemu-aarch64-static machine_want=AArch64 deb_arch=arm64 ;;
    armv7-unknown-linux-gnueabihf) qemu=qemu-arm-static machine_want=ARM deb_arch=armhf ;;
    *) echo "usage: cross/ci-check.sh [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf]" >&2; exit 2 ;;
esac
ensure_installed qemu-user-static

bin=$(bash cross/build.sh "$target" | tail -n1)
fail() {
    echo "cross/ci-check.sh: $*" >&2
    exit 1
}
[ -x "$bin" ] || fail "cross/build.sh printed '$bin', not an executable"

machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
[ "$machine" = "$machine_want" ] || fail "$bin is built for '$machine', not $machine_want"
# The default device build is static: no program interpreter, no shared libraries.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    fail "$bin is dynamically linked; cross/build.sh's default is static"
fi

# No -L sysroot: with it qemu-user hangs on thread spawns (see shared notes, cross.md).
want="outpost $(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
got=$("$qemu" "$bin" version) || fail "$qemu $bin version failed"
[ "$got" = "$want" ] || fail "'$bin version' printed '$got', expected '$want'"
echo "== $qemu $bin version: $got"

got=$("$qemu" "$bin" validate static-manifests) ||
    fail "$qemu $bin validate static-manifests failed"
# The same answer as on this machine, when a native build is at hand (CI's cargo test made one).
native=""
for b in target/release/outpost target/debug/outpost; do
    if [ -x "$b" ]; then native=$b; break; fi
done
if [ -n "$native" ]; then
    want=$("$native" validate static-manifests) || fail "$native validate static-manifests failed"
else
    want="$(ls static-manifests/*.yaml | wc -l) files valid"
fi
case "$got" in
    "$want"*) ;;
    *) fail "$target 'validate static-manifests' printed '$got', expected '$want'" ;;
esac
echo "== $qemu $bin validate static-manifests: $got"

deb=$(bash cross/deb.sh "$deb_arch" --bin "$bin" | tail -n1)
arch=$(dpkg-deb -f "$deb" Architecture)
[ "$arch" = "$deb_arch" ] || fail "$deb has Architecture '$arch', expected $deb_arch"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
cmp "$bin" "$tmp/usr/bin/outpost" || fail "$deb's /usr/bin/outpost differs from $bin"
echo "== $deb: Architecture $arch, $(stat -c %s "$deb") bytes"
echo "== $target: $bin $(stat -c %s "$bin") bytes stripped"

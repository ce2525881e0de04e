#!/usr/bin/env bash
# Packages an already-built outpost binary as a Debian package with dpkg-deb (offline, no
# debhelper needed).
#
#   cross/deb.sh ARCH [--bin FILE] [--out DIR] [-Z xz|gzip|none]
#
# ARCH: amd64 (default binary target/release/outpost), arm64 or armhf (default
# target/<aarch64|armv7 triple>/release/outpost, from cross/build.sh).
# Writes DIR/outpost_<version>_<ARCH>.deb (DIR defaults to target/deb) and prints its path on
# the last line of stdout.
#
# The package installs /usr/bin/outpost, the systemd unit, an empty /etc/edge.d and the
# example manifests under /usr/share/doc/outpost/examples (copy the ones you want into
# /etc/edge.d; none runs by itself). The maintainer scripts enable and start the service like
# debhelper's would. Purging keeps /var/lib/outpost: pods may still use what is in it.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: cross/deb.sh amd64|arm64|armhf [--bin FILE] [--out DIR] [-Z xz|gzip|none]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
arch=$1
shift
case "$arch" in
    amd64) bin=target/release/outpost ;;
    arm64) bin=target/aarch64-unknown-linux-gnu/release/outpost ;;
    armhf) bin=target/armv7-unknown-linux-gnueabihf/release/outpost ;;
    *) usage ;;
esac
out=target/deb
compress=xz
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || usage; bin=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        -Z) [ $# -ge 2 ] || usage; compress=$2; shift 2 ;;
        *) usage ;;
    esac
done

if [ ! -x "$bin" ]; then
    echo "cross/deb.sh: no binary at $bin: build it first (cargo build --release, or cross/build.sh with the target)" >&2
    exit 1
fi
machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
case "$arch:$machine" in
    amd64:"Advanced Micro Devices X86-64" | arm64:AArch64 | armhf:ARM) ;;
    *) echo "cross/deb.sh: $bin is built for '$machine', not $arch" >&2; exit 1 ;;
esac

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
description=$(sed -n 's/^description *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
license=$(sed -n 's/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
# Reproducible: every timestamp is the last commit's (dpkg-deb clamps to SOURCE_DATE_EPOCH).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
umask 022
chmod 0755 "$root" # the package's ./ entry
install -D -m 0755 "$bin" "$root/usr/bin/outpost"
install -D -m 0644 systemd/outpost.service "$root/lib/systemd/system/outpost.service"
install -d -m 0755 "$root/etc/edge.d"
install -d -m 0755 "$root/usr/share/doc/outpost/examples"
install -m 0644 static-manifests/*.yaml "$root/usr/share/doc/outpost/examples/"
cat >"$root/usr/share/doc/outpost/copyright" <<EOT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: outpost

Files: *
License: $license
 On Debian systems the full text of the license is in /usr/share/common-licenses/$license.
EOT
chmod 0644 "$root/usr/share/doc/outpost/copyright"

# A dynamically linked binary needs the glibc it was linked against; a static one nothing.
depends=""
glibc=$(readelf -V --wide "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1 || true)
if [ -n "$glibc" ]; then
    depends="Depends: libc6 (>= $glibc)"
fi
installed_size=$(du -sk --apparent-size "$root" | cut -f1)

install -d -m 0755 "$root/DEBIAN"
{
    echo "Package: outpost"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: outpost developers <outpost@localhost>"
    echo "Installed-Size: $installed_size"
    [ -z "$depends" ] || echo "$depends"
    # The built-in pod network runs the CNI bridge, host-local, portmap and firewall plugins;
    # hostNetwork pods need neither.
    echo "Recommends: containernetworking-plugins, iptables"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Description: $description"
    echo " outpost watches /etc/edge.d for Kubernetes Pod, ConfigMap and Secret manifests"
    echo " and keeps those pods running, like the kubelet's static pods. Example manifests"
    echo " are in /usr/share/doc/outpost/examples."
} >"$root/DEBIAN/control"

# What debhelper's dh_installsystemd generates, guarded for systems without
# init-system-helpers or without systemd running (containers, chroots, image builds).
cat >"$root/DEBIAN/postinst" <<'EOT'
#!/bin/sh
set -e
case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper unmask outpost.service >/dev/null || true
        # was-enabled is true on a first install: enable then; on upgrades keep the admin's choice.
        if deb-systemd-helper --quiet was-enabled outpost.service; then
            deb-systemd-helper enable outpost.service >/dev/null || true
        else
            deb-systemd-helper update-state outpost.service >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        # A restart never stops pods (KillMode=process): the new agent adopts them.
        if [ -n "$2" ]; then action=restart; else action=start; fi
        if command -v deb-systemd-invoke >/dev/null 2>&1; then
            deb-systemd-invoke "$action" outpost.service >/dev/null || true
        else
            systemctl "$action" outpost.service >/dev/null || true
        fi
    fi
    ;;
esac
exit 0
EOT

cat >"$root/DEBIAN/prerm" <<'EOT'
#!/bin/sh
set -e
# Stops the agent only: running pods keep running (KillMode=process). To stop them too,
# empty /etc/edge.d and wait until `outpost get pods` lists none before removing.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    if command -v deb-systemd-invoke >/dev/null 2>&1; then
        deb-systemd-invoke stop outpost.service >/dev/null || true
    else
        systemctl stop outpost.service >/dev/null || true
    fi
fi
exit 0
EOT

cat >"$root/DEBIAN/postrm" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if command -v deb-systemd-helper >/dev/null 2>&1; then
    case "$1" in
    remove)
        deb-systemd-helper mask outpost.service >/dev/null || true
        ;;
    purge)
        deb-systemd-helper purge outpost.service >/dev/null || true
        deb-systemd-helper unmask outpost.service >/dev/null || true
        ;;
    esac
fi
# /var/lib/outpost is kept even on purge: it holds images and pod data, and pods that are
# still running have volumes mounted from it.
exit 0
EOT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/outpost_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >&2
echo "$deb"

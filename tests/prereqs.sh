#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu. Idempotent; run as root.
# The root tier (tests/e2e/support.rs, missing_prerequisites) names these packages when one is
# missing: keep the two lists together.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/prereqs.sh: run as root (sudo), it installs Debian packages" >&2
    exit 1
fi
packages=(
    busybox-static   # the test image's only binary
    libseccomp-dev   # libseccomp.a, linked statically (libcontainer's seccomp)
    systemd          # systemd-analyze verifies the unit file
    containernetworking-plugins  # CNI plugins: bridge, host-local, portmap
    iptables         # used by the bridge (ipMasq) and portmap plugins
    nftables         # tests only: `nft` reads back outpost's table (the product never runs it)
    iproute2         # tests only: `ip` builds veth pairs in scratch namespaces
    docker-registry  # a local registry for the image pull tests
    chromium         # tests only: the status page in a headless browser
)
missing=()
# The API tests drive the real kubectl; keep a newer one if it is already installed.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Cross-builds the release binary for an ARM device on a Debian 12 (bookworm) x86_64 machine,
# without rustup targets: Debian's rustc-web/cargo-web plus the target's std from the same
# source package (multiarch), the gcc cross linkers, and the cross C compiler for the bundled
# sqlite. rustup's targets are not needed (nor downloadable offline); Debian's std for the
# target is a multiarch package that must be the very version of rustc-web.
#
#   cross/build.sh [--static|--dynamic] [--no-install] TARGET
#
# TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf.
# --static (the default): +crt-static, a fully static glibc binary that runs on any ARM Linux
#   of that architecture, whatever its glibc (Debian 11, Yocto, Raspberry Pi OS ...).
# --dynamic: links glibc dynamically; the device then needs glibc 2.34 or newer.
# --no-install: do not touch apt (the packages must already be there).
#
# Prints the path of the binary on the last line of stdout. Installing packages needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: cross/build.sh [--static|--dynamic] [--no-install] aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
    exit 2
}

static=1
install=1
target=""
for arg in "$@"; do
    case "$arg" in
        --static) static=1 ;;
        --dynamic) static=0 ;;
        --no-install) install=0 ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) [ -z "$target" ] || usage; target="$arg" ;;
    esac
done

case "$target" in
    aarch64-unknown-linux-gnu)
        arch=arm64 gnu=aarch64-linux-gnu
        cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
    armv7-unknown-linux-gnueabihf)
        arch=armhf gnu=arm-linux-gnueabihf
        cross_pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    *) usage ;;
esac

# The lowest toolchain the lockfile builds with (Cargo.toml's rust-version).
msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)

. cross/apt.sh

# "1.96.0+dfsg1-1~deb12u2" -> "1.96"
upstream_minor() {
    echo "$1" | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p'
}

version_ge() { # $1 >= $2, both "X.Y"
    [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

std_pkg="libstd-rust-web-dev:$arch"

ensure_packages() {
    local rustc_ver std_ver missing=() p
    rustc_ver=$(installed_version rustc-web)
    std_ver=$(installed_version "$std_pkg")
    for p in cargo-web "${cross_pkgs[@]}"; do
        [ -n "$(installed_version "$p")" ] || missing+=("$p")
    done
    if [ -n "$rustc_ver" ] && [ "$rustc_ver" = "$std_ver" ] && [ "${#missing[@]}" -eq 0 ]; then
        return 0 # everything there, nothing to ask apt
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "cross/build.sh: Debian packages missing (${missing[*]} rustc-web $std_pkg): run as root, or install them" >&2
        exit 1
    fi
    local added=0
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        dpkg --add-architecture "$arch"
        added=1
    fi
    # On failure, take back an architecture we added: a broken index of it would make every
    # later apt-get update on this machine fail.
    undo_arch() {
        if [ "$added" -eq 1 ] && ! dpkg-query -W -f='${Architecture}\n' 2>/dev/null | grep -qx "$arch"; then
            dpkg --remove-architecture "$arch" || true
        fi
    }
    # A failing third-party index must not stop us: the versions are checked below.
    apt_retry apt-get update || echo "cross/build.sh: apt-get update reported errors; checking what is available" >&2
    # std must be the very version of rustc-web (apt enforces it): pin all three to the
    # newest rustc-web available (an older installed one may be gone from the index).
    local want
    want=$(candidate_version rustc-web)
    want=${want:-$rustc_ver}
    if [ -z "$want" ]; then
        echo "cross/build.sh: no rustc-web package available (is bookworm-security or bookworm in sources.list?)" >&2
        exit 1
    fi
    if ! version_ge "$(upstream_minor "$want")" "$msrv"; then
        echo "cross/build.sh: rustc-web $want is older than rust-version $msrv; bookworm-security (which has 1.96) is probably unreachable: check 'apt-cache policy rustc-web'" >&2
        undo_arch
        exit 1
    fi
    if ! apt-cache madison "$std_pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want"; then
        echo "cross/build.sh: $std_pkg $want (matching rustc-web) is not in apt's index; if the $arch package index failed to download (see above), retry later" >&2
        undo_arch
        exit 1
    fi
    if ! apt_retry apt-get install -y --no-install-recommends \
        "rustc-web=$want" "cargo-web=$want" "$std_pkg=$want" "${cross_pkgs[@]}"; then
        echo "cross/build.sh: could not install rustc-web $want with $std_pkg $want (apt's candidate for $std_pkg: '$(candidate_version "$std_pkg")'); if the $arch package index failed to download (see above), retry later" >&2
        undo_arch
        exit 1
    fi
}

if [ "$install" -eq 1 ]; then
    ensure_packages
fi

rustc_ver=$(installed_version rustc-web)
std_ver=$(installed_version "$std_pkg")
if [ -z "$rustc_ver" ] || [ "$rustc_ver" != "$std_ver" ]; then
    echo "cross/build.sh: need rustc-web and $std_pkg at the same version (have '${rustc_ver:-none}' and '${std_ver:-none}')" >&2
    exit 1
fi

# rustup's proxies usually come first on PATH and have no ARM std: use Debian's toolchain.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
cargo=/usr/bin/cargo
# Cargo's per-target settings, upper-cased triple.
t=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${t}_LINKER=${gnu}-gcc"
# cc-rs (bundled sqlite) reads CC_<triple> with underscores.
export "CC_${target//-/_}=${gnu}-gcc" "AR_${target//-/_}=${gnu}-ar"
rustflags=""
if [ "$static" -eq 1 ]; then
    rustflags="-C target-feature=+crt-static"
fi
# Only for the target: build scripts and proc macros stay ordinary host programs.
export "CARGO_TARGET_${t}_RUSTFLAGS=${rustflags}"

echo "== $($RUSTC --version) for $target ($([ "$static" -eq 1 ] && echo static || echo dynamic))" >&2
"$cargo" build --locked --release --target "$target" --bin outpost >&2

bin="${CARGO_TARGET_DIR:-target}/$target/release/outpost"
"${gnu}-strip" "$bin" # already stripped by the profile; makes sure of it
echo "== $bin: $(stat -c %s "$bin") bytes stripped" >&2
echo "$bin"

#!/usr/bin/env bash
# Cross-builds the release binary for an ARM device on a Debian 12 (bookworm) x86_64 machine,
# without rustup targets: Debian's rustc-web/cargo-web plus the target's std from the same
# source package (multiarch), the gcc cross linkers, and the cross C compiler for the bundled
# sqlite. rustup's targets are not needed (nor downloadable offline); Debian's std for the
# target is a multiarch package that must be the very version of rustc-web.
#
#   cross/build.sh [--static|--dynamic] [--no-install] [--pool-std] TARGET
#
# TARGET: aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf. Needs the target's
#   libseccomp-dev (linked statically; installed with the other packages).
# --static (the default): +crt-static, a fully static glibc binary that runs on any ARM Linux
#   of that architecture, whatever its glibc (Debian 11, Yocto, Raspberry Pi OS ...).
# --dynamic: links glibc dynamically; the device then needs glibc 2.34 or newer.
# --no-install: do not touch apt (the packages must already be there).
# --pool-std: take the target's std from the Debian archive into a private sysroot (see
#   cross/pool-std.sh), what the script does by itself when apt's index lacks the std that
#   matches rustc-web.
#
# armv7: libcontainer 0.7.0 does not compile for 32-bit targets; the build uses a copy of the
# crate with cross/patches/libcontainer-0.7.0-32bit.patch applied (the other targets build the
# crate as it is). The patched copy and any pool sysroot are kept in
# ${XDG_CACHE_HOME:-~/.cache}/outpost-cross; Cargo.lock is not changed.
#
# Prints the path of the binary on the last line of stdout. Installing packages needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: cross/build.sh [--static|--dynamic] [--no-install] [--pool-std] aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf" >&2
    exit 2
}

static=1
install=1
pool_std=0
target=""
for arg in "$@"; do
    case "$arg" in
        --static) static=1 ;;
        --dynamic) static=0 ;;
        --no-install) install=0 ;;
        --pool-std) pool_std=1 ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) [ -z "$target" ] || usage; target="$arg" ;;
    esac
done

case "$target" in
    aarch64-unknown-linux-gnu)
        arch=arm64 gnu=aarch64-linux-gnu
        cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libseccomp-dev:arm64) ;;
    armv7-unknown-linux-gnueabihf)
        arch=armhf gnu=arm-linux-gnueabihf
        cross_pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross libseccomp-dev:armhf) ;;
    *) usage ;;
esac

# The lowest toolchain the lockfile builds with (Cargo.toml's rust-version).
msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)

. cross/apt.sh
. cross/pool-std.sh
cache="${XDG_CACHE_HOME:-$HOME/.cache}/outpost-cross"

# "1.96.0+dfsg1-1~deb12u2" -> "1.96"
upstream_minor() {
    echo "$1" | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p'
}

version_ge() { # $1 >= $2, both "X.Y"
    [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

std_pkg="libstd-rust-web-dev:$arch"

# Loud, so that nobody takes the fallback for the normal route.
shout() {
    echo "cross/build.sh: ********************************************************************" >&2
    echo "cross/build.sh: $*" >&2
    echo "cross/build.sh: ********************************************************************" >&2
}

ensure_packages() {
    local rustc_ver std_ver missing=() p
    rustc_ver=$(installed_version rustc-web)
    std_ver=$(installed_version "$std_pkg")
    for p in cargo-web "${cross_pkgs[@]}"; do
        [ -n "$(installed_version "$p")" ] || missing+=("$p")
    done
    if [ -n "$rustc_ver" ] && { [ "$rustc_ver" = "$std_ver" ] || [ "$pool_std" -eq 1 ]; } &&
        [ "${#missing[@]}" -eq 0 ]; then
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
    local std_spec=("$std_pkg=$want")
    if [ "$pool_std" -eq 1 ]; then
        std_spec=()
    elif ! apt-cache madison "$std_pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$want"; then
        shout "$std_pkg $want (matching rustc-web) is not in apt's index (did the $arch index fail to download? see above): taking it from the Debian archive instead, verified, into a private sysroot"
        pool_std=1
        std_spec=()
        # The architecture stays: libseccomp-dev:$arch (in cross_pkgs) needs its index.
    fi
    if ! apt_retry apt-get install -y --no-install-recommends \
        "rustc-web=$want" "cargo-web=$want" "${std_spec[@]}" "${cross_pkgs[@]}"; then
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
if [ -z "$rustc_ver" ]; then
    echo "cross/build.sh: rustc-web is not installed" >&2
    exit 1
fi
sysroot_flags=""
if [ "$pool_std" -eq 1 ] || [ "$rustc_ver" != "$std_ver" ]; then
    # A version in the path: a new rustc-web gets its own std, an old one stays usable.
    sysroot="$cache/sysroot-$arch-$rustc_ver"
    case "$sysroot" in *[[:space:]]*)
        echo "cross/build.sh: '$sysroot' has blanks, which RUSTFLAGS cannot carry: set XDG_CACHE_HOME" >&2
        exit 1 ;;
    esac
    shout "$target's std: $std_pkg $rustc_ver from the Debian archive into $sysroot, not apt's (installed: '${std_ver:-none}')"
    pool_std_sysroot "$rustc_ver" "$arch" "$target" "$sysroot" || {
        echo "cross/build.sh: no verified $std_pkg $rustc_ver: install it with apt when its index works again" >&2
        exit 1
    }
    sysroot_flags="--sysroot $sysroot/usr"
fi

# armv7: a patched copy of libcontainer (see the header), through a cargo path override,
# which replaces the crate without touching Cargo.lock.
cargo_config=()
if [ "$target" = armv7-unknown-linux-gnueabihf ]; then
    lc_version=$(awk '/^name = / { n = $3 } /^version = / && n == "\"libcontainer\"" { gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
    lc_patch="cross/patches/libcontainer-$lc_version-32bit.patch"
    if [ ! -f "$lc_patch" ]; then
        echo "cross/build.sh: Cargo.lock has libcontainer $lc_version and there is no $lc_patch: check whether it builds for armv7 as it is, or port the patch in cross/patches" >&2
        exit 1
    fi
    lc_dir="$cache/libcontainer-$lc_version-32bit-$(sha256sum "$lc_patch" | cut -c1-12)"
    if [ ! -f "$lc_dir/Cargo.toml" ]; then
        lc_sum=$(awk '/^name = / { n = $3 } /^checksum = / && n == "\"libcontainer\"" { gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
        /usr/bin/cargo fetch --locked --target "$target" >&2
        crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"libcontainer-$lc_version.crate" | head -n1)
        # The pristine crate, as Cargo.lock pins it (the unpacked registry copy may be edited).
        echo "$lc_sum  $crate" | sha256sum -c --quiet - >&2 || {
            echo "cross/build.sh: $crate does not match Cargo.lock's checksum" >&2
            exit 1
        }
        mkdir -p "$cache"
        part="$lc_dir.part.$$"
        rm -rf "$part"
        mkdir "$part"
        tar -xzf "$crate" -C "$part" --strip-components=1
        patch -d "$part" -p1 --no-backup-if-mismatch -s <"$lc_patch"
        rm -rf "$lc_dir"
        mv "$part" "$lc_dir"
    fi
    echo "== libcontainer $lc_version for $target: $lc_dir ($lc_patch applied)" >&2
    cargo_config=(--config "paths = [\"$lc_dir\"]")
fi

# rustup's proxies usually come first on PATH and have no ARM std: use Debian's toolchain.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
cargo=/usr/bin/cargo
# Cargo's per-target settings, upper-cased triple.
t=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${t}_LINKER=${gnu}-gcc"
# libseccomp (libcontainer's seccomp), linked statically (.cargo/config.toml) from the target's
# libseccomp-dev; the environment wins over config.toml's x86_64 path.
export LIBSECCOMP_LINK_TYPE=static "LIBSECCOMP_LIB_PATH=/usr/lib/$gnu"
if [ ! -f "/usr/lib/$gnu/libseccomp.a" ]; then
    echo "cross/build.sh: /usr/lib/$gnu/libseccomp.a missing: install libseccomp-dev:$arch (needs 'dpkg --add-architecture $arch' and its apt index)" >&2
    exit 1
fi
# cc-rs (bundled sqlite) reads CC_<triple> with underscores.
export "CC_${target//-/_}=${gnu}-gcc" "AR_${target//-/_}=${gnu}-ar"
rustflags="$sysroot_flags"
if [ "$static" -eq 1 ]; then
    rustflags="-C target-feature=+crt-static${rustflags:+ $rustflags}"
fi
# Only for the target: build scripts and proc macros stay ordinary host programs.
export "CARGO_TARGET_${t}_RUSTFLAGS=${rustflags}"

echo "== $($RUSTC --version) for $target ($([ "$static" -eq 1 ] && echo static || echo dynamic))" >&2
"$cargo" build --locked --release --target "$target" --bin outpost "${cargo_config[@]}" >&2

bin="${CARGO_TARGET_DIR:-target}/$target/release/outpost"
"${gnu}-strip" "$bin" # already stripped by the profile; makes sure of it
echo "== $bin: $(stat -c %s "$bin") bytes stripped" >&2
echo "$bin"

# Sourced by cross/build.sh: the target's Rust std straight from the Debian archive, for when
# apt's index of the foreign architecture lacks the version matching rustc-web (the
# bookworm-security armhf index once failed its hash check against the Release file for a
# while, and apt then offered only main's older std). Nothing is installed: the package is
# unpacked into a private sysroot that rustc gets with --sysroot.
#
# Trust: InRelease is checked with gpgv against Debian's archive keyring (as apt does, with its
# Valid-Until), the architecture's Packages.xz against InRelease's SHA256 (fetched by hash, as
# apt does), and the .deb against Packages.xz's SHA256. Any mismatch stops the build.

# Where rustc-web VERSION came from, as "URI SUITE COMPONENT", from apt-cache policy.
pool_origin() {
    apt-cache policy rustc-web 2>/dev/null | awk -v want="$1" '
        { line = $0; sub(/^ *\*\*\* /, "", line); n = split(line, f, " ") }
        n == 2 && f[1] ~ /\./ { inside = (f[1] == want); next } # "VERSION PRIORITY"
        inside && n >= 3 && f[2] ~ /:\/\// && f[3] ~ /\// {     # "PRIORITY URI SUITE/COMPONENT ..."
            split(f[3], sc, "/"); print f[2], sc[1], sc[2]; exit
        }'
}

# Downloads URI to FILE through apt (its proxies and retries), checking SHA256 if given.
pool_download() {
    local hash=()
    [ -z "${3:-}" ] || hash=("SHA256:$3")
    /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$1" "$2" "${hash[@]}" >&2
}

# Unpacks libstd-rust-web-dev:ARCH VERSION into SYSROOT (SYSROOT/usr/lib/rustlib/TARGET/lib)
# unless it is there already. Fails loudly on anything it cannot verify. A subshell: its
# variables and its EXIT trap stay inside.
pool_std_sysroot() (
    local version=$1 arch=$2 target=$3 sysroot=$4
    if ls "$sysroot"/usr/lib/rustlib/"$target"/lib/libstd-*.rlib >/dev/null 2>&1; then
        return 0 # complete: it is renamed into place only once unpacked
    fi
    local origin uri suite component
    origin=$(pool_origin "$version")
    if [ -z "$origin" ]; then
        echo "cross/build.sh: apt-cache policy rustc-web names no archive for $version" >&2
        return 1
    fi
    read -r uri suite component <<<"$origin"
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    local dists="$uri/dists/$suite"
    echo "== $dists/InRelease: checking its signature" >&2
    pool_download "$dists/InRelease" "$tmp/InRelease" || return 1
    if ! gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
        --output "$tmp/Release" "$tmp/InRelease" 2>"$tmp/gpgv.log"; then
        cat "$tmp/gpgv.log" >&2
        echo "cross/build.sh: $dists/InRelease: bad or unknown signature" >&2
        return 1
    fi
    local valid_until
    valid_until=$(sed -n 's/^Valid-Until: //p' "$tmp/Release")
    if [ -n "$valid_until" ] && [ "$(date -d "$valid_until" +%s)" -lt "$(date +%s)" ]; then
        echo "cross/build.sh: $dists/InRelease expired on $valid_until (a stale mirror?)" >&2
        return 1
    fi
    local index="$component/binary-$arch/Packages.xz" index_sha
    index_sha=$(awk -v f="$index" '/^[A-Za-z]/ { in256 = ($1 == "SHA256:") } in256 && $3 == f { print $1 }' "$tmp/Release")
    if [ -z "$index_sha" ]; then
        echo "cross/build.sh: $dists/InRelease lists no $index" >&2
        return 1
    fi
    # By hash first: the plain name may already be a newer index than the Release we hold.
    if ! pool_download "$dists/$component/binary-$arch/by-hash/SHA256/$index_sha" "$tmp/Packages.xz" "$index_sha" &&
        ! pool_download "$dists/$index" "$tmp/Packages.xz" "$index_sha"; then
        echo "cross/build.sh: no copy of $dists/$index matches the signed InRelease (SHA256 $index_sha)" >&2
        return 1
    fi
    local fields filename deb_sha
    fields=$(xz -dc "$tmp/Packages.xz" | awk -v RS= -v FS='\n' -v want="$version" '{
        p = v = f = s = ""
        for (i = 1; i <= NF; i++) {
            if ($i == "Package: libstd-rust-web-dev") p = 1
            if ($i == "Version: " want) v = 1
            if ($i ~ /^Filename: /) f = substr($i, 11)
            if ($i ~ /^SHA256: /) s = substr($i, 9)
        }
        if (p && v) { print f, s; exit }
    }')
    read -r filename deb_sha <<<"$fields"
    if [ -z "$filename" ] || [ -z "$deb_sha" ]; then
        echo "cross/build.sh: $dists/$index has no libstd-rust-web-dev $version" >&2
        return 1
    fi
    echo "== $uri/$filename: SHA256 $deb_sha (from the verified $index)" >&2
    pool_download "$uri/$filename" "$tmp/std.deb" "$deb_sha" || return 1
    # apt-helper checked the hash; check again here, it costs nothing.
    echo "$deb_sha  $tmp/std.deb" | sha256sum -c --quiet - >&2 || return 1
    mkdir -p "$(dirname "$sysroot")"
    local part="$sysroot.part.$$"
    rm -rf "$part"
    dpkg-deb -x "$tmp/std.deb" "$part"
    if ! ls "$part"/usr/lib/rustlib/"$target"/lib/libstd-*.rlib >/dev/null 2>&1; then
        rm -rf "$part"
        echo "cross/build.sh: $filename has no std for $target under usr/lib/rustlib" >&2
        return 1
    fi
    rm -rf "$sysroot"
    mv "$part" "$sysroot"
)

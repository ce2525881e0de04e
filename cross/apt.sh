# Sourced by the cross/ scripts: apt helpers that survive a flaky mirror.

# Runs an apt-get command up to 5 times (mirrors and CI networks drop connections).
apt_retry() {
    local i
    for i in 1 2 3 4 5; do
        if DEBIAN_FRONTEND=noninteractive "$@"; then return 0; fi
        [ "$i" -lt 5 ] || break
        echo "$0: '$*' failed (attempt $i of 5), retrying in $((i * 5)) s" >&2
        sleep $((i * 5))
    done
    return 1
}

# The installed version of a package, empty if it is not installed.
installed_version() {
    { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
        sed -n 's/^install ok installed //p'
}

# The version apt would install, empty if none.
candidate_version() {
    { apt-cache policy "$1" 2>/dev/null || true; } | sed -n 's/^ *Candidate: //p' | grep -v '(none)' || true
}

# Installs the packages that are missing (apt-get update first, only if something is).
ensure_installed() {
    local missing=() p
    for p in "$@"; do
        [ -n "$(installed_version "$p")" ] || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    # A failing third-party index must not stop us; the install says if anything is missing.
    apt_retry apt-get update || echo "$0: apt-get update reported errors; trying the install anyway" >&2
    apt_retry apt-get install -y --no-install-recommends "${missing[@]}"
}

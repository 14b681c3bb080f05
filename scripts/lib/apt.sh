# Shared by the scripts in scripts/ (sourced, not run): install Debian packages only when missing,
# and find the Debian mirror apt uses.
# Plain bash, no dependency on the caller's helpers: containers/Dockerfile copies it with build-horovod.sh.

# apt_missing PACKAGE...: print the packages (space-separated) that dpkg does not list as installed
apt_missing() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    echo "${missing[*]}"
}

# apt_ensure PACKAGE...: install the missing ones (as root; exits with a hint otherwise); apt-get update
# runs only when the plain install fails (stale or empty package lists). Messages go to stderr,
# prefixed with the calling script's name.
apt_ensure() {
    local who missing
    who=$(basename "$0" .sh)
    missing=$(apt_missing "$@")
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" != 0 ]; then
        printf '%s: error: missing Debian packages: %s (run as root or: apt-get install %s)\n' "$who" "$missing" "$missing" >&2
        exit 1
    fi
    printf '%s: installing Debian packages: %s\n' "$who" "$missing" >&2
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; } \
        || { printf '%s: error: apt-get install %s failed\n' "$who" "$missing" >&2; exit 1; }
}

# apt_mirror: the first Debian archive URI this machine's apt uses (deb822 .sources files, then the
# one-line .list format), without a trailing slash; http://deb.debian.org/debian when there is none
apt_mirror() {
    local url
    url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' |
        grep -E '/debian/?$' | head -n1 || true)
    if [ -z "$url" ]; then
        url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' |
            grep -E '/debian/?$' | head -n1 || true)
    fi
    url=${url%/}
    echo "${url:-http://deb.debian.org/debian}"
}

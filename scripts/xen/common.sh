# Shared by scripts/xen/*.sh (sourced, bash): the packages the nested Xen harness is made of and
# the cache it keeps them in. Each cached artefact lives in a directory named after a hash of its
# inputs (package versions, the script that made it), made under a lock and renamed into place whole.
XEN_CACHE=${VMPOD_XEN_CACHE:-/var/cache/vmpod/xen}
XEN_HYPERVISOR_PKG=xen-hypervisor-4.17-amd64
XEN_DOM0_KERNEL_PKG=linux-image-6.1.0-57-amd64
XEN_DOM0_RELEASE=6.1.0-57-amd64
XEN_SUITE=bookworm
XEN_MIRROR=${VMPOD_XEN_MIRROR:-http://deb.debian.org/debian}
XEN_SECURITY_MIRROR=${VMPOD_XEN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

xlog() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
xdie() { xlog "error: $*"; exit 1; }

# The candidate version apt would install (empty when unknown: run apt-get update).
xen_version_of() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n1; }

# A short key from the arguments: what a cached artefact was made from.
xen_key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

xen_require() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || xdie "missing tool $tool (run: make test-xen, which installs XEN_PACKAGES)"
    done
}

# apt-get, as root too for its downloads (apt's _apt user cannot write our dirs).
xen_apt() {
    local sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    apt-get -q "${sandbox[@]}" "$@" >&2
}

# apt-get download into the current directory.
xen_download() { xen_apt download "$@"; }

#!/bin/bash
# Build vmpod's minimal guest kernel from Debian's linux-source-6.1 tarball.
#
#   kernel/build.sh            -> prints the path of the cached bzImage (builds it first if needed)
#
# Result: ${VMPOD_KERNEL_CACHE:-/var/cache/vmpod/kernels}/minimal-<key>/bzImage
#   (+ vmlinux: the same kernel, stripped, an ELF with a PVH note; + config)
# key = first 16 hex digits of sha256 over kernel/vmpod.config, this script and the
# linux-source-6.1 package version. A cached bzImage is returned at once.
#
# The build runs under a temp dir inside the cache dir and is moved into place by
# rename(2), bzImage last, so an interrupted build never leaves a file at the final path.
# One build at a time (flock). Installs nothing: the Makefile apt-gets the build deps
# (linux-source-6.1 flex bison bc libelf-dev libssl-dev lz4 make gcc).
# Only the path goes to stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/vmpod.config
self=$here/$(basename "${BASH_SOURCE[0]}")
cache=${VMPOD_KERNEL_CACHE:-/var/cache/vmpod/kernels}
tarball=${VMPOD_LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}

log() { printf 'kernel/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) ||
    die "package linux-source-6.1 is not installed (make deps installs it)"
[ -r "$fragment" ] || die "missing $fragment"

key=$( { cat "$fragment" "$self"; printf 'linux-source-6.1 %s\n' "$version"; } |
       sha256sum | cut -c1-16)
dest=$cache/minimal-$key
if [ -f "$dest/bzImage" ]; then
    printf '%s\n' "$dest/bzImage"
    exit 0
fi

for tool in make gcc flex bison bc tar xz lz4 flock nice sha256sum objcopy; do
    command -v "$tool" >/dev/null 2>&1 || die "missing build tool: $tool (make deps installs it)"
done
[ -r "$tarball" ] || die "missing $tarball"
[ -e /usr/include/libelf.h ] || die "missing libelf-dev"
[ -e /usr/include/openssl/ssl.h ] || die "missing libssl-dev"

mkdir -p "$cache"
exec 9>"$cache/.minimal.lock"
log "waiting for the build lock ($cache/.minimal.lock)"
flock 9
# Another process may have finished the same build while we waited.
if [ -f "$dest/bzImage" ]; then
    printf '%s\n' "$dest/bzImage"
    exit 0
fi
# We hold the lock: any leftover build dir is from an interrupted build.
rm -rf "$cache"/.build-minimal-*

work=$(mktemp -d "$cache/.build-minimal-$key.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Fail if any option the fragment sets is not what the final .config says.
verify_config() {
    local config=$1 line name bad=0
    while IFS= read -r line; do
        case $line in
        'CONFIG_'*=*)
            grep -qxF -- "$line" "$config" || {
                name=${line%%=*}
                log "option not applied: $line (got: $(grep -E "^(# )?$name[= ]" "$config" || echo absent))"
                bad=1
            } ;;
        '# CONFIG_'*' is not set')
            name=${line#\# }; name=${name%% *}
            if grep -qE "^$name=" "$config"; then
                log "option should be unset: $(grep -E "^$name=" "$config")"
                bad=1
            fi ;;
        esac
    done <"$fragment"
    return $bad
}

start=$(date +%s)
log "building minimal-$key (linux-source-6.1 $version) in $work"
tar -xf "$tarball" -C "$work"
src=$work/linux-source-6.1
[ -d "$src" ] || die "unexpected tarball layout: no linux-source-6.1/"

export KBUILD_BUILD_USER=vmpod KBUILD_BUILD_HOST=vmpod
mk() { nice make -C "$src" -s "$@"; }
mk tinyconfig >&2
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$fragment") >&2
mk olddefconfig >&2
verify_config "$src/.config" || die "the config lacks options of $fragment (missing dependencies?)"

log "make -j$(nproc) bzImage"
mk -j"$(nproc)" bzImage >&2
verify_config "$src/.config" || die "the config changed during the build"

# Stage everything under the final name's sibling, then rename into place, bzImage last.
stage=$work/out
mkdir -p "$stage"
cp "$src/.config" "$stage/config"
objcopy --strip-all "$src/vmlinux" "$stage/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
sync -f "$stage/bzImage" 2>/dev/null || sync
mkdir -p "$dest"
mv -f "$stage/config" "$dest/config"
mv -f "$stage/vmlinux" "$dest/vmlinux"
mv -f "$stage/bzImage" "$dest/bzImage"
log "built $dest/bzImage in $(( $(date +%s) - start )) s"
printf '%s\n' "$dest/bzImage"

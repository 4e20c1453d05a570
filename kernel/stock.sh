#!/bin/bash
# Obtain Debian's stock cloud kernel for vmpod guests without installing it.
#
#   kernel/stock.sh            -> prints the kernel's cache directory
#
# Result: ${VMPOD_KERNEL_CACHE:-/var/cache/vmpod/kernels}/stock-<kernelrelease>/
#   vmlinuz, config, lib/modules/<kernelrelease>/ (with modules.dep etc. from depmod)
# The package is the linux-image-*-cloud-amd64 that the linux-image-cloud-amd64
# metapackage currently depends on; it is fetched with `apt-get download` and unpacked
# with `dpkg-deb -x` under a temp dir in the cache dir, then renamed into place in one
# step, so the final directory is either complete or absent. One fetch at a time (flock).
# Only the path goes to stdout; progress goes to stderr.
set -euo pipefail

cache=${VMPOD_KERNEL_CACHE:-/var/cache/vmpod/kernels}
meta=linux-image-cloud-amd64

log() { printf 'kernel/stock.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in apt-cache apt-get dpkg-deb flock; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
depmod=$(command -v depmod || true)
for p in /usr/sbin/depmod /sbin/depmod; do
    [ -n "$depmod" ] || { [ -x "$p" ] && depmod=$p; } || true
done

pkg=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$meta" 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1) || true
if [ -z "$pkg" ]; then
    # No package lists (no `apt-get update` yet, or offline): use what is cached.
    last=$(ls -1d "$cache"/stock-*/ 2>/dev/null | sort -V | tail -n1)
    [ -n "$last" ] && [ -f "$last/vmlinuz" ] || die "cannot resolve $meta (run apt-get update)"
    log "warning: cannot resolve $meta; using the cached ${last%/}"
    printf '%s\n' "${last%/}"
    exit 0
fi
release=${pkg#linux-image-}
dest=$cache/stock-$release
if [ -f "$dest/vmlinuz" ]; then
    printf '%s\n' "$dest"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.stock.lock"
flock 9
if [ -f "$dest/vmlinuz" ]; then
    printf '%s\n' "$dest"
    exit 0
fi
rm -rf "$cache"/.fetch-stock-*      # leftovers of interrupted runs (we hold the lock)

work=$(mktemp -d "$cache/.fetch-stock-$release.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log "downloading $pkg"
sandbox=()
# apt drops to the _apt user to download, which cannot write our 0700 temp dir.
[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
(cd "$work" && apt-get -q "${sandbox[@]}" download "$pkg" >&2)
deb=$(ls -1 "$work"/*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"

log "unpacking $(basename "$deb")"
dpkg-deb -x "$deb" "$work/root"
[ -f "$work/root/boot/vmlinuz-$release" ] || die "$deb has no boot/vmlinuz-$release"
[ -d "$work/root/lib/modules/$release" ] || die "$deb has no lib/modules/$release"

stage=$work/stage
mkdir -p "$stage/lib/modules"
mv "$work/root/boot/vmlinuz-$release" "$stage/vmlinuz"
[ -f "$work/root/boot/config-$release" ] && mv "$work/root/boot/config-$release" "$stage/config"
mv "$work/root/lib/modules/$release" "$stage/lib/modules/$release"
# Debian's package ships no modules.dep (its postinst runs depmod): make it here.
if [ ! -f "$stage/lib/modules/$release/modules.dep" ]; then
    [ -n "$depmod" ] || die "missing depmod (package kmod) to write modules.dep"
    "$depmod" -b "$stage" "$release"
fi
[ -s "$stage/lib/modules/$release/modules.dep" ] || die "no modules.dep for $release"
printf '%s\n' "$pkg" "$(dpkg-deb -f "$deb" Version)" >"$stage/package"
chmod 755 "$stage"

[ -e "$dest" ] && rm -rf "$dest"     # incomplete by hand? (we only ever rename whole dirs)
mv -T "$stage" "$dest"
log "unpacked $pkg into $dest"
printf '%s\n' "$dest"

#!/bin/bash
# The dom0 root filesystem of the nested Xen harness, as a zstd cpio the dom0 kernel unpacks:
# Debian minbase (mmdebstrap) with the Xen tools, the Xen device model (channels and qdisk need it),
# Python and what vmpod runs (qemu-img, mke2fs), plus the dom0 kernel's Xen modules.
# vmpod itself and the test image arrive in a second cpio (scripts/xen/payload.sh), concatenated to this.
#
#   scripts/xen/rootfs.sh HYPERVISOR_DIR   -> prints the path of base.cpio.zst (cached)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/common.sh"
xen_require mmdebstrap cpio zstd depmod flock sha256sum
hv=$(readlink -f "$1")
[ -d "$hv/lib/modules/$XEN_DOM0_RELEASE" ] || xdie "$hv holds no dom0 kernel modules (scripts/xen/hypervisor.sh)"

packages=(xen-utils-4.17 xen-utils-common xenstore-utils qemu-system-xen python3 kmod e2fsprogs qemu-utils
          iproute2 procps util-linux)
# Modules dom0 loads (the harness's init; virtio for the log disk), with their dependencies; the rest of the
# kernel's 400 MB stays out.
modules=(xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback overlay loop tun bridge
         virtio_pci virtio_blk)
versions=$(for p in "${packages[@]}"; do printf '%s=%s\n' "$p" "$(xen_version_of "$p")"; done)
key=$(xen_key "$versions" "${modules[*]}" "$(cat "$hv/packages")" "$(cat "$0" "$here/common.sh" | sha256sum)")
dest=$XEN_CACHE/rootfs-$key
if [ -f "$dest/base.cpio.zst" ]; then
    printf '%s\n' "$dest/base.cpio.zst"
    exit 0
fi
mkdir -p "$XEN_CACHE"
exec 9>"$XEN_CACHE/.rootfs.lock"
flock 9
if [ -f "$dest/base.cpio.zst" ]; then
    printf '%s\n' "$dest/base.cpio.zst"
    exit 0
fi
work=$(mktemp -d "$XEN_CACHE/.rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tree

xlog "mmdebstrap $XEN_SUITE with ${packages[*]}"
mmdebstrap --variant=minbase --mode=root --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    "$XEN_SUITE" "$tree" "deb $XEN_MIRROR $XEN_SUITE main" \
    "deb $XEN_SECURITY_MIRROR $XEN_SUITE-security main" >&2
[ -x "$tree/usr/lib/xen-4.17/bin/xl" ] || xdie "the rootfs has no xl"
[ -d "$tree/usr/share/qemu/keymaps" ] || xdie "the rootfs has no /usr/share/qemu/keymaps (channels need them)"

xlog "adding the dom0 kernel's modules: ${modules[*]}"
src=$hv/lib/modules/$XEN_DOM0_RELEASE
wanted=$(for m in "${modules[@]}"; do modprobe -d "$hv" -S "$XEN_DOM0_RELEASE" --show-depends "$m" | awk '$1 == "insmod" {print $2}'; done | sort -u)
for path in $wanted; do
    rel=${path#"$src/"}
    install -D -m 0644 "$path" "$tree/lib/modules/$XEN_DOM0_RELEASE/$rel"
done
cp "$src"/modules.order "$src"/modules.builtin* "$tree/lib/modules/$XEN_DOM0_RELEASE/"
depmod -b "$tree" "$XEN_DOM0_RELEASE"

(cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | zstd -q -T0 -6 >"$work/base.cpio.zst"
printf '%s\n' "$versions" >"$work/packages"
mkdir -p "$work/out"
mv "$work/base.cpio.zst" "$work/packages" "$work/out/"
chmod 755 "$work/out"
rm -rf "$dest"
mv -T "$work/out" "$dest"
xlog "made $dest ($(du -h "$dest/base.cpio.zst" | cut -f1))"
printf '%s\n' "$dest/base.cpio.zst"

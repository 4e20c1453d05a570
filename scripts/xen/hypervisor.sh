#!/bin/bash
# Xen and the dom0 kernel for the nested test harness, from Debian's packages, never installed.
#
#   scripts/xen/hypervisor.sh   -> prints the cache directory holding
#       xen.elf      the gunzipped /boot/xen-4.17-amd64.gz (QEMU boots it with -kernel, multiboot)
#       vmlinuz      Debian's generic kernel (the cloud kernel cannot be a dom0)
#       lib/modules/<release>/   its modules, with modules.dep
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/common.sh"
xen_require apt-cache apt-get dpkg-deb flock gunzip depmod sha256sum

xen_version=$(xen_version_of "$XEN_HYPERVISOR_PKG")
kernel_version=$(xen_version_of "$XEN_DOM0_KERNEL_PKG")
[ -n "$xen_version" ] && [ -n "$kernel_version" ] || xdie "apt knows no $XEN_HYPERVISOR_PKG or $XEN_DOM0_KERNEL_PKG (run apt-get update)"
dest=$XEN_CACHE/hypervisor-$(xen_key "$XEN_HYPERVISOR_PKG=$xen_version" "$XEN_DOM0_KERNEL_PKG=$kernel_version" "$(sha256sum <"$0")")
if [ -f "$dest/xen.elf" ]; then
    printf '%s\n' "$dest"
    exit 0
fi
mkdir -p "$XEN_CACHE"
exec 9>"$XEN_CACHE/.hypervisor.lock"
flock 9
if [ -f "$dest/xen.elf" ]; then
    printf '%s\n' "$dest"
    exit 0
fi
work=$(mktemp -d "$XEN_CACHE/.hypervisor.XXXXXX")
trap 'rm -rf "$work"' EXIT

xlog "downloading $XEN_HYPERVISOR_PKG $xen_version and $XEN_DOM0_KERNEL_PKG $kernel_version"
(cd "$work" && xen_download "$XEN_HYPERVISOR_PKG=$xen_version" "$XEN_DOM0_KERNEL_PKG=$kernel_version")
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done
stage=$work/stage
mkdir -p "$stage/lib/modules"
gz=$(ls "$work"/root/boot/xen-*-amd64.gz | head -n1)
[ -f "$gz" ] || xdie "$XEN_HYPERVISOR_PKG has no /boot/xen-*.gz"
gunzip -c "$gz" >"$stage/xen.elf"
mv "$work/root/boot/vmlinuz-$XEN_DOM0_RELEASE" "$stage/vmlinuz"
mv "$work/root/lib/modules/$XEN_DOM0_RELEASE" "$stage/lib/modules/"
depmod -b "$stage" "$XEN_DOM0_RELEASE"
printf '%s=%s\n' "$XEN_HYPERVISOR_PKG" "$xen_version" "$XEN_DOM0_KERNEL_PKG" "$kernel_version" >"$stage/packages"
chmod 755 "$stage"
rm -rf "$dest"
mv -T "$stage" "$dest"
xlog "made $dest"
printf '%s\n' "$dest"

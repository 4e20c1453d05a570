#!/bin/bash
# A newer QEMU for the nested machine (not for vmpod itself): Debian's bookworm-backports
# qemu-system-x86 and qemu-system-data, downloaded and verified by apt with a private source list and
# state, unpacked into the cache, never installed. bookworm's QEMU 7.2 runs nested Xen unreliably
# under TCG (README.md, "Xen").
#
#   scripts/xen/qemu.sh   -> prints the path of a `qemu` wrapper (the binary, with its firmware dirs)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/common.sh"
xen_require apt-get dpkg-deb flock sha256sum
suite=$XEN_SUITE-backports
packages=(qemu-system-x86 qemu-system-data)
mkdir -p "$XEN_CACHE"
exec 9>"$XEN_CACHE/.qemu.lock"
flock 9

# apt with its own sources and lists under the cache: the host's apt state is left as it is.
state=$XEN_CACHE/apt-backports
mkdir -p "$state/lists/partial" "$state/archives/partial"
printf 'deb %s %s main\n' "$XEN_MIRROR" "$suite" >"$state/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state" -o "Dir::Cache::archives=$state/archives"
             -o Debug::NoLocking=1)
xen_apt "${apt_private[@]}" update || xdie "apt-get update of $suite failed"
versions=$(for p in "${packages[@]}"; do
    printf '%s=%s\n' "$p" "$(apt-cache "${apt_private[@]}" policy "$p" | sed -n 's/^ *Candidate: //p')"
done)
grep -q '=$' <<<"$versions" && xdie "$suite has no ${packages[*]}"
dest=$XEN_CACHE/qemu-$(xen_key "$versions" "$(sha256sum <"$0")")
if [ -x "$dest/qemu" ]; then
    printf '%s\n' "$dest/qemu"
    exit 0
fi
work=$(mktemp -d "$XEN_CACHE/.qemu.XXXXXX")
trap 'rm -rf "$work"' EXIT
xlog "downloading $(tr '\n' ' ' <<<"$versions")from $suite"
# shellcheck disable=SC2046
(cd "$work" && xen_download "${apt_private[@]}" $(printf '%s/'"$suite"' ' "${packages[@]}"))
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done
stage=$work/stage
mkdir -p "$stage"
mv "$work/root/usr/bin/qemu-system-x86_64" "$stage/"
mv "$work/root/usr/share/qemu" "$stage/share"
# The firmware the machine boots with (seabios' bios-256k.bin) is bookworm's, installed with QEMU 7.2.
cat >"$stage/qemu" <<WRAPPER
#!/bin/sh
exec "$dest/qemu-system-x86_64" -L "$dest/share" -L /usr/share/seabios "\$@"
WRAPPER
chmod 755 "$stage" "$stage/qemu"
"$stage/qemu-system-x86_64" --version >&2 || xdie "the unpacked QEMU does not run (a library missing?)"
printf '%s\n' "$versions" >"$stage/packages"
rm -rf "$dest"
mv -T "$stage" "$dest"
xlog "made $dest"
printf '%s\n' "$dest/qemu"

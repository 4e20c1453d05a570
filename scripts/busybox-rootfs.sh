#!/bin/sh
# Writes a root-filesystem tarball made from Debian's busybox-static: the demo's and the tests' image.
# Usage: scripts/busybox-rootfs.sh OUT.tar
set -eu
out=$1
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "busybox-static is missing: apt-get install busybox-static" >&2; exit 1; }
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/bin" "$tree/etc" "$tree/root" "$tree/home/user" "$tree/proc" "$tree/sys" "$tree/dev" "$tree/tmp"
chmod 1777 "$tree/tmp"
chmod 700 "$tree/root"
cp "$busybox" "$tree/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tree/bin/$applet"
done
ln -s bin "$tree/sbin"
mkdir -p "$tree/usr"
ln -s ../bin "$tree/usr/bin"
cat > "$tree/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$tree/etc/group" <<'G'
root:x:0:
daemon:x:1:
wheel:x:10:user
audio:x:29:user
user:x:1000:
nogroup:x:65534:
G
chown -R 1000:1000 "$tree/home/user"
tar -C "$tree" --numeric-owner -cf "$out" .

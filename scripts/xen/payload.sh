#!/bin/bash
# What changes with every commit, as a second cpio appended to the cached base rootfs: the dom0 /init,
# vmpod (this checkout's src/ and the Python packages it imports, from the venv), the agent, the guest
# kernel, the busybox test image and the checks dom0 runs (tests/xen/dom0_checks.py).
#
#   scripts/xen/payload.sh BASE_CPIO GUEST_KERNEL OUT   -> writes OUT (base + payload, one initramfs)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
repo=$(readlink -f "$here/../..")
. "$here/common.sh"
xen_require cpio gzip python3
base=$1 kernel=$2 out=$3
venv_site=$(ls -d "$repo"/.venv/lib/python3*/site-packages 2>/dev/null | head -n1)
[ -d "$venv_site" ] || xdie "no .venv in $repo (run: make venv)"
[ -x "$repo/agent/build/vmpod-agent" ] || xdie "no agent/build/vmpod-agent (run: make agent)"
[ -f "$repo/build/busybox.tar" ] || xdie "no build/busybox.tar (run: make build/busybox.tar)"
[ -f "$kernel" ] || xdie "no guest kernel $kernel (run: make kernel)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree=$work/tree
opt=$tree/opt/vmpod
# vmpod and its dependencies are installed where Debian's python3 finds them without PYTHONPATH:
# the hypervisor's guard process is started with a minimal environment, as every vmpod child is.
site=$tree/usr/local/lib/python3.11/dist-packages
mkdir -p "$site" "$opt/kernels/minimal-xen"
install -m 0755 "$here/dom0-init.sh" "$tree/init"
cp -a "$repo/src/vmpod" "$site/vmpod"
# The runtime dependencies of vmpod (pyproject.toml) and theirs; the venv's Python is Debian's 3.11, as dom0's.
for pkg in httpx httpcore h11 anyio sniffio idna certifi rich markdown_it mdurl pygments zstandard typing_extensions.py; do
    [ -e "$venv_site/$pkg" ] && cp -a "$venv_site/$pkg" "$site/"
done
find "$site" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$repo/agent/build/vmpod-agent" "$opt/vmpod-agent"
cp "$kernel" "$opt/kernels/minimal-xen/bzImage"
cp "$repo/build/busybox.tar" "$opt/busybox.tar"
cp "$repo/tests/xen/dom0_checks.py" "$opt/dom0_checks.py"
cat >"$opt/run-checks" <<'EOF'
#!/bin/sh
export VMPOD_KERNEL_CACHE=/opt/vmpod/kernels
export VMPOD_AGENT=/opt/vmpod/vmpod-agent VMPOD_BOOT_TIMEOUT=300 VMPOD_ROOT=/var/lib/vmpod HOME=/root
exec python3 /opt/vmpod/dom0_checks.py "$@"
EOF
chmod 0755 "$opt/run-checks"
(cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$work/payload.cpio.gz"
# The kernel unpacks concatenated archives in order: the payload's files land on top of the base.
cat "$base" "$work/payload.cpio.gz" >"$out.tmp"
mv "$out.tmp" "$out"
xlog "wrote $out ($(du -h "$out" | cut -f1))"

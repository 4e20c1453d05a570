#!/bin/bash
# /init of the harness's dom0 (runs as PID 1 from the initramfs): brings up the Xen toolstack as
# Debian's /etc/init.d/xen would, then runs the checks and powers the machine off.
# Every line it prints reaches the host through hvc0 -> Xen's console -> com1 -> a log under build/.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "VMPOD-XEN $*"; }
finish() {
    say "DONE $1"
    sync
    echo o >/proc/sysrq-trigger
    sleep 30
    exit "$1"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /var/lock /var/run/xen /var/lib/xen /var/log/xen /run/xenstored
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mkdir -p /run/xen /run/xenstored /run/lock
mount -t tmpfs tmpfs /tmp
echo 1 >/proc/sys/kernel/sysrq
hostname dom0
ip link set lo up

say "BOOTED $(cut -d' ' -f1 /proc/uptime)"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback xen-netback overlay loop tun virtio_pci virtio_blk; do
    modprobe "$m" || say "WARN modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen || finish 90
grep -q control_d /proc/xen/capabilities || { say "ERROR not a dom0"; finish 91; }
XENSTORED_ROOTDIR=/run/xenstored oxenstored --pid-file /run/xenstore.pid || { say "ERROR xenstored"; finish 92; }
for _ in $(seq 100); do xenstore-read / >/dev/null 2>&1 && break; sleep 0.2; done
/usr/lib/xen-4.17/bin/xen-init-dom0 || { say "ERROR xen-init-dom0"; finish 93; }
mkdir -p /var/log/xen/console
xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || { say "ERROR xenconsoled"; finish 94; }
say "READY $(cut -d' ' -f1 /proc/uptime)"
xl info | grep -E '^(xen_version|xen_caps|virt_caps|total_memory|free_memory|nr_cpus|xen_commandline)' | sed 's/^/VMPOD-XEN INFO /'

code=0
if [ -x /opt/vmpod/run-checks ]; then
    # The value of vmpod.NAME=VALUE on the kernel command line, if VALUE matches the pattern $2.
    cmdline_arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^vmpod\\.$1=\\($2\\)\$/\\1/p"; }
    # vmpod.checks=NAME+NAME runs only those checks (VMPOD_XEN_CHECKS on the host).
    only=$(cmdline_arg checks '[A-Za-z0-9_+]*' | tr '+' ' ')
    # vmpod.check_timeout=S bounds each check (VMPOD_XEN_CHECK_TIMEOUT on the host; dom0_checks.py's default).
    limit=$(cmdline_arg check_timeout '[0-9]*')
    [ -n "$limit" ] && export VMPOD_XEN_CHECK_TIMEOUT="$limit"
    # vmpod.mode=pv boots every guest paravirtualised (VMPOD_XEN_GUEST_MODE on the host).
    mode=$(cmdline_arg mode 'pvh\|pv')
    [ -n "$mode" ] && export VMPOD_XEN_MODE="$mode"
    # shellcheck disable=SC2086
    /opt/vmpod/run-checks $only || code=$?
else
    say "ERROR /opt/vmpod/run-checks is missing"
    code=95
fi
finish "$code"

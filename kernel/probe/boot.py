#!/usr/bin/env python3
"""Boot a kernel + the probe initramfs under QEMU microvm (TCG) and time it.

The agent port's chardev gets one end of a socketpair (fd passed to QEMU); the guest's
/init writes a line to the port, which this script reads back from the other end.
Prints the argv, the probe's lines, whether the hello arrived, and the wall time from
QEMU launch to QEMU exit (median over --runs).
"""
import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time


def host_tsc_khz():
    """Host TSC frequency in kHz, see tsc_khz.py."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tsc_khz import tsc_khz
    return tsc_khz()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--disk", required=True, help="qcow2 root disk")
    ap.add_argument("--machine", default="microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=on,acpi=off")
    ap.add_argument("--append", default="")
    ap.add_argument("--base-append", default="console=ttyS0 quiet tsc_early_khz={tsc} tsc=reliable "
                    "no_timer_check cryptomgr.notests i8042.noaux pci=off rcupdate.rcu_expedited=1 "
                    "reboot=t panic=-1")
    ap.add_argument("--off", default="reboot", choices=["reboot", "poweroff", "halt"])
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--no-sandbox", action="store_true")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra QEMU arguments (after --)")
    a = ap.parse_args()

    tsc = host_tsc_khz()
    append = " ".join(x for x in (a.base_append.format(tsc=tsc), a.append, f"vmpod.off={a.off}") if x)
    times, results = [], []
    for run in range(a.runs):
        host, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = guest.fileno()
        argv = ["qemu-system-x86_64",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-accel", "tcg,tb-size=32",
                "-M", a.machine, "-cpu", "max", "-smp", "1", "-m", a.memory,
                "-kernel", a.kernel, "-initrd", a.initrd, "-append", append,
                "-serial", "stdio",
                "-device", "virtio-serial-device",
                "-chardev", f"socket,id=agent,fd={fd}",
                "-device", "virtserialport,chardev=agent,name=org.vmpod.agent.0",
                "-drive", f"if=none,id=root,file={a.disk},format=qcow2",
                "-device", "virtio-blk-device,drive=root"]
        if not a.no_sandbox:
            argv += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        argv += a.extra
        if run == 0:
            print("argv:", shlex.join(argv))
        t0 = time.monotonic()
        p = subprocess.Popen(["timeout", str(a.timeout)] + argv, pass_fds=[fd],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        guest.close()
        out, _ = p.communicate()
        wall = time.monotonic() - t0
        host.setblocking(False)
        try:
            hello = host.recv(4096)
        except BlockingIOError:
            hello = b""
        host.close()
        text = out.decode(errors="replace")
        ok = "VMPOD-PROBE result OK" in text and b"vmpod-probe-hello" in hello and p.returncode == 0
        times.append(wall)
        results.append(ok)
        lines = text.splitlines() if (a.verbose or not ok or run == 0) else []
        for line in lines:
            if a.verbose or not ok or "VMPOD-PROBE" in line:
                print("   ", line)
        print(f"run {run}: rc={p.returncode} wall={wall:.3f}s hello={hello!r} ok={ok}")
    if a.runs > 1:
        print(f"median wall {statistics.median(times):.3f}s over {a.runs} runs "
              f"(min {min(times):.3f} max {max(times):.3f}); ok {sum(results)}/{a.runs}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()

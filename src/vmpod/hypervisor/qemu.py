"""The QEMU driver: a `microvm` machine booting the kernel directly, devices on virtio-mmio.

The command line is data built in one place (`plan`); `vmpod run --dry-run` prints it. No default
devices, no user config, QEMU's seccomp sandbox on; every file and socket arrives as an inherited fd.
"""

from __future__ import annotations

import shutil

from vmpod.guest.messages import CHANNEL_NAME
from vmpod.hypervisor.accel import Accel
from vmpod.hypervisor.base import LaunchPlan, TapNetwork, UnpluggedNetwork, VmSpec

BINARY = "qemu-system-x86_64"
# A bounded translation cache keeps an idle TCG guest small (DESIGN.md decision 5).
TCG_TB_SIZE_MIB = 32
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def escape(value: str) -> str:
    """QEMU option values use ',' as separator; a literal comma is written ',,'."""
    return value.replace(",", ",,")


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class QemuDriver:
    name = "qemu"

    def available(self) -> str | None:
        return None if shutil.which(BINARY) else f"{BINARY} not found (apt-get install qemu-system-x86)"

    def plan(self, spec: VmSpec) -> LaunchPlan:
        fds: list[int] = [spec.channel_fd]
        if spec.accel.accel is Accel.KVM:
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            accel = ["-accel", f"tcg,tb-size={TCG_TB_SIZE_MIB}", "-cpu", "max"]
        # fmt: off
        argv = [
            BINARY,
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-sandbox", SANDBOX,
            # ACPI stays on: without it (and with pit/pic off) the guest gets no timer interrupt, and
            # Debian's kernel finds no virtio-mmio devices. The RTC gives the guest the time of day.
            "-M", "microvm,x-option-roms=off,pit=off,pic=off,rtc=on",
            *accel,
            "-smp", str(spec.vcpus),
            "-m", f"{spec.memory_mib}M",
            "-kernel", escape(str(spec.kernel)),
            "-initrd", escape(str(spec.initrd)),
            "-append", " ".join(spec.cmdline),
            "-chardev", "stdio,id=console,signal=off",
            "-serial", "chardev:console",
            "-device", "virtio-serial-device",
            "-chardev", f"socket,id=agent,fd={spec.channel_fd}",
            "-device", f"virtserialport,chardev=agent,name={CHANNEL_NAME}",
            "-device", "virtio-rng-device",
            # Memory the guest frees goes back to the host (free page reporting).
            "-device", "virtio-balloon-device,free-page-reporting=on,deflate-on-oom=on",
        ]
        for index, disk in enumerate(spec.disks):
            fdset = index + 1
            fds += [disk.fd, disk.readonly_fd]
            argv += [
                "-add-fd", f"fd={disk.fd},set={fdset}",
                "-add-fd", f"fd={disk.readonly_fd},set={fdset}",
                "-drive", f"if=none,id=disk{index},file=/dev/fdset/{fdset},format={disk.format},"
                          f"discard=unmap,readonly={'on' if disk.readonly else 'off'}",
                "-device", f"virtio-blk-device,drive=disk{index}",
            ]
        nic = f"virtio-net-device,netdev=net0{f',mac={spec.mac}' if spec.mac else ''}"
        if isinstance(spec.network, TapNetwork):
            fds.append(spec.network.fd)
            argv += [
                "-netdev", f"tap,id=net0,fd={spec.network.fd}",
                "-device", nic,
            ]
        elif isinstance(spec.network, UnpluggedNetwork):
            # A hub with this one port: no migration state of its own, so any backend can follow.
            argv += [
                "-netdev", "hubport,id=net0,hubid=0",
                "-device", nic,
            ]
        elif spec.network is not None:
            forwards = "".join(
                f",hostfwd={f.protocol}:{_host(f.host_ip)}:{f.host_port}-:{f.guest_port}" for f in spec.network.forwards
            )
            argv += [
                "-netdev", f"user,id=net0{forwards}",
                "-device", nic,
            ]
        for share in spec.shares:
            if share.vhost_user_socket:
                argv += [
                    "-chardev", f"socket,id=fs-{share.tag},path={share.vhost_user_socket},abstract=on",
                    "-device", f"vhost-user-fs-device,chardev=fs-{share.tag},tag={share.tag}",
                ]
            else:
                argv += [
                    "-fsdev", f"local,id={share.tag},path={escape(str(share.path))},security_model=passthrough"
                              f"{',readonly=on' if share.readonly else ''}",
                    "-device", f"virtio-9p-device,fsdev={share.tag},mount_tag={share.tag}",
                ]
        if any(share.vhost_user_socket for share in spec.shares):
            # vhost-user needs guest memory that virtiofsd can map, and modern virtio-mmio devices.
            argv += [
                "-object", f"memory-backend-memfd,id=mem,size={spec.memory_mib}M,share=on",
                "-machine", "memory-backend=mem",
                "-global", "virtio-mmio.force-legacy=false",
            ]
        if spec.control_fd >= 0:
            fds.append(spec.control_fd)
            argv += ["-chardev", f"socket,id=qmp,fd={spec.control_fd}", "-mon", "chardev=qmp,mode=control"]
        if spec.incoming_fd >= 0:
            fds.append(spec.incoming_fd)
            argv += ["-incoming", f"fd:{spec.incoming_fd}"]
        # fmt: on
        return LaunchPlan(tuple(argv), tuple(fds))

"""The Xen driver: a VmSpec becomes an `xl` domain config, owned by a guard process (`xenguard`).

Xen takes paths where QEMU takes fds, and a domain is not a child process. So the "hypervisor process"
the owner spawns is the guard (`python -m vmpod.hypervisor.xenguard`): it inherits the channel and disk
fds as QEMU would, names the disks to Xen as `/proc/<guard>/fd/<n>` (a removed container's disk stays
unlinked), writes the config into `<state>/xen/<domain>/`, runs `xl create -F -p`, connects to the
channel's socket, hands that connected socket to the owner over the channel fd (SCM_RIGHTS), unpauses
the domain and lives as long as it does. When the guard ends, for whatever reason, the domain is
destroyed and its files removed (a watchdog process covers a guard killed with SIGKILL).

The config is data built in one place (`domain_config`); every value is checked to need no escaping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vmpod.errors import VmpodError
from vmpod.guest.messages import CHANNEL_NAME
from vmpod.hypervisor.base import LaunchPlan, TapNetwork, VmSpec

XL = "xl"
CAPABILITIES = Path("/proc/xen/capabilities")
ROOT_DEVICE = "/dev/xvda"
DOMAIN_PREFIX = "vmpod-"
# Debian's Xen 4.17.7 gives the first channel the primary console's device id ("Primary console has
# invalid configuration") and the guest never sees it: a dummy goes first, the agent's channel second.
DUMMY_CHANNEL = "org.vmpod.dummy"
SUN_PATH_MAX = 107
CHANNEL_WAIT_S = float(os.environ.get("VMPOD_XEN_CREATE_TIMEOUT", "300"))


class XenMode(StrEnum):
    PVH = "pvh"
    PV = "pv"


@dataclass(frozen=True)
class XenDisk:
    target: str  # a path the device model opens (the guard's /proc/<pid>/fd/<n>)
    format: str = "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class Domain:
    """One domain's config as data; `domain_config` writes it in xl.cfg(5) syntax."""

    name: str
    vcpus: int
    memory_mib: int
    kernel: str
    ramdisk: str
    cmdline: tuple[str, ...]
    channel_path: str
    disks: tuple[XenDisk, ...] = ()
    mode: XenMode = XenMode.PVH
    bridge: str = ""
    mac: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Domain:
        return cls(
            name=str(data["name"]),
            vcpus=int(data["vcpus"]),
            memory_mib=int(data["memory_mib"]),
            kernel=str(data["kernel"]),
            ramdisk=str(data["ramdisk"]),
            cmdline=tuple(str(w) for w in data["cmdline"]),
            channel_path=str(data["channel_path"]),
            disks=tuple(XenDisk(str(d["target"]), str(d["format"]), bool(d["readonly"])) for d in data["disks"]),
            mode=XenMode(data["mode"]),
            bridge=str(data.get("bridge", "")),
            mac=str(data.get("mac", "")),
        )


def _string(value: str, *, separators: str = "") -> str:
    """A double-quoted xl.cfg string. Values that would need escaping (quotes, backslashes, control
    characters) or that contain a separator of the list they sit in are refused, not escaped."""
    bad = {'"', "\\", *separators}
    if any(c in bad or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise VmpodError(f"{value!r} cannot be written into a Xen domain config", "use a path without such characters")
    return f'"{value}"'


def _list(items: list[str]) -> str:
    return "[ " + ", ".join(items) + " ]"


def xen_cmdline(cmdline: tuple[str, ...]) -> tuple[str, ...]:
    """The guest's console is Xen's PV console (hvc0), not the first serial port."""
    words = tuple(w for w in cmdline if not w.startswith("console=") and w != "pci=off")
    return ("console=hvc0", *words)


def domain_config(domain: Domain) -> str:
    """The xl.cfg(5) text. PVH boots the kernel directly (its ELF note) as PV does; `tsc_mode="native"`
    because PVH under nested TCG hangs with an emulated TSC, and vmpod never migrates or saves a domain,
    where native TSC would matter."""
    if not domain.name.replace("-", "").isalnum():
        raise VmpodError(f"invalid Xen domain name {domain.name!r}")
    for path in (domain.channel_path,):
        if len(path.encode()) > SUN_PATH_MAX:
            raise VmpodError(
                f"the channel socket path {path} is longer than a unix socket allows ({SUN_PATH_MAX} bytes)",
                "use a shorter --root / VMPOD_ROOT",
            )
    disks = []
    for index, disk in enumerate(domain.disks):
        vdev = "xvd" + "abcdefghijklmnopqrstuvwxyz"[index]
        access = "ro" if disk.readonly else "rw"
        if not disk.format.isalnum():
            raise VmpodError(f"invalid disk format {disk.format!r} for a Xen domain")
        # target= comes last: the disk parser takes everything after it, commas included.
        spec = f"format={disk.format}, vdev={vdev}, access={access}, backendtype=qdisk, target={disk.target}"
        disks.append(_string(spec))
    # The channel's spec splits on commas (and '='): its path must hold none.
    _string(domain.channel_path, separators=",=")
    channel = f"connection=socket, path={domain.channel_path}, name={CHANNEL_NAME}"
    channels = [_string(f"connection=pty, name={DUMMY_CHANNEL}"), _string(channel)]
    lines = [
        f"name = {_string(domain.name)}",
        f"type = {_string(domain.mode.value)}",
        f"kernel = {_string(domain.kernel)}",
        f"ramdisk = {_string(domain.ramdisk)}",
        f"extra = {_string(' '.join(domain.cmdline))}",
        f"vcpus = {int(domain.vcpus)}",
        f"memory = {int(domain.memory_mib)}",
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
        'tsc_mode = "native"',
        f"disk = {_list(disks)}",
        f"channel = {_list(channels)}",
    ]
    if domain.bridge:
        _string(domain.bridge + domain.mac, separators=",= ")  # the vif spec splits on these
        vif = f"bridge={domain.bridge}" + (f", mac={domain.mac}" if domain.mac else "")
        lines.append(f"vif = {_list([_string(vif)])}")
    else:
        lines.append("vif = [ ]")
    return "\n".join(lines) + "\n"


def mode() -> XenMode:
    """PVH unless VMPOD_XEN_MODE=pv asks for a paravirtualised guest."""
    wanted = os.environ.get("VMPOD_XEN_MODE", XenMode.PVH.value)
    try:
        return XenMode(wanted)
    except ValueError:
        raise VmpodError(f"unknown VMPOD_XEN_MODE {wanted!r}", "use pvh or pv") from None


def in_dom0() -> bool:
    try:
        return "control_d" in CAPABILITIES.read_text()
    except OSError:
        return False


class XenDriver:
    """Plans a guard process for a VmSpec; `directory` holds each domain's files while it runs."""

    name = "xen"

    def __init__(self, directory: Path | None = None, mode: XenMode = XenMode.PVH) -> None:
        self.directory = directory
        self.mode = mode

    def available(self) -> str | None:
        if not CAPABILITIES.exists():
            return "not running on Xen (no /proc/xen/capabilities: xenfs not mounted, or no Xen)"
        if not in_dom0():
            return "not in Xen's control domain (dom0): /proc/xen/capabilities lacks control_d"
        if not shutil.which(XL):
            return "xl not found (apt-get install xen-utils-4.17 qemu-system-xen)"
        return None

    def plan(self, spec: VmSpec) -> LaunchPlan:
        if self.directory is None:
            raise VmpodError("the Xen driver needs a state directory")
        if isinstance(spec.network, TapNetwork):
            raise VmpodError("bridged networks are not supported with the Xen driver yet", "use --network none")
        if spec.network is not None:
            raise VmpodError(
                "the Xen driver has no user-mode network (no slirp in xl)", "use --network none with --driver xen"
            )
        if spec.shares:
            raise VmpodError("volumes are not supported with the Xen driver yet", "run without -v/--mount")
        request = {
            "directory": str(self.directory),
            "mode": self.mode.value,
            "vcpus": spec.vcpus,
            "memory_mib": spec.memory_mib,
            "kernel": str(spec.kernel),
            "ramdisk": str(spec.initrd),
            "cmdline": list(xen_cmdline(spec.cmdline)),
            "channel_fd": spec.channel_fd,
            "disks": [{"fd": d.fd, "format": d.format, "readonly": d.readonly} for d in spec.disks],
        }
        argv = (sys.executable, "-m", "vmpod.hypervisor.xenguard", json.dumps(request, separators=(",", ":")))
        return LaunchPlan(argv, (spec.channel_fd, *(d.fd for d in spec.disks)))


def receive_channel(host_end: socket.socket, timeout: float = CHANNEL_WAIT_S) -> socket.socket:
    """The socket connected to the domain's channel, which the guard sends once the domain exists."""
    host_end.settimeout(timeout)
    try:
        _, fds, _, _ = socket.recv_fds(host_end, 1, 1)
    except TimeoutError:
        raise VmpodError(f"the Xen domain was not created within {timeout:.0f} s") from None
    finally:
        host_end.settimeout(None)
    if not fds:
        raise VmpodError("xl create failed: the domain never started")
    return socket.socket(fileno=fds[0])

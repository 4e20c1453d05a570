"""The driver interface: what every hypervisor driver takes and gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vmpod.hypervisor.accel import AccelChoice


@dataclass(frozen=True)
class DiskSpec:
    """A block device passed as open files (no path race, no leftovers): QEMU picks the fd whose
    access mode matches each open it makes, so a writable disk comes with a read-only fd too."""

    fd: int
    readonly_fd: int
    format: str = "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class PortForward:
    protocol: str  # "tcp" or "udp"
    host_ip: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class UserNetwork:
    """A user-mode network (no root needed): the guest reaches out through the host; forwards reach in."""

    forwards: tuple[PortForward, ...] = ()


@dataclass(frozen=True)
class TapNetwork:
    """A tap device, opened by the caller, on a bridge of the host."""

    fd: int


@dataclass(frozen=True)
class UnpluggedNetwork:
    """A NIC whose backend leads nowhere: a template's, so that a restored VM can plug in its own."""


@dataclass(frozen=True)
class Share:
    """A host directory the guest mounts by its tag."""

    tag: str
    path: Path
    readonly: bool = False
    vhost_user_socket: str = ""  # an abstract socket name served by virtiofsd; empty: 9p


@dataclass(frozen=True)
class VmSpec:
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    cmdline: tuple[str, ...]
    accel: AccelChoice
    channel_fd: int  # one end of a connected stream socket; the agent's channel
    disks: tuple[DiskSpec, ...] = field(default=())
    network: UserNetwork | TapNetwork | UnpluggedNetwork | None = None
    mac: str = ""  # the guest's MAC address; each VM needs its own on a shared bridge
    shares: tuple[Share, ...] = ()
    control_fd: int = -1  # a connected stream socket for the hypervisor's control protocol (QMP)
    incoming_fd: int = -1  # a saved VM to restore instead of booting (a readable file)


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    pass_fds: tuple[int, ...]


class Driver(Protocol):
    name: str

    def available(self) -> str | None:
        """None when the driver can run here, else why not."""

    def plan(self, spec: VmSpec) -> LaunchPlan:
        """The command line and fds that start the VM."""

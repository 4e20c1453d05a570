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
class VmSpec:
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    cmdline: tuple[str, ...]
    accel: AccelChoice
    channel_fd: int  # one end of a connected stream socket; the agent's channel
    disks: tuple[DiskSpec, ...] = field(default=())


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

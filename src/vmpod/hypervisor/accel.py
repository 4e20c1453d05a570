"""Chooses the accelerator: KVM only when it really works, TCG otherwise, by a probe that cannot hang.

Some hosts expose a `/dev/kvm` on which ordinary guests hang (e.g. a nested PVM KVM, module
`kvm_pvm`, with no vmx/svm flag). So besides opening the device, the probe requires a hardware KVM
module and the CPU flag, and asks the kernel to create (not run) a VM.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    reason: str

    @property
    def warning(self) -> str | None:
        if self.accel is Accel.TCG and self.reason != "requested":
            return f"KVM is not usable ({self.reason}); using TCG software emulation, which is much slower"
        return None


def _cpu_has_virtualisation() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "vmx" in flags or "svm" in flags


def _why_kvm_unusable(device: Path, modules: Path) -> str | None:
    if not device.exists():
        return f"{device} does not exist"
    if not any((modules / name).exists() for name in ("kvm_intel", "kvm_amd")):
        extra = (
            " (only kvm_pvm, a nested KVM that cannot run ordinary guests)" if (modules / "kvm_pvm").exists() else ""
        )
        return f"no kvm_intel or kvm_amd module loaded{extra}"
    if not _cpu_has_virtualisation():
        return "the CPU has no vmx or svm flag"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open {device}: {e.strerror}"
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != _KVM_API_VERSION:
            return "unexpected KVM API version"
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
    except OSError as e:
        return f"cannot create a VM: {e.strerror}"
    finally:
        os.close(fd)
    return None


@cache
def choose(requested: str | None = None) -> AccelChoice:
    """`requested` (or VMPOD_ACCEL) may force "tcg" or "kvm"; otherwise the probe decides."""
    wanted = requested or os.environ.get("VMPOD_ACCEL") or ""
    if wanted == Accel.TCG:
        return AccelChoice(Accel.TCG, "requested")
    why = _why_kvm_unusable(Path("/dev/kvm"), Path("/sys/module"))
    if why is None:
        return AccelChoice(Accel.KVM, "/dev/kvm works")
    return AccelChoice(Accel.TCG, why)

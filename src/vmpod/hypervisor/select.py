"""Which hypervisor driver runs a container: `--driver`/VMPOD_DRIVER, else Xen in a Xen dom0, else QEMU."""

from __future__ import annotations

import os
from enum import StrEnum

from vmpod.errors import VmpodError
from vmpod.hypervisor import xen
from vmpod.hypervisor.qemu import QemuDriver


class DriverName(StrEnum):
    QEMU = "qemu"
    XEN = "xen"


def availability() -> dict[str, str | None]:
    """Each driver and why it cannot run here (None: it can)."""
    return {DriverName.QEMU.value: QemuDriver().available(), DriverName.XEN.value: xen.XenDriver().available()}


def choose(requested: str | None = None) -> DriverName:
    wanted = requested or os.environ.get("VMPOD_DRIVER", "")
    if wanted:
        try:
            return DriverName(wanted)
        except ValueError:
            raise VmpodError(
                f"unknown driver {wanted!r}", f"choose one of: {', '.join(d.value for d in DriverName)}"
            ) from None
    if xen.in_dom0() and xen.XenDriver().available() is None:
        return DriverName.XEN
    return DriverName.QEMU

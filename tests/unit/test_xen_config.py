"""The Xen driver's domain config (xl.cfg) as data: values, the dummy channel, refused characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmpod.errors import VmpodError
from vmpod.hypervisor.accel import Accel, AccelChoice
from vmpod.hypervisor.base import DiskSpec, UserNetwork, VmSpec
from vmpod.hypervisor.xen import Domain, XenDisk, XenDriver, XenMode, domain_config, xen_cmdline


def _domain(**changes: object) -> Domain:
    values: dict[str, object] = {
        "name": "vmpod-0123456789ab",
        "vcpus": 2,
        "memory_mib": 576,
        "kernel": "/cache/bzImage",
        "ramdisk": "/root/cache/initramfs-1.cpio",
        "cmdline": ("console=hvc0", "quiet"),
        "channel_path": "/root/xen/vmpod-0123456789ab/agent.sock",
        "disks": (XenDisk("/proc/42/fd/7"),),
    }
    values.update(changes)
    return Domain(**values)  # type: ignore[arg-type]


def test_config_values() -> None:
    text = domain_config(_domain())
    lines = dict(line.split(" = ", 1) for line in text.splitlines())
    assert lines["name"] == '"vmpod-0123456789ab"'
    assert lines["type"] == '"pvh"'
    assert lines["extra"] == '"console=hvc0 quiet"'
    assert (lines["vcpus"], lines["memory"]) == ("2", "576")
    assert lines["on_poweroff"] == lines["on_reboot"] == lines["on_crash"] == '"destroy"'
    assert lines["tsc_mode"] == '"native"'
    assert lines["disk"] == '[ "format=qcow2, vdev=xvda, access=rw, backendtype=qdisk, target=/proc/42/fd/7" ]'
    # The dummy first: Xen 4.17.7 gives the first channel the primary console's id.
    assert lines["channel"] == (
        '[ "connection=pty, name=org.vmpod.dummy", '
        '"connection=socket, path=/root/xen/vmpod-0123456789ab/agent.sock, name=org.vmpod.agent.0" ]'
    )
    assert lines["vif"] == "[ ]"
    assert 'type = "pv"' in domain_config(_domain(mode=XenMode.PV))


def test_round_trip() -> None:
    domain = _domain(disks=(XenDisk("/a", "raw", True), XenDisk("/b")))
    assert Domain.from_dict(domain.to_dict()) == domain
    assert "vdev=xvda, access=ro" in domain_config(domain) and "vdev=xvdb, access=rw" in domain_config(domain)


@pytest.mark.parametrize(
    "changes",
    [
        {"kernel": '/x"; bootloader="/bin/sh'},
        {"ramdisk": "/x\nbootloader = 1"},
        {"cmdline": ("init=/bin/sh\\",)},
        {"channel_path": "/x,connection=pty/agent.sock"},
        {"channel_path": "/x=y/agent.sock"},
        {"channel_path": "/" + "x" * 120},
        {"name": "vmpod-x; rm"},
        {"disks": (XenDisk("/d", "raw, target=/etc/shadow"),)},
        {"bridge": "br0, script=/tmp/evil"},
    ],
)
def test_hostile_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(VmpodError):
        domain_config(_domain(**changes))


def test_cmdline_console_is_hvc0() -> None:
    assert xen_cmdline(("console=ttyS0", "quiet", "pci=off")) == ("console=hvc0", "quiet")


def _spec(**changes: object) -> VmSpec:
    spec = VmSpec(
        1, 512, Path("/k"), Path("/i"), ("console=ttyS0",), AccelChoice(Accel.TCG, "requested"), 5, (DiskSpec(6, 7),)
    )
    return VmSpec(**{**spec.__dict__, **changes})


def test_plan_passes_fds_to_the_guard() -> None:
    plan = XenDriver(Path("/state/xen")).plan(_spec())
    assert plan.argv[1:3] == ("-m", "vmpod.hypervisor.xenguard")
    assert plan.pass_fds == (5, 6)
    with pytest.raises(VmpodError, match="network none"):
        XenDriver(Path("/state/xen")).plan(_spec(network=UserNetwork()))

"""The QEMU command line is data: check what a VM spec becomes."""

from pathlib import Path

from vmpod.hypervisor.accel import Accel, AccelChoice, _why_kvm_unusable
from vmpod.hypervisor.base import DiskSpec, VmSpec
from vmpod.hypervisor.qemu import QemuDriver


def _spec(accel: Accel) -> VmSpec:
    return VmSpec(
        vcpus=2,
        memory_mib=576,
        kernel=Path("/k,1/bzImage"),
        initrd=Path("/i.cpio"),
        cmdline=("console=ttyS0", "quiet"),
        accel=AccelChoice(accel, "test"),
        channel_fd=7,
        disks=(DiskSpec(9, 10),),
    )


def test_tcg_plan() -> None:
    plan = QemuDriver().plan(_spec(Accel.TCG))
    argv = list(plan.argv)
    assert argv[0] == "qemu-system-x86_64"
    assert {"-nodefaults", "-no-user-config", "-no-reboot"} <= set(argv)
    assert argv[argv.index("-accel") + 1].startswith("tcg,tb-size=")
    assert argv[argv.index("-kernel") + 1] == "/k,,1/bzImage"
    assert argv[argv.index("-sandbox") + 1].startswith("on,")
    assert "socket,id=agent,fd=7" in argv
    assert "fd=9,set=1" in argv
    assert plan.pass_fds == (7, 9, 10)
    assert argv[argv.index("-M") + 1].startswith("microvm,")


def test_kvm_plan_uses_host_cpu() -> None:
    argv = list(QemuDriver().plan(_spec(Accel.KVM)).argv)
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"


def test_kvm_probe_refuses_nested_pvm(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.touch()
    modules = tmp_path / "module"
    (modules / "kvm_pvm").mkdir(parents=True)
    assert "kvm_pvm" in (_why_kvm_unusable(device, modules) or "")
    assert "does not exist" in (_why_kvm_unusable(tmp_path / "missing", modules) or "")

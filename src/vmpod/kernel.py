"""The guest kernel: which one, the modules it needs, and its command line.

Two kinds live in the kernel cache (see docs/kernel.md): `minimal-*/bzImage`, built from Debian's
linux-source by `kernel/build.sh` with everything built in (the fast one, preferred), and
`stock-*/vmlinuz`, Debian's cloud kernel unpacked by `kernel/stock.sh` (a minute to obtain), whose
virtio and ext4 drivers are modules the agent loads from the initramfs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from vmpod.errors import VmpodError
from vmpod.paths import kernel_cache

# Drivers the guest needs before it can reach its channel and root disk.
NEEDED_MODULES = ("virtio_mmio", "virtio_console", "virtio_blk", "virtio_rng", "virtio_net", "virtio_balloon", "ext4")
_HINT = "run `make kernel` (fast, builds once) or `make stock-kernel` (quick), or pass --kernel PATH"


class KernelKind(StrEnum):
    MINIMAL = "minimal"
    STOCK = "stock"
    CUSTOM = "custom"


@dataclass(frozen=True)
class Kernel:
    path: Path
    kind: KernelKind
    modules: tuple[Path, ...] = ()


def _newest(pattern: str) -> Path | None:
    found = sorted(kernel_cache().glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _module_closure(modules_dir: Path, wanted: tuple[str, ...]) -> tuple[Path, ...]:
    """Modules in load order (dependencies first), from modules.dep."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
        by_name[Path(target).name.removesuffix(".ko").replace("-", "_")] = target
    order: list[str] = []

    def visit(target: str) -> None:
        if target in order:
            return
        for dep in deps.get(target, []):
            visit(dep)
        order.append(target)

    for name in wanted:
        if name in by_name:  # absent means built in
            visit(by_name[name])
    return tuple(modules_dir / t for t in order)


def _stock(directory: Path) -> Kernel:
    """An unpacked Debian kernel: `vmlinuz` beside `lib/modules/<release>/`."""
    modules_root = directory / "lib" / "modules"
    modules_dirs = list(modules_root.iterdir()) if modules_root.is_dir() else []
    if not (directory / "vmlinuz").is_file() or len(modules_dirs) != 1:
        raise VmpodError(f"{directory} is not an unpacked kernel (vmlinuz and one lib/modules/<release>)", _HINT)
    return Kernel(directory.absolute() / "vmlinuz", KernelKind.STOCK, _module_closure(modules_dirs[0], NEEDED_MODULES))


@cache
def find_kernel(explicit: str | None = None) -> Kernel:
    """`explicit` is a kernel image (everything built in) or a directory made by `kernel/stock.sh`."""
    if explicit:
        path = Path(explicit)
        if path.is_dir():
            return _stock(path)
        if not path.is_file():
            raise VmpodError(f"kernel {explicit} does not exist", _HINT)
        return Kernel(path.absolute(), KernelKind.CUSTOM)
    minimal = _newest("minimal-*/bzImage")
    if minimal is not None:
        return Kernel(minimal, KernelKind.MINIMAL)
    stock = _newest("stock-*/vmlinuz")
    if stock is not None:
        return _stock(stock.parent)
    raise VmpodError(f"no guest kernel in {kernel_cache()}", _HINT)


@cache
def host_tsc_khz() -> int | None:
    """The host TSC frequency; telling the guest avoids a TSC calibration that can hang under TCG."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)
    return int(float(match.group(1)) * 1000) if match else None


def cmdline(kernel: Kernel) -> tuple[str, ...]:
    args = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "reboot=t",
        "cryptomgr.notests",
        "tsc=reliable",
        "no_timer_check",
        "i8042.noaux",
        "rcupdate.rcu_expedited=1",
        "random.trust_cpu=on",
    ]
    khz = host_tsc_khz()
    if khz:
        args.append(f"tsc_early_khz={khz}")
    if kernel.kind is KernelKind.MINIMAL:
        args.append("pci=off")
    return tuple(args)

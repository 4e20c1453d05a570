"""The nested Xen machine: Xen + a Debian dom0 booted under QEMU TCG, running tests/xen/dom0_checks.py.

Builds its parts with scripts/xen/*.sh (cached under /var/cache/vmpod/xen), boots, and reads what dom0
reports on the serial console: `VMPOD-XEN READY` once the toolstack is up, one `VMPOD-XEN CHECK {json}`
line per check, `VMPOD-XEN DONE <status>` at the end. Nested TCG is slow and not fully reliable, so a
boot that never reaches READY is retried, and every attempt's console is kept under build/xen/.

    python3 -m tests.xen.harness      # build, boot, print the results (what `make test-xen` asserts on)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "xen"
BUILD = REPO / "build" / "xen"
KERNEL_CACHE = Path(os.environ.get("VMPOD_KERNEL_CACHE", "/var/cache/vmpod/kernels"))

# As measured (issue 7): without smap=0 dom0 crashes under TCG; noreboot keeps a crash on screen.
XEN_CMDLINE = "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M noreboot smap=0 loglvl=warning guest_loglvl=all"
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen loglevel=4 panic=30"
READY_TIMEOUT_S = float(os.environ.get("VMPOD_XEN_READY_TIMEOUT", "600"))
TOTAL_TIMEOUT_S = float(os.environ.get("VMPOD_XEN_TIMEOUT", "3600"))
ATTEMPTS = int(os.environ.get("VMPOD_XEN_ATTEMPTS", "2"))
MARK = re.compile(r"VMPOD-XEN (\w+) ?(.*)")


@dataclass
class Outcome:
    """What one boot of the nested machine reported."""

    console: Path
    ready_s: float | None = None  # seconds from QEMU's start to the toolstack being up
    done: int | None = None  # the checks' exit status, None if they never finished
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _script(name: str, *args: str) -> str:
    done = subprocess.run([str(SCRIPTS / name), *args], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/xen/{name} failed with status {done.returncode} (its messages are above)")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def guest_kernel() -> Path:
    """The minimal guest kernel (it has XEN_PVH, HVC_XEN and XEN_BLKDEV_FRONTEND built in)."""
    found = sorted(KERNEL_CACHE.glob("minimal-*/bzImage"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no minimal guest kernel in {KERNEL_CACHE}: run `make kernel`")
    return found[-1]


def build() -> tuple[Path, Path, Path]:
    """xen.elf, the dom0 kernel and the dom0 initramfs (base rootfs + this checkout's payload)."""
    hypervisor = Path(_script("hypervisor.sh"))
    base = _script("rootfs.sh", str(hypervisor))
    BUILD.mkdir(parents=True, exist_ok=True)
    initrd = BUILD / "dom0.cpio"
    _script("payload.sh", base, str(guest_kernel()), str(initrd))
    return hypervisor / "xen.elf", hypervisor / "vmlinuz", initrd


def qemu_argv(xen: Path, kernel: Path, initrd: Path, console: Path) -> list[str]:
    for path in (xen, kernel, initrd, console):
        if "," in str(path):
            raise RuntimeError(f"{path}: QEMU's multiboot module list cannot hold a comma")
    # fmt: off
    return [
        "qemu-system-x86_64",
        "-accel", "tcg", "-M", "q35", "-cpu", "max", "-smp", "2", "-m", "3072",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=com1,path={console}", "-serial", "chardev:com1",
        "-kernel", str(xen), "-append", XEN_CMDLINE,
        "-initrd", f"{kernel} {DOM0_CMDLINE}{_only()},{initrd}",
    ]
    # fmt: on


def _only() -> str:
    """VMPOD_XEN_CHECKS=name,name runs only those checks in dom0 (for diagnosis)."""
    names = [n for n in os.environ.get("VMPOD_XEN_CHECKS", "").split(",") if n]
    if any(not n.isidentifier() for n in names):
        raise RuntimeError(f"VMPOD_XEN_CHECKS holds a name that is not a check's: {names}")
    return f" vmpod.checks={'+'.join(names)}" if names else ""


def boot_once(xen: Path, kernel: Path, initrd: Path, console: Path, deadline: float) -> Outcome:
    outcome = Outcome(console)
    argv = qemu_argv(xen, kernel, initrd, console)
    console.write_bytes(b"")
    (console.with_suffix(".cmd")).write_text(shlex.join(argv) + "\n")
    started = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    offset = 0
    pending = b""
    try:
        while True:
            exited = qemu.poll() is not None
            with console.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                _note(outcome, raw.decode(errors="replace"), started)
            now = time.monotonic()
            if outcome.done is not None or exited:
                break
            if outcome.ready_s is None and now - started > READY_TIMEOUT_S:
                outcome.errors.append(f"dom0 was not ready within {READY_TIMEOUT_S:.0f} s")
                break
            if now > deadline:
                outcome.errors.append("the overall time limit ran out")
                break
            time.sleep(1)
    finally:
        if qemu.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                qemu.wait(30 if outcome.done is not None else 0)
        if qemu.poll() is None:
            qemu.kill()
        _, err = qemu.communicate()
        if qemu.returncode and outcome.done is None:
            outcome.errors.append(f"QEMU exited with {qemu.returncode}: {err.decode(errors='replace').strip()[-500:]}")
    outcome.duration_s = time.monotonic() - started
    return outcome


def _note(outcome: Outcome, line: str, started: float) -> None:
    match = MARK.search(line)
    if not match:
        return
    kind, rest = match.groups()
    if kind == "READY":
        outcome.ready_s = time.monotonic() - started
    elif kind == "CHECK":
        try:
            result = json.loads(rest)
        except json.JSONDecodeError:
            outcome.errors.append(f"garbled check line: {rest[:200]}")
            return
        outcome.checks[result["name"]] = result
    elif kind == "DONE":
        outcome.done = int(rest.split()[0]) if rest.split() and rest.split()[0].isdigit() else -1
    elif kind == "INFO":
        outcome.info.append(rest)
    elif kind in ("ERROR", "WARN"):
        outcome.errors.append(f"{kind}: {rest}")


def run() -> Outcome:
    """Builds, then boots until the checks ran (retrying a dom0 that never came up). One run at a time:
    a second one would share build/xen/ (and the machine's two cores)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with (BUILD / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another nested Xen run holds {BUILD / '.lock'}") from None
        return _run_locked()


def _run_locked() -> Outcome:
    xen, kernel, initrd = build()
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    outcome = None
    for attempt in range(1, ATTEMPTS + 1):
        console = BUILD / f"console-{attempt}.log"
        outcome = boot_once(xen, kernel, initrd, console, deadline)
        print(
            f"xen harness: attempt {attempt}: ready after {outcome.ready_s} s, done={outcome.done}, "
            f"{len(outcome.checks)} checks, {outcome.duration_s:.0f} s in all, console {console}",
            file=sys.stderr,
        )
        if outcome.ready_s is not None:
            break
    assert outcome is not None
    (BUILD / "results.json").write_text(json.dumps(outcome.checks, indent=1))
    return outcome


if __name__ == "__main__":
    result = run()
    for name, check in result.checks.items():
        print(f"{'ok  ' if check.get('ok') else 'FAIL'} {name} {check.get('seconds', '')} {check.get('detail', '')}")
    print("errors:", result.errors, "info:", result.info)
    sys.exit(0 if result.done == 0 else 1)

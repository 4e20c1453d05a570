"""The nested Xen machine: Xen + a Debian dom0 booted under QEMU TCG, running tests/xen/dom0_checks.py.

Builds its parts with scripts/xen/*.sh (cached under /var/cache/vmpod/xen), boots, and reads what dom0
reports on the serial console: `VMPOD-XEN READY` once the toolstack is up, one `VMPOD-XEN CHECK {json}`
line per check, `VMPOD-XEN DONE <status>` at the end. Nested TCG is slow and not fully reliable, so a
boot that never reaches READY is retried, checks that failed are run again in up to two fresh boots (a
check passes if it passed in one of them; pytest warns when that took a rerun), each check is
bounded in dom0 (VMPOD_XEN_CHECK_TIMEOUT, default 420 s) and the whole run by VMPOD_XEN_TIMEOUT
(default 2400 s), and every attempt's console is kept under build/xen/, with each guest's console,
device model and xl log (dom0 keeps them and writes them as a tar over a log disk) under
build/xen/console-<attempt>.guests/<check>/.

    python3 -m tests.xen.harness      # build, boot, print the results (what `make test-xen` asserts on)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.xen import dom0_checks

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "xen"
BUILD = REPO / "build" / "xen"
KERNEL_CACHE = Path(os.environ.get("VMPOD_KERNEL_CACHE", "/var/cache/vmpod/kernels"))

# As measured (issue 7): without smap=0 dom0 crashes under TCG; noreboot keeps a crash on screen.
# spec-ctrl=eager-fpu: QEMU's "max" CPU is an AMD one, so Xen switches vCPUs' FPU state lazily (CR0.TS and
# #NM); under TCG that evidently let one process's SSE/AVX registers reach another's memcpy: 64-byte runs of other
# processes' memory in dom0 and in the guests (2 of 20 1 MiB transfers; 0 of 30 with eager switching).
XEN_CMDLINE = (
    "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M noreboot smap=0 spec-ctrl=eager-fpu"
    " loglvl=warning guest_loglvl=all"
)
# VMPOD_XEN_ARGS: more of Xen's options, after the others (a repeated option's last value wins), for diagnosis.
XEN_ARGS = os.environ.get("VMPOD_XEN_ARGS", "")
# VMPOD_XEN_CPU: the nested machine's -cpu, for diagnosis (e.g. max,-avx,-avx2 to take AVX away).
CPU = os.environ.get("VMPOD_XEN_CPU", "max")
# VMPOD_XEN_QEMU: the QEMU that runs the nested machine (e.g. a newer one's wrapper), for diagnosis.
QEMU = os.environ.get("VMPOD_XEN_QEMU", "qemu-system-x86_64")
# VMPOD_XEN_SMP: the nested machine's CPUs (Xen's and so dom0's and the guests'). One: with two, QEMU's SVM
# emulation now and then evidently gives a PVH guest the wrong GS/KERNEL_GS_BASE (a triple fault right after a
# hypercall, or a #PF loop on the entry stack) under sustained I/O: 5 of 5 soaks, 0 of 4 with one CPU, whose
# suite takes as long (427 s against 406 s).
SMP = os.environ.get("VMPOD_XEN_SMP", "1")
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen loglevel=4 panic=30"
READY_TIMEOUT_S = float(os.environ.get("VMPOD_XEN_READY_TIMEOUT", "600"))
# A normal run takes ~8 min, with reruns ~11: the limit ends a run whose nested machine hung.
TOTAL_TIMEOUT_S = float(os.environ.get("VMPOD_XEN_TIMEOUT", "2400"))
ATTEMPTS = int(os.environ.get("VMPOD_XEN_ATTEMPTS", "2"))
# Checks that failed get up to RERUNS more chances, each in a fresh boot: the nested machine is emulated
# and not flawless (README.md, "Xen"). A rerun starts with the checks that set up what the others use.
RERUN_SETUP = ("info_selects_xen", "import_image")
RERUNS = int(os.environ.get("VMPOD_XEN_RERUNS", "2"))
RERUN_LIMIT = int(os.environ.get("VMPOD_XEN_RERUN_LIMIT", "6"))
# dom0 writes its kept guest logs as a tar over this disk (dom0_checks.LogKeeper); sparse, so free.
LOG_DISK_BYTES = 256 << 20
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
    rerun: list[str] = field(default_factory=list)  # checks that failed the first boot and were run again


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


def log_disk(console: Path) -> Path:
    return console.with_suffix(".guests.img")


def guest_logs(console: Path) -> Path:
    """Where a boot's guest consoles, device model and xl logs end up: <dir>/<check>/<file>."""
    return console.with_suffix(".guests")


def qemu_argv(xen: Path, kernel: Path, initrd: Path, console: Path, only: list[str]) -> list[str]:
    for path in (xen, kernel, initrd, console, log_disk(console)):
        if "," in str(path):
            raise RuntimeError(f"{path}: QEMU's multiboot module list and -drive cannot hold a comma")
    # fmt: off
    return [
        QEMU,
        "-accel", "tcg", "-M", "q35", "-cpu", CPU, "-smp", SMP, "-m", "3072",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=com1,path={console}", "-serial", "chardev:com1",
        "-drive", f"file={log_disk(console)},format=raw,if=none,id=logs", "-device", "virtio-blk-pci,drive=logs",
        "-kernel", str(xen), "-append", f"{XEN_CMDLINE} {XEN_ARGS}".strip(),
        "-initrd", f"{kernel} {DOM0_CMDLINE}{_checks_arg(only)},{initrd}",
    ]
    # fmt: on


def requested_checks() -> list[str]:
    """VMPOD_XEN_CHECKS=name,name runs only those checks in dom0 (for diagnosis); empty: all of them."""
    return [n for n in os.environ.get("VMPOD_XEN_CHECKS", "").split(",") if n]


def _checks_arg(names: list[str]) -> str:
    if any(not n.isidentifier() for n in names):
        raise RuntimeError(f"VMPOD_XEN_CHECKS holds a name that is not a check's: {names}")
    arg = f" vmpod.checks={'+'.join(names)}" if names else ""
    limit = os.environ.get("VMPOD_XEN_CHECK_TIMEOUT", "")  # seconds per check in dom0
    if limit and not limit.isdigit():
        raise RuntimeError(f"VMPOD_XEN_CHECK_TIMEOUT={limit!r} is not a number of seconds")
    mode = os.environ.get("VMPOD_XEN_GUEST_MODE", "")  # the guests' VMPOD_XEN_MODE in dom0
    if mode not in ("", "pvh", "pv"):
        raise RuntimeError(f"VMPOD_XEN_GUEST_MODE={mode!r} is neither pvh nor pv")
    return arg + (f" vmpod.check_timeout={limit}" if limit else "") + (f" vmpod.mode={mode}" if mode else "")


def boot_once(xen: Path, kernel: Path, initrd: Path, console: Path, deadline: float, only: list[str]) -> Outcome:
    outcome = Outcome(console)
    argv = qemu_argv(xen, kernel, initrd, console, only)
    console.write_bytes(b"")
    with log_disk(console).open("wb") as disk:
        disk.truncate(LOG_DISK_BYTES)
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
    try:
        unpack_guest_logs(log_disk(console), guest_logs(console))
    except (OSError, tarfile.TarError) as e:
        outcome.errors.append(f"the guests' logs could not be unpacked: {e}")
    log_disk(console).unlink(missing_ok=True)
    return outcome


def _plain_name(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+", name) is not None and name not in (".", "..")


def unpack_guest_logs(disk: Path, dest: Path) -> None:
    """The tar dom0 wrote over the log disk (nothing if it wrote none): plain files only, each kept
    under dest/<check>/, whatever names the archive holds."""
    shutil.rmtree(dest, ignore_errors=True)
    with disk.open("rb") as f:
        if f.read(512).count(0) == 512:  # dom0 never wrote (no check finished)
            return
    with tarfile.open(disk, "r:") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or not all(_plain_name(p) for p in parts):
                continue
            source = archive.extractfile(member)
            assert source is not None
            (dest / parts[1]).mkdir(parents=True, exist_ok=True)
            (dest / parts[1] / parts[2]).write_bytes(source.read())


def _note(outcome: Outcome, line: str, started: float) -> None:
    match = MARK.search(line)
    if not match:
        return
    kind, rest = match.groups()
    rest = rest.rstrip()  # the serial console ends lines with \r\r
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
    elif kind == "DIAG":  # what dom0 saw when a check failed (dom0_checks._diagnose)
        outcome.errors.append(f"DIAG {rest[:3000]}")
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
    wanted = requested_checks()
    outcome = _boot_until_ready(xen, kernel, initrd, deadline, wanted, "")
    for round_ in range(1, RERUNS + 1):
        failed = _failed(outcome, wanted)
        if outcome.ready_s is None or not outcome.checks or not 0 < len(failed) <= RERUN_LIMIT:
            break
        again = [n for n in RERUN_SETUP if n not in failed] + failed
        fresh = _boot_until_ready(xen, kernel, initrd, deadline, again, f"rerun{round_}-")
        outcome.rerun += [n for n in failed if n not in outcome.rerun]
        outcome.errors += [f"rerun {round_}: {e}" for e in fresh.errors]
        if outcome.done is None:  # the first boot's checks never finished; a rerun's did
            outcome.done = fresh.done
        for name in failed:
            first = outcome.checks.get(name, {"detail": "reported nothing"})
            result = fresh.checks.get(name)
            if result is not None and result["ok"]:
                detail = f"failed {round_} boot(s) ({first['detail'][:300]}), passed in a fresh one"
                outcome.checks[name] = {**result, "detail": detail}
    (BUILD / "results.json").write_text(json.dumps({"checks": outcome.checks, "rerun": outcome.rerun}, indent=1))
    return outcome


def _failed(outcome: Outcome, wanted: list[str]) -> list[str]:
    names = wanted or dom0_checks.regular_checks()
    return [n for n in names if not outcome.checks.get(n, {}).get("ok")]


def _boot_until_ready(xen: Path, kernel: Path, initrd: Path, deadline: float, only: list[str], tag: str) -> Outcome:
    """Boots until dom0 came up (ATTEMPTS times at most) and the checks ran; each console is kept."""
    outcome = None
    for attempt in range(1, ATTEMPTS + 1):
        console = BUILD / f"console-{tag}{attempt}.log"
        outcome = boot_once(xen, kernel, initrd, console, deadline, only)
        print(
            f"xen harness: {tag}attempt {attempt}: ready after {outcome.ready_s} s, done={outcome.done}, "
            f"{len(outcome.checks)} checks, {outcome.duration_s:.0f} s in all, console {console}",
            file=sys.stderr,
        )
        if outcome.ready_s is not None:
            break
    assert outcome is not None
    return outcome


if __name__ == "__main__":
    result = run()
    for name, check in result.checks.items():
        print(f"{'ok  ' if check.get('ok') else 'FAIL'} {name} {check.get('seconds', '')} {check.get('detail', '')}")
    print("errors:", result.errors, "info:", result.info, "rerun:", result.rerun)
    sys.exit(0 if all(c.get("ok") for c in result.checks.values()) and result.checks else 1)

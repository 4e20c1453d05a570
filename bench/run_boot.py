"""Boot benchmark: `vmpod run --rm --no-template busybox true` against a bare QEMU boot of the same kernel.

(The cold boot: bench/run_template.py measures the default, a restore from a template, against the same B.)

Measured alternately in one run (the order rotates every round, so background load hits all of them):

  A      wall time of `vmpod run --rm --no-template busybox true`: a fresh CLI process, Python start-up
         included.
  B      wall time of a bare `qemu-system-x86_64` that boots the same kernel (same -M, -accel, -cpu, -smp,
         -m, -append, serial console) with a one-file initramfs whose /init calls reboot(RB_AUTOBOOT); with
         `reboot=t` and `-no-reboot` QEMU exits at once. No devices, no disk, no agent, no sandbox.
  debug  `vmpod --debug run --rm --no-template busybox true`, a separate set, for the per-phase times it logs
         (spawn→ready→started→exited→shutdown→gone); its wall time minus the phase sum is the CLI's own
         time: Python start-up, imports, preparation (overlay via qemu-img, initramfs, plan) and exit.
  cli    wall time of `vmpod --version`: Python start-up plus the CLI's imports, nothing else.

Usage: .venv/bin/python bench/run_boot.py [--runs N] [--root DIR]
Results: a table on stdout and bench/results/boot-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median

from vmpod.rootfs.initramfs import Entry, write_newc

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
IMAGE = "busybox"
GOAL = 1.15
PHASES = ("ready", "started", "exited", "shutdown", "gone")
OPTIONAL_PHASES = {"shutdown"}  # skipped for --rm containers: their disk is discarded, nothing to sync

POWEROFF_INIT_C = r"""
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
    sync();
    reboot(RB_AUTOBOOT); /* reboot=t + QEMU -no-reboot: the VM exits at once */
    return 1;
}
"""

# QEMU options of A's command line that B keeps (with their value) or drops (with their value).
KEEP_FLAGS = {"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"}
KEEP_WITH_VALUE = {"-M", "-accel", "-cpu", "-smp", "-m", "-kernel", "-append", "-serial"}
DROP_WITH_VALUE = {"-initrd", "-device", "-add-fd", "-drive", "-sandbox", "-netdev"}


def vmpod_cli() -> list[str]:
    return [str(Path(sys.executable).with_name("vmpod"))]


def bench_env(root: Path) -> dict[str, str]:
    env = dict(os.environ, VMPOD_ROOT=str(root))
    agent = REPO / "agent" / "build" / "vmpod-agent"
    if "VMPOD_AGENT" not in env and agent.is_file():
        env["VMPOD_AGENT"] = str(agent)
    return env


def ensure_image(env: dict[str, str]) -> None:
    listing = subprocess.run([*vmpod_cli(), "images"], env=env, capture_output=True, text=True, check=True).stdout
    if any(line.split()[:1] == [IMAGE] for line in listing.splitlines()[1:]):
        return
    tarball = REPO / "build" / "busybox.tar"
    if not tarball.is_file():
        subprocess.run([str(REPO / "scripts" / "busybox-rootfs.sh"), str(tarball)], check=True)
    cmd = [*vmpod_cli(), "import", "--change", 'CMD ["/bin/sh"]', str(tarball), IMAGE]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def dry_run_argv(env: dict[str, str]) -> list[str]:
    cmd = [*vmpod_cli(), "run", "--dry-run", "--rm", IMAGE, "true"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    return shlex.split(out.splitlines()[-1])


def bare_argv(vmpod_argv: Sequence[str], initrd: Path) -> list[str]:
    """A's QEMU argv reduced to the boot: same machine, accelerator, CPU, memory, kernel, cmdline, console."""
    out = [vmpod_argv[0]]
    args = iter(vmpod_argv[1:])
    for flag in args:
        if flag in KEEP_FLAGS:
            out.append(flag)
        elif flag in KEEP_WITH_VALUE:
            out += [flag, next(args)]
        elif flag in DROP_WITH_VALUE:
            next(args)
        elif flag == "-chardev":
            value = next(args)
            if "id=console" in value.split(","):  # the serial console's backend; the agent's socket goes
                out += [flag, value]
        else:
            raise SystemExit(f"bench: unknown QEMU option {flag!r} in vmpod's command line; update bare_argv()")
    initrd_value = str(initrd).replace(",", ",,")
    return [*out[: out.index("-kernel") + 2], "-initrd", initrd_value, *out[out.index("-kernel") + 2 :]]


def build_poweroff_initramfs(directory: Path) -> Path:
    source = directory / "poweroff_init.c"
    binary = directory / "init"
    source.write_text(POWEROFF_INIT_C)
    subprocess.run(["musl-gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)], check=True)
    entries = [
        Entry("dev", stat.S_IFDIR | 0o755),
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("init", stat.S_IFREG | 0o755, binary.read_bytes()),
    ]
    initrd = directory / "poweroff.cpio"
    initrd.write_bytes(write_newc(entries))
    return initrd


def timed(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall time of one command, and its stderr; a failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: {shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return wall, proc.stderr.decode(errors="replace")


def parse_phases(stderr: str) -> dict[str, float]:
    match = re.search(r"^vmpod: phases: (.*)$", stderr, re.MULTILINE)
    if not match:
        raise SystemExit(f"bench: no phases line in --debug output:\n{stderr}")
    phases = {name: float(value) for name, value in re.findall(r"(\w+)=([0-9.]+)s", match.group(1))}
    if not set(PHASES) - OPTIONAL_PHASES <= set(phases) <= set(PHASES):
        raise SystemExit(f"bench: unexpected phases {sorted(phases)}")
    return phases


def alternate(
    commands: dict[str, list[str]], env: dict[str, str], runs: int, phases: Callable[[str], dict[str, float]]
) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    """Runs every command once per round, the order rotating each round, after one unmeasured warm-up
    each (page cache, .pyc, TB cache sizing); returns the wall times and the `debug` run's phases."""
    for cmd in commands.values():
        timed(cmd, env)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    phase_runs: list[dict[str, float]] = []
    order = list(commands)
    for round_ in range(runs):
        for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
            wall, stderr = timed(commands[name], env)
            walls[name].append(wall)
            if name == "debug":
                phase_runs.append(phases(stderr))
        print(f"round {round_ + 1}/{runs}: " + "  ".join(f"{n}={walls[n][-1]:.3f}s" for n in order))
    return walls, phase_runs


def print_table(rows: list[tuple[str, list[float]]]) -> None:
    width = max(len(label) for label, _ in rows) + 2
    print()
    print(f"{'measurement':<{width}} {'median':>8} {'min':>8} {'max':>8}")
    for label, values in rows:
        print(f"{label:<{width}} {median(values):>7.3f}s {min(values):>7.3f}s {max(values):>7.3f}s")


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "qemu": qemu.splitlines()[0] if qemu else "unknown",
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--root", type=Path, help="vmpod state directory (default $VMPOD_ROOT or /tmp/bench-root)")
    options = parser.parse_args()
    root: Path = options.root or Path(os.environ.get("VMPOD_ROOT", "/tmp/bench-root"))
    env = bench_env(root)
    if shutil.which("musl-gcc") is None:
        raise SystemExit("bench: musl-gcc not found (apt-get install musl-tools)")
    ensure_image(env)
    vmpod_argv = dry_run_argv(env)
    info = machine()

    with tempfile.TemporaryDirectory(prefix="vmpod-bench-") as tmp:
        initrd = build_poweroff_initramfs(Path(tmp))
        commands: dict[str, list[str]] = {
            "A": [*vmpod_cli(), "run", "--rm", "--no-template", IMAGE, "true"],
            "B": bare_argv(vmpod_argv, initrd),
            "debug": [*vmpod_cli(), "--debug", "run", "--rm", "--no-template", IMAGE, "true"],
            "cli": [*vmpod_cli(), "--version"],
        }
        print("A:     " + shlex.join(commands["A"]))
        print("B:     " + shlex.join(commands["B"]))
        print("debug: " + shlex.join(commands["debug"]))
        print("cli:   " + shlex.join(commands["cli"]))
        walls, phase_runs = alternate(commands, env, options.runs, parse_phases)

    medians = {name: median(values) for name, values in walls.items()}
    seen = [p for p in PHASES if all(p in run for run in phase_runs)]
    phase_medians = {p: median(run[p] for run in phase_runs) for p in seen}
    vm_sums = [sum(run.values()) for run in phase_runs]
    cli_own = [wall - vm for wall, vm in zip(walls["debug"], vm_sums, strict=True)]
    ratio = medians["A"] / medians["B"]

    rows: list[tuple[str, list[float]]] = [
        ("A  vmpod run --rm --no-template busybox true", walls["A"]),
        ("B  bare QEMU boot + poweroff (wall)", walls["B"]),
        ("   vmpod --debug run (wall)", walls["debug"]),
        *[(f"   phase {p}", [run[p] for run in phase_runs]) for p in seen],
        ("   VM spawn→gone (sum of phases)", vm_sums),
        ("   CLI own time (debug wall − spawn→gone)", cli_own),
        ("   vmpod --version (wall)", walls["cli"]),
    ]
    print_table(rows)
    print(f"\nratio median(A)/median(B) = {ratio:.2f} (goal ≤ {GOAL}: {'met' if ratio <= GOAL else 'missed'})")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = {
        "timestamp": stamp,
        "runs": options.runs,
        "root": str(root),
        "machine": {**info, "loadavg_end": os.getloadavg()},
        "commands": commands,
        "vmpod_qemu_argv": vmpod_argv,
        "walls_s": walls,
        "phases_s": phase_runs,
        "medians_s": {
            **{f"wall_{name}": value for name, value in medians.items()},
            **{f"phase_{p}": value for p, value in phase_medians.items()},
            "vm_spawn_to_gone": median(vm_sums),
            "cli_own": median(cli_own),
        },
        "ratio_A_over_B": ratio,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }
    path = RESULTS / f"boot-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

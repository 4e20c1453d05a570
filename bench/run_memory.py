"""Memory benchmark: host memory and idle CPU of idle containers (`vmpod run -d busybox sleep 3600`).

A detached container is two host processes: its supervisor (Python, `vmpod.container.supervisor`, State.Pid
in `vmpod inspect`) and the supervisor's child, QEMU. Memory is PSS from /proc/PID/smaps_rollup (shared pages
split between the processes that map them); QEMU's PSS is also split by mapping, from /proc/PID/smaps: guest
RAM (its largest anonymous mapping), the TCG translation buffer (anonymous and executable) and the rest. Idle
CPU is utime + stime from /proc/PID/stat (all threads) over a window, per container (supervisor + QEMU).

  single   --samples containers of each size: the default (no -m) and `-m 64m`; after --settle seconds idle,
           each one's PSS and CPU; then they are removed.
  density  containers of one size (--memory, default: vmpod's default) started one after another until
           --count, or until MemAvailable would drop below --floor-gib; after --settle seconds idle, their
           total and per-container PSS, CPU, and the drop of MemAvailable since the first one started.

Every container is removed at the end, also on failure.

Usage: .venv/bin/python bench/run_memory.py [--samples N] [--count N] [--memory SIZE] [--settle S] [--window S]
Results: a table on stdout and bench/results/memory-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from statistics import median

from run_boot import IMAGE, REPO, RESULTS, bench_env, ensure_image, machine, vmpod_cli
from run_exec import remove_vmpod

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")


@dataclass
class Sample:
    """One container, measured."""

    name: str
    memory: str
    supervisor_pid: int
    qemu_pid: int
    supervisor_pss_kib: int = 0
    qemu_pss_kib: int = 0
    qemu_guest_ram_kib: int = 0
    qemu_tcg_buffer_kib: int = 0
    qemu_other_kib: int = 0
    qemu_anon_huge_kib: int = 0
    cpu_percent: float = 0.0
    start_s: float = 0.0

    @property
    def pss_kib(self) -> int:
        return self.supervisor_pss_kib + self.qemu_pss_kib


def rollup(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return fields


def qemu_mappings(pid: int) -> tuple[int, int, int]:
    """QEMU's PSS in KiB split into (guest RAM, TCG translation buffer, everything else)."""
    mappings: list[tuple[int, bool, bool, int]] = []  # size, anonymous, executable, pss
    size = pss = 0
    anonymous = executable = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        match = MAPPING.match(line)
        if match:
            if size:
                mappings.append((size, anonymous, executable, pss))
            start, end, perms, inode, path = match.groups()
            size, pss = (int(end, 16) - int(start, 16)) // 1024, 0
            anonymous, executable = inode == "0" and not path, "x" in perms
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    if size:
        mappings.append((size, anonymous, executable, pss))
    guest = max((m for m in mappings if m[1] and not m[2]), key=lambda m: m[0])
    tcg = sum(m[3] for m in mappings if m[1] and m[2])
    total = sum(m[3] for m in mappings)
    return guest[3], tcg, total - guest[3] - tcg


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def mem_available_kib() -> int:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    if not match:
        raise SystemExit("bench: no MemAvailable in /proc/meminfo")
    return int(match.group(1))


def start(name: str, memory: str, env: dict[str, str]) -> Sample:
    flags = ["-m", memory] if memory != "default" else []
    began = time.perf_counter()
    cmd = [*vmpod_cli(), "run", "-d", "--name", name, *flags, IMAGE, "sleep", "3600"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"bench: {name} did not start ({proc.returncode}):\n{proc.stderr}")
    inspect = subprocess.run([*vmpod_cli(), "inspect", name], env=env, capture_output=True, text=True, check=True)
    supervisor = int(json.loads(inspect.stdout)[0]["State"]["Pid"])
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    if len(children) != 1:
        raise SystemExit(f"bench: supervisor {supervisor} has children {children}, expected one QEMU")
    if "qemu" not in Path(f"/proc/{children[0]}/comm").read_text():
        raise SystemExit(f"bench: supervisor {supervisor}'s child {children[0]} is not QEMU")
    return Sample(name, memory, supervisor, int(children[0]), start_s=wall)


def guest_meminfo(name: str, env: dict[str, str]) -> dict[str, int]:
    """The guest kernel's /proc/meminfo (KiB), read with `vmpod exec`."""
    cmd = [*vmpod_cli(), "exec", name, "cat", "/proc/meminfo"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {key: int(value.split()[0]) for key, value in (line.split(":", 1) for line in out.splitlines())}


def measure(samples: Sequence[Sample], settle: float, window: float) -> float:
    """Waits settle seconds, then fills in every sample's PSS and CPU; returns the host's busy CPU % (all cores)."""
    time.sleep(settle)
    for s in samples:
        sup, qemu = rollup(s.supervisor_pid), rollup(s.qemu_pid)
        s.supervisor_pss_kib, s.qemu_pss_kib, s.qemu_anon_huge_kib = sup["Pss"], qemu["Pss"], qemu["AnonHugePages"]
        s.qemu_guest_ram_kib, s.qemu_tcg_buffer_kib, s.qemu_other_kib = qemu_mappings(s.qemu_pid)
    before = {s.name: cpu_ticks(s.supervisor_pid) + cpu_ticks(s.qemu_pid) for s in samples}
    host_before = host_ticks()
    began = time.perf_counter()
    time.sleep(window)
    elapsed = time.perf_counter() - began
    host_after = host_ticks()
    for s in samples:
        ticks = cpu_ticks(s.supervisor_pid) + cpu_ticks(s.qemu_pid) - before[s.name]
        s.cpu_percent = 100.0 * ticks / CLK_TCK / elapsed
    busy, total = host_after[0] - host_before[0], host_after[1] - host_before[1]
    return 100.0 * busy / total * (os.cpu_count() or 1) if total else 0.0


def host_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def summary(samples: Sequence[Sample]) -> dict[str, float]:
    keys = ("supervisor_pss_kib", "qemu_pss_kib", "qemu_guest_ram_kib", "qemu_tcg_buffer_kib", "qemu_other_kib")
    out = {f"median_{k}": float(median(getattr(s, k) for s in samples)) for k in keys}
    out |= {
        "median_qemu_anon_huge_kib": float(median(s.qemu_anon_huge_kib for s in samples)),
        "median_pss_kib": float(median(s.pss_kib for s in samples)),
        "total_pss_kib": float(sum(s.pss_kib for s in samples)),
        "median_cpu_percent": median(s.cpu_percent for s in samples),
        "total_cpu_percent": sum(s.cpu_percent for s in samples),
        "median_start_s": median(s.start_s for s in samples),
    }
    return out


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def print_single(label: str, stats: dict[str, float]) -> None:
    print(f"\n{label}: per container, medians")
    print(f"  supervisor + QEMU PSS  {mib(stats['median_pss_kib'])}")
    print(f"    supervisor (Python)  {mib(stats['median_supervisor_pss_kib'])}")
    print(f"    QEMU                 {mib(stats['median_qemu_pss_kib'])}")
    print(f"      guest RAM          {mib(stats['median_qemu_guest_ram_kib'])}")
    print(f"      TCG buffer         {mib(stats['median_qemu_tcg_buffer_kib'])}")
    print(f"      other              {mib(stats['median_qemu_other_kib'])}")
    print(f"    (AnonHugePages       {mib(stats['median_qemu_anon_huge_kib'])})")
    print(f"  idle CPU               {stats['median_cpu_percent']:.1f} % of a core")
    print(f"  `vmpod run -d` wall    {stats['median_start_s']:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=3, help="containers per size in the single stage (default 3)")
    parser.add_argument("--count", type=int, default=20, help="containers in the density stage (default 20)")
    parser.add_argument("--memory", default="default", help="-m for the density stage (default: none given)")
    parser.add_argument("--floor-gib", type=float, default=4.0, help="stop before MemAvailable drops below (4)")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before measuring (default 10)")
    parser.add_argument("--window", type=float, default=10.0, help="CPU measurement window in seconds (10)")
    parser.add_argument("--root", type=Path, help="vmpod state directory (default $VMPOD_ROOT or /tmp/bench-root)")
    options = parser.parse_args()
    root: Path = options.root or Path(os.environ.get("VMPOD_ROOT", "/tmp/bench-root"))
    env = bench_env(root)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup below runs
    ensure_image(env)
    info = machine()
    prefix = f"bench-mem-{os.getpid()}"
    started: list[str] = []
    result: dict[str, object] = {"settle_s": options.settle, "window_s": options.window}

    def launch(name: str, memory: str) -> Sample:
        started.append(name)
        return start(name, memory, env)

    try:
        single: list[Sample] = []
        for memory in ("default", "64m"):
            single += [launch(f"{prefix}-{memory}-{i}", memory) for i in range(options.samples)]
        single_argv = [Path(f"/proc/{s.qemu_pid}/cmdline").read_text().split("\0")[:-1] for s in single]
        host_cpu = measure(single, options.settle, options.window)
        guest = {s.memory: guest_meminfo(s.name, env) for s in single}  # after measuring: exec touches memory
        remove_vmpod(started, env)
        started.clear()
        singles = {memory: summary([s for s in single if s.memory == memory]) for memory in ("default", "64m")}
        print_single("default size (no -m: 512 MiB VM)", singles["default"])
        print_single("-m 64m (128 MiB VM)", singles["64m"])
        print(f"  host busy CPU during the window: {host_cpu:.0f} % of one core (all processes, {len(single)} VMs)")
        for memory, meminfo in guest.items():
            used = meminfo["MemTotal"] - meminfo["MemFree"]
            print(f"  guest's own view ({memory}): MemTotal {mib(meminfo['MemTotal'])}, used {mib(used)}", end="")
            print(f" (Cached {mib(meminfo['Cached'])}, Shmem {mib(meminfo['Shmem'])})")
        result["single"] = {
            "samples": [asdict(s) for s in single],
            "summary": singles,
            "host_cpu_percent": host_cpu,
            "guest_meminfo_kib": guest,
            "qemu_argv": {s.memory: qemu_argv for s, qemu_argv in zip(single, single_argv, strict=True)},
        }

        density: list[Sample] = []
        available = [mem_available_kib()]
        stopped_early = ""
        print(f"\ndensity: up to {options.count} containers, memory {options.memory}")
        for i in range(options.count):
            estimate = max((s.pss_kib for s in single if s.memory == options.memory), default=256 * 1024)
            if available[-1] - estimate < options.floor_gib * 1024 * 1024:
                stopped_early = f"MemAvailable {mib(available[-1])} would drop below {options.floor_gib} GiB"
                print(f"stopping at {i}: {stopped_early}")
                break
            density.append(launch(f"{prefix}-n{i}", options.memory))
            available.append(mem_available_kib())
            print(f"  {i + 1}: started in {density[-1].start_s:.2f} s, MemAvailable {mib(available[-1])}")
        host_cpu = measure(density, options.settle, options.window)
        available_settled = mem_available_kib()
        stats = summary(density)
        drop = available[0] - available_settled
        steps = [before - after for before, after in pairwise(available)]
        step = float(median(steps)) if steps else 0.0  # robust to memory others free or take meanwhile
        print(f"\ndensity: {len(density)} idle containers ({options.memory})")
        print(f"  total PSS (supervisors + QEMUs)  {mib(stats['total_pss_kib'])}")
        print(f"  per container PSS, median        {mib(stats['median_pss_kib'])}")
        print(f"    supervisor / QEMU              {mib(stats['median_supervisor_pss_kib'])} / ", end="")
        print(mib(stats["median_qemu_pss_kib"]))
        print(f"  MemAvailable drop                {mib(drop)} in all; per start, median {mib(step)}")
        print(f"  idle CPU per container, median   {stats['median_cpu_percent']:.1f} % of a core")
        print(f"  idle CPU, all containers         {stats['total_cpu_percent']:.0f} % of a core")
        print(f"  host busy CPU in the window      {host_cpu:.0f} % of a core (all processes)")
        print(f"  `vmpod run -d`: first {density[0].start_s:.2f} s, last {density[-1].start_s:.2f} s")
        result["density"] = {
            "memory": options.memory,
            "count": len(density),
            "stopped_early": stopped_early,
            "samples": [asdict(s) for s in density],
            "summary": stats,
            "mem_available_kib": {"before": available[0], "after_each_start": available[1:]},
            "mem_available_settled_kib": available_settled,
            "mem_available_drop_kib": drop,
            "mem_available_median_drop_per_start_kib": step,
            "host_cpu_percent": host_cpu,
        }
    finally:
        remove_vmpod(started, env)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    result = {"timestamp": stamp, "root": str(root), "machine": {**info, "loadavg_end": os.getloadavg()}, **result}
    path = RESULTS / f"memory-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

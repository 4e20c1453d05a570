"""Load: 20 detached containers started at once, each exec'd into 10 times, all stopped and removed,
with nothing left behind (processes, sockets, files, disk space)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Vmpod, leftovers, processes, qemu_processes

pytestmark = pytest.mark.integration
CONTAINERS = 20
EXECS = 10


def _supervisors(root: Path) -> list[int]:
    return processes(b"vmpod.container.supervisor", root)


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_blocks for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def test_twenty_containers_with_ten_execs_each(vmpod: Vmpod) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    usage_before = _disk_usage(vmpod.root / "containers")
    names = [f"load{index}" for index in range(CONTAINERS)]

    def start(name: str) -> None:
        done = vmpod("run", "-d", "--name", name, "-m", "64m", "busybox", "sleep", "3600", timeout=600)
        assert done.returncode == 0, done.stderr

    def exec_many(name: str) -> None:
        for index in range(EXECS):
            done = vmpod("exec", name, "sh", "-c", f"echo {name}-{index}; exit {index}", timeout=300)
            assert (done.returncode, done.stdout) == (index, f"{name}-{index}\n".encode()), done.stderr

    with ThreadPoolExecutor(max_workers=CONTAINERS) as pool:
        list(pool.map(start, names))
        assert len(qemu_processes(vmpod.root)) == CONTAINERS
        list(pool.map(exec_many, names))
    vmpod("stop", "-t", "2", *names, timeout=600, check=True)
    vmpod("rm", *names, check=True)

    assert qemu_processes(vmpod.root) == []
    assert _supervisors(vmpod.root) == []
    assert leftovers(vmpod.root) == []
    assert _disk_usage(vmpod.root / "containers") == usage_before
    assert len(os.listdir("/proc/self/fd")) == fds_before

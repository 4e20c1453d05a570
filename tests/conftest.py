"""Shared fixtures: a state directory with the busybox test image, and a way to call the CLI."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUSYBOX_TAR = REPO / "build" / "busybox.tar"


@dataclass
class Vmpod:
    """Runs `vmpod` as a user would, against one state directory."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VMPOD_ROOT"] = str(self.root)
        env.setdefault("VMPOD_AGENT", str(REPO / "agent" / "build" / "vmpod-agent"))
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vmpod.cli", *args]

    def __call__(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 300,
        check: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"vmpod {' '.join(args)} exited {done.returncode}: {done.stderr.decode()}")
        return done

    def popen(self, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=self.env, **kwargs)  # type: ignore[call-overload, no-any-return]


def _require_busybox_tarball() -> Path:
    if not BUSYBOX_TAR.is_file():
        subprocess.run([str(REPO / "scripts" / "busybox-rootfs.sh"), str(BUSYBOX_TAR)], check=True)
    return BUSYBOX_TAR


@pytest.fixture(scope="session")
def vmpod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vmpod]:
    tool = Vmpod(tmp_path_factory.mktemp("vmpod-root"))
    tarball = _require_busybox_tarball()
    tool("import", "--change", 'CMD ["/bin/sh"]', str(tarball), "busybox", check=True)
    yield tool


def processes(marker: bytes, root: Path) -> list[int]:
    """Processes whose command line names both marker and this state directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and str(root).encode() in cmdline:
                found.append(int(entry.name))
    return found


def qemu_processes(root: Path) -> list[int]:
    """Hypervisor processes started for this state directory (their initrd lives under it)."""
    return processes(b"qemu-system", root)


def leftovers(root: Path) -> Sequence[str]:
    """Files a finished `run --rm` must not leave: containers and scratch space."""
    return [str(p.relative_to(root)) for d in ("containers", "tmp") for p in (root / d).glob("*")]


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 180) -> None:
    """Reads a terminal (a pty master) into seen until needle appears; fails on timeout or hang-up."""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} never appeared; got {bytes(seen)!r}"
        if select.select([fd], [], [], remaining)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {needle!r}; got {bytes(seen)!r}"
            seen += chunk

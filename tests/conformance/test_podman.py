"""Podman drives `vmpod-runtime` as it drives runc: the container runs in a VM, its status comes back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conformance.conftest import DEFAULT_RUNTIME_ROOT, Podman, runtime_binary, shim_processes

pytestmark = pytest.mark.integration


def _run(podman: Podman, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return podman("--runtime", str(runtime_binary()), "run", "--rm", *(["-i"] if input else []), *args, input=input)


def test_uname_is_the_guest_kernel_and_status_propagates(podman: Podman) -> None:
    done = _run(podman, "localhost/busybox", "sh", "-c", "uname -r; echo to-stderr >&2; exit 7")
    assert done.returncode == 7, done.stderr.decode()
    release = done.stdout.decode().strip()
    assert release and release != os.uname().release  # the guest's kernel, not the host's
    assert b"to-stderr" in done.stderr
    runc = podman("run", "--rm", "localhost/busybox", "uname", "-r")
    assert runc.stdout.decode().strip() == os.uname().release  # the same engine, with runc: the host's


def test_stdin_and_missing_command(podman: Podman) -> None:
    assert _run(podman, "localhost/busybox", "tr", "a-z", "A-Z", input=b"hello\n").stdout == b"HELLO\n"
    missing = _run(podman, "localhost/busybox", "no-such-command")
    assert missing.returncode == 127, missing.stderr.decode()
    assert b"executable file not found" in missing.stderr


def test_nothing_left_behind(podman: Podman, tmp_path: Path) -> None:
    cidfile = tmp_path / "cid"
    done = _run(podman, "--cidfile", str(cidfile), "localhost/busybox", "true")
    assert done.returncode == 0, done.stderr.decode()
    container_id = cidfile.read_text().strip()
    assert container_id not in podman("ps", "-aq", "--no-trunc").stdout.decode()
    assert not (DEFAULT_RUNTIME_ROOT / container_id).exists()
    assert [
        pid for pid in shim_processes(DEFAULT_RUNTIME_ROOT) if container_id in Path(f"/proc/{pid}/cmdline").read_text()
    ] == []

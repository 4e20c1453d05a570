"""containerd 1.6 drives `vmpod-runtime` through its runc shim (io.containerd.runc.v2, `--runc-binary`).

The test starts its own containerd (tests/conformance/engines.py: own root, state and socket, no CRI),
imports the busybox test image from an OCI archive with `ctr image import`, and runs containers with
`ctr run --runc-binary vmpod-runtime`: the shim calls create/start/state/kill/delete and, for
`ctr task exec`, `exec --process F --detach --pid-file F`, and waits on the pids it is given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.conftest import (
    interactive_session,
    need,
    runtime_binary,
    shim_processes,
)
from tests.conformance.engines import (
    IMAGE,
    Containerd,
    image_archives,
    short_tempdir,
    start_containerd,
    stop_containerd,
)
from tests.conftest import _require_busybox_tarball

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    need("containerd", "containerd")
    need("ctr", "containerd")
    need("runc", "runc")  # the shim's default, and the reference here
    home = short_tempdir("vmpod-ctd-")
    daemon = start_containerd(home)
    try:
        oci, _ = image_archives(_require_busybox_tarball(), home)
        imported = daemon.ctr("image", "import", str(oci))
        assert imported.returncode == 0, imported.stderr.decode()
        yield daemon
    finally:
        stop_containerd(daemon)


# The shim's default `--root` for the runtime, per namespace.
RUNTIME_ROOT = Path("/run/containerd/runc/vmpod-test")


def _run(*args: str) -> list[str]:
    return ["run", "--runc-binary", str(runtime_binary()), *args]


def test_run_shows_the_guest_kernel(containerd: Containerd) -> None:
    name = f"vmpod-run-{os.getpid()}"
    done = containerd.ctr(*_run("--rm", IMAGE, name, "sh", "-c", "uname -r; echo err >&2; exit 6"))
    assert done.returncode == 6, done.stderr.decode()
    release = done.stdout.decode().strip()
    assert release and release != os.uname().release
    assert b"err" in done.stderr
    runc = containerd.ctr("run", "--rm", IMAGE, f"{name}-runc", "uname", "-r")
    assert runc.stdout.decode().strip() == os.uname().release  # the same engine with runc: the host's
    assert containerd.ctr("container", "ls", "-q").stdout.decode().split() == []


def test_interactive_terminal(containerd: Containerd) -> None:
    argv = containerd.argv(*_run("--rm", "-t", IMAGE, f"vmpod-tty-{os.getpid()}", "sh"))
    seen, status = interactive_session(argv)
    assert status == 5, seen
    assert os.uname().release.encode() not in seen


def _task_status(containerd: Containerd, name: str) -> str:
    for line in containerd.ctr("task", "ls").stdout.decode().splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return fields[-1]
    return ""


def test_exec_kill_and_rm(containerd: Containerd) -> None:
    name = f"vmpod-exec-{os.getpid()}"
    started = containerd.ctr(*_run("-d", IMAGE, name, "sleep", "1000"))
    assert started.returncode == 0, started.stderr.decode()
    try:
        assert _task_status(containerd, name) == "RUNNING"
        done = containerd.ctr("task", "exec", "--exec-id", "e1", name, "sh", "-c", "echo in-$(uname -r); exit 3")
        assert done.returncode == 3, done.stderr.decode()
        assert done.stdout.decode().strip() == f"in-{_guest_release(containerd, name)}"
        piped = containerd.ctr("task", "exec", "--exec-id", "e2", name, "tr", "a-z", "A-Z", input=b"abc\n")
        assert piped.stdout == b"ABC\n", piped.stderr.decode()
        pids = containerd.ctr("task", "ps", name)
        assert pids.returncode == 0 and len(pids.stdout.decode().split("\n")) >= 2, pids.stderr.decode()
        killed = containerd.ctr("task", "kill", name)  # SIGTERM: `sleep` in the VM is not PID 1, it ends
        assert killed.returncode == 0, killed.stderr.decode()
        deadline = time.monotonic() + 60
        while _task_status(containerd, name) != "STOPPED":
            assert time.monotonic() < deadline, containerd.ctr("task", "ls").stdout.decode()
            time.sleep(0.2)
        removed = containerd.ctr("task", "rm", name)
        assert removed.returncode == 0, removed.stderr.decode()
    finally:
        containerd.ctr("task", "rm", "-f", name)
        containerd.ctr("container", "rm", name)
    assert name not in containerd.ctr("container", "ls", "-q").stdout.decode().split()
    assert not (RUNTIME_ROOT / name).exists()
    assert [p for p in shim_processes(RUNTIME_ROOT) if name in Path(f"/proc/{p}/cmdline").read_text()] == []


def _guest_release(containerd: Containerd, name: str) -> str:
    done = containerd.ctr("task", "exec", "--exec-id", "rel", name, "uname", "-r")
    release = done.stdout.decode().strip()
    assert release and release != os.uname().release, done.stderr.decode()
    return release


def test_state_json_reaches_the_engine(containerd: Containerd) -> None:
    """The shim reads `state`: the task's pid is the host process standing for the container."""
    name = f"vmpod-state-{os.getpid()}"
    started = containerd.ctr(*_run("-d", IMAGE, name, "sleep", "1000"))
    assert started.returncode == 0, started.stderr.decode()
    try:
        listed = containerd.ctr("task", "ls").stdout.decode().splitlines()
        pid = int(next(line.split()[1] for line in listed if line.split()[0] == name))
        assert b"vmpod.oci.shim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        containerd.ctr("task", "kill", "-s", "KILL", name)
        time.sleep(1)
        containerd.ctr("task", "rm", "-f", name)
        containerd.ctr("container", "rm", name)

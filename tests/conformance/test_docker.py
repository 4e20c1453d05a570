"""Docker 20.10 drives `vmpod-runtime` as a runtime registered with `dockerd --add-runtime vmpod=PATH`.

The test starts its own dockerd (tests/conformance/engines.py: own data and exec roots, a unix socket,
no iptables, no bridge, its own containerd), loads the busybox test image from a docker-archive and
runs containers with `--runtime vmpod --network none`. Docker goes through containerd's runc shim, so
the runtime sees what containerd's shim calls (create, start, state, kill, delete, exec --detach).
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
    read_until,
    runtime_binary,
    shim_processes,
    spawn_on_pty,
    wait_status,
)
from tests.conformance.engines import DOCKER_IMAGE, Docker, image_archives, short_tempdir, start_dockerd, stop_dockerd
from tests.conftest import _require_busybox_tarball

pytestmark = pytest.mark.integration


def _runtime_dirs(docker: Docker, container_id: str) -> list[Path]:
    """The runtime's state directories of a container (`--root` is under dockerd's exec root)."""
    return list((docker.home / "exec").glob(f"runtime-*/moby/{container_id}"))


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    need("dockerd", "docker.io")
    need("docker", "docker.io")
    need("containerd", "containerd")
    need("runc", "runc")
    home = short_tempdir("vmpod-dkr-")
    daemon = start_dockerd(home, runtime_binary())
    try:
        _, archive = image_archives(_require_busybox_tarball(), home)
        loaded = daemon("load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr.decode()
        yield daemon
    finally:
        daemon("rm", "-f", *daemon("ps", "-aq").stdout.decode().split())
        stop_dockerd(daemon)


RUN = ["run", "--runtime", "vmpod", "--network", "none"]


def test_run_shows_the_guest_kernel(docker: Docker) -> None:
    done = docker(*RUN, "--rm", DOCKER_IMAGE, "sh", "-c", "uname -r; echo err >&2; exit 6")
    assert done.returncode == 6, done.stderr.decode()
    release = done.stdout.decode().strip()
    assert release and release != os.uname().release
    assert b"err" in done.stderr
    runc = docker("run", "--rm", "--network", "none", DOCKER_IMAGE, "uname", "-r")
    assert runc.stdout.decode().strip() == os.uname().release, runc.stderr.decode()  # runc: the host's
    missing = docker(*RUN, "--rm", DOCKER_IMAGE, "no-such-command")
    assert missing.returncode == 127, missing.stderr.decode()


def test_interactive_terminal(docker: Docker) -> None:
    seen, status = interactive_session(docker.argv(*RUN, "--rm", "-it", DOCKER_IMAGE, "sh"))
    assert status == 5, seen
    assert os.uname().release.encode() not in seen


def test_exec_stop_and_rm(docker: Docker) -> None:
    name = f"vmpod-exec-{os.getpid()}"
    started = docker(*RUN, "-d", "--name", name, DOCKER_IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr.decode()
    container_id = started.stdout.decode().strip()
    state_dirs = _runtime_dirs(docker, container_id)
    assert len(state_dirs) == 1, list((docker.home / "exec").rglob("state.json"))
    try:
        done = docker("exec", name, "sh", "-c", "uname -r; echo oops >&2; exit 3")
        assert done.returncode == 3, done.stderr.decode()
        assert done.stdout.decode().strip() != os.uname().release and b"oops" in done.stderr
        assert docker("exec", "-i", name, "tr", "a-z", "A-Z", input=b"abc\n").stdout == b"ABC\n"
        flags = docker("exec", "-u", "1000", "-w", "/tmp", "-e", "X=1", name, "sh", "-c", "echo $X $PWD $(id -u)")
        assert flags.stdout == b"1 /tmp 1000\n", flags.stderr.decode()
        missing = docker("exec", name, "no-such-command")
        assert missing.returncode == 126, missing.stderr.decode()  # Docker 20.10 says 126, with runc too
        tty = docker("exec", "-t", name, "sh", "-c", "tty")
        assert tty.returncode == 0 and b"/dev/pts/" in tty.stdout, tty.stderr.decode()
        pid, master = spawn_on_pty(docker.argv("exec", "-it", name, "sh"))
        seen = bytearray()
        read_until(master, b"# ", seen)
        os.write(master, b"echo $((6*7)); exit 4\r")
        read_until(master, b"42", seen)
        assert wait_status(pid) == 4
        os.close(master)
        top = docker("top", name)
        assert top.returncode == 0, top.stderr.decode()
        begun = time.monotonic()
        stopped = docker("stop", "-t", "5", name)
        assert stopped.returncode == 0, stopped.stderr.decode()
        assert time.monotonic() - begun < 5, "SIGTERM did not end the container; Docker had to kill it"
        state = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.decode().split()
        assert state == ["exited", "143"], state
    finally:
        removed = docker("rm", "-f", name)
    assert removed.returncode == 0, removed.stderr.decode()
    assert name not in docker("ps", "-a", "--format", "{{.Names}}").stdout.decode()
    assert _runtime_dirs(docker, container_id) == []
    root = state_dirs[0].parent
    assert [p for p in shim_processes(root) if container_id in Path(f"/proc/{p}/cmdline").read_text()] == []

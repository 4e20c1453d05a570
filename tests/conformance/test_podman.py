"""Podman drives `vmpod-runtime` as it drives runc: the container runs in a VM, its status comes back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conformance.conftest import (
    DEFAULT_RUNTIME_ROOT,
    NETNS_PATH,
    PEER_TEXT,
    PEER_URL,
    Podman,
    interactive_session,
    prepared_network,
    read_until,
    runtime_binary,
    shim_processes,
    spawn_on_pty,
    wait_status,
)

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


def test_network_namespace_of_the_engine(podman: Podman, tmp_path: Path) -> None:
    """`--network ns:PATH`: the VM is where Podman put the container: its address, its route, its peers."""
    with prepared_network(tmp_path / "www"):
        script = f"wget -q -O- {PEER_URL}; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'"
        done = _run(podman, "--network", f"ns:{NETNS_PATH}", "localhost/busybox", "sh", "-c", script)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode() == f"{PEER_TEXT}\ninet 10.77.0.2/24\n"
        # Without one (the engine's netns = "none"), the VM has no address and no route out: as runc.
        alone = _run(podman, "localhost/busybox", "sh", "-c", f"ip -4 route; wget -q -O- {PEER_URL}")
        assert alone.returncode != 0 and alone.stdout == b"", (alone.stdout, alone.stderr)


def test_interactive_terminal(podman: Podman) -> None:
    argv = ["podman", "--runtime", str(runtime_binary()), "run", "--rm", "-it", "localhost/busybox", "sh"]
    seen, status = interactive_session(argv, podman.env)
    assert status == 5, seen
    assert os.uname().release.encode() not in seen  # `uname -r` typed at the prompt: the guest's kernel


def test_exec_stop_and_rm(podman: Podman) -> None:
    runtime = str(runtime_binary())
    name = f"vmpod-exec-{os.getpid()}"
    started = podman("--runtime", runtime, "run", "-d", "--name", name, "localhost/busybox", "sleep", "1000")
    assert started.returncode == 0, started.stderr.decode()
    container_id = started.stdout.decode().strip()
    try:
        done = podman("--runtime", runtime, "exec", name, "sh", "-c", "echo $(uname -r); echo oops >&2; exit 3")
        assert done.returncode == 3, done.stderr.decode()
        assert done.stdout.decode().strip() != os.uname().release and b"oops" in done.stderr
        assert podman("--runtime", runtime, "exec", "-i", name, "tr", "a-z", "A-Z", input=b"abc\n").stdout == b"ABC\n"
        flags = podman(
            "--runtime",
            runtime,
            "exec",
            "-u",
            "1000",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            name,
            "sh",
            "-c",
            "echo $X $PWD $(id -u)",
        )
        assert flags.stdout == b"1 /tmp 1000\n", flags.stderr.decode()
        missing = podman("--runtime", runtime, "exec", name, "no-such-command")
        assert missing.returncode == 127, missing.stderr.decode()
        # -t: the exec'd process gets a terminal of its own (through --console-socket)
        tty = podman("--runtime", runtime, "exec", "-t", name, "sh", "-c", "tty; stty size")
        assert tty.returncode == 0 and b"/dev/pts/" in tty.stdout, tty.stderr.decode()
        pid, master = spawn_on_pty(["podman", "--runtime", runtime, "exec", "-it", name, "sh"], podman.env)
        seen = bytearray()
        read_until(master, b"# ", seen)
        os.write(master, b"echo $((6*7)); exit 4\r")
        read_until(master, b"42", seen)
        assert wait_status(pid) == 4
        os.close(master)
        stopped = podman("--runtime", runtime, "stop", "-t", "2", name)
        assert stopped.returncode == 0, stopped.stderr.decode()
        state = podman("--runtime", runtime, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name)
        assert state.stdout.decode().split()[0] == "exited", state.stdout.decode()
    finally:
        removed = podman("--runtime", runtime, "rm", "-f", name)
    assert removed.returncode == 0, removed.stderr.decode()
    assert name not in podman("ps", "-a", "--format", "{{.Names}}").stdout.decode()
    shims = shim_processes(DEFAULT_RUNTIME_ROOT)
    assert [pid for pid in shims if container_id in Path(f"/proc/{pid}/cmdline").read_text()] == []
    assert not (DEFAULT_RUNTIME_ROOT / container_id).exists()

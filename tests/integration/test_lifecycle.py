"""Detached containers and their verbs, as a user drives them: run -d, ps, logs, exec, stop, kill, rm."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import Vmpod, qemu_processes
from vmpod.container import control
from vmpod.guest.codec import encode_frame
from vmpod.guest.messages import Message

pytestmark = pytest.mark.integration

TICKER = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def _detach(vmpod: Vmpod, *args: str) -> str:
    done = vmpod("run", "-d", *args)
    assert done.returncode == 0, done.stderr
    container_id = done.stdout.decode().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", container_id)
    return container_id


def _wait_for_log(vmpod: Vmpod, name: str, text: bytes, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        out = vmpod("logs", name).stdout
        if text in out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _supervisor_pid(vmpod: Vmpod, name: str) -> int:
    info = json.loads(vmpod("inspect", name, check=True).stdout)
    return int(info[0]["State"]["Pid"])


def test_detached_logs_exec_stop_rm(vmpod: Vmpod) -> None:
    container_id = _detach(vmpod, "--name", "ticker", "busybox", "sh", "-c", f"echo started >&2; {TICKER}")
    assert "ticker" in vmpod("ps", check=True).stdout.decode()
    assert container_id[:12] in vmpod("ps", "-q", check=True).stdout.decode()
    assert b"tick 3" in _wait_for_log(vmpod, "ticker", b"tick 3")
    logs = vmpod("logs", "ticker", check=True)
    assert logs.stderr.startswith(b"started\n")
    tail = vmpod("logs", "--tail", "2", "ticker", check=True).stdout.decode().splitlines()
    assert len(tail) == 2 and all(line.startswith("tick ") for line in tail)
    stamped = vmpod("logs", "-t", "--tail", "1", "ticker", check=True).stdout.decode()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick \d+\n", stamped)

    done = vmpod("exec", "-e", "X=from-exec", "-w", "/tmp", "ticker", "sh", "-c", 'echo "$X $(pwd)"; exit 6')
    assert (done.returncode, done.stdout) == (6, b"from-exec /tmp\n")
    assert vmpod("exec", "-u", "user", "ticker", "id", "-u", check=True).stdout == b"1000\n"
    data = os.urandom(300_000)
    assert (
        vmpod("exec", "-i", "ticker", "md5sum", input=data).stdout.split()[0] == hashlib.md5(data).hexdigest().encode()
    )
    assert vmpod("exec", "ticker", "no-such-command").returncode == 127

    top = vmpod("top", "ticker", check=True).stdout.decode()
    assert top.startswith("PID") and "sh -c" in top
    assert "kthreadd" not in top and "/init" not in top

    refused = vmpod("rm", "ticker")
    assert refused.returncode == 1 and b"running" in refused.stderr
    vmpod("stop", "-t", "5", "ticker", check=True)
    listing = vmpod("ps", "-a", check=True).stdout.decode()
    assert re.search(r"Exited \(143\).*ticker", listing)
    assert vmpod("exec", "ticker", "true").returncode == 125
    assert vmpod("wait", "ticker", check=True).stdout == b"143\n"
    vmpod("rm", "ticker", check=True)
    assert "ticker" not in vmpod("ps", "-a", check=True).stdout.decode()


def test_stop_kills_what_ignores_sigterm_and_kill_sends_signals(vmpod: Vmpod) -> None:
    _detach(
        vmpod,
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        'trap "" TERM; trap "echo got-usr1" USR1; echo ready; while :; do sleep 0.2; done',
    )
    _wait_for_log(vmpod, "stubborn", b"ready")
    vmpod("kill", "-s", "USR1", "stubborn", check=True)
    assert b"got-usr1" in _wait_for_log(vmpod, "stubborn", b"got-usr1")
    started = time.monotonic()
    vmpod("stop", "-t", "1", "stubborn", check=True)
    assert time.monotonic() - started >= 1
    assert vmpod("wait", "stubborn", check=True).stdout == b"137\n"
    vmpod("rm", "stubborn", check=True)


def test_logs_follow_until_exit_and_rm_force(vmpod: Vmpod) -> None:
    _detach(vmpod, "--name", "short", "busybox", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done")
    follow = vmpod("logs", "-f", "short", timeout=120)
    assert follow.stdout == b"line 1\nline 2\nline 3\n"
    _detach(vmpod, "--name", "forced", "busybox", "sleep", "600")
    vmpod("rm", "-f", "forced", check=True)
    assert "forced" not in vmpod("ps", "-a", check=True).stdout.decode()
    vmpod("rm", "short", check=True)


def test_killed_supervisor_leaves_no_vm_and_shows_exited(vmpod: Vmpod) -> None:
    _detach(vmpod, "--name", "orphan", "busybox", "sleep", "600")
    before = set(qemu_processes(vmpod.root))
    os.kill(_supervisor_pid(vmpod, "orphan"), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while set(qemu_processes(vmpod.root)) & before and time.monotonic() < deadline:
        time.sleep(0.1)
    listing = vmpod("ps", "-a", check=True).stdout.decode()
    assert re.search(r"Exited .*orphan", listing)
    vmpod("rm", "orphan", check=True)
    assert not (set(qemu_processes(vmpod.root)) & before)


def test_killed_hypervisor_ends_the_container(vmpod: Vmpod) -> None:
    _detach(vmpod, "--name", "novm", "busybox", "sleep", "600")
    supervisor = _supervisor_pid(vmpod, "novm")
    children = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout.split()
    assert children, "the supervisor has no hypervisor child"
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    assert vmpod("wait", "novm", timeout=60, check=True).stdout == b"125\n"
    vmpod("rm", "novm", check=True)


def _vm_rss(vmpod: Vmpod, name: str) -> int:
    stats = json.loads(vmpod("stats", "--no-stream", "--format", "json", name, check=True).stdout)
    return int(stats["MemUsage"])


def test_resources_and_memory_given_back(vmpod: Vmpod) -> None:
    done = vmpod(
        "run", "--rm", "--cpus", "2", "-m", "256m", "busybox", "sh", "-c", "nproc; grep MemTotal /proc/meminfo"
    )
    cpus, memory = done.stdout.decode().splitlines()
    assert cpus == "2"
    assert int(memory.split()[1]) >= 256 * 1024, "the container must get at least what it asked for"

    _detach(vmpod, "--name", "balloon", "busybox", "sleep", "600")
    try:
        idle = _vm_rss(vmpod, "balloon")
        vmpod("exec", "balloon", "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=60", check=True)
        assert _vm_rss(vmpod, "balloon") > idle + (40 << 20)
        vmpod("exec", "balloon", "rm", "/dev/shm/fill", check=True)
        deadline = time.monotonic() + 30
        while _vm_rss(vmpod, "balloon") > idle + (20 << 20):
            assert time.monotonic() < deadline, "the guest's freed memory never went back to the host"
            time.sleep(1)
    finally:
        vmpod("rm", "-f", "balloon")


def test_detached_rm_removes_the_container_when_it_ends(vmpod: Vmpod) -> None:
    _detach(vmpod, "--rm", "--name", "ephemeral", "busybox", "sh", "-c", "echo bye")
    deadline = time.monotonic() + 60
    while "ephemeral" in vmpod("ps", "-a", check=True).stdout.decode():
        assert time.monotonic() < deadline, "the --rm container was never removed"
        time.sleep(0.2)
    assert vmpod("run", "-d", "--rm", "--restart", "always", "busybox", "true").returncode == 125


def test_attach_sends_stdin_and_returns_the_exit_code(vmpod: Vmpod) -> None:
    script = 'echo ready; while read line; do echo "got $line"; [ "$line" = quit ] && exit 4; done'
    _detach(vmpod, "-i", "--name", "chat", "busybox", "sh", "-c", script)
    _wait_for_log(vmpod, "chat", b"ready")
    done = vmpod("attach", "chat", input=b"hello\nquit\n")
    assert (done.returncode, done.stdout) == (4, b"got hello\ngot quit\n"), done.stderr
    vmpod("rm", "chat", check=True)


def test_an_exec_whose_client_garbles_its_stream_is_killed_not_ended_cleanly(vmpod: Vmpod) -> None:
    """A client that sends what is no client frame (a bug, a memory fault) must not leave the process a
    clean EOF on a stdin cut short, and itself a status of success: the process is killed, and the
    client gets no exit status (`vmpod exec` then says the exec broke, status 125)."""
    container_id = _detach(vmpod, "--name", "garbled", "busybox", "sleep", "600")
    script = "cat >/dev/null; echo clean-eof >/tmp/marker"
    request = {"op": "exec", "args": ["sh", "-c", script], "env": [], "workdir": "", "user": "", "tty": False}
    with control.connect(vmpod.root / "containers" / container_id) as sock:
        sock.sendall(control.encode({**request, "interactive": True, "detach": False}))
        replies = sock.makefile("rb")
        assert json.loads(replies.readline()) == {"ok": True}
        sock.sendall(encode_frame(Message.STDIN, 0, b"the first half of the input"))
        sock.sendall(encode_frame(Message.EXIT, 0))  # only the supervisor sends EXIT
        assert replies.read() == b""  # closed, without an EXIT frame
    assert vmpod("exec", "garbled", "cat", "/tmp/marker").returncode == 1  # sh never saw an EOF
    log = (vmpod.root / "containers" / container_id / "supervisor.log").read_text()
    assert "a client broke its stream" in log and "unexpected EXIT from a client" in log
    vmpod("rm", "-f", "garbled", check=True)

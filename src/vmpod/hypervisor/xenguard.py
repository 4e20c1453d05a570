"""The process that owns one Xen domain (see hypervisor/xen.py): `python -m vmpod.hypervisor.xenguard JSON`.

Its stdout is the VM's console log. It exits when the domain is gone, with xl's status; on SIGTERM (or
its owner's death, through PR_SET_PDEATHSIG) it destroys the domain first. A watchdog child, in its own
session, waits for the guard to end by any means (SIGKILL included) and then makes sure the domain and
its files are gone, so nothing outlives the owner.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from vmpod.hypervisor.xen import XL, Domain, XenDisk, XenMode, domain_config

_PR_SET_PDEATHSIG = 1
LOG_DIR = Path("/var/log/xen")
CONNECT_TIMEOUT_S = 60.0


def _say(out: IO[bytes], text: str) -> None:
    out.write(f"vmpod-xen: {text}\n".encode())
    out.flush()


def _xl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run([XL, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([XL, *args], 124, b"", b"timed out")


def domain_exists(name: str) -> bool | None:
    """True or False from `xl list`; None when xl itself failed (nested TCG has seen it segfault)."""
    done = _xl("list")
    if done.returncode != 0:
        return None
    return any(line.split()[:1] == [name] for line in done.stdout.decode(errors="replace").splitlines()[1:])


def cleanup(name: str, directory: Path, out: IO[bytes] | None = None) -> None:
    """Destroys the domain if it still exists and removes every file made for it (idempotent)."""
    for _ in range(10):
        exists = domain_exists(name)
        if exists is False:
            break
        if exists:
            _xl("destroy", name)
        else:
            time.sleep(1)
    console = LOG_DIR / "console" / f"guest-{name}.log"
    if out is not None and console.is_file():
        try:
            out.write(console.read_bytes()[-65536:])
            out.flush()
        except OSError:
            pass
    for path in (console, *LOG_DIR.glob(f"qemu-dm-{name}.log*"), *LOG_DIR.glob(f"xl-{name}.log*")):
        path.unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def _start_watchdog(name: str, directory: Path) -> None:
    """A grandchild in its own session that cleans up once the guard's pipe closes (its death)."""
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, read_end)
            os.closerange(read_end + 1, 65536)
            while os.read(read_end, 1):
                pass
            cleanup(name, directory)
        finally:
            os._exit(0)
    os.close(read_end)
    os.wait()
    os.set_inheritable(write_end, False)  # held until the guard ends; xl must not keep it open


def _wait_created(xl: subprocess.Popen[bytes], out: IO[bytes], deadline: float) -> bool:
    """Copies xl's output to the console until it says it watches the domain (creation is done)."""
    assert xl.stdout is not None
    while time.monotonic() < deadline:
        line = xl.stdout.readline()
        if not line:
            return False
        out.write(line)
        out.flush()
        if line.startswith(b"Waiting for domain"):
            return True
    return False


def connect_channel(path: str, deadline: float) -> socket.socket:
    """A connection to a domain's channel socket, retried until its device model listens or deadline."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    request: dict[str, Any] = json.loads(argv[0])
    out = sys.stdout.buffer
    libc = ctypes.CDLL(None, use_errno=True)
    # The owner's death must reach us as a signal we can act on (spawn set SIGKILL).
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    name = f"vmpod-{secrets.token_hex(6)}"
    directory = Path(request["directory"]) / name
    _start_watchdog(name, directory)
    stopping = False

    def on_signal(signo: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise SystemExit(128 + signo)

    for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signo, on_signal)
    if os.getppid() == 1:
        return 1
    channel = socket.socket(fileno=int(request["channel_fd"]))
    xl: subprocess.Popen[bytes] | None = None
    try:
        directory.mkdir(mode=0o700, parents=True)
        me = os.getpid()
        domain = Domain(
            name=name,
            vcpus=int(request["vcpus"]),
            memory_mib=int(request["memory_mib"]),
            kernel=str(request["kernel"]),
            ramdisk=str(request["ramdisk"]),
            cmdline=tuple(request["cmdline"]),
            channel_path=str(directory / "agent.sock"),
            disks=tuple(
                XenDisk(f"/proc/{me}/fd/{int(d['fd'])}", str(d["format"]), bool(d["readonly"]))
                for d in request["disks"]
            ),
            mode=XenMode(request["mode"]),
        )
        config = directory / "domain.cfg"
        config.write_text(domain_config(domain))
        _say(out, f"xl create -F -p {config}")
        xl = subprocess.Popen(
            [XL, "create", "-F", "-p", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + float(request.get("create_timeout", 300))
        if not _wait_created(xl, out, deadline):
            _say(out, "xl create failed")
            return 125
        agent = connect_channel(domain.channel_path, time.monotonic() + CONNECT_TIMEOUT_S)
        with agent:
            socket.send_fds(channel, [b"c"], [agent.fileno()])
        channel.close()
        done = _xl("unpause", name)
        if done.returncode != 0:
            _say(out, f"xl unpause failed: {done.stderr.decode(errors='replace').strip()}")
            return 125
        _say(out, f"domain {name} running")
        assert xl.stdout is not None
        for line in xl.stdout:  # until the domain dies and xl -F exits
            out.write(line)
            out.flush()
        return xl.wait()
    finally:
        stopping = True  # a SIGTERM now must not cut the cleanup short
        channel.close()
        cleanup(name, directory, out)
        if xl is not None and xl.poll() is None:
            try:
                xl.wait(30)
            except subprocess.TimeoutExpired:
                xl.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

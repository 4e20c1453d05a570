"""Peers for the OCI runtime's tests: runc and Podman, set up on loopback-only, throwaway state."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import tarfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, _require_busybox_tarball, read_until

RUNTIME = REPO / ".venv" / "bin" / "vmpod-runtime"


def need(tool: str, package: str) -> str:
    """The tool's path; a missing one fails the test with the Debian package that provides it."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {package} (or `make test-deps`)")
    return path


def runtime_binary() -> Path:
    if not RUNTIME.is_file():
        pytest.fail(f"{RUNTIME} is missing: run `.venv/bin/pip install -e '.[dev]'`")
    return RUNTIME


def unpack_rootfs(target: Path) -> Path:
    """The busybox test image as a bundle's root directory."""
    target.mkdir(parents=True)
    with tarfile.open(_require_busybox_tarball()) as tar:
        tar.extractall(target, filter="fully_trusted")  # our own build output
    target.chmod(0o755)  # the tarball's "./" is 0700; an engine's unpacked root is 0755, as in the image store
    return target


def shim_processes(root: Path) -> list[int]:
    """vmpod-runtime supervisors of this state directory that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"vmpod.oci.shim" in cmdline and str(root).encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


@dataclass
class Podman:
    """Podman with the settings this host needs (docs/conformance.md), on a private store."""

    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(self.home / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.home / "storage.conf")
        env.pop("VMPOD_AGENT", None)  # the installed agent: what a user of the engine gets
        return env

    def __call__(
        self, *args: str, input: bytes | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["podman", *args],
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    need("podman", "podman")
    need("runc", "runc")
    need("conmon", "conmon")
    home = tmp_path_factory.mktemp("podman")
    (home / "containers.conf").write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        'netns = "none"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{home}/events.log"\n'
        'runtime = "runc"\n'
        f'tmp_dir = "{home}/tmp"\n'
    )
    (home / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{home}/run"\ngraphroot = "{home}/graph"\n'
    )
    tool = Podman(home)
    done = tool("import", "-q", str(_require_busybox_tarball()), "localhost/busybox:latest")
    assert done.returncode == 0, done.stderr.decode()
    yield tool
    tool("rm", "-af", "-t", "0")
    tool("--runtime", str(RUNTIME), "rm", "-af", "-t", "0")
    subprocess.run(["umount", "-R", str(home / "graph")], capture_output=True)


# Podman calls the runtime without --root: its containers live in the runtime's default state directory.
DEFAULT_RUNTIME_ROOT = Path("/run/vmpod-runtime")


def spawn_on_pty(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, int]:
    """Starts argv with a new pseudo-terminal as its controlling terminal (a user at a terminal)."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child only sets the size and execs
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        os.execvpe(argv[0], argv, env if env is not None else dict(os.environ))
    return pid, master


def wait_status(pid: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"process {pid} did not exit within {timeout} s")


def interactive_session(argv: list[str], env: dict[str, str] | None = None) -> tuple[bytes, int]:
    """An interactive shell in a container, typed into at a terminal: arithmetic, the kernel, the
    terminal's size, then `exit 5`. Returns what the terminal showed and the exit status."""
    pid, master = spawn_on_pty(argv, env)
    seen = bytearray()
    try:
        read_until(master, b"# ", seen)
        os.write(master, b"echo $((6*7)); uname -r\r")
        read_until(master, b"42", seen)
        # The engine may size the terminal only after the start (containerd does): it arrives soon after.
        deadline = time.monotonic() + 30
        while b"33 111" not in seen:
            assert time.monotonic() < deadline, f"the terminal size never arrived: {bytes(seen)!r}"
            os.write(master, b"stty size\r")
            time.sleep(0.5)
            while select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        os.write(master, b"exit 5\r")
        return bytes(seen), wait_status(pid)
    finally:
        os.close(master)


# The network namespace an engine would prepare: eth0 (10.77.0.2/24, default route via the peer) joined
# by a veth to a peer namespace serving http on 10.77.0.1:8080 (PEER_URL); both made by the test, so no
# traffic crosses the host's own network.
NETNS, PEER_NETNS = f"vmpod-ctr-{os.getpid()}", f"vmpod-peer-{os.getpid()}"
PEER_URL = "http://10.77.0.1:8080/hello"
PEER_TEXT = "hello through the namespace"
NETNS_PATH = f"/run/netns/{NETNS}"


@contextlib.contextmanager
def prepared_network(www: Path) -> Iterator[None]:
    """What Podman or a CNI plugin leaves for the runtime: a namespace with a configured eth0."""
    ip, busybox = need("ip", "iproute2"), need("busybox", "busybox-static")
    www.mkdir()
    (www / "hello").write_text(PEER_TEXT + "\n")
    server = None
    try:
        for argv in (
            ["netns", "add", NETNS],
            ["netns", "add", PEER_NETNS],
            ["-n", NETNS, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", PEER_NETNS],
            ["-n", NETNS, "addr", "add", "10.77.0.2/24", "dev", "eth0"],
            ["-n", NETNS, "link", "set", "eth0", "up"],
            ["-n", NETNS, "route", "add", "default", "via", "10.77.0.1"],
            ["-n", PEER_NETNS, "addr", "add", "10.77.0.1/24", "dev", "peer0"],
            ["-n", PEER_NETNS, "link", "set", "peer0", "up"],
        ):
            subprocess.run([ip, *argv], check=True, capture_output=True)
        server = subprocess.Popen(
            [ip, "netns", "exec", PEER_NETNS, busybox, "httpd", "-f", "-p", "10.77.0.1:8080", "-h", str(www)]
        )
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for name in (NETNS, PEER_NETNS):
            subprocess.run([ip, "netns", "del", name], capture_output=True)

"""Ports, networks, /etc files, volumes, tmpfs and a read-only root, as a user uses them."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Vmpod

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def host_server() -> Iterator[int]:
    """A web server on the host's loopback, which the container reaches through the gateway."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_published_port_answers_on_the_host(vmpod: Vmpod) -> None:
    port = _free_port()
    script = "mkdir -p /www && echo served-from-vm > /www/index.html && exec httpd -f -p 80 -h /www"
    done = vmpod("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    try:
        assert f"127.0.0.1:{port}->80/tcp" in vmpod("ps", check=True).stdout.decode()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.read() == b"served-from-vm\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, "the published port never answered"
                time.sleep(0.5)
    finally:
        vmpod("rm", "-f", "web")


def test_outbound_network_etc_files_and_none(vmpod: Vmpod, host_server: int) -> None:
    done = vmpod(
        "run",
        "--rm",
        "-h",
        "box",
        "--add-host",
        "db:10.9.8.7",
        "--dns",
        "192.0.2.53",
        "busybox",
        "sh",
        "-c",
        f"wget -qO- http://10.0.2.2:{host_server}/; cat /etc/hosts /etc/resolv.conf /etc/hostname",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith("hello from the host\n")
    assert "10.9.8.7\tdb" in out and "10.0.2.15\tbox" in out
    assert "nameserver 192.0.2.53" in out and out.endswith("box\n")
    isolated = vmpod(
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        f"ls /sys/class/net; wget -T 3 -qO- http://10.0.2.2:{host_server}/ || echo unreachable",
    )
    interfaces, reached = isolated.stdout.decode().split()[:-1], isolated.stdout.decode().split()[-1]
    assert "lo" in interfaces and "eth0" not in interfaces
    assert reached == "unreachable"


def test_bind_mount_ownership_and_read_only(vmpod: Vmpod, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # as with Docker, UID 1000 may write only where the host lets it
    (shared / "from-host").write_text("host data\n")
    done = vmpod(
        "run",
        "--rm",
        "-u",
        "1000",
        "-v",
        f"{shared}:/data",
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host; echo guest data > /data/from-guest",
    )
    assert (done.returncode, done.stdout) == (0, b"host data\n"), done.stderr
    assert (shared / "from-guest").read_text() == "guest data\n"
    assert (shared / "from-guest").stat().st_uid == 1000
    readonly = vmpod("run", "--rm", "-v", f"{shared}:/data:ro", "busybox", "sh", "-c", "echo x > /data/nope")
    assert readonly.returncode != 0
    assert not (shared / "nope").exists()


def test_named_volume_outlives_its_container(vmpod: Vmpod) -> None:
    vmpod("volume", "create", "keep", check=True)
    assert "keep" in vmpod("volume", "ls", "-q", check=True).stdout.decode().split()
    vmpod("run", "--rm", "-v", "keep:/v", "busybox", "sh", "-c", "echo persisted > /v/file", check=True)
    done = vmpod("run", "--rm", "--mount", "type=volume,source=keep,target=/again", "busybox", "cat", "/again/file")
    assert done.stdout == b"persisted\n"
    vmpod("volume", "rm", "keep", check=True)
    assert "keep" not in vmpod("volume", "ls", "-q", check=True).stdout.decode().split()
    before = set(vmpod("volume", "ls", "-q", check=True).stdout.decode().split())
    vmpod("run", "--name", "anon", "-v", "/scratch", "-v", "named:/named", "busybox", "true", check=True)
    created = set(vmpod("volume", "ls", "-q", check=True).stdout.decode().split()) - before
    assert "named" in created and len(created) == 2
    vmpod("rm", "-v", "anon", check=True)
    assert set(vmpod("volume", "ls", "-q", check=True).stdout.decode().split()) - before == {"named"}
    vmpod("volume", "rm", "named", check=True)


def test_tmpfs_and_read_only_root(vmpod: Vmpod) -> None:
    done = vmpod(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=8m",
        "busybox",
        "sh",
        "-c",
        "echo ok > /scratch/f && cat /scratch/f; grep ' /scratch ' /proc/mounts | cut -d' ' -f3; "
        "touch /rootfile 2>&1 || echo refused",
    )
    out = done.stdout.decode().split("\n")
    assert out[0] == "ok" and out[1] == "tmpfs"
    assert "Read-only file system" in done.stdout.decode() + done.stderr.decode()
    assert os.path.exists("/") and "refused" in done.stdout.decode()


def test_read_only_volume_is_enforced_on_the_host(vmpod: Vmpod, tmp_path: Path) -> None:
    """Root in the guest can remount, so `:ro` must hold outside the guest kernel."""
    shared = tmp_path / "ro"
    shared.mkdir()
    done = vmpod(
        "run",
        "--rm",
        "-v",
        f"{shared}:/ro:ro",
        "busybox",
        "sh",
        "-c",
        "mount -o remount,rw /ro; echo x > /ro/escaped; echo done",
    )
    assert done.stdout.endswith(b"done\n")
    assert not (shared / "escaped").exists()


def test_both_share_transports(vmpod: Vmpod, tmp_path: Path) -> None:
    """virtio-fs where virtiofsd exists, 9p otherwise (VMPOD_SHARES=9p): the same user-visible result."""
    for transport in ("", "9p"):
        shared = tmp_path / f"t{transport}"
        shared.mkdir()
        env_vmpod = Vmpod(vmpod.root)
        os.environ["VMPOD_SHARES"] = transport
        try:
            done = env_vmpod(
                "run",
                "--rm",
                "-v",
                f"{shared}:/s",
                "busybox",
                "sh",
                "-c",
                "echo hi > /s/f; grep ' /s ' /proc/mounts | cut -d' ' -f3",
            )
        finally:
            del os.environ["VMPOD_SHARES"]
        assert done.stdout.strip() == (b"9p" if transport else b"virtiofs"), done.stderr
        assert (shared / "f").read_text() == "hi\n"

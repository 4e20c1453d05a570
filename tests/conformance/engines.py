"""containerd and Docker for the OCI runtime's tests: started by the tests, on local sockets, own state.

Each daemon gets a short temporary directory of its own (AF_UNIX paths are limited to 108 bytes), is
reachable only through unix sockets in it, and is stopped (and its mounts undone) when the test session
ends. The image is the busybox test rootfs (scripts/busybox-rootfs.sh) written into an OCI archive (for
`ctr image import`) and a docker-archive (for Docker 20.10's `docker load`, which predates OCI archives).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

IMAGE = "docker.io/library/vmpod-busybox:latest"
DOCKER_IMAGE = "vmpod-busybox:latest"
START_TIMEOUT_S = 60.0


def _blob(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_archives(rootfs_tar: Path, out: Path) -> tuple[Path, Path]:
    """The rootfs tarball as a one-layer image: (OCI archive, docker-archive)."""
    layer_digest, layer = _blob(rootfs_tar.read_bytes())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "scripts/busybox-rootfs.sh"}],
    }
    config_digest, config_bytes = _blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{config_digest}",
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{layer_digest}",
                "size": len(layer),
            }
        ],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest_bytes),
                "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    oci, docker = out / "busybox-oci.tar", out / "busybox-docker.tar"
    with tarfile.open(oci, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", json.dumps(index).encode())
        for digest, data in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
            _add(tar, f"blobs/sha256/{digest}", data)
    with tarfile.open(docker, "w") as tar:
        _add(tar, f"{config_digest}.json", config_bytes)
        _add(tar, f"{layer_digest}/layer.tar", layer)
        entry = {"Config": f"{config_digest}.json", "RepoTags": [DOCKER_IMAGE], "Layers": [f"{layer_digest}/layer.tar"]}
        _add(tar, "manifest.json", json.dumps([entry]).encode())
    return oci, docker


def short_tempdir(prefix: str) -> Path:
    """A directory whose sockets fit AF_UNIX's 108 bytes (pytest's tmp_path may not)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _wait_for_socket(path: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{process.args[0]} did not start (status {process.poll()}): {log.read_text()[-3000:]}")
        time.sleep(0.1)


def _leftovers(home: Path) -> list[int]:
    """Processes the daemon left behind (shims outlive containerd by design): those naming home."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if str(home).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stop(process: subprocess.Popen[bytes], home: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in _leftovers(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Whatever the daemon left mounted (snapshots, shm, netns) under its own directory.
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(home) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def _start_daemon(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """An engine's daemon in its own session (so that stopping it reaches its children), logging to log."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_engine_env(),
            start_new_session=True,
        )


def _engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VMPOD_AGENT", None)  # the installed agent: what a user of the engine gets
    return env


@dataclass
class Containerd:
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> Path:
        return self.home / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 300, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", "vmpod-test", *args],
            capture_output=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.address), "--namespace", "vmpod-test", *args]


def start_containerd(home: Path) -> Containerd:
    """containerd 1.6 with only what it can use here: no CRI, the native snapshotter (no overlay mounts
    needed), sockets in home."""
    (home / "config.toml").write_text(
        "version = 2\n"
        f'root = "{home}/root"\n'
        f'state = "{home}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.opt"]\n'
        "[grpc]\n"
        f'  address = "{home}/containerd.sock"\n'
        "[ttrpc]\n"
        f'  address = "{home}/containerd.sock.ttrpc"\n'
        "[debug]\n"
        '  level = "debug"\n'
        "[metrics]\n"
        '  address = ""\n'
        '[plugins."io.containerd.service.v1.diff-service"]\n'
        '  default = ["walking"]\n'
        '[plugins."io.containerd.transfer.v1"]\n'
    )
    log = home / "containerd.log"
    process = _start_daemon(["containerd", "--config", str(home / "config.toml")], log)
    daemon = Containerd(home, process)
    try:
        _wait_for_socket(daemon.address, process, log)
    except BaseException:
        stop_containerd(daemon)
        raise
    return daemon


def stop_containerd(daemon: Containerd) -> None:
    for name in daemon.ctr("container", "ls", "-q").stdout.decode().split():
        daemon.ctr("task", "kill", "-s", "KILL", name)
        daemon.ctr("task", "rm", "-f", name)
        daemon.ctr("container", "rm", name)
    _stop(daemon.process, daemon.home)


@dataclass
class Docker:
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.home}/docker.sock"

    def argv(self, *args: str) -> list[str]:
        return ["docker", "-H", self.host, *args]

    def __call__(
        self, *args: str, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env={**os.environ, "DOCKER_CONFIG": str(self.home / "client")},
        )


def start_dockerd(home: Path, runtime: Path, extra: Sequence[str] = ()) -> Docker:
    """Docker's daemon on a unix socket in home, with its own containerd, no iptables and no bridge,
    and vmpod-runtime registered as the runtime `vmpod`."""
    log = home / "dockerd.log"
    (home / "client").mkdir()
    argv = [
        "dockerd",
        "--host",
        f"unix://{home}/docker.sock",
        "--data-root",
        str(home / "data"),
        "--exec-root",
        str(home / "exec"),
        "--pidfile",
        str(home / "dockerd.pid"),
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--bridge=none",
        "--storage-driver=vfs",
        "--exec-opt",
        "native.cgroupdriver=cgroupfs",
        "--add-runtime",
        f"vmpod={runtime}",
        "--debug",
        *extra,
    ]
    process = _start_daemon(argv, log)
    daemon = Docker(home, process)
    try:
        _wait_for_socket(home / "docker.sock", process, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while daemon("version").returncode != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"dockerd does not answer: {log.read_text()[-3000:]}")
            time.sleep(0.2)
    except BaseException:
        _stop(process, home)
        raise
    return daemon


def stop_dockerd(daemon: Docker) -> None:
    _stop(daemon.process, daemon.home)

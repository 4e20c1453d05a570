"""Real registries on loopback for the pull tests: Debian's `docker-registry` without auth, with htpasswd
basic auth, and with token auth through the small token server in `tokens.py`. Test images are written as
OCI layouts and pushed with `skopeo`, once per session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, _require_busybox_tarball
from tests.registry.layouts import Layout, tricky_layers
from tests.registry.tokens import TokenServer

TOOLS = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "htpasswd": "apache2-utils",
    "openssl": "openssl",
}
USER, PASSWORD = "tester", "s3cret-pass"


def require_tools() -> None:
    missing = [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items() if not shutil.which(tool)]
    if missing:
        pytest.fail("the registry tests need: " + ", ".join(missing) + "; `make test-deps` installs them")


@pytest.fixture(autouse=True)
def _own_registries_conf(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No host /etc/vmpod/registries.conf sways these tests; a test writes its own when it needs one."""
    empty = tmp_path_factory.getbasetemp() / "registries-empty.conf"
    empty.touch()
    monkeypatch.setenv("VMPOD_REGISTRIES_CONF", str(empty))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Registry:
    domain: str
    process: subprocess.Popen[bytes]
    log: Path
    creds: str | None = None  # USER:PASSWORD for skopeo

    def push(self, layout: Path, name: str, dest: str, *flags: str) -> None:
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", *flags]
        if self.creds:
            argv.append(f"--dest-creds={self.creds}")
        run(*argv, f"oci:{layout}:{name}", f"docker://{self.domain}/{dest}")

    def raw(self, ref: str, *flags: str) -> bytes:
        argv = ["skopeo", "inspect", "--raw", "--tls-verify=false", *flags]
        if self.creds:
            argv.append(f"--creds={self.creds}")
        return run(*argv, f"docker://{self.domain}/{ref}").stdout

    def raw_config(self, ref: str) -> bytes:
        return self.raw(ref, "--config")


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(argv, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    return done


def start_registry(directory: Path, auth: str = "") -> Registry:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = directory / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"docker-registry exited: {log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return Registry(f"127.0.0.1:{port}", process, log)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"docker-registry did not start: {log.read_text()}")


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test images as one OCI layout: busybox, tricky (two layers), zstd, multi (amd64 + arm64)."""
    require_tools()
    path = tmp_path_factory.mktemp("layouts") / "oci"
    layout = Layout(path)
    busybox = _require_busybox_tarball().read_bytes()
    layout.name(layout.image([(busybox, "gzip")]), "busybox")
    base, top = tricky_layers()
    layout.name(layout.image([(busybox, "gzip"), (base, "gzip"), (top, "gzip")]), "tricky")
    layout.name(layout.image([(busybox, "zstd"), (base, "zstd"), (top, "plain")]), "zstd")
    amd64 = layout.image([(busybox, "gzip")], "amd64")
    arm64 = layout.image([(base, "gzip")], "arm64")
    layout.name(layout.index([amd64, arm64]), "multi")
    return path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, layouts: Path) -> Iterator[Registry]:
    """A registry without auth holding the test images (OCI; busybox also as Docker schema 2)."""
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    try:
        for name in ("busybox", "tricky", "zstd"):
            reg.push(layouts, name, f"test/{name}:1")
        reg.push(layouts, "busybox", "test/docker:1", "--format", "v2s2")
        reg.push(layouts, "multi", "test/multi:1", "--all")
        yield reg
    finally:
        reg.process.kill()
        reg.process.wait()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, layouts: Path) -> Iterator[Registry]:
    """A registry with htpasswd basic auth, holding busybox."""
    directory = tmp_path_factory.mktemp("registry-basic")
    htpasswd = directory / "htpasswd"
    htpasswd.write_bytes(run("htpasswd", "-Bbn", USER, PASSWORD).stdout)
    reg = start_registry(directory, f"auth:\n  htpasswd:\n    realm: vmpod-tests\n    path: {htpasswd}\n")
    reg.creds = f"{USER}:{PASSWORD}"
    try:
        reg.push(layouts, "busybox", "private/busybox:1")
        yield reg
    finally:
        reg.process.kill()
        reg.process.wait()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, layouts: Path) -> Iterator[Registry]:
    """A registry with token auth: anyone may pull `public/*`, only the test user `private/*`."""
    directory = tmp_path_factory.mktemp("registry-token")
    key, cert = directory / "key.pem", directory / "cert.pem"
    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vmpod-test-tokens",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    with TokenServer(key, cert, USER, PASSWORD) as tokens:
        auth = (
            f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {tokens.service}\n"
            f"    issuer: {tokens.issuer}\n    rootcertbundle: {cert}\n"
        )
        reg = start_registry(directory, auth)
        reg.creds = f"{USER}:{PASSWORD}"
        try:
            reg.push(layouts, "busybox", "public/busybox:1")
            reg.push(layouts, "busybox", "private/busybox:1")
            yield reg
        finally:
            reg.process.kill()
            reg.process.wait()


__all__ = ["REPO", "Registry"]

"""The small pure parts of pulling: challenges, platforms, transports, credentials files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmpod.errors import VmpodError
from vmpod.image import credentials
from vmpod.image.auth import parse_challenge
from vmpod.image.credentials import Credentials
from vmpod.image.manifest import Platform
from vmpod.image.registry import base_url, is_loopback


def test_bearer_challenge() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x \\"y\\""').params == {"realm": 'x "y"'}


@pytest.mark.parametrize(
    ("domain", "url"),
    [
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.2:80", "http://127.0.0.2:80"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("registry.example:5000", "https://registry.example:5000"),
        ("192.168.1.2", "https://192.168.1.2"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_loopback_is_plain_http(domain: str, url: str) -> None:
    assert base_url(domain) == url
    assert is_loopback(domain) == url.startswith("http:")


def test_platforms() -> None:
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64"))
    assert Platform.parse("linux/amd64").matches(Platform("linux", "amd64", "v3"))
    assert not Platform.parse("linux/arm/v7").matches(Platform("linux", "arm", "v6"))
    assert str(Platform.parse("linux/x86_64")) == "linux/amd64"
    with pytest.raises(VmpodError, match="invalid platform"):
        Platform.parse("linux")


def test_credentials_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert credentials.load("docker.io", path) is None
    credentials.save("docker.io", Credentials("me", "pa:ss"), path)
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]
    assert credentials.load("index.docker.io", path) == Credentials("me", "pa:ss")
    assert "pa:ss" not in repr(credentials.load("docker.io", path))
    assert credentials.remove("docker.io", path)
    assert not credentials.remove("docker.io", path)


def test_damaged_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"r.example": {"auth": "%%%"}}}')
    with pytest.raises(VmpodError, match="not valid base64"):
        credentials.load("r.example", path)
    path.write_text("[]")
    with pytest.raises(VmpodError, match="not a Docker config file"):
        credentials.load("r.example", path)

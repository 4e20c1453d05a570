"""registries.conf (v2, as Podman reads it): mirrors, insecure, blocked; and the transport decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmpod.errors import VmpodError
from vmpod.image.registries import ENV, Source, Transport, load, parse, transport

CONF = b"""
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "docker.io"
some-future-key = 1
[[registry.mirror]]
location = "mirror.example:5000"
insecure = true
[[registry.mirror]]
location = "cache.example/hub"

[[registry]]
prefix = "docker.io/evil"
location = "docker.io/evil"
blocked = true

[[registry]]
location = "registry.lan:5000"
insecure = true

[[registry]]
location = "quay.io"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "quay-mirror.example"
"""


def test_mirrors_first_then_the_registry() -> None:
    conf = parse(CONF, Path("r.conf"))
    assert conf.sources("docker.io", "library/busybox", by_digest=False) == [
        Source("mirror.example:5000", "library/busybox", True, mirror=True),
        Source("cache.example", "hub/library/busybox", False, mirror=True),
        Source("docker.io", "library/busybox", False, mirror=False),
    ]
    assert conf.sources("ghcr.io", "a/b", by_digest=False) == [Source("ghcr.io", "a/b", False, mirror=False)]


def test_pull_from_mirror_digest_only() -> None:
    conf = parse(CONF, Path("r.conf"))
    assert [s.domain for s in conf.sources("quay.io", "a/b", by_digest=False)] == ["quay.io"]
    assert [s.domain for s in conf.sources("quay.io", "a/b", by_digest=True)] == ["quay-mirror.example", "quay.io"]


def test_blocked_is_refused() -> None:
    conf = parse(CONF, Path("r.conf"))
    with pytest.raises(VmpodError, match=r"registry docker.io/evil is blocked in r.conf"):
        conf.sources("docker.io", "evil/app", by_digest=False)
    conf.check_allowed("docker.io", "evilx/app")  # a prefix ends at a slash


def test_insecure_lookup_and_transport() -> None:
    conf = parse(CONF, Path("r.conf"))
    assert conf.insecure("registry.lan:5000") and conf.insecure("registry.lan:5000", "team/app")
    assert not conf.insecure("docker.io", "library/busybox")
    assert transport("registry.lan:5000", insecure=True) == Transport("https", verify=False, http_fallback=True)
    assert transport("registry.lan:5000") == Transport("https", verify=True, http_fallback=False)
    assert transport("registry.lan:5000", tls_verify=False) == Transport("https", verify=False, http_fallback=False)
    assert transport("127.0.0.1:5000") == Transport("http", verify=False, http_fallback=False)
    assert transport("localhost:5000", insecure=True).scheme == "http"


def test_malformed_files_name_themselves(tmp_path: Path) -> None:
    for text, message in [
        (b"[[registry]\nlocation=", "is not valid TOML"),
        (b"registry = 3", "registry must be a list of tables"),
        (b"[[registry]]\nlocation = 5", "registry location must be a non-empty string"),
        (b'[[registry]]\nlocation = "x"\ninsecure = "yes"', "`insecure` must be true or false"),
        (b'[[registry]]\nlocation = "x"\n[[registry.mirror]]\ninsecure = true', "mirror location"),
    ]:
        with pytest.raises(VmpodError, match=message) as caught:
            parse(text, tmp_path / "bad.conf")
        assert str(tmp_path / "bad.conf") in caught.value.message and "\n" not in caught.value.message


def test_load_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registries.conf"
    path.write_bytes(CONF)
    monkeypatch.setenv(ENV, str(path))
    assert load().path == path and len(load().registries) == 4
    monkeypatch.setenv(ENV, str(tmp_path / "missing.conf"))
    with pytest.raises(VmpodError, match=r"missing\.conf"):
        load()

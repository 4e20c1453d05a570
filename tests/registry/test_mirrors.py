"""registries.conf against Debian's docker-registry: a pull goes to the mirrors first; a blocked registry is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Vmpod
from tests.registry.conftest import Registry, free_port
from tests.registry.fake import FakeRegistry, Reply
from tests.registry.test_pull import sha256
from vmpod.errors import VmpodError
from vmpod.image import registry as registry_module
from vmpod.image.pull import PullOptions, pull
from vmpod.image.registries import transport
from vmpod.image.registry import RetryPolicy
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir

FAST = PullOptions(retry=RetryPolicy(attempts=2, first_delay=0.01))


@pytest.fixture(autouse=True)
def _own_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth.json"))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    state = StateDir(tmp_path / "root")
    state.ensure()
    return ImageStore(state)


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    monkeypatch.setenv("VMPOD_REGISTRIES_CONF", str(path))
    return path


def test_pull_through_mirrors_in_order(
    registry: Registry, store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed, dead_mirror = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"  # nothing listens on either
    configure(
        tmp_path,
        monkeypatch,
        f'[[registry]]\nlocation = "{closed}/team"\n'
        f'[[registry.mirror]]\nlocation = "{dead_mirror}"\n'
        f'[[registry.mirror]]\nlocation = "{registry.domain}/test"\ninsecure = true\n',
    )
    result = pull(store, f"{closed}/team/busybox:1", FAST)
    assert result.digest == sha256(registry.raw("test/busybox:1"))
    assert f"{closed}/team/busybox:1" in store.names()  # named as asked, not after the mirror
    config = json.loads(registry.raw_config("test/busybox:1"))
    assert result.image.config["rootfs"]["diff_ids"] == config["rootfs"]["diff_ids"]


def test_failed_mirrors_are_reported_with_the_registry(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed, dead_mirror = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    configure(
        tmp_path, monkeypatch, f'[[registry]]\nlocation = "{closed}"\n[[registry.mirror]]\nlocation = "{dead_mirror}"\n'
    )
    with pytest.raises(VmpodError, match=f"mirrors tried first: {dead_mirror}"):
        pull(store, f"{closed}/x/app:1", FAST)
    assert store.names() == {}


def test_blocked_registry_is_refused(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = configure(tmp_path, monkeypatch, f'[[registry]]\nlocation = "{registry.domain}"\nblocked = true\n')
    vmpod = Vmpod(tmp_path / "cli")
    done = vmpod("pull", "-q", f"{registry.domain}/test/busybox:1")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125 and len(lines) == 1, lines
    assert f"registry {registry.domain} is blocked in {conf}" in lines[0]
    assert not (tmp_path / "cli" / "images" / "repositories.json").exists()


def test_malformed_conf_is_one_clear_line(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = configure(tmp_path, monkeypatch, "[[registry]\n")
    done = Vmpod(tmp_path / "cli")("pull", "-q", f"{registry.domain}/test/busybox:1")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125 and len(lines) == 1 and f"{conf} is not valid TOML" in lines[0], lines


def test_insecure_registry_falls_back_to_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """An insecure registry is tried over HTTPS without checks first; one without TLS is then reached over HTTP.

    A non-loopback name needs DNS, so the fake (plain HTTP on loopback) is given the insecure decision directly.
    """
    decided = transport("registry.lan:5000", insecure=True)
    assert (decided.scheme, decided.verify, decided.http_fallback) == ("https", False, True)
    monkeypatch.setattr(registry_module, "transport", lambda *args: decided)
    with FakeRegistry() as fake, registry_module.Registry(fake.domain, insecure=True, retry=FAST.retry) as reg:
        fake.route("/v2/", Reply(b"{}"))
        assert reg.base == f"https://{fake.domain}"
        reg.ping()
        assert reg.base == f"http://{fake.domain}" and fake.log[-1] == "/v2/"

"""A registry that lies: every lie is refused with a clear message, and the store keeps only verified blobs."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Vmpod
from tests.registry.bombs import zero_bomb
from tests.registry.fake import INDEX, FakeRegistry, Reply, digest_of
from vmpod.errors import VmpodError
from vmpod.image.pull import PullOptions, pull
from vmpod.image.registry import RetryPolicy
from vmpod.image.store import MAX_DOCUMENT, ImageStore
from vmpod.paths import StateDir
from vmpod.rootfs.unpack import RATIO_ENV

FAST = PullOptions(retry=RetryPolicy(attempts=3, first_delay=0.01))
LAYERS = [b"layer one " * 1000, b"layer two " * 3000]


@pytest.fixture(autouse=True)
def _own_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth.json"))


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with FakeRegistry() as registry:
        yield registry


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    state = StateDir(tmp_path / "root")
    state.ensure()
    return ImageStore(state)


def assert_store_sound(store: ImageStore, allowed: set[str]) -> None:
    """No name, no temp file, and only blobs that were verified (and may be reused by the next pull)."""
    assert store.names() == {}
    files = {p.name for p in store.blobs.iterdir()} if store.blobs.is_dir() else set()
    assert not {f for f in files if f.startswith(".")}, files
    for name in files:
        assert hashlib.sha256((store.blobs / name).read_bytes()).hexdigest() == name
    assert {f"sha256:{f}" for f in files} <= allowed


def spoil_blob(fake: FakeRegistry, digest: str, reply: Reply) -> None:
    path = next(p for p in fake.routes if p.endswith(digest) and "/blobs/" in p)
    fake.route(path, reply)


def spoiled_manifest(fake: FakeRegistry, change: Callable[[dict[str, object]], None]) -> None:
    parts = fake.image("x/app", "1", LAYERS)
    manifest = parts["manifest"]
    change(manifest)
    fake.serve_manifest("x/app", "1", json.dumps(manifest).encode())


CASES: dict[str, tuple[Callable[[FakeRegistry], None], str]] = {}


def case(message: str) -> Callable[[Callable[[FakeRegistry], None]], Callable[[FakeRegistry], None]]:
    def register(setup: Callable[[FakeRegistry], None]) -> Callable[[FakeRegistry], None]:
        CASES[setup.__name__] = (setup, message)
        return setup

    return register


@case("digest mismatch")
def layer_digest_mismatch(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS)
    spoil_blob(fake, digest_of(LAYERS[1]), Reply(b"LAYER TWO " * 3000))


@case("digest mismatch")
def config_digest_mismatch(fake: FakeRegistry) -> None:
    parts = fake.image("x/app", "1", LAYERS)
    spoil_blob(fake, digest_of(parts["config"]), Reply(parts["config"].replace(b"amd64", b"AMD64")))


@case("is truncated")
def truncated_blob(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS)
    spoil_blob(fake, digest_of(LAYERS[1]), Reply(LAYERS[1][:5000]))


@case("failed after 3 attempts")
def connection_cut(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS)
    spoil_blob(fake, digest_of(LAYERS[1]), Reply(LAYERS[1], cut_after=5000))


@case("is larger than the 100 bytes announced")
def manifest_understates_a_size(fake: FakeRegistry) -> None:
    spoiled_manifest(fake, lambda m: m["layers"][1].update(size=100))  # type: ignore[index]


@case("is truncated")
def manifest_overstates_a_size(fake: FakeRegistry) -> None:
    spoiled_manifest(fake, lambda m: m["layers"][1].update(size=len(LAYERS[1]) + 10))  # type: ignore[index]


@case("malformed layer (size)")
def negative_size(fake: FakeRegistry) -> None:
    spoiled_manifest(fake, lambda m: m["layers"][0].update(size=-1))  # type: ignore[index]


@case("malformed manifest (not JSON)")
def malformed_manifest(fake: FakeRegistry) -> None:
    fake.serve_manifest("x/app", "1", b'{"schemaVersion": 2, "layers": [')


@case("malformed image config (not JSON)")
def malformed_config(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS, config=None)
    bad = b"{not json"
    spoiled_manifest(fake, lambda m: m.update(config={"mediaType": "x", "digest": digest_of(bad), "size": len(bad)}))
    fake.route(f"/v2/x/app/blobs/{digest_of(bad)}", Reply(bad))


@case("rootfs.diff_ids does not match")
def config_disagrees_with_manifest(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS, config={"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}})


@case("the registry says")
def lying_content_digest_header(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS)
    fake.routes["/v2/x/app/manifests/1"][0].headers["Docker-Content-Digest"] = "sha256:" + "0" * 64


@case("larger than the limit")
def huge_manifest(fake: FakeRegistry) -> None:
    fake.serve_manifest("x/app", "1", b" " * (MAX_DOCUMENT + 1) + b"{}")


@case("schema 1")
def schema1(fake: FakeRegistry) -> None:
    fake.serve_manifest(
        "x/app",
        "1",
        b'{"schemaVersion": 1, "fsLayers": []}',
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )


@case("bytes, the manifest list says 1")
def index_lies_about_a_manifest_size(fake: FakeRegistry) -> None:
    parts = fake.image("x/app", "amd64", LAYERS)
    data = json.dumps(parts["manifest"]).encode()
    entry = {"mediaType": parts["manifest"]["mediaType"], "digest": digest_of(data), "size": 1}
    entry["platform"] = {"os": "linux", "architecture": "amd64"}
    fake.serve_manifest("x/app", "1", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode(), INDEX)


@case("unsupported media type")
def foreign_layer(fake: FakeRegistry) -> None:
    spoiled_manifest(
        fake,
        lambda m: m["layers"][0].update(mediaType="application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),  # type: ignore[index]
    )


@case("not found")
def missing_blob(fake: FakeRegistry) -> None:
    fake.image("x/app", "1", LAYERS)
    spoil_blob(fake, digest_of(LAYERS[0]), Reply(b"", 404))


@pytest.mark.parametrize("name", sorted(CASES))
def test_lies_are_refused(fake: FakeRegistry, store: ImageStore, name: str) -> None:
    setup, message = CASES[name]
    setup(fake)
    good = {digest_of(layer) for layer in LAYERS}
    with pytest.raises(VmpodError, match=re.escape(message)):
        pull(store, f"{fake.domain}/x/app:1", FAST)
    assert_store_sound(store, good | {p.rsplit("/", 1)[-1] for p in fake.routes if "/blobs/" in p and "x/app" in p})


def test_cli_says_why_and_exits_125(fake: FakeRegistry, tmp_path: Path) -> None:
    layer_digest_mismatch(fake)
    done = Vmpod(tmp_path / "cli")("pull", f"{fake.domain}/x/app:1")
    assert done.returncode == 125
    assert b"vmpod: error: " in done.stderr and b"digest mismatch" in done.stderr
    assert not list((tmp_path / "cli" / "images").glob("repositories.json"))


def test_transient_errors_are_retried(fake: FakeRegistry, store: ImageStore) -> None:
    fake.image("x/app", "1", LAYERS)
    manifest = fake.routes["/v2/x/app/manifests/1"][0]
    fake.route(
        "/v2/x/app/manifests/1", Reply(b"busy", 503, times=1), Reply(b"", 429, {"Retry-After": "0"}, times=1), manifest
    )
    spoil_blob(fake, digest_of(LAYERS[0]), Reply(LAYERS[0], cut_after=10, times=1))
    fake.routes[next(p for p in fake.routes if p.endswith(digest_of(LAYERS[0])))].append(Reply(LAYERS[0]))
    result = pull(store, f"{fake.domain}/x/app:1", FAST)
    assert result.image.layers == tuple(digest_of(layer) for layer in LAYERS)
    assert fake.log.count("/v2/x/app/manifests/1") == 3


def test_interrupted_pull_resumes(fake: FakeRegistry, store: ImageStore) -> None:
    fake.image("x/app", "1", LAYERS)
    second = f"/v2/x/app/blobs/{digest_of(LAYERS[1])}"
    good = fake.routes[second][0]
    fake.route(second, Reply(b"", 500))
    with pytest.raises(VmpodError):
        pull(store, f"{fake.domain}/x/app:1", FAST)
    assert store.has_blob(digest_of(LAYERS[0])) and not store.has_blob(digest_of(LAYERS[1]))
    fake.route(second, good)
    fake.log.clear()
    pull(store, f"{fake.domain}/x/app:1", FAST)
    blobs = [p for p in fake.log if "/blobs/" in p]
    assert blobs == [second]  # the config and the first layer were not fetched again
    assert store.names()


def pull_good_first(fake: FakeRegistry, store: ImageStore) -> tuple[dict[str, str], set[str]]:
    """An image already in the store, so a refused pull can be seen to leave the names as they were."""
    fake.image("x/good", "1", [b"good layer " * 100])
    pull(store, f"{fake.domain}/x/good:1", FAST)
    return store.names(), {p.name for p in store.blobs.iterdir()}


def assert_unchanged(store: ImageStore, names: dict[str, str], blobs: set[str], allowed: set[str]) -> None:
    assert store.names() == names
    files = {p.name for p in store.blobs.iterdir()}
    assert not {f for f in files if f.startswith(".")}, files
    assert files - blobs <= {d.removeprefix("sha256:") for d in allowed}


@pytest.fixture(scope="module")
def bomb() -> tuple[bytes, str]:
    return zero_bomb(200)  # 200 MiB of zeros in ~200 KB


def test_decompression_bomb_is_refused(
    fake: FakeRegistry, store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bomb: tuple[bytes, str]
) -> None:
    names, blobs = pull_good_first(fake, store)
    data, diff_id = bomb
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    parts = fake.image("x/bomb", "1", [data], config=config)
    monkeypatch.setenv(RATIO_ENV, f"100:{1 << 20}")  # the default floor (1 GiB) is too slow to reach in a test
    with pytest.raises(VmpodError, match="refused as a decompression bomb"):
        pull(store, f"{fake.domain}/x/bomb:1", FAST)
    assert_unchanged(store, names, blobs, {digest_of(parts["config"])})  # the bomb itself is not kept
    done = Vmpod(tmp_path / "cli")("pull", "-q", f"{fake.domain}/x/bomb:1")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125 and len(lines) == 1 and "decompression bomb" in lines[0], lines


def test_layer_that_does_not_match_its_diff_id_is_refused(
    fake: FakeRegistry, store: ImageStore, tmp_path: Path
) -> None:
    names, blobs = pull_good_first(fake, store)
    wrong = ["sha256:" + hashlib.sha256(layer.upper()).hexdigest() for layer in LAYERS]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": wrong}}
    parts = fake.image("x/app", "1", LAYERS, config=config)
    with pytest.raises(VmpodError, match="does not match the image config") as caught:
        pull(store, f"{fake.domain}/x/app:1", FAST)
    assert "\n" not in str(caught.value)
    assert_unchanged(store, names, blobs, {digest_of(parts["config"])})
    done = Vmpod(tmp_path / "cli")("pull", "-q", f"{fake.domain}/x/app:1")
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 125 and len(lines) == 1 and "rootfs.diff_ids says" in lines[0], lines

"""Decompression bombs and layers that do not match their diff_ids are refused while unpacking."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tests.registry.bombs import zero_bomb
from vmpod.errors import VmpodError
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir
from vmpod.rootfs.disk import base_disk
from vmpod.rootfs.unpack import RATIO_ENV, Limits, layer_diff_id, unpack_layers

LOW = Limits(max_ratio=100, ratio_floor=1 << 20)


@pytest.fixture(scope="module")
def bomb() -> tuple[bytes, str]:
    return zero_bomb(200)


def small_layer() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"vmpod"))
    return buffer.getvalue()


def test_bomb_is_refused_while_unpacking(tmp_path: Path, bomb: tuple[bytes, str]) -> None:
    layer = tmp_path / "bomb.tar.gz"
    layer.write_bytes(bomb[0])
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(VmpodError, match="decompression bomb") as caught:
        unpack_layers([layer], root, LOW)
    assert "\n" not in str(caught.value)
    assert (root / "zeros").stat().st_size <= 100 * len(bomb[0])  # stopped at the limit, not at 200 MB


def test_default_limits_let_the_bomb_through_below_the_floor(tmp_path: Path, bomb: tuple[bytes, str]) -> None:
    layer = tmp_path / "bomb.tar.gz"
    layer.write_bytes(bomb[0])
    assert layer_diff_id(layer, Limits()) == bomb[1]  # 200 MB is under the 1 GiB floor: not refused
    with pytest.raises(VmpodError, match="decompression bomb"):
        layer_diff_id(layer, LOW)


def test_ratio_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RATIO_ENV, "50:4096")
    assert Limits.from_env() == Limits(max_ratio=50, ratio_floor=4096)
    monkeypatch.setenv(RATIO_ENV, "20")
    assert Limits.from_env() == Limits(max_ratio=20)
    monkeypatch.setenv(RATIO_ENV, "lots")
    with pytest.raises(VmpodError, match=RATIO_ENV):
        Limits.from_env()


def test_diff_ids_are_checked(tmp_path: Path) -> None:
    data = small_layer()
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(gzip.compress(data))
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    root = tmp_path / "root"
    root.mkdir()
    unpack_layers([layer], root, diff_ids=[good])
    assert (root / "etc/hostname").read_bytes() == b"vmpod"
    with pytest.raises(VmpodError, match="does not match the image config"):
        unpack_layers([layer], tmp_path, diff_ids=["sha256:" + "0" * 64])


def test_disk_build_refuses_a_bomb_and_leaves_nothing(
    tmp_path: Path, bomb: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    store = ImageStore(state)
    digest = store.put_bytes(bomb[0])
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [bomb[1]]}}
    image = store.add_image(config, [(digest, len(bomb[0]))])
    monkeypatch.setenv(RATIO_ENV, f"100:{1 << 20}")
    with pytest.raises(VmpodError, match="decompression bomb"):
        base_disk(state, store, image)
    assert [p.name for p in state.disks.iterdir() if not p.name.endswith(".lock")] == []  # no disk, no half disk
    assert not any(state.tmp.iterdir())  # the unpacked tree is gone too

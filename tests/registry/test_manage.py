"""`vmpod tag`, `vmpod rmi` and `vmpod image inspect` on pulled images that share a layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Vmpod
from tests.registry.conftest import Registry
from vmpod.errors import VmpodError
from vmpod.image.remove import remove_image
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir


def blobs(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "images" / "blobs" / "sha256").iterdir()}


def test_tag_inspect_rmi(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth.json"))
    vmpod = Vmpod(tmp_path / "root")
    busybox, tricky = f"{registry.domain}/test/busybox:1", f"{registry.domain}/test/tricky:1"
    for ref in (busybox, tricky):
        assert vmpod("pull", "-q", ref).returncode == 0
    store = ImageStore(StateDir(vmpod.root))
    image, other = store.lookup(busybox), store.lookup(tricky)
    assert image.layers[0] == other.layers[0]  # the busybox layer, stored once

    assert vmpod("tag", busybox, "mine:2").returncode == 0
    done = vmpod("image", "inspect", "mine:2")
    assert done.returncode == 0, done.stderr
    [info] = json.loads(done.stdout)
    manifest_digest = store.names()[busybox]
    assert info["Id"] == image.id
    assert info["RepoTags"] == [busybox, "mine:2"]
    assert info["RepoDigests"] == [f"{registry.domain}/test/busybox@{manifest_digest}"]
    assert (info["Architecture"], info["Os"]) == ("amd64", "linux")
    assert info["RootFS"] == {"Type": "layers", "Layers": image.config["rootfs"]["diff_ids"]}
    assert info["Config"]["Cmd"] == ["/bin/sh"] and info["Size"] > 500_000

    done = vmpod("rmi", image.short_id)
    assert done.returncode == 1 and b"referenced in several repositories" in done.stderr

    before = blobs(vmpod.root)
    done = vmpod("rmi", "mine:2")
    assert done.stdout == b"Untagged: docker.io/library/mine:2\n"
    assert blobs(vmpod.root) == before

    done = vmpod("rmi", busybox)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        f"Untagged: {busybox}",
        f"Untagged: {registry.domain}/test/busybox@{manifest_digest}",
        f"Deleted: {image.id}",
    ]
    left = blobs(vmpod.root)
    assert image.layers[0] in left and image.id not in left and manifest_digest not in left

    with pytest.raises(VmpodError, match="uses the image"):
        remove_image(store, tricky, False, {other.id: "c0ffee" * 10})
    assert vmpod("rmi", tricky).returncode == 0
    assert blobs(vmpod.root) == set()
    assert vmpod("image", "inspect", tricky).returncode == 125

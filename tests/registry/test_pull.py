"""`vmpod pull` against Debian's docker-registry, checked against skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Vmpod
from tests.registry.conftest import Registry, run
from vmpod.image.pull import pull
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir
from vmpod.rootfs.disk import base_disk
from vmpod.rootfs.unpack import unpack_layers


@pytest.fixture(autouse=True)
def _own_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth.json"))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_of(root: Path) -> ImageStore:
    return ImageStore(StateDir(root))


def blob_files(root: Path) -> dict[str, tuple[int, int]]:
    blobs = root / "images" / "blobs" / "sha256"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs.iterdir()} if blobs.is_dir() else {}


@pytest.mark.parametrize(
    ("name", "media_type", "compression"),
    [
        ("test/busybox:1", "application/vnd.oci.image.manifest.v1+json", b"\x1f\x8b"),
        ("test/docker:1", "application/vnd.docker.distribution.manifest.v2+json", b"\x1f\x8b"),
        ("test/zstd:1", "application/vnd.oci.image.manifest.v1+json", b"\x28\xb5\x2f\xfd"),
    ],
)
def test_pull_keeps_the_registry_bytes(
    registry: Registry, tmp_path: Path, name: str, media_type: str, compression: bytes
) -> None:
    vmpod = Vmpod(tmp_path)
    done = vmpod("pull", f"{registry.domain}/{name}")
    assert done.returncode == 0, done.stderr
    raw = registry.raw(name)
    manifest = json.loads(raw)
    assert manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json") == media_type
    out = done.stdout.decode()
    assert f"Digest: {sha256(raw)}\n" in out
    assert f"Status: Downloaded newer image for {registry.domain}/{name}\n" in out
    assert out.endswith(f"{registry.domain}/{name}\n")
    store = store_of(tmp_path)
    assert store.names()[f"{registry.domain}/{name}"] == sha256(raw)
    assert store.blob_path(sha256(raw)).read_bytes() == raw  # byte for byte, as a push will need
    image = store.image(sha256(raw))
    assert image.id == manifest["config"]["digest"]
    assert store.blob_path(image.id).read_bytes() == registry.raw_config(name)
    assert image.layers == tuple(layer["digest"] for layer in manifest["layers"])
    assert store.blob_path(image.layers[0]).read_bytes()[:4].startswith(compression)  # kept as sent

    before = blob_files(tmp_path)
    again = vmpod("pull", f"{registry.domain}/{name}")
    assert again.returncode == 0, again.stderr
    assert f"Status: Image is up to date for {registry.domain}/{name}" in again.stdout.decode()
    assert blob_files(tmp_path) == before  # nothing downloaded again


def test_multi_platform_index(registry: Registry, tmp_path: Path) -> None:
    index_raw = registry.raw("test/multi:1")
    index = json.loads(index_raw)
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    vmpod = Vmpod(tmp_path / "amd64")
    done = vmpod("pull", "-q", f"{registry.domain}/test/multi:1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{registry.domain}/test/multi:1\n"
    names = store_of(vmpod.root).names()
    assert names[f"{registry.domain}/test/multi:1"] == by_arch["amd64"]
    assert names[f"{registry.domain}/test/multi@{sha256(index_raw)}"] == by_arch["amd64"]
    assert store_of(vmpod.root).blob_path(sha256(index_raw)).read_bytes() == index_raw

    arm = Vmpod(tmp_path / "arm64")
    done = arm("pull", "--platform", "linux/arm64", f"{registry.domain}/test/multi:1")
    assert done.returncode == 0, done.stderr
    assert f"Digest: {sha256(index_raw)}" in done.stdout.decode()
    assert store_of(arm.root).names()[f"{registry.domain}/test/multi:1"] == by_arch["arm64"]

    done = arm("pull", "--platform", "linux/s390x", f"{registry.domain}/test/multi:1")
    assert done.returncode == 125
    assert b"no image for platform linux/s390x" in done.stderr and b"linux/amd64, linux/arm64" in done.stderr


def snapshot(root: Path) -> dict[str, Any]:
    """Names, types, modes, owners, link targets, content hashes, and which files are hard links of each other."""
    entries: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                detail: Any = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            else:
                detail = None
            entries[rel] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, detail)
    return {"entries": entries, "hardlinks": sorted(sorted(group) for group in inodes.values())}


@pytest.fixture(scope="module")
def umoci_tree(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """test/tricky:1 copied by skopeo and unpacked by umoci."""
    work = tmp_path_factory.mktemp("umoci")
    run(
        "skopeo",
        "copy",
        "-q",
        "--src-tls-verify=false",
        f"docker://{registry.domain}/test/tricky:1",
        f"oci:{work}/oci:t",
    )
    run("umoci", "unpack", "--image", f"{work}/oci:t", str(work / "bundle"))
    return snapshot(work / "bundle" / "rootfs")


@pytest.mark.parametrize("name", ["test/tricky:1", "test/zstd:1"])
def test_unpacked_tree_matches_umoci(registry: Registry, tmp_path: Path, umoci_tree: dict[str, Any], name: str) -> None:
    state = StateDir(tmp_path / "root")
    state.ensure()
    store = ImageStore(state)
    image = pull(store, f"{registry.domain}/{name}").image
    tree = tmp_path / "tree"
    tree.mkdir()
    unpack_layers([store.blob_path(d) for d in image.layers], tree)
    mine = snapshot(tree)
    assert mine == umoci_tree, _diff(mine, umoci_tree)
    assert mine["entries"]["bin/tool"][1] == "0o4755" and mine["entries"]["tmp"][1] == "0o1777"
    assert "gone" not in mine["entries"] and "opaque/old" not in mine["entries"]
    assert ["bin/hard", "bin/tool"] in mine["hardlinks"]


def test_pulled_image_gets_its_disk(registry: Registry, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "root")
    state.ensure()
    store = ImageStore(state)
    image = pull(store, f"{registry.domain}/test/zstd:1").image
    disk = base_disk(state, store, image)
    assert disk.path.is_file()
    assert "user:x:1000" not in disk.user_database("passwd")  # the top layer replaced /etc/passwd
    shown = subprocess.run(["debugfs", "-R", "cat /opaque/new", str(disk.path)], capture_output=True, check=True)
    assert shown.stdout == b"after the opaque whiteout\n"


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a["entries"]) | set(b["entries"]))
    return [
        f"{k}: {a['entries'].get(k)} != {b['entries'].get(k)}"
        for k in keys
        if a["entries"].get(k) != b["entries"].get(k)
    ]

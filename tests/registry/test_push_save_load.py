"""`vmpod push`, `save`, `load` and `image prune`: round trips through Debian's docker-registry and through
archives, cross-checked with skopeo; hostile archives refused with the store left as it was."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Vmpod
from tests.registry.conftest import PASSWORD, USER, Registry, run
from tests.registry.layouts import Entry, tar_of
from vmpod.image.store import ImageStore
from vmpod.paths import StateDir


@pytest.fixture(autouse=True)
def _own_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMPOD_AUTH_FILE", str(tmp_path / "auth" / "config.json"))


def store_of(vmpod: Vmpod) -> ImageStore:
    return ImageStore(StateDir(vmpod.root))


def blobs(vmpod: Vmpod) -> set[str]:
    directory = vmpod.root / "images" / "blobs" / "sha256"
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def ok(vmpod: Vmpod, *args: str, input: bytes | None = None) -> str:
    done = vmpod(*args, input=input)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_push_rmi_pull_round_trip(registry: Registry, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    for source, target in (("test/busybox:1", "pushed/oci:2"), ("test/docker:1", "pushed/docker:2")):
        ok(vmpod, "pull", "-q", f"{registry.domain}/{source}")
        target = f"{registry.domain}/{target}"
        ok(vmpod, "tag", f"{registry.domain}/{source}", target)
        stored = store_of(vmpod).names()[target]
        done = vmpod("push", target)
        assert done.returncode == 0, done.stderr
        assert f"2: digest: {stored} size: " in done.stdout.decode()
        assert f"The push refers to repository [{target[:-2]}]" in done.stderr.decode()
        raw = registry.raw(target.split("/", 1)[1])
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == stored  # byte for byte
        ok(vmpod, "rmi", target, f"{registry.domain}/{source}")
        assert target not in store_of(vmpod).names()
        ok(vmpod, "pull", "-q", target)
        assert store_of(vmpod).names()[target] == stored
    done = vmpod("push", f"{registry.domain}/pushed/docker:2")
    assert done.stderr.decode().count("Layer already exists") == 2  # config and layer: HEAD, no upload


def test_push_with_token_auth(token_registry: Registry, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    ok(vmpod, "pull", "-q", f"{token_registry.domain}/public/busybox:1")
    target = f"{token_registry.domain}/private/pushed:1"
    ok(vmpod, "tag", f"{token_registry.domain}/public/busybox:1", target)
    done = vmpod("push", "-q", f"{token_registry.domain}/public/busybox:1")
    assert done.returncode == 125 and b"authentication required" in done.stderr  # anonymous: pull only
    ok(vmpod, "login", "-u", USER, "--password-stdin", token_registry.domain, input=PASSWORD.encode())
    assert ok(vmpod, "push", "-q", target) == f"{target}\n"
    stored = store_of(vmpod).names()[target]
    ok(vmpod, "rmi", target, f"{token_registry.domain}/public/busybox:1")
    assert blobs(vmpod) == set()
    ok(vmpod, "pull", "-q", target)
    assert store_of(vmpod).names()[target] == stored


def test_save_rmi_load_round_trip(registry: Registry, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    tricky, busybox = f"{registry.domain}/test/tricky:1", f"{registry.domain}/test/busybox:1"
    ok(vmpod, "pull", "-q", tricky)
    ok(vmpod, "pull", "-q", busybox)
    before = {name: store_of(vmpod).lookup(name) for name in (tricky, busybox)}
    archive = tmp_path / "images.tar"
    ok(vmpod, "save", "-o", str(archive), tricky, busybox)

    info = json.loads(run("skopeo", "inspect", f"docker-archive:{archive}:{tricky}").stdout)
    assert len(info["Layers"]) == 3
    run("skopeo", "copy", "-q", f"docker-archive:{archive}:{busybox}", f"oci:{tmp_path / 'copy'}:x")
    run("skopeo", "inspect", f"oci-archive:{archive}:1")

    ok(vmpod, "rmi", tricky, busybox)
    assert blobs(vmpod) == set()
    out = ok(vmpod, "load", "-i", str(archive))
    assert out.splitlines() == [f"Loaded image: {tricky}", f"Loaded image: {busybox}"]
    for name, image in before.items():
        again = store_of(vmpod).lookup(name)
        assert (again.id, again.manifest_digest) == (image.id, image.manifest_digest)

    piped = vmpod("save", busybox).stdout  # stdout, not a terminal
    ok(vmpod, "rmi", tricky, busybox)
    assert ok(vmpod, "load", input=piped) == f"Loaded image: {busybox}\n"
    assert store_of(vmpod).lookup(busybox).id == before[busybox].id


def test_load_skopeo_archives_and_layout(layouts: Path, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    docker, oci, unnamed = tmp_path / "docker.tar", tmp_path / "oci.tar", tmp_path / "unnamed.tar"
    run("skopeo", "copy", "-q", f"oci:{layouts}:tricky", f"docker-archive:{docker}:example.org/a/b:2")
    run("skopeo", "copy", "-q", f"oci:{layouts}:busybox", f"oci-archive:{oci}:local/busy:3")
    run("skopeo", "copy", "-q", f"oci:{layouts}:busybox", f"oci-archive:{unnamed}")
    assert ok(vmpod, "load", "-i", str(docker)) == "Loaded image: example.org/a/b:2\n"
    assert ok(vmpod, "load", "-i", str(oci)) == "Loaded image: local/busy:3\n"
    busy = store_of(vmpod).lookup("local/busy:3")
    assert ok(vmpod, "load", "-i", str(unnamed)) == f"Loaded image ID: {busy.id}\n"
    config = json.loads(run("skopeo", "inspect", "--config", f"oci:{layouts}:tricky").stdout)
    image = store_of(vmpod).lookup("example.org/a/b:2")
    assert image.config["rootfs"] == config["rootfs"]

    ok(vmpod, "rmi", "example.org/a/b:2", "local/busy:3")
    out = ok(vmpod, "load", "-i", str(layouts))  # an OCI layout directory; its ref.names are bare words
    assert out.count("Loaded image ID: sha256:") == 4
    names = store_of(vmpod).names()
    # busybox and multi's amd64 image are one manifest: three unnamed images
    assert len(names) == 3 and all(n.startswith("unnamed.invalid/image@") for n in names)
    out = ok(vmpod, "image", "prune", "-f")
    assert out.count("deleted: sha256:") == 2 and "Total reclaimed space" in out  # tricky and zstd: one config
    assert blobs(vmpod) == set() and store_of(vmpod).names() == {}


def test_prune_all_keeps_images_in_use(layouts: Path, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    archive = tmp_path / "oci.tar"
    run("skopeo", "copy", "-q", f"oci:{layouts}:busybox", f"oci-archive:{archive}:local/busy:3")
    ok(vmpod, "load", "-i", str(archive))
    ok(vmpod, "tag", "local/busy:3", "local/other:1")
    assert ok(vmpod, "image", "prune", "-f") == "Total reclaimed space: 0B\n"
    assert len(store_of(vmpod).names()) == 2
    assert ok(vmpod, "image", "prune", "-a", input=b"n\n").startswith("WARNING!")
    assert len(store_of(vmpod).names()) == 2
    out = ok(vmpod, "image", "prune", "-a", "-f")
    assert "untagged: local/busy:3" in out and "untagged: local/other:1" in out
    assert blobs(vmpod) == set()


# --- hostile archives -------------------------------------------------------------------------------
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


LAYER = tar_of([Entry("hello", data=b"hi\n")])
CONFIG = json.dumps(
    {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(LAYER)]}}
).encode()


def docker_members(layer_path: str = f"{sha(LAYER)}.tar") -> dict[str, bytes]:
    manifest = [{"Config": f"{sha(CONFIG)}.json", "RepoTags": ["evil:1"], "Layers": [layer_path]}]
    return {f"{sha(CONFIG)}.json": CONFIG, f"{sha(LAYER)}.tar": LAYER, "manifest.json": json.dumps(manifest).encode()}


def oci_members() -> dict[str, bytes]:
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": "sha256:" + sha(LAYER),
        "size": len(LAYER),
    }
    config = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:" + sha(CONFIG),
        "size": len(CONFIG),
    }
    manifest = json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}).encode()
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + sha(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "evil:2"},
    }
    return {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode(),
        f"blobs/sha256/{sha(manifest)}": manifest,
        f"blobs/sha256/{sha(CONFIG)}": CONFIG,
        f"blobs/sha256/{sha(LAYER)}": LAYER,
    }


HOSTILE = {
    "traversal": (tarball({**docker_members(), "../escape": b"x"}), "unsafe path '../escape'"),
    "absolute": (tarball({**oci_members(), "/etc/escape": b"x"}), "unsafe path '/etc/escape'"),
    "link-out": (tarball(docker_members(), {"up": "../../etc/passwd"}), "points outside the archive"),
    "digest-mismatch": (
        tarball({**oci_members(), f"blobs/sha256/{sha(LAYER)}": LAYER[:-1] + b"!"}),
        "digest mismatch in the archive",
    ),
    "diff-id-mismatch": (
        tarball({**docker_members(), f"{sha(LAYER)}.tar": LAYER[:-1] + b"!"}),
        "does not match its diff_id",
    ),
    "missing-layer": (tarball(docker_members("nowhere.tar")), "manifest.json names layer 'nowhere.tar'"),
    "not-a-tar": (b"this is not an archive\n" * 100, "not a tar archive"),
    "no-manifest": (tarball({"hello": b"x"}), "neither manifest.json"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_refused(case: str, layouts: Path, tmp_path: Path) -> None:
    vmpod = Vmpod(tmp_path / "root")
    archive = tmp_path / "busybox.tar"
    run("skopeo", "copy", "-q", f"oci:{layouts}:busybox", f"oci-archive:{archive}:local/busy:3")
    ok(vmpod, "load", "-i", str(archive))
    names, before = store_of(vmpod).names(), blobs(vmpod)
    data, message = HOSTILE[case]
    done = vmpod("load", input=data)
    assert done.returncode == 125
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmpod: error: ") and message in lines[0], lines
    assert store_of(vmpod).names() == names and blobs(vmpod) == before
    assert [p.name for p in (vmpod.root / "images").iterdir() if p.name.startswith(".load.")] == []
    assert not (tmp_path / "escape").exists()


def test_well_formed_hostile_fixtures_load(tmp_path: Path) -> None:
    """The bases the hostile cases spoil load when intact, so each refusal is about its one defect."""
    vmpod = Vmpod(tmp_path / "root")
    assert ok(vmpod, "load", input=tarball(docker_members())) == "Loaded image: evil:1\n"
    assert ok(vmpod, "load", input=tarball(oci_members())) == "Loaded image: evil:2\n"

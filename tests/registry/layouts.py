"""Test images written as OCI layouts (blobs, index.json), to be pushed with `skopeo copy oci:DIR:NAME …`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "plain": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(tar: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(tar, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(tar)
    return tar


@dataclass
class Entry:
    """One tar entry: kind is file, dir, symlink, hardlink or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)


def tar_of(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 1_700_000_000
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
            elif e.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, e.target
            elif e.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(e.data)
            archive.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    return out.getvalue()


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(
        self, layers: list[tuple[bytes, str]], arch: str = "amd64", config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A manifest for (uncompressed tar, compression) layers; returns its descriptor."""
        descriptors = [self.blob(compress(tar, how), LAYER_TYPES[how]) for tar, how in layers]
        image_config = {
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": config or {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for tar, _ in layers]},
            "history": [{"created_by": "vmpod tests"} for _ in layers],
        }
        config_descriptor = self.blob(json.dumps(image_config).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": descriptors}
        return self.blob(json.dumps(manifest).encode(), OCI_MANIFEST, platform={"architecture": arch, "os": "linux"})

    def index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.blob(json.dumps(index).encode(), OCI_INDEX)

    def name(self, descriptor: dict[str, Any], ref: str) -> None:
        entry = {k: v for k, v in descriptor.items() if k != "platform"}
        self.refs.append({**entry, "annotations": {"org.opencontainers.image.ref.name": ref}})
        top = {"schemaVersion": 2, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(top))


def busybox_layer(tarball: Path) -> bytes:
    return tarball.read_bytes()


def tricky_layers() -> list[bytes]:
    """Two layers exercising whiteouts, opaque directories, hard links, symlinks, special bits, owners, xattrs."""
    base = [
        Entry("etc", "dir", mode=0o755),
        Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        Entry("etc/group", data=b"root:x:0:\nuser:x:1000:\n"),
        Entry("gone", data=b"removed by the next layer\n"),
        Entry("dir", "dir", mode=0o755),
        Entry("dir/keep", data=b"kept\n"),
        Entry("dir/drop", data=b"dropped\n"),
        Entry("opaque", "dir", mode=0o755),
        Entry("opaque/old", data=b"hidden by an opaque whiteout\n"),
        Entry("bin", "dir", mode=0o755),
        Entry("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o4755),
        Entry("bin/sgid", data=b"sgid\n", mode=0o2711, gid=50),
        Entry("bin/hard", "hardlink", target="bin/tool"),
        Entry("bin/abs", "symlink", target="/bin/tool"),
        Entry("bin/rel", "symlink", target="tool"),
        Entry("tmp", "dir", mode=0o1777),
        Entry("home", "dir", mode=0o755),
        Entry("home/user", "dir", mode=0o700, uid=1000, gid=1000),
        Entry("home/user/.profile", data=b"export A=1\n", mode=0o600, uid=1000, gid=1000),
        Entry("fifo", "fifo", mode=0o600),
    ]
    top = [
        Entry(".wh.gone"),
        Entry("dir/.wh.drop"),
        Entry("opaque", "dir", mode=0o750),
        Entry("opaque/.wh..wh..opq"),
        Entry("opaque/new", data=b"after the opaque whiteout\n"),
        Entry("dir/added", data=b"added\n", mode=0o640, uid=1000, gid=1000),
        Entry("bin/hard2", "hardlink", target="dir/added"),
        Entry("link-to-dir", "symlink", target="dir"),
        Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    ]
    return [tar_of(base), tar_of(top)]

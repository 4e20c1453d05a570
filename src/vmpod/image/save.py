"""`vmpod save`: images as one tarball that `docker load`, `podman load`, skopeo and `vmpod load` read.

The tarball is both an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and a `docker save`
archive (`manifest.json` whose Config and Layers name files in `blobs/`), as Docker 25 writes it. Blobs are
written exactly as stored, so the manifest and config digests (and the image ID) survive a round trip.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmpod.errors import VmpodError
from vmpod.image.manifest import MediaType, parse_document
from vmpod.image.reference import Reference
from vmpod.image.store import Image, ImageStore

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass
class _Entry:
    image: Image
    media_type: str
    size: int
    names: list[Reference] = field(default_factory=list)


def _entries(store: ImageStore, texts: list[str]) -> list[_Entry]:
    """The images to save, each once, with the names the user gave for them (an ID gives none)."""
    entries: dict[str, _Entry] = {}
    names = store.names()
    for text in texts:
        image = store.lookup(text)
        if image.id not in entries:
            data = store.blob_path(image.manifest_digest).read_bytes()
            document = parse_document(data, None)
            entries[image.id] = _Entry(image, document.media_type.value, len(data))
        try:
            ref: Reference | None = Reference.parse(text)
        except VmpodError:
            ref = None
        if ref is not None and not ref.digest and str(ref) in names and ref not in entries[image.id].names:
            entries[image.id].names.append(ref)
    return list(entries.values())


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _add(archive: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o444
    if data is None and path is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
    elif data is not None:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        assert path is not None
        with open(path, "rb") as source:
            info.size = os.fstat(source.fileno()).st_size
            archive.addfile(info, source)


def write_archive(store: ImageStore, texts: list[str], out: IO[bytes]) -> None:
    """Writes the images `texts` name as one tar stream to `out`."""
    entries = _entries(store, texts)
    index: list[dict[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    for entry in entries:
        descriptor = {"mediaType": entry.media_type, "digest": entry.image.manifest_digest, "size": entry.size}
        refs: list[Reference | None] = [*entry.names] or [None]
        for ref in refs:
            annotations = {CONTAINERD_NAME: str(ref), REF_NAME: ref.tag or "latest"} if ref else {}
            index.append({**descriptor, **({"annotations": annotations} if annotations else {})})
        manifest.append(
            {
                "Config": _blob_name(entry.image.config_digest),
                "RepoTags": [ref.familiar for ref in entry.names],
                "Layers": [_blob_name(d) for d in entry.image.layers],
            }
        )
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "blobs/")
        _add(archive, "blobs/sha256/")
        written: set[str] = set()
        for entry in entries:
            image = entry.image
            for digest in (image.manifest_digest, image.config_digest, *image.layers):
                if digest not in written:
                    written.add(digest)
                    _add(archive, _blob_name(digest), path=store.blob_path(digest))
        top = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": index}
        _add(archive, "index.json", json.dumps(top).encode())
        _add(archive, "manifest.json", json.dumps(manifest).encode())
        _add(archive, "oci-layout", OCI_LAYOUT)


def save(store: ImageStore, texts: list[str], output: str, stdout: IO[bytes]) -> None:
    """Saves to the file `output` (written whole or not at all), or to `stdout` for `-`."""
    if output == "-":
        write_archive(store, texts, stdout)
        stdout.flush()
        return
    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as e:
        raise VmpodError(f"cannot write {output}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            write_archive(store, texts, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        raise VmpodError(f"cannot write {output}: {e.strerror or e}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)

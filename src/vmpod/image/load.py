"""`vmpod load`: images from a `docker save` tarball, an OCI layout tarball, or an OCI layout directory.

An archive is untrusted. Its entries are staged (hashed while copied) under the state directory before
anything is stored: a path that is absolute or climbs with `..`, a link leading out of the archive, a blob
whose content does not match its digest, a manifest naming a file the archive lacks, a layer that does not
match the config's diff_id: each refuses the whole archive, and the store is left as it was (no blob, no
name). Only when every image checks out are the blobs moved into the store and the names pointed at them.
Documents (manifests, configs, index.json, manifest.json) are read with a size bound.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from vmpod.errors import VmpodError
from vmpod.image.manifest import Descriptor, Index, Manifest, MediaType, Platform, parse_config, parse_document
from vmpod.image.reference import Reference
from vmpod.image.save import CONTAINERD_NAME, REF_NAME
from vmpod.image.store import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_DOCUMENT, ImageStore, check_digest

# An image nobody named (an OCI archive without a ref.name) is kept under this pinned name: `vmpod images`
# does not list it, `vmpod tag ID NAME` names it, `vmpod image prune` removes it.
UNNAMED = "unnamed.invalid/image"
MAX_ENTRIES = 100_000
_METADATA = frozenset({"manifest.json", "index.json", "oci-layout", "repositories"})
_CHUNK = 1 << 20
_MAX_LINKS = 16
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
_LAYER_TYPES = {
    _GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    _ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
    b"": "application/vnd.oci.image.layer.v1.tar",
}


def _invalid(message: str) -> VmpodError:
    return VmpodError(f"invalid archive: {message}", "the file is not an image archive, or it is damaged")


@dataclass
class _File:
    path: Path
    digest: str
    size: int
    staged: bool  # a copy in the staging directory (moved into the store) rather than the user's own file


@dataclass(frozen=True)
class LoadedImage:
    id: str
    manifest_digest: str
    names: tuple[str, ...]  # full references; empty when the archive named none


@dataclass
class _Plan:
    manifest: bytes
    manifest_digest: str
    config_digest: str
    blobs: list[_File]
    names: list[str] = field(default_factory=list)


def _safe_name(name: str) -> str:
    """An archive path, normalized; absolute paths and `..` are refused."""
    if name.startswith("/") or "\x00" in name:
        raise _invalid(f"unsafe path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _invalid(f"unsafe path {name!r}")
    return "/".join(parts)


def _hash_file(path: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


class _Archive:
    """The files of an archive by path: staged copies (a tar) or the files of a directory."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.links: dict[str, str] = {}
        self.documents: dict[str, bytes] = {}
        self.root: Path | None = None  # a directory read in place

    # --- reading -----------------------------------------------------------------------------------
    @classmethod
    def from_tar(cls, source: IO[bytes], staging: Path) -> _Archive:
        archive = cls()
        try:
            with tarfile.open(fileobj=source, mode="r|*") as tar:
                for count, member in enumerate(tar):
                    if count >= MAX_ENTRIES:
                        raise _invalid(f"more than {MAX_ENTRIES} entries")
                    archive._add(tar, member, staging / str(count))
        except tarfile.TarError as e:
            raise _invalid(f"not a tar archive ({e})") from None
        except (EOFError, zlib.error, OSError) as e:
            raise _invalid(f"cannot read it ({e})") from None
        return archive

    def _add(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        name = _safe_name(member.name)
        if member.isdir() or not name:
            return
        if name in self.files or name in self.links or name in self.documents:
            raise _invalid(f"{name!r} appears twice")
        if member.issym() or member.islnk():
            link = member.linkname
            base = posixpath.dirname(name) if member.issym() else ""
            if link.startswith("/"):
                raise _invalid(f"link {name!r} points outside the archive: {link!r}")
            resolved = posixpath.normpath(posixpath.join(base, link))
            if resolved.startswith("../") or resolved in ("..", "."):
                raise _invalid(f"link {name!r} points outside the archive: {link!r}")
            self.links[name] = resolved
            return
        if not member.isfile():
            raise _invalid(f"unexpected entry {name!r} (not a file, directory or link)")
        stream = tar.extractfile(member)
        assert stream is not None
        if name in _METADATA:
            if member.size > MAX_DOCUMENT:
                raise _invalid(f"{name} is larger than the limit of {MAX_DOCUMENT} bytes")
            self.documents[name] = stream.read()
            return
        hasher = hashlib.sha256()
        with open(target, "wb") as out:
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        digest = "sha256:" + hasher.hexdigest()
        if name.startswith("blobs/sha256/"):
            expected = "sha256:" + name.removeprefix("blobs/sha256/")
            check_digest(expected)
            if digest != expected:
                raise VmpodError(f"digest mismatch in the archive: {name} holds content of digest {digest}")
        self.files[name] = _File(target, digest, member.size, staged=True)

    @classmethod
    def from_directory(cls, root: Path) -> _Archive:
        archive = cls()
        archive.root = root
        for name in _METADATA:
            path = root / name
            if path.is_file():
                if path.stat().st_size > MAX_DOCUMENT:
                    raise _invalid(f"{name} is larger than the limit of {MAX_DOCUMENT} bytes")
                archive.documents[name] = path.read_bytes()
        return archive

    # --- lookup ------------------------------------------------------------------------------------
    def file(self, name: str) -> _File | None:
        name = _safe_name(name)
        for _ in range(_MAX_LINKS):
            if name not in self.links:
                break
            name = self.links[name]
        if self.root is not None and name not in self.files:
            path = self.root / name
            if path.is_file():
                digest, size = _hash_file(path)
                self.files[name] = _File(path, digest, size, staged=False)
        return self.files.get(name)

    def blob(self, descriptor: Descriptor, what: str) -> _File:
        found = self.file("blobs/sha256/" + check_digest(descriptor.digest))
        if found is None:
            raise _invalid(f"{what} {descriptor.digest} is missing from the archive")
        if found.digest != descriptor.digest:
            raise VmpodError(f"digest mismatch in the archive: {what} {descriptor.digest} has digest {found.digest}")
        if found.size != descriptor.size:
            raise _invalid(f"{what} {descriptor.digest} is {found.size} bytes, its descriptor says {descriptor.size}")
        return found

    def read(self, found: _File, what: str) -> bytes:
        if found.size > MAX_DOCUMENT:
            raise _invalid(f"{what} is larger than the limit of {MAX_DOCUMENT} bytes")
        data = found.path.read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != found.digest:
            raise VmpodError(f"{what} changed while it was read")
        return data


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _invalid(f"{what} is not JSON") from None


def _checked(action: str, call: Any, *args: Any) -> Any:
    """Runs a parser meant for registries, rewording its errors for an archive."""
    try:
        return call(*args)
    except VmpodError as e:
        raise _invalid(f"{action}: {e.message.replace('the registry sent ', '')}") from None


def _full_names(tags: list[str]) -> list[str]:
    names = []
    for tag in tags:
        try:
            ref = Reference.parse(tag)
        except VmpodError:
            raise _invalid(f"invalid image name {tag!r}") from None
        if ref.digest:
            raise _invalid(f"an image name with a digest: {tag!r}")
        names.append(str(ref))
    return names


def _docker_entries(archive: _Archive) -> list[dict[str, Any]]:
    data = archive.documents.get("manifest.json")
    if data is None:
        return []
    value = _json(data, "manifest.json")
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise _invalid("manifest.json is not a list of images")
    for entry in value:
        tags, layers = entry.get("RepoTags") or [], entry.get("Layers")
        if not isinstance(entry.get("Config"), str) or not isinstance(layers, list):
            raise _invalid("an entry of manifest.json lacks Config or Layers")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in [*tags, *layers]):
            raise _invalid("an entry of manifest.json has malformed RepoTags or Layers")
    return value


def _docker_names(archive: _Archive, config_digest: str) -> list[str] | None:
    """The RepoTags manifest.json gives the image with this config; None when manifest.json has no entry for it."""
    for entry in _docker_entries(archive):
        found = archive.file(entry["Config"])
        if found is not None and found.digest == config_digest:
            return _full_names(entry.get("RepoTags") or [])
    return None


def _oci_plans(archive: _Archive, index_bytes: bytes) -> list[_Plan]:
    value = _json(index_bytes, "index.json")
    index = _checked("index.json", parse_document, index_bytes, None)
    if not isinstance(index, Index) or not isinstance(value, dict):
        raise _invalid("index.json is not an image index")
    plans = []
    for entry, descriptor in zip(value["manifests"], index.manifests, strict=True):
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        data = archive.read(archive.blob(descriptor, "manifest"), f"manifest {descriptor.digest}")
        document = _checked(f"manifest {descriptor.short}", parse_document, data, descriptor.media_type or None)
        if isinstance(document, Index):
            chosen = document.select(Platform.host())
            descriptor = chosen
            data = archive.read(archive.blob(chosen, "manifest"), f"manifest {chosen.digest}")
            document = _checked(f"manifest {chosen.short}", parse_document, data, chosen.media_type or None)
            if isinstance(document, Index):
                raise _invalid("nested image indexes are not supported")
        config = archive.blob(document.config, "image config")
        _checked("image config", parse_config, archive.read(config, "image config"), document)
        blobs = [archive.blob(descriptor, "manifest"), config, *(archive.blob(d, "layer") for d in document.layers)]
        names = _docker_names(archive, document.config.digest)
        if names is None:
            names = _annotated_name(annotations)
        plans.append(_Plan(data, descriptor.digest, document.config.digest, blobs, names))
    return plans


def _annotated_name(annotations: dict[str, Any]) -> list[str]:
    """`io.containerd.image.name`, or a ref.name that is a whole reference (`name:tag`, not only a tag)."""
    full, ref_name = annotations.get(CONTAINERD_NAME), annotations.get(REF_NAME)
    if isinstance(full, str) and full:
        return _full_names([full])
    if isinstance(ref_name, str) and (":" in ref_name or "/" in ref_name):
        try:
            return _full_names([ref_name])
        except VmpodError:
            return []  # a ref.name that only names a tag, or something else: the image stays unnamed
    return []


def _diff_id(found: _File) -> str:
    """The digest of a layer's uncompressed tar."""
    with open(found.path, "rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        hasher = hashlib.sha256()
        try:
            if head.startswith(_GZIP):
                with gzip.GzipFile(fileobj=raw) as stream:
                    while chunk := stream.read(_CHUNK):
                        hasher.update(chunk)
            elif head.startswith(_ZSTD):
                with zstandard.ZstdDecompressor().stream_reader(raw) as zstream:
                    while chunk := zstream.read(_CHUNK):
                        hasher.update(chunk)
            else:
                return found.digest
        except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
            raise _invalid(f"a compressed layer is damaged ({e})") from None
    return "sha256:" + hasher.hexdigest()


def _docker_plans(archive: _Archive) -> list[_Plan]:
    plans = []
    for entry in _docker_entries(archive):
        config = archive.file(entry["Config"])
        if config is None:
            raise _invalid(f"manifest.json names {entry['Config']!r}, which the archive lacks")
        config_bytes = archive.read(config, "image config")
        layers = []
        for name in entry["Layers"]:
            found = archive.file(name)
            if found is None:
                raise _invalid(f"manifest.json names layer {name!r}, which the archive lacks")
            layers.append(found)
        stand_in = Manifest(
            MediaType.OCI_MANIFEST,
            Descriptor(CONFIG_MEDIA_TYPE, config.digest, config.size),
            tuple(Descriptor("", f.digest, f.size) for f in layers),
        )
        parsed = _checked("image config", parse_config, config_bytes, stand_in)
        for found, diff_id in zip(layers, parsed["rootfs"]["diff_ids"], strict=True):
            if _diff_id(found) != diff_id:
                raise VmpodError(f"digest mismatch in the archive: a layer does not match its diff_id {diff_id}")
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": _layer_type(f), "digest": f.digest, "size": f.size} for f in layers],
        }
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        names = _full_names(entry.get("RepoTags") or [])
        plans.append(_Plan(data, digest, config.digest, [config, *layers], names))
    return plans


def _layer_type(found: _File) -> str:
    with open(found.path, "rb") as raw:
        head = raw.read(4)
    return next(t for magic, t in _LAYER_TYPES.items() if head.startswith(magic))


def _commit(store: ImageStore, plans: list[_Plan]) -> list[LoadedImage]:
    """Moves the blobs into the store, then names the images; anything new is removed again on failure."""
    added: list[str] = []
    try:
        store.blobs.mkdir(parents=True, exist_ok=True)
        for plan in plans:
            for found in plan.blobs:
                if store.has_blob(found.digest):
                    continue
                if found.staged:
                    os.chmod(found.path, 0o444)
                    os.replace(found.path, store.blob_path(found.digest))
                else:
                    with open(found.path, "rb") as source:
                        store.put_stream(source, found.digest, size=found.size)
                added.append(found.digest)
            if not store.has_blob(plan.manifest_digest):
                store.put_bytes(plan.manifest)
                added.append(plan.manifest_digest)
            store.image(plan.manifest_digest)  # reads back what was stored
        loaded = []
        for plan in plans:
            names = plan.names or [f"{UNNAMED}@{plan.manifest_digest}"]
            store.point(names, plan.manifest_digest)
            loaded.append(LoadedImage(plan.config_digest, plan.manifest_digest, tuple(plan.names)))
        return loaded
    except BaseException:
        for digest in added:
            store.blob_path(digest).unlink(missing_ok=True)
        raise


@contextmanager
def _staging(store: ImageStore) -> Iterator[Path]:
    store.root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=store.root, prefix=".load."))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def load(store: ImageStore, source: str) -> list[LoadedImage]:
    """Loads every image of the archive or layout `source` (`-`: stdin) into the store, or none."""
    with store.writing(), _staging(store) as staging:
        if source != "-" and Path(source).is_dir():
            archive = _Archive.from_directory(Path(source))
        else:
            try:
                stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
            except OSError as e:
                raise VmpodError(f"cannot read {source}: {e.strerror}") from None
            with stream:
                archive = _Archive.from_tar(stream, staging)
        index = archive.documents.get("index.json")
        if index is not None:
            plans = _oci_plans(archive, index)
        elif "manifest.json" in archive.documents:
            plans = _docker_plans(archive)
        else:
            raise _invalid("neither manifest.json (docker save) nor index.json (OCI layout) is in it")
        if not plans:
            raise _invalid("it holds no image")
        return _commit(store, plans)

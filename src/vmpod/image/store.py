"""The content-addressed image store: OCI blobs by digest, and names pointing at manifests.

Layout under `<root>/images/` (an OCI image layout, so registries, load and save fit in later):
`blobs/sha256/<hex>` holds manifests, configs and layers; `repositories.json` maps each full
reference (`docker.io/library/busybox:latest`) to its manifest digest. A blob is written to a temp
file, hashed while written, and renamed into place only when its digest is right, so an interrupted
write never leaves a half blob. The index is rewritten atomically under an `fcntl` lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vmpod.errors import VmpodError
from vmpod.image.config import RunConfig
from vmpod.image.reference import Reference
from vmpod.paths import StateDir, write_atomically

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
# Bounds on documents we parse (manifests and configs are small; layers are streamed).
MAX_DOCUMENT = 4 << 20
INCOMING_PREFIX = ".incoming."
_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise VmpodError(f"invalid digest {digest!r}")
    return hexpart


@dataclass(frozen=True)
class Image:
    """One image in the store."""

    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    layers: tuple[str, ...]  # layer blob digests, bottom first

    @property
    def id(self) -> str:
        """Docker's image ID: the digest of the config."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config.get("config"))


class ImageStore:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.root = state.images
        self.blobs = self.root / "blobs" / "sha256"
        self.index = self.root / "repositories.json"

    # --- blobs -------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            self.blobs.mkdir(parents=True, exist_ok=True)
            write_atomically(self.blob_path(digest), data, 0o444)
        return digest

    def put_stream(
        self,
        source: IO[bytes],
        expected: str | None = None,
        limit: int | None = None,
        verify: Callable[[Path], None] | None = None,
        size: int | None = None,
    ) -> str:
        """Copies a stream into the store, hashing as it goes; a wrong digest or a failed verify stores nothing."""
        return self.put_chunks(iter(lambda: source.read(_CHUNK), b""), expected, limit, verify, size)

    def put_chunks(
        self,
        chunks: Iterable[bytes],
        expected: str | None = None,
        limit: int | None = None,
        verify: Callable[[Path], None] | None = None,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> str:
        """Stores a blob arriving in chunks, checking digest and size while it streams.

        `size` is the exact length announced (by a manifest): more bytes stop the copy at once, fewer are
        reported as a truncated blob. Anything wrong stores nothing.
        """
        self.blobs.mkdir(parents=True, exist_ok=True)
        what = f"blob {expected}" if expected else "blob"
        hasher = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=INCOMING_PREFIX)
        try:
            written = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    written += len(chunk)
                    if limit is not None and written > limit:
                        raise VmpodError(f"{what} is larger than the limit of {limit} bytes")
                    if size is not None and written > size:
                        raise VmpodError(f"{what} is larger than the {size} bytes announced")
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if size is not None and written != size:
                raise VmpodError(f"{what} is truncated: {written} of {size} bytes")
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise VmpodError(f"digest mismatch: expected {expected}, got {digest}")
            if verify is not None:
                verify(Path(tmp))
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.blob_path(digest))
            return digest
        finally:
            Path(tmp).unlink(missing_ok=True)

    def read_document(self, digest: str) -> dict[str, Any]:
        path = self.blob_path(digest)
        if path.stat().st_size > MAX_DOCUMENT:
            raise VmpodError(f"blob {digest} is too large for a manifest or config")
        data = path.read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise VmpodError(f"blob {digest} is corrupted", "remove the image and import or pull it again")
        value = json.loads(data)
        if not isinstance(value, dict):
            raise VmpodError(f"blob {digest} is not a JSON object")
        return value

    # --- images ------------------------------------------------------------------------------------
    def add_image(self, config: dict[str, Any], layers: list[tuple[str, int]]) -> Image:
        """Writes config and manifest for layers already stored; returns the image."""
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = self.put_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": d, "size": s} for d, s in layers],
        }
        manifest_digest = self.put_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
        return self.image(manifest_digest)

    def image(self, manifest_digest: str) -> Image:
        manifest = self.read_document(manifest_digest)
        try:
            config_digest = manifest["config"]["digest"]
            layers = tuple(layer["digest"] for layer in manifest["layers"])
        except (KeyError, TypeError):
            raise VmpodError(f"manifest {manifest_digest} is malformed") from None
        return Image(manifest_digest, config_digest, self.read_document(config_digest), layers)

    # --- names -------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = self._names()
            before = dict(names)
            yield names
            if names != before:
                write_atomically(self.index, json.dumps(names, indent=1, sort_keys=True).encode())

    def _names(self) -> dict[str, str]:
        try:
            value = json.loads(self.index.read_bytes())
        except FileNotFoundError:
            return {}
        if not isinstance(value, dict):
            raise VmpodError(f"{self.index} is damaged", "remove it and import the images again")
        return {str(k): str(v) for k, v in value.items()}

    def tag(self, ref: Reference, image: Image) -> None:
        self.point([str(ref)], image.manifest_digest)

    def point(self, names: Iterable[str], manifest_digest: str) -> bool:
        """Makes each full name refer to a manifest already stored; True if anything changed."""
        with self._locked() as current:
            before = dict(current)
            current.update(dict.fromkeys(names, manifest_digest))
            return current != before

    def untag(self, names: Iterable[str]) -> None:
        with self._locked() as current:
            for name in names:
                current.pop(name, None)

    # --- garbage -----------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) while blobs are stored that no name refers to yet, so no collection removes them."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".gc.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def referenced(self) -> set[str]:
        """Every blob some name needs: index (a name's digest), manifest, config, layers."""
        keep: set[str] = set()
        for name, manifest_digest in self._names().items():
            _, _, pinned = name.partition("@")
            keep.update(d for d in (pinned, manifest_digest) if d)
            try:
                image = self.image(manifest_digest)
            except (OSError, VmpodError):
                continue  # a damaged image keeps what it has; its removal frees it
            keep.add(image.config_digest)
            keep.update(image.layers)
        return keep

    def collect_garbage(self) -> list[str]:
        """Deletes blobs no name refers to; returns their digests. Skipped while a pull or import runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".gc.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            keep = self.referenced()
            removed = []
            for path in self.blobs.iterdir() if self.blobs.is_dir() else []:
                digest = "sha256:" + path.name
                if path.name.startswith(INCOMING_PREFIX) or digest not in keep:
                    path.unlink(missing_ok=True)
                    if not path.name.startswith("."):
                        removed.append(digest)
            return removed

    def names(self) -> dict[str, str]:
        return self._names()

    def lookup(self, text: str) -> Image:
        """Finds an image by reference, full ID or unambiguous ID prefix, as Docker does."""
        names = self._names()
        candidate = text.removeprefix("sha256:")
        if len(candidate) >= 4 and all(c in "0123456789abcdef" for c in candidate):
            matches = {d for d in names.values() if self.image(d).id.removeprefix("sha256:").startswith(candidate)}
            if len(matches) == 1:
                return self.image(matches.pop())
        ref = Reference.parse(text)
        if str(ref) in names:
            return self.image(names[str(ref)])
        raise VmpodError(
            f"no such image: {text}",
            "import it with `vmpod import TARBALL NAME` and list images with `vmpod images`",
        )

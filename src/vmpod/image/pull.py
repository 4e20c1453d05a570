"""`vmpod pull`: an image from a registry into the store, verified, resumable, layers in parallel.

Order matters for consistency: layers and config first (each verified while it streams, each renamed
into place only when right), then the manifest and index bytes exactly as sent, then the names. A pull
cut short leaves only verified blobs, which the next pull does not download again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from vmpod.errors import VmpodError
from vmpod.image import credentials
from vmpod.image.manifest import Descriptor, Index, Manifest, Platform, parse_config, parse_document
from vmpod.image.reference import Reference
from vmpod.image.registry import Registry, RetryPolicy
from vmpod.image.store import Image, ImageStore

PARALLEL_LAYERS = 3
DEFAULT_RETRY = RetryPolicy()


class Progress(Protocol):
    """What a pull reports; called from several threads at once."""

    def resolved(self, ref: Reference, digest: str) -> None: ...

    def layer(self, descriptor: Descriptor, cached: bool) -> None: ...

    def restart(self, descriptor: Descriptor) -> None: ...

    def advance(self, descriptor: Descriptor, amount: int) -> None: ...

    def done(self, descriptor: Descriptor) -> None: ...


class Silent:
    """Reports nothing (`-q`, and library callers that do not care)."""

    def resolved(self, ref: Reference, digest: str) -> None:
        pass

    def layer(self, descriptor: Descriptor, cached: bool) -> None:
        pass

    def restart(self, descriptor: Descriptor) -> None:
        pass

    def advance(self, descriptor: Descriptor, amount: int) -> None:
        pass

    def done(self, descriptor: Descriptor) -> None:
        pass


@dataclass(frozen=True)
class PullOptions:
    platform: Platform | None = None  # None: the host's
    tls_verify: bool = True
    retry: RetryPolicy = DEFAULT_RETRY


@dataclass(frozen=True)
class PullResult:
    image: Image
    reference: Reference
    digest: str  # what the name resolved to: the index's digest for a multi-platform image
    updated: bool  # False: the name already pointed at this image and every blob was there


def _names(ref: Reference, digest: str) -> list[str]:
    pinned = f"{ref.name}@{digest}"
    return [pinned] if ref.digest else [str(ref), pinned]


def pull(
    store: ImageStore, text: str, options: PullOptions | None = None, progress: Progress | None = None
) -> PullResult:
    """Pulls `text` (Docker's reference rules) into the store and names it; returns the image."""
    options = options or PullOptions()
    progress = progress or Silent()
    ref = Reference.parse(text)
    wanted = options.platform or Platform.host()
    with (
        store.writing(),
        Registry(ref.domain, credentials.load(ref.domain), tls_verify=options.tls_verify, retry=options.retry) as reg,
    ):
        top = reg.manifest(ref.path, ref.digest or ref.tag or "latest")
        progress.resolved(ref, top.digest)
        document = parse_document(top.data, top.media_type)
        index_bytes: bytes | None = None
        manifest_bytes, manifest_digest = top.data, top.digest
        if isinstance(document, Index):
            chosen = document.select(wanted)
            index_bytes = top.data
            fetched = reg.manifest(ref.path, chosen.digest)
            if len(fetched.data) != chosen.size:
                raise VmpodError(
                    f"manifest {chosen.digest} is {len(fetched.data)} bytes, the manifest list says {chosen.size}"
                )
            document = parse_document(fetched.data, fetched.media_type)
            if isinstance(document, Index):
                raise VmpodError("nested manifest lists are not supported", f"pull {ref.name}@{chosen.digest}")
            manifest_bytes, manifest_digest = fetched.data, fetched.digest
        elif options.platform is not None:
            _check_platform(reg, ref, document, options.platform)
        missing = _fetch_config(store, reg, ref, document)
        missing |= _fetch_layers(store, reg, ref.path, document.layers, progress)
        if index_bytes is not None:
            store.put_bytes(index_bytes)
        store.put_bytes(manifest_bytes)
        image = store.image(manifest_digest)
        changed = store.point(_names(ref, top.digest), manifest_digest)
    return PullResult(image, ref, top.digest, changed or missing)


def _check_platform(reg: Registry, ref: Reference, manifest: Manifest, wanted: Platform) -> None:
    config = parse_config(reg.document(ref.path, manifest.config, "image config"), manifest)
    found = Platform(str(config.get("os", "")), str(config.get("architecture", "")), str(config.get("variant", "")))
    if not wanted.matches(found):
        raise VmpodError(f"image {ref} is for {found}, not {wanted}", "pull it without --platform, or another tag")


def _fetch_config(store: ImageStore, reg: Registry, ref: Reference, manifest: Manifest) -> bool:
    if store.has_blob(manifest.config.digest):
        parse_config(store.blob_path(manifest.config.digest).read_bytes(), manifest)
        return False
    data = reg.document(ref.path, manifest.config, "image config")
    parse_config(data, manifest)
    store.put_bytes(data)
    return True


def _fetch_layers(
    store: ImageStore, reg: Registry, repository: str, layers: tuple[Descriptor, ...], progress: Progress
) -> bool:
    """Downloads the layers not in the store yet, a few at a time; the first failure stops the rest."""
    todo = list(dict.fromkeys(d for d in layers if not store.has_blob(d.digest)))
    for descriptor in dict.fromkeys(layers):
        progress.layer(descriptor, cached=descriptor not in todo)
    failed = threading.Event()

    def fetch(descriptor: Descriptor) -> None:
        if failed.is_set():
            return
        try:
            reg.fetch_blob(
                repository,
                descriptor,
                store,
                progress=_advance(progress, descriptor),
                restart=lambda: progress.restart(descriptor),
            )
        except BaseException:
            failed.set()
            raise
        progress.done(descriptor)

    with ThreadPoolExecutor(max_workers=PARALLEL_LAYERS, thread_name_prefix="vmpod-pull") as pool:
        futures = [pool.submit(fetch, d) for d in todo]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return bool(todo)


def _advance(progress: Progress, descriptor: Descriptor) -> Callable[[int], None]:
    return lambda amount: progress.advance(descriptor, amount)


def ensure_image(
    store: ImageStore, text: str, options: PullOptions | None = None, progress: Progress | None = None
) -> Image:
    """The image `text` names, pulled first when the store lacks it, as `docker run` does."""
    try:
        return store.lookup(text)
    except VmpodError as missing:
        try:
            Reference.parse(text)
        except VmpodError:
            raise missing from None
        try:
            return pull(store, text, options, progress).image
        except VmpodError as e:
            raise VmpodError(f"no such image: {text}, and pulling it failed: {e.message}", e.hint) from None

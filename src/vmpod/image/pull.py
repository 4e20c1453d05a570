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
from typing import Any, Protocol

from vmpod.errors import VmpodError
from vmpod.image import credentials, registries
from vmpod.image.manifest import Descriptor, Index, Manifest, Platform, parse_config, parse_document
from vmpod.image.reference import Reference
from vmpod.image.registry import Registry, RetryPolicy
from vmpod.image.store import Image, ImageStore
from vmpod.rootfs.unpack import Limits, check_diff_id

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
    """Pulls `text` (Docker's reference rules) into the store and names it; returns the image.

    The configured mirrors of the name's registry are tried first, in order, then the registry itself
    (`registries.load`); a blocked registry is refused. Whatever a mirror sends is verified as a registry's.
    """
    options = options or PullOptions()
    progress = progress or Silent()
    ref = Reference.parse(text)
    sources = registries.load().sources(ref.domain, ref.path, by_digest=ref.digest is not None)
    with store.writing():
        failures: list[str] = []
        for source in sources:
            try:
                top_digest, manifest_digest, missing = _pull_from(store, source, ref, options, progress)
                break
            except VmpodError as e:
                if not source.mirror:
                    if failures:
                        raise VmpodError(f"{e.message} (mirrors tried first: {'; '.join(failures)})", e.hint) from None
                    raise
                failures.append(f"{source.domain}: {e.message}")
        else:  # pragma: no cover - the registry itself is always the last source
            raise VmpodError(f"no source to pull {ref} from")
        image = store.image(manifest_digest)
        changed = store.point(_names(ref, top_digest), manifest_digest)
    return PullResult(image, ref, top_digest, changed or missing)


def _pull_from(
    store: ImageStore, source: registries.Source, ref: Reference, options: PullOptions, progress: Progress
) -> tuple[str, str, bool]:
    """Fetches `ref` from one source into the store: (the name's digest, the manifest's digest, fetched any)."""
    wanted = options.platform or Platform.host()
    path = source.path
    with Registry(
        source.domain,
        credentials.load(source.domain),
        tls_verify=options.tls_verify,
        retry=options.retry,
        insecure=source.insecure,
    ) as reg:
        top = reg.manifest(path, ref.digest or ref.tag or "latest")
        progress.resolved(ref, top.digest)
        document = parse_document(top.data, top.media_type)
        index_bytes: bytes | None = None
        manifest_bytes, manifest_digest = top.data, top.digest
        if isinstance(document, Index):
            chosen = document.select(wanted)
            index_bytes = top.data
            fetched = reg.manifest(path, chosen.digest)
            if len(fetched.data) != chosen.size:
                raise VmpodError(
                    f"manifest {chosen.digest} is {len(fetched.data)} bytes, the manifest list says {chosen.size}"
                )
            document = parse_document(fetched.data, fetched.media_type)
            if isinstance(document, Index):
                raise VmpodError("nested manifest lists are not supported", f"pull {ref.name}@{chosen.digest}")
            manifest_bytes, manifest_digest = fetched.data, fetched.digest
        elif options.platform is not None:
            _check_platform(reg, path, ref, document, options.platform)
        missing, config = _fetch_config(store, reg, path, document)
        missing |= _fetch_layers(store, reg, path, document.layers, config["rootfs"]["diff_ids"], progress)
        if index_bytes is not None:
            store.put_bytes(index_bytes)
        store.put_bytes(manifest_bytes)
    return top.digest, manifest_digest, missing


def _check_platform(reg: Registry, path: str, ref: Reference, manifest: Manifest, wanted: Platform) -> None:
    config = parse_config(reg.document(path, manifest.config, "image config"), manifest)
    found = Platform(str(config.get("os", "")), str(config.get("architecture", "")), str(config.get("variant", "")))
    if not wanted.matches(found):
        raise VmpodError(f"image {ref} is for {found}, not {wanted}", "pull it without --platform, or another tag")


def _fetch_config(store: ImageStore, reg: Registry, path: str, manifest: Manifest) -> tuple[bool, dict[str, Any]]:
    """Whether the config had to be fetched, and the config (validated against the manifest)."""
    if store.has_blob(manifest.config.digest):
        return False, parse_config(store.blob_path(manifest.config.digest).read_bytes(), manifest)
    data = reg.document(path, manifest.config, "image config")
    config = parse_config(data, manifest)
    store.put_bytes(data)
    return True, config


def _fetch_layers(
    store: ImageStore,
    reg: Registry,
    repository: str,
    layers: tuple[Descriptor, ...],
    diff_ids: list[str],
    progress: Progress,
) -> bool:
    """Downloads the layers not in the store yet, a few at a time; the first failure stops the rest.

    Each downloaded layer is decompressed once more to check it against the config's `rootfs.diff_ids`
    under the decompression-bomb limits; one that fails is removed from the store again.
    """
    todo = list(dict.fromkeys(d for d in layers if not store.has_blob(d.digest)))
    expected: dict[str, set[str]] = {}
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        expected.setdefault(layer.digest, set()).add(str(diff_id))
    limits = Limits.from_env()
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
            try:
                for diff_id in expected[descriptor.digest]:
                    check_diff_id(store.blob_path(descriptor.digest), diff_id, limits, descriptor.digest)
            except BaseException:
                store.blob_path(descriptor.digest).unlink(missing_ok=True)
                raise
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

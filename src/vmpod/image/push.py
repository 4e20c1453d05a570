"""`vmpod push`: an image from the store to a registry, so that push → rmi → pull round-trips byte for byte.

Blobs go first (config and layers; those the registry has already are skipped after a `HEAD`), each in one
monolithic upload; the manifest goes last, exactly the bytes the store keeps, so its digest is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from vmpod.errors import VmpodError
from vmpod.image import credentials, registries
from vmpod.image.manifest import Descriptor, Index, parse_document
from vmpod.image.pull import Progress, Silent
from vmpod.image.reference import Reference
from vmpod.image.registry import Registry
from vmpod.image.store import ImageStore

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str  # of the manifest, as the registry now has it
    size: int  # of the manifest


def push(store: ImageStore, text: str, tls_verify: bool = True, progress: Progress | None = None) -> PushResult:
    """Pushes the image named `text` (NAME[:TAG], as stored) to its registry under the same name."""
    progress = progress or Silent()
    ref = Reference.parse(text)
    if ref.digest:
        raise VmpodError(f"cannot push a digest reference: {text}", "push NAME[:TAG]")
    image = store.lookup(str(ref))
    data = store.blob_path(image.manifest_digest).read_bytes()
    store.read_document(image.manifest_digest)  # checks the stored bytes against their digest
    document = parse_document(data, None)
    if isinstance(document, Index):
        raise VmpodError(f"{text} names a manifest list, which vmpod does not push")
    blobs = [document.config, *dict.fromkeys(document.layers)]
    for descriptor in blobs:
        if not store.has_blob(descriptor.digest):
            raise VmpodError(f"blob {descriptor.digest} of {text} is missing from the store", "pull the image again")
        if store.blob_path(descriptor.digest).stat().st_size != descriptor.size:
            raise VmpodError(f"blob {descriptor.digest} of {text} has the wrong size", "pull the image again")
    conf = registries.load()
    conf.check_allowed(ref.domain, ref.path)
    insecure = conf.insecure(ref.domain, ref.path)
    with Registry(ref.domain, credentials.load(ref.domain), tls_verify=tls_verify, insecure=insecure) as reg:
        progress.resolved(ref, image.manifest_digest)
        for descriptor in blobs:
            cached = reg.has_blob(ref.path, descriptor.digest)
            progress.layer(descriptor, cached)
            if cached:
                continue
            reg.upload_blob(
                ref.path,
                descriptor,
                partial(_chunks, store, descriptor, progress),
                restart=partial(progress.restart, descriptor),
            )
            progress.done(descriptor)
        digest = reg.put_manifest(ref.path, ref.tag or "latest", data, document.media_type.value)
    store.point([f"{ref.name}@{digest}"], image.manifest_digest)
    return PushResult(ref, digest, len(data))


def _chunks(store: ImageStore, descriptor: Descriptor, progress: Progress) -> Iterator[bytes]:
    with open(store.blob_path(descriptor.digest), "rb") as source:
        while chunk := source.read(_CHUNK):
            progress.advance(descriptor, len(chunk))
            yield chunk

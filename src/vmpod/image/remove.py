"""`vmpod rmi` and `vmpod tag`: names added and removed; blobs no name needs any more are deleted.

Layers shared between images are stored once, so a blob goes only when no remaining name refers to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vmpod.errors import VmpodError
from vmpod.image.reference import Reference
from vmpod.image.store import Image, ImageStore


@dataclass
class Removal:
    untagged: list[str] = field(default_factory=list)  # full names
    deleted: list[str] = field(default_factory=list)  # image IDs no name refers to any more
    blobs: list[str] = field(default_factory=list)


def tag(store: ImageStore, source: str, target: str) -> Image:
    """Gives the image `source` names another name, as `docker tag` does."""
    image = store.lookup(source)
    ref = Reference.parse(target)
    if ref.digest:
        raise VmpodError(f"cannot tag with a digest: {target}", "give NAME[:TAG]")
    store.point([str(ref)], image.manifest_digest)
    return image


def _image_id(store: ImageStore, manifest_digest: str) -> str | None:
    try:
        return store.image(manifest_digest).id
    except (OSError, VmpodError):
        return None


def remove_image(store: ImageStore, text: str, force: bool, in_use: Mapping[str, str]) -> Removal:
    """Removes a name, or every name of an image given by ID; `in_use` maps image IDs to a container using them."""
    names = store.names()
    ids = {name: _image_id(store, digest) for name, digest in names.items()}
    try:
        full = str(Reference.parse(text))
    except VmpodError:
        full = ""
    if full in names:
        chosen = [full]
        image_id = ids[full]
        # The last tag of an image takes its repository digests with it, as in Docker.
        if not any(i == image_id and "@" not in n and n != full for n, i in ids.items()):
            chosen += [n for n, i in ids.items() if i == image_id and "@" in n]
    else:
        image_id = store.lookup(text).id
        chosen = [n for n, i in ids.items() if i == image_id]
        repositories = {Reference.parse(n).name for n in chosen}
        if len(repositories) > 1 and not force:
            raise VmpodError(
                f"unable to delete {text}: the image is referenced in several repositories",
                "remove the names one by one, or use rmi -f",
            )
    remaining = {i for n, i in ids.items() if n not in chosen}
    deleted = image_id is not None and image_id not in remaining
    if deleted and image_id is not None and image_id in in_use and not force:
        raise VmpodError(
            f"unable to remove {text}: container {in_use[image_id][:12]} uses the image",
            "remove the container first, or use rmi -f",
        )
    store.untag(chosen)
    return Removal(
        untagged=chosen,
        deleted=[image_id] if deleted and image_id else [],
        blobs=store.collect_garbage(),
    )


@dataclass
class Pruned:
    removal: Removal
    reclaimed: int  # bytes of the blobs deleted


def prune(store: ImageStore, everything: bool, in_use: Mapping[str, str]) -> Pruned:
    """`vmpod image prune`: images without a name (all images no container uses, with `everything`), then
    blobs no name needs. Images in vmpod always have a name, except those loaded from an archive that gave
    none (kept under `load.UNNAMED`)."""
    from vmpod.image.load import UNNAMED

    names = store.names()
    ids = {name: _image_id(store, digest) for name, digest in names.items()}
    named = {i for n, i in ids.items() if not n.startswith(UNNAMED + "@")}
    chosen = [n for n, i in ids.items() if (i is None or i not in in_use) and (everything or i not in named)]
    deleted = list(dict.fromkeys(i for n, i in ids.items() if n in chosen and i is not None))
    sizes = {"sha256:" + p.name: p.stat().st_size for p in store.blobs.iterdir()} if store.blobs.is_dir() else {}
    store.untag(chosen)
    blobs = store.collect_garbage()
    return Pruned(Removal(untagged=chosen, deleted=deleted, blobs=blobs), sum(sizes.get(d, 0) for d in blobs))

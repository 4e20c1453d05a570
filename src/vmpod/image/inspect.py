"""`vmpod image inspect`: an image described as Docker describes it."""

from __future__ import annotations

from typing import Any

from vmpod.image.reference import Reference
from vmpod.image.store import Image, ImageStore


def _familiar(name: str) -> str:
    ref = Reference.parse(name)
    return ref.familiar_name + (f"@{ref.digest}" if ref.digest else f":{ref.tag}")


def inspect(store: ImageStore, image: Image) -> dict[str, Any]:
    tags: list[str] = []
    digests: list[str] = []
    for name, manifest_digest in sorted(store.names().items()):
        if store.image(manifest_digest).id != image.id:
            continue
        (digests if "@" in name else tags).append(_familiar(name))
    config = image.config
    found = config.get("rootfs")
    rootfs: dict[str, Any] = found if isinstance(found, dict) else {}
    info: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": config.get("created", ""),
        "Author": config.get("author", ""),
        "Config": image.run_config.to_dict(),
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": sum(store.blob_path(d).stat().st_size for d in image.layers),
        "RootFS": {"Type": rootfs.get("type", "layers"), "Layers": list(rootfs.get("diff_ids") or [])},
    }
    if config.get("variant"):
        info["Variant"] = config["variant"]
    return info

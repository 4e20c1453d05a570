"""Manifests and indexes as registries send them: Docker schema 2, OCI, manifest lists, OCI indexes.

Parsed from bounded bytes, validated field by field (a registry is untrusted), unknown fields tolerated.
The bytes themselves are what the store keeps, so digests stay those of the registry.
"""

from __future__ import annotations

import json
import platform as host_platform
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vmpod.errors import VmpodError
from vmpod.image.store import MAX_DOCUMENT, check_digest


class MediaType(StrEnum):
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"

    @property
    def is_index(self) -> bool:
        return self in (MediaType.DOCKER_LIST, MediaType.OCI_INDEX)


# What a pull asks for, best first; without it a registry may down-convert to schema 1.
ACCEPT = ", ".join(m.value for m in MediaType)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
# Layers vmpod can unpack: kept in the store exactly as sent, decompressed when the disk is built.
LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


def _bad(what: str) -> VmpodError:
    return VmpodError(f"the registry sent a malformed {what}", "the image or the registry is broken")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise VmpodError(f"invalid platform {text!r}", "use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
        return cls(parts[0], _ARCH_ALIASES.get(parts[1], parts[1]), parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        machine = host_platform.machine()
        return cls("linux", _ARCH_ALIASES.get(machine, machine))

    def _normal_variant(self) -> str:
        # arm64 images usually omit their only variant, v8.
        return "" if (self.architecture, self.variant) == ("arm64", "v8") else self.variant

    def matches(self, other: Platform) -> bool:
        """Whether an image for `other` satisfies a request for `self` (no variant asked: any variant)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or self._normal_variant() == other._normal_variant()

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    @classmethod
    def from_dict(cls, value: Any, what: str, limit: int | None = None) -> Descriptor:
        if not isinstance(value, dict):
            raise _bad(what)
        media_type, digest, size = value.get("mediaType", ""), value.get("digest"), value.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise _bad(what)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"{what} (size)")
        if limit is not None and size > limit:
            raise VmpodError(f"the registry announced a {what} of {size} bytes, more than the limit of {limit}")
        try:
            check_digest(digest)
        except VmpodError:
            raise VmpodError(f"unsupported or invalid digest {digest!r} in a {what}") from None
        found = value.get("platform")
        platform = None
        if found is not None:
            if not isinstance(found, dict) or not all(
                isinstance(found.get(k, ""), str) for k in ("os", "architecture", "variant")
            ):
                raise _bad(f"{what} (platform)")
            platform = Platform(found.get("os", ""), found.get("architecture", ""), found.get("variant", ""))
        return cls(media_type, digest, size, platform)

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class Manifest:
    media_type: MediaType
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: MediaType
    manifests: tuple[Descriptor, ...]

    def select(self, wanted: Platform) -> Descriptor:
        for descriptor in self.manifests:
            if descriptor.platform is not None and wanted.matches(descriptor.platform):
                return descriptor
        offered = ", ".join(str(d.platform) for d in self.manifests if d.platform is not None) or "none"
        raise VmpodError(
            f"no image for platform {wanted} in the manifest list",
            f"the image offers: {offered}; choose one with --platform",
        )


def _media_type(data: dict[str, Any], content_type: str | None) -> MediaType:
    announced = (content_type or "").split(";")[0].strip()
    inner = data.get("mediaType")
    if announced in SCHEMA1_TYPES or data.get("schemaVersion") == 1:
        raise VmpodError("the registry sent a schema 1 manifest, which vmpod does not support", "push the image again")
    for candidate in (inner, announced):
        if isinstance(candidate, str) and candidate in MediaType.__members__.values():
            chosen = MediaType(candidate)
            if isinstance(inner, str) and inner != chosen.value:
                raise _bad("manifest (its mediaType contradicts the Content-Type)")
            return chosen
    # OCI documents may omit mediaType: tell a manifest from an index by their fields.
    if "manifests" in data:
        return MediaType.OCI_INDEX
    if "config" in data and "layers" in data:
        return MediaType.OCI_MANIFEST
    raise VmpodError(f"unsupported manifest type {announced or inner!r}")


def parse_document(data: bytes, content_type: str | None) -> Manifest | Index:
    """A manifest or an index from the registry's bytes."""
    if len(data) > MAX_DOCUMENT:
        raise VmpodError(f"manifest is larger than the limit of {MAX_DOCUMENT} bytes")
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("manifest (not JSON)") from None
    if not isinstance(value, dict):
        raise _bad("manifest (not a JSON object)")
    media_type = _media_type(value, content_type)
    if value.get("schemaVersion") != 2:
        raise _bad("manifest (schemaVersion is not 2)")
    if media_type.is_index:
        entries = value.get("manifests")
        if not isinstance(entries, list):
            raise _bad("manifest list")
        return Index(media_type, tuple(Descriptor.from_dict(e, "manifest list entry", MAX_DOCUMENT) for e in entries))
    layers = value.get("layers")
    if not isinstance(layers, list):
        raise _bad("manifest (layers)")
    config = Descriptor.from_dict(value.get("config"), "image config", MAX_DOCUMENT)
    parsed = tuple(Descriptor.from_dict(layer, "layer") for layer in layers)
    for layer in parsed:
        if layer.media_type not in LAYER_TYPES:
            raise VmpodError(
                f"layer {layer.short} has an unsupported media type {layer.media_type!r}",
                "vmpod unpacks tar layers, plain, gzip or zstd",
            )
    return Manifest(media_type, config, parsed)


def parse_config(data: bytes, manifest: Manifest) -> dict[str, Any]:
    """The image config, checked against its manifest."""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("image config (not JSON)") from None
    if not isinstance(value, dict):
        raise _bad("image config (not a JSON object)")
    rootfs = value.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(manifest.layers):
        raise _bad("image config (rootfs.diff_ids does not match the manifest's layers)")
    if value.get("config") is not None and not isinstance(value.get("config"), dict):
        raise _bad("image config (config)")
    return value

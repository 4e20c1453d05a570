"""`vmpod import`: a root-filesystem tarball becomes a one-layer image, as `docker import` does."""

from __future__ import annotations

import bz2
import gzip
import lzma
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from vmpod.errors import VmpodError
from vmpod.image.config import DEFAULT_PATH, RunConfig, merge_env
from vmpod.image.reference import Reference
from vmpod.image.store import Image, ImageStore
from vmpod.rootfs.unpack import Limits, check_members

_MAGIC: list[tuple[bytes, Any]] = [
    (b"\x1f\x8b", gzip.GzipFile),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
    (b"BZh", bz2.BZ2File),
]


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    head = raw.peek(8)[:8] if hasattr(raw, "peek") else b""
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            stream: IO[bytes] = opener(fileobj=raw, mode="rb")
            return stream
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise VmpodError("zstd-compressed tarballs are not supported", "decompress it first with `zstd -d`")
    return raw


def _verify_tar(path: Path) -> None:
    try:
        with tarfile.open(path, mode="r:") as archive:
            check_members(archive, Limits())
    except tarfile.TarError as e:
        raise VmpodError(f"not a tar archive: {e}", "give a tarball of a root filesystem") from None


def import_tarball(store: ImageStore, source: str, name: str, changes: list[str]) -> Image:
    ref = Reference.parse(name)
    run_config = RunConfig()
    for change in changes:
        run_config = run_config.with_change(change)
    if not any(e.startswith("PATH=") for e in run_config.env):
        run_config = RunConfig.from_dict(
            {**run_config.to_dict(), "Env": list(merge_env((f"PATH={DEFAULT_PATH}",), list(run_config.env)))}
        )
    try:
        raw: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as e:
        raise VmpodError(f"cannot read {source}: {e.strerror}") from None
    with store.writing():  # no `rmi` collects the new layer before a name refers to it
        return _import(store, raw, source, ref, run_config)


def _import(store: ImageStore, raw: IO[bytes], source: str, ref: Reference, run_config: RunConfig) -> Image:
    with raw:
        try:
            layer = store.put_stream(_decompressed(raw), verify=_verify_tar)
        except (OSError, EOFError, lzma.LZMAError) as e:
            raise VmpodError(f"cannot read {source}: {e}") from None
    size = store.blob_path(layer).stat().st_size
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "config": run_config.to_dict(),
        "rootfs": {"type": "layers", "diff_ids": [layer]},
        "history": [{"created_by": "vmpod import", "comment": f"imported from {Path(source).name}"}],
    }
    image = store.add_image(config, [(layer, size)])
    store.tag(ref, image)
    return image

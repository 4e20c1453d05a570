"""Unpacks image layers onto a directory, refusing anything that would write outside it.

Not `tarfile.extractall`: its filters either refuse absolute symlinks (common in images) or follow
links when writing. Here every path component is checked with `lstat` before use, files are opened
with `O_NOFOLLOW | O_EXCL`, hard links must point at regular files inside the tree, and OCI whiteouts
are applied. Directory modes and times are set last, so a read-only directory does not stop its own
contents from being written.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

import zstandard

from vmpod.errors import VmpodError

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_CHUNK = 1 << 20


RATIO_ENV = "VMPOD_MAX_LAYER_RATIO"


@dataclass(frozen=True)
class Limits:
    """Bounds that stop decompression bombs and absurd archives.

    A layer may not decompress to more than `max_ratio` times its compressed size once past `ratio_floor`
    bytes (small layers of zeros compress extremely well and are harmless).
    """

    max_bytes: int = 64 << 30
    max_entries: int = 2_000_000
    max_ratio: int = 100
    ratio_floor: int = 1 << 30

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, with `$VMPOD_MAX_LAYER_RATIO` (`RATIO` or `RATIO:FLOOR_BYTES`) applied."""
        text = os.environ.get(RATIO_ENV, "").strip()
        if not text:
            return cls()
        ratio, _, floor = text.partition(":")
        try:
            return cls(max_ratio=int(ratio), ratio_floor=int(floor) if floor else cls.ratio_floor)
        except ValueError:
            raise VmpodError(f"${RATIO_ENV} must be RATIO or RATIO:FLOOR_BYTES, not {text!r}") from None


def entry_path(name: str) -> PurePosixPath:
    """The relative path an archive entry names; raises for anything that could leave the root."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise VmpodError(f"layer entry {name!r} has an absolute path", "the image is unsafe; rebuild it")
    if ".." in path.parts:
        raise VmpodError(f"layer entry {name!r} escapes the root with '..'", "the image is unsafe; rebuild it")
    return PurePosixPath(*[p for p in path.parts if p != "."])


def check_members(archive: tarfile.TarFile, limits: Limits | None = None) -> None:
    """Validates names, link targets and sizes without writing anything."""
    limits = limits or Limits.from_env()
    total = 0
    for count, member in enumerate(archive, 1):
        entry_path(member.name)
        if member.islnk():
            entry_path(member.linkname)
        total += member.size
        if count > limits.max_entries or total > limits.max_bytes:
            raise VmpodError("layer is too large to unpack", f"the limits are {limits}")


class _Unpacker:
    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.written = 0
        self.entries = 0
        # The last entry for a directory decides its metadata, as a later layer's does in Docker.
        self.dirs: dict[Path, tarfile.TarInfo] = {}

    def _inside(self, rel: PurePosixPath, what: str) -> Path:
        """The host path for rel, after checking that no existing parent component is a symlink."""
        current = self.root
        for part in rel.parts[:-1]:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                current.mkdir(mode=0o755)
                continue
            if stat.S_ISLNK(mode):
                raise VmpodError(f"layer entry {what!r} goes through a symlink", "the image is unsafe; rebuild it")
            if not stat.S_ISDIR(mode):
                raise VmpodError(f"layer entry {what!r} has a parent that is not a directory")
        return self.root / rel if rel.parts else self.root

    def _clear(self, path: Path) -> None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)
            # Whatever an earlier layer said about the removed directories no longer applies.
            self.dirs = {d: m for d, m in self.dirs.items() if d != path and path not in d.parents}
        else:
            path.unlink()

    def add(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise VmpodError("layer has too many entries", f"at most {self.limits.max_entries} are unpacked")
        rel = entry_path(member.name)
        name = rel.name
        if name == OPAQUE_WHITEOUT:
            directory = self._inside(rel, member.name).parent
            for child in list(directory.iterdir()) if directory.is_dir() else []:
                self._clear(child)
            return
        if name.startswith(WHITEOUT_PREFIX):
            self._clear(self._inside(rel, member.name).with_name(name[len(WHITEOUT_PREFIX) :]))
            return
        target = self._inside(rel, member.name)
        if member.isdir():
            if not (target.is_dir() and not target.is_symlink()):
                self._clear(target)
                target.mkdir(mode=0o700)
            self.dirs[target] = member
            return
        if target != self.root:
            self._clear(target)
        if member.isreg():
            self._write_file(archive, member, target)
        elif member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = self._inside(entry_path(member.linkname), member.linkname)
            if not stat.S_ISREG(os.lstat(source).st_mode):
                raise VmpodError(f"layer entry {member.name!r} is a hard link to a non-file")
            os.link(source, target, follow_symlinks=False)
            return  # a hard link shares its target's metadata
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        else:
            return  # sockets and unknown types are skipped, as Docker does
        self._metadata(target, member)

    def _write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        self.written += member.size
        if self.written > self.limits.max_bytes:
            raise VmpodError("layer is too large to unpack", f"at most {self.limits.max_bytes} bytes are unpacked")
        source = archive.extractfile(member)
        if source is None:
            raise VmpodError(f"layer entry {member.name!r} cannot be read")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)

    def _metadata(self, target: Path, member: tarfile.TarInfo) -> None:
        os.lchown(target, member.uid, member.gid)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                os.setxattr(
                    target, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"), follow_symlinks=False
                )
        if not member.issym():
            # chmod after chown: chown clears setuid/setgid bits.
            os.chmod(target, member.mode & 0o7777)
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

    def finish(self) -> None:
        # Deepest first, so a read-only directory is finished only after its contents.
        for target in sorted(self.dirs, key=lambda path: len(path.parts), reverse=True):
            if target.is_dir() and not target.is_symlink():  # a later layer may have removed or replaced it
                self._metadata(target, self.dirs[target])


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


class LayerStream(io.RawIOBase):
    """The decompressed bytes of a layer, counted and hashed as tarfile reads them.

    Refuses to go on past the ratio limit, so a bomb stops long before it fills the disk. `diff_id` is
    the sha256 of everything read; `drain` reads the rest (the tar's padding) so that it covers it all.
    """

    def __init__(self, source: BinaryIO, compressed: int, limits: Limits, name: str) -> None:
        super().__init__()
        self.source = source
        self.name = name
        self.read_bytes = 0
        self.hasher = hashlib.sha256()
        self.limit = max(limits.max_ratio * compressed, limits.ratio_floor) if compressed else limits.ratio_floor
        self.limits = limits

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """What tarfile calls: the decompressor's bytes, counted and hashed, without another copy."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        data = self.source.read(size)
        self._account(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.source.read(len(view))
        self._account(data)
        view[: len(data)] = data
        return len(data)

    def _account(self, data: bytes) -> None:
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise VmpodError(
                f"layer {self.name} decompresses to more than {self.limit} bytes, "
                f"over {self.limits.max_ratio} times its compressed size: refused as a decompression bomb",
                f"${RATIO_ENV} sets the ratio (RATIO or RATIO:FLOOR_BYTES)",
            )
        self.hasher.update(data)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _decompressed(raw: BinaryIO, head: bytes) -> BinaryIO:
    if head.startswith(ZSTD_MAGIC):
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    if head.startswith(GZIP_MAGIC):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if head.startswith(BZIP2_MAGIC):
        return cast(BinaryIO, bz2.BZ2File(raw, "rb"))
    if head.startswith(XZ_MAGIC):
        return cast(BinaryIO, lzma.LZMAFile(raw, "rb"))
    return raw


@contextmanager
def open_layer(layer: Path, limits: Limits | None = None) -> Iterator[tuple[tarfile.TarFile, LayerStream]]:
    """A layer blob as a tar archive read as a stream: plain, gzip, bzip2, xz or zstd, size-limited."""
    limits = limits or Limits.from_env()
    with open(layer, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        compressed = os.fstat(raw.fileno()).st_size
        with _decompressed(raw, head) as source:
            stream = LayerStream(source, compressed, limits, layer.name)
            # Streaming mode: members are read in order, as the unpacker does anyway.
            with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", bufsize=_CHUNK) as archive:
                yield archive, stream


def layer_diff_id(layer: Path, limits: Limits | None = None, name: str | None = None) -> str:
    """The uncompressed digest of a layer blob, read through the same bomb limits as unpacking."""
    limits = limits or Limits.from_env()
    what = name or layer.name
    with open(layer, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        try:
            with _decompressed(raw, head) as source:
                stream = LayerStream(source, os.fstat(raw.fileno()).st_size, limits, what)
                stream.drain()
        except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, zstandard.ZstdError) as e:
            raise VmpodError(f"layer {what} cannot be decompressed: {e}") from None
    return stream.diff_id


def check_diff_id(layer: Path, diff_id: str, limits: Limits | None = None, name: str | None = None) -> None:
    """Refuses a layer whose uncompressed content is not what the image config's `rootfs.diff_ids` says."""
    found = layer_diff_id(layer, limits, name)
    if found != diff_id:
        raise VmpodError(
            f"layer {name or layer.name} does not match the image config: its content is {found}, "
            f"rootfs.diff_ids says {diff_id}",
            "the image is corrupt or was tampered with",
        )


def unpack_layers(
    layers: Iterable[Path], root: Path, limits: Limits | None = None, diff_ids: Sequence[str] | None = None
) -> None:
    """Unpacks layers (tar; plain, gzip, bzip2, xz or zstd), bottom first, onto root.

    With `diff_ids` (the config's `rootfs.diff_ids`), each layer's uncompressed digest must match its own.
    """
    limits = limits or Limits.from_env()
    unpacker = _Unpacker(root, limits)
    paths = list(layers)
    if diff_ids is not None and len(diff_ids) != len(paths):
        raise VmpodError(f"the image config lists {len(diff_ids)} diff_ids for {len(paths)} layers")
    for number, layer in enumerate(paths):
        try:
            with open_layer(layer, limits) as (archive, stream):
                for member in archive:
                    unpacker.add(archive, member)
                stream.drain()
        except tarfile.TarError as e:
            raise VmpodError(f"layer {layer.name} is not a valid tar archive: {e}") from None
        except (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as e:
            if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.errno is not None:
                raise
            raise VmpodError(f"layer {layer.name} cannot be decompressed: {e}") from None
        if diff_ids is not None and stream.diff_id != diff_ids[number]:
            raise VmpodError(
                f"layer {layer.name} does not match the image config: its content is {stream.diff_id}, "
                f"rootfs.diff_ids says {diff_ids[number]}",
                "the image is corrupt or was tampered with",
            )
    unpacker.finish()

"""Unpacks image layers onto a directory, refusing anything that would write outside it.

Not `tarfile.extractall`: its filters either refuse absolute symlinks (common in images) or follow
links when writing. Here every path component is checked with `lstat` before use, files are opened
with `O_NOFOLLOW | O_EXCL`, hard links must point at regular files inside the tree, and OCI whiteouts
are applied. Directory modes and times are set last, so a read-only directory does not stop its own
contents from being written.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import zstandard

from vmpod.errors import VmpodError

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds that stop decompression bombs and absurd archives."""

    max_bytes: int = 64 << 30
    max_entries: int = 2_000_000


def entry_path(name: str) -> PurePosixPath:
    """The relative path an archive entry names; raises for anything that could leave the root."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise VmpodError(f"layer entry {name!r} has an absolute path", "the image is unsafe; rebuild it")
    if ".." in path.parts:
        raise VmpodError(f"layer entry {name!r} escapes the root with '..'", "the image is unsafe; rebuild it")
    return PurePosixPath(*[p for p in path.parts if p != "."])


def check_members(archive: tarfile.TarFile, limits: Limits = Limits()) -> None:
    """Validates names, link targets and sizes without writing anything."""
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


@contextmanager
def open_layer(layer: Path) -> Iterator[tarfile.TarFile]:
    """A layer blob as a tar archive: plain, gzip, bzip2, xz (tarfile detects them) or zstd."""
    with open(layer, "rb") as raw:
        if raw.read(4) != ZSTD_MAGIC:
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r:*") as archive:
                yield archive
            return
        raw.seek(0)
        # Streaming mode: members are read in order, as the unpacker does anyway.
        with (
            zstandard.ZstdDecompressor().stream_reader(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as archive,
        ):
            yield archive


def unpack_layers(layers: Iterable[Path], root: Path, limits: Limits = Limits()) -> None:
    """Unpacks layers (tar; plain, gzip, bzip2, xz or zstd), bottom first, onto root."""
    unpacker = _Unpacker(root, limits)
    for layer in layers:
        try:
            with open_layer(layer) as archive:
                for member in archive:
                    unpacker.add(archive, member)
        except tarfile.TarError as e:
            raise VmpodError(f"layer {layer.name} is not a valid tar archive: {e}") from None
        except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, zstandard.ZstdError) as e:
            raise VmpodError(f"layer {layer.name} cannot be decompressed: {e}") from None
    unpacker.finish()

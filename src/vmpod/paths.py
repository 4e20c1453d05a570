"""Where vmpod keeps things: the state directory (`--root`/`VMPOD_ROOT`) and the kernel cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/vmpod")
# Kernels are slow to build and independent of any state directory, so a fresh --root never rebuilds.
DEFAULT_KERNEL_CACHE = Path("/var/cache/vmpod/kernels")


def kernel_cache() -> Path:
    return Path(os.environ.get("VMPOD_KERNEL_CACHE", DEFAULT_KERNEL_CACHE))


@dataclass(frozen=True)
class StateDir:
    """The layout of one state directory."""

    root: Path

    @classmethod
    def resolve(cls, root: str | None) -> StateDir:
        chosen = root or os.environ.get("VMPOD_ROOT")
        if not chosen:
            # As Podman does: a system store for root, a per-user one otherwise.
            data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
            chosen = str(DEFAULT_ROOT if os.geteuid() == 0 else data_home / "vmpod")
        return cls(Path(chosen).absolute())

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def tmp(self) -> Path:
        # Scratch space on the same filesystem as its targets, so finished work is renamed into place.
        return self.root / "tmp"

    def ensure(self) -> None:
        for path in (self.root, self.images, self.disks, self.containers, self.cache, self.tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Writes a whole file or nothing: temp file in the same directory, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def scratch_dir(state: StateDir, prefix: str) -> Iterator[Path]:
    """A temporary directory under the state directory, removed however the block ends."""
    path = Path(tempfile.mkdtemp(dir=state.tmp, prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

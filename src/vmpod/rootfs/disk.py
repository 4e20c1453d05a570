"""Root-filesystem disks: one read-only ext4 image per image ID, one qcow2 overlay per container.

The ext4 image is built without mounting (`mke2fs -d`), sparse and without a journal, so a large
filesystem costs only the space of its contents. Containers write to a qcow2 overlay backed by it:
starting a container copies nothing and never changes the cached disk.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from vmpod.image.store import Image, ImageStore
from vmpod.paths import StateDir, scratch_dir
from vmpod.rootfs.unpack import unpack_layers
from vmpod.run import run

DISK_NAME = "root.ext4"
# Files read from the image at build time, so `--user NAME` resolves without opening the disk.
USER_DATABASES = ("etc/passwd", "etc/group")
MIN_DISK_BYTES = 8 << 30
_MKE2FS_HINT = "install e2fsprogs (apt-get install e2fsprogs)"
_QEMU_IMG_HINT = "install qemu-utils (apt-get install qemu-utils)"


@dataclass(frozen=True)
class BaseDisk:
    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / DISK_NAME

    def user_database(self, name: str) -> str:
        """The image's /etc/passwd or /etc/group ("" if it has none)."""
        try:
            return (self.directory / Path(name).name).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        total += 4096 * (len(dirnames) + 1)
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _copy_user_databases(tree: Path, out: Path) -> None:
    for rel in USER_DATABASES:
        source = tree / rel
        # Only a regular file directly in the tree: a symlink could point anywhere on the host.
        etc_is_real = (tree / "etc").is_dir() and not (tree / "etc").is_symlink()
        if etc_is_real and source.exists() and stat.S_ISREG(os.lstat(source).st_mode):
            (out / source.name).write_bytes(source.read_bytes()[: 4 << 20])


def base_disk(state: StateDir, store: ImageStore, image: Image) -> BaseDisk:
    """The image's cached disk, built on first use; concurrent builders wait for one another."""
    disk = BaseDisk(state.disks / image.id.removeprefix("sha256:"))
    if disk.path.is_file():
        return disk
    state.ensure()
    with open(state.disks / f".{disk.directory.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if disk.path.is_file():
            return disk
        with scratch_dir(state, "disk-") as scratch:
            tree, out = scratch / "tree", scratch / "out"
            tree.mkdir(mode=0o755)
            out.mkdir()
            diff_ids = image.config.get("rootfs", {}).get("diff_ids")
            unpack_layers([store.blob_path(d) for d in image.layers], tree, diff_ids=diff_ids)
            _copy_user_databases(tree, out)
            size = max(MIN_DISK_BYTES, 2 * _tree_size(tree) + (1 << 30))
            run(
                [
                    "mke2fs",
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-O",
                    "^has_journal",
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1",
                    "-d",
                    str(tree),
                    str(out / DISK_NAME),
                    str(size // 1024) + "k",
                ],
                hint=_MKE2FS_HINT,
            )
            os.chmod(out / DISK_NAME, 0o444)
            os.replace(out, disk.directory)
    return disk


def create_overlay(base: Path, path: Path) -> None:
    """A container's writable layer: a qcow2 file whose reads fall through to the base disk."""
    run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(path)],
        hint=_QEMU_IMG_HINT,
    )


def remove_base_disk(state: StateDir, image_id: str) -> None:
    """Deletes an image's cached disk (after `rmi`); only for images no container's overlay is backed by."""
    shutil.rmtree(state.disks / image_id.removeprefix("sha256:"), ignore_errors=True)

"""The guest's initramfs: the agent as /init plus the kernel modules it must load, written in-process.

A tiny cpio "newc" writer (no root, no external tool); the result is cached by content hash.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from vmpod.paths import write_atomically

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def write_newc(entries: list[Entry]) -> bytes:
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry(_TRAILER, 0)], 1):
        name = entry.name.encode() + b"\0"
        fields = [ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + _pad(len(header) + len(name)) + entry.data + _pad(len(entry.data))
    return bytes(out)


def build(agent: Path, modules: list[Path], cache_dir: Path) -> Path:
    """The initramfs for this agent and module list, from the cache when it is there."""
    agent_bytes = agent.read_bytes()
    module_bytes = [m.read_bytes() for m in modules]
    key = hashlib.sha256(agent_bytes + b"".join(hashlib.sha256(m).digest() for m in module_bytes)).hexdigest()
    path = cache_dir / f"initramfs-{key[:24]}.cpio"
    if path.is_file():
        return path
    entries = [Entry(d, stat.S_IFDIR | 0o755) for d in ("dev", "proc", "sys", "newroot", "modules")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("init", stat.S_IFREG | 0o755, agent_bytes))
    names = []
    for index, (module, data) in enumerate(zip(modules, module_bytes, strict=True)):
        name = f"modules/{index:02d}-{module.name}"
        names.append("/" + name)
        entries.append(Entry(name, stat.S_IFREG | 0o644, data))
    if names:
        entries.append(Entry("modules.list", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write_newc(entries))
    return path

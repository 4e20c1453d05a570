"""Volumes: `-v`, `--mount` and `--tmpfs` parsed as Docker does, and named volumes on the host.

Host directories reach the guest as 9p shares (QEMU's `virtio-9p-device`, passthrough ownership, so
files keep the uids the container gives them); named volumes are directories under
`<root>/volumes/<name>/_data` that outlive their containers.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vmpod.errors import VmpodError
from vmpod.paths import StateDir, write_atomically

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class MountSpec:
    """One mount in the container: a host directory (`bind`/`volume`) or a `tmpfs`."""

    kind: str  # "bind", "volume" or "tmpfs"
    target: str
    source: str = ""  # host path (bind/volume) or "" (tmpfs)
    readonly: bool = False
    options: str = ""  # tmpfs options: size=…, mode=…
    volume: str = ""  # the named volume, for `rm -v` and `volume rm` checks

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MountSpec:
        return cls(**data)


def is_anonymous(name: str) -> bool:
    """Anonymous volumes (`-v /path`) get a random 64-hex-digit name, as Docker's do."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _target(text: str) -> str:
    path = PurePosixPath(text)
    if not path.is_absolute() or ".." in path.parts:
        raise VmpodError(f"invalid mount target {text!r}", "use an absolute path inside the container")
    return str(path)


class VolumeStore:
    def __init__(self, state: StateDir) -> None:
        self.root = state.root / "volumes"

    def path(self, name: str) -> Path:
        return self.root / name / "_data"

    def create(self, name: str | None = None) -> str:
        name = name or secrets.token_hex(32)
        if not _NAME.match(name):
            raise VmpodError(f"invalid volume name {name!r}", "use letters, digits, '_', '.', '-'")
        directory = self.root / name
        if not (directory / "_data").is_dir():
            (directory / "_data").mkdir(parents=True, mode=0o755)
            write_atomically(directory / "volume.json", json.dumps({"Name": name, "CreatedAt": time.time()}).encode())
        return name

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/_data")) if self.root.is_dir() else []

    def inspect(self, name: str) -> dict[str, Any]:
        if name not in self.names():
            raise VmpodError(f"no such volume: {name}")
        return {"Name": name, "Driver": "local", "Mountpoint": str(self.path(name)), "Scope": "local"}

    def remove(self, name: str) -> None:
        if name not in self.names():
            raise VmpodError(f"no such volume: {name}")
        shutil.rmtree(self.root / name)


def parse_volume(text: str, volumes: VolumeStore) -> MountSpec:
    """`-v SRC:DST[:ro|rw]`, `-v NAME:DST`, or `-v DST` (an anonymous volume)."""
    parts = text.split(":")
    if len(parts) == 1:
        name = volumes.create()
        return MountSpec("volume", _target(parts[0]), str(volumes.path(name)), volume=name)
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw", "z", "Z")):
        raise VmpodError(f"invalid volume specification {text!r}", "use SRC:DST[:ro]")
    source, target = parts[0], _target(parts[1])
    readonly = len(parts) == 3 and parts[2] == "ro"
    if source.startswith("/"):
        if not Path(source).exists():
            Path(source).mkdir(parents=True)  # Docker creates a missing bind source for -v
        return MountSpec("bind", target, str(Path(source).resolve()), readonly)
    name = volumes.create(source)
    return MountSpec("volume", target, str(volumes.path(name)), readonly, volume=name)


def parse_mount(text: str, volumes: VolumeStore) -> MountSpec:
    """`--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…][,tmpfs-mode=…]`."""
    options: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        options[key.strip()] = value.strip() if value else "true"
    kind = options.pop("type", "volume")
    target = options.pop("target", options.pop("destination", options.pop("dst", "")))
    source = options.pop("source", options.pop("src", ""))
    readonly = options.pop("readonly", options.pop("ro", "false")) in ("true", "1")
    if not target:
        raise VmpodError(f"--mount {text!r} has no target", "add target=/PATH")
    if kind == "tmpfs":
        tmpfs = [f"size={options.pop('tmpfs-size')}"] if "tmpfs-size" in options else []
        tmpfs += [f"mode={options.pop('tmpfs-mode')}"] if "tmpfs-mode" in options else []
        return MountSpec("tmpfs", _target(target), readonly=readonly, options=",".join(tmpfs))
    if kind == "bind":
        if not source.startswith("/") or not Path(source).exists():
            raise VmpodError(f"bind source path does not exist: {source}", "create it, or give an absolute path")
        return MountSpec("bind", _target(target), str(Path(source).resolve()), readonly)
    if kind == "volume":
        name = volumes.create(source or None)
        return MountSpec("volume", _target(target), str(volumes.path(name)), readonly, volume=name)
    raise VmpodError(f"unsupported mount type {kind!r}", "use bind, volume or tmpfs")


def parse_tmpfs(text: str) -> MountSpec:
    """`--tmpfs /PATH[:OPTIONS]`."""
    target, _, options = text.partition(":")
    opts = [o for o in options.split(",") if o]
    readonly = "ro" in opts
    return MountSpec("tmpfs", _target(target), readonly=readonly, options=",".join(o for o in opts if o != "ro"))

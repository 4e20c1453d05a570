"""The runtime's record of each container: `<root>/<id>/state.json`, written atomically.

The pid is the container's supervisor (a host process that exits with the container's exit status);
it is stored with its start time, so a dead supervisor or a reused pid reads as `stopped`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from vmpod.container.state import alive, start_time
from vmpod.errors import VmpodError
from vmpod.paths import write_atomically

OCI_VERSION = "1.0.2"
STATE_NAME = "state.json"
DEFAULT_ROOT = Path("/run/vmpod-runtime")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.-]{0,1023}")


class Status(StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class NotFound(VmpodError):
    def __init__(self, container_id: str) -> None:
        super().__init__("container does not exist", exit_code=1)


@dataclass(frozen=True)
class Record:
    id: str
    bundle: str
    rootfs: str
    status: Status
    created: str
    pid: int = 0
    pid_start: int = 0
    exit_code: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            id=str(data["id"]),
            bundle=str(data["bundle"]),
            rootfs=str(data["rootfs"]),
            status=Status(data["status"]),
            created=str(data["created"]),
            pid=int(data.get("pid", 0)),
            pid_start=int(data.get("pid_start", 0)),
            exit_code=data.get("exit_code"),
            annotations=dict(data.get("annotations") or {}),
        )

    def current(self) -> Status:
        """The status now: a supervisor that is gone means the container stopped."""
        if self.status in (Status.CREATED, Status.RUNNING) and not alive(self.pid, self.pid_start):
            return Status.STOPPED
        if self.status is Status.CREATING and self.pid and not alive(self.pid, self.pid_start):
            return Status.STOPPED
        return self.status

    def oci_state(self) -> dict[str, Any]:
        """The runtime spec's state document (as `runc state` prints it)."""
        status = self.current()
        state: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status in (Status.CREATED, Status.RUNNING) else 0,
            "status": str(status if status is not Status.CREATING else Status.CREATED),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
        }
        if self.annotations:
            state["annotations"] = self.annotations
        return state


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, container_id: str) -> Path:
        if not _ID.fullmatch(container_id):
            raise VmpodError(f"invalid container id {container_id!r}", exit_code=1)
        return self.root / container_id

    def get(self, container_id: str) -> Record:
        try:
            data = json.loads((self.directory(container_id) / STATE_NAME).read_bytes())
        except FileNotFoundError:
            raise NotFound(container_id) from None
        except (OSError, ValueError, KeyError) as e:
            raise VmpodError(f"the state of container {container_id} is unreadable: {e}", exit_code=1) from None
        return Record.from_dict(data)

    def save(self, record: Record) -> None:
        write_atomically(self.directory(record.id) / STATE_NAME, json.dumps(record.to_dict()).encode(), 0o600)

    def update(self, record: Record, **changes: Any) -> Record:
        record = replace(record, **changes)
        self.save(record)
        return record

    def new(self, record: Record) -> Path:
        directory = self.directory(record.id)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise VmpodError(f"container with id exists: {record.id}", exit_code=1) from None
        self.save(record)
        return directory

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.directory(container_id), ignore_errors=True)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / STATE_NAME).is_file())


__all__ = ["DEFAULT_ROOT", "NotFound", "Record", "Status", "Store", "start_time", "timestamp"]

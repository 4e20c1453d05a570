"""Container records on disk: `<root>/containers/<id>/container.json`, written atomically."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from vmpod.errors import VmpodError
from vmpod.paths import StateDir, write_atomically

RECORD = "container.json"
OVERLAY = "overlay.qcow2"


class Status(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    EXITED = "exited"


@dataclass(frozen=True)
class RestartPolicy:
    """`--restart no|on-failure[:N]|always|unless-stopped`; a `vmpod stop` always wins."""

    name: str = "no"
    max_retries: int = 0

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, _, count = (text or "no").partition(":")
        if name not in ("no", "on-failure", "always", "unless-stopped") or (count and name != "on-failure"):
            raise VmpodError(f"invalid restart policy {text!r}", "use no, on-failure[:N], always or unless-stopped")
        if count and not count.isdigit():
            raise VmpodError(f"invalid restart count in {text!r}", "use on-failure:N with N a number")
        return cls(name, int(count or 0))

    def restarts(self, exit_code: int, restarts_so_far: int) -> bool:
        if self.name == "on-failure":
            return exit_code != 0 and (self.max_retries == 0 or restarts_so_far < self.max_retries)
        return self.name in ("always", "unless-stopped")


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image: str  # what the user asked for
    image_id: str
    command: tuple[str, ...]
    created: float
    disk: str = ""  # the image's base disk, which the container's overlay reads through
    status: Status = Status.CREATED
    pid: int = 0  # the process that owns the VM while it runs (vmpod run, or the supervisor)
    pid_start: int = 0  # that process's start time, to notice pid reuse
    exit_code: int | None = None
    finished: float = 0.0
    ports: tuple[str, ...] = ()  # published ports, as `ps` shows them
    vm_pid: int = 0  # the hypervisor, for `stats`
    started: float = 0.0
    restart_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["command"] = list(self.command)
        data["ports"] = list(self.ports)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerRecord:
        try:
            return cls(
                **{
                    **data,
                    "command": tuple(data["command"]),
                    "ports": tuple(data.get("ports", ())),
                    "status": Status(data["status"]),
                }
            )
        except (KeyError, TypeError, ValueError) as e:
            raise VmpodError(f"container record is damaged: {e}") from None


def new_id() -> str:
    return secrets.token_hex(32)


class ContainerStore:
    def __init__(self, state: StateDir) -> None:
        self.root = state.containers

    def directory(self, container_id: str) -> Path:
        return self.root / container_id

    def save(self, record: ContainerRecord) -> None:
        directory = self.directory(record.id)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(directory / RECORD, json.dumps(record.to_dict(), indent=1).encode(), 0o600)

    def update(self, record: ContainerRecord, **changes: Any) -> ContainerRecord:
        updated = replace(record, **changes)
        self.save(updated)
        return updated

    def all(self) -> list[ContainerRecord]:
        records = []
        for path in sorted(self.root.glob(f"*/{RECORD}")):
            try:
                record = ContainerRecord.from_dict(json.loads(path.read_bytes()))
            except (OSError, ValueError, VmpodError):
                continue
            if record.status in (Status.RUNNING, Status.RESTARTING) and not alive(record.pid, record.pid_start):
                record = replace(record, status=Status.EXITED)  # its owner died without saying so
            records.append(record)
        return sorted(records, key=lambda r: r.created, reverse=True)

    def get(self, container_id: str) -> ContainerRecord:
        return next(r for r in self.all() if r.id == container_id)

    def find(self, text: str) -> ContainerRecord:
        matches = [r for r in self.all() if r.name == text or r.id.startswith(text)]
        if len(matches) != 1 or not text:
            raise VmpodError(f"no such container: {text}" if not matches else f"ambiguous container: {text}")
        return matches[0]

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.directory(container_id), ignore_errors=True)

    def name_taken(self, name: str) -> bool:
        return any(r.name == name for r in self.all())


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it is gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return 0 if fields[0] in ("Z", "X") else int(fields[19])


def alive(pid: int, started: int = 0) -> bool:
    """Whether pid still names the process that had that start time (not a reused pid)."""
    if pid <= 0:
        return False
    now_started = start_time(pid)
    return now_started != 0 and (started == 0 or now_started == started)


def now() -> float:
    return time.time()

"""A container's log: every chunk its main process wrote, with the stream and the time, appended.

Records are binary (`stream u8 | time_ns u64 | length u32 | bytes`), so output of any kind is kept
exactly; `vmpod logs` turns them back into lines.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOG_NAME = "container.log"
_RECORD = struct.Struct(">BQI")
STDOUT, STDERR = 1, 2


@dataclass(frozen=True)
class Record:
    stream: int
    time_ns: int
    data: bytes


class LogWriter:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def write(self, stream: int, data: bytes) -> None:
        os.write(self._fd, _RECORD.pack(stream, time.time_ns(), len(data)) + data)

    def close(self) -> None:
        os.close(self._fd)


def read_records(path: Path, offset: int = 0) -> Iterator[tuple[Record, int]]:
    """Records from offset on, each with the offset after it; a record still being written is left out."""
    try:
        data = path.read_bytes()[offset:]
    except FileNotFoundError:
        return
    position = 0
    while len(data) - position >= _RECORD.size:
        stream, stamp, length = _RECORD.unpack_from(data, position)
        end = position + _RECORD.size + length
        if end > len(data):
            return
        yield Record(stream, stamp, data[position + _RECORD.size : end]), offset + end
        position = end


def lines(records: list[Record]) -> list[Record]:
    """Splits chunks into lines, each stamped with the time its chunk arrived (as Docker's json-file)."""
    out: list[Record] = []
    pending: dict[int, Record] = {}
    for record in records:
        data = (pending.pop(record.stream).data if record.stream in pending else b"") + record.data
        parts = data.split(b"\n")
        for part in parts[:-1]:
            out.append(Record(record.stream, record.time_ns, part + b"\n"))
        if parts[-1]:
            pending[record.stream] = Record(record.stream, record.time_ns, parts[-1])
    out.extend(pending.values())
    return out


def timestamp(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ns % 1_000_000_000:09d}Z"

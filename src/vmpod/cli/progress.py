"""How a pull shows its progress: bars per layer on a terminal (rich), plain lines otherwise."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from vmpod.image.manifest import Descriptor
from vmpod.image.pull import Silent
from vmpod.image.reference import Reference


def familiar(ref: Reference) -> str:
    return ref.familiar


class Lines(Silent):
    """One line per event, for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def resolved(self, ref: Reference, digest: str) -> None:
        self._say(f"{ref.tag or ref.digest}: Pulling from {ref.path}")

    def layer(self, descriptor: Descriptor, cached: bool) -> None:
        self._say(f"{descriptor.short}: {'Already exists' if cached else 'Pulling fs layer'}")

    def done(self, descriptor: Descriptor) -> None:
        self._say(f"{descriptor.short}: Pull complete")


class Bars(Lines):
    """A progress bar per layer (rich), on a terminal."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(file=out),
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def resolved(self, ref: Reference, digest: str) -> None:
        self.bars.console.print(f"{ref.tag or ref.digest}: Pulling from {ref.path}")

    def layer(self, descriptor: Descriptor, cached: bool) -> None:
        state = "Already exists" if cached else "Downloading"
        task = self.bars.add_task(f"{descriptor.short}: {state}", total=descriptor.size)
        self.tasks[descriptor.digest] = task
        if cached:
            self.bars.update(task, completed=descriptor.size)

    def restart(self, descriptor: Descriptor) -> None:
        self.bars.reset(self.tasks[descriptor.digest], total=descriptor.size)

    def advance(self, descriptor: Descriptor, amount: int) -> None:
        self.bars.advance(self.tasks[descriptor.digest], amount)

    def done(self, descriptor: Descriptor) -> None:
        self.bars.update(self.tasks[descriptor.digest], description=f"{descriptor.short}: Pull complete")


class _Quiet(Silent):
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def reporter(quiet: bool, out: TextIO | None = None) -> Lines | _Quiet:
    """The reporter that fits where the output goes: a context manager that is also a pull Progress."""
    out = out or sys.stderr
    if quiet:
        return _Quiet()
    return Bars(out) if out.isatty() else Lines(out)

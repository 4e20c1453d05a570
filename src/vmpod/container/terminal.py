"""The user's terminal during `run -t`: raw mode while attached, restored however the run ends."""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager


def size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on fd, or the classic 24x80."""
    try:
        columns, lines = os.get_terminal_size(fd)
        return lines, columns
    except OSError:
        return 24, 80


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

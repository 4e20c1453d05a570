"""The host process that stands for an exec'd process (`vmpod-runtime exec`).

Engines wait on the pid `exec --pid-file` names and signal it (containerd's shim, conmon): for a VM that
pid must be a host process. This one asks the container's supervisor to start the process in the guest
(the same `exec` request `vmpod exec` makes, container/exec_server.py), relays its stdio to the fds the
engine gave (or to a pty whose master went to `--console-socket`), forwards the signals it receives,
and exits when the process exits, with its status (128+N for signal N). If it is killed, the supervisor
kills the process in the guest (the connection closing is the sign).
"""

from __future__ import annotations

import asyncio
import os
import signal
import tty
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from vmpod.container import control, terminal
from vmpod.container.exec_client import relay
from vmpod.errors import VmpodError
from vmpod.guest.codec import encode_fields, encode_frame
from vmpod.guest.messages import Field, Message
from vmpod.guest.session import fd_sink
from vmpod.oci.shim import RESIZE_POLL_S, send_console, stdin_is_open, tolerant

# Signals an engine sends to "the process" that are the guest process's to get; as runc forwards.
_NOT_FORWARDED = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGWINCH, signal.SIGURG})
_FORWARDED = [s for s in signal.Signals if s not in _NOT_FORWARDED and s is not signal.SIGPIPE]

Ready = Callable[[dict[str, Any]], None]


def run(directory: Path, process: dict[str, Any], console_socket: str, ready: Ready | None) -> int:
    """Runs process in the container whose supervisor lives in directory; returns its exit status.
    ready is told once, as the process starts or fails to, with the same reply the supervisor gave."""
    use_tty = bool(process.get("terminal"))
    slave: int | None = None
    try:
        if use_tty:
            if not console_socket:
                raise VmpodError("process.terminal needs --console-socket", exit_code=1)
            master, slave = os.openpty()
            try:
                tty.setraw(slave)  # the guest's pty does the line discipline; this one only carries bytes
                send_console(console_socket, master, os.ttyname(slave))
            finally:
                os.close(master)
        rows, cols = terminal.size(slave) if slave is not None else (24, 80)
        request = {
            "op": "exec",
            "process": process,
            "interactive": use_tty or stdin_is_open(0),
            "rows": rows,
            "cols": cols,
        }
        sock = control.connect(directory)
    except VmpodError as e:
        if slave is not None:
            os.close(slave)
        if ready is not None:
            ready(control.error_reply(e))
        raise
    sink = fd_sink(slave, slave) if slave is not None else fd_sink()
    resize: list[asyncio.Task[None]] = []

    def started(writer: asyncio.StreamWriter) -> None:
        if ready is not None:
            ready({"ok": True, "pid": os.getpid()})
        loop = asyncio.get_running_loop()
        for signo in _FORWARDED:
            with suppress(OSError, RuntimeError, ValueError):
                loop.add_signal_handler(signo, _forward, writer, int(signo))
        if slave is not None:
            resize.append(asyncio.create_task(_follow_size(slave, writer, (rows, cols))))

    try:
        return asyncio.run(relay(sock, request, slave if slave is not None else 0, tolerant(sink), started))
    except VmpodError as e:
        if ready is not None:
            ready(control.error_reply(e))
        raise
    finally:
        if slave is not None:
            os.close(slave)


def _forward(writer: asyncio.StreamWriter, signo: int) -> None:
    with suppress(ConnectionError, RuntimeError):
        writer.write(encode_frame(Message.SIGNAL, 0, encode_fields([(Field.SIGNO, signo)])))


async def _follow_size(fd: int, writer: asyncio.StreamWriter, size: tuple[int, int]) -> None:
    """The engine sizes the master; this side only sees it change (no SIGWINCH without a session).
    size: what the guest was told, which the engine may have changed since."""
    while not writer.is_closing():
        await asyncio.sleep(RESIZE_POLL_S)
        now = terminal.size(fd)
        if now != size:
            size = now
            frame = encode_frame(Message.RESIZE, 0, encode_fields([(Field.ROWS, now[0]), (Field.COLS, now[1])]))
            with suppress(ConnectionError, RuntimeError):
                writer.write(frame)

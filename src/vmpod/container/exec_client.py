"""`vmpod exec` on the CLI side: asks the supervisor to start a process and relays its stdio."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from vmpod.container import control, terminal
from vmpod.errors import ExitCode
from vmpod.guest.codec import ProtocolError, decode_fields, decode_header, encode_fields, encode_frame
from vmpod.guest.messages import HEADER_SIZE, MAX_DATA, Field, Message
from vmpod.guest.session import ExitStatus, OutputSink, exit_code, fd_sink

_EXIT_FIELDS = frozenset({Field.EXIT_CODE, Field.EXIT_SIGNAL})


def exec_in(directory: Path, request: dict[str, Any]) -> int:
    """Runs the request's process in the container; returns its exit status as Docker does."""
    if request.get("tty") and os.isatty(0):
        request["rows"], request["cols"] = terminal.size(0)
    sock = control.connect(directory)
    return asyncio.run(relay(sock, request))


async def relay(
    sock: Any,
    request: dict[str, Any],
    stdin_fd: int = 0,
    write: OutputSink | None = None,
    started: Callable[[asyncio.StreamWriter], None] | None = None,
) -> int:
    """The relay: stdin_fd to the process, its output to write (our fds 1 and 2); started is called
    once the process runs, with the stream to send further frames (RESIZE, SIGNAL) on."""
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2 * MAX_DATA)
    try:
        writer.write(control.encode(request))
        control.raise_for(control.decode(await reader.readline()))
        if request.get("detach"):
            return 0
        loop = asyncio.get_running_loop()
        attached_tty = bool(request.get("tty")) and os.isatty(0) and started is None
        if request.get("interactive"):
            _pump_stdin(loop, writer, stdin_fd)
        if attached_tty:
            loop.add_signal_handler(signal.SIGWINCH, _send_size, writer)
        if started is not None:
            started(writer)
        write = write or fd_sink()
        with terminal.raw_mode(0) if attached_tty and request.get("interactive") else nullcontext():
            while True:
                try:
                    header = decode_header(await reader.readexactly(HEADER_SIZE))
                    payload = await reader.readexactly(header.length)
                except asyncio.IncompleteReadError:
                    raise ProtocolError("the supervisor ended the exec without its exit status") from None
                if header.type in (Message.STDOUT, Message.STDERR):
                    await write(0, header.type, payload)
                elif header.type is Message.EXIT:
                    fields = decode_fields(payload, _EXIT_FIELDS)
                    return exit_code(ExitStatus(fields.u32(Field.EXIT_CODE), fields.u32(Field.EXIT_SIGNAL)))
    except ProtocolError as e:  # the process's status is unknown: an engine error, said once, never a success
        print(f"vmpod: error: the exec broke: {e} (the container's supervisor.log says why)", file=sys.stderr)
        return ExitCode.ENGINE
    finally:
        writer.close()


def _send_size(writer: asyncio.StreamWriter) -> None:
    rows, cols = terminal.size(0)
    writer.write(encode_frame(Message.RESIZE, 0, encode_fields([(Field.ROWS, rows), (Field.COLS, cols)])))


def _pump_stdin(loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter, fd: int = 0) -> None:
    """Reads fd (our stdin) in a daemon thread; the socket's drain is the backpressure."""

    async def send(frame: bytes) -> None:
        writer.write(frame)
        await writer.drain()

    def forward() -> None:
        while True:
            try:
                data = os.read(fd, MAX_DATA)
            except OSError:
                data = b""
            frame = encode_frame(Message.STDIN, 0, data) if data else encode_frame(Message.STDIN_CLOSE, 0)
            try:
                asyncio.run_coroutine_threadsafe(send(frame), loop).result()
            except Exception:  # the exec ended
                return
            if not data:
                return

    threading.Thread(target=forward, name="stdin", daemon=True).start()

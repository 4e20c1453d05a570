"""The supervisor's control socket: one JSON request per connection, then frames for `exec`.

A request is one line of JSON (at most `MAX_REQUEST` bytes) and is answered by one line of JSON:
`{"ok": true, ...}` or `{"error": MESSAGE, "hint": HINT, "exit_code": N}`. After a successful `exec`
(without `detach`) the connection carries the agent protocol's frames (docs/protocol.md) for that one
process, with id 0: STDOUT, STDERR and finally EXIT from the supervisor; STDIN, STDIN_CLOSE, RESIZE and
SIGNAL from the client. The socket lives in the container's 0700 directory and is itself 0600.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmpod.errors import ExitCode, VmpodError

SOCKET_NAME = "control.sock"
ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MAX_REQUEST = 1 << 20


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
        raise VmpodError("control message too long or cut short")
    try:
        value = json.loads(line)
    except ValueError:
        raise VmpodError("control message is not JSON") from None
    if not isinstance(value, dict):
        raise VmpodError("control message is not a JSON object")
    return value


def error_reply(error: VmpodError) -> dict[str, Any]:
    return {"error": error.message, "hint": error.hint, "exit_code": error.exit_code}


def raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    if "error" in reply:
        raise VmpodError(str(reply["error"]), reply.get("hint"), int(reply.get("exit_code", ExitCode.ENGINE)))
    return reply


@contextmanager
def socket_path(directory: Path) -> Iterator[str]:
    """A short name for the socket: AF_UNIX paths are limited to 108 bytes, container paths are long."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


async def serve(directory: Path, handler: ClientHandler) -> asyncio.Server:
    """Listens on the directory's control socket, readable and writable by its owner only."""
    old_umask = os.umask(0o177)
    try:
        with socket_path(directory) as short_path:
            return await asyncio.start_unix_server(handler, path=short_path, limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)


def connect(directory: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_path(directory) as path:
            sock.connect(path)
    except OSError:
        sock.close()
        raise VmpodError("the container is not running", "start it, or see `vmpod ps -a`", ExitCode.ENGINE) from None
    return sock


def call(directory: Path, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Sends one request and waits for its answer (a stop may take as long as its grace period)."""
    with connect(directory) as sock:
        sock.settimeout(timeout)
        sock.sendall(encode(request))
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_REQUEST + 1)
    if not line:
        raise VmpodError("the container's supervisor went away")
    return raise_for(decode(line))

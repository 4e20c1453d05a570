"""The supervisors' side of `exec` on a control socket: one process in the VM relayed to one client.

Shared by the detached container's supervisor (`vmpod exec`) and the OCI runtime's (`vmpod-runtime
exec`). After the JSON answer the connection carries frames for that one process (control.py): its
output goes to the client as the client takes it (the agent is acknowledged only then, so flow control
runs end to end), the client's STDIN, STDIN_CLOSE, RESIZE and SIGNAL go to the process, and EXIT ends it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from typing import Any

from vmpod.container import control
from vmpod.container.vm import start_error
from vmpod.errors import VmpodError
from vmpod.guest.codec import ProtocolError, decode_fields, decode_header, encode_fields, encode_frame
from vmpod.guest.messages import HEADER_SIZE, MAX_DATA, Field, Message
from vmpod.guest.session import AgentError, AgentSession, ExitStatus, OutputSink, ProcessSpec

_CLIENT_FIELDS = frozenset({Field.ROWS, Field.COLS, Field.SIGNO})
TOP_TITLES = ["PID", "PPID", "USER", "STAT", "COMMAND"]
TOP_COMMAND = ["ps", "-o", "pid,ppid,user,stat,args"]
log = logging.getLogger("vmpod")


async def _discard(process: int, kind: Message, data: bytes) -> None:
    return None


def exit_fields(status: ExitStatus) -> list[tuple[Field, int]]:
    if status.signal is not None:
        return [(Field.EXIT_SIGNAL, status.signal)]
    return [(Field.EXIT_CODE, status.code or 0)]


async def serve_exec(
    session: AgentSession,
    spec: ProcessSpec,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    detach: bool = False,
    kill_on_close: bool = False,
) -> None:
    """Starts spec and relays it to the client until it exits. kill_on_close: a client that goes away
    takes the process with it (the OCI runtime's exec process stands for it on the host)."""
    client_gone = asyncio.Event()
    replied = asyncio.Event()

    async def to_client(process: int, kind: Message, data: bytes) -> None:
        await replied.wait()  # output can arrive before the JSON answer went out: it must follow it
        # A client that went away must not stall or end the container: its output is dropped.
        if client_gone.is_set():
            return
        try:
            writer.write(encode_frame(kind, 0, data))
            await writer.drain()
        except ConnectionError:
            client_gone.set()

    sink: OutputSink = _discard if detach else to_client
    try:
        handle = await session.exec(spec, sink)
    except AgentError as e:
        replied.set()
        raise start_error(e) from None
    writer.write(control.encode({"ok": True}))
    replied.set()
    if detach:
        return
    await writer.drain()
    garbled = asyncio.Event()
    pump = asyncio.create_task(
        from_client(session, reader, handle, client_gone, kill_on_close=kill_on_close, garbled=garbled)
    )
    try:
        status = await session.wait_exit(handle)
    finally:
        pump.cancel()
    if garbled.is_set():  # no EXIT: the client must report a broken stream, not a (killed) process's status
        writer.close()
        return
    writer.write(encode_frame(Message.EXIT, 0, encode_fields(exit_fields(status))))


async def from_client(
    session: AgentSession,
    reader: asyncio.StreamReader,
    handle: int,
    gone: asyncio.Event,
    close_stdin: bool = True,
    kill_on_close: bool = False,
    garbled: asyncio.Event | None = None,
) -> None:
    """The client's frames to process `handle`, until the client goes away. A client that sends what is
    not a frame it may send has broken its stream: with `garbled` given (exec), the process is killed
    and garbled set, so that a stdin cut short never ends in a clean EOF and a status of success."""
    try:
        while True:
            header = decode_header(await reader.readexactly(HEADER_SIZE))
            payload = await reader.readexactly(header.length)
            if header.type is Message.STDIN and len(payload) <= MAX_DATA:
                await session.send_stdin(payload, handle)
            elif header.type is Message.STDIN_CLOSE:
                await session.close_stdin(handle)
            elif header.type is Message.RESIZE:
                fields = decode_fields(payload, _CLIENT_FIELDS)
                with suppress(AgentError):
                    await session.resize(fields.u32(Field.ROWS) or 24, fields.u32(Field.COLS) or 80, handle)
            elif header.type is Message.SIGNAL:
                with suppress(AgentError):
                    await session.signal(decode_fields(payload, _CLIENT_FIELDS).u32(Field.SIGNO) or 15, handle)
            else:
                raise ProtocolError(f"unexpected {header.type.name} from a client")
    except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as e:
        gone.set()
        if isinstance(e, ProtocolError):
            log.warning("a client broke its stream to process %d: %s", handle, e)
            if garbled is not None:
                garbled.set()
        with suppress(AgentError, ProtocolError):
            if kill_on_close or (garbled is not None and garbled.is_set()):
                await session.signal(signal.SIGKILL, handle)
            elif close_stdin:  # a detaching `attach` leaves the container's stdin open, as Docker does
                await session.close_stdin(handle)


async def guest_processes(session: AgentSession, spec: ProcessSpec) -> dict[str, Any]:
    """`ps` in the guest (spec runs TOP_COMMAND), without the guest kernel's threads and the agent."""
    output: list[bytes] = []

    async def collect(process: int, kind: Message, data: bytes) -> None:
        if kind is Message.STDOUT and sum(map(len, output)) < MAX_DATA * 16:
            output.append(data)

    try:
        handle = await session.exec(spec, collect)
    except AgentError as e:
        raise VmpodError(f"top needs `ps` in the image: {e.message}") from None
    await session.wait_exit(handle)
    lines = b"".join(output).decode(errors="replace").splitlines()
    rows = [line.split(None, len(TOP_TITLES) - 1) for line in lines[1:]]
    own = " ".join(TOP_COMMAND)
    processes = [
        r for r in rows if len(r) == len(TOP_TITLES) and not r[-1].startswith("[") and r[-1] not in ("/init", own)
    ]
    return {"ok": True, "titles": TOP_TITLES, "processes": processes}

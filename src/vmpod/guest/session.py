"""The host side of one agent connection: requests, stdio streams with flow control, the exit status.

Everything read from the socket is hostile: frames are bounded before they are read, decoded
strictly, and any violation ends the session with `ProtocolError`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from vmpod.errors import ExitCode
from vmpod.guest.codec import (
    FieldValue,
    ProtocolError,
    decode_fields,
    decode_header,
    encode_fields,
    encode_frame,
)
from vmpod.guest.messages import (
    HEADER_SIZE,
    MAIN_PROCESS,
    MAX_DATA,
    PROTOCOL_VERSION,
    STREAM_WINDOW,
    Field,
    Message,
)

log = logging.getLogger("vmpod")
_REPLY_FIELDS = frozenset({Field.PID, Field.ERRNO, Field.MESSAGE})
_ACK_FIELDS = frozenset({Field.COUNT})
_EXIT_FIELDS = frozenset({Field.EXIT_CODE, Field.EXIT_SIGNAL})
_READY_FIELDS = frozenset({Field.PROTO_VERSION, Field.AGENT_VERSION})
# Bytes of host entropy each MACHINE gives the guest's random pool (the agent takes up to 64).
SEED_BYTES = 64
# START fields that EXEC does not take: the container's root and name are set once.
_ROOT_ONLY = frozenset(
    {
        Field.ROOT_DEVICE,
        Field.ROOT_FSTYPE,
        Field.ROOT_READONLY,
        Field.HOSTNAME,
        Field.MOUNT,
        Field.FILE,
        Field.NET_ADDRESS,
        Field.NET_GATEWAY,
    }
)


@dataclass(frozen=True)
class ProcessSpec:
    """What START asks of the agent (docs/protocol.md, START)."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    terminal: bool
    stdin_open: bool
    root_device: str
    root_fstype: str = "ext4"
    root_readonly: bool = False
    hostname: str = ""
    rows: int = 24
    cols: int = 80
    mounts: tuple[str, ...] = ()  # MOUNT values: TYPE\tSOURCE\tTARGET\tOPTIONS
    files: tuple[str, ...] = ()  # FILE values: PATH\tMODE\tCONTENT
    net_address: str = ""
    net_gateway: str = ""
    rlimits: tuple[str, ...] = ()  # RLIMIT values: NAME\tSOFT\tHARD
    no_new_privs: bool = False
    caps: str | None = None  # CAPS: five TAB-separated lists; None leaves capabilities as they are

    def fields(self) -> list[tuple[Field, FieldValue]]:
        out: list[tuple[Field, FieldValue]] = [
            (Field.ROOT_DEVICE, self.root_device),
            (Field.ROOT_FSTYPE, self.root_fstype),
            (Field.ROOT_READONLY, int(self.root_readonly)),
        ]
        if self.hostname:
            out.append((Field.HOSTNAME, self.hostname))
        out += [(Field.MOUNT, m) for m in self.mounts]
        out += [(Field.FILE, f) for f in self.files]
        if self.net_address:
            out.append((Field.NET_ADDRESS, self.net_address))
        if self.net_gateway:
            out.append((Field.NET_GATEWAY, self.net_gateway))
        out += [(Field.ARG, a) for a in self.args]
        out += [(Field.ENV, e) for e in self.env]
        out += [(Field.CWD, self.cwd), (Field.UID, self.uid), (Field.GID, self.gid)]
        out += [(Field.GROUP, g) for g in self.groups]
        out += [(Field.TERMINAL, int(self.terminal)), (Field.ROWS, self.rows), (Field.COLS, self.cols)]
        out.append((Field.STDIN_OPEN, int(self.stdin_open)))
        out += [(Field.RLIMIT, r) for r in self.rlimits]
        if self.no_new_privs:
            out.append((Field.NO_NEW_PRIVS, 1))
        if self.caps is not None:
            out.append((Field.CAPS, self.caps))
        return out


def machine_fields(mac: str = "") -> list[tuple[Field, FieldValue]]:
    """MACHINE's values at this moment: the host's clock, fresh entropy and, for a VM with a NIC, its MAC."""
    fields: list[tuple[Field, FieldValue]] = [
        (Field.TIME, str(time.time_ns())),
        (Field.SEED, os.urandom(SEED_BYTES).hex()),
    ]
    if mac:
        fields.append((Field.MAC, mac))
    return fields


@dataclass(frozen=True)
class ExitStatus:
    code: int | None = None
    signal: int | None = None


def exit_code(status: ExitStatus) -> int:
    """The status as Docker reports it: the process's code, or 128+N when signal N killed it."""
    if status.signal is not None:
        return ExitCode.SIGNAL_BASE + status.signal
    return status.code if status.code is not None else ExitCode.ENGINE


class AgentError(Exception):
    """The agent answered a request with ERROR."""

    def __init__(self, errno_value: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_value
        self.message = message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


OutputSink = Callable[[int, Message, bytes], Awaitable[None]]


def fd_sink(stdout_fd: int = 1, stderr_fd: int = 2) -> OutputSink:
    """Writes every process's output to two fds (a foreground `vmpod run`)."""
    fds = {Message.STDOUT: stdout_fd, Message.STDERR: stderr_fd}

    async def write(process: int, kind: Message, data: bytes) -> None:
        # A blocking write is the backpressure: a slow reader of our stdout slows the guest down.
        _write_all(fds[kind], data)

    return write


class _Process:
    """Host-side state of one process handle."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: OutputSink) -> None:
        self.sink = sink
        self.exit: asyncio.Future[ExitStatus] = loop.create_future()
        self.exit.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody may be waiting
        self.stdin_credit = STREAM_WINDOW


class AgentSession:
    def __init__(self, sock: socket.socket, sink: OutputSink | None = None) -> None:
        self._sock = sock
        self._sink = sink or fd_sink()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._ready: asyncio.Future[str] | None = None
        self._processes: dict[int, _Process] = {}
        self._credit_changed: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self.agent_version = ""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader, self._writer = await asyncio.open_connection(sock=self._sock, limit=2 * MAX_DATA)
        self._ready = loop.create_future()
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._processes[MAIN_PROCESS] = _Process(loop, self._sink)
        self._credit_changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()

    # --- requests ----------------------------------------------------------------------------------
    async def wait_ready(self) -> str:
        assert self._ready is not None
        return await self._ready

    async def _request(self, kind: Message, fields: Iterable[tuple[Field, FieldValue]] = ()) -> int:
        ident = self._next_id
        self._next_id += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._send(kind, ident, encode_fields(fields))
        return await future

    async def start(self, spec: ProcessSpec) -> int:
        """Starts the container's main process; returns its guest pid or raises AgentError."""
        return await self._request(Message.START, spec.fields())

    async def exec(self, spec: ProcessSpec, sink: OutputSink | None = None) -> int:
        """Starts a further process in the running container; returns its handle for the calls below."""
        handle = max(self._processes) + 1
        self._processes[handle] = _Process(asyncio.get_running_loop(), sink or self._sink)
        fields = [(Field.PROCESS, handle), *((t, v) for t, v in spec.fields() if t not in _ROOT_ONLY)]
        try:
            await self._request(Message.EXEC, fields)
        except BaseException:
            del self._processes[handle]
            raise
        return handle

    async def signal(self, signo: int, process: int = MAIN_PROCESS) -> None:
        await self._request(Message.SIGNAL, [(Field.PROCESS, process), (Field.SIGNO, signo)])

    async def resize(self, rows: int, cols: int, process: int = MAIN_PROCESS) -> None:
        await self._request(Message.RESIZE, [(Field.PROCESS, process), (Field.ROWS, rows), (Field.COLS, cols)])

    async def machine(self, mac: str = "") -> None:
        """Sets the guest's clock, reseeds its random pool and sets its MAC (docs/protocol.md, MACHINE)."""
        await self._request(Message.MACHINE, machine_fields(mac))

    async def shutdown(self) -> None:
        await self._request(Message.SHUTDOWN)

    async def wait_exit(self, process: int = MAIN_PROCESS) -> ExitStatus:
        return await self._processes[process].exit

    # --- stdin -------------------------------------------------------------------------------------
    async def send_stdin(self, data: bytes, process: int = MAIN_PROCESS) -> None:
        """Sends stdin bytes, waiting for the agent's acknowledgements to stay inside the window."""
        assert self._credit_changed is not None
        state = self._processes[process]
        for offset in range(0, len(data), MAX_DATA):
            chunk = data[offset : offset + MAX_DATA]
            size = len(chunk)
            async with self._credit_changed:
                await self._credit_changed.wait_for(lambda size=size: state.stdin_credit >= size)  # type: ignore[misc]
                state.stdin_credit -= size
            await self._send(Message.STDIN, process, chunk)

    async def close_stdin(self, process: int = MAIN_PROCESS) -> None:
        await self._send(Message.STDIN_CLOSE, process)

    def pump_stdin(self, fd: int, process: int = MAIN_PROCESS) -> None:
        """Forwards fd to the process from a daemon thread: any kind of fd, never blocking the loop."""
        loop = asyncio.get_running_loop()

        def forward() -> None:
            while True:
                try:
                    data = os.read(fd, MAX_DATA)
                except OSError:
                    data = b""
                coroutine = self.send_stdin(data, process) if data else self.close_stdin(process)
                try:
                    asyncio.run_coroutine_threadsafe(coroutine, loop).result()
                except Exception:  # the session ended; nothing left to feed
                    return
                if not data:
                    return

        threading.Thread(target=forward, name="stdin", daemon=True).start()

    # --- the wire ----------------------------------------------------------------------------------
    async def _send(self, kind: Message, ident: int, payload: bytes = b"") -> None:
        assert self._writer is not None
        if kind is not Message.STDIN and kind is not Message.OUTPUT_ACK:
            log.debug("agent <- %s id=%d", kind.name, ident)
        self._writer.write(encode_frame(kind, ident, payload))
        await self._writer.drain()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                try:
                    header = decode_header(await self._reader.readexactly(HEADER_SIZE))
                    payload = await self._reader.readexactly(header.length)
                except asyncio.IncompleteReadError:
                    raise ProtocolError("the agent closed the connection") from None
                if header.type not in (Message.STDOUT, Message.STDERR):
                    log.debug("agent -> %s id=%d %r", header.type.name, header.id, payload[:200])
                await self._dispatch(header.type, header.id, payload)
        except (ProtocolError, OSError) as e:
            self._fail(e if isinstance(e, ProtocolError) else ProtocolError(str(e)))

    def _fail(self, error: ProtocolError) -> None:
        futures: list[asyncio.Future[int] | asyncio.Future[str] | asyncio.Future[ExitStatus] | None]
        futures = [*self._pending.values(), self._ready, *(p.exit for p in self._processes.values())]
        for future in futures:
            if future is not None and not future.done():
                future.set_exception(error)
        self._pending.clear()

    def _live(self, kind: Message, ident: int) -> _Process:
        process = self._processes.get(ident)
        if process is None or process.exit.done():
            raise ProtocolError(f"{kind.name} for unknown process {ident}")
        return process

    async def _dispatch(self, kind: Message, ident: int, payload: bytes) -> None:
        assert self._ready is not None and self._credit_changed is not None
        if kind in (Message.STDOUT, Message.STDERR):
            process = self._live(kind, ident)
            if len(payload) > MAX_DATA:
                raise ProtocolError("stream frame too large")
            await process.sink(ident, kind, payload)
            await self._send(Message.OUTPUT_ACK, ident, encode_fields([(Field.COUNT, len(payload))]))
        elif kind is Message.STDIN_ACK:
            process = self._live(kind, ident)
            count = decode_fields(payload, _ACK_FIELDS).u32(Field.COUNT) or 0
            async with self._credit_changed:
                if process.stdin_credit + count > STREAM_WINDOW:
                    raise ProtocolError("the agent acknowledged more stdin than was sent")
                process.stdin_credit += count
                self._credit_changed.notify_all()
        elif kind in (Message.OK, Message.ERROR):
            fields = decode_fields(payload, _REPLY_FIELDS)
            future = self._pending.pop(ident, None)
            if future is None:
                if kind is Message.ERROR:
                    raise ProtocolError(f"agent error: {fields.text(Field.MESSAGE)}")
                raise ProtocolError(f"answer to unknown request {ident}")
            if kind is Message.OK:
                future.set_result(fields.u32(Field.PID) or 0)
            else:
                future.set_exception(
                    AgentError(fields.u32(Field.ERRNO) or errno.EIO, fields.text(Field.MESSAGE, 512) or "")
                )
        elif kind is Message.READY:
            fields = decode_fields(payload, _READY_FIELDS)
            version = fields.u32(Field.PROTO_VERSION)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"agent speaks protocol {version}, vmpod speaks {PROTOCOL_VERSION}")
            self.agent_version = fields.text(Field.AGENT_VERSION, 64) or ""
            if not self._ready.done():
                self._ready.set_result(self.agent_version)
        elif kind is Message.EXIT:
            fields = decode_fields(payload, _EXIT_FIELDS)
            self._live(kind, ident).exit.set_result(
                ExitStatus(fields.u32(Field.EXIT_CODE), fields.u32(Field.EXIT_SIGNAL))
            )
        else:
            raise ProtocolError(f"unexpected message {kind.name} from the agent")


def request_blocking(
    sock: socket.socket, kind: Message, fields: list[tuple[Field, FieldValue]], timeout: float
) -> None:
    """One request on a channel no session owns yet, answered OK or raising AgentError, ProtocolError or
    TimeoutError. The only frame the agent may send meanwhile is the answer."""
    ident = 1
    deadline = time.monotonic() + timeout
    sock.sendall(encode_frame(kind, ident, encode_fields(fields)))

    def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the agent did not answer {kind.name} within {timeout:.0f} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(size - len(data))
            except TimeoutError:
                continue
            if not chunk:
                raise ProtocolError("the agent closed the connection")
            data += chunk
        return data

    try:
        header = decode_header(read_exactly(HEADER_SIZE))
        payload = read_exactly(header.length)
    finally:
        sock.settimeout(None)
    if header.type not in (Message.OK, Message.ERROR) or header.id != ident:
        raise ProtocolError(f"expected the answer to {kind.name}, got {header.type.name} id={header.id}")
    answer = decode_fields(payload, _REPLY_FIELDS)
    if header.type is Message.ERROR:
        raise AgentError(answer.u32(Field.ERRNO) or errno.EIO, answer.text(Field.MESSAGE, 512) or "")

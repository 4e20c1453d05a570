"""`vmpod run` in the foreground: one container, one VM, for as long as the command runs.

The user's terminal is attached: stdio streams to and from the process, signals and window sizes are
forwarded. (`vmpod run -d` hands the VM to a supervisor instead: `container/supervisor.py`.)
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from vmpod.container import terminal
from vmpod.container.logs import LOG_NAME, STDERR, STDOUT, LogWriter
from vmpod.container.state import OVERLAY, ContainerStore, Status
from vmpod.container.vm import (
    Prepared,
    RunningVm,
    RunOptions,
    create_container_disk,
    exit_code,
    launch,
    open_disk,
    plan_vm,
    prepare,
    shutdown,
    start_process,
)
from vmpod.errors import VmpodError
from vmpod.guest.codec import ProtocolError
from vmpod.guest.messages import Message
from vmpod.guest.session import AgentError, AgentSession, OutputSink, fd_sink
from vmpod.paths import StateDir

# Signals a user sends to `vmpod run` that reach the container process (Docker's --sig-proxy).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run_container(state: StateDir, options: RunOptions) -> int:
    """Runs the container in the foreground and returns its exit status (Docker's codes on failure)."""
    prepared = prepare(state, options)
    containers = ContainerStore(state)
    container_id = prepared.record.id
    with ExitStack() as stack:
        directory = create_container_disk(containers, prepared)
        if options.remove or options.dry_run:
            stack.callback(containers.remove, container_id)
        else:
            prepared.save(directory)  # what it was made of, for `rm -v`, `start` and `inspect`
            containers.save(prepared.record)
        disk = open_disk(stack, directory / OVERLAY)
        if options.dry_run:
            sockets = {share.tag: prepared.socket_name(share.tag) for share in prepared.virtiofs_shares()}
            print(shlex.join(plan_vm(state, prepared, -1, disk, quiet=True, sockets=sockets).argv))
            return 0
        if options.remove:
            containers.remove(container_id)  # QEMU gets the fds: nothing of the container stays on disk
        vm = launch(stack, state, prepared, disk)
        if not options.remove:
            containers.update(prepared.record, status=Status.RUNNING, pid=os.getpid())
        code: int | None = None
        try:
            log = None if options.remove else stack.enter_context(_log_writer(directory / LOG_NAME))
            code = asyncio.run(_attached(vm, prepared, options, log))
        except ProtocolError as e:
            raise VmpodError(f"the VM failed: {e}", vm.console_hint()) from None
        finally:
            if not options.remove:
                containers.update(prepared.record, status=Status.EXITED, pid=0, exit_code=code)
        return code


@contextmanager
def _log_writer(path: Path) -> Iterator[LogWriter]:
    writer = LogWriter(path)
    try:
        yield writer
    finally:
        writer.close()


def _tee(log: LogWriter | None) -> OutputSink:
    """Output to the user's terminal and, for a kept container, to its log (`vmpod logs` works after)."""
    to_terminal = fd_sink()

    async def write(process: int, kind: Message, data: bytes) -> None:
        await to_terminal(process, kind, data)
        if log is not None:
            log.write(STDOUT if kind is Message.STDOUT else STDERR, data)

    return write


async def _attached(vm: RunningVm, prepared: Prepared, options: RunOptions, log: LogWriter | None) -> int:
    session = AgentSession(vm.channel, _tee(log))
    await session.open()
    try:
        async with vm.serve_dns():
            return await _run_process(session, vm, prepared, options)
    finally:
        await session.close()


async def _run_process(session: AgentSession, vm: RunningVm, prepared: Prepared, options: RunOptions) -> int:
    process = prepared.process
    await start_process(session, vm)
    loop = asyncio.get_running_loop()
    attached_tty = process.terminal and os.isatty(0)
    with (
        terminal.raw_mode(0) if attached_tty and options.interactive else nullcontext(),
        _signals_forwarded(loop, session, attached_tty),
    ):
        if options.interactive:
            session.pump_stdin(0)
        status = await session.wait_exit()
    vm.phases.mark("exited")
    # A removed container's disk is already unlinked: nothing to sync, so no clean shutdown.
    if not options.remove:
        await shutdown(session, vm)
    return exit_code(status)


@contextmanager
def _signals_forwarded(loop: asyncio.AbstractEventLoop, session: AgentSession, tty: bool) -> Iterator[None]:
    tasks: set[asyncio.Task[None]] = set()

    def in_background(coroutine: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(_quietly(coroutine))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def forward(signo: int) -> None:
        in_background(session.signal(signo))

    def resize() -> None:
        rows, cols = terminal.size(0)
        in_background(session.resize(rows, cols))

    handled = list(FORWARDED_SIGNALS)
    for signo in handled:
        loop.add_signal_handler(signo, forward, signo)
    if tty:
        loop.add_signal_handler(signal.SIGWINCH, resize)
        handled.append(signal.SIGWINCH)
    try:
        yield
    finally:
        for signo in handled:
            loop.remove_signal_handler(signo)


async def _quietly(coroutine: Coroutine[Any, Any, None]) -> None:
    """A request whose failure changes nothing (the process may just have exited)."""
    with suppress(AgentError, ProtocolError):
        await coroutine

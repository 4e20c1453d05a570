"""The supervisor of one detached container: owns its VM, keeps its log and exit status, serves the CLI.

Started by `vmpod run -d` as `python -m vmpod.container.supervisor --root ROOT [--ready-fd N] ID` in a
new session, it outlives the CLI (as conmon or a containerd shim does). QEMU dies with it
(PR_SET_PDEATHSIG), so a hypervisor never runs without the process that owns its container. On the
ready fd it reports once, as one JSON line, whether the container started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from vmpod.container import control
from vmpod.container.exec_server import TOP_COMMAND, exit_fields, from_client, guest_processes, serve_exec
from vmpod.container.logs import LOG_NAME, STDERR, STDOUT, LogWriter
from vmpod.container.state import OVERLAY, RECORD, ContainerStore, RestartPolicy, Status, now, start_time
from vmpod.container.users import resolve_user
from vmpod.container.vm import (
    Prepared,
    RunningVm,
    exit_code,
    launch,
    open_disk,
    shutdown,
    start_process,
)
from vmpod.errors import ExitCode, VmpodError
from vmpod.guest.codec import ProtocolError, encode_fields, encode_frame
from vmpod.guest.messages import MAIN_PROCESS, Message
from vmpod.guest.session import AgentError, AgentSession, ProcessSpec
from vmpod.image.config import merge_env
from vmpod.paths import StateDir
from vmpod.rootfs.disk import BaseDisk

log = logging.getLogger("vmpod")
KILL_WAIT_S = 10.0
ATTACH_BUFFER = 4 << 20


class _Reporter:
    """Tells the starting CLI, once, whether the container started."""

    fd: int | None = None

    @classmethod
    def report(cls, message: dict[str, Any]) -> None:
        if cls.fd is not None:
            with suppress(OSError):
                os.write(cls.fd, control.encode(message))
                os.close(cls.fd)
            cls.fd = None


_report = _Reporter.report


class Supervisor:
    def __init__(self, state: StateDir, prepared: Prepared, vm: RunningVm) -> None:
        self.containers = ContainerStore(state)
        self.prepared = prepared
        self.directory = self.containers.directory(prepared.record.id)
        self.vm = vm
        self.log = LogWriter(self.directory / LOG_NAME)
        self.session = AgentSession(vm.channel, self._to_log)
        self.clients: set[asyncio.Task[None]] = set()
        self.attached: set[asyncio.StreamWriter] = set()  # `vmpod attach` clients: live output
        self.stopped = False  # by `vmpod stop`: no restart policy brings it back

    async def _to_log(self, process: int, kind: Message, data: bytes) -> None:
        self.log.write(STDOUT if kind is Message.STDOUT else STDERR, data)
        for writer in list(self.attached):
            # The log is the record; an attached client that does not keep up is dropped, not waited for.
            if writer.transport.get_write_buffer_size() > ATTACH_BUFFER:
                self.attached.discard(writer)
                writer.close()
            else:
                writer.write(encode_frame(kind, 0, data))

    async def run(self) -> int:
        await self.session.open()
        try:
            async with self.vm.serve_dns():
                return await self._run()
        finally:
            await self.session.close()
            self.log.close()

    async def _run(self) -> int:
        try:
            await start_process(self.session, self.vm)
        except ProtocolError as e:
            raise VmpodError(f"the VM failed: {e}", self.vm.console_hint()) from None
        path = self.directory / control.SOCKET_NAME
        server = await control.serve(self.directory, self._client)
        me = os.getpid()
        record = self.containers.get(self.prepared.record.id)
        self.containers.update(
            record, status=Status.RUNNING, pid=me, pid_start=start_time(me), vm_pid=self.vm.qemu.pid, started=now()
        )
        _report({"ok": True})
        try:
            status = await self.session.wait_exit()
        except ProtocolError as e:  # the hypervisor died, or the guest broke the protocol
            log.warning("the VM failed: %s (%s)", e, self.vm.console_hint())
            server.close()
            path.unlink(missing_ok=True)
            return ExitCode.ENGINE
        self.vm.phases.mark("exited")
        server.close()
        path.unlink(missing_ok=True)
        # A `stop` that caused the exit still owes its caller an answer.
        if self.clients:
            await asyncio.wait(list(self.clients), timeout=2)
        await shutdown(self.session, self.vm)
        return exit_code(status)

    # --- clients -----------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
            task.add_done_callback(self.clients.discard)
        try:
            request = control.decode(await reader.readline())
            op = request.get("op")
            if op == "stop":
                await self._stop(float(request.get("timeout", 10)))
                writer.write(control.encode({"ok": True}))
            elif op == "kill":
                await self.session.signal(int(request.get("signal", signal.SIGKILL)))
                writer.write(control.encode({"ok": True}))
            elif op == "exec":
                await self._exec(request, reader, writer)
            elif op == "attach":
                await self._attach(reader, writer)
            elif op == "top":
                writer.write(control.encode(await self._top()))
            else:
                raise VmpodError(f"unknown control request {op!r}")
        except VmpodError as e:
            writer.write(control.encode(control.error_reply(e)))
        except AgentError as e:
            writer.write(control.encode(control.error_reply(VmpodError(e.message))))
        except (ValueError, TypeError, KeyError) as e:
            writer.write(control.encode(control.error_reply(VmpodError(f"bad control request: {e}"))))
        except (ConnectionError, asyncio.IncompleteReadError, ProtocolError):
            pass
        finally:
            with suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def _stop(self, timeout: float) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after the grace period, as `docker stop`."""
        self.stopped = True
        main_exit = asyncio.shield(self.session.wait_exit())
        for signo, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, KILL_WAIT_S)):
            with suppress(AgentError):
                await self.session.signal(signo)
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(main_exit), wait)
                return

    def _exec_spec(self, request: dict[str, Any]) -> ProcessSpec:
        main = self.prepared.process
        args = request["args"]
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise VmpodError("exec needs a command", "give a command after the container")
        uid, gid, groups = main.uid, main.gid, main.groups
        home = next((e[5:] for e in main.env if e.startswith("HOME=")), "/")
        if request.get("user"):
            disk = BaseDisk(Path(self.prepared.record.disk).parent)
            user = resolve_user(str(request["user"]), disk.user_database("passwd"), disk.user_database("group"))
            uid, gid, groups, home = user.uid, user.gid, user.groups, user.home
        env = merge_env(main.env, [str(e) for e in request.get("env", [])])
        if request.get("user"):
            env = merge_env(env, [f"HOME={home}"])
        return ProcessSpec(
            args=tuple(args),
            env=env,
            cwd=str(request.get("workdir") or main.cwd),
            uid=uid,
            gid=gid,
            groups=groups,
            terminal=bool(request.get("tty")),
            stdin_open=bool(request.get("interactive")),
            root_device="",
            rows=int(request.get("rows", 24)),
            cols=int(request.get("cols", 80)),
        )

    async def _exec(self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_exec(self.session, self._exec_spec(request), reader, writer, bool(request.get("detach")))

    async def _top(self) -> dict[str, Any]:
        """The container's processes (`ps` in the guest), without the guest kernel's threads and the agent."""
        return await guest_processes(self.session, self._exec_spec({"args": TOP_COMMAND}))

    async def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Live output of the main process from now on, and the client's input to it, until it exits."""
        writer.write(control.encode({"ok": True}))
        self.attached.add(writer)
        pump = asyncio.create_task(from_client(self.session, reader, MAIN_PROCESS, asyncio.Event(), close_stdin=False))
        try:
            status = await self.session.wait_exit()
        finally:
            pump.cancel()
            self.attached.discard(writer)
        writer.write(encode_frame(Message.EXIT, 0, encode_fields(exit_fields(status))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmpod-supervisor")
    parser.add_argument("--root", required=True)
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("container_id")
    args = parser.parse_args(argv)
    state = StateDir(Path(args.root))
    containers = ContainerStore(state)
    directory = containers.directory(args.container_id)
    logging.basicConfig(
        filename=directory / "supervisor.log",
        format="%(asctime)s %(message)s",
        level=logging.DEBUG if args.debug else logging.WARNING,
    )
    _Reporter.fd = args.ready_fd
    prepared = Prepared.load(directory)
    policy = RestartPolicy.parse(prepared.restart)
    code: int = ExitCode.ENGINE
    restarts = 0
    try:
        while True:
            supervisor = None
            try:
                with ExitStack() as stack:
                    vm = launch(stack, state, prepared, open_disk(stack, directory / OVERLAY), quiet=True)
                    supervisor = Supervisor(state, prepared, vm)
                    code = asyncio.run(supervisor.run())
            except VmpodError as e:
                _report(control.error_reply(e))
                log.warning("%s", e)
                code = e.exit_code
            stopped = supervisor is not None and supervisor.stopped
            if stopped or not (directory / RECORD).exists() or not policy.restarts(code, restarts):
                break
            restarts += 1
            containers.update(containers.get(args.container_id), status=Status.RESTARTING, restart_count=restarts)
            time.sleep(min(0.1 * 2**restarts, 10))  # Docker's growing delay between restarts
    except Exception as e:  # a bug: still tell the waiting CLI, and keep the traceback in the log
        _report(control.error_reply(VmpodError(f"the supervisor failed: {e}")))
        log.exception("the supervisor failed")
    finally:
        if prepared.remove:
            containers.remove(args.container_id)
        elif (directory / RECORD).exists():  # unless `rm -f` removed it meanwhile
            record = containers.get(args.container_id)
            containers.update(record, status=Status.EXITED, pid=0, vm_pid=0, exit_code=code, finished=now())
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`vmpod run`: one container, one VM, for as long as the command runs.

The VM is owned by this process: QEMU dies with it (PR_SET_PDEATHSIG) and gets every file as an
inherited fd, so a `vmpod run` killed with SIGKILL leaves no process, socket or temp file behind.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from vmpod.container import terminal
from vmpod.container.spec import ProcessRequest, argv, environment, working_dir
from vmpod.container.state import OVERLAY, ContainerRecord, ContainerStore, Status, new_id, now
from vmpod.container.users import resolve_user
from vmpod.errors import ExitCode, VmpodError
from vmpod.guest.codec import ProtocolError
from vmpod.guest.session import AgentError, AgentSession, ExitStatus, ProcessSpec
from vmpod.hypervisor import accel
from vmpod.hypervisor.base import DiskSpec, VmSpec
from vmpod.hypervisor.qemu import QemuDriver
from vmpod.image.store import ImageStore
from vmpod.kernel import Kernel, cmdline, find_kernel
from vmpod.paths import StateDir
from vmpod.rootfs import initramfs
from vmpod.rootfs.disk import base_disk, create_overlay
from vmpod.run import spawn

log = logging.getLogger("vmpod")

# Memory the guest kernel and agent need on top of what the container asked for.
GUEST_OVERHEAD_MIB = 64
DEFAULT_MEMORY_MIB = 512
BOOT_TIMEOUT_S = float(os.environ.get("VMPOD_BOOT_TIMEOUT", "120"))
SHUTDOWN_GRACE_S = 2.0
ROOT_DEVICE = "/dev/vda"
# Signals a user sends to `vmpod run` that reach the container process (Docker's --sig-proxy).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class RunOptions:
    image: str
    process: ProcessRequest
    interactive: bool = False
    remove: bool = False
    name: str = ""
    cpus: float | None = None
    memory_bytes: int | None = None
    kernel: str | None = None
    dry_run: bool = False


def agent_binary() -> Path:
    override = os.environ.get("VMPOD_AGENT")
    path = Path(override) if override else Path(str(resources.files("vmpod") / "data" / "vmpod-agent"))
    if not path.is_file():
        raise VmpodError(f"the guest agent {path} is missing", "build it with `make agent`")
    return path


def _vm_size(options: RunOptions) -> tuple[int, int]:
    vcpus = max(1, math.ceil(options.cpus)) if options.cpus else 1
    if options.cpus is not None and options.cpus <= 0:
        raise VmpodError(f"invalid --cpus {options.cpus}", "give a positive number")
    memory = DEFAULT_MEMORY_MIB
    if options.memory_bytes is not None:
        if options.memory_bytes < 6 << 20:
            raise VmpodError("minimum memory limit allowed is 6MB", "give --memory 6m or more")
        memory = math.ceil(options.memory_bytes / (1 << 20)) + GUEST_OVERHEAD_MIB
    return vcpus, memory


def _exit_code(status: ExitStatus) -> int:
    if status.signal is not None:
        return ExitCode.SIGNAL_BASE + status.signal
    return status.code if status.code is not None else ExitCode.ENGINE


def _start_error(error: AgentError) -> VmpodError:
    if error.errno == errno.ENOENT:
        return VmpodError(error.message, "check the command and the image's PATH", ExitCode.NOT_FOUND)
    if error.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return VmpodError(error.message, "the command must be an executable file", ExitCode.NOT_EXECUTABLE)
    return VmpodError(f"the container could not start: {error.message}")


class ContainerRun:
    """Everything one `vmpod run` holds, released by one ExitStack."""

    def __init__(self, state: StateDir, options: RunOptions) -> None:
        self.state = state
        self.options = options
        self.images = ImageStore(state)
        self.containers = ContainerStore(state)

    def execute(self) -> int:
        options = self.options
        image = self.images.lookup(options.image)
        config = image.run_config
        request = options.process
        if options.name and self.containers.name_taken(options.name):
            raise VmpodError(f"the container name {options.name!r} is already in use", "choose another --name")
        command = argv(config, request)
        cwd = working_dir(config, request)
        vcpus, memory = _vm_size(options)
        kernel = find_kernel(options.kernel)
        choice = accel.choose()
        if choice.warning and not options.dry_run:
            print(f"vmpod: warning: {choice.warning}", file=sys.stderr)
        self.state.ensure()
        disk = base_disk(self.state, self.images, image)
        user = resolve_user(request.user or config.user, disk.user_database("passwd"), disk.user_database("group"))
        container_id = new_id()
        hostname = request.hostname or container_id[:12]
        process_request = ProcessRequest(**{**request.__dict__, "hostname": hostname})
        stdin_tty = options.process.tty and os.isatty(0)
        rows, cols = terminal.size(0) if stdin_tty else (24, 80)
        process = ProcessSpec(
            args=command,
            env=environment(config, process_request, user.home),
            cwd=cwd,
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
            terminal=request.tty,
            stdin_open=options.interactive,
            root_device=ROOT_DEVICE,
            hostname=hostname,
            rows=rows,
            cols=cols,
        )
        record = ContainerRecord(
            id=container_id,
            name=options.name or f"vmpod_{container_id[:8]}",
            image=options.image,
            image_id=image.id,
            command=command,
            created=now(),
        )
        with ExitStack() as stack:
            directory = self.containers.directory(container_id)
            directory.mkdir(mode=0o700, parents=True)
            stack.callback(self._forget if options.remove else lambda _id: None, container_id)
            overlay_path = directory / OVERLAY
            create_overlay(disk, overlay_path)
            overlay_fd = os.open(overlay_path, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, overlay_fd)
            overlay_ro_fd = os.open(overlay_path, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, overlay_ro_fd)
            if options.remove:
                self._forget(container_id)  # QEMU gets the fd: nothing of the container stays on disk
            else:
                self.containers.save(record)
            host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            stack.callback(host_end.close)
            stack.callback(guest_end.close)
            spec = VmSpec(
                vcpus=vcpus,
                memory_mib=memory,
                kernel=kernel.path,
                initrd=self._initramfs(kernel),
                cmdline=cmdline(kernel),
                accel=choice,
                channel_fd=guest_end.fileno(),
                disks=(DiskSpec(overlay_fd, overlay_ro_fd),),
            )
            plan = QemuDriver().plan(spec)
            if options.dry_run:
                print(shlex.join(plan.argv))
                self._forget(container_id)
                return 0
            log.debug("kernel %s (%s), accelerator %s: %s", kernel.path, kernel.kind, choice.accel, choice.reason)
            console = stack.enter_context(tempfile.TemporaryFile(prefix="vmpod-console-"))
            phases = Phases()
            stack.callback(phases.report)
            qemu = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console.fileno())
            stack.callback(_reap, qemu, phases)
            guest_end.close()
            if not options.remove:
                record = self.containers.update(record, status=Status.RUNNING, pid=os.getpid())
            try:
                # A removed container's disk is already unlinked: nothing to sync, so no clean shutdown.
                keep_disk = not options.remove
                code = asyncio.run(_drive(host_end, qemu, process, options.interactive, keep_disk, phases))
            except ProtocolError as e:
                raise VmpodError(f"the VM failed: {e}", _console_hint(console)) from None
            finally:
                if not options.remove:
                    self.containers.update(record, status=Status.EXITED, pid=0)
            if not options.remove:
                self.containers.update(record, status=Status.EXITED, exit_code=code)
            return code
        raise AssertionError("unreachable")

    def _initramfs(self, kernel: Kernel) -> Path:
        return initramfs.build(agent_binary(), list(kernel.modules), self.state.cache)

    def _forget(self, container_id: str) -> None:
        self.containers.remove(container_id)


class Phases:
    """Monotonic timestamps of a run's phases, logged under --debug: where the time goes."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {"spawn": time.monotonic()}

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def report(self) -> None:
        names = list(self.marks)
        steps = [f"{b}={self.marks[b] - self.marks[a]:.3f}s" for a, b in itertools.pairwise(names)]
        log.debug("phases: %s", " ".join(steps))


def _console_hint(console: IO[bytes]) -> str:
    """The last lines the guest kernel printed, for an error message."""
    try:
        console.seek(0)
        lines = console.read()[-2000:].decode(errors="replace").strip().splitlines()
    except (OSError, ValueError):
        return "run with --debug for details"
    return "console: " + " | ".join(lines[-5:]) if lines else "the VM printed nothing"


def _reap(qemu: subprocess.Popen[bytes], phases: Phases) -> None:
    """Waits briefly for a guest that powers itself off; otherwise kills the hypervisor."""
    try:
        qemu.wait(SHUTDOWN_GRACE_S if "shutdown" in phases.marks else 0)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
    phases.mark("gone")


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


async def _until_ready(session: AgentSession, qemu: subprocess.Popen[bytes]) -> None:
    """Waits for READY, for the hypervisor to die, or for the boot timeout, whichever comes first."""
    loop = asyncio.get_running_loop()
    died: asyncio.Future[None] = loop.create_future()
    # A pidfd turns readable when the process exits: no thread to join, nothing to leak.
    pidfd = os.pidfd_open(qemu.pid)

    def on_exit() -> None:
        if not died.done():
            died.set_result(None)

    loop.add_reader(pidfd, on_exit)
    ready: asyncio.Future[Any] = asyncio.ensure_future(session.wait_ready())
    try:
        done, _ = await asyncio.wait([ready, died], timeout=BOOT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    if ready in done:
        ready.result()
        return
    ready.cancel()
    if died in done:
        raise ProtocolError(f"the hypervisor exited with status {qemu.wait()} before the agent was ready")
    raise ProtocolError(f"the agent did not answer within {BOOT_TIMEOUT_S:.0f} s")


async def _drive(
    sock: socket.socket,
    qemu: subprocess.Popen[bytes],
    process: ProcessSpec,
    interactive: bool,
    keep_disk: bool,
    phases: Phases,
) -> int:
    session = AgentSession(sock)
    await session.open()
    try:
        await _until_ready(session, qemu)
        phases.mark("ready")
        try:
            await asyncio.wait_for(session.start(process), BOOT_TIMEOUT_S)
        except AgentError as e:
            raise _start_error(e) from None
        except TimeoutError:
            raise ProtocolError(f"the agent did not start the process within {BOOT_TIMEOUT_S:.0f} s") from None
        phases.mark("started")
        loop = asyncio.get_running_loop()
        attached_tty = process.terminal and os.isatty(0)
        with (
            terminal.raw_mode(0) if attached_tty and interactive else nullcontext(),
            _signals_forwarded(loop, session, attached_tty),
        ):
            if interactive:
                session.pump_stdin(0)
            status = await session.wait_exit()
        phases.mark("exited")
        if not keep_disk:
            return _exit_code(status)
        with suppress(TimeoutError, AgentError, ProtocolError):
            await asyncio.wait_for(session.shutdown(), SHUTDOWN_GRACE_S)
            phases.mark("shutdown")
        return _exit_code(status)
    finally:
        await session.close()

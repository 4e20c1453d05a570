"""The supervisor of one OCI container: a host process that owns its VM and stands for its process.

`vmpod-runtime create` starts it (`python -m vmpod.oci.shim …`) through a double fork, so that it is
adopted by the engine's subreaper (conmon, a containerd shim) and its pid — the one in `--pid-file` and
in `state` — exits when the container exits, with the container's exit status. It boots the VM (root
and bind mounts shared from the host, no disk image), waits for the agent's READY, reports `created`
and waits: `start` over its control socket starts the process, as the runtime spec's lifecycle wants.
Without a terminal the process's stdout and stderr go to this process's own fds 1 and 2, inherited
from the engine, and stdin comes from fd 0 unless that is /dev/null. With `process.terminal` a host
pty's master goes to the engine over `--console-socket` (SCM_RIGHTS, as runc sends it) and the slave is
relayed to the guest's pty.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import tty
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmpod.container import control, terminal
from vmpod.container.bridge import create_tap
from vmpod.container.exec_server import TOP_COMMAND, guest_processes, serve_exec
from vmpod.container.vm import Phases, RunningVm, agent_binary, exit_code, shutdown, start_error, until_ready
from vmpod.errors import ExitCode, VmpodError
from vmpod.guest.codec import ProtocolError
from vmpod.guest.messages import Message
from vmpod.guest.session import AgentError, AgentSession, OutputSink, ProcessSpec, fd_sink
from vmpod.hypervisor import accel, virtiofs
from vmpod.hypervisor.base import TapNetwork, UserNetwork, VmSpec
from vmpod.hypervisor.qemu import QemuDriver
from vmpod.kernel import cmdline, find_kernel
from vmpod.oci import hooks, netns
from vmpod.oci.bundle import Bundle, VmLayout, check_process, layout, load, make_mount_points, process_fields
from vmpod.oci.state import Record, Status, Store, start_time
from vmpod.rootfs import initramfs
from vmpod.run import spawn

log = logging.getLogger("vmpod")
SHUTDOWN_GRACE_S = 2.0
RESIZE_POLL_S = 0.25


def _reap(qemu: subprocess.Popen[bytes], grace: float) -> None:
    try:
        qemu.wait(grace)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()


def launch(
    stack: ExitStack, cache: Path, bundle: Bundle, vm_layout: VmLayout, name: str, tap_fd: int | None
) -> RunningVm:
    """Starts virtiofsd for each virtio-fs share, then QEMU; the stack stops them all. With a tap (the
    container has a network namespace) the VM's NIC is that tap, else vmpod's user-mode network."""
    shares = []
    for share in vm_layout.shares:
        if share.tag in vm_layout.virtiofs_tags:
            share = replace(share, vhost_user_socket=virtiofs.start_daemon(stack, share.path, f"{name}/{share.tag}"))
        shares.append(share)
    kernel = find_kernel(os.environ.get("VMPOD_KERNEL") or None)
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stack.callback(host_end.close)
    with guest_end:
        spec = VmSpec(
            vcpus=bundle.vcpus,
            memory_mib=bundle.memory_mib,
            kernel=kernel.path,
            initrd=initramfs.build(agent_binary(), list(kernel.modules), cache),
            cmdline=cmdline(kernel),
            accel=accel.choose(),
            channel_fd=guest_end.fileno(),
            network=UserNetwork() if tap_fd is None else TapNetwork(tap_fd),
            shares=tuple(shares),
        )
        plan = QemuDriver().plan(spec)
        console = stack.enter_context(tempfile.TemporaryFile(prefix="vmpod-console-"))  # noqa: SIM115
        qemu = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console.fileno())
        phases = Phases()
        stack.callback(lambda: _reap(qemu, SHUTDOWN_GRACE_S if "shutdown" in phases.marks else 0))
    return RunningVm(qemu, host_end, console, phases)


def stdin_is_open(fd: int = 0) -> bool:
    """Whether the engine gave the container a stdin: anything but a closed fd or /dev/null."""
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return not (stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3))


def tolerant(sink: OutputSink) -> OutputSink:
    """An engine that stopped reading must not end the container or an exec: its output is dropped."""
    gone = False

    async def write(process: int, kind: Message, data: bytes) -> None:
        nonlocal gone
        if not gone:
            try:
                await sink(process, kind, data)
            except OSError:
                gone = True

    return write


def send_console(console_socket: str, master: int, name: str) -> None:
    """runc's console protocol: the pty master as SCM_RIGHTS, its name as the message."""
    directory, base = os.path.split(os.path.abspath(console_socket))
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(f"/proc/self/fd/{dir_fd}/{base}")  # AF_UNIX paths are short; bundle paths are not
            socket.send_fds(sock, [name.encode()], [master])
    except OSError as e:
        raise VmpodError(f"cannot send the console to {console_socket}: {e.strerror}", exit_code=1) from None
    finally:
        os.close(dir_fd)


class Shim:
    def __init__(
        self, store: Store, record: Record, bundle: Bundle, vm: RunningVm, console_socket: str, tap: str = ""
    ) -> None:
        self.store = store
        self.tap = tap  # the VM's tap in the container's network namespace, if it has one
        self.record = record
        self.bundle = bundle
        self.vm = vm
        self.directory = store.directory(record.id)
        self.console_socket = console_socket
        self.tty: int | None = None
        self.stdin = stdin_is_open(0)
        self.started = False
        self.reported = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.exec_pids: set[int] = set()  # host processes standing for exec'd ones (their clients)
        self.ended: asyncio.Future[int] | None = None  # an exit code when the process never ran
        self.layout = layout(bundle)
        sink = fd_sink() if not bundle.terminal else None
        self.session = AgentSession(vm.channel, tolerant(sink) if sink else self._to_tty)

    async def _to_tty(self, process: int, kind: Message, data: bytes) -> None:
        if self.tty is not None:
            await fd_sink(self.tty, self.tty)(process, kind, data)

    def _report(self, fd: int | None, message: dict[str, Any]) -> None:
        if fd is not None:
            with suppress(OSError):
                os.write(fd, control.encode(message))
                os.close(fd)

    async def run(self, ready_fd: int | None) -> int:
        self.ended = asyncio.get_running_loop().create_future()
        await self.session.open()
        server: asyncio.AbstractServer | None = None
        try:
            try:
                await until_ready(self.session, self.vm)
            except ProtocolError as e:
                raise VmpodError(f"the VM failed: {e}", self.vm.console_hint()) from None
            if self.bundle.terminal:
                self._open_console()
            server = await control.serve(self.directory, self._client)
            me = os.getpid()
            self.record = self.store.update(self.record, status=Status.CREATING, pid=me, pid_start=start_time(me))
            # runc's order and state: prestart first, both told `creating` with the pid.
            await hooks.run_stage(self.bundle, "prestart", self.record, status="creating")
            await hooks.run_stage(self.bundle, "createRuntime", self.record, status="creating")
            self.record = self.store.update(self.record, status=Status.CREATED)
            self._report(ready_fd, {"ok": True, "pid": me})
            self.reported = True
            code = await self._until_end()
            self.record = self.store.update(self.record, status=Status.STOPPED, exit_code=code)
            server.close()
            await shutdown(self.session, self.vm)
            return code
        finally:
            if server is not None:
                server.close()
            (self.directory / control.SOCKET_NAME).unlink(missing_ok=True)
            await self.session.close()

    async def _until_end(self) -> int:
        assert self.ended is not None
        exited = asyncio.ensure_future(self.session.wait_exit())
        ended: asyncio.Future[Any] = self.ended
        done, _ = await asyncio.wait([exited, ended], return_when=asyncio.FIRST_COMPLETED)
        if ended in done:
            exited.cancel()
            return int(ended.result())
        try:
            status = exited.result()
        except ProtocolError as e:  # the hypervisor died, or the guest broke the protocol
            log.warning("the VM failed: %s (%s)", e, self.vm.console_hint())
            return ExitCode.ENGINE
        self.vm.phases.mark("exited")
        return exit_code(status)

    def _open_console(self) -> None:
        if not self.console_socket:
            raise VmpodError("process.terminal needs --console-socket", exit_code=1)
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # the guest's pty does the line discipline; this one only carries bytes
            send_console(self.console_socket, master, os.ttyname(slave))
        except BaseException:
            os.close(slave)
            raise
        finally:
            os.close(master)
        self.tty = slave

    # --- control requests --------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = control.decode(await reader.readline())
            op = request.get("op")
            reply: dict[str, Any] = {"ok": True}
            if op == "start":
                await self._start()
            elif op == "kill":
                await self._kill(int(request.get("signal", signal.SIGTERM)))
            elif op == "exec":
                await self._exec(request, reader, writer)
                return
            elif op == "ps":
                reply["pids"] = [os.getpid(), *sorted(self.exec_pids)]
            elif op == "top":
                self._running("ps")
                top = replace(self.layout.process, args=tuple(TOP_COMMAND), terminal=False, stdin_open=False)
                reply = await guest_processes(self.session, replace(top, uid=0, gid=0, groups=(), caps=None))
            else:
                raise VmpodError(f"unknown control request {op!r}")
            writer.write(control.encode(reply))
        except VmpodError as e:
            writer.write(control.encode(control.error_reply(e)))
        except AgentError as e:
            writer.write(control.encode(control.error_reply(VmpodError(e.message, exit_code=1))))
        except (ValueError, TypeError) as e:
            writer.write(control.encode(control.error_reply(VmpodError(f"bad control request: {e}"))))
        except (ConnectionError, ProtocolError):
            pass
        finally:
            with suppress(ConnectionError):
                await writer.drain()
            writer.close()

    def _running(self, what: str) -> None:
        assert self.ended is not None
        if self.ended.done():
            raise VmpodError(f"cannot {what} a stopped container", exit_code=1)
        if not self.started:
            raise VmpodError(f"cannot {what} a container that has not been started", exit_code=1)

    async def _exec(self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A further process (`vmpod-runtime exec`): its client stands for it on the host, so the
        client's pid is listed by `ps` and its going away kills the process (exec_server)."""
        self._running("exec in")
        process = check_process(request.get("process"), "the exec process")
        spec = ProcessSpec(
            **process_fields(process),
            stdin_open=bool(request.get("interactive")),
            root_device="",
            rows=int(request.get("rows", 24)),
            cols=int(request.get("cols", 80)),
        )
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer = struct.unpack("3i", creds)[0]
        self.exec_pids.add(peer)
        try:
            await serve_exec(self.session, spec, reader, writer, kill_on_close=True)
        finally:
            self.exec_pids.discard(peer)

    def _process(self) -> ProcessSpec:
        rows, cols = terminal.size(self.tty) if self.tty is not None else (24, 80)
        return replace(self.layout.process, rows=rows, cols=cols, stdin_open=self.stdin or self.tty is not None)

    async def _start(self) -> None:
        assert self.ended is not None
        if self.started or self.ended.done():
            state = "running" if not self.ended.done() else "stopped"
            raise VmpodError(f"cannot start a container that is {state}", exit_code=1)
        process = await self._network(self._process())
        self.started = True
        try:
            await self.session.start(process)
        except AgentError as e:
            error = start_error(e)
            self.ended.set_result(error.exit_code)
            raise VmpodError(f"unable to start container process: {error.message}", exit_code=1) from None
        self.vm.phases.mark("started")
        self.record = self.store.update(self.record, status=Status.RUNNING)
        if self.tty is not None:
            self.session.pump_stdin(self.tty)
            self.tasks.add(asyncio.create_task(self._follow_size(self.tty, (process.rows, process.cols))))
        elif self.stdin:
            self.session.pump_stdin(0)
        # runc 1.1 tells poststart hooks the state it read before starting: `created`.
        await hooks.run_stage(self.bundle, "poststart", self.record, fatal=False, status="created")

    async def _network(self, process: ProcessSpec) -> ProcessSpec:
        """The namespace's interface, as the engine and its hooks left it, becomes the guest's eth0."""
        if not self.tap or netns.is_sandbox(self.bundle.annotations):
            return process
        interface = netns.find_interface(self.tap)
        if interface is None:  # only lo, as in runc's new namespace: the guest's NIC stays unconfigured
            return process
        netns.mirror(interface, self.tap)
        await self.session.machine(mac=interface.mac)
        log.debug("network: %s (%s, %s) mirrored to %s", interface.name, interface.address, interface.mac, self.tap)
        return replace(process, net_address=interface.address, net_gateway=interface.gateway)

    async def _follow_size(self, fd: int, size: tuple[int, int]) -> None:
        """The engine sizes the master; this side only sees it change (no SIGWINCH without a session).
        size: what the guest was told; the engine may have resized meanwhile (containerd does so only
        after start)."""
        while True:
            await asyncio.sleep(RESIZE_POLL_S)
            now = terminal.size(fd)
            if now != size:
                size = now
                with suppress(AgentError, ProtocolError):
                    await self.session.resize(*size)

    async def _kill(self, signo: int) -> None:
        assert self.ended is not None
        if self.ended.done():
            raise VmpodError("container not running", exit_code=1)
        if not self.started:
            # A created container has no process yet: the signal ends it, as it would end runc's init.
            if signo != 0:
                self.ended.set_result(ExitCode.SIGNAL_BASE + signo)
            return
        if signo != 0:
            await self.session.signal(signo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vmpod-shim")
    parser.add_argument("--root", required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--console-socket", default="")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("container_id")
    args = parser.parse_args(argv)
    os.setsid()  # out of the engine's process group: a Ctrl-C there is the container's to get
    store = Store(Path(args.root))
    directory = store.directory(args.container_id)
    logging.basicConfig(
        filename=directory / "shim.log",
        format="%(asctime)s %(message)s",
        level=logging.DEBUG if args.debug else logging.WARNING,
    )
    ready_fd: int | None = args.ready_fd
    code: int = ExitCode.ENGINE
    try:
        record = store.get(args.container_id)
        bundle = load(Path(args.bundle))
        netns.enter(bundle.network)  # before any child: QEMU, virtiofsd and hooks start inside it
        with ExitStack() as stack:
            vm_layout = layout(bundle)
            make_mount_points(bundle.root, vm_layout)
            tap_fd, tap = create_tap(stack) if bundle.network.mode is not netns.NetworkMode.HOST else (None, "")
            vm = launch(stack, store.root / "cache", bundle, vm_layout, f"vmpod-oci/{os.getpid()}", tap_fd)
            shim = Shim(store, record, bundle, vm, args.console_socket, tap)
            try:
                code = asyncio.run(shim.run(ready_fd))
            finally:
                ready_fd = None if shim.reported else ready_fd
    except VmpodError as e:
        log.warning("%s", e)
        if ready_fd is not None:
            with suppress(OSError):
                os.write(ready_fd, control.encode(control.error_reply(e)))
        code = e.exit_code
    except Exception as e:  # a bug: still tell the waiting CLI, and keep the traceback in the log
        log.exception("the supervisor failed")
        if ready_fd is not None:
            with suppress(OSError):
                os.write(ready_fd, control.encode(control.error_reply(VmpodError(f"the supervisor failed: {e}"))))
        code = ExitCode.ENGINE
    finally:
        with suppress(VmpodError):
            record = store.get(args.container_id)
            if record.status is not Status.STOPPED:
                store.update(record, status=Status.STOPPED, exit_code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())

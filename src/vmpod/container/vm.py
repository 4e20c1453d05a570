"""One container's VM: from the image and flags to a booted agent running the container's process.

Shared by a foreground `vmpod run` and by the supervisor of a detached container. The VM is owned by
the process that launches it: QEMU dies with it (PR_SET_PDEATHSIG) and gets every file as an inherited
fd, so an owner killed with SIGKILL leaves no hypervisor, socket or temp file behind.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import IO, Any

from vmpod.container import dns, template, terminal
from vmpod.container.bridge import NetworkStore, lease_address, open_tap, peers
from vmpod.container.network import (
    GATEWAY,
    GUEST_ADDRESS,
    GUEST_PREFIX,
    NetworkMode,
    PortMapping,
    hosts_file,
    parse_publish,
    publish_all,
    resolv_conf,
)
from vmpod.container.spec import ProcessRequest, argv, environment, working_dir
from vmpod.container.state import OVERLAY, ContainerRecord, ContainerStore, RestartPolicy, new_id, now
from vmpod.container.users import resolve_user
from vmpod.container.volumes import MountSpec, VolumeStore, parse_mount, parse_tmpfs, parse_volume
from vmpod.errors import ExitCode, VmpodError
from vmpod.guest.codec import ProtocolError
from vmpod.guest.session import AgentError, AgentSession, ProcessSpec
from vmpod.guest.session import exit_code as exit_code  # re-exported: callers map statuses here
from vmpod.hypervisor import accel, select, virtiofs
from vmpod.hypervisor.base import DiskSpec, LaunchPlan, PortForward, Share, TapNetwork, UserNetwork, VmSpec
from vmpod.hypervisor.qemu import QemuDriver
from vmpod.image.store import ImageStore
from vmpod.kernel import cmdline, find_kernel
from vmpod.paths import StateDir, write_atomically
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
PLAN_NAME = "plan.json"


@dataclass(frozen=True)
class RunOptions:
    image: str
    process: ProcessRequest
    interactive: bool = False
    remove: bool = False
    detach: bool = False
    name: str = ""
    cpus: float | None = None
    memory_bytes: int | None = None
    kernel: str | None = None
    dry_run: bool = False
    network: str = "default"
    publish: tuple[str, ...] = ()
    publish_all: bool = False
    add_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    read_only: bool = False
    restart: str = "no"
    template: bool = True  # start from a saved VM when one fits (`--no-template` boots cold)


@dataclass(frozen=True)
class Prepared:
    """Everything decided before a VM starts; saved beside the container for its supervisor."""

    record: ContainerRecord
    process: ProcessSpec
    vcpus: int
    memory_mib: int
    kernel: str | None
    network: NetworkMode = NetworkMode.USER
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    restart: str = "no"
    virtiofs: bool = False  # decided once, so that MOUNT fields and devices agree
    remove: bool = False  # `run -d --rm`: the supervisor removes the container when it ends
    bridge: str = ""  # the `vmpod network create` network the container joins (address leased at launch)
    add_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    template: bool = True
    driver: str = "qemu"  # the hypervisor driver (hypervisor/select.py), decided once for the supervisor too

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "record": self.record.to_dict()}

    def shares(self, sockets: dict[str, str] | None = None) -> tuple[Share, ...]:
        """Host directories the guest mounts, tagged in the order of the container's mounts."""
        sockets = sockets or {}
        return tuple(
            Share(f"vol{index}", Path(m.source), m.readonly, sockets.get(f"vol{index}", ""))
            for index, m in enumerate(self.mounts)
            if m.kind != "tmpfs"
        )

    def socket_name(self, tag: str) -> str:
        return f"vmpod/{self.record.id}/{tag}"

    def virtiofs_shares(self) -> tuple[Share, ...]:
        """The shares served by virtiofsd; read-only ones stay on 9p, where QEMU enforces `ro` on the host
        (virtiofsd has no read-only mode, and the guest kernel is not trusted to keep a mount read-only)."""
        return tuple(s for s in self.shares() if self.virtiofs and not s.readonly)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prepared:
        process: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["process"].items()}
        return cls(
            ContainerRecord.from_dict(data["record"]),
            ProcessSpec(**process),
            data["vcpus"],
            data["memory_mib"],
            data["kernel"],
            NetworkMode(data["network"]),
            tuple(PortMapping.from_dict(p) for p in data["ports"]),
            tuple(MountSpec.from_dict(m) for m in data["mounts"]),
            data.get("restart", "no"),
            bool(data.get("virtiofs", False)),
            bool(data.get("remove", False)),
            str(data.get("bridge", "")),
            tuple(data.get("add_hosts", ())),
            tuple(data.get("dns", ())),
            bool(data.get("template", True)),
            str(data.get("driver", "qemu")),
        )

    def save(self, directory: Path) -> None:

        write_atomically(directory / PLAN_NAME, json.dumps(self.to_dict()).encode(), 0o600)

    @classmethod
    def load(cls, directory: Path) -> Prepared:

        return cls.from_dict(json.loads((directory / PLAN_NAME).read_bytes()))


def agent_binary() -> Path:
    override = os.environ.get("VMPOD_AGENT")
    path = Path(override) if override else Path(str(resources.files("vmpod") / "data" / "vmpod-agent"))
    if not path.is_file():
        raise VmpodError(f"the guest agent {path} is missing", "build it with `make agent`")
    return path


def vm_size(cpus: float | None, memory_bytes: int | None) -> tuple[int, int]:
    """The VM's vcpus and MiB for Docker's --cpus and --memory."""
    vcpus = max(1, math.ceil(cpus)) if cpus else 1
    if cpus is not None and cpus <= 0:
        raise VmpodError(f"invalid --cpus {cpus}", "give a positive number")
    memory = DEFAULT_MEMORY_MIB
    if memory_bytes is not None:
        if memory_bytes < 6 << 20:
            raise VmpodError("minimum memory limit allowed is 6MB", "give --memory 6m or more")
        memory = math.ceil(memory_bytes / (1 << 20)) + GUEST_OVERHEAD_MIB
    return vcpus, memory


def prepare(state: StateDir, options: RunOptions) -> Prepared:
    """Resolves image, command, environment and user as Docker does, and builds the image's disk."""
    images, containers = ImageStore(state), ContainerStore(state)
    image = images.lookup(options.image)
    config = image.run_config
    request = options.process
    if options.name and containers.name_taken(options.name):
        raise VmpodError(f"the container name {options.name!r} is already in use", "choose another --name")
    command = argv(config, request)
    cwd = working_dir(config, request)
    vcpus, memory = vm_size(options.cpus, options.memory_bytes)
    find_kernel(options.kernel)  # fail before anything is written
    state.ensure()
    disk = base_disk(state, images, image)
    user = resolve_user(request.user or config.user, disk.user_database("passwd"), disk.user_database("group"))
    container_id = new_id()
    hostname = request.hostname or container_id[:12]
    process_request = ProcessRequest(**{**request.__dict__, "hostname": hostname})
    network = NetworkMode.parse(options.network)
    ports = [parse_publish(p) for p in options.publish]
    if options.publish_all:
        ports += publish_all(dict(config.extra.get("ExposedPorts") or {}))
    if ports and network is NetworkMode.NONE:
        raise VmpodError("ports cannot be published with --network none")
    volumes = VolumeStore(state)
    mounts = [parse_volume(v, volumes) for v in options.volumes]
    mounts += [parse_mount(m, volumes) for m in options.mounts]
    mounts += [parse_tmpfs(t) for t in options.tmpfs]
    networked = network is NetworkMode.USER
    if network is NetworkMode.BRIDGE:
        NetworkStore(state).get(options.network)  # fails early for a network that does not exist
    use_virtiofs = any(m.kind != "tmpfs" for m in mounts) and virtiofs.available()
    files = (
        _file("/etc/hosts", hosts_file(hostname, list(options.add_hosts), networked)),
        _file("/etc/hostname", hostname + "\n"),
        _file("/etc/resolv.conf", resolv_conf(list(options.dns), networked)),
    )
    stdin_tty = request.tty and not options.detach and os.isatty(0)
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
        root_readonly=options.read_only,
        mounts=_mount_values(mounts, use_virtiofs),
        files=files,
        net_address=f"{GUEST_ADDRESS}/{GUEST_PREFIX}" if networked else "",
        net_gateway=GATEWAY if networked else "",
    )
    record = ContainerRecord(
        id=container_id,
        name=options.name or f"vmpod_{container_id[:8]}",
        image=options.image,
        image_id=image.id,
        command=command,
        created=now(),
        disk=str(disk.path),
        ports=tuple(str(p) for p in ports),
    )
    if RestartPolicy.parse(options.restart).name != "no" and options.remove:
        raise VmpodError("conflicting options: --restart and --rm", "choose one")
    return Prepared(
        record=record,
        process=process,
        vcpus=vcpus,
        memory_mib=memory,
        kernel=options.kernel,
        network=network,
        ports=tuple(ports),
        mounts=tuple(mounts),
        restart=options.restart,
        virtiofs=use_virtiofs,
        remove=options.remove,
        bridge=options.network if network is NetworkMode.BRIDGE else "",
        add_hosts=tuple(options.add_hosts),
        dns=tuple(options.dns),
        template=options.template,
        driver=select.choose().value,
    )


def _file(path: str, content: str, mode: int = 0o644) -> str:
    return f"{path}\t{mode:o}\t{content}"


def _mount_values(mounts: list[MountSpec], use_virtiofs: bool) -> tuple[str, ...]:
    """MOUNT fields (docs/protocol.md): shares by tag, in the order `Prepared.shares` tags them."""
    values = []
    for index, mount in enumerate(mounts):
        options = ",".join(o for o in ("ro" if mount.readonly else "", mount.options) if o)
        if mount.kind == "tmpfs":
            values.append(f"tmpfs\ttmpfs\t{mount.target}\t{options}")
        else:
            transport = "virtiofs" if use_virtiofs and not mount.readonly else "9p"
            values.append(f"{transport}\tvol{index}\t{mount.target}\t{options}")
    return tuple(values)


def create_container_disk(containers: ContainerStore, prepared: Prepared) -> Path:
    """The container's directory with its writable layer, or nothing at all."""
    directory = containers.directory(prepared.record.id)
    directory.mkdir(mode=0o700, parents=True)
    try:
        create_overlay(Path(prepared.record.disk), directory / OVERLAY)
    except BaseException:
        containers.remove(prepared.record.id)
        raise
    return directory


def open_disk(stack: ExitStack, path: Path) -> DiskSpec:
    """The overlay opened twice: QEMU dups the fd whose access mode matches each open it makes."""
    read_write = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    stack.callback(os.close, read_write)
    read_only = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    stack.callback(os.close, read_only)
    return DiskSpec(read_write, read_only)


def plan_vm(
    state: StateDir,
    prepared: Prepared,
    channel_fd: int,
    disk: DiskSpec,
    quiet: bool = False,
    sockets: dict[str, str] | None = None,
    tap_fd: int | None = None,
) -> LaunchPlan:
    """The command line that boots the container's VM cold (what `--dry-run` prints)."""
    return QemuDriver().plan(vm_spec(state, prepared, channel_fd, disk, quiet, sockets, tap_fd))


def machine(state: StateDir, vcpus: int, memory_mib: int, kernel_choice: str | None, quiet: bool = False) -> VmSpec:
    """The VM without any device of a container's: kernel, initramfs, accelerator, size."""
    kernel = find_kernel(kernel_choice)
    choice = accel.choose()
    if choice.warning and not quiet:
        print(f"vmpod: warning: {choice.warning}", file=sys.stderr)
    log.debug("kernel %s (%s), accelerator %s: %s", kernel.path, kernel.kind, choice.accel, choice.reason)
    initrd = initramfs.build(agent_binary(), list(kernel.modules), state.cache)
    return VmSpec(vcpus, memory_mib, kernel.path, initrd, cmdline(kernel), choice, channel_fd=-1)


def vm_spec(
    state: StateDir,
    prepared: Prepared,
    channel_fd: int,
    disk: DiskSpec,
    quiet: bool = False,
    sockets: dict[str, str] | None = None,
    tap_fd: int | None = None,
) -> VmSpec:
    return replace(
        machine(state, prepared.vcpus, prepared.memory_mib, prepared.kernel, quiet),
        channel_fd=channel_fd,
        disks=(disk,),
        network=_network(prepared, tap_fd),
        mac=_mac(prepared.record.id),
        shares=prepared.shares(sockets),
    )


def _mac(container_id: str) -> str:
    """A locally administered unicast MAC from the container's (random) ID."""
    return "02:" + ":".join(container_id[i : i + 2] for i in range(0, 10, 2))


def _network(prepared: Prepared, tap_fd: int | None) -> UserNetwork | TapNetwork | None:
    if prepared.network is NetworkMode.USER:
        return _user_network(prepared)
    if prepared.network is NetworkMode.BRIDGE:
        return TapNetwork(tap_fd if tap_fd is not None else -1)
    return None


def _user_network(prepared: Prepared) -> UserNetwork:
    forwards = (PortForward(p.protocol, p.host_ip, p.host_port, p.container_port) for p in prepared.ports)
    return UserNetwork(tuple(forwards))


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


@dataclass
class RunningVm:
    qemu: subprocess.Popen[bytes]
    channel: socket.socket
    console: IO[bytes]
    phases: Phases
    process: ProcessSpec | None = None  # the container's process, with what launch decided (a leased address)
    dns: tuple[str, Callable[[str], str | None]] | None = None  # bridged: (gateway, name lookup) to serve
    mac: str = ""  # the NIC's address, which the agent sets (MACHINE); empty without a NIC
    restored: bool = False  # from a template: the agent is ready and has its identity already

    def serve_dns(self) -> AbstractAsyncContextManager[None]:
        """Answers the network's name queries while the VM runs (bridged networks only)."""
        return dns.serve(*self.dns) if self.dns else nullcontext()

    def console_hint(self) -> str:
        """The last lines the guest printed, for an error message."""
        try:
            self.console.seek(0)
            lines = self.console.read()[-2000:].decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return "run with --debug for details"
        return "console: " + " | ".join(lines[-5:]) if lines else "the VM printed nothing"


def launch(stack: ExitStack, state: StateDir, prepared: Prepared, disk: DiskSpec, quiet: bool = False) -> RunningVm:
    """Starts QEMU; the stack kills it (after a grace period if the guest was shut down cleanly)."""
    if prepared.driver == select.DriverName.XEN:  # Xen: a guard process owns the domain (container/xenvm.py)
        from vmpod.container import xenvm

        return xenvm.launch(stack, state, prepared, disk, quiet)
    sockets = {}
    for share in prepared.virtiofs_shares():
        sockets[share.tag] = virtiofs.start_daemon(stack, share.path, prepared.socket_name(share.tag))
    process, tap_fd, names = prepared.process, None, None
    if prepared.bridge:
        process, tap_fd, names = _join_bridge(stack, state, prepared)
    console = stack.enter_context(tempfile.TemporaryFile(prefix="vmpod-console-"))  # noqa: SIM115
    phases = Phases()
    stack.callback(phases.report)
    host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    spec = vm_spec(state, prepared, guest_end.fileno(), disk, quiet, sockets, tap_fd)
    mac = spec.mac if spec.network is not None else ""
    why_not = "--no-template" if not prepared.template else template.eligible(spec)
    if why_not is None:
        try:
            qemu = template.restore(
                stack,
                state,
                spec,
                host_end,
                guest_end,
                console.fileno(),
                mac,
                lambda vm: _reap_later(stack, vm, phases),
            )
            stack.callback(host_end.close)
            phases.mark("restored")
            return RunningVm(qemu, host_end, console, phases, process, names, mac, restored=True)
        except template.RestoreFailed as e:
            if not quiet:
                print(f"vmpod: warning: {e}; booting without a template", file=sys.stderr)
            host_end.close()
            host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            spec = replace(spec, channel_fd=guest_end.fileno())
    else:
        log.debug("booting without a template: %s", why_not)
    stack.callback(host_end.close)
    with guest_end:
        plan = QemuDriver().plan(spec)
        qemu = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console.fileno())
        stack.callback(_reap, qemu, phases)
    return RunningVm(qemu, host_end, console, phases, process, names, mac)


def _join_bridge(
    stack: ExitStack, state: StateDir, prepared: Prepared
) -> tuple[ProcessSpec, int, tuple[str, Callable[[str], str | None]]]:
    """Leases an address on the container's network; peers' names come from the network's DNS responder."""
    store = NetworkStore(state)
    network = store.get(prepared.bridge)
    address = lease_address(stack, store, network, prepared.record.name)
    known = [f"{name}:{peer}" for name, peer in sorted(peers(store, network).items()) if peer != address]
    hosts = hosts_file(prepared.process.hostname, [*known, *prepared.add_hosts], True, address)
    resolv = "".join(f"nameserver {server}\n" for server in (network.gateway, *prepared.dns))
    files = tuple(f for f in prepared.process.files if not f.startswith(("/etc/hosts\t", "/etc/resolv.conf\t")))
    process = replace(
        prepared.process,
        files=(_file("/etc/hosts", hosts), _file("/etc/resolv.conf", resolv), *files),
        net_address=f"{address}/{network.prefix}",
        net_gateway=network.gateway,
    )

    def lookup(name: str) -> str | None:
        return peers(store, network).get(name)

    return process, open_tap(stack, network), (network.gateway, lookup)


def _reap_later(stack: ExitStack, qemu: subprocess.Popen[bytes], phases: Phases) -> None:
    stack.callback(_reap, qemu, phases)


def _reap(qemu: subprocess.Popen[bytes], phases: Phases) -> None:
    """Waits briefly for a guest that powers itself off; otherwise kills the hypervisor."""
    try:
        qemu.wait(SHUTDOWN_GRACE_S if "shutdown" in phases.marks else 0)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
    phases.mark("gone")


def start_error(error: AgentError) -> VmpodError:
    """Docker's 127/126 for a command that cannot be run; 125 for anything else that failed to set up."""
    if not error.message.startswith('exec: "'):
        return VmpodError(f"the container could not start: {error.message}")
    if error.errno == errno.ENOENT:
        return VmpodError(error.message, "check the command and the image's PATH", ExitCode.NOT_FOUND)
    if error.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return VmpodError(error.message, "the command must be an executable file", ExitCode.NOT_EXECUTABLE)
    return VmpodError(f"the container could not start: {error.message}")


async def until_ready(session: AgentSession, vm: RunningVm) -> None:
    """Waits for READY, for the hypervisor to die, or for the boot timeout, whichever comes first; then
    gives the guest its identity (MACHINE). A VM restored from a template has both already."""
    if vm.restored:
        return
    loop = asyncio.get_running_loop()
    died: asyncio.Future[None] = loop.create_future()
    # A pidfd turns readable when the process exits: no thread to join, nothing to leak.
    pidfd = os.pidfd_open(vm.qemu.pid)

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
        vm.phases.mark("ready")
        try:
            await asyncio.wait_for(session.machine(vm.mac), BOOT_TIMEOUT_S)
        except AgentError as e:
            raise ProtocolError(f"the agent could not set up the VM: {e.message}") from None
        return
    ready.cancel()
    if died in done:
        raise ProtocolError(f"the hypervisor exited with status {vm.qemu.wait()} before the agent was ready")
    raise ProtocolError(f"the agent did not answer within {BOOT_TIMEOUT_S:.0f} s")


async def start_process(session: AgentSession, vm: RunningVm, process: ProcessSpec | None = None) -> None:
    """Boots to READY and starts the container's main process, with Docker's errors when it cannot."""
    await until_ready(session, vm)
    try:
        chosen = process or vm.process
        assert chosen is not None, "start_process needs the process to start"
        await asyncio.wait_for(session.start(chosen), BOOT_TIMEOUT_S)
    except AgentError as e:
        raise start_error(e) from None
    except TimeoutError:
        raise ProtocolError(f"the agent did not start the process within {BOOT_TIMEOUT_S:.0f} s") from None
    vm.phases.mark("started")


async def shutdown(session: AgentSession, vm: RunningVm) -> None:
    """Asks the agent to sync and power off, so the container's disk is consistent."""
    from contextlib import suppress

    with suppress(TimeoutError, AgentError, ProtocolError):
        await asyncio.wait_for(session.shutdown(), SHUTDOWN_GRACE_S)
        vm.phases.mark("shutdown")

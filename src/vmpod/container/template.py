"""VM templates: a VM booted once and saved to a file, restored for each container instead of a boot.

A template holds no container. Its root disk is a placeholder (an empty qcow2 as large as any real disk,
so the guest's view of the size never limits the real one), its NIC is unplugged and its shares point
to an empty directory; a restored VM gets the container's own disk, network backend and volumes on the
same devices, and the agent's MACHINE sets its clock, reseeds its random pool and sets its MAC before
the container starts (docs/architecture.md, "Templates").

A template is keyed by everything the restored VM must share with it: the QEMU command line with the
per-container parts taken out (machine, vcpus, memory, kernel, initramfs and so the agent, devices),
the kernel file and the QEMU binary. A template whose key no longer matches is simply never found; a
damaged one fails its digest (checked while QEMU loads it, before any container data reaches the guest)
or its restore, and is removed so the next run rebuilds it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vmpod.errors import VmpodError
from vmpod.guest.codec import ProtocolError
from vmpod.guest.messages import Message
from vmpod.guest.session import AgentError, AgentSession, machine_fields, request_blocking
from vmpod.hypervisor import qemu
from vmpod.hypervisor.base import DiskSpec, Share, UnpluggedNetwork, VmSpec
from vmpod.paths import StateDir, scratch_dir, write_atomically
from vmpod.run import run, spawn

log = logging.getLogger("vmpod")

SNAPSHOT = "vm.snapshot"
META = "template.json"
# The placeholder root disk's size: the guest believes the disk is this large, the real one is smaller.
PLACEHOLDER_BYTES = 1 << 40
# The NIC's MAC in every template and restored VM on QEMU's side; the agent gives the guest its own.
TEMPLATE_MAC = "02:00:00:00:00:01"
# The template's kernel zeroes what it frees (the kernel image it was unpacked from, the initramfs), so
# that the saved stream, which sends zero pages as flags, carries only the memory in use.
TEMPLATE_CMDLINE = ("init_on_free=1",)
BUILD_TIMEOUT_S = float(os.environ.get("VMPOD_BOOT_TIMEOUT", "120"))
RESTORE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Template:
    key: str
    directory: Path
    meta: dict[str, Any]

    @property
    def snapshot(self) -> Path:
        return self.directory / SNAPSHOT


def shape(spec: VmSpec) -> VmSpec:
    """The template a VM can be restored from: the VM without anything of its container's."""
    network = UnpluggedNetwork() if spec.network is not None else None
    shares = tuple(Share(s.tag, Path("/nonexistent"), readonly=True) for s in spec.shares)
    return replace(
        spec,
        cmdline=(*spec.cmdline, *TEMPLATE_CMDLINE),
        channel_fd=-1,
        disks=tuple(DiskSpec(-1, -1) for _ in spec.disks),
        network=network,
        mac=TEMPLATE_MAC if network else "",
        shares=shares,
        control_fd=-1,
        incoming_fd=-1,
    )


def eligible(spec: VmSpec) -> str | None:
    """None when a template can stand in for this VM's boot, else why not."""
    if any(s.vhost_user_socket for s in spec.shares):
        return "virtio-fs volumes cannot be saved with a VM"
    if len(spec.disks) != 1:
        return "templates have exactly one disk"
    return None


def _identity(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def key(spec: VmSpec) -> str:
    """What the restored VM must share with its template, hashed."""
    binary = shutil.which(qemu.BINARY)
    if binary is None:
        raise VmpodError(f"{qemu.BINARY} not found", "apt-get install qemu-system-x86")
    argv = qemu.QemuDriver().plan(shape(spec)).argv
    material = {"argv": argv, "kernel": _identity(spec.kernel), "qemu": _identity(Path(binary)), "format": 1}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def family(spec: VmSpec) -> str:
    """What a template is for, without the versions of what it is made of: of the templates of one family
    only the newest can still be found, so building it makes the others stale."""
    parts = [spec.vcpus, spec.memory_mib, str(spec.kernel), spec.accel.accel.value, spec.network is not None]
    return hashlib.sha256(json.dumps([*parts, [s.tag for s in spec.shares], len(spec.disks)]).encode()).hexdigest()


def templates_dir(state: StateDir) -> Path:
    return state.root / "templates"


def find(state: StateDir, template_key: str) -> Template | None:
    directory = templates_dir(state) / template_key
    try:
        meta = json.loads((directory / META).read_bytes())
        if (directory / SNAPSHOT).stat().st_size != meta["size"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Template(template_key, directory, meta)


def listing(state: StateDir) -> list[Template]:
    root = templates_dir(state)
    found = (find(state, d.name) for d in sorted(root.iterdir()) if not d.name.startswith(".")) if root.is_dir() else ()
    return [t for t in found if t is not None]


def remove(state: StateDir, template_key: str) -> None:
    """Deletes a template; a VM being restored from it keeps its open file."""
    directory = templates_dir(state) / template_key
    with _locked(state, template_key):
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _locked(state: StateDir, template_key: str) -> Iterator[None]:
    root = templates_dir(state)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(root / f".{template_key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(state: StateDir, spec: VmSpec) -> Template:
    """The template for this VM, built the first time (concurrent builders wait for one another)."""
    template_key = key(spec)
    found = find(state, template_key)
    if found:
        return found
    with _locked(state, template_key):
        found = find(state, template_key)
        if found:
            return found
        built = _build(state, spec, template_key)
    for other in listing(state):  # outside the lock: removing takes each other template's own
        if other.key != built.key and other.meta.get("family") == built.meta["family"]:
            log.debug("removing stale template %s", other.key[:12])
            remove(state, other.key)
    return built


def _build(state: StateDir, spec: VmSpec, template_key: str) -> Template:
    state.ensure()
    started = time.monotonic()
    with scratch_dir(state, "template-") as scratch, ExitStack() as stack:
        placeholder = scratch / "placeholder.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(placeholder), str(PLACEHOLDER_BYTES)])
        empty = scratch / "empty"
        empty.mkdir(mode=0o555)
        out = scratch / "out"
        out.mkdir(mode=0o700)
        disks = []
        for _ in spec.disks:
            read_write = os.open(placeholder, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, read_write)
            read_only = os.open(placeholder, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, read_only)
            disks.append(DiskSpec(read_write, read_only))
        host_end, guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control_host, control_guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (host_end, guest_end, control_host, control_guest):
            stack.callback(sock.close)
        template_spec = replace(
            shape(spec),
            channel_fd=guest_end.fileno(),
            disks=tuple(disks),
            shares=tuple(replace(s, path=empty) for s in shape(spec).shares),
            control_fd=control_guest.fileno(),
        )
        plan = qemu.QemuDriver().plan(template_spec)
        console = stack.enter_context(open(scratch / "console", "w+b"))
        log.debug("building template %s: %s", template_key[:12], " ".join(plan.argv))
        vm = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console.fileno())
        stack.callback(_kill, vm)
        guest_end.close()
        control_guest.close()
        with open(
            os.open(out / SNAPSHOT, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb"
        ) as snapshot:
            try:
                agent = asyncio.run(_boot_and_save(host_end, control_host, snapshot.fileno(), vm))
            except (ProtocolError, AgentError, TimeoutError, OSError) as e:
                console.seek(0)
                tail = console.read()[-1500:].decode(errors="replace").strip().splitlines()[-5:]
                raise VmpodError(f"building the VM template failed: {e}", "console: " + " | ".join(tail)) from None
            snapshot.flush()
            os.fsync(snapshot.fileno())
        digest, size = _digest(out / SNAPSHOT)
        meta = {
            "key": template_key,
            "created": time.time(),
            "build_seconds": round(time.monotonic() - started, 3),
            "size": size,
            "sha256": digest,
            "agent": agent,
            "vcpus": spec.vcpus,
            "memory_mib": spec.memory_mib,
            "kernel": str(spec.kernel),
            "accel": spec.accel.accel.value,
            "nic": spec.network is not None,
            "shares": [s.tag for s in spec.shares],
            "family": family(spec),
        }
        write_atomically(out / META, json.dumps(meta, indent=2).encode(), 0o600)
        destination = templates_dir(state) / template_key
        shutil.rmtree(destination, ignore_errors=True)  # a damaged one
        os.replace(out, destination)
    log.debug("template %s built in %.2f s", template_key[:12], time.monotonic() - started)
    return Template(template_key, destination, meta)


async def _boot_and_save(
    channel: socket.socket, control: socket.socket, snapshot_fd: int, vm: subprocess.Popen[bytes]
) -> str:
    """Waits for the agent, then saves the running VM: a stream taken while it runs restores running."""
    from qemu.qmp import QMPClient  # here: only a build pays for importing it

    session = AgentSession(channel)
    await session.open()
    try:
        agent = await asyncio.wait_for(session.wait_ready(), BUILD_TIMEOUT_S)
    finally:
        await session.close()
    qmp = QMPClient("vmpod-template")
    await qmp.connect(control)
    try:
        qmp.send_fd_scm(snapshot_fd)
        await qmp.execute("getfd", {"fdname": "snapshot"})
        await qmp.execute("migrate", {"uri": "fd:snapshot"})
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while True:
            status = await qmp.execute("query-migrate")
            state = status.get("status") if isinstance(status, dict) else None
            if state == "completed":
                break
            if state in ("failed", "cancelled") or time.monotonic() > deadline or vm.poll() is not None:
                raise OSError(f"saving the VM: migration {state}: {status}")
            await asyncio.sleep(0.02)
        with suppress(Exception):
            await qmp.execute("quit")
    finally:
        with suppress(Exception):
            await qmp.disconnect()
    return agent


def _digest(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _kill(vm: subprocess.Popen[bytes]) -> None:
    if vm.poll() is None:
        vm.kill()
    vm.wait()


class RestoreFailed(Exception):
    """The template could not stand in for a boot; the caller boots cold (and the template is gone)."""


def restore(
    stack: ExitStack,
    state: StateDir,
    spec: VmSpec,
    channel: socket.socket,
    guest_end: socket.socket,
    console_fd: int,
    mac: str,
    launched: Callable[[subprocess.Popen[bytes]], None],
) -> subprocess.Popen[bytes]:
    """Starts QEMU from the template and gives the guest its identity; raises RestoreFailed.

    `spec.channel_fd` is guest_end's; it is closed once QEMU has it, so that a QEMU that dies closes the
    channel and the handshake ends at once."""
    try:
        template = ensure(state, spec)
        snapshot = stack.enter_context(open(template.snapshot, "rb"))  # noqa: SIM115
    except (VmpodError, OSError) as e:  # a VM that cannot be saved may still boot
        raise RestoreFailed(str(e)) from None
    checked = _check_in_background(template)
    restored = replace(
        spec, cmdline=shape(spec).cmdline, mac=shape(spec).mac, incoming_fd=snapshot.fileno()
    )  # fmt: skip
    plan = qemu.QemuDriver().plan(restored)
    log.debug("restoring template %s: %s", template.key[:12], " ".join(plan.argv))
    spawned = time.monotonic()
    vm = spawn(plan.argv, pass_fds=plan.pass_fds, stdout=console_fd)
    launched(vm)
    guest_end.close()
    try:
        request_blocking(channel, Message.MACHINE, machine_fields(mac), RESTORE_TIMEOUT_S)
        answered = time.monotonic()
        checked.join()
        log.debug("restore: the agent answered %.3f s after QEMU started, the digest check ended %.3f s later",
                  answered - spawned, time.monotonic() - answered)  # fmt: skip
        if checked.error:
            raise RestoreFailed(checked.error)
    except (RestoreFailed, AgentError, ProtocolError, TimeoutError, OSError) as e:
        exited = vm.poll()
        _kill(vm)
        checked.join()  # a damaged file is the likeliest reason, and the clearest to report
        reason = checked.error or (f"QEMU exited with status {exited}" if exited is not None else str(e))
        remove(state, template.key)
        raise RestoreFailed(f"the VM template {template.key[:12]} could not be restored: {reason}") from None
    return vm


class _Check(threading.Thread):
    """Reads the snapshot beside QEMU (from the page cache, mostly) and compares its digest."""

    def __init__(self, template: Template) -> None:
        super().__init__(name="template-check", daemon=True)
        self.template = template
        self.error = ""

    def run(self) -> None:
        try:
            digest, size = _digest(self.template.snapshot)
        except OSError as e:
            self.error = f"reading it: {e}"
            return
        if (digest, size) != (self.template.meta.get("sha256"), self.template.meta.get("size")):
            self.error = "its file is damaged (digest mismatch)"


def _check_in_background(template: Template) -> _Check:
    check = _Check(template)
    check.start()
    return check

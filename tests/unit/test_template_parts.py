"""VM templates without a VM: what a template is keyed by, what a restored VM's command line holds, and the
blocking MACHINE handshake against an agent that misbehaves."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from vmpod.container import template
from vmpod.guest.codec import ProtocolError, encode_fields, encode_frame
from vmpod.guest.messages import HEADER_SIZE, Field, Message
from vmpod.guest.session import AgentError, machine_fields, request_blocking
from vmpod.hypervisor.accel import Accel, AccelChoice
from vmpod.hypervisor.base import DiskSpec, PortForward, Share, TapNetwork, UnpluggedNetwork, UserNetwork, VmSpec
from vmpod.hypervisor.qemu import QemuDriver


@pytest.fixture
def spec(tmp_path: Path) -> VmSpec:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    return VmSpec(
        vcpus=1,
        memory_mib=512,
        kernel=kernel,
        initrd=tmp_path / "initramfs-abc.cpio",
        cmdline=("console=ttyS0",),
        accel=AccelChoice(Accel.TCG, "test"),
        channel_fd=7,
        disks=(DiskSpec(9, 10),),
        network=UserNetwork((PortForward("tcp", "127.0.0.1", 8080, 80),)),
        mac="02:12:34:56:78:9a",
        shares=(Share("vol0", tmp_path, readonly=False),),
    )


def test_key_ignores_what_each_container_brings(spec: VmSpec, tmp_path: Path) -> None:
    other = replace(
        spec, channel_fd=11, disks=(DiskSpec(20, 21),), network=TapNetwork(30), mac="02:aa:bb:cc:dd:ee",
        shares=(Share("vol0", tmp_path / "elsewhere", readonly=True),),
    )  # fmt: skip
    assert template.key(spec) == template.key(other)
    assert template.family(spec) == template.family(other)


def test_key_follows_the_vm_shape_and_the_kernel_file(spec: VmSpec) -> None:
    base = template.key(spec)
    assert template.key(replace(spec, memory_mib=576)) != base
    assert template.key(replace(spec, vcpus=2)) != base
    assert template.key(replace(spec, network=None)) != base
    assert template.key(replace(spec, shares=())) != base
    assert template.key(replace(spec, initrd=spec.initrd.with_name("initramfs-def.cpio"))) != base
    spec.kernel.write_bytes(b"another kernel")  # same path, other file: a stale template must not match
    assert template.key(spec) != base
    assert template.family(replace(spec, memory_mib=576)) != template.family(spec)


def test_restored_command_line_keeps_the_templates_devices(spec: VmSpec) -> None:
    shape = template.shape(spec)
    assert isinstance(shape.network, UnpluggedNetwork) and shape.mac == template.TEMPLATE_MAC
    assert "init_on_free=1" in shape.cmdline
    saved = list(QemuDriver().plan(replace(shape, channel_fd=3, disks=(DiskSpec(4, 5),), control_fd=6)).argv)
    assert "hubport,id=net0,hubid=0" in saved
    assert "chardev=qmp,mode=control" in saved and "socket,id=qmp,fd=6" in saved
    restored = list(QemuDriver().plan(replace(spec, cmdline=shape.cmdline, mac=shape.mac, incoming_fd=12)).argv)
    assert restored[-2:] == ["-incoming", "fd:12"]
    assert any(a.startswith("user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80") for a in restored)
    devices = [restored[i + 1] for i, a in enumerate(restored) if a == "-device"]
    assert devices == [saved[i + 1] for i, a in enumerate(saved) if a == "-device"]


def test_templates_stand_in_for_one_disk_and_no_virtiofs(spec: VmSpec) -> None:
    assert template.eligible(spec) is None
    assert "virtio-fs" in (template.eligible(replace(spec, shares=(Share("vol0", Path("/x"), False, "s"),))) or "")
    assert template.eligible(replace(spec, disks=())) is not None


def test_machine_fields_are_fresh_each_time() -> None:
    first, second = dict(machine_fields("02:00:00:00:00:02")), dict(machine_fields())
    assert first[Field.SEED] != second[Field.SEED] and len(str(first[Field.SEED])) == 128
    assert str(first[Field.TIME]).isdigit() and Field.MAC not in second


@pytest.fixture
def channel() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, agent = socket.socketpair()
    with host, agent:
        yield host, agent


def _answer(agent: socket.socket, reply: bytes) -> threading.Thread:
    def serve() -> None:
        agent.recv(1 << 16)
        agent.sendall(reply)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_handshake_ok(channel: tuple[socket.socket, socket.socket]) -> None:
    host, agent = channel
    thread = _answer(agent, encode_frame(Message.OK, 1))
    request_blocking(host, Message.MACHINE, machine_fields(), 5)
    thread.join()


def test_handshake_error_is_the_agents(channel: tuple[socket.socket, socket.socket]) -> None:
    host, agent = channel
    fields = encode_fields([(Field.ERRNO, 22), (Field.MESSAGE, "MACHINE: SEED is bad")])
    thread = _answer(agent, encode_frame(Message.ERROR, 1, fields))
    with pytest.raises(AgentError, match="SEED is bad"):
        request_blocking(host, Message.MACHINE, machine_fields(), 5)
    thread.join()


@pytest.mark.parametrize(
    "reply",
    [
        encode_frame(Message.READY, 0, encode_fields([(Field.PROTO_VERSION, 1)])),  # not the answer
        encode_frame(Message.OK, 2),  # another request's answer
        b"\xff\xff\xff\xff" + bytes(HEADER_SIZE - 4),  # a frame larger than the limit
        b"\x00\x00",  # a short header, then the agent hangs up
    ],
)
def test_handshake_refuses_what_is_not_its_answer(channel: tuple[socket.socket, socket.socket], reply: bytes) -> None:
    host, agent = channel

    def serve() -> None:
        agent.recv(1 << 16)
        agent.sendall(reply)
        agent.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises(ProtocolError):
        request_blocking(host, Message.MACHINE, machine_fields(), 5)
    thread.join()


def test_handshake_times_out(channel: tuple[socket.socket, socket.socket]) -> None:
    host, _ = channel
    with pytest.raises(TimeoutError):
        request_blocking(host, Message.MACHINE, machine_fields(), 0.2)

"""The engine's network namespace, carried into the VM.

runc runs the container in the network namespace that config.json's `linux.namespaces` names: a path
the engine prepared (Podman, CNI, CRI), a new empty namespace that the engine's hooks may fill (Docker's
`libnetwork-setkey` prestart hook works on the state's pid), or, with no `network` entry, the host's
network. A VM cannot join a namespace, so its host process (the shim) does: it enters the named one or
makes a new one before QEMU starts, and the VM's NIC is a tap inside it. At `start`, when the engine's
hooks have run, the namespace's interface is mirrored to the tap by tc (an ingress redirect each way,
as Kata Containers' "tcfilter" model does) and the guest takes the interface's address, default route
and MAC, so that peers, the engine's port forwarding and its firewall rules see the container where
the engine put it. Without a `network` entry the VM keeps vmpod's user-mode network.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vmpod.errors import VmpodError
from vmpod.run import run

_CLONE_NEWNET = 0x40000000
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IP_HINT = "install iproute2 (ip and tc)"
SANDBOX_ANNOTATIONS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")


class NetworkMode(StrEnum):
    HOST = "host"  # no network namespace listed: the VM gets vmpod's user-mode network
    NEW = "new"  # a namespace of its own, empty but for what hooks put in it
    JOIN = "join"  # the namespace at `path`, prepared by the engine


@dataclass(frozen=True)
class NetworkNamespace:
    mode: NetworkMode = NetworkMode.HOST
    path: str = ""

    @classmethod
    def from_config(cls, linux: dict[str, Any]) -> NetworkNamespace:
        namespaces = linux.get("namespaces") or []
        if not isinstance(namespaces, list):
            raise VmpodError("linux.namespaces must be a list")
        for entry in namespaces:
            if isinstance(entry, dict) and entry.get("type") == "network":
                path = entry.get("path") or ""
                if not isinstance(path, str):
                    raise VmpodError("linux.namespaces[].path must be a string")
                return cls(NetworkMode.JOIN, path) if path else cls(NetworkMode.NEW)
        return cls()


@dataclass(frozen=True)
class Interface:
    """The namespace's interface as the guest takes it over."""

    name: str
    mac: str
    address: str  # CIDR
    gateway: str  # empty: no default route


def enter(namespace: NetworkNamespace) -> None:
    """Moves this process (and so every child it starts afterwards) into the container's namespace."""
    if namespace.mode is NetworkMode.HOST:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if namespace.mode is NetworkMode.NEW:
        if libc.unshare(_CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            raise VmpodError(f"cannot create a network namespace: {error}", exit_code=1)
        return
    try:
        fd = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise VmpodError(f"cannot open the network namespace {namespace.path}: {e.strerror}", exit_code=1) from None
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            raise VmpodError(f"cannot join the network namespace {namespace.path}: {error}", exit_code=1)
    finally:
        os.close(fd)


def _json(argv: list[str]) -> list[dict[str, Any]]:
    done = run(argv, hint=_IP_HINT)
    try:
        data = json.loads(done.stdout or "[]")
    except ValueError:
        raise VmpodError(f"{argv[0]} printed something that is not JSON", _IP_HINT) from None
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def find_interface(tap: str) -> Interface | None:
    """The first interface of this namespace, besides lo and the VM's tap, with an IPv4 address."""
    gateway = ""
    for route in _json(["ip", "-j", "-4", "route", "show", "default"]):
        if isinstance(route.get("gateway"), str):
            gateway = str(ipaddress.IPv4Address(route["gateway"]))
            break
    for link in _json(["ip", "-j", "addr", "show"]):
        name, mac = link.get("ifname"), link.get("address")
        if name in ("lo", tap) or not isinstance(name, str) or not isinstance(mac, str):
            continue
        if not _IFNAME.match(name) or not _MAC.match(mac):
            continue
        for addr in link.get("addr_info") or []:
            if isinstance(addr, dict) and addr.get("family") == "inet":
                address = ipaddress.IPv4Interface(f"{addr.get('local')}/{addr.get('prefixlen')}")
                return Interface(name, mac, str(address), gateway)
    return None


def is_sandbox(annotations: dict[str, str]) -> bool:
    """A Kubernetes pod's pause container, which only holds the namespaces: it leaves the pod's
    interface to the containers that do the work (annotations as containerd and CRI-O set them)."""
    return any(annotations.get(key) == "sandbox" for key in SANDBOX_ANNOTATIONS)


def mirror(interface: Interface, tap: str) -> None:
    """Every frame that arrives on the interface leaves by the tap, and the other way round: the
    namespace's own stack no longer sees the interface's traffic, the guest does. An interface holds one
    VM: a container started later in the same namespace (a restarted one, another of the pod) takes it."""
    run(["ip", "link", "set", "dev", tap, "up"], hint=_IP_HINT)
    run(["tc", "qdisc", "del", "dev", interface.name, "ingress"], check=False)
    for source, target in ((interface.name, tap), (tap, interface.name)):
        run(["tc", "qdisc", "add", "dev", source, "ingress"], hint=_IP_HINT)
        # fmt: off
        run(["tc", "filter", "add", "dev", source, "parent", "ffff:", "protocol", "all",
             "u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", target], hint=_IP_HINT)
        # fmt: on

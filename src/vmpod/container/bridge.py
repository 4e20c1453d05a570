"""Bridged networks (root only): `vmpod network create NAME` makes a Linux bridge with a /24 subnet;
each container on it gets a tap device on the bridge and its own address.

The tap is opened through /dev/net/tun by the VM's owner and passed to QEMU as an fd, without
IFF_PERSIST: it disappears with its last fd, so a killed owner leaves no device behind. Containers find
each other by name through the DNS responder in `dns.py`, which answers from the leases kept here.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from vmpod.errors import VmpodError
from vmpod.paths import StateDir, write_atomically
from vmpod.run import run

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IP_HINT = "install iproute2"


@dataclass(frozen=True)
class Network:
    name: str
    subnet: str  # e.g. 10.89.1.0/24
    bridge: str  # the Linux bridge's interface name

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


class NetworkStore:
    def __init__(self, state: StateDir) -> None:
        self.root = state.root / "networks"

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def get(self, name: str) -> Network:
        try:
            data = json.loads(self._path(name).read_bytes())
        except FileNotFoundError:
            raise VmpodError(f"network {name} not found", "create it with `vmpod network create NAME`") from None
        return Network(str(data["name"]), str(data["subnet"]), str(data["bridge"]))

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []

    def create(self, name: str, subnet: str | None) -> Network:
        if os.geteuid() != 0:
            raise VmpodError("bridged networks need root", "run as root, or use the default network")
        if not _NAME.match(name) or name in ("default", "bridge", "none", "user"):
            raise VmpodError(f"invalid network name {name!r}", "use letters, digits, '_', '.', '-'")
        if name in self.names():
            raise VmpodError(f"network with name {name} already exists")
        taken = {self.get(n).subnet for n in self.names()}
        chosen = subnet or next(f"10.89.{i}.0/24" for i in range(1, 255) if f"10.89.{i}.0/24" not in taken)
        try:
            ipaddress.ip_network(chosen)
        except ValueError:
            raise VmpodError(f"invalid subnet {chosen!r}", "use A.B.C.0/24") from None
        network = Network(name, chosen, "vmpod" + hashlib.sha256(name.encode()).hexdigest()[:8])
        run(["ip", "link", "add", "name", network.bridge, "type", "bridge"], hint=_IP_HINT)
        try:
            run(["ip", "addr", "add", f"{network.gateway}/{network.prefix}", "dev", network.bridge], hint=_IP_HINT)
            run(["ip", "link", "set", network.bridge, "up"], hint=_IP_HINT)
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(name), json.dumps(network.__dict__).encode())
        except BaseException:
            run(["ip", "link", "del", network.bridge], check=False)
            raise
        return network

    def remove(self, name: str) -> None:
        network = self.get(name)
        run(["ip", "link", "del", network.bridge], check=False)
        self._path(name).unlink()


def _leases(store: NetworkStore, network: Network) -> Path:
    directory = store.root / f"{network.name}.leases"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _live_lease(path: Path) -> dict[str, str] | None:
    from vmpod.container.state import alive

    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and alive(int(data.get("pid", 0)), int(data.get("pid_start", 0))) else None


def lease_address(stack: ExitStack, store: NetworkStore, network: Network, name: str) -> str:
    """The lowest free address (the gateway is the bridge's), held for as long as this process lives."""
    from vmpod.container.state import start_time

    directory = _leases(store, network)
    me = os.getpid()
    record = json.dumps({"name": name, "pid": me, "pid_start": start_time(me)}).encode()
    for host in list(ipaddress.ip_network(network.subnet).hosts())[1:]:
        path = directory / str(host)
        if path.exists() and _live_lease(path) is None:
            path.unlink(missing_ok=True)  # its owner died without giving it back
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            out.write(record)
        stack.callback(path.unlink, missing_ok=True)
        return str(host)
    raise VmpodError(f"network {network.name} has no free address left")


def peers(store: NetworkStore, network: Network) -> dict[str, str]:
    """Names and addresses of the containers now on the network."""
    found = {}
    for path in _leases(store, network).iterdir():
        lease = _live_lease(path)
        if lease is not None:
            found[str(lease["name"])] = path.name
    return found


def create_tap(stack: ExitStack) -> tuple[int, str]:
    """A tap device in this process's network namespace, as an fd for QEMU, and its name; it goes away
    with its last fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    request = struct.pack("16sH", b"vmtap%d", _IFF_TAP | _IFF_NO_PI)
    name = fcntl.ioctl(fd, _TUNSETIFF, request)[:16].rstrip(b"\0").decode()
    return fd, name


def open_tap(stack: ExitStack, network: Network) -> int:
    """A tap device on the network's bridge, as an fd for QEMU."""
    fd, name = create_tap(stack)
    run(["ip", "link", "set", "dev", name, "master", network.bridge, "up"], hint=_IP_HINT)
    return fd

"""Container networking: the user-mode network (no root needed), published ports, /etc files.

Every container gets QEMU's user-mode network (slirp): outbound TCP and UDP through the host, DNS
through the host's resolver, the guest at 10.0.2.15/24 behind 10.0.2.2. `-p` becomes a `hostfwd`
rule; `--network none` leaves only the loopback interface.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vmpod.errors import VmpodError

GUEST_ADDRESS = "10.0.2.15"
GUEST_PREFIX = 24
GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
# Published ports listen on loopback unless an address is given: nothing is exposed by surprise.
DEFAULT_HOST_IP = "127.0.0.1"
_PUBLISH = re.compile(
    r"^(?:(?:\[(?P<ip6>[0-9a-fA-F:]+)\]|(?P<ip>\d+\.\d+\.\d+\.\d+)):)?(?:(?P<host>\d*):)?(?P<port>\d+)(?:/(?P<proto>tcp|udp))?$"
)


class NetworkMode(StrEnum):
    USER = "user"
    NONE = "none"

    BRIDGE = "bridge"  # a network made by `vmpod network create`

    @classmethod
    def parse(cls, text: str) -> NetworkMode:
        if text in ("bridge", "default", "user", "slirp"):
            return cls.USER  # Docker's default network name maps to ours
        if text == "none":
            return cls.NONE
        return cls.BRIDGE


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortMapping:
        return cls(str(data["host_ip"]), int(data["host_port"]), int(data["container_port"]), str(data["protocol"]))


def _free_port(host_ip: str, protocol: str) -> int:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6 if ":" in host_ip else socket.AF_INET, kind) as probe:
        probe.bind((host_ip, 0))
        port: int = probe.getsockname()[1]
        return port


def _port(text: str, what: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise VmpodError(f"invalid {what} port {text}", "use 1-65535")
    return value


def parse_publish(text: str) -> PortMapping:
    """`[IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]`; a missing host port is chosen free."""
    match = _PUBLISH.match(text.strip())
    if not match:
        raise VmpodError(f"invalid port mapping {text!r}", "use [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]")
    protocol = match["proto"] or "tcp"
    host_ip = match["ip6"] or match["ip"] or DEFAULT_HOST_IP
    container_port = _port(match["port"], "container")
    host_port = _port(match["host"], "host") if match["host"] else _free_port(host_ip, protocol)
    return PortMapping(host_ip, host_port, container_port, protocol)


def publish_all(exposed: dict[str, Any]) -> list[PortMapping]:
    """`-P`: every port the image exposes, on a free host port."""
    mappings = []
    for key in sorted(exposed):
        port, _, protocol = key.partition("/")
        mappings.append(parse_publish(f"{port}/{protocol or 'tcp'}"))
    return mappings


def hosts_file(hostname: str, extra: list[str], networked: bool, address: str = GUEST_ADDRESS) -> str:
    """/etc/hosts as Docker writes it, plus `--add-host NAME:IP` entries (`host-gateway` is the host)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if networked:
        lines.append(f"{address}\t{hostname}")
    else:
        lines.append(f"127.0.1.1\t{hostname}")
    for entry in extra:
        name, sep, address = entry.partition(":")
        if not sep or not name or not address:
            raise VmpodError(f"invalid --add-host {entry!r}", "use NAME:IP")
        lines.append(f"{GATEWAY if address == 'host-gateway' else address}\t{name}")
    return "\n".join(lines) + "\n"


def resolv_conf(dns: list[str], networked: bool) -> str:
    servers = dns or ([SLIRP_DNS] if networked else [])
    return "".join(f"nameserver {server}\n" for server in servers)


def hostfwd_rules(ports: list[PortMapping]) -> list[str]:
    rules = []
    for mapping in ports:
        host_ip = f"[{mapping.host_ip}]" if ":" in mapping.host_ip else mapping.host_ip
        rules.append(f"{mapping.protocol}:{host_ip}:{mapping.host_port}-:{mapping.container_port}")
    return rules

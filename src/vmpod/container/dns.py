"""Name resolution on bridged networks: a tiny DNS responder on the bridge's gateway address.

Every process that owns a VM on the network serves it (SO_REUSEPORT: the kernel hands each query to one
of them) and answers from the network's leases, so a container finds its peers by name whenever they
started, as with Docker's embedded DNS. Queries come from guests and are parsed as hostile input:
bounded, and anything unexpected is dropped or answered with an error code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

_HEADER = struct.Struct(">HHHHHH")
_MAX_QUERY = 512
_TYPE_A, _CLASS_IN = 1, 1
_NXDOMAIN, _FORMERR = 3, 1


def _question(packet: bytes) -> tuple[str, int, int, int] | None:
    """(name, type, class, end offset) of the single question, or None if malformed."""
    offset, labels = _HEADER.size, list[str]()
    while True:
        if offset >= len(packet) or len(labels) > 127:
            return None
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length > len(packet):
            return None  # compression pointers are not valid in a question
        labels.append(packet[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack_from(">HH", packet, offset)
    return ".".join(labels), qtype, qclass, offset + 4


def answer(packet: bytes, lookup: Callable[[str], str | None]) -> bytes | None:
    """The response to one query, or None to drop it."""
    if not _HEADER.size <= len(packet) <= _MAX_QUERY:
        return None
    ident, flags, qdcount, _, _, _ = _HEADER.unpack_from(packet)
    if flags & 0x8000 or qdcount != 1:  # a response, or not exactly one question
        return None
    question = _question(packet)
    if question is None:
        return _HEADER.pack(ident, 0x8180 | _FORMERR, 0, 0, 0, 0)
    name, qtype, qclass, end = question
    address = lookup(name)
    flags_out = 0x8400 | 0x0100 | (flags & 0x0100)  # response, authoritative, recursion desired echoed
    if address is None:
        return _HEADER.pack(ident, flags_out | _NXDOMAIN, 1, 0, 0, 0) + packet[_HEADER.size : end]
    if qtype != _TYPE_A or qclass != _CLASS_IN:
        return _HEADER.pack(ident, flags_out, 1, 0, 0, 0) + packet[_HEADER.size : end]  # the name has no such record
    record = struct.pack(">HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, 0, 4) + ipaddress.IPv4Address(address).packed
    return _HEADER.pack(ident, flags_out, 1, 1, 0, 0) + packet[_HEADER.size : end] + record


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self.lookup = lookup
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = answer(data, self.lookup)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


@asynccontextmanager
async def serve(address: str, lookup: Callable[[str], str | None]) -> AsyncIterator[None]:
    """Answers DNS queries on address:53 while the block runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address, 53))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Responder(lookup), sock=sock)
    try:
        yield
    finally:
        transport.close()

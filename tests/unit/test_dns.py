"""The bridged networks' DNS responder: answers, and hostile queries."""

import struct

from vmpod.container.dns import answer

PEERS = {"srv": "10.77.3.2"}


def _query(name: str, qtype: int = 1, flags: int = 0x0100, qdcount: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", 0x1234, flags, qdcount, 0, 0, 0) + labels + struct.pack(">HH", qtype, 1)


def test_a_record_for_a_peer() -> None:
    response = answer(_query("srv"), PEERS.get)
    assert response is not None
    ident, flags, qd, an, _, _ = struct.unpack_from(">HHHHHH", response)
    assert (ident, flags & 0xF, qd, an) == (0x1234, 0, 1, 1)
    assert response.endswith(bytes([10, 77, 3, 2]))


def test_unknown_name_and_other_types() -> None:
    missing = answer(_query("nope"), PEERS.get)
    assert missing is not None and struct.unpack_from(">H", missing, 2)[0] & 0xF == 3
    aaaa = answer(_query("srv", qtype=28), PEERS.get)
    assert aaaa is not None and struct.unpack_from(">HHHH", aaaa)[3] == 0


def test_hostile_queries_are_dropped_or_refused() -> None:
    assert answer(b"\0" * 5, PEERS.get) is None  # shorter than a header
    assert answer(b"\0" * 600, PEERS.get) is None  # longer than a DNS query may be
    assert answer(_query("srv", flags=0x8100), PEERS.get) is None  # a response, not a query
    assert answer(_query("srv", qdcount=2), PEERS.get) is None
    truncated = _query("srv")[:-3]
    bad = answer(truncated, PEERS.get)
    assert bad is not None and struct.unpack_from(">H", bad, 2)[0] & 0xF == 1
    pointer = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
    refused = answer(pointer, PEERS.get)
    assert refused is not None and struct.unpack_from(">H", refused, 2)[0] & 0xF == 1

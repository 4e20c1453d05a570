"""A fake guest sends malformed frames: the host session rejects each with ProtocolError, never crashes."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from vmpod.guest.codec import ProtocolError, encode_fields, encode_frame
from vmpod.guest.messages import MAX_DATA, PROTOCOL_VERSION, STREAM_WINDOW, Field, Message
from vmpod.guest.session import AgentSession, fd_sink

READY = encode_frame(
    Message.READY, 0, encode_fields([(Field.PROTO_VERSION, PROTOCOL_VERSION), (Field.AGENT_VERSION, "fake")])
)


async def _host_sees(*frames: bytes, close: bool = False) -> BaseException | None:
    host, guest = socket.socketpair()
    session = AgentSession(host, fd_sink(-1, -1))
    await session.open()
    try:
        guest.sendall(b"".join(frames))
        if close:
            guest.close()
        try:
            await asyncio.wait_for(session.wait_ready(), 5)
            await asyncio.wait_for(session.wait_exit(), 5)
        except ProtocolError as e:
            return e
        return None
    finally:
        await session.close()
        guest.close()
        host.close()


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([struct.pack(">IHHI", 0x7FFFFFFF, Message.STDOUT, 0, 1)], "exceeds the limit"),
        ([READY, struct.pack(">IHHI", 0, 77, 0, 0)], "unknown message type"),
        ([encode_frame(Message.READY, 0, encode_fields([(Field.PROTO_VERSION, 99)]))], "protocol 99"),
        ([READY, encode_frame(Message.STDOUT, 9, b"x")], "unknown process"),
        ([READY, encode_frame(Message.STDOUT, 1, b"x" * (MAX_DATA + 1))], "too large"),
        ([READY, encode_frame(Message.STDIN_ACK, 1, encode_fields([(Field.COUNT, STREAM_WINDOW)]))], "more stdin"),
        ([READY, encode_frame(Message.OK, 42)], "unknown request"),
        ([READY, encode_frame(Message.START, 1)], "unexpected message START"),
        ([READY, encode_frame(Message.EXIT, 1, b"\x00\x20\x00")], "truncated field"),
        ([READY, encode_frame(Message.EXIT, 1, encode_fields([(Field.EXIT_CODE, 1)]))[:-2]], "closed"),
    ],
)
def test_malformed_frames_end_the_session(frames: list[bytes], problem: str) -> None:
    error = asyncio.run(_host_sees(*frames, close=True))
    assert isinstance(error, ProtocolError)
    assert problem in str(error)

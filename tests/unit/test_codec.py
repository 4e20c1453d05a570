"""The host codec accepts what the protocol allows and rejects everything else."""

import struct

import pytest

from vmpod.guest.codec import ProtocolError, decode_fields, decode_header, encode_fields, encode_frame
from vmpod.guest.messages import HEADER_SIZE, MAX_PAYLOAD, Field, Message

ALL = frozenset(Field)


def test_frame_round_trip() -> None:
    frame = encode_frame(Message.STDOUT, 7, b"hello")
    header = decode_header(frame[:HEADER_SIZE])
    assert (header.type, header.id, header.length) == (Message.STDOUT, 7, 5)
    assert frame[HEADER_SIZE:] == b"hello"


def test_fields_round_trip() -> None:
    payload = encode_fields([(Field.ARG, "sh"), (Field.ARG, "-c"), (Field.UID, 1000), (Field.CWD, "/tmp")])
    fields = decode_fields(payload, ALL)
    assert fields.lists[Field.ARG] == (b"sh", b"-c")
    assert fields.u32(Field.UID) == 1000
    assert fields.text(Field.CWD) == "/tmp"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (struct.pack(">IHHI", MAX_PAYLOAD + 1, Message.STDOUT, 0, 1), "exceeds"),
        (struct.pack(">IHHI", 0, 999, 0, 1), "unknown message"),
        (struct.pack(">IHHI", 0, Message.OK, 1, 1), "reserved"),
        (b"\0\0\0", "truncated"),
    ],
)
def test_bad_headers_are_rejected(raw: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_header(raw)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (struct.pack(">HI", Field.CWD, 10) + b"abc", "past the end"),
        (b"\0\x10\0", "truncated"),
        (struct.pack(">HI", 999, 0), "unknown field"),
        (encode_fields([(Field.CWD, "/"), (Field.CWD, "/")]), "repeats"),
        (encode_fields([(Field.PID, 1)]), "not allowed"),
    ],
)
def test_bad_fields_are_rejected(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_fields(payload, frozenset({Field.CWD}))


def test_u32_of_wrong_size_is_rejected() -> None:
    fields = decode_fields(struct.pack(">HI", Field.UID, 2) + b"\0\1", ALL)
    with pytest.raises(ProtocolError, match="u32"):
        fields.u32(Field.UID)


def test_nul_in_a_string_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_fields([(Field.ENV, "A=\0")])

"""Frames and fields of the agent protocol (docs/protocol.md), decoded as hostile input."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vmpod.guest.messages import HEADER_SIZE, MAX_PAYLOAD, Field, Message

_HEADER = struct.Struct(">IHHI")
_FIELD = struct.Struct(">HI")
_U32 = struct.Struct(">I")
LIST_FIELDS = frozenset({Field.ARG, Field.ENV, Field.GROUP, Field.MOUNT, Field.FILE})
STREAM_MESSAGES = frozenset({Message.STDIN, Message.STDOUT, Message.STDERR})
FieldValue = int | str | bytes


class ProtocolError(Exception):
    """The peer broke the protocol; the connection cannot be trusted any more."""


@dataclass(frozen=True)
class Header:
    length: int
    type: Message
    id: int


def encode_frame(kind: Message, ident: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(len(payload), kind, 0, ident) + payload


def decode_header(data: bytes) -> Header:
    if len(data) != HEADER_SIZE:
        raise ProtocolError("truncated frame header")
    length, kind, reserved, ident = _HEADER.unpack(data)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {MAX_PAYLOAD}")
    if reserved != 0:
        raise ProtocolError("reserved header bits are set")
    try:
        message = Message(kind)
    except ValueError:
        raise ProtocolError(f"unknown message type {kind}") from None
    return Header(length, message, ident)


def _encode_value(tag: Field, value: FieldValue) -> bytes:
    if isinstance(value, bool | int):
        raw = _U32.pack(int(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
    else:
        raw = value
    if b"\0" in raw and not isinstance(value, int):
        raise ValueError(f"field {tag.name} contains a NUL byte")
    return _FIELD.pack(tag, len(raw)) + raw


def encode_fields(fields: Iterable[tuple[Field, FieldValue]]) -> bytes:
    return b"".join(_encode_value(tag, value) for tag, value in fields)


@dataclass(frozen=True)
class Fields:
    """Decoded fields: single values by tag, list fields as tuples."""

    values: Mapping[Field, bytes]
    lists: Mapping[Field, tuple[bytes, ...]]

    def u32(self, tag: Field) -> int | None:
        raw = self.values.get(tag)
        if raw is None:
            return None
        if len(raw) != 4:
            raise ProtocolError(f"field {tag.name} is not a u32")
        value: int = _U32.unpack(raw)[0]
        return value

    def text(self, tag: Field, limit: int = 4096) -> str | None:
        raw = self.values.get(tag)
        if raw is None:
            return None
        return raw[:limit].decode("utf-8", "replace")


def decode_fields(payload: bytes, allowed: frozenset[Field]) -> Fields:
    values: dict[Field, bytes] = {}
    lists: dict[Field, list[bytes]] = {}
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < _FIELD.size:
            raise ProtocolError("truncated field header")
        raw_tag, length = _FIELD.unpack_from(payload, offset)
        offset += _FIELD.size
        if length > len(payload) - offset:
            raise ProtocolError("field runs past the end of the frame")
        try:
            tag = Field(raw_tag)
        except ValueError:
            raise ProtocolError(f"unknown field tag {raw_tag}") from None
        if tag not in allowed:
            raise ProtocolError(f"field {tag.name} is not allowed here")
        value = payload[offset : offset + length]
        offset += length
        if tag in LIST_FIELDS:
            lists.setdefault(tag, []).append(value)
        elif tag in values:
            raise ProtocolError(f"field {tag.name} repeats")
        else:
            values[tag] = value
    return Fields(values, {k: tuple(v) for k, v in lists.items()})

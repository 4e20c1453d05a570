"""agent/protocol.h is generated from messages.py; a drift between C and Python fails here."""

from pathlib import Path

from vmpod.guest.cheader import render

REPO = Path(__file__).resolve().parents[2]


def test_c_header_matches_python_numbers() -> None:
    assert (REPO / "agent" / "protocol.h").read_text() == render(), "run `make agent/protocol.h`"


def test_protocol_doc_names_every_message() -> None:
    from vmpod.guest.messages import Message

    doc = (REPO / "docs" / "protocol.md").read_text()
    for message in Message:
        assert f"| {message.value} | {message.name} |" in doc

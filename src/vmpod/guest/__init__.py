"""Host side of the host<->agent protocol (see docs/protocol.md)."""

"""The one error type library code raises; only the CLI prints it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Docker's exit codes for failures that are not the container's own status."""

    ENGINE = 125  # vmpod itself failed
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127
    SIGNAL_BASE = 128  # killed by signal N: 128 + N


class VmpodError(Exception):
    """A failure a user can act on: a one-line message, an optional hint, an exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = ExitCode.ENGINE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

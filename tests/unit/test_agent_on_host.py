"""The real agent (host test mode, `--channel-fd`) driven by the real host session over a socketpair."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from vmpod.guest.messages import Field, Message
from vmpod.guest.session import AgentError, AgentSession, ExitStatus, ProcessSpec, fd_sink

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "agent" / "build" / "vmpod-agent"


def _spec(*args: str, stdin: bool = False) -> ProcessSpec:
    return ProcessSpec(
        args=args,
        env=("PATH=/usr/bin:/bin",),
        cwd="/",
        uid=os.getuid(),
        gid=os.getgid(),
        groups=(),
        terminal=False,
        stdin_open=stdin,
        root_device="",
    )


@asynccontextmanager
async def _agent(out: int, err: int) -> AsyncIterator[AgentSession]:
    if not AGENT.is_file():
        pytest.fail(f"{AGENT} is missing: run `make agent`")
    host, guest = socket.socketpair()
    proc = subprocess.Popen([str(AGENT), "--channel-fd", str(guest.fileno())], pass_fds=[guest.fileno()])
    guest.close()
    session = AgentSession(host, fd_sink(out, err))
    await session.open()
    try:
        await asyncio.wait_for(session.wait_ready(), 10)
        yield session
    finally:
        await session.close()
        host.close()
        proc.wait(10)


def _run(*args: str, stdin: bytes | None = None) -> tuple[ExitStatus, bytes, bytes]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:

        async def main() -> ExitStatus:
            async with _agent(out.fileno(), err.fileno()) as session:
                await session.start(_spec(*args, stdin=stdin is not None))
                if stdin is not None:
                    await session.send_stdin(stdin)
                    await session.close_stdin()
                status = await asyncio.wait_for(session.wait_exit(), 30)
                await session.shutdown()
                return status

        status = asyncio.run(main())
        out.seek(0)
        err.seek(0)
        return status, out.read(), err.read()


def test_output_streams_and_exit_code() -> None:
    status, out, err = _run("/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert (status, out, err) == (ExitStatus(code=3), b"out\n", b"err\n")


def test_stdin_through_the_window_with_eof() -> None:
    data = os.urandom(1 << 20)  # four windows' worth: only acknowledgements let it through
    status, out, _ = _run("/bin/cat", stdin=data)
    assert status == ExitStatus(code=0)
    assert out == data


def test_killed_by_a_signal() -> None:
    status, _, _ = _run("/bin/sh", "-c", "kill -9 $$")
    assert status == ExitStatus(signal=9)


def test_missing_command_is_enoent() -> None:
    async def main() -> AgentError:
        async with _agent(1, 2) as session:
            with pytest.raises(AgentError) as caught:
                await session.start(_spec("no-such-command-anywhere"))
            await session.shutdown()
            return caught.value

    error = asyncio.run(main())
    assert error.errno == 2
    assert "not found" in error.message


def test_machine_is_checked_whole_before_anything_is_applied() -> None:
    """In host mode the agent only checks MACHINE (the clock and random pool are the host's): a good one is
    OK, a bad value is EINVAL naming the field."""

    async def main() -> list[str]:
        async with _agent(1, 2) as session:
            await session.machine("02:00:00:00:00:02")
            errors = []
            for fields in (
                [(Field.TIME, "12x")],
                [(Field.SEED, "abc")],
                [(Field.MAC, "01:00:5e:00:00:01")],
                [(Field.TIME, "1"), (Field.SEED, "00" * 65)],
            ):
                with pytest.raises(AgentError) as caught:
                    await session._request(Message.MACHINE, fields)
                assert caught.value.errno == errno.EINVAL
                errors.append(caught.value.message)
            await session.shutdown()
            return errors

    errors = asyncio.run(main())
    assert ["TIME" in errors[0], "SEED" in errors[1], "multicast" in errors[2], "SEED" in errors[3]] == [True] * 4


def test_agent_own_checks() -> None:
    """The agent author's wider host-mode checks (terminal, credit, malformed frames, ...)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "agent" / "tests" / "host_mode_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

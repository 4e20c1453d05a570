"""`vmpod run -it` on a real pseudo-terminal: raw mode, window size, resize, typing, exit code."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time

import pytest

from tests.conftest import Vmpod, read_until

pytestmark = pytest.mark.integration


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _spawn_on_pty(vmpod: Vmpod, *args: str) -> tuple[int, int]:
    pid, master = pty.fork()
    if pid == 0:  # the child: vmpod with the pty as its controlling terminal
        _set_size(0, 33, 111)
        os.execve(vmpod.argv()[0], vmpod.argv(*args), vmpod.env)
    return pid, master


def test_terminal_size_and_exit_code(vmpod: Vmpod) -> None:
    pid, master = _spawn_on_pty(vmpod, "run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size; exit 4")
    seen = bytearray()
    read_until(master, b"33 111", seen, timeout=120)
    assert b"/dev/pts/0" in seen
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 4
    local_modes = termios.tcgetattr(master)[3]
    assert local_modes & termios.ICANON and local_modes & termios.ECHO, "the terminal was left in raw mode"
    os.close(master)


def test_interactive_shell_typing_and_resize(vmpod: Vmpod) -> None:
    pid, master = _spawn_on_pty(vmpod, "run", "--rm", "-it", "busybox", "sh")
    seen = bytearray()
    read_until(master, b"# ", seen, timeout=120)
    os.write(master, b"echo $((6*7))\r")
    read_until(master, b"42", seen, timeout=120)
    _set_size(master, 40, 120)  # the kernel sends SIGWINCH to vmpod, which forwards the new size
    deadline = time.monotonic() + 60
    while b"40 120" not in seen:
        assert time.monotonic() < deadline, f"resize never arrived: {bytes(seen)!r}"
        os.write(master, b"stty size\r")
        time.sleep(1)
        while select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 4096)
    os.write(master, b"\x03")  # Ctrl-C reaches the shell through the guest's terminal, not as a host signal
    os.write(master, b"exit 5\r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5
    os.close(master)

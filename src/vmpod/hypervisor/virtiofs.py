"""virtio-fs shares: one `virtiofsd` per shared directory, reached through an abstract unix socket.

The socket is abstract (no file, no path-length limit) and created by vmpod, which hands the listening
fd to virtiofsd (`--fd`); QEMU connects to it by name. Each daemon is a context on the caller's
ExitStack and dies with it (PR_SET_PDEATHSIG, through `run.spawn`).
"""

from __future__ import annotations

import os
import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

from vmpod.run import spawn

VIRTIOFSD = Path(os.environ.get("VMPOD_VIRTIOFSD", "/usr/lib/qemu/virtiofsd"))


def available() -> bool:
    """virtio-fs is used where the daemon exists, unless VMPOD_SHARES=9p asks for 9p."""
    return VIRTIOFSD.is_file() and os.environ.get("VMPOD_SHARES", "") != "9p"


def start_daemon(stack: ExitStack, source: Path, name: str) -> str:
    """Starts virtiofsd for source; returns the abstract socket name QEMU connects to."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind("\0" + name)
        listener.listen(1)
        daemon = spawn(
            [
                str(VIRTIOFSD),
                f"--fd={listener.fileno()}",
                "-o",
                f"source={source}",
                "-o",
                "cache=auto",
                "-o",
                "sandbox=chroot",
                "-o",
                "xattr",
            ],
            pass_fds=(listener.fileno(),),
            stdout=subprocess.DEVNULL,
            hint="install qemu-system-common, or use VMPOD_SHARES=9p",
        )
    stack.callback(_stop, daemon)
    return name


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    """virtiofsd ends when QEMU disconnects; a daemon that did not is stopped."""
    try:
        daemon.wait(1)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()

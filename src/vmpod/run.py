"""The one place that starts subprocesses: logged under --debug, clean environment, readable errors."""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence

from vmpod.errors import VmpodError

log = logging.getLogger("vmpod")

_PR_SET_PDEATHSIG = 1
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _SAFE_ENV}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(extra or {})
    return env


def _missing(argv: Sequence[str], hint: str | None) -> VmpodError:
    return VmpodError(f"{argv[0]} was not found", hint or f"install the Debian package providing {argv[0]}")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a short helper command to completion (mke2fs, qemu-img …)."""
    log.debug("+ %s", shlex.join(argv))
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=capture,
            text=True,
            env=_environment(env),
            check=False,
        )
    except FileNotFoundError:
        raise _missing(argv, hint) from None
    if check and done.returncode != 0:
        detail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise VmpodError(f"{argv[0]} failed: {detail[0]}", hint)
    return done


def _die_with_parent() -> None:
    # The hypervisor must never outlive the vmpod process that owns it, even one killed with SIGKILL.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()


def spawn(
    argv: Sequence[str],
    *,
    pass_fds: Sequence[int] = (),
    stdout: int | None = None,
    hint: str | None = None,
) -> subprocess.Popen[bytes]:
    """Starts a long-lived child (the hypervisor) that dies with this process."""
    log.debug("+ %s", shlex.join(argv))
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            pass_fds=tuple(pass_fds),
            env=_environment(None),
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError:
        raise _missing(argv, hint) from None

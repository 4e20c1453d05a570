"""From the image config and `vmpod run` flags to the process the agent starts (Docker's rules)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from vmpod.errors import VmpodError
from vmpod.image.config import DEFAULT_PATH, RunConfig, merge_env


@dataclass(frozen=True)
class ProcessRequest:
    """What the user asked for on the command line."""

    command: tuple[str, ...] = ()
    entrypoint: str | None = None  # "" clears the image's entrypoint, as Docker's --entrypoint ""
    env: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def argv(config: RunConfig, request: ProcessRequest) -> tuple[str, ...]:
    """Entrypoint + Cmd as Docker combines them: a CLI command replaces Cmd, --entrypoint resets Cmd."""
    if request.entrypoint is not None:
        entrypoint = tuple(shlex.split(request.entrypoint)) if request.entrypoint else ()
        cmd = request.command
    else:
        entrypoint = config.entrypoint
        cmd = request.command or config.cmd
    result = (*entrypoint, *cmd)
    if not result:
        raise VmpodError("no command specified", "give a command after the image name, or set CMD in the image")
    return result


def _env_entry(entry: str, source: str) -> str | None:
    key, sep, _ = entry.partition("=")
    if not key or any(c.isspace() for c in key) or "\0" in entry:
        raise VmpodError(f"invalid environment variable {entry!r} in {source}", "use KEY=VALUE")
    if sep:
        return entry
    value = os.environ.get(key)  # a bare KEY takes the host's value, and is dropped when unset
    return None if value is None else f"{key}={value}"


def _env_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise VmpodError(f"cannot read env file {path}: {e.strerror}") from None
    entries = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and (entry := _env_entry(line, path)) is not None:
            entries.append(entry)
    return entries


def environment(config: RunConfig, request: ProcessRequest, home: str) -> tuple[str, ...]:
    user_env: list[str] = []
    for path in request.env_files:
        user_env += _env_file(path)
    user_env += [e for entry in request.env if (e := _env_entry(entry, "-e")) is not None]
    env = merge_env((f"PATH={DEFAULT_PATH}", f"HOSTNAME={request.hostname}"), list(config.env))
    if request.tty:
        env = merge_env(env, ["TERM=xterm"])
    env = merge_env(env, user_env)
    if not any(e.startswith("HOME=") for e in env):
        env = (*env, f"HOME={home}")
    return env


def working_dir(config: RunConfig, request: ProcessRequest) -> str:
    cwd = request.workdir or config.working_dir or "/"
    if not cwd.startswith("/"):
        raise VmpodError(f"the working directory {cwd!r} is not absolute", "use -w /ABSOLUTE/PATH")
    return cwd

"""The parts of an OCI image config that decide how a container runs."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from vmpod.errors import VmpodError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VmpodError(f"image config: {what} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class RunConfig:
    """`config` of an OCI image config (Docker's ContainerConfig); unknown keys are kept as they are."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        data = dict(data or {})
        known = {k: data.pop(k, None) for k in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")}
        for key in ("WorkingDir", "User"):
            if known[key] is not None and not isinstance(known[key], str):
                raise VmpodError(f"image config: {key} must be a string")
        return cls(
            entrypoint=_strings(known["Entrypoint"], "Entrypoint"),
            cmd=_strings(known["Cmd"], "Cmd"),
            env=_strings(known["Env"], "Env"),
            working_dir=known["WorkingDir"] or "",
            user=known["User"] or "",
            extra=data,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.env:
            out["Env"] = list(self.env)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        return out

    def with_change(self, instruction: str) -> RunConfig:
        """Applies one Dockerfile instruction, as `docker import --change` does."""
        keyword, _, rest = instruction.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword in ("CMD", "ENTRYPOINT"):
            argv = _exec_form(rest)
            return replace(self, cmd=argv) if keyword == "CMD" else replace(self, entrypoint=argv)
        if keyword == "ENV":
            return replace(self, env=merge_env(self.env, _env_pairs(rest)))
        if keyword == "WORKDIR" and rest:
            return replace(self, working_dir=rest)
        if keyword == "USER" and rest:
            return replace(self, user=rest)
        if keyword in ("EXPOSE", "VOLUME", "LABEL", "STOPSIGNAL"):
            return replace(self, extra=_extra_change(self.extra, keyword, rest))
        raise VmpodError(
            f"unsupported --change instruction: {instruction!r}",
            "use CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, VOLUME, LABEL or STOPSIGNAL",
        )


def _exec_form(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise VmpodError(f"invalid JSON in --change: {text!r}: {e.msg}") from None
        return _strings(value, "CMD/ENTRYPOINT")
    return ("/bin/sh", "-c", text) if text else ()


def _env_pairs(text: str) -> list[str]:
    words = shlex.split(text)
    if words and "=" not in words[0]:
        return [f"{words[0]}={' '.join(words[1:])}"]
    if not all("=" in w for w in words):
        raise VmpodError(f"invalid ENV in --change: {text!r}", "use ENV KEY=VALUE")
    return words


def _extra_change(extra: dict[str, Any], keyword: str, rest: str) -> dict[str, Any]:
    out = dict(extra)
    if keyword == "EXPOSE":
        ports = dict(out.get("ExposedPorts") or {})
        for port in rest.split():
            ports[port if "/" in port else f"{port}/tcp"] = {}
        out["ExposedPorts"] = ports
    elif keyword == "VOLUME":
        volumes = dict(out.get("Volumes") or {})
        paths = list(_exec_form(rest)) if rest.startswith("[") else rest.split()
        volumes.update({p: {} for p in paths})
        out["Volumes"] = volumes
    elif keyword == "LABEL":
        labels = dict(out.get("Labels") or {})
        labels.update(dict(pair.split("=", 1) for pair in _env_pairs(rest)))
        out["Labels"] = labels
    else:
        out["StopSignal"] = rest
    return out


def merge_env(base: tuple[str, ...], overrides: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Later KEY=VALUE entries replace earlier ones with the same KEY, keeping first positions."""
    merged: dict[str, str] = {}
    for entry in (*base, *overrides):
        key, _, value = entry.partition("=")
        merged[key] = value
    return tuple(f"{k}={v}" for k, v in merged.items())

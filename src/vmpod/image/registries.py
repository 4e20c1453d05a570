"""Registry configuration in the format of containers-registries.conf(5), version 2 (TOML).

Read from `$VMPOD_REGISTRIES_CONF`, else `/etc/vmpod/registries.conf` when it exists (it never has to):

    [[registry]]
    location = "docker.io"
    [[registry.mirror]]
    location = "mirror.example:5000"
    insecure = true

A `[[registry]]` table matches the image names that start with its `prefix` (default: its `location`):
`insecure` reaches it over plain HTTP or HTTPS without certificate checks, `blocked` refuses it, and its
mirrors are tried in order before the registry itself when pulling (never when pushing), as Podman does.
`pull-from-mirror` ("all", "digest-only", "tag-only") limits which pulls use the mirrors. Unknown keys
are ignored, so a file written for Podman works.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmpod.errors import VmpodError

DEFAULT_PATH = Path("/etc/vmpod/registries.conf")
ENV = "VMPOD_REGISTRIES_CONF"
_PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Endpoint:
    """Where a pull may go: a location (`host[:port][/path]`) and whether it is insecure."""

    location: str
    insecure: bool = False


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    endpoint: Endpoint
    blocked: bool = False
    mirrors: tuple[Endpoint, ...] = ()
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class Source:
    """One place to pull a name from: the registry's domain, the repository there, insecure or not."""

    domain: str
    path: str
    insecure: bool
    mirror: bool


@dataclass(frozen=True)
class Transport:
    """How vmpod talks to one registry."""

    scheme: str  # "https" or "http"
    verify: bool  # check the TLS certificate
    http_fallback: bool  # after a failed HTTPS connection, try plain HTTP (insecure registries)


def _prefix_matches(prefix: str, name: str) -> bool:
    """`docker.io/library` matches `docker.io/library/busybox`, not `docker.io/libraryx`; `*.x` wildcards."""
    if prefix.startswith("*."):
        domain = name.split("/", 1)[0]
        return domain.endswith(prefix[1:])
    return name == prefix or name.startswith(prefix.rstrip("/") + "/")


@dataclass(frozen=True)
class RegistriesConf:
    registries: tuple[RegistryEntry, ...] = ()
    path: Path | None = None

    def entry(self, name: str) -> RegistryEntry | None:
        """The entry for a full name (`docker.io/library/busybox`): the longest matching prefix."""
        found = [e for e in self.registries if _prefix_matches(e.prefix, name)]
        return max(found, key=lambda e: len(e.prefix), default=None)

    def check_allowed(self, domain: str, path: str) -> None:
        entry = self.entry(f"{domain}/{path}")
        if entry is not None and entry.blocked:
            raise VmpodError(
                f"registry {entry.prefix} is blocked in {self.path}", f"remove `blocked = true` there to use {domain}"
            )

    def insecure(self, domain: str, path: str = "") -> bool:
        entry = self.entry(f"{domain}/{path}" if path else domain)
        return entry is not None and entry.endpoint.insecure

    def sources(self, domain: str, path: str, by_digest: bool) -> list[Source]:
        """Where a pull of `domain/path` goes, in order: the mirrors that apply, then the registry itself."""
        self.check_allowed(domain, path)
        name = f"{domain}/{path}"
        entry = self.entry(name)
        if entry is None:
            return [Source(domain, path, False, mirror=False)]
        rest = "" if entry.prefix.startswith("*.") else name[len(entry.prefix.rstrip("/")) :]

        def source(endpoint: Endpoint, mirror: bool) -> Source:
            if entry.prefix.startswith("*."):
                return Source(domain, path, endpoint.insecure, mirror)
            where, _, repository = (endpoint.location.rstrip("/") + rest).partition("/")
            return Source(where, repository, endpoint.insecure, mirror)

        use_mirrors = entry.pull_from_mirror == "all" or (entry.pull_from_mirror == "digest-only") == by_digest
        mirrors = [source(m, True) for m in entry.mirrors] if use_mirrors else []
        return [*mirrors, source(entry.endpoint, False)]


def transport(domain: str, tls_verify: bool = True, insecure: bool = False) -> Transport:
    """The decision for one registry: loopback over HTTP as Docker does; insecure (configured, or
    `--tls-verify=false`) over HTTPS without certificate checks, falling back to plain HTTP."""
    from vmpod.image.registry import is_loopback

    if is_loopback(domain):
        return Transport("http", verify=False, http_fallback=False)
    if insecure:
        return Transport("https", verify=False, http_fallback=True)
    return Transport("https", verify=tls_verify, http_fallback=False)


def _text(value: Any, what: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise VmpodError(f"{path}: {what} must be a non-empty string", "see containers-registries.conf(5)")
    return value.strip()


def _flag(table: dict[str, Any], key: str, path: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise VmpodError(f"{path}: `{key}` must be true or false", "see containers-registries.conf(5)")
    return value


def _tables(value: Any, what: str, path: Path) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise VmpodError(f"{path}: {what} must be a list of tables ([[{what}]])", "see containers-registries.conf(5)")
    return value


def parse(data: bytes, path: Path) -> RegistriesConf:
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise VmpodError(f"{path} is not valid TOML: {e}", "see containers-registries.conf(5)") from None
    entries = []
    for table in _tables(document.get("registry"), "registry", path):
        location = _text(table.get("location", table.get("prefix")), "registry location", path)
        prefix = _text(table.get("prefix", location), "registry prefix", path)
        mirrors = tuple(
            Endpoint(_text(m.get("location"), "mirror location", path), _flag(m, "insecure", path))
            for m in _tables(table.get("mirror"), "registry.mirror", path)
        )
        pull_from_mirror = table.get("pull-from-mirror", "all")
        if pull_from_mirror not in _PULL_FROM_MIRROR:
            raise VmpodError(f"{path}: pull-from-mirror must be one of {', '.join(_PULL_FROM_MIRROR)}")
        endpoint = Endpoint(location, _flag(table, "insecure", path))
        entries.append(RegistryEntry(prefix, endpoint, _flag(table, "blocked", path), mirrors, pull_from_mirror))
    return RegistriesConf(tuple(entries), path)


def load() -> RegistriesConf:
    """The configuration in effect: `$VMPOD_REGISTRIES_CONF`, else /etc/vmpod/registries.conf, else none."""
    configured = os.environ.get(ENV)
    path = Path(configured) if configured else DEFAULT_PATH
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if configured:
            raise VmpodError(f"{path} (from ${ENV}) does not exist") from None
        return RegistriesConf()
    except OSError as e:
        raise VmpodError(f"cannot read {path}: {e.strerror}") from None
    return parse(data, path)

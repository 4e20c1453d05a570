"""Registry credentials in a Docker-compatible `config.json` (`auths` → base64 `user:password`).

The file is `$VMPOD_AUTH_FILE`, else `~/.docker/config.json`, so `docker login` credentials work too.
Writes keep every other key of the file, and are atomic with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmpod.errors import VmpodError
from vmpod.paths import write_atomically

DOCKER_HUB = "docker.io"
# The key Docker itself uses for Docker Hub.
_DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_MAX_FILE = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


def auth_file() -> Path:
    chosen = os.environ.get("VMPOD_AUTH_FILE")
    return Path(chosen) if chosen else Path.home() / ".docker" / "config.json"


def _host(key: str) -> str:
    """`https://index.docker.io/v1/` → `docker.io`; `localhost:5000` stays."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _read(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise VmpodError(f"{path} is too large to be a credentials file")
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VmpodError(f"{path} is not valid JSON", "fix or remove it") from None
    except OSError as e:
        raise VmpodError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(value, dict) or not isinstance(value.get("auths", {}), dict):
        raise VmpodError(f"{path} is not a Docker config file", "its `auths` must be an object")
    return value


def load(registry: str, path: Path | None = None) -> Credentials | None:
    """The credentials stored for a registry (`docker.io`, `localhost:5000`), if any."""
    path = path or auth_file()
    wanted = _host(registry)
    for key, entry in _read(path).get("auths", {}).items():
        if _host(str(key)) != wanted or not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            continue
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise VmpodError(f"the credentials for {registry} in {path} are not valid base64") from None
        if not sep:
            raise VmpodError(f"the credentials for {registry} in {path} are not USER:PASSWORD")
        return Credentials(user, password)
    return None


def _key(registry: str) -> str:
    return _DOCKER_HUB_KEY if _host(registry) == DOCKER_HUB else _host(registry)


def save(registry: str, credentials: Credentials, path: Path | None = None) -> Path:
    path = path or auth_file()
    config = _read(path)
    auths = {k: v for k, v in config.get("auths", {}).items() if _host(str(k)) != _host(registry)}
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    auths[_key(registry)] = {"auth": token}
    config["auths"] = auths
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, json.dumps(config, indent="\t").encode() + b"\n", 0o600)
    return path


def remove(registry: str, path: Path | None = None) -> bool:
    """Forgets a registry's credentials; False if there were none."""
    path = path or auth_file()
    config = _read(path)
    auths = config.get("auths", {})
    kept = {k: v for k, v in auths.items() if _host(str(k)) != _host(registry)}
    if len(kept) == len(auths):
        return False
    config["auths"] = kept
    write_atomically(path, json.dumps(config, indent="\t").encode() + b"\n", 0o600)
    return True

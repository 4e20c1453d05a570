"""`vmpod login`/`logout`: credentials checked against the registry's `/v2/`, then kept in config.json."""

from __future__ import annotations

from pathlib import Path

from vmpod.errors import VmpodError
from vmpod.image import credentials, registries
from vmpod.image.credentials import DOCKER_HUB, Credentials
from vmpod.image.registry import Registry, RetryPolicy


def registry_domain(text: str | None) -> str:
    """`https://localhost:5000/v2/` → `localhost:5000`; nothing → Docker Hub."""
    if not text:
        return DOCKER_HUB
    domain = text.split("://", 1)[-1].split("/", 1)[0].lower()
    if not domain:
        raise VmpodError(f"invalid registry {text!r}", "give a host name, with a port if it has one")
    return domain


def login(registry: str, user: Credentials, tls_verify: bool = True) -> Path:
    """Checks the credentials with the registry, then stores them; returns the file written."""
    if not user.username or not user.password:
        raise VmpodError("a user name and a password are needed to log in", "use -u USER and --password-stdin")
    insecure = registries.load().insecure(registry)
    with Registry(registry, user, tls_verify=tls_verify, retry=RetryPolicy(attempts=2), insecure=insecure) as client:
        client.ping()
    return credentials.save(registry, user)


def logout(registry: str) -> bool:
    """Forgets a registry's credentials; False if there were none."""
    return credentials.remove(registry)

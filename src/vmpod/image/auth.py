"""Answers a registry's `WWW-Authenticate` challenge: bearer tokens (anonymous or with credentials), basic.

A registry answers 401 with `Bearer realm="…",service="…",scope="…"`; the token server at the realm
gives a token for that scope (with the user's credentials as basic auth, when there are any). Tokens are
cached per scope until shortly before they expire. Thread-safe: layers are fetched in parallel.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field

import httpx

from vmpod.errors import VmpodError
from vmpod.image.credentials import Credentials

_MAX_TOKEN_RESPONSE = 1 << 20
_DEFAULT_TOKEN_LIFETIME = 60
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """One `WWW-Authenticate` value: `Bearer realm="https://…",service="…",scope="a,b"`."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            break
        quoted = match.group(2)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(3) or ""
        position = match.end()
    return Challenge(scheme.lower(), params)


def unauthorized(registry: str, credentials: Credentials | None, detail: str = "") -> VmpodError:
    suffix = f": {detail}" if detail else ""
    if credentials is None:
        return VmpodError(
            f"authentication required by {registry}{suffix}",
            f"log in with `vmpod login {registry}`, or check the image name",
        )
    return VmpodError(
        f"authentication to {registry} failed for user {credentials.username!r}{suffix}",
        f"check the user name and password; log in again with `vmpod login {registry}`",
    )


def basic_header(credentials: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()


class Authenticator:
    """Authorization headers for one registry, per scope (`repository:NAME:pull`)."""

    def __init__(
        self, client: httpx.Client, registry: str, credentials: Credentials | None, plain_http: bool = False
    ) -> None:
        self.client = client
        self.plain_http = plain_http  # the registry itself is reached over HTTP: a token server may be too
        self.registry = registry
        self.credentials = credentials
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[str, float]] = {}  # scope -> (header, expiry)

    def header(self, scope: str) -> str | None:
        with self._lock:
            found = self._headers.get(scope)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def respond(self, challenge_header: str | None, scope: str) -> str:
        """The Authorization header that answers a 401's challenge; raises when none can."""
        if not challenge_header:
            raise unauthorized(self.registry, self.credentials, "no WWW-Authenticate challenge")
        challenge = parse_challenge(challenge_header)
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise unauthorized(self.registry, None)
            header, expiry = basic_header(self.credentials), float("inf")
        elif challenge.scheme == "bearer":
            header, expiry = self._token(challenge, scope)
        else:
            raise VmpodError(f"{self.registry} asks for unsupported authentication {challenge.scheme!r}")
        with self._lock:
            self._headers[scope] = (header, expiry)
        return header

    def _token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise VmpodError(f"{self.registry} sent a bearer challenge without a usable realm: {realm!r}")
        if realm.startswith("http://") and not self.plain_http:
            raise VmpodError(
                f"{self.registry} sends vmpod to a token server over plain HTTP: {realm}",
                "credentials are only sent over HTTPS to a registry reached over HTTPS",
            )
        query: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        for requested in dict.fromkeys(s for s in (scope, challenge.params.get("scope", "")) if s):
            query.append(("scope", requested))
        headers = {}
        if self.credentials is not None:
            query.append(("account", self.credentials.username))
            headers["Authorization"] = basic_header(self.credentials)
        started = time.monotonic()
        try:
            with self.client.stream("GET", realm, params=query, headers=headers) as response:
                if response.status_code in (401, 403):
                    raise unauthorized(self.registry, self.credentials, f"the token server said {response.status_code}")
                if response.status_code != 200:
                    raise VmpodError(f"the token server of {self.registry} answered {response.status_code}")
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_TOKEN_RESPONSE:
                        raise VmpodError(f"the token server of {self.registry} sent an oversized answer")
        except httpx.HTTPError as e:
            raise VmpodError(f"cannot reach the token server {realm}: {e}") from None
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            value = None
        token = value.get("token") or value.get("access_token") if isinstance(value, dict) else None
        if not isinstance(token, str) or not token:
            raise VmpodError(f"the token server of {self.registry} sent no token")
        lifetime = value.get("expires_in") if isinstance(value, dict) else None
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = _DEFAULT_TOKEN_LIFETIME
        # Renew a little early, so a token does not expire between check and use.
        return f"Bearer {token}", started + max(lifetime - 10, lifetime / 2)

"""A client of the distribution API v2: manifests and blobs from one registry, over httpx.

Every manifest request sends Accept headers for Docker schema 2, OCI manifests, manifest lists and OCI
indexes (without them a registry down-converts to schema 1). Blobs stream into the store with digest and
size checked while they arrive. Connection errors, 5xx and 429 are retried with backoff; a 401 is
answered through `auth.Authenticator`. Loopback registries are reached over plain HTTP, as Docker does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import httpx

from vmpod import __version__
from vmpod.errors import VmpodError
from vmpod.image.auth import Authenticator, unauthorized
from vmpod.image.credentials import DOCKER_HUB, Credentials
from vmpod.image.manifest import ACCEPT, Descriptor
from vmpod.image.registries import transport
from vmpod.image.store import MAX_DOCUMENT, ImageStore

DOCKER_HUB_API = "registry-1.docker.io"
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_ERROR_BODY = 64 << 10
_MAX_RETRY_AFTER = 30.0
T = TypeVar("T")
Body = Callable[[], bytes | Iterator[bytes]]


def hostname(domain: str) -> str:
    """`localhost:5000` → `localhost`, `[::1]:5000` → `::1`."""
    if domain.startswith("["):
        return domain[1:].split("]", 1)[0]
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


def is_loopback(domain: str) -> bool:
    host = hostname(domain)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(domain: str, scheme: str | None = None) -> str:
    if domain == DOCKER_HUB:
        return f"https://{DOCKER_HUB_API}"
    return f"{scheme or ('http' if is_loopback(domain) else 'https')}://{domain}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried."""

    attempts: int = 4
    first_delay: float = 0.5
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        return self.first_delay * self.factor ** (attempt - 1)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Fetched:
    """A manifest or index, byte for byte as the registry sent it."""

    data: bytes
    media_type: str | None
    digest: str


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), _MAX_RETRY_AFTER) if value.isdigit() else None


def _bounded_body(response: httpx.Response, limit: int, what: str) -> bytes:
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise VmpodError(f"{what} is larger than the limit of {limit} bytes")
    return bytes(body)


def _error_detail(response: httpx.Response) -> str:
    """The message of a registry's `{"errors": [{"code": …, "message": …}]}` answer, if it sent one."""
    try:
        value = json.loads(_bounded_body(response, _MAX_ERROR_BODY, "error"))
        first = value["errors"][0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")[:300]
    except (VmpodError, httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


class Registry:
    """One registry, one connection pool; thread-safe, so layers can be fetched in parallel."""

    def __init__(
        self,
        domain: str,
        credentials: Credentials | None = None,
        *,
        tls_verify: bool = True,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
        insecure: bool = False,
    ) -> None:
        """`insecure`: listed so in the registries configuration (plain HTTP, or HTTPS unchecked)."""
        chosen = transport(domain, tls_verify, insecure)
        self.domain = domain
        self.base = base_url(domain, chosen.scheme)
        self._fallback = base_url(domain, "http") if chosen.http_fallback and domain != DOCKER_HUB else None
        self.retry = retry
        self.credentials = credentials
        self.client = httpx.Client(
            verify=chosen.verify,
            follow_redirects=True,
            timeout=httpx.Timeout(timeout, connect=15.0),
            headers={"User-Agent": f"vmpod/{__version__}", "Accept-Encoding": "identity"},
        )
        self.auth = Authenticator(self.client, domain, credentials, plain_http=self.base.startswith("http://"))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------------------
    def _send(
        self, url: str, headers: dict[str, str], scope: str, method: str = "GET", body: Body | None = None
    ) -> httpx.Response:
        """A streaming request, authorized as the registry asks; transient trouble raises _Transient.

        `body` makes the request's content afresh for each try (a 401 answered, a retry).
        """

        def send(headers: dict[str, str]) -> httpx.Response:
            content = body() if body is not None else None
            request = self.client.build_request(method, url, headers=headers, content=content)
            return self.client.send(request, stream=True)

        try:
            cached = self.auth.header(scope)
            if cached:
                headers = {**headers, "Authorization": cached}
            response = send(headers)
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                headers = {**headers, "Authorization": self.auth.respond(challenge, scope)}
                response = send(headers)
                if response.status_code == 401:
                    detail = _error_detail(response)
                    response.close()
                    raise unauthorized(self.domain, self.credentials, detail)
        except httpx.ConnectError as e:
            if self._fallback is not None and url.startswith(self.base + "/"):
                # An insecure registry that does not speak TLS: plain HTTP from now on, as Podman does.
                self.base, self._fallback = self._fallback, None
                self.auth.plain_http = True
                raise _Transient(f"cannot connect to {self.domain} over HTTPS: {e}", retry_after=0.0) from None
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise VmpodError(
                    f"the TLS certificate of {self.domain} is not trusted: {e}",
                    "if you trust this registry anyway, pass --tls-verify=false",
                ) from None
            raise _Transient(f"cannot connect to {self.domain}: {e}") from None
        except httpx.TransportError as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        if response.status_code in TRANSIENT_STATUS:
            retry_after = _retry_after(response)
            response.close()
            raise _Transient(f"{self.domain} answered {response.status_code}", retry_after)
        return response

    @contextmanager
    def _open(
        self,
        path: str,
        scope: str,
        what: str,
        accept: str | None = None,
        *,
        method: str = "GET",
        ok: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        body: Body | None = None,
    ) -> Iterator[httpx.Response]:
        """An `ok` response for `/v2/<path>` (or a full URL); any other status becomes a VmpodError."""
        headers = {**(headers or {}), **({"Accept": accept} if accept else {})}
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/v2/{path}"
        response = self._send(url, headers, scope, method, body)
        try:
            if response.status_code not in ok:
                detail = _error_detail(response)
                suffix = f": {detail}" if detail else ""
                if response.status_code == 404:
                    raise VmpodError(f"{what} not found on {self.domain}{suffix}", "check the name and tag")
                if response.status_code == 403:
                    raise VmpodError(f"access to {what} denied by {self.domain}{suffix}")
                raise VmpodError(f"{self.domain} answered {response.status_code} for {what}{suffix}")
            yield response
        finally:
            response.close()

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        last = ""
        for attempt in range(self.retry.attempts):
            if attempt:
                time.sleep(self.retry.delay(attempt))
            try:
                return action()
            except _Transient as e:
                last = str(e)
                if e.retry_after is not None:
                    time.sleep(e.retry_after)
            except httpx.TransportError as e:  # the body broke off halfway
                last = f"{type(e).__name__}: {e}"
        raise VmpodError(f"fetching {what} failed after {self.retry.attempts} attempts: {last}")

    # --- the API -----------------------------------------------------------------------------------
    def ping(self) -> None:
        """`GET /v2/`: checks that this is a registry and that the credentials are accepted (login)."""

        def action() -> None:
            with self._open("", "", f"the registry API of {self.domain}"):
                pass

        self._retrying(f"{self.base}/v2/", action)

    def manifest(self, repository: str, reference: str) -> Fetched:
        """A manifest or index by tag or digest, byte for byte, with its digest checked."""
        what = f"manifest {repository}:{reference}" if ":" not in reference else f"manifest {repository}@{reference}"
        scope = f"repository:{repository}:pull"

        def action() -> Fetched:
            with self._open(f"{repository}/manifests/{reference}", scope, what, ACCEPT) as response:
                data = _bounded_body(response, MAX_DOCUMENT, what)
                announced = response.headers.get("Docker-Content-Digest")
                media_type = response.headers.get("Content-Type")
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if reference.startswith("sha256:") and digest != reference:
                raise VmpodError(f"digest mismatch for {what}: got {digest}", "the registry sent other content")
            if announced and announced.startswith("sha256:") and announced != digest:
                raise VmpodError(f"digest mismatch for {what}: the registry says {announced}, the content is {digest}")
            return Fetched(data, media_type, digest)

        return self._retrying(what, action)

    def document(self, repository: str, descriptor: Descriptor, what: str) -> bytes:
        """A small blob (an image config) in memory, digest and size checked."""
        scope = f"repository:{repository}:pull"

        def action() -> bytes:
            with self._open(f"{repository}/blobs/{descriptor.digest}", scope, what) as response:
                data = _bounded_body(response, min(descriptor.size, MAX_DOCUMENT), what)
            if len(data) != descriptor.size:
                raise VmpodError(f"{what} is truncated: {len(data)} of {descriptor.size} bytes")
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if digest != descriptor.digest:
                raise VmpodError(f"digest mismatch for {what}: expected {descriptor.digest}, got {digest}")
            return data

        return self._retrying(what, action)

    def fetch_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        store: ImageStore,
        progress: Callable[[int], None] | None = None,
        restart: Callable[[], None] | None = None,
    ) -> None:
        """Streams a blob into the store, verified while it streams; a bad blob stores nothing."""
        scope = f"repository:{repository}:pull"
        what = f"blob {descriptor.digest}"

        def action() -> None:
            if restart is not None:
                restart()
            with self._open(f"{repository}/blobs/{descriptor.digest}", scope, what) as response:
                store.put_chunks(response.iter_raw(), descriptor.digest, size=descriptor.size, progress=progress)

        self._retrying(what, action)

    # --- push --------------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        """`HEAD` of a blob: whether the registry has it already (a push skips it then)."""
        scope = push_scope(repository)
        what = f"blob {digest}"

        def action() -> bool:
            with self._open(f"{repository}/blobs/{digest}", scope, what, method="HEAD", ok=(200, 404)) as response:
                return response.status_code == 200

        return self._retrying(what, action)

    def upload_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Callable[[], Iterator[bytes]],
        restart: Callable[[], None] | None = None,
    ) -> None:
        """A monolithic upload: `POST` opens an upload session, `PUT …?digest=` sends the blob and closes it."""
        scope = push_scope(repository)
        what = f"blob {descriptor.digest}"

        def action() -> None:
            if restart is not None:
                restart()
            with self._open(f"{repository}/blobs/uploads/", scope, what, method="POST", ok=(202,)) as response:
                location = response.headers.get("Location")
            if not location:
                raise VmpodError(f"{self.domain} opened an upload for {what} without a Location")
            url = httpx.URL(self.base + "/").join(location).copy_merge_params({"digest": descriptor.digest})
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)}
            with self._open(str(url), scope, what, method="PUT", ok=(201, 204), headers=headers, body=source):
                pass

        self._retrying(what, action)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """`PUT` of a manifest byte for byte under a tag; returns its digest, checked against the registry's."""
        scope = push_scope(repository)
        what = f"manifest {repository}:{reference}"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

        def action() -> str:
            headers = {"Content-Type": media_type}
            with self._open(
                f"{repository}/manifests/{reference}",
                scope,
                what,
                method="PUT",
                ok=(201,),
                headers=headers,
                body=lambda: data,
            ) as response:
                announced = response.headers.get("Docker-Content-Digest")
            if announced and announced.startswith("sha256:") and announced != digest:
                raise VmpodError(f"{self.domain} stored {what} as {announced}, but its content is {digest}")
            return digest

        return self._retrying(what, action)


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"

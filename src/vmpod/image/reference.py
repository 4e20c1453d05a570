"""Image references as Docker spells them: `busybox`, `localhost:5000/a/b:tag`, `name@sha256:…`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmpod.errors import VmpodError

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        bad = VmpodError(
            f"invalid reference format: {text!r}",
            "use NAME[:TAG] or NAME@sha256:DIGEST, lowercase",
        )
        name, digest = text, None
        if "@" in text:
            name, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise bad
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG.match(tag):
                raise bad
        parts = name.split("/")
        domain = DEFAULT_DOMAIN
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            domain, parts = parts[0], parts[1:]
        if not parts or not all(_COMPONENT.match(p) for p in parts):
            raise bad
        if domain == DEFAULT_DOMAIN and len(parts) == 1:
            parts = ["library", *parts]
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(domain, "/".join(parts), tag, digest)

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def _with_tag_and_digest(self, text: str) -> str:
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def __str__(self) -> str:
        return self._with_tag_and_digest(self.name)

    @property
    def familiar(self) -> str:
        """`busybox:latest`, `localhost:5000/a/b@sha256:…`: the form Docker prints."""
        return self._with_tag_and_digest(self.familiar_name)

    @property
    def familiar_name(self) -> str:
        """The short form Docker prints: `busybox` rather than `docker.io/library/busybox`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path.removeprefix("library/")

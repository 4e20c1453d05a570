"""A tiny registry on loopback that says whatever a test wants: wrong digests, short bodies, lies, garbage."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # a lie about the length, if set
    cut_after: int | None = None  # close the connection after this many body bytes
    times: int | None = None  # serve this reply only so often, then fall back to the next one in line


class FakeRegistry:
    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.log: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake.serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.domain = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        self.log.append(path)
        replies = self.routes.get(path)
        reply = replies[0] if replies else Reply(b'{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}', 404)
        if replies and reply.times is not None:
            reply.times -= 1
            if reply.times <= 0 and len(replies) > 1:
                replies.pop(0)
        request.send_response(reply.status)
        for key, value in reply.headers.items():
            request.send_header(key, value)
        length = reply.content_length if reply.content_length is not None else len(reply.body)
        request.send_header("Content-Length", str(length))
        request.end_headers()
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        try:
            request.wfile.write(body)
            request.wfile.flush()
        except OSError:
            pass
        if reply.cut_after is not None or length != len(reply.body):
            request.close_connection = True

    # --- a small image ------------------------------------------------------------------------------
    def image(self, repo: str, tag: str, layers: list[bytes], config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Serves a valid image (blobs, manifest by tag and digest); returns its parts for tests to spoil."""
        config_bytes = json.dumps(
            config
            or {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [digest_of(layer) for layer in layers]},
            }
        ).encode()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(b), "size": len(b)}
                for b in layers
            ],
        }
        for blob in (config_bytes, *layers):
            self.route(f"/v2/{repo}/blobs/{digest_of(blob)}", Reply(blob))
        self.serve_manifest(repo, tag, json.dumps(manifest).encode())
        return {"config": config_bytes, "manifest": manifest, "layers": layers}

    def serve_manifest(self, repo: str, tag: str, data: bytes, media_type: str = MANIFEST) -> str:
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest_of(data)}
        self.route(f"/v2/{repo}/manifests/{tag}", Reply(data, headers=headers))
        self.route(f"/v2/{repo}/manifests/{digest_of(data)}", Reply(data, headers=headers))
        return digest_of(data)

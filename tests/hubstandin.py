"""A stand-in for the Hugging Face hub's file routes on loopback: `HEAD`/`GET
/{repo}/resolve/{revision}/{filename}` with the headers `huggingface_hub` reads (the commit,
an ETag that is the SHA-256 of an LFS file, its size). Point `HF_ENDPOINT` at `url`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    data: bytes
    lfs: bool = True  # LFS files: the ETag is the SHA-256 of what they should be
    published: bytes | None = None  # what the hub says it serves (None: `data`)

    def etag(self) -> str:
        body = self.published if self.published is not None else self.data
        if self.lfs:
            return hashlib.sha256(body).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@dataclass
class HubStandIn:
    url: str
    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@contextmanager
def hub_stand_in() -> Iterator[HubStandIn]:
    hub = HubStandIn("")

    class Handler(BaseHTTPRequestHandler):
        def _file(self) -> HubFile | None:
            hub.requests.append(f"{self.command} {self.path}")
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            return hub.files.get(("/".join(parts[:2]), "/".join(parts[4:])))

        def _headers(self, f: HubFile) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{f.etag()}"')
            if f.lfs:
                self.send_header("X-Linked-Etag", f'"{f.etag()}"')
                self.send_header("X-Linked-Size", str(len(f.published or f.data)))
            self.send_header("Content-Length", str(len(f.data)))
            self.end_headers()

        def do_HEAD(self) -> None:
            f = self._file()
            if f is None:
                self.send_error(404)
                return
            self._headers(f)

        def do_GET(self) -> None:
            f = self._file()
            if f is None:
                self.send_error(404)
                return
            self._headers(f)
            self.wfile.write(f.data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()

"""Fixtures for the worker tests: loopback HTTP servers that serve, redirect, stall or receive."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loopback import free_port
from superscale import webhooks
from superscale.jobs.base import JobError, JobStore, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.settings import Settings
from testkeys import self_signed_certificate


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    chunked: bool = False  # stream the body without Content-Length


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FixtureServer:
    """A real HTTP server on 127.0.0.1; `route(path)` answers from a Reply or a function."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Reply | Callable[[Seen], Reply]] = {}
        self.requests: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                server.requests.append(seen)
                route = server.routes.get(self.path.split("?")[0], Reply(404, b"not found"))
                reply = route(seen) if callable(route) else route
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for start in range(0, len(reply.body), 65536):
                            chunk = reply.body[start : start + 65536]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up, as it should on oversized bodies
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(reply.body)

            do_GET = _handle
            do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[Callable[..., FixtureServer]]:
    """A factory of loopback fixture servers (`tls=` an SSLContext for HTTPS), all shut down
    after the test."""
    servers: list[FixtureServer] = []

    def make(tls: ssl.SSLContext | None = None) -> FixtureServer:
        servers.append(FixtureServer(tls))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        ssrf_guard=False,
        fetch_timeout=5.0,
        lease_seconds=3.0,
        checkpoints=["v1"],
        device="cpu",
        dtype="auto",
    )


@pytest.fixture
def job_store(settings: Settings) -> Iterator[SqliteJobStore]:
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    yield store
    store.close()


def finished_job(store: JobStore, url: str, error: JobError | None = None) -> str:
    """A finished job (completed, or failed with `error`) whose webhook to `url` is queued."""
    job = store.submit(
        NewJob(
            endpoint="fal-ai/aura-sr",
            owner="key-1",
            input={"image_url": "x"},
            checkpoint="v1",
            webhook_url=url,
        )
    )
    assert store.claim("w", 30, ["v1"]) is not None
    if error is None:
        store.complete(job.id, "w", {"image": {"url": "u"}, "timings": {}}, 0.5)
    else:
        store.fail(job.id, "w", error)
    assert webhooks.enqueue(store, job.id)
    return job.id


def localhost_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate valid for the name `localhost` only (no IP address), so a
    TLS handshake verifies only if the client sends and checks that name."""
    return self_signed_certificate(directory, "localhost", ("localhost",), stem="localhost")

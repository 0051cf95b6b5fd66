"""A real superscale API server on loopback, in a thread of the test process."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from superscale.api import create_app
from superscale.api.keys import create_key
from superscale.files import FileStore, open_file_store
from superscale.jobs import JobStore, open_job_store
from superscale.settings import Settings
from testkeys import self_signed_certificate


@dataclass
class LiveServer:
    url: str
    settings: Settings
    job_store: JobStore
    file_store: FileStore
    key: str  # a valid `key_id:secret` ("" with auth off)

    @property
    def key_id(self) -> str:
        return self.key.split(":")[0]

    def headers(self, key: str | None = None) -> dict[str, str]:
        key = self.key if key is None else key
        return {"Authorization": f"Key {key}"} if key else {}

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(key), timeout=30, **kwargs)

    def new_key(self, name: str = "other") -> str:
        return create_key(self.job_store, name)[1]


@contextmanager
def live_server(
    data_dir: Path,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    maintenance_interval: float = 0.2,
    job_store: JobStore | None = None,
    **overrides: Any,
) -> Iterator[LiveServer]:
    """Serve the API over SQLite + a local directory in `data_dir` on a free loopback port
    (or over `job_store`, which the server then owns and closes)."""
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (a 40 ms stall on
    # every response written in two parts).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if ssl_certfile:
        overrides.setdefault("public_url", f"https://127.0.0.1:{port}")
    settings = Settings(data_dir=data_dir, host="127.0.0.1", port=port, **overrides)
    if job_store is None:
        job_store = open_job_store(settings.resolved_database_url())
    file_store = open_file_store(
        settings.resolved_storage_url(), s3_endpoint_url=settings.s3_endpoint_url
    )
    key = create_key(job_store, "test")[1] if settings.auth else ""
    app = create_app(
        settings,
        job_store,
        file_store,
        maintenance_interval=maintenance_interval,
        file_sweep_interval=maintenance_interval,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    stop = threading.Event()
    workers = []
    for i in range(settings.workers):  # as `superscale serve` runs them: threads, same stores
        from superscale.worker import Worker

        worker = Worker(settings, job_store, file_store, worker_id=f"test-worker-{i}")
        workers.append(threading.Thread(target=worker.run_forever, args=(stop,), daemon=True))
        workers[-1].start()
    scheme = "https" if ssl_certfile else "http"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"{scheme}://127.0.0.1:{port}", settings, job_store, file_store, key)
    finally:
        stop.set()
        for worker_thread in workers:
            worker_thread.join(30)
        server.should_exit = True
        thread.join(10)
        sock.close()
        job_store.close()
        file_store.close()


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `IP:127.0.0.1` (and `localhost`); returns (cert, key)."""
    return self_signed_certificate(directory, "superscale test", ("localhost",), ("127.0.0.1",))


def tls_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))

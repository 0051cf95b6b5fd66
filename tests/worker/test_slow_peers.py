"""One slow peer must not stall everyone (issue 15.3, 15.4): a server that drips its header
bytes cannot hold a fetch past its total deadline, nor past a cancel; a slow webhook receiver
holds neither the other deliveries nor the dispatcher."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fixture_http import FixtureServer, Reply
from pngs import data_uri
from superscale import netguard
from superscale.jobs import JobStore
from superscale.settings import Settings
from superscale.webhooks import WebhookDispatcher
from superscale.worker import Worker
from superscale.worker.fetch import InputError, InputFetcher

from .test_worker import finished, png_bytes, submit


class Tarpit:
    """A loopback server that answers every request with one byte of headers at a time, a
    few per second, for ever: each read succeeds, so per-read timeouts never fire."""

    def __init__(self, drip: float = 0.1) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._drip = drip
        self._stop = threading.Event()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip_to, args=(conn,), daemon=True).start()

    def _drip_to(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self._stop.is_set():
                    conn.sendall(b"X")
                    time.sleep(self._drip)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


def test_dripping_headers_cannot_outlast_the_fetch_deadline(
    settings: Settings, tarpit: Tarpit
) -> None:
    settings.fetch_timeout = 1.0
    fetcher = InputFetcher(settings, file_store=None)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(InputError, match=r"timed out after 1 s"):
        fetcher.fetch(f"{tarpit.url}/image.png")
    assert 0.9 < time.monotonic() - started < 2.5
    fetcher.close()


def test_cancel_interrupts_a_fetch_in_progress(settings: Settings, tarpit: Tarpit) -> None:
    settings.fetch_timeout = 60.0
    fetcher = InputFetcher(settings, file_store=None)  # type: ignore[arg-type]
    cancel_at = time.monotonic() + 0.5
    started = time.monotonic()
    with pytest.raises(netguard.Interrupted):
        fetcher.fetch(f"{tarpit.url}/image.png", should_cancel=lambda: time.monotonic() > cancel_at)
    assert time.monotonic() - started < 2
    fetcher.close()


def test_the_next_job_runs_after_a_tarpit_job_times_out(
    worker: Worker, job_store: JobStore, tarpit: Tarpit
) -> None:
    worker.settings.fetch_timeout = 1.0
    worker.fetcher.settings.fetch_timeout = 1.0
    stuck = submit(job_store, f"{tarpit.url}/image.png")
    after = submit(job_store, data_uri(png_bytes(8, 8)))
    started = time.monotonic()
    assert worker.run_once() and worker.run_once()
    assert time.monotonic() - started < 30
    error = finished(job_store, stuck).error
    assert error is not None and error.status_code == 422
    assert error.error_type == "file_download_error" and "timed out after 1 s" in error.message
    assert finished(job_store, after).error is None


def test_a_slow_webhook_receiver_does_not_hold_the_others(
    settings: Settings,
    job_store: JobStore,
    http_server: Callable[[], FixtureServer],
    tarpit: Tarpit,
) -> None:
    receiver = http_server()
    receiver.routes["/fast"] = Reply(200)
    dispatcher = WebhookDispatcher(settings, job_store, timeout=2.0, poll_interval=0.05)
    slow = submit(job_store, "data:,x")
    fast = submit(job_store, "data:,x")
    job_store.add_webhook(slow, f"{tarpit.url}/hook", b"{}")  # queued first: claimed first
    job_store.add_webhook(fast, f"{receiver.url}/fast", b"{}")
    dispatcher.start()
    try:
        deadline = time.monotonic() + 1.5  # well before the slow attempt's 2 s deadline
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.requests, "the fast delivery waited for the slow one"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (attempt,) = job_store.webhooks(slow)
            if attempt.attempts:
                break
            time.sleep(0.05)
        (attempt,) = job_store.webhooks(slow)
        assert attempt.attempts == 1 and attempt.delivered_at is None
        assert attempt.last_error is not None and "Timeout" in attempt.last_error
    finally:
        dispatcher.stop(5)

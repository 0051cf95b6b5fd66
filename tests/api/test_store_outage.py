"""A job store that becomes unreachable: the API answers 503 with Retry-After in fal's error
shape (not a 500), and serves again once the database is back.

The outage is real: the store reaches PostgreSQL through a loopback TCP relay, which the test
cuts (closing its listener and every relayed connection) and restores on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from superscale.jobs.postgres import PostgresJobStore

from .server import live_server
from .test_routes_queue import INPUT

SUBMIT = "/queue/fal-ai/aura-sr"


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a loopback target; `cut()` drops everything, `restore()`
    listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, []
            if self._listener is not None:
                doomed.append(self._listener)
                self._listener = None
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile: this one goes too
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def relayed_pg_url(pg_schema_url: str) -> Iterator[tuple[str, TcpRelay]]:
    parts = urlsplit(pg_schema_url)
    assert parts.hostname in ("127.0.0.1", "localhost", "::1")  # loopback only
    relay = TcpRelay((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{relay.port}")
    yield urlunsplit(parts._replace(netloc=netloc)), relay
    relay.cut()


def test_unreachable_job_store_is_a_503_with_retry_after(
    tmp_path: Path, relayed_pg_url: tuple[str, TcpRelay]
) -> None:
    url, relay = relayed_pg_url
    store = PostgresJobStore(url, acquire_timeout=1.0)
    # Past its hold (riding out shorter outages is test_outage_rides.py's), a request answers.
    with (
        live_server(tmp_path, workers=0, auth=False, job_store=store, busy_hold=2) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        submitted = c.post(SUBMIT, json=INPUT)
        assert submitted.status_code == 200, submitted.text
        status_url = submitted.json()["status_url"]

        relay.cut()  # the database is gone
        for method, path, body in (("POST", SUBMIT, INPUT), ("GET", status_url, None)):
            t0 = time.monotonic()
            r = c.request(method, path, json=body)
            assert r.status_code == 503, r.text
            assert time.monotonic() - t0 < 10  # bounded by the pool's acquire timeout
            assert r.headers["retry-after"] == "5"
            assert r.headers["x-fal-retryable"] == "true"
            assert r.json() == {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": "The service cannot reach its job store; retry in 5 s",
                        "type": "service_unavailable",
                    }
                ],
                "error_type": "service_unavailable",
            }
            assert "postgres" not in r.text.lower()  # no internals leak to clients
        assert c.get("/ready").status_code == 503

        relay.restore()  # back on the same address: the pool reconnects by itself
        deadline = time.monotonic() + 60
        while (r := c.get(status_url)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 202 and r.json()["status"] == "IN_QUEUE"
        assert c.post(SUBMIT, json=INPUT).status_code == 200


def test_sqlite_store_locked_past_its_busy_timeout_is_a_503(tmp_path: Path) -> None:
    import sqlite3

    from superscale.jobs.sqlite import SqliteJobStore

    db = tmp_path / "jobs.db"
    store = SqliteJobStore(db, busy_timeout=0.2)
    with (
        live_server(tmp_path, workers=0, auth=False, job_store=store, busy_hold=0) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            r = c.post(SUBMIT, json=INPUT)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json()["error_type"] == "service_unavailable"
        assert c.post(SUBMIT, json=INPUT).status_code == 200


def test_ready_says_why_without_disclosing_the_database(
    tmp_path: Path, relayed_pg_url: tuple[str, TcpRelay], caplog: pytest.LogCaptureFixture
) -> None:
    """/ready is unauthenticated: in an outage it said the database's user, host, port and
    name (the driver's error text). Now it says what is wrong, and the log has the rest."""
    url, relay = relayed_pg_url
    parts = urlsplit(url)
    store = PostgresJobStore(url, acquire_timeout=1.0)
    with (
        live_server(tmp_path, workers=0, auth=False, job_store=store) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        assert c.get("/ready").status_code == 200
        relay.cut()
        t0 = time.monotonic()
        r = c.get("/ready")
        # At once (the pool's 1 s acquire timeout), not after the requests' 10 s hold.
        assert time.monotonic() - t0 < 5
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "reason": "job store unavailable"}
    for secret in (parts.username, str(parts.port), parts.path.strip("/"), "127.0.0.1"):
        assert secret and secret not in r.text
    assert any("job store is unavailable" in rec.getMessage() for rec in caplog.records)

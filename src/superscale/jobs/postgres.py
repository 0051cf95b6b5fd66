"""The scale-out job store: PostgreSQL, shared by any number of API servers and workers.

- Claims take the next runnable row with `FOR UPDATE SKIP LOCKED`: concurrent workers never
  wait on each other and never take the same job.
- Every visible change sends `NOTIFY superscale_jobs, '<request id>'` inside its transaction,
  so it is delivered only once committed. One listener thread per store turns those into wake-ups
  for `wait_for_change`; waiters still re-read their job's version every few seconds, so a lost
  listener connection only slows streams down until it is back.
- Migrations and capped submits take transaction-scoped advisory locks, so servers starting
  together apply each migration exactly once.
- Times are unix seconds from the clocks of the machines involved: keep them in sync (NTP).
- Losing the database (a failed connection, no pooled connection within `acquire_timeout`)
  raises `StoreUnavailable`, which callers can tell apart from bugs and retry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from superscale.jobs.dialect import Dialect, Duplicate
from superscale.jobs.records import StoreUnavailable
from superscale.jobs.store import JobStore

log = logging.getLogger(__name__)

CHANNEL = "superscale_jobs"
# How often a waiter re-reads its version while the listener is up (it is woken sooner on any
# notification), and while it is down.
LISTENING_POLL = 2.0
POLL_INTERVAL = 0.2

Conn = psycopg.Connection[dict[str, Any]]


class PostgresDialect(Dialect):
    name: ClassVar[Literal["postgresql"]] = "postgresql"
    paramstyle: ClassVar[Literal["pyformat"]] = "pyformat"
    words: ClassVar[dict[str, str]] = {
        "lock_row": "FOR UPDATE",
        "skip_locked_jobs": "FOR UPDATE OF q SKIP LOCKED",  # the same, on `jobs q` of a join
        "skip_locked": "FOR UPDATE SKIP LOCKED",
        "json_items": "jsonb_array_elements_text",
        "no_input": "'{}'::jsonb",
    }

    def __init__(
        self,
        url: str,
        max_connections: int = 10,
        connect_timeout: float = 15.0,
        acquire_timeout: float = 10.0,
    ) -> None:
        """`acquire_timeout`: how long a call waits for a pooled connection before it raises
        `StoreUnavailable` (with the database down, every call waits this long)."""
        self.url = url
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=acquire_timeout,
            kwargs={"autocommit": True, "row_factory": dict_row},
            # Checked out connections are checked first (one round trip), so a database
            # restart costs the pool its stale connections, not a caller an error.
            check=ConnectionPool.check_connection,
            open=False,
            name="superscale-jobs",
        )
        self._pool.open()
        try:
            self._pool.wait(timeout=connect_timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise ConnectionError(f"cannot connect to PostgreSQL at {_redact(url)}") from exc
        with self._pool.connection() as conn:
            row = conn.execute("SHOW server_encoding").fetchone()
        value = row["server_encoding"] if row else b""
        encoding = value.decode() if isinstance(value, bytes) else str(value)  # bytes: SQL_ASCII
        if encoding.upper() not in ("UTF8", "UTF-8"):
            # SQL_ASCII (initdb without a locale) hands text back as bytes and refuses
            # non-ASCII text: refuse it here, in words, rather than fail later.
            self._pool.close()
            raise ValueError(
                f"the PostgreSQL database at {_redact(url)} uses the {encoding} encoding; "
                "superscale needs UTF8: CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0"
            )
        self._listening = False
        self.listener_pid: int | None = None  # the listener's backend, for diagnostics
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        with self._translated(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        with self._translated(), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Connection failures (OperationalError, PoolTimeout among them) → StoreUnavailable,
        unique violations → Duplicate; use after close and other errors pass unchanged."""
        try:
            yield
        except PoolClosed:
            raise
        except psycopg.errors.UniqueViolation as exc:
            raise Duplicate(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL at {_redact(self.url)}: {exc}") from exc

    def bind_json(self, value: Any) -> Jsonb | None:
        return None if value is None else Jsonb(value)

    def lock(self, conn: Any, key: str) -> None:
        # Per schema: servers sharing a database but not a schema do not wait on each other.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('superscale:' || current_schema() || %s))",
            (key,),
        )

    def notify(self, conn: Any, request_ids: Iterable[str]) -> None:
        for request_id in dict.fromkeys(request_ids):
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request_id))

    def poll_interval(self) -> float:
        return LISTENING_POLL if self._listening else POLL_INTERVAL

    # --- the listener ---------------------------------------------------------------------
    def start(self, wake: Callable[[Iterable[str] | None], None]) -> None:
        self._listener = threading.Thread(
            target=self._listen, args=(wake,), name="superscale-pg-listener", daemon=True
        )
        self._listener.start()

    def _listen(self, wake: Callable[[Iterable[str] | None], None]) -> None:
        """Turn NOTIFYs into wake-ups; reconnect with backoff when the connection drops."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="superscale-listener"
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listener_pid = conn.info.backend_pid
                    self._set_listening(True, wake)
                    backoff = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if self._stop.is_set():
                                break
                            wake((note.payload,))
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("job store listener lost its connection (%s); reconnecting", exc)
            self._set_listening(False, wake)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _set_listening(self, listening: bool, wake: Callable[[Iterable[str] | None], None]) -> None:
        self._listening = listening
        # Waiters switch polling speed, and catch up on anything missed while down.
        wake(None)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            try:  # wakes the listener now rather than at its next timeout
                with self.connection() as conn:
                    conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            except (psycopg.Error, StoreUnavailable):
                pass
            self._listener.join(5)
        self._pool.close()


class PostgresJobStore(JobStore):
    """`JobStore` on PostgreSQL; `options` are `PostgresDialect`'s (pool size, timeouts)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self._pg = PostgresDialect(url, **options)
        super().__init__(self._pg)

    @property
    def listener_pid(self) -> int | None:
        return self._pg.listener_pid


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))

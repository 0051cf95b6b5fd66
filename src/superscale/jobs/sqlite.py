"""The embedded job store: one SQLite file in WAL mode, shared by threads and processes.

Connections come from a small pool (SQLite connections are cheap, but not safe to use from two
threads at once). Every write runs in `BEGIN IMMEDIATE`, which takes SQLite's single write lock
up front: claims are atomic and no transaction ever has to upgrade a read lock (which SQLite
would answer with SQLITE_BUSY rather than waiting).

Waiters are woken at once for writes made through the same store object; writes by other
processes, such as a separate `superscale worker`, are seen by re-reading every `POLL_INTERVAL`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

from superscale.jobs.dialect import Dialect, Duplicate
from superscale.jobs.records import StoreUnavailable
from superscale.jobs.store import JobStore

# How often a waiter re-reads its job's version to see other processes' writes.
POLL_INTERVAL = 0.2
# How long a quick read (`JobStore.quick`, made on the API's event loop) waits for a lock
# before it gives up and the caller reads the usual way, in a thread. WAL readers wait for
# nobody but a recovering database, so this is almost never reached.
QUICK_BUSY_TIMEOUT = 0.05
# How often a writer waiting for another process's write tries again: first, and at most.
WRITERS_FIRST_WAIT = 0.0002
WRITERS_LONGEST_WAIT = 0.002
_quick: ContextVar[bool] = ContextVar("superscale_sqlite_quick", default=False)

# Conditions of the machine, not bugs, that pass: a lock held too long, a vanished or failing
# disk, a full one.
_UNAVAILABLE = (
    "database is locked",
    "unable to open database file",
    "disk I/O error",
    "database or disk is full",
)


class SqliteDialect(Dialect):
    name: ClassVar[Literal["sqlite"]] = "sqlite"
    paramstyle: ClassVar[Literal["named"]] = "named"
    words: ClassVar[dict[str, str]] = {
        "lock_row": "",
        "skip_locked_jobs": "",  # the same, on `jobs q` of a join
        "skip_locked": "",
        "json_items": "json_each",
        "no_input": "'{}'",
    }

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        # Private (0700 / 0600): the database holds users' inputs (data: URIs) and the
        # capability URLs of their outputs. SQLite gives its -wal and -shm files the
        # database's own mode.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._busy_timeout = busy_timeout
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._quick_idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._writer = threading.Lock()
        self._lock_fd = os.open(f"{self.path}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        self._closed = False

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row  # by column name, like psycopg's dict rows
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
        # the last transactions, and it saves an fsync per write.
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._pool_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("the job store is closed")
        quick = _quick.get()
        idle = self._quick_idle if quick else self._idle
        try:
            conn = idle.get_nowait()
        except queue.Empty:
            conn = self._connect(QUICK_BUSY_TIMEOUT if quick else self._busy_timeout)
        try:
            yield conn
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise Duplicate(str(exc)) from exc
            raise
        except sqlite3.OperationalError as exc:
            # Held locks past the busy timeout, a vanished or failing disk: not our bug, and
            # the same call may succeed later. Other OperationalErrors (bad SQL) are bugs.
            if str(exc).startswith(_UNAVAILABLE):
                raise StoreUnavailable(f"SQLite at {self.path}: {exc}") from exc
            raise
        finally:
            idle.put(conn)

    @contextmanager
    def quick(self) -> Iterator[None]:
        token = _quick.set(True)
        try:
            yield
        finally:
            _quick.reset(token)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Holds the database's write lock from its first statement. Our writers queue for it
        on locks of their own first — a thread lock in the process, then a file lock
        (`{path}-writers`) between processes — where SQLite's busy handler would have each
        retry with sleeps of up to 100 ms: seconds of latency under a burst of submits."""
        if self._closed:
            raise RuntimeError("the job store is closed")
        deadline = time.monotonic() + self._busy_timeout
        if not self._writer.acquire(timeout=self._busy_timeout):
            raise StoreUnavailable(f"SQLite at {self.path}: database is locked (by this process)")
        try:
            self._lock_writers_file(deadline)
            with self.connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # never hand a connection back mid-transaction
                        conn.execute("ROLLBACK")
                    raise
        finally:
            with contextlib.suppress(OSError):  # closed meanwhile: the lock went with it
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._writer.release()

    def _lock_writers_file(self, deadline: float) -> None:
        """Take the writers' file lock, which our processes (API, worker) take turns on before
        SQLite's: tried every 0.2 ms at first, never less often than every 2 ms."""
        delay = WRITERS_FIRST_WAIT
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"SQLite at {self.path}: database is locked (by another process of ours)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, WRITERS_LONGEST_WAIT)

    def bind_json(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def lock(self, conn: Any, key: str) -> None:
        """Nothing to do: `BEGIN IMMEDIATE` already makes write transactions take turns."""

    def notify(self, conn: Any, request_ids: Iterable[str]) -> None:
        """Nothing to send: other processes see changes by polling (`POLL_INTERVAL`)."""

    def start(self, wake: Callable[[Iterable[str] | None], None]) -> None:
        """No listener: see `notify`."""

    def retrying_startup(self, action: Callable[[], object]) -> None:
        """Switch to WAL, then `action`. Several processes opening a new file at once can get
        "database is locked" at once, without SQLite's busy handler (switching the journal
        mode and WAL recovery do not wait): retry those within the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with self.connection() as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                action()
                return
            except StoreUnavailable as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def poll_interval(self) -> float:
        return POLL_INTERVAL

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:  # closing twice is harmless
            os.close(fd)


class SqliteJobStore(JobStore):
    """`JobStore` on one SQLite file; safe for many threads and several processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        super().__init__(SqliteDialect(path, busy_timeout))

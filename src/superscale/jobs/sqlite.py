"""The embedded job store: one SQLite file in WAL mode, shared by threads and processes.

Connections come from a small pool (SQLite connections are cheap, but not safe to use from two
threads at once). Every write runs in `BEGIN IMMEDIATE`, which takes SQLite's single write lock
up front: claims are atomic and no transaction ever has to upgrade a read lock (which SQLite
would answer with SQLITE_BUSY rather than waiting).

`wait_for_change` wakes at once for writes made through this object (a `threading.Condition`)
and re-reads the job's version every `POLL_INTERVAL` for writes made by other processes, such
as a separate `superscale worker`.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from superscale.jobs._common import (
    JOB_COLUMNS,
    POLL_INTERVAL,
    attempts_exhausted_error,
    cancelled_error,
    deadline_error,
    dump_error,
    dump_json,
    job_from_row,
    new_request_id,
    retry_after,
    webhook_body,
)
from superscale.jobs.base import (
    ApiKey,
    CancelOutcome,
    Job,
    JobError,
    JobStore,
    LogRecord,
    NewJob,
    QueueFull,
    StoreUnavailable,
    Webhook,
    WebhookDelivery,
)

_UNAVAILABLE = ("database is locked", "unable to open database file", "disk I/O error")

# Each migration is a list of statements, applied in one transaction; append, never edit.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order
            id TEXT NOT NULL UNIQUE,
            endpoint TEXT NOT NULL,
            owner TEXT NOT NULL,
            input TEXT NOT NULL,                     -- JSON
            checkpoint TEXT NOT NULL,
            state TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            output TEXT,                             -- JSON
            error TEXT,                              -- JSON of JobError
            inference_time REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            worker_id TEXT,
            lease_expires_at REAL,
            webhook_url TEXT,
            priority INTEGER NOT NULL DEFAULT 0,
            start_deadline REAL,
            file_ttl REAL
        )""",
        "CREATE INDEX jobs_queue ON jobs (state, priority DESC, seq)",
        "CREATE INDEX jobs_endpoint_state ON jobs (endpoint, state)",
        """CREATE TABLE job_logs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            message TEXT NOT NULL,
            level TEXT NOT NULL,
            timestamp REAL NOT NULL
        )""",
        "CREATE INDEX job_logs_request ON job_logs (request_id, id)",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        """CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            url TEXT NOT NULL,
            body BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,                    -- NULL once delivered or given up
            delivered_at REAL,
            last_error TEXT,
            extra TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX webhooks_due ON webhooks (next_attempt_at)",
    ],
    [  # 2: cross-job batching
        "ALTER TABLE jobs ADD COLUMN batch_key TEXT",
        "CREATE INDEX jobs_batch ON jobs (batch_key, state, priority DESC, seq)",
    ],
]


class SqliteJobStore(JobStore):
    """`JobStore` on one SQLite file; safe for many threads and several processes."""

    def __init__(self, path: str | Path, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._changed = threading.Condition()
        self._generation = 0  # counts this object's commits; guarded by _changed
        self._closed = False
        self._open_database()

    def _open_database(self) -> None:
        """Switch to WAL and migrate. Several processes opening a new file at once can get
        "database is locked" at once, without SQLite's busy handler (switching the journal
        mode and WAL recovery do not wait): retry those within the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with self._conn() as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                    self._migrate(conn)
                return
            except StoreUnavailable as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- plumbing -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
        # the last transactions, and it saves an fsync per write.
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._pool_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("the job store is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            # Held locks past the busy timeout, a vanished or failing disk: not our bug, and
            # the same call may succeed later. Other OperationalErrors (bad SQL) are bugs.
            if str(exc).startswith(_UNAVAILABLE):
                raise StoreUnavailable(f"SQLite at {self.path}: {exc}") from exc
            raise
        finally:
            self._idle.put(conn)

    @staticmethod
    @contextmanager
    def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
        """A transaction holding the database's write lock from its first statement."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # never hand a connection back mid-transaction
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; waiters in this process are woken once it commits."""
        with self._conn() as conn, self._immediate(conn):
            yield conn
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        with self._immediate(conn):
            done = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(done.fetchone()[0])
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )

    @staticmethod
    def _get(conn: sqlite3.Connection, request_id: str) -> Job | None:
        row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (request_id,))
        found = row.fetchone()
        return None if found is None else job_from_row(found)

    @classmethod
    def _finish(
        cls, conn: sqlite3.Connection, request_id: str, error: JobError, now: float
    ) -> None:
        """End a job with `error` on the store's own account, queueing its webhook if any."""
        row = conn.execute(
            "UPDATE jobs SET state = 'COMPLETED', error = ?, finished_at = ?, worker_id = NULL, "
            "lease_expires_at = NULL, version = version + 1 WHERE id = ? RETURNING webhook_url",
            (dump_error(error), now, request_id),
        ).fetchone()
        if row is not None and row[0]:
            cls._insert_webhook(conn, request_id, (row[0], webhook_body(request_id, None, error)))

    @staticmethod
    def _insert_webhook(conn: sqlite3.Connection, request_id: str, webhook: Webhook) -> None:
        url, body = webhook
        conn.execute(
            "INSERT INTO webhooks (request_id, url, body, next_attempt_at) VALUES (?, ?, ?, ?)",
            (request_id, url, body, time.time()),
        )

    # --- jobs -----------------------------------------------------------------------------
    def submit(self, job: NewJob, max_unfinished: int | None = None) -> Job:
        request_id = job.request_id or new_request_id()
        now = time.time()
        with self._write() as conn:
            if max_unfinished is not None:
                unfinished = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE endpoint = ? AND state != 'COMPLETED'",
                    (job.endpoint,),
                ).fetchone()[0]
                if unfinished >= max_unfinished:
                    recent = conn.execute(
                        "SELECT finished_at - started_at FROM jobs WHERE endpoint = ? "
                        "AND state = 'COMPLETED' AND started_at IS NOT NULL "
                        "ORDER BY seq DESC LIMIT 20",
                        (job.endpoint,),
                    ).fetchall()
                    raise QueueFull(retry_after([float(r[0]) for r in recent]))
            try:
                conn.execute(
                    "INSERT INTO jobs (id, endpoint, owner, input, checkpoint, state, version, "
                    "created_at, webhook_url, priority, start_deadline, file_ttl, batch_key) "
                    "VALUES (?, ?, ?, ?, ?, 'IN_QUEUE', 1, ?, ?, ?, ?, ?, ?)",
                    (
                        request_id,
                        job.endpoint,
                        job.owner,
                        dump_json(job.input),
                        job.checkpoint,
                        now,
                        job.webhook_url,
                        job.priority,
                        job.start_deadline,
                        job.file_ttl,
                        job.batch_key,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"request id {request_id!r} already exists") from exc
            created = self._get(conn, request_id)
        assert created is not None
        return created

    def get(self, request_id: str) -> Job | None:
        with self._conn() as conn:
            return self._get(conn, request_id)

    def queue_position(self, request_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute(
                # `me` first, as its own one-row query: the planner then counts `ahead`
                # along the queue index instead of guessing at a self-join.
                "WITH me AS (SELECT priority, seq FROM jobs WHERE id = ? AND state = 'IN_QUEUE') "
                "SELECT COUNT(*) FROM jobs AS ahead, me "
                "WHERE ahead.state = 'IN_QUEUE' "
                "AND (ahead.start_deadline IS NULL OR ahead.start_deadline > ?) "
                "AND (ahead.priority > me.priority "
                "     OR (ahead.priority = me.priority AND ahead.seq < me.seq))",
                (request_id, time.time()),
            ).fetchone()
        return int(row[0])

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        checkpoints: list[str] | None = None,
        batch_key: str | None = None,
    ) -> Job | None:
        if checkpoints is not None and not checkpoints:
            return None
        now = time.time()
        sql = (
            "SELECT id FROM jobs WHERE state = 'IN_QUEUE' "
            "AND (start_deadline IS NULL OR start_deadline > ?)"
        )
        params: list[Any] = [now]
        if checkpoints is not None:
            sql += f" AND checkpoint IN ({', '.join('?' * len(checkpoints))})"
            params.extend(checkpoints)
        if batch_key is not None:
            sql += " AND batch_key = ?"
            params.append(batch_key)
        sql += " ORDER BY priority DESC, seq LIMIT 1"
        with self._write() as conn:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'IN_PROGRESS', worker_id = ?, lease_expires_at = ?, "
                "started_at = ?, attempts = attempts + 1, version = version + 1 WHERE id = ?",
                (worker_id, now + lease_seconds, now, row[0]),
            )
            return self._get(conn, row[0])

    def heartbeat(self, request_id: str, worker_id: str, lease_seconds: float) -> bool:
        # A renewal is not a change anyone waits for: it does not bump the version.
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? "
                "WHERE id = ? AND worker_id = ? AND state = 'IN_PROGRESS'",
                (time.time() + lease_seconds, request_id, worker_id),
            )
            return cur.rowcount == 1

    def complete(
        self,
        request_id: str,
        worker_id: str,
        output: dict[str, Any],
        inference_time: float | None,
        webhook: Webhook | None = None,
    ) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'COMPLETED', output = ?, inference_time = ?, "
                "finished_at = ?, worker_id = NULL, lease_expires_at = NULL, "
                "version = version + 1 WHERE id = ? AND worker_id = ? AND state = 'IN_PROGRESS'",
                (dump_json(output), inference_time, time.time(), request_id, worker_id),
            )
            if cur.rowcount != 1:
                return False
            if webhook is not None:
                self._insert_webhook(conn, request_id, webhook)
            return True

    def fail(
        self,
        request_id: str,
        worker_id: str | None,
        error: JobError,
        webhook: Webhook | None = None,
    ) -> bool:
        with self._write() as conn:
            params: tuple[str, ...]
            if worker_id is None:
                where, params = "id = ? AND state != 'COMPLETED'", (request_id,)
            else:
                where = "id = ? AND worker_id = ? AND state = 'IN_PROGRESS'"
                params = (request_id, worker_id)
            cur = conn.execute(
                "UPDATE jobs SET state = 'COMPLETED', error = ?, finished_at = ?, "
                f"worker_id = NULL, lease_expires_at = NULL, version = version + 1 WHERE {where}",
                (dump_error(error), time.time(), *params),
            )
            if cur.rowcount != 1:
                return False
            if webhook is not None:
                self._insert_webhook(conn, request_id, webhook)
            return True

    def cancel(self, request_id: str) -> CancelOutcome:
        with self._write() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                return CancelOutcome.NOT_FOUND
            if row[0] == "COMPLETED":
                return CancelOutcome.ALREADY_COMPLETED
            if row[0] == "IN_QUEUE":
                self._finish(conn, request_id, cancelled_error(), time.time())
                return CancelOutcome.CANCELLED
            conn.execute(
                "UPDATE jobs SET cancel_requested = 1, version = version + 1 WHERE id = ?",
                (request_id,),
            )
            return CancelOutcome.REQUESTED

    def recover_expired(self, max_attempts: int) -> list[str]:
        now = time.time()
        with self._write() as conn:
            expired = conn.execute(
                "SELECT id, attempts, cancel_requested FROM jobs "
                "WHERE state = 'IN_PROGRESS' AND lease_expires_at < ?",
                (now,),
            ).fetchall()
            for request_id, attempts, cancel_requested in expired:
                if cancel_requested:
                    self._finish(conn, request_id, cancelled_error(), now)
                elif attempts >= max_attempts:
                    self._finish(conn, request_id, attempts_exhausted_error(attempts), now)
                else:
                    conn.execute(
                        "UPDATE jobs SET state = 'IN_QUEUE', worker_id = NULL, "
                        "lease_expires_at = NULL, version = version + 1 WHERE id = ?",
                        (request_id,),
                    )
        return [row[0] for row in expired]

    def expire_deadlines(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._write() as conn:
            late = conn.execute(
                "SELECT id FROM jobs WHERE state = 'IN_QUEUE' AND start_deadline <= ?", (now,)
            ).fetchall()
            for (request_id,) in late:
                self._finish(conn, request_id, deadline_error(), now)
        return [row[0] for row in late]

    def delete_finished(self, before: float) -> int:
        with self._write() as conn:
            old = "SELECT id FROM jobs WHERE state = 'COMPLETED' AND finished_at < ?"
            conn.execute(f"DELETE FROM job_logs WHERE request_id IN ({old})", (before,))
            conn.execute(
                f"DELETE FROM webhooks WHERE request_id IN ({old}) AND next_attempt_at IS NULL",
                (before,),
            )
            cur = conn.execute(
                "DELETE FROM jobs WHERE state = 'COMPLETED' AND finished_at < ?", (before,)
            )
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        result = {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 0}
        with self._conn() as conn:
            for state, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                result[state] = int(n)
        return result

    # --- logs -----------------------------------------------------------------------------
    def append_log(self, request_id: str, message: str, level: str = "INFO") -> None:
        with self._write() as conn:
            cur = conn.execute("UPDATE jobs SET version = version + 1 WHERE id = ?", (request_id,))
            if cur.rowcount:
                conn.execute(
                    "INSERT INTO job_logs (request_id, message, level, timestamp) "
                    "VALUES (?, ?, ?, ?)",
                    (request_id, message, level, time.time()),
                )

    def logs(self, request_id: str) -> list[LogRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT message, level, timestamp FROM job_logs WHERE request_id = ? ORDER BY id",
                (request_id,),
            ).fetchall()
        return [LogRecord(message=m, level=lv, timestamp=ts) for m, lv, ts in rows]

    # --- change notification --------------------------------------------------------------
    def _version(self, request_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT version FROM jobs WHERE id = ?", (request_id,)).fetchone()
        return -1 if row is None else int(row[0])

    def wait_for_change(self, request_id: str, seen_version: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                generation = self._generation
            version = self._version(request_id)
            remaining = deadline - time.monotonic()
            if version != seen_version or remaining <= 0:
                return version
            with self._changed:
                # A commit since we read the version would otherwise go unseen until the poll.
                if self._generation == generation:
                    self._changed.wait(min(POLL_INTERVAL, remaining))

    # --- keys -----------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT INTO api_keys (key_id, secret_hash, name, created_at, revoked_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key.key_id, key.secret_hash, key.name, key.created_at, key.revoked_at),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"key {key.key_id!r} already exists") from exc

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT key_id, secret_hash, name, created_at, revoked_at FROM api_keys "
                "WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else ApiKey(*row)

    def list_keys(self) -> list[ApiKey]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key_id, secret_hash, name, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, key_id"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            return cur.rowcount == 1

    # --- webhooks -------------------------------------------------------------------------
    def add_webhook(self, request_id: str, url: str, body: bytes) -> None:
        with self._write() as conn:
            self._insert_webhook(conn, request_id, (url, body))

    def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[WebhookDelivery]:
        now = time.time()
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE webhooks SET next_attempt_at = ? WHERE id IN ("
                "  SELECT id FROM webhooks WHERE delivered_at IS NULL AND next_attempt_at <= ?"
                "  ORDER BY next_attempt_at, id LIMIT ?) "
                "RETURNING id, request_id, url, body, attempts, next_attempt_at, delivered_at, "
                "last_error, extra",
                (now + lease_seconds, now, limit),
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda d: d.id)

    def webhook_result(
        self, delivery_id: int, delivered: bool, error: str | None, next_attempt_at: float | None
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = ?, "
                "delivered_at = ?, next_attempt_at = ? WHERE id = ?",
                (
                    error,
                    time.time() if delivered else None,
                    None if delivered else next_attempt_at,
                    delivery_id,
                ),
            )

    def webhooks(self, request_id: str) -> list[WebhookDelivery]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, request_id, url, body, attempts, next_attempt_at, delivered_at, "
                "last_error, extra FROM webhooks WHERE request_id = ? ORDER BY id",
                (request_id,),
            ).fetchall()
        return [_delivery(row) for row in rows]

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=int(row["id"]),
        request_id=row["request_id"],
        url=row["url"],
        body=bytes(row["body"]),
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        extra=json.loads(row["extra"]),
    )

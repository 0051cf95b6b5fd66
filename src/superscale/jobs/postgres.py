"""The scale-out job store: PostgreSQL, shared by any number of API servers and workers.

- Claims take the next runnable row with `FOR UPDATE SKIP LOCKED`: concurrent workers never
  wait on each other and never take the same job.
- Every visible change sends `NOTIFY superscale_jobs, '<request id>'` inside its transaction,
  so it is delivered only once committed. One listener thread per store turns those into wake-ups
  for `wait_for_change`; waiters still re-read their job's version every few seconds, so a lost
  listener connection only slows streams down until it is back.
- Migrations run on open under a transaction-scoped advisory lock, so servers starting together
  apply each one exactly once.
- Times are unix seconds from the clocks of the machines involved: keep them in sync (NTP).
- Losing the database (a failed connection, no pooled connection within `acquire_timeout`)
  raises `StoreUnavailable`, which callers can tell apart from bugs and retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from superscale.jobs._common import (
    JOB_COLUMNS,
    POLL_INTERVAL,
    attempts_exhausted_error,
    cancelled_error,
    deadline_error,
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

log = logging.getLogger(__name__)

CHANNEL = "superscale_jobs"
# How often a waiter re-reads its version while the listener is up (it is woken sooner on any
# notification); while the listener is down it falls back to POLL_INTERVAL.
LISTENING_POLL = 2.0

Conn = psycopg.Connection[dict[str, Any]]

# Each migration is a list of statements, applied in one transaction; append, never edit.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE jobs (
            seq bigserial PRIMARY KEY,               -- submission order
            id text NOT NULL UNIQUE,
            endpoint text NOT NULL,
            owner text NOT NULL,
            input jsonb NOT NULL,
            checkpoint text NOT NULL,
            state text NOT NULL,
            version bigint NOT NULL,
            created_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            output jsonb,
            error jsonb,
            inference_time double precision,
            attempts integer NOT NULL DEFAULT 0,
            cancel_requested boolean NOT NULL DEFAULT false,
            worker_id text,
            lease_expires_at double precision,
            webhook_url text,
            priority integer NOT NULL DEFAULT 0,
            start_deadline double precision,
            file_ttl double precision
        )""",
        "CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'IN_QUEUE'",
        "CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'IN_PROGRESS'",
        "CREATE INDEX jobs_endpoint_state ON jobs (endpoint, state)",
        """CREATE TABLE job_logs (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL,
            message text NOT NULL,
            level text NOT NULL,
            timestamp double precision NOT NULL
        )""",
        "CREATE INDEX job_logs_request ON job_logs (request_id, id)",
        """CREATE TABLE api_keys (
            key_id text PRIMARY KEY,
            secret_hash text NOT NULL,
            name text NOT NULL,
            created_at double precision NOT NULL,
            revoked_at double precision
        )""",
        """CREATE TABLE webhooks (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL,
            url text NOT NULL,
            body bytea NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at double precision,       -- NULL once delivered or given up
            delivered_at double precision,
            last_error text,
            extra jsonb NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE delivered_at IS NULL",
    ],
    [  # 2: cross-job batching
        "ALTER TABLE jobs ADD COLUMN batch_key text",
        "CREATE INDEX jobs_batch ON jobs (batch_key, priority DESC, seq) WHERE state = 'IN_QUEUE'",
    ],
]

_WEBHOOK_COLUMNS = (
    "id, request_id, url, body, attempts, next_attempt_at, delivered_at, last_error, extra"
)


class PostgresJobStore(JobStore):
    """`JobStore` on PostgreSQL through a psycopg 3 connection pool."""

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
        try:
            with self._tx() as conn:
                self._migrate(conn)
        except BaseException:
            self._pool.close()
            raise
        # Wake-ups: waiters register the request ids they wait on; the listener bumps those.
        self._changed = threading.Condition()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, int] = {}
        self._listening = False
        self.listener_pid: int | None = None  # the listener's backend, for diagnostics
        self._stop = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, name="superscale-pg-listener", daemon=True
        )
        self._listener.start()

    # --- plumbing -------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        with self._unavailable_on_loss(), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        with self._unavailable_on_loss(), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _unavailable_on_loss(self) -> Iterator[None]:
        """Connection failures (OperationalError, PoolTimeout among them) → StoreUnavailable;
        constraint violations, use after close and other errors pass through unchanged."""
        try:
            yield
        except PoolClosed:
            raise
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL at {_redact(self.url)}: {exc}") from exc

    @staticmethod
    def _notify(conn: Conn, request_id: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request_id))

    @staticmethod
    def _migrate(conn: Conn) -> None:
        # One lock per schema: servers on the same database and schema migrate one at a time.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('superscale:' || current_schema()))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        current = int(row.fetchone()["v"])  # type: ignore[index]
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                (version, time.time()),
            )

    @staticmethod
    def _get(conn: Conn, request_id: str) -> Job | None:
        row = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s",
            (request_id,),
        ).fetchone()
        return None if row is None else job_from_row(row)

    def _finish(self, conn: Conn, request_id: str, error: JobError, now: float) -> None:
        """End a job with `error` on the store's own account, queueing its webhook if any."""
        row = conn.execute(
            "UPDATE jobs SET state = 'COMPLETED', error = %s, finished_at = %s, "
            "worker_id = NULL, lease_expires_at = NULL, version = version + 1 WHERE id = %s "
            "RETURNING webhook_url",
            (_error(error), now, request_id),
        ).fetchone()
        if row is not None and row["webhook_url"]:
            url = row["webhook_url"]
            self._insert_webhook(conn, request_id, (url, webhook_body(request_id, None, error)))
        self._notify(conn, request_id)

    @staticmethod
    def _insert_webhook(conn: Conn, request_id: str, webhook: Webhook) -> None:
        url, body = webhook
        conn.execute(
            "INSERT INTO webhooks (request_id, url, body, next_attempt_at) VALUES (%s, %s, %s, %s)",
            (request_id, url, body, time.time()),
        )

    # --- jobs -----------------------------------------------------------------------------
    def submit(self, job: NewJob, max_unfinished: int | None = None) -> Job:
        request_id = job.request_id or new_request_id()
        try:
            with self._tx() as conn:
                if max_unfinished is not None:
                    # Submits to one endpoint take turns, so the count and insert are atomic.
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext('superscale-submit:' || %s))",
                        (job.endpoint,),
                    )
                    unfinished = conn.execute(
                        "SELECT COUNT(*) AS n FROM jobs "
                        "WHERE endpoint = %s AND state != 'COMPLETED'",
                        (job.endpoint,),
                    ).fetchone()
                    assert unfinished is not None
                    if unfinished["n"] >= max_unfinished:
                        recent = conn.execute(
                            "SELECT finished_at - started_at AS d FROM jobs WHERE endpoint = %s "
                            "AND state = 'COMPLETED' AND started_at IS NOT NULL "
                            "ORDER BY seq DESC LIMIT 20",
                            (job.endpoint,),
                        ).fetchall()
                        raise QueueFull(retry_after([float(r["d"]) for r in recent]))
                row = conn.execute(
                    "INSERT INTO jobs (id, endpoint, owner, input, checkpoint, state, version, "
                    "created_at, webhook_url, priority, start_deadline, file_ttl, batch_key) "
                    "VALUES (%s, %s, %s, %s, %s, 'IN_QUEUE', 1, %s, %s, %s, %s, %s, %s) "
                    f"RETURNING {JOB_COLUMNS}",
                    (
                        request_id,
                        job.endpoint,
                        job.owner,
                        Jsonb(job.input),
                        job.checkpoint,
                        time.time(),
                        job.webhook_url,
                        job.priority,
                        job.start_deadline,
                        job.file_ttl,
                        job.batch_key,
                    ),
                ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError(f"request id {request_id!r} already exists") from exc
        assert row is not None
        return job_from_row(row)

    def get(self, request_id: str) -> Job | None:
        with self._conn() as conn:
            return self._get(conn, request_id)

    def queue_position(self, request_id: str) -> int:
        # Two plain queries rather than a self-join: the count then always walks the queue
        # index, whatever the planner believes about the table's size.
        with self._conn() as conn:
            me = conn.execute(
                "SELECT priority, seq FROM jobs WHERE id = %s AND state = 'IN_QUEUE'",
                (request_id,),
            ).fetchone()
            if me is None:
                return 0
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM jobs "
                "WHERE state = 'IN_QUEUE' "
                "AND (start_deadline IS NULL OR start_deadline > %(now)s) "
                "AND (priority > %(priority)s OR (priority = %(priority)s AND seq < %(seq)s))",
                {"now": time.time(), "priority": me["priority"], "seq": me["seq"]},
            ).fetchone()
        assert row is not None
        return int(row["n"])

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
        with self._tx() as conn:
            row = conn.execute(
                "WITH next AS ("
                "  SELECT seq FROM jobs"
                "  WHERE state = 'IN_QUEUE'"
                "    AND (start_deadline IS NULL OR start_deadline > %(now)s)"
                "    AND (%(checkpoints)s::text[] IS NULL OR checkpoint = ANY(%(checkpoints)s))"
                "    AND (%(key)s::text IS NULL OR batch_key = %(key)s)"
                "  ORDER BY priority DESC, seq"
                "  LIMIT 1"
                "  FOR UPDATE SKIP LOCKED"
                ") "
                "UPDATE jobs SET state = 'IN_PROGRESS', worker_id = %(worker)s, "
                "  lease_expires_at = %(lease)s, started_at = %(now)s, "
                "  attempts = attempts + 1, version = version + 1 "
                "FROM next WHERE jobs.seq = next.seq "
                f"RETURNING {JOB_COLUMNS}",
                {
                    "now": now,
                    "checkpoints": checkpoints,
                    "key": batch_key,
                    "worker": worker_id,
                    "lease": now + lease_seconds,
                },
            ).fetchone()
            if row is None:
                return None
            self._notify(conn, row["id"])
        return job_from_row(row)

    def heartbeat(self, request_id: str, worker_id: str, lease_seconds: float) -> bool:
        # A renewal is not a change anyone waits for: no version bump, no notification.
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = %s "
                "WHERE id = %s AND worker_id = %s AND state = 'IN_PROGRESS'",
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
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'COMPLETED', output = %s, inference_time = %s, "
                "finished_at = %s, worker_id = NULL, lease_expires_at = NULL, "
                "version = version + 1 "
                "WHERE id = %s AND worker_id = %s AND state = 'IN_PROGRESS'",
                (Jsonb(output), inference_time, time.time(), request_id, worker_id),
            )
            if cur.rowcount != 1:
                return False
            if webhook is not None:
                self._insert_webhook(conn, request_id, webhook)
            self._notify(conn, request_id)
        return True

    def fail(
        self,
        request_id: str,
        worker_id: str | None,
        error: JobError,
        webhook: Webhook | None = None,
    ) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state = 'COMPLETED', error = %s, finished_at = %s, "
                "worker_id = NULL, lease_expires_at = NULL, version = version + 1 "
                "WHERE id = %s AND state != 'COMPLETED' "
                "AND (%s::text IS NULL OR (worker_id = %s AND state = 'IN_PROGRESS'))",
                (_error(error), time.time(), request_id, worker_id, worker_id),
            )
            if cur.rowcount != 1:
                return False
            if webhook is not None:
                self._insert_webhook(conn, request_id, webhook)
            self._notify(conn, request_id)
        return True

    def cancel(self, request_id: str) -> CancelOutcome:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT state FROM jobs WHERE id = %s FOR UPDATE", (request_id,)
            ).fetchone()
            if row is None:
                return CancelOutcome.NOT_FOUND
            if row["state"] == "COMPLETED":
                return CancelOutcome.ALREADY_COMPLETED
            if row["state"] == "IN_QUEUE":
                self._finish(conn, request_id, cancelled_error(), time.time())
                return CancelOutcome.CANCELLED
            conn.execute(
                "UPDATE jobs SET cancel_requested = true, version = version + 1 WHERE id = %s",
                (request_id,),
            )
            self._notify(conn, request_id)
            return CancelOutcome.REQUESTED

    def recover_expired(self, max_attempts: int) -> list[str]:
        now = time.time()
        with self._tx() as conn:
            # SKIP LOCKED: a row another server is recovering (or a worker is finishing) right
            # now is theirs; the next sweep looks at it again if still needed.
            expired = conn.execute(
                "SELECT id, attempts, cancel_requested FROM jobs "
                "WHERE state = 'IN_PROGRESS' AND lease_expires_at < %s "
                "FOR UPDATE SKIP LOCKED",
                (now,),
            ).fetchall()
            for row in expired:
                request_id = row["id"]
                if row["cancel_requested"]:
                    self._finish(conn, request_id, cancelled_error(), now)
                elif row["attempts"] >= max_attempts:
                    self._finish(conn, request_id, attempts_exhausted_error(row["attempts"]), now)
                else:
                    conn.execute(
                        "UPDATE jobs SET state = 'IN_QUEUE', worker_id = NULL, "
                        "lease_expires_at = NULL, version = version + 1 WHERE id = %s",
                        (request_id,),
                    )
                    self._notify(conn, request_id)
        return [row["id"] for row in expired]

    def expire_deadlines(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._tx() as conn:
            late = conn.execute(
                "SELECT id FROM jobs WHERE state = 'IN_QUEUE' AND start_deadline <= %s "
                "FOR UPDATE SKIP LOCKED",
                (now,),
            ).fetchall()
            for row in late:
                self._finish(conn, row["id"], deadline_error(), now)
        return [row["id"] for row in late]

    def delete_finished(self, before: float) -> int:
        with self._tx() as conn:
            old = "SELECT id FROM jobs WHERE state = 'COMPLETED' AND finished_at < %s"
            conn.execute(f"DELETE FROM job_logs WHERE request_id IN ({old})", (before,))
            conn.execute(
                f"DELETE FROM webhooks WHERE request_id IN ({old}) AND next_attempt_at IS NULL",
                (before,),
            )
            cur = conn.execute(
                "DELETE FROM jobs WHERE state = 'COMPLETED' AND finished_at < %s", (before,)
            )
            return cur.rowcount

    def counts(self) -> dict[str, int]:
        result = {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 0}
        with self._conn() as conn:
            for row in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
                result[row["state"]] = int(row["n"])
        return result

    # --- logs -----------------------------------------------------------------------------
    def append_log(self, request_id: str, message: str, level: str = "INFO") -> None:
        with self._tx() as conn:
            cur = conn.execute("UPDATE jobs SET version = version + 1 WHERE id = %s", (request_id,))
            if cur.rowcount:
                conn.execute(
                    "INSERT INTO job_logs (request_id, message, level, timestamp) "
                    "VALUES (%s, %s, %s, %s)",
                    (request_id, message, level, time.time()),
                )
                self._notify(conn, request_id)

    def logs(self, request_id: str) -> list[LogRecord]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT message, level, timestamp FROM job_logs WHERE request_id = %s ORDER BY id",
                (request_id,),
            ).fetchall()
        return [LogRecord(r["message"], r["level"], r["timestamp"]) for r in rows]

    # --- change notification --------------------------------------------------------------
    def _listen(self) -> None:
        """Turn NOTIFYs into wake-ups; reconnect with backoff when the connection drops."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="superscale-listener"
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listener_pid = conn.info.backend_pid
                    self._set_listening(True)
                    backoff = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if self._stop.is_set():
                                break
                            self._wake(note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("job store listener lost its connection (%s); reconnecting", exc)
            self._set_listening(False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _set_listening(self, listening: bool) -> None:
        with self._changed:
            self._listening = listening
            # Waiters switch polling speed, and catch up on anything missed while down.
            for request_id in self._generations:
                self._generations[request_id] += 1
            self._changed.notify_all()

    def _wake(self, request_id: str) -> None:
        with self._changed:
            if request_id in self._generations:
                self._generations[request_id] += 1
                self._changed.notify_all()

    def _version(self, request_id: str) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT version FROM jobs WHERE id = %s", (request_id,)).fetchone()
        return -1 if row is None else int(row["version"])

    def wait_for_change(self, request_id: str, seen_version: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._changed:
            self._waiters[request_id] = self._waiters.get(request_id, 0) + 1
            self._generations.setdefault(request_id, 0)
        try:
            while True:
                with self._changed:
                    generation = self._generations[request_id]
                version = self._version(request_id)
                remaining = deadline - time.monotonic()
                if version != seen_version or remaining <= 0:
                    return version
                with self._changed:
                    if self._generations[request_id] == generation:
                        poll = LISTENING_POLL if self._listening else POLL_INTERVAL
                        self._changed.wait(min(poll, remaining))
        finally:
            with self._changed:
                self._waiters[request_id] -= 1
                if not self._waiters[request_id]:
                    del self._waiters[request_id]
                    del self._generations[request_id]

    # --- keys -----------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        try:
            with self._conn() as conn:
                conn.execute(
                    "INSERT INTO api_keys (key_id, secret_hash, name, created_at, revoked_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (key.key_id, key.secret_hash, key.name, key.created_at, key.revoked_at),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise ValueError(f"key {key.key_id!r} already exists") from exc

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT key_id, secret_hash, name, created_at, revoked_at FROM api_keys "
                "WHERE key_id = %s",
                (key_id,),
            ).fetchone()
        return None if row is None else ApiKey(**row)

    def list_keys(self) -> list[ApiKey]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT key_id, secret_hash, name, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, key_id"
            ).fetchall()
        return [ApiKey(**row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self._conn() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            return cur.rowcount == 1

    # --- webhooks -------------------------------------------------------------------------
    def add_webhook(self, request_id: str, url: str, body: bytes) -> None:
        with self._conn() as conn:
            self._insert_webhook(conn, request_id, (url, body))

    def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[WebhookDelivery]:
        now = time.time()
        with self._conn() as conn:
            rows = conn.execute(
                "UPDATE webhooks SET next_attempt_at = %s WHERE id IN ("
                "  SELECT id FROM webhooks WHERE delivered_at IS NULL AND next_attempt_at <= %s"
                "  ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_WEBHOOK_COLUMNS}",
                (now + lease_seconds, now, limit),
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda d: d.id)

    def webhook_result(
        self, delivery_id: int, delivered: bool, error: str | None, next_attempt_at: float | None
    ) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = %s, "
                "delivered_at = %s, next_attempt_at = %s WHERE id = %s",
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
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE request_id = %s ORDER BY id",
                (request_id,),
            ).fetchall()
        return [_delivery(row) for row in rows]

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        try:  # wakes the listener now rather than at its next timeout
            with self._conn() as conn:
                conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except (psycopg.Error, StoreUnavailable):
            pass
        self._listener.join(5)
        self._pool.close()


def _error(error: JobError) -> Jsonb:
    return Jsonb(asdict(error))


def _delivery(row: dict[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=int(row["id"]),
        request_id=row["request_id"],
        url=row["url"],
        body=bytes(row["body"]),
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        extra=dict(row["extra"] or {}),
    )


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))

"""The job store's logic, once, over a SQL dialect (`dialect.py`) and the statements of
`queries.sql`: submit, claim, leases, finishes, cancel, recovery, deadlines, retention, logs,
keys, webhook deliveries, one-time capabilities and change notification. `sqlite.py` and
`postgres.py` only connect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from typing import Any

from superscale.jobs._common import (
    delivery_from_row,
    job_from_row,
    load_json_column,
    new_request_id,
    retry_after,
    webhook_body,
)
from superscale.jobs.dialect import Connection, Cursor, Dialect, Duplicate, Row
from superscale.jobs.migrate import migrate
from superscale.jobs.positions import QueuedJob, QueueOrder
from superscale.jobs.records import (
    ApiKey,
    CancelOutcome,
    Job,
    JobError,
    LogRecord,
    NewJob,
    QueueFull,
    Webhook,
    WebhookDelivery,
)
from superscale.jobs.statements import render

# Queue positions come from a snapshot of the queue at most this old (seconds) for changes by
# other processes; on a long queue, from one at most this many times what taking it cost (so
# that counting stays a small share of a server's time however long the queue grows).
POSITIONS_MAX_AGE = 0.1
POSITIONS_COST_FACTOR = 20.0


class _Refused(Exception):
    """Inside a write: undo it, the caller answers a refusal."""


class ChangeSignal:
    """Wake-ups for `wait_for_change`: writes bump the generations of the jobs they changed (and
    a dialect may bump them for other processes' writes); a waiter sleeps until its job's
    generation moves or its poll interval passes, whichever is first."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, int] = {}

    @contextmanager
    def watching(self, request_id: str) -> Iterator[None]:
        with self._changed:
            self._waiters[request_id] = self._waiters.get(request_id, 0) + 1
            self._generations.setdefault(request_id, 0)
        try:
            yield
        finally:
            with self._changed:
                self._waiters[request_id] -= 1
                if not self._waiters[request_id]:
                    del self._waiters[request_id]
                    del self._generations[request_id]

    def generation(self, request_id: str) -> int:
        with self._changed:
            return self._generations[request_id]

    def wait(self, request_id: str, generation: int, timeout: float) -> None:
        with self._changed:
            # A change since `generation` was read would otherwise go unseen until the poll.
            if self._generations[request_id] == generation:
                self._changed.wait(timeout)

    def wake(self, request_ids: Iterable[str] | None) -> None:
        """Wake the waiters of these jobs; None: every waiter."""
        with self._changed:
            targets = list(self._generations) if request_ids is None else request_ids
            woken = False
            for request_id in targets:
                if request_id in self._generations:
                    self._generations[request_id] += 1
                    woken = True
            if woken:
                self._changed.notify_all()


class _Session:
    """A connection with the store's statements by name, collecting the jobs it changed."""

    def __init__(self, conn: Connection, statements: dict[str, str]) -> None:
        self.conn = conn
        self._statements = statements
        self.changed: list[str] = []

    def run(self, statement: str, /, **params: Any) -> Cursor:
        return self.conn.execute(self._statements[statement], params)

    def one(self, statement: str, /, **params: Any) -> Row | None:
        row: Row | None = self.run(statement, **params).fetchone()
        return row

    def all(self, statement: str, /, **params: Any) -> list[Row]:
        return list(self.run(statement, **params).fetchall())

    def count(self, statement: str, /, **params: Any) -> int:
        return int(self.run(statement, **params).rowcount)


class JobStore:
    """Durable jobs, logs, keys and webhook deliveries on a SQL database: the logic here, the
    database's particulars in `dialect`. Thread-safe; methods are blocking."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._statements = render(dict(dialect.words), dialect.paramstyle)
        self._signal = ChangeSignal()
        self._positions: QueueOrder | None = None
        self._positions_until = 0.0
        self._positions_lock = threading.Lock()
        # Moves on every change of a key made through this store: caches of keys
        # (`api.limits.KeyCache`) drop what they hold when it does.
        self.keys_changed = 0
        try:
            dialect.retrying_startup(lambda: migrate(dialect))
        except BaseException:
            dialect.close()
            raise
        dialect.start(self._signal.wake)

    # --- plumbing -------------------------------------------------------------------------
    @property
    def local_reads(self) -> bool:
        """Whether reads are local file reads (SQLite), cheap enough to make on an event loop
        inside `quick()`; else (PostgreSQL) they cross a network and belong in a thread."""
        return self._dialect.name == "sqlite"

    def quick(self) -> AbstractContextManager[None]:
        """Reads within wait for locks only briefly (`StoreUnavailable` instead)."""
        return self._dialect.quick()

    @contextmanager
    def _read(self) -> Iterator[_Session]:
        with self._dialect.connection() as conn:
            yield _Session(conn, self._statements)

    @contextmanager
    def _write(self) -> Iterator[_Session]:
        """A write transaction; waiters on the jobs it changed are woken once it commits."""
        with self._dialect.transaction() as conn:
            session = _Session(conn, self._statements)
            yield session
            if session.changed:
                self._dialect.notify(conn, session.changed)
        if session.changed:  # claims, cancels, requeues: the queue may have moved
            self._queue_moved()
        self._signal.wake(session.changed)

    def _json(self, value: Any) -> Any:
        return self._dialect.bind_json(value)

    def _finish(self, db: _Session, request_id: str, error: JobError, now: float) -> None:
        """End a job with `error` on the store's own account, queueing its webhook if any."""
        row = db.one(
            "fail", id=request_id, worker_id=None, error=self._json(asdict(error)), now=now
        )
        if row is not None and row["webhook_url"]:
            body = webhook_body(request_id, None, error)
            self._insert_webhook(db, request_id, (row["webhook_url"], body))
        db.changed.append(request_id)

    @staticmethod
    def _insert_webhook(db: _Session, request_id: str, webhook: Webhook) -> None:
        url, body = webhook
        db.run("insert_webhook", request_id=request_id, url=url, body=body, now=time.time())

    # --- jobs -----------------------------------------------------------------------------
    def submit(
        self,
        job: NewJob,
        max_unfinished: int | None = None,
        max_waiting: int | None = None,
        max_owner_waiting: int | None = None,
    ) -> Job:
        """Insert a queued job. Raises QueueFull when the endpoint has `max_unfinished`
        unfinished jobs, or more than `max_waiting` queued (fal's `fal_max_queue_length`), or
        the job's owner already has `max_owner_waiting` queued.

        Idempotent for a given `request_id`: the same submit retried after a lost commit
        answer (the API retries through short outages) returns the job the first attempt
        inserted; another job with that id is a ValueError."""
        request_id = job.request_id or new_request_id()
        try:
            with self._write() as db:
                if max_owner_waiting is not None:
                    self._dialect.lock(db.conn, f"submit-owner:{job.owner}")
                    self._check_owner_room(db, job, max_owner_waiting)
                if max_unfinished is not None or max_waiting is not None:
                    # Submits to one endpoint take turns, so the count and insert are atomic.
                    self._dialect.lock(db.conn, f"submit:{job.endpoint}")
                    self._check_room(db, job.endpoint, max_unfinished, max_waiting)
                row = db.one(
                    "insert_job",
                    id=request_id,
                    endpoint=job.endpoint,
                    owner=job.owner,
                    input=self._json(job.input),
                    checkpoint=job.checkpoint,
                    now=time.time(),
                    webhook_url=job.webhook_url,
                    priority=job.priority,
                    start_deadline=job.start_deadline,
                    file_ttl=job.file_ttl,
                    batch_key=job.batch_key,
                    no_retry=job.no_retry,
                    store_io=job.store_io,
                )
        except Duplicate as exc:
            existing = self.get(request_id)
            if existing is not None and (existing.owner, existing.input) == (job.owner, job.input):
                return existing
            raise ValueError(f"request id {request_id!r} already exists") from exc
        assert row is not None
        self._joined_queue(QueuedJob(row["id"], row["owner"], row["priority"], row["seq"]))
        return job_from_row(row)

    def _joined_queue(self, job: QueuedJob) -> None:
        """Keep positions current for a job this store just queued."""
        with self._positions_lock:
            if self._positions is not None and not self._positions.append(job):
                self._queue_moved()

    @staticmethod
    def _check_room(
        db: _Session, endpoint: str, max_unfinished: int | None, max_waiting: int | None
    ) -> None:
        limit = None
        if max_waiting is not None:
            waiting = db.one("count_waiting", endpoint=endpoint)
            assert waiting is not None
            limit = "caller" if waiting["n"] > max_waiting else None
        if limit is None and max_unfinished is not None:
            unfinished = db.one("count_unfinished", endpoint=endpoint)
            assert unfinished is not None
            limit = "queue" if unfinished["n"] >= max_unfinished else None
        if limit is not None:
            recent = db.all("recent_run_times", endpoint=endpoint)
            raise QueueFull(retry_after([float(r["seconds"]) for r in recent]), limit)

    @staticmethod
    def _check_owner_room(db: _Session, job: NewJob, max_owner_waiting: int) -> None:
        waiting = db.one("count_owner_waiting", owner=job.owner)
        assert waiting is not None
        if waiting["n"] >= max_owner_waiting:
            recent = db.all("recent_run_times", endpoint=job.endpoint)
            raise QueueFull(retry_after([float(r["seconds"]) for r in recent]), "key")

    def get(self, request_id: str) -> Job | None:
        with self._read() as db:
            row = db.one("get_job", id=request_id)
        return None if row is None else job_from_row(row)

    def queue_position(self, request_id: str) -> int:
        """How many runnable jobs claims will take before this one (0 when next, or not
        queued). From a snapshot of the queue (`positions.QueueOrder`) taken again after this
        store's own claims, cancels and requeues, and at least every `POSITIONS_MAX_AGE` s (or
        `POSITIONS_COST_FACTOR` times what one took, on a long queue) for other processes'."""
        order = self._queue_order()
        if request_id in order.positions:
            return order.positions[request_id]
        with self._read() as db:
            row = db.one("job_place", id=request_id)
        if row is None:
            return 0
        return order.position(QueuedJob(row["id"], row["owner"], row["priority"], row["seq"]))

    def _queue_order(self) -> QueueOrder:
        with self._positions_lock:
            now = time.monotonic()
            if self._positions is None or now >= self._positions_until:
                with self._read() as db:
                    rows = db.all("queued_jobs", now=time.time())
                    turns = {r["owner"]: float(r["last_turn"]) for r in db.all("owner_turns")}
                jobs = [QueuedJob(r["id"], r["owner"], r["priority"], r["seq"]) for r in rows]
                self._positions = QueueOrder(jobs, turns)
                cost = time.monotonic() - now
                self._positions_until = now + max(POSITIONS_MAX_AGE, POSITIONS_COST_FACTOR * cost)
            return self._positions

    def _queue_moved(self) -> None:
        """Positions are counted again at the next ask."""
        self._positions_until = 0.0

    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        checkpoints: list[str] | None = None,
        batch_key: str | None = None,
    ) -> Job | None:
        """Atomically take the oldest highest-priority queued job this worker can run
        (only among jobs with that `batch_key` when one is given)."""
        if checkpoints is not None and not checkpoints:
            return None
        now = time.time()
        with self._write() as db:
            row = db.one(
                "claim",
                worker_id=worker_id,
                lease_expires_at=now + lease_seconds,
                now=now,
                checkpoints=self._json(checkpoints),
                batch_key=batch_key,
            )
            if row is None:
                return None
            db.run("take_turn", owner=row["owner"], now=now)
            db.changed.append(row["id"])
        return job_from_row(row)

    def claim_batch(
        self,
        worker_id: str,
        lease_seconds: float,
        checkpoints: list[str] | None = None,
        max_jobs: int = 1,
    ) -> list[Job]:
        """The job `claim` would take, then up to `max_jobs - 1` more queued now with its
        batch key, oldest first. The first is always the queue's head, so batching never
        holds back an older job of another key for longer than one batch runs."""
        first = self.claim(worker_id, lease_seconds, checkpoints)
        if first is None:
            return []
        jobs = [first]
        while first.batch_key is not None and len(jobs) < max_jobs:
            more = self.claim(worker_id, lease_seconds, checkpoints, first.batch_key)
            if more is None:
                break
            jobs.append(more)
        return jobs

    def heartbeat(self, request_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease. False when the worker no longer holds it (stop working on it)."""
        with self._write() as db:
            lease = time.time() + lease_seconds
            return (
                db.count("heartbeat", id=request_id, worker_id=worker_id, lease_expires_at=lease)
                == 1
            )

    def complete(
        self,
        request_id: str,
        worker_id: str,
        output: dict[str, Any],
        inference_time: float | None,
        webhook: Webhook | None = None,
    ) -> bool:
        """Finish successfully. False (and no change) when the worker lost the lease.
        `webhook` (url, body) is queued in the same transaction, only if the job finished."""
        with self._write() as db:
            done = db.count(
                "complete",
                id=request_id,
                worker_id=worker_id,
                output=self._json(output),
                inference_time=inference_time,
                now=time.time(),
            )
            if done != 1:
                return False
            if webhook is not None:
                self._insert_webhook(db, request_id, webhook)
            db.changed.append(request_id)
        return True

    def fail(
        self,
        request_id: str,
        worker_id: str | None,
        error: JobError,
        webhook: Webhook | None = None,
    ) -> bool:
        """Finish with an error. worker_id None: fail a job whoever holds it (or none).
        `webhook` as for `complete`."""
        with self._write() as db:
            row = db.one(
                "fail",
                id=request_id,
                worker_id=worker_id,
                error=self._json(asdict(error)),
                now=time.time(),
            )
            if row is None:
                return False
            if webhook is not None:
                self._insert_webhook(db, request_id, webhook)
            db.changed.append(request_id)
        return True

    def release(self, request_id: str, worker_id: str) -> bool:
        """Hand a running job back to the queue unfinished (its worker is stopping); the
        attempt is not counted. False when the worker no longer held it."""
        with self._write() as db:
            if db.count("release", id=request_id, worker_id=worker_id) != 1:
                return False
            db.changed.append(request_id)
        return True

    def cancel(self, request_id: str) -> CancelOutcome:
        """End a queued job now; ask a running one's worker to stop at its next tiles."""
        with self._write() as db:
            row = db.one("job_state", id=request_id)
            if row is None:
                return CancelOutcome.NOT_FOUND
            if row["state"] == "COMPLETED":
                return CancelOutcome.ALREADY_COMPLETED
            if row["state"] == "IN_QUEUE":
                self._finish(db, request_id, JobError.cancelled(), time.time())
                return CancelOutcome.CANCELLED
            db.run("request_cancel", id=request_id)
            db.changed.append(request_id)
            return CancelOutcome.REQUESTED

    def recover_expired(self, max_attempts: int) -> list[str]:
        """Requeue jobs whose lease ran out; end those attempted `max_attempts` times, or once
        when they asked for no retry. Returns the ids it touched."""
        now = time.time()
        with self._write() as db:
            # Where rows can be locked, a row another server is recovering (or a worker is
            # finishing) right now is skipped; the next sweep looks at it again if needed.
            expired = db.all("expired_leases", now=now)
            for row in expired:
                request_id = row["id"]
                if row["cancel_requested"]:
                    self._finish(db, request_id, JobError.cancelled(), now)
                elif row["no_retry"]:
                    self._finish(db, request_id, JobError.worker_lost_no_retry(), now)
                elif row["attempts"] >= max_attempts:
                    self._finish(db, request_id, JobError.attempts_exhausted(row["attempts"]), now)
                else:
                    db.run("requeue", id=request_id)
                    db.changed.append(request_id)
        return [row["id"] for row in expired]

    def expire_deadlines(self, now: float | None = None) -> list[str]:
        """Fail queued jobs whose start deadline passed (504, error_type "timeout")."""
        now = time.time() if now is None else now
        with self._write() as db:
            late = db.all("past_start_deadline", now=now)
            for row in late:
                self._finish(db, row["id"], JobError.start_deadline_passed(), now)
        return [row["id"] for row in late]

    def delete_finished(self, before: float) -> int:
        """Forget jobs that finished before this unix time, with their logs and settled
        webhooks (pending deliveries stay). Returns how many jobs went."""
        with self._write() as db:
            db.run("delete_old_logs", before=before)
            db.run("delete_old_webhooks", before=before)
            db.run("delete_old_upload_usage", day=int(time.time() // 86400) - 1)
            return db.count("delete_old_jobs", before=before)

    def take_output(self, request_id: str) -> dict[str, Any] | None:
        """The output of a job that may not keep it (store_io off), dropped as it is read:
        the first reader gets it, later ones None. None also for any other job."""
        with self._write() as db:
            row = db.one("unread_output", id=request_id)
            if row is None:
                return None
            db.run("drop_output", id=request_id, now=time.time())
        output: dict[str, Any] = load_json_column(row["output"])
        return output

    def drop_unread_outputs(self, before: float) -> int:
        """Drop the outputs, never read, of jobs that may not keep them and finished before
        this unix time. Returns how many went."""
        with self._write() as db:
            return db.count("drop_unread_outputs", before=before, now=time.time())

    def counts(self) -> dict[str, int]:
        """Jobs by state, for metrics: {"IN_QUEUE": n, "IN_PROGRESS": n, "COMPLETED": n}."""
        result = {"IN_QUEUE": 0, "IN_PROGRESS": 0, "COMPLETED": 0}
        with self._read() as db:
            for row in db.all("count_by_state"):
                result[row["state"]] = int(row["n"])
        return result

    # --- logs -----------------------------------------------------------------------------
    def append_log(self, request_id: str, message: str, level: str = "INFO") -> None:
        """Add a log line; bumps the job's version so streams see it."""
        with self._write() as db:
            if db.count("bump_version", id=request_id):
                db.run(
                    "insert_log",
                    request_id=request_id,
                    message=message,
                    level=level,
                    now=time.time(),
                )
                db.changed.append(request_id)

    def logs(self, request_id: str) -> list[LogRecord]:
        """Block until the job's version differs from seen_version or timeout passes.
        Returns the current version (-1 when the job does not exist)."""
        with self._read() as db:
            rows = db.all("logs", request_id=request_id)
        return [LogRecord(r["message"], r["level"], r["timestamp"]) for r in rows]

    # --- change notification --------------------------------------------------------------
    def _version(self, request_id: str) -> int:
        with self._read() as db:
            row = db.one("job_version", id=request_id)
        return -1 if row is None else int(row["version"])

    def wait_for_change(self, request_id: str, seen_version: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._signal.watching(request_id):
            while True:
                generation = self._signal.generation(request_id)
                version = self._version(request_id)
                remaining = deadline - time.monotonic()
                if version != seen_version or remaining <= 0:
                    return version
                poll = self._dialect.poll_interval()
                self._signal.wait(request_id, generation, min(poll, remaining))

    # --- keys -----------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        """Due, undelivered webhooks; claiming pushes next_attempt_at by lease_seconds."""
        try:
            with self._write() as db:
                db.run("insert_key", **asdict(key))
        except Duplicate as exc:
            raise ValueError(f"key {key.key_id!r} already exists") from exc

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._read() as db:
            row = db.one("get_key", key_id=key_id)
        return None if row is None else ApiKey(**row)

    def list_keys(self) -> list[ApiKey]:
        with self._read() as db:
            return [ApiKey(**row) for row in db.all("list_keys")]

    def set_key_limits(
        self,
        key_id: str,
        max_queue: int | None,
        max_rps: float | None,
        upload_bytes_per_day: int | None,
    ) -> bool:
        """Set a key's own limits (None: the server's setting). False for an unknown key."""
        with self._write() as db:
            found = db.count(
                "set_key_limits",
                key_id=key_id,
                max_queue=max_queue,
                max_rps=max_rps,
                upload_bytes_per_day=upload_bytes_per_day,
            )
        self.keys_changed += 1
        return found == 1

    def add_upload_bytes(self, owner: str, size: int, limit: int | None) -> int | None:
        """Count `size` uploaded bytes against the owner's UTC day. With `limit`, refuses
        (counting nothing) what would take the day past it: returns the day's total after
        adding, or None when refused."""
        day = int(time.time() // 86400)
        try:
            with self._write() as db:
                row = db.one("add_upload_bytes", owner=owner, day=day, bytes=size)
                assert row is not None
                total = int(row["bytes"])
                if limit is not None and total > limit:
                    raise _Refused  # rolls the addition back
        except _Refused:
            return None
        return total

    def revoke_key(self, key_id: str) -> bool:
        with self._write() as db:
            revoked = db.count("revoke_key", key_id=key_id, now=time.time()) == 1
        self.keys_changed += 1
        return revoked

    # --- one-time capabilities ------------------------------------------------------------
    def spend(self, capability: str, expires_at: float) -> bool:
        """Mark a one-time capability (a signed upload URL, a multipart complete, a login link,
        a closed session) used. True for the first use only, whichever server of a cluster
        sees it; remembered until `expires_at`, when the capability is dead anyway."""
        with self._write() as db:
            return (
                db.one("spend", id=capability, now=time.time(), expires_at=expires_at) is not None
            )

    def unspend(self, capability: str) -> None:
        """Give a use back (the action it guarded failed before it did anything)."""
        with self._write() as db:
            db.run("unspend", id=capability)

    def is_spent(self, capability: str) -> bool:
        with self._read() as db:
            return db.one("is_spent", id=capability) is not None

    def forget_spent(self, now: float | None = None) -> int:
        """Forget uses of capabilities that have expired. Returns how many went."""
        with self._write() as db:
            return db.count("forget_spent", now=time.time() if now is None else now)

    # --- webhooks -------------------------------------------------------------------------
    def add_webhook(self, request_id: str, url: str, body: bytes) -> None:
        with self._write() as db:
            self._insert_webhook(db, request_id, (url, body))

    def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[WebhookDelivery]:
        now = time.time()
        with self._write() as db:
            rows = db.all(
                "claim_due_webhooks", now=now, lease_expires_at=now + lease_seconds, limit=limit
            )
        return sorted((delivery_from_row(row) for row in rows), key=lambda d: d.id)

    def webhook_result(
        self, delivery_id: int, delivered: bool, error: str | None, next_attempt_at: float | None
    ) -> None:
        """Record an attempt. next_attempt_at None with delivered False: give up."""
        with self._write() as db:
            db.run(
                "webhook_result",
                id=delivery_id,
                error=error,
                delivered_at=time.time() if delivered else None,
                next_attempt_at=None if delivered else next_attempt_at,
            )

    def webhooks(self, request_id: str) -> list[WebhookDelivery]:
        """Every delivery of a request's webhooks, pending, delivered or given up (oldest first)."""
        with self._read() as db:
            return [delivery_from_row(row) for row in db.all("webhooks_of", request_id=request_id)]

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._dialect.close()

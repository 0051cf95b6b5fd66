"""The job store: one interface, implemented on SQLite (embedded default) and PostgreSQL.

A job moves IN_QUEUE → IN_PROGRESS → COMPLETED. COMPLETED covers success, failure and
cancellation alike (fal's clients wait for COMPLETED and read the outcome from the result);
`Job.error` tells them apart. Workers hold a job through a lease they renew; a job whose lease
runs out goes back to the queue until it has been attempted `max_attempts` times.

Every change to a job bumps `Job.version`, so `wait_for_change` can tell a waiter whether
anything happened since the version it last saw.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import Any


class StoreUnavailable(ConnectionError):
    """The store's database cannot be reached (down, restarting, out of connections); the
    same call may well succeed later. The API answers it with 503 and Retry-After."""


class QueueFull(Exception):
    """The endpoint already holds as many unfinished jobs as it may; retry later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"queue is full; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class CancelOutcome(enum.Enum):
    CANCELLED = "CANCELLED"  # was queued: now COMPLETED with a cancellation error
    REQUESTED = "CANCELLATION_REQUESTED"  # is running: the worker stops at its next tile batch
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_FOUND = "NOT_FOUND"


@dataclass
class JobError:
    """Why a job did not produce an output; served as the result's status and body."""

    status_code: int  # HTTP status the result call answers with (422, 400, 500, 504 …)
    message: str
    error_type: str  # e.g. "input_error", "cancelled", "internal_error", "timeout"
    detail: Any = None  # fal's `detail` body; defaults to a message list when None

    def to_body(self) -> dict[str, Any]:
        detail = (
            self.detail
            if self.detail is not None
            else [{"loc": ["body"], "msg": self.message, "type": self.error_type}]
        )
        return {"detail": detail, "error_type": self.error_type}


# A webhook to queue: (receiver URL, body).
Webhook = tuple[str, bytes]


@dataclass
class NewJob:
    endpoint: str
    owner: str  # the key id that submitted it ("" when auth is off)
    input: dict[str, Any]
    checkpoint: str  # which model the job needs: workers pull only what they can run
    webhook_url: str | None = None
    priority: int = 0  # higher first; fal's "low" priority is -1
    start_deadline: float | None = None  # unix time; not started by then → 504
    file_ttl: float | None = None  # seconds output files live (None: the server default)
    request_id: str | None = None  # assigned by the store when None
    # Jobs with the same key may share the model's forward passes (see `claim_batch`);
    # None: never batched with others.
    batch_key: str | None = None


@dataclass
class Job:
    id: str
    endpoint: str
    owner: str
    input: dict[str, Any]
    checkpoint: str
    state: str  # "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED"
    version: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    output: dict[str, Any] | None = None
    error: JobError | None = None
    inference_time: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    worker_id: str | None = None
    lease_expires_at: float | None = None
    webhook_url: str | None = None
    priority: int = 0
    start_deadline: float | None = None
    file_ttl: float | None = None
    batch_key: str | None = None


@dataclass
class LogRecord:
    message: str
    level: str = "INFO"
    timestamp: float = 0.0


@dataclass
class ApiKey:
    key_id: str
    secret_hash: str  # never the secret itself
    name: str
    created_at: float
    revoked_at: float | None = None


@dataclass
class WebhookDelivery:
    id: int
    request_id: str
    url: str
    body: bytes
    attempts: int
    next_attempt_at: float | None  # None once delivered or given up
    delivered_at: float | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobStore(abc.ABC):
    """Durable jobs, logs, keys and webhook deliveries. Thread-safe; methods are blocking."""

    # --- jobs -----------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, job: NewJob, max_unfinished: int | None = None) -> Job:
        """Insert a queued job. Raises QueueFull when the endpoint has that many unfinished."""

    @abc.abstractmethod
    def get(self, request_id: str) -> Job | None: ...

    @abc.abstractmethod
    def queue_position(self, request_id: str) -> int:
        """How many runnable jobs are ahead of this one (0 when next, or not queued)."""

    @abc.abstractmethod
    def claim(
        self,
        worker_id: str,
        lease_seconds: float,
        checkpoints: list[str] | None = None,
        batch_key: str | None = None,
    ) -> Job | None:
        """Atomically take the oldest highest-priority queued job this worker can run
        (only among jobs with that `batch_key` when one is given)."""

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

    @abc.abstractmethod
    def heartbeat(self, request_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease. False when the worker no longer holds it (stop working on it)."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    def fail(
        self,
        request_id: str,
        worker_id: str | None,
        error: JobError,
        webhook: Webhook | None = None,
    ) -> bool:
        """Finish with an error. worker_id None: fail a job whoever holds it (or none).
        `webhook` as for `complete`."""

    # The store's own finishes below queue the job's webhook (if it has a URL) themselves,
    # in the transaction that finishes it.
    @abc.abstractmethod
    def cancel(self, request_id: str) -> CancelOutcome: ...

    @abc.abstractmethod
    def recover_expired(self, max_attempts: int) -> list[str]:
        """Requeue jobs whose lease ran out; fail those attempted max_attempts times.
        Returns the ids it touched."""

    @abc.abstractmethod
    def expire_deadlines(self, now: float | None = None) -> list[str]:
        """Fail queued jobs whose start deadline passed (504, error_type "timeout")."""

    @abc.abstractmethod
    def delete_finished(self, before: float) -> int:
        """Forget jobs that finished before this unix time, with their logs and settled
        webhooks (pending deliveries stay). Returns how many jobs went."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs by state, for metrics: {"IN_QUEUE": n, "IN_PROGRESS": n, "COMPLETED": n}."""

    # --- logs -----------------------------------------------------------------------------
    @abc.abstractmethod
    def append_log(self, request_id: str, message: str, level: str = "INFO") -> None:
        """Add a log line; bumps the job's version so streams see it."""

    @abc.abstractmethod
    def logs(self, request_id: str) -> list[LogRecord]: ...

    # --- change notification --------------------------------------------------------------
    @abc.abstractmethod
    def wait_for_change(self, request_id: str, seen_version: int, timeout: float) -> int:
        """Block until the job's version differs from seen_version or timeout passes.
        Returns the current version (-1 when the job does not exist)."""

    # --- keys -----------------------------------------------------------------------------
    @abc.abstractmethod
    def add_key(self, key: ApiKey) -> None: ...

    @abc.abstractmethod
    def get_key(self, key_id: str) -> ApiKey | None: ...

    @abc.abstractmethod
    def list_keys(self) -> list[ApiKey]: ...

    @abc.abstractmethod
    def revoke_key(self, key_id: str) -> bool: ...

    # --- webhooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def add_webhook(self, request_id: str, url: str, body: bytes) -> None: ...

    @abc.abstractmethod
    def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[WebhookDelivery]:
        """Due, undelivered webhooks; claiming pushes next_attempt_at by lease_seconds."""

    @abc.abstractmethod
    def webhook_result(
        self, delivery_id: int, delivered: bool, error: str | None, next_attempt_at: float | None
    ) -> None:
        """Record an attempt. next_attempt_at None with delivered False: give up."""

    @abc.abstractmethod
    def webhooks(self, request_id: str) -> list[WebhookDelivery]:
        """Every delivery of a request's webhooks, pending, delivered or given up (oldest first)."""

    # --- lifecycle ------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

"""The job store's records and errors (the store itself: `superscale.jobs.store.JobStore`).

A job moves IN_QUEUE → IN_PROGRESS → COMPLETED. COMPLETED covers success, failure and
cancellation alike (fal's clients wait for COMPLETED and read the outcome from the result);
`Job.error` tells them apart. Workers hold a job through a lease they renew; a job whose lease
runs out goes back to the queue until it has been attempted `max_attempts` times.

Every change to a job bumps `Job.version`, so `wait_for_change` can tell a waiter whether
anything happened since the version it last saw.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from superscale.errors import ErrorType


class StoreUnavailable(ConnectionError):
    """The store's database cannot be reached (down, restarting, out of connections); the
    same call may well succeed later. The API answers it with 503 and Retry-After."""


def outage_delays(first: float = 0.1, most: float = 1.0) -> Iterator[float]:
    """Seconds to wait before each new try of a call that met `StoreUnavailable`: doubling from
    `first` up to `most`. The API's held requests and the worker's finishes both use it."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


class QueueFull(Exception):
    """No room for the job; retry later. `limit` says which was reached: "queue" (the
    endpoint holds as many unfinished jobs as it may), "caller" (more waiting than the submit's
    own `fal_max_queue_length` allows) or "key" (the key has as many queued as it may)."""

    def __init__(self, retry_after: float, limit: str = "queue") -> None:
        super().__init__(f"no room for the job ({limit} limit); retry after {retry_after:.0f} s")
        self.retry_after = retry_after
        self.limit = limit


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
    error_type: str  # an `ErrorType`; plain `str` as read back from the store
    detail: Any = None  # fal's `detail` body; defaults to a message list when None

    def to_body(self) -> dict[str, Any]:
        detail = (
            self.detail
            if self.detail is not None
            else [{"loc": ["body"], "msg": self.message, "type": str(self.error_type)}]
        )
        return {"detail": detail, "error_type": str(self.error_type)}

    # Errors of the platform's own (not the input's), with fal's flat `detail` text.
    @classmethod
    def platform(cls, status_code: int, message: str, error_type: ErrorType) -> JobError:
        return cls(status_code, message, error_type, detail=message)

    @classmethod
    def cancelled(cls) -> JobError:
        return cls.platform(499, "The request was cancelled.", ErrorType.CLIENT_CANCELLED)

    @classmethod
    def start_deadline_passed(cls) -> JobError:
        return cls.platform(
            504,
            "The request was not started before its timeout (x-fal-request-timeout).",
            ErrorType.REQUEST_TIMEOUT,
        )

    @classmethod
    def attempts_exhausted(cls, attempts: int) -> JobError:
        return cls.platform(
            500,
            f"The worker running this request stopped responding {attempts} time(s); giving up.",
            ErrorType.RUNNER_DISCONNECTED,
        )

    @classmethod
    def worker_lost_no_retry(cls) -> JobError:
        return cls.platform(
            500,
            "The worker running this request stopped responding; not run again (X-Fal-No-Retry).",
            ErrorType.RUNNER_DISCONNECTED,
        )

    @classmethod
    def internal(cls, exc: BaseException) -> JobError:
        return cls(
            500,
            f"Internal error while running the request ({type(exc).__name__}).",
            ErrorType.INTERNAL_ERROR,
        )


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
    no_retry: bool = False  # X-Fal-No-Retry: a job whose worker dies is not run again
    store_io: bool = True  # X-Fal-Store-IO: 0 → False: input and output JSON are not kept


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
    no_retry: bool = False
    store_io: bool = True
    # store_io False: when the output JSON was dropped (read once, or unread for an hour).
    output_dropped_at: float | None = None


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
    # The key's own limits; None: the server's setting (`Settings.key_max_queue` …).
    max_queue: int | None = None
    max_rps: float | None = None
    upload_bytes_per_day: int | None = None


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

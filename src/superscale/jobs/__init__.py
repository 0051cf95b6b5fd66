"""Job stores: `open_job_store(url)` builds the one a database URL names."""

from __future__ import annotations

from superscale.jobs._common import webhook_body
from superscale.jobs.records import (
    ApiKey,
    CancelOutcome,
    Job,
    JobError,
    LogRecord,
    NewJob,
    QueueFull,
    StoreUnavailable,
    Webhook,
    WebhookDelivery,
)
from superscale.jobs.store import JobStore

__all__ = [
    "ApiKey",
    "CancelOutcome",
    "Job",
    "JobError",
    "JobStore",
    "LogRecord",
    "NewJob",
    "QueueFull",
    "StoreUnavailable",
    "Webhook",
    "WebhookDelivery",
    "open_job_store",
    "webhook_body",
]


def open_job_store(url: str) -> JobStore:
    """`sqlite:///relative/path`, `sqlite:////absolute/path` or `postgresql://…`."""
    if url.startswith("sqlite:///"):
        from superscale.jobs.sqlite import SqliteJobStore

        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ValueError(f"{url!r}: the SQLite job store needs a file path")
        return SqliteJobStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from superscale.jobs.postgres import PostgresJobStore

        return PostgresJobStore(url)
    raise ValueError(f"unsupported job store URL {url!r}: use sqlite:///path or postgresql://…")

"""Row ↔ dataclass conversion, the store's own errors and fal's webhook body."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from superscale.jobs.records import Job, JobError, WebhookDelivery

# Retry-After bounds for QueueFull, in seconds.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0


def new_request_id() -> str:
    return str(uuid.uuid4())


def webhook_body(request_id: str, output: dict[str, Any] | None, error: JobError | None) -> bytes:
    """fal's webhook body for a job finished with `output` or `error`. Here, not in
    `superscale.webhooks`, so that stores can queue it in the transaction that ends the job."""
    body: dict[str, Any] = {"request_id": request_id, "gateway_request_id": request_id}
    if error is None:
        body.update(status="OK", payload=output)
    else:
        body.update(
            status="ERROR",
            payload=error.to_body(),
            error=f"Invalid status code: {error.status_code}",
        )
    return json.dumps(body, separators=(",", ":")).encode()


def load_json_column(value: Any) -> Any:
    # SQLite hands back JSON text; psycopg already decodes jsonb columns.
    if value is None or not isinstance(value, str | bytes):
        return value
    return json.loads(value)


def load_error(value: Any) -> JobError | None:
    data = load_json_column(value)
    return None if data is None else JobError(**data)


def job_from_row(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"],
        endpoint=row["endpoint"],
        owner=row["owner"],
        input=load_json_column(row["input"]),
        checkpoint=row["checkpoint"],
        state=row["state"],
        version=int(row["version"]),
        created_at=float(row["created_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        output=load_json_column(row["output"]),
        error=load_error(row["error"]),
        inference_time=row["inference_time"],
        attempts=int(row["attempts"]),
        cancel_requested=bool(row["cancel_requested"]),
        worker_id=row["worker_id"],
        lease_expires_at=row["lease_expires_at"],
        webhook_url=row["webhook_url"],
        priority=int(row["priority"]),
        start_deadline=row["start_deadline"],
        file_ttl=row["file_ttl"],
        batch_key=row["batch_key"],
        no_retry=bool(row["no_retry"]),
        store_io=bool(row["store_io"]),
        output_dropped_at=row["output_dropped_at"],
    )


def delivery_from_row(row: Mapping[str, Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=int(row["id"]),
        request_id=row["request_id"],
        url=row["url"],
        body=bytes(row["body"]),
        attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
        extra=dict(load_json_column(row["extra"]) or {}),
    )


def retry_after(recent_durations: list[float]) -> float:
    """Seconds until a slot is likely free: the mean run time of recent jobs, clamped."""
    if not recent_durations:
        return 5.0
    mean = sum(recent_durations) / len(recent_durations)
    return min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, mean))

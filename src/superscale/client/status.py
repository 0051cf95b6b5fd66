"""Queue states as the client hands them out: `Queued`, `InProgress`, `Completed`.

Named and shaped like fal_client's, so `isinstance(update, InProgress)` and
`log["message"]` in code written for fal keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Status:
    """Base of the three queue states; `request_id` is the job's id."""

    request_id: str


@dataclass
class Queued(Status):
    """Waiting; `position` counts the requests ahead (0: next)."""

    position: int


@dataclass
class InProgress(Status):
    """Running; `logs` are fal log entries (dicts with `message`, `level`, `timestamp`…)
    when asked for with `with_logs=True`, else None."""

    logs: list[dict[str, Any]] | None = None


@dataclass
class Completed(Status):
    """Finished: succeeded, failed or cancelled; `error` is set when it did not succeed
    (the result call raises the matching exception)."""

    logs: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None


def parse_status(data: Any) -> Status:
    """A `Status` from a QueueStatus JSON body; ValueError on anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        raise ValueError(f"not a queue status: {data!r:.200}")
    state = data.get("status")
    request_id = data["request_id"]
    logs = data.get("logs")
    logs = [entry for entry in logs if isinstance(entry, dict)] if isinstance(logs, list) else None
    if state == "IN_QUEUE":
        position = data.get("queue_position")
        return Queued(request_id, position if isinstance(position, int) else 0)
    if state == "IN_PROGRESS":
        return InProgress(request_id, logs)
    if state == "COMPLETED":
        metrics = data.get("metrics")
        return Completed(
            request_id,
            logs,
            metrics if isinstance(metrics, dict) else {},
            data.get("error"),
            data.get("error_type"),
        )
    raise ValueError(f"unknown queue status {state!r}")

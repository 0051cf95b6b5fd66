"""The worker: turns queued jobs into outputs. `Worker` loads torch, so it is imported lazily:
`superscale.worker.fetch` stays usable without it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superscale.worker.loop import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from superscale.worker.loop import Worker

        return Worker
    raise AttributeError(name)

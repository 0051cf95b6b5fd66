"""Keeps a claimed job's lease alive while it runs, and says when to stop working on it."""

from __future__ import annotations

import logging
import threading
import time

from superscale.jobs.store import JobStore

log = logging.getLogger(__name__)


class Lease:
    """A heartbeat thread renewing the lease every `lease_seconds / 3`.

    `lost` is set when the store says another worker owns the job now, or when no renewal has
    succeeded for a whole lease (the store was unreachable: someone may have requeued it).
    """

    def __init__(
        self, job_store: JobStore, request_id: str, worker_id: str, lease_seconds: float
    ) -> None:
        self.job_store = job_store
        self.request_id = request_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{request_id[:8]}", daemon=True
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._done.wait(self.lease_seconds / 3):
            try:
                held = self.job_store.heartbeat(self.request_id, self.worker_id, self.lease_seconds)
            except Exception:
                log.warning("heartbeat for %s failed", self.request_id, exc_info=True)
                held = time.monotonic() - last_ok < self.lease_seconds
            else:
                last_ok = time.monotonic()
            if not held:
                log.warning("lost the lease on %s; stopping work on it", self.request_id)
                self.lost.set()
                return

"""What runs beside (or instead of) the API: N worker threads and webhook delivery, and the one
way they stop, whichever command started them (`serve` or `worker`).

Stopping: claiming stops at once; running jobs may finish for `Settings.shutdown_grace`
seconds; what still runs then is handed back to the queue (not charged an attempt), delivery
stops, and the caller closes the stores. A second stop signal hands running jobs back at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

from superscale.files.base import FileStore
from superscale.jobs.store import JobStore
from superscale.settings import Settings
from superscale.webhooks import WebhookDispatcher, WebhookSigner

if TYPE_CHECKING:
    from superscale.worker.loop import Worker

log = logging.getLogger(__name__)


class WorkerService:
    """`workers` worker threads (0: none, delivery only) and one webhook dispatcher."""

    def __init__(
        self,
        settings: Settings,
        job_store: JobStore,
        file_store: FileStore,
        signer: WebhookSigner,
        *,
        workers: int,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        if not settings.ssrf_guard:
            log.warning(
                "!!! THE SSRF GUARD IS OFF (SUPERSCALE_SSRF_GUARD=false): image_url fetches and "
                "webhooks may reach this machine, its network and cloud metadata services. Use "
                "this only for tests on a trusted machine. !!!"
            )
        if workers:  # torch comes with the worker: not for an API-only `serve`
            from superscale.worker.loop import Worker
        self.workers: list[Worker] = [
            Worker(settings, job_store, file_store, worker_id if workers == 1 else None)
            for _ in range(workers)
        ]
        self.dispatcher = WebhookDispatcher(settings, job_store, signer)
        self.stopping = threading.Event()  # no more claims
        self._threads: list[threading.Thread] = []
        self._grace_timer: threading.Timer | None = None

    def start(self) -> None:
        for i, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=worker.run_forever, args=(self.stopping,), name=f"worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.dispatcher.start()

    def request_stop(self) -> None:
        """Stop claiming; running jobs get the grace period, then are handed back. A second
        request hands them back now. Returns at once (safe in a signal handler)."""
        if self.stopping.is_set():
            log.warning("second stop request: handing running jobs back now")
            self.abort()
            return
        grace = self.settings.shutdown_grace
        if any(thread.is_alive() for thread in self._threads):
            log.info("stopping: running jobs may finish for %g s", grace)
        self.stopping.set()
        self._grace_timer = threading.Timer(grace, self.abort)
        self._grace_timer.daemon = True
        self._grace_timer.start()

    def abort(self) -> None:
        for worker in self.workers:
            worker.abort.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every worker thread has ended (after a stop); False on timeout."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """Stop and wait: the grace period, the hand-back, then webhook delivery."""
        if not self.stopping.is_set():
            self.request_stop()
        self.wait()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self.dispatcher.stop(5)

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT request a stop (a second one: hand back now). Call from the main
        thread. uvicorn, which takes these signals while it serves, passes them on to these
        handlers when it returns, so `serve` drains as `worker` does."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

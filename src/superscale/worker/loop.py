"""The worker: claim jobs → fetch and decode each input → upscale → encode → store → complete.

Jobs claimed together (one checkpoint and seed, see `Settings.max_batch_jobs`) share the
model's tile batches; one job is the case of one. Every failure ends its job with an error the
user can read (`failures.job_error`) and never escapes the loop. A finished job's webhook is
queued in the same store transaction that finishes it (never one without the other); delivery
is the `WebhookDispatcher`'s business.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from superscale import netguard
from superscale.engine import Cancelled
from superscale.files.base import FileStore, StorageFull
from superscale.jobs import Job, JobError, StoreUnavailable, Webhook, webhook_body
from superscale.jobs.records import outage_delays
from superscale.jobs.store import JobStore
from superscale.schemas import DEFAULT_SEED
from superscale.settings import Settings
from superscale.worker.engines import (
    TileProgress,
    get_upscaler,
    max_batch_jobs,
    pipelined,
    warm_up,
    warms_up,
)
from superscale.worker.failures import (
    job_error,
)
from superscale.worker.fetch import InputFetcher
from superscale.worker.lease import Lease
from superscale.worker.steps import JobSteps, Prepared

log = logging.getLogger(__name__)

# While the file store is full: the first pause, and the longest (doubling in between).
FULL_BACKOFF_MIN = 1.0
FULL_BACKOFF_MAX = 30.0
# While passes fail: the longest wait between them, and how often it is said again.
FAILING_MAX = 5.0
FAILURE_REPORT = 60.0
T = TypeVar("T")


def through_outage(call: Callable[[], T], seconds: float) -> T:
    """`call`, tried again while the job store is unreachable, for up to `seconds`: a job
    finished during a store outage shorter than its lease is recorded, not run again."""
    deadline, delays = time.monotonic() + seconds, outage_delays()
    while True:
        try:
            return call()
        except StoreUnavailable:
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job store unavailable; trying again in %.1f s", delay)
            time.sleep(delay)


# Most input pixels one shared inference takes (its outputs are all held until it ends: 16× as
# many bytes ×3). A bigger image runs alone; it fills the engine's batches by itself.
BATCH_PIXELS = 2048 * 2048


@dataclass
class Claimed:
    """A job this worker holds: its lease, and its input ready (or how it ended at intake)."""

    job: Job
    lease: Lease
    prepared: Prepared | None = None
    outcome: Outcome | None = None

    @property
    def ready(self) -> Prepared:
        assert self.prepared is not None
        return self.prepared

    @property
    def pixels(self) -> int:
        return self.ready.pixels


@dataclass
class Inferred:
    """A claimed job on its way to delivery, with its upscale or what ended it."""

    claimed: Claimed
    result: Image.Image | np.ndarray | BaseException | None = None
    elapsed: float = 0.0


@dataclass
class Outcome:
    """How a job ended here: an output or an error; neither when it must not be finished
    here (its lease was lost, or it went back to the queue because the worker is stopping)."""

    output: dict[str, Any] | None = None
    error: JobError | None = None
    inference_time: float | None = None


class Worker:
    """Runs jobs of the checkpoints in `settings.checkpoints`.

    `fetch_allow` exempts (host, port) pairs from the SSRF guard; for tests only.
    """

    def __init__(
        self,
        settings: Settings,
        job_store: JobStore,
        file_store: FileStore,
        worker_id: str | None = None,
        *,
        fetch_allow: netguard.AllowHook | None = None,
    ) -> None:
        self.settings = settings
        self.job_store = job_store
        self.file_store = file_store
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.fetcher = InputFetcher(settings, file_store, allow=fetch_allow)
        self.steps = JobSteps(settings, job_store, file_store, self.fetcher)
        self._last_recovery = 0.0
        # Set when shutdown may not wait any longer: running jobs go back to the queue.
        self.abort = threading.Event()
        self.max_batch_jobs = max_batch_jobs(settings)
        self.pipelined = pipelined(settings)
        # While the file store is full, no claims (jobs go back to the queue, uncharged).
        self._paused_until = 0.0
        self._full_backoff = FULL_BACKOFF_MIN

    # --- the loop --------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim and finish one job, or a batch of them, one stage after the other. False when
        there was none to claim (or the worker is waiting for space on a full file store)."""
        claimed = self._claim()
        if claimed is None:
            return False
        for item in self._infer_all(claimed):
            self._deliver(item)
        return True

    def run_forever(self, stop: threading.Event, idle_max: float = 0.1) -> None:
        """Work until `stop` is set; jobs already claimed are finished first. Ready the served
        checkpoints first where `Settings.warm_up` says. Pipelined (see
        `Settings.pipeline`): the next jobs are claimed, fetched and decoded, and finished
        ones encoded and stored, in threads beside the inference, so a GPU does not wait on
        the CPU's parts; else `run_once` after `run_once`."""
        if warms_up(self.settings):
            warm_up(self.settings, stop)
        if self.pipelined:
            self._run_pipelined(stop, idle_max)
        else:
            self._repeat(self.run_once, stop, idle_max)
        self.fetcher.close()

    def _repeat(self, step: Callable[[], bool], stop: threading.Event, idle_max: float) -> None:
        """`step` until `stop` is set. When it found nothing to do, polls with a backoff up to
        `idle_max` s (the store interface has no wake-up call); while it fails (the store
        unreachable, say), backs off up to `FAILING_MAX` s and logs the failure once, then a
        line a minute."""
        idle, failures, next_report = 0.01, 0, 0.0
        while not stop.is_set():
            try:
                worked = step()
            except Exception:
                failures += 1
                now = time.monotonic()
                if failures == 1:
                    log.exception("worker %s: pass failed; retrying", self.worker_id)
                    next_report = now + FAILURE_REPORT
                elif now >= next_report:
                    log.error("worker %s: still failing (%d passes)", self.worker_id, failures)
                    next_report = now + FAILURE_REPORT
                stop.wait(min(FAILING_MAX, idle_max * 2**failures))
                continue
            if failures:
                log.info("worker %s: passes work again after %d failures", self.worker_id, failures)
                failures = 0
            if worked:
                idle = 0.01
            else:
                stop.wait(idle)
                idle = min(idle_max, idle * 2)

    def _run_pipelined(self, stop: threading.Event, idle_max: float) -> None:
        """Intake (claim, fetch, decode) and delivery (encode, store, finish) in their own
        threads; inference in this one. The next batch is claimed only once the inference has
        taken the last one, so at most one waits (other workers get the rest of the queue),
        and finished jobs queue for delivery up to a batch's worth: memory stays bounded."""
        ready: queue.Queue[list[Claimed]] = queue.Queue(maxsize=1)
        done: queue.Queue[Inferred | None] = queue.Queue(maxsize=self.max_batch_jobs)
        slot = threading.Semaphore(1)  # held from a claim until the inference takes it

        def intake() -> bool:
            if not slot.acquire(timeout=idle_max):
                return False  # the last batch still waits: nothing to do yet
            claimed = self._claim()
            if claimed is None:
                slot.release()
                return False
            ready.put(claimed)
            return True

        def deliver() -> None:
            while (item := done.get()) is not None:
                self._deliver(item)

        threads = [
            threading.Thread(target=self._repeat, args=(intake, stop, idle_max), name="intake"),
            threading.Thread(target=deliver, name="delivery"),
        ]
        for thread in threads:
            thread.start()
        try:
            while threads[0].is_alive() or not ready.empty():
                try:
                    claimed = ready.get(timeout=0.05)
                except queue.Empty:
                    continue
                slot.release()
                for item in self._infer_all(claimed):
                    done.put(item)
        finally:
            threads[0].join()
            done.put(None)
            threads[1].join()

    def _recover_when_idle(self) -> None:
        """Requeue jobs of dead workers (the API does it too; this covers worker-only setups).
        Jobs it fails for good get their webhooks queued by the store, in the same transaction."""
        now = time.monotonic()
        if now - self._last_recovery >= self.settings.lease_seconds / 2:
            self._last_recovery = now
            self.job_store.recover_expired(self.settings.max_attempts)

    # --- the stages ------------------------------------------------------------------------
    def _claim(self) -> list[Claimed] | None:
        """Claim a batch of queued jobs, lease each and fetch and decode its input; None when
        there was none (or claims are paused while the file store is full)."""
        if time.monotonic() < self._paused_until:
            return None
        jobs = self.job_store.claim_batch(
            self.worker_id,
            self.settings.lease_seconds,
            list(self.settings.checkpoints),
            self.max_batch_jobs,
        )
        if not jobs:
            self._recover_when_idle()
            return None
        if len(jobs) == 1:
            log.info(
                "worker %s: running %s (attempt %d)", self.worker_id, jobs[0].id, jobs[0].attempts
            )
        else:
            ids = ", ".join(job.id for job in jobs)
            log.info("worker %s: running %d jobs together: %s", self.worker_id, len(jobs), ids)
        # Every lease runs before the first fetch: a slow fetch must not let another expire.
        claimed = [Claimed(job, self._lease(job)) for job in jobs]
        for item in claimed:
            try:
                item.prepared = self.steps.prepare(
                    item.job, self._cancel_check(item.job.id, item.lease.lost)
                )
            except Exception as exc:
                item.outcome = self._failed(item.job.id, exc, item.lease)
        return claimed

    def _lease(self, job: Job) -> Lease:
        lease = Lease(self.job_store, job.id, self.worker_id, self.settings.lease_seconds)
        lease.__enter__()
        return lease

    def _infer_all(self, claimed: list[Claimed]) -> Iterator[Inferred]:
        """Each claimed job with its upscale (or what ended it), exactly once, even where
        something unforeseen breaks the grouping: every lease then still ends in delivery."""
        sent: set[int] = set()
        try:
            for item in self._infer_groups(claimed):
                sent.add(id(item.claimed))
                yield item
        except Exception as exc:
            log.exception("worker %s: inference pass failed", self.worker_id)
            for job in claimed:
                if id(job) not in sent:
                    yield Inferred(job, exc)

    def _infer_groups(self, claimed: list[Claimed]) -> Iterator[Inferred]:
        """Group after group: jobs of one checkpoint and seed share the engine's batches."""
        groups: dict[tuple[str, int], list[list[Claimed]]] = {}
        for item in claimed:
            if item.prepared is None:  # ended at intake: straight to delivery
                yield Inferred(item)
                continue
            seed = item.prepared.params.seed
            chunks = groups.setdefault(
                (item.job.checkpoint, DEFAULT_SEED if seed is None else seed), []
            )
            # Outputs of one inference are all held at once: cap their pixels.
            pixels = item.prepared.pixels
            if not chunks or sum(c.pixels for c in chunks[-1]) + pixels > BATCH_PIXELS:
                chunks.append([])
            chunks[-1].append(item)
        for (checkpoint, seed), chunks in groups.items():
            for chunk in chunks:
                yield from self._infer(checkpoint, seed, chunk)

    def _infer(self, checkpoint: str, seed: int, group: list[Claimed]) -> list[Inferred]:
        """Upscale a group of one checkpoint and seed in shared tile batches."""
        prepared = [item.ready for item in group]
        results: list[Image.Image | np.ndarray | BaseException]
        try:
            upscaler = get_upscaler(self.settings, checkpoint)
            t = time.perf_counter()
            results = upscaler.upscale_many(
                [p.decoded.image for p in prepared],
                [p.params.overlapping_tiles for p in prepared],
                seed,
                progress=[TileProgress(self.job_store, p.job.id) for p in prepared],
                should_cancel=[p.should_cancel for p in prepared],
                scale=[p.params.scale() for p in prepared],
                tile_overlap=[p.params.tile_overlap or 0 for p in prepared],
                as_arrays=True,  # straight to the encoder
            )
            # Each job waited for the whole group: that is its inference time.
            elapsed = time.perf_counter() - t
        except Exception as exc:  # the model would not load, say: the group fails
            results, elapsed = [exc] * len(group), 0.0
        return [Inferred(item, r, elapsed) for item, r in zip(group, results, strict=True)]

    def _deliver(self, item: Inferred) -> None:
        """Encode and store the output (or take the error), finish the job, end its lease.
        Never raises: a job it could not finish is the lease's (it expires; the job runs
        again)."""
        try:
            outcome = item.claimed.outcome or self._store(item)
            self._finish(item.claimed.job, outcome)
        except Exception:
            log.exception("worker %s: could not finish %s", self.worker_id, item.claimed.job.id)
        finally:
            item.claimed.lease.__exit__(None, None, None)

    def _store(self, item: Inferred) -> Outcome:
        request_id, lease = item.claimed.job.id, item.claimed.lease
        try:
            if isinstance(item.result, BaseException):
                raise item.result
            assert item.result is not None
            prepared = item.claimed.ready
            prepared.timings["inference"] = item.elapsed
            output = self.steps.store_output(prepared, item.result)
            self._full_backoff = FULL_BACKOFF_MIN  # outputs are written again
            return Outcome(output, None, item.elapsed)
        except Exception as exc:
            return self._failed(request_id, exc, lease)

    def _failed(self, request_id: str, exc: BaseException, lease: Lease) -> Outcome:
        if isinstance(exc, StorageFull):
            # The disk's state, not the job's fault: back to the queue, uncharged, and no
            # claims until there may be space again.
            self._release(request_id)
            self._pause_for_space(exc)
            return Outcome()
        if isinstance(exc, Cancelled) and lease.lost.is_set():
            log.warning("dropped %s: the lease was lost", request_id)
            return Outcome()
        if isinstance(exc, Cancelled) and self.abort.is_set():
            self._release(request_id)
            return Outcome()
        return Outcome(error=job_error(request_id, exc))

    def _finish(self, job: Job, outcome: Outcome) -> None:
        """Complete or fail the job, its webhook queued in the same transaction."""
        if outcome.output is None and outcome.error is None:
            return
        webhook: Webhook | None = None
        if job.webhook_url:
            webhook = (job.webhook_url, webhook_body(job.id, outcome.output, outcome.error))
        patience = self.settings.lease_seconds  # past it the job would be someone else's
        if outcome.output is not None:
            output = outcome.output
            completed = through_outage(
                lambda: self.job_store.complete(
                    job.id, self.worker_id, output, outcome.inference_time, webhook
                ),
                patience,
            )
            if not completed:
                # A try whose answer the outage swallowed may have completed it after all.
                current = through_outage(lambda: self.job_store.get(job.id), patience)
                if current is not None and current.output == output:
                    return
                log.warning("lost the lease on %s before completing; output discarded", job.id)
                self.steps.discard(output)
        else:
            error = outcome.error
            assert error is not None
            self.steps.log(job.id, error.message, "ERROR")
            through_outage(
                lambda: self.job_store.fail(job.id, self.worker_id, error, webhook), patience
            )

    def _pause_for_space(self, exc: StorageFull) -> None:
        if time.monotonic() >= self._paused_until:
            log.error(
                "worker %s: %s; jobs go back to the queue, claiming again in %g s",
                self.worker_id,
                exc,
                self._full_backoff,
            )
        self._paused_until = time.monotonic() + self._full_backoff
        self._full_backoff = min(FULL_BACKOFF_MAX, self._full_backoff * 2)

    def _release(self, request_id: str) -> None:
        """Give a job back unfinished, not charged an attempt: the worker is stopping."""
        log.warning("releasing %s unfinished: the worker is stopping", request_id)
        try:
            self.job_store.release(request_id, self.worker_id)
        except Exception:
            log.warning("could not release %s; its lease will expire", request_id, exc_info=True)

    def _cancel_check(self, request_id: str, lost: threading.Event) -> Callable[[], bool]:
        def should_cancel() -> bool:
            if lost.is_set() or self.abort.is_set():
                return True
            try:
                current = self.job_store.get(request_id)
            except Exception:  # the store hiccuped: the heartbeat decides whether we lost it
                log.warning("could not check %s for cancellation", request_id, exc_info=True)
                return False
            return current is None or current.cancel_requested

        return should_cancel

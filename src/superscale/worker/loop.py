"""The worker: claim a job → fetch its input → decode → upscale → encode → store → complete.

Every failure ends the job with an error the user can read (4xx when the input is at fault,
500 with the exception type when we are) and never escapes the loop. A finished job's webhook
is queued in the same store transaction that finishes it (never one without the other);
delivery is the `WebhookDispatcher`'s business.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from PIL import Image
from pydantic import ValidationError

from superscale import images, netguard
from superscale.engine import Cancelled, Upscaler, resolve_device
from superscale.engine.multi import upscale_many
from superscale.files.base import FileStore, new_key
from superscale.jobs import Job, JobError, JobStore, Webhook, webhook_body
from superscale.model import CheckpointError
from superscale.schemas import DEFAULT_SEED, AuraSrInput, AuraSrOutput, ImageFile
from superscale.settings import Settings
from superscale.worker.fetch import InputError, InputFetcher
from superscale.worker.lease import Lease

log = logging.getLogger(__name__)

CANCELLED = JobError(400, "The request was cancelled.", "cancelled")
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
SCALE = 4  # AuraSR's output is 4× the input on each side
# Below this many tiles every batch is logged; above it, at most one line per interval.
_LOG_EVERY_BATCH_UP_TO = 64
_LOG_INTERVAL = 1.0

# Most input pixels one shared-batch inference takes (its 4× outputs are all held until it ends:
# 16× as many bytes ×3). A bigger image runs alone; it fills the engine's batches by itself.
BATCH_PIXELS = 2048 * 2048
# Jobs batched together when `Settings.max_batch_jobs` is unset and the device is not a CPU.
GPU_BATCH_JOBS = 8

_upscalers: dict[tuple[str, str, str, str], Upscaler] = {}
_upscalers_lock = threading.Lock()


def get_upscaler(settings: Settings, checkpoint: str) -> Upscaler:
    """One Upscaler per checkpoint and engine setting, loaded on first use and shared by all
    workers of the process (the weights are large; loading twice would double the memory)."""
    key = (checkpoint, settings.device, settings.dtype, str(settings.model_dir or ""))
    with _upscalers_lock:
        upscaler = _upscalers.get(key)
        if upscaler is None:
            upscaler = Upscaler.from_checkpoint(
                checkpoint,
                device=settings.device,
                dtype=settings.dtype,
                model_dir=settings.model_dir,
            )
            _upscalers[key] = upscaler
        return upscaler


class _Progress:
    """Turns the engine's progress calls into job log lines, throttled for big images."""

    def __init__(self, job_store: JobStore, request_id: str) -> None:
        self.job_store = job_store
        self.request_id = request_id
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total <= _LOG_EVERY_BATCH_UP_TO or done >= total or now - self._last >= _LOG_INTERVAL:
            self._last = now
            try:
                self.job_store.append_log(self.request_id, f"tiles {done}/{total}")
            except Exception:  # progress is worth less than the job: keep going
                log.warning("could not log progress of %s", self.request_id, exc_info=True)


def max_batch_jobs(settings: Settings) -> int:
    """How many queued jobs of one batch key a worker takes at once (see `Settings`)."""
    if settings.max_batch_jobs is not None:
        return settings.max_batch_jobs
    return 1 if resolve_device(settings.device).type == "cpu" else GPU_BATCH_JOBS


@dataclass
class _Prepared:
    """A job's input, fetched and decoded, waiting for its inference."""

    params: AuraSrInput
    decoded: images.DecodedImage
    timings: dict[str, float]


def _pixels(prepared: _Prepared) -> int:
    width, height = prepared.decoded.image.size
    return width * height


class Worker:
    """Runs jobs of the checkpoints in `settings.checkpoints`: one at a time, or several of
    one checkpoint and seed through shared tile batches (`Settings.max_batch_jobs`).

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
        self.public_url = settings.resolved_public_url()
        self._last_recovery = 0.0
        # Set when shutdown may not wait any longer: the running job is released unfinished.
        self.abort = threading.Event()
        self.max_batch_jobs = max_batch_jobs(settings)

    # --- the loop --------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim and finish one job, or a batch of them. False when there was none to claim."""
        jobs = self.job_store.claim_batch(
            self.worker_id,
            self.settings.lease_seconds,
            list(self.settings.checkpoints),
            self.max_batch_jobs,
        )
        if not jobs:
            self._recover_when_idle()
            return False
        if len(jobs) == 1:
            self._run(jobs[0])
        else:
            self._run_batch(jobs)
        return True

    def run_forever(self, stop: threading.Event, idle_max: float = 0.1) -> None:
        """Work until `stop` is set; the running job is finished first. When idle, polls the
        queue with a backoff up to `idle_max` s (the store interface has no wake-up call)."""
        idle = 0.01
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the store is unreachable, say: wait and try again
                log.exception("worker %s: pass failed; retrying", self.worker_id)
                worked, idle = False, idle_max
            if worked:
                idle = 0.01
            else:
                stop.wait(idle)
                idle = min(idle_max, idle * 2)
        self.fetcher.close()

    def _recover_when_idle(self) -> None:
        """Requeue jobs of dead workers (the API does it too; this covers worker-only setups)."""
        now = time.monotonic()
        if now - self._last_recovery < self.settings.lease_seconds / 2:
            return
        self._last_recovery = now
        self._recover()

    def _recover(self) -> None:
        # Jobs it fails for good get their webhooks queued by the store, in the same transaction.
        self.job_store.recover_expired(self.settings.max_attempts)

    # --- one job ---------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        log.info("worker %s: running %s (attempt %d)", self.worker_id, job.id, job.attempts)
        output: dict[str, Any] | None = None
        error: JobError | None = None
        inference_time: float | None = None
        with Lease(self.job_store, job.id, self.worker_id, self.settings.lease_seconds) as lease:
            should_cancel = self._cancel_check(job.id, lease.lost)
            try:
                output, inference_time = self._process(job, should_cancel)
            except Exception as exc:
                error = self._error_for(job.id, exc, lease)
                if error is None:
                    return
        self._finish(job, output, error, inference_time)

    def _run_batch(self, jobs: list[Job]) -> None:
        """Jobs claimed together: each is fetched, decoded, stored and finished on its own, as
        in `_run`; the inferences of jobs sharing a checkpoint and seed share tile batches."""
        ids = ", ".join(job.id for job in jobs)
        log.info("worker %s: running %d jobs together: %s", self.worker_id, len(jobs), ids)
        results: dict[str, tuple[dict[str, Any] | None, JobError | None, float | None]] = {}
        with ExitStack() as stack:
            leases = {
                job.id: stack.enter_context(
                    Lease(self.job_store, job.id, self.worker_id, self.settings.lease_seconds)
                )
                for job in jobs
            }
            checks = {job.id: self._cancel_check(job.id, leases[job.id].lost) for job in jobs}
            groups: dict[tuple[str, int], list[list[tuple[Job, _Prepared]]]] = {}
            for job in jobs:
                try:
                    prepared = self._prepare(job, checks[job.id])
                except Exception as exc:
                    self._settle(results, job.id, exc, leases[job.id])
                    continue
                seed = prepared.params.seed
                chunks = groups.setdefault(
                    (job.checkpoint, DEFAULT_SEED if seed is None else seed), []
                )
                # Outputs of one upscale_many call are all held at once: cap their pixels.
                pixels = _pixels(prepared)
                if not chunks or sum(map(_pixels, (p for _, p in chunks[-1]))) + pixels > (
                    BATCH_PIXELS
                ):
                    chunks.append([])
                chunks[-1].append((job, prepared))
            for (checkpoint, seed), chunks in groups.items():
                for chunk in chunks:
                    self._infer_together(checkpoint, seed, chunk, checks, leases, results)
        for job in jobs:
            if job.id in results:
                self._finish(job, *results[job.id])

    def _infer_together(
        self,
        checkpoint: str,
        seed: int,
        group: list[tuple[Job, _Prepared]],
        checks: dict[str, Callable[[], bool]],
        leases: dict[str, Lease],
        results: dict[str, tuple[dict[str, Any] | None, JobError | None, float | None]],
    ) -> None:
        """Upscale a group of one checkpoint and seed in shared tile batches, then store each
        output; every job's outcome lands in `results` (nothing when it must not finish)."""
        outcomes: list[Image.Image | Exception]
        try:
            upscaler = get_upscaler(self.settings, checkpoint)
            t = time.perf_counter()
            if len(group) == 1:  # alone: the engine's own path, exactly as in `_run`
                ((job, p),) = group
                try:
                    outcomes = [
                        upscaler.upscale(
                            p.decoded.image,
                            overlapping_tiles=p.params.overlapping_tiles,
                            seed=seed,
                            progress=_Progress(self.job_store, job.id),
                            should_cancel=checks[job.id],
                        )
                    ]
                except Exception as exc:
                    outcomes = [exc]
            else:
                outcomes = upscale_many(
                    upscaler,
                    [p.decoded.image for _, p in group],
                    seed,
                    [p.params.overlapping_tiles for _, p in group],
                    [_Progress(self.job_store, job.id) for job, _ in group],
                    [checks[job.id] for job, _ in group],
                )
            # Each job waited for the whole group: that is its inference time.
            elapsed = time.perf_counter() - t
        except Exception as exc:  # the model would not load, say: the group fails
            outcomes, elapsed = [exc] * len(group), 0.0
        for (job, prepared), outcome in zip(group, outcomes, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                prepared.timings["inference"] = elapsed
                output = self._store_output(job, prepared, outcome, checks[job.id])
                results[job.id] = (output, None, elapsed)
            except Exception as exc:
                self._settle(results, job.id, exc, leases[job.id])

    def _settle(
        self,
        results: dict[str, tuple[dict[str, Any] | None, JobError | None, float | None]],
        request_id: str,
        exc: Exception,
        lease: Lease,
    ) -> None:
        error = self._error_for(request_id, exc, lease)
        if error is not None:
            results[request_id] = (None, error, None)

    def _error_for(self, request_id: str, exc: Exception, lease: Lease) -> JobError | None:
        """The error a job ends with for `exc`; None when it must not be finished here (its
        lease was lost, or it was given back because the worker is stopping)."""
        if isinstance(exc, Cancelled):
            if lease.lost.is_set():
                log.warning("dropped %s: the lease was lost", request_id)
                return None
            if self.abort.is_set():
                self._release(request_id)
                return None
            return CANCELLED
        if isinstance(exc, InputError):
            return exc.to_job_error()
        if isinstance(exc, CheckpointError):
            # The deployment's fault, not the request's. 500, not 503: the job is over, and
            # fal's clients would retry a 503 result. The remedy names server paths: log only.
            log.error("request %s: checkpoint unavailable: %s", request_id, exc)
            return JobError(
                500,
                f"The requested checkpoint is not available on this server "
                f"({type(exc).__name__}); its operator can find why, and how to install it, "
                "in the server log.",
                "model_unavailable",
            )
        log.error("request %s failed", request_id, exc_info=exc)
        return JobError(
            500,
            f"Internal error while running the request ({type(exc).__name__}).",
            "internal_error",
        )

    def _finish(
        self,
        job: Job,
        output: dict[str, Any] | None,
        error: JobError | None,
        inference_time: float | None,
    ) -> None:
        """Complete or fail the job, its webhook queued in the same transaction."""
        webhook: Webhook | None = None
        if job.webhook_url:
            webhook = (job.webhook_url, webhook_body(job.id, output, error))
        if output is not None:
            if not self.job_store.complete(job.id, self.worker_id, output, inference_time, webhook):
                log.warning("lost the lease on %s before completing; output discarded", job.id)
                self._discard(output)
        else:
            assert error is not None
            self._log(job.id, error.message, "ERROR")
            self.job_store.fail(job.id, self.worker_id, error, webhook)

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

    def _process(self, job: Job, should_cancel: Callable[[], bool]) -> tuple[dict[str, Any], float]:
        prepared = self._prepare(job, should_cancel)
        params = prepared.params
        upscaler = get_upscaler(self.settings, job.checkpoint)
        t = time.perf_counter()
        result = upscaler.upscale(
            prepared.decoded.image,
            overlapping_tiles=params.overlapping_tiles,
            seed=params.seed,
            progress=_Progress(self.job_store, job.id),
            should_cancel=should_cancel,
        )
        prepared.timings["inference"] = time.perf_counter() - t
        return self._store_output(job, prepared, result, should_cancel), prepared.timings[
            "inference"
        ]

    def _prepare(self, job: Job, should_cancel: Callable[[], bool]) -> _Prepared:
        """Validate, fetch and decode the input; refuse what the output format cannot hold."""
        timings: dict[str, float] = {}
        try:
            params = AuraSrInput.model_validate(job.input)
        except ValidationError as exc:
            detail = json.loads(exc.json(include_url=False))
            for item in detail:
                item["loc"] = ["body", *item.get("loc", [])]
            raise _Invalid(detail) from None

        t = time.perf_counter()
        data = self.fetcher.fetch(params.image_url)
        timings["fetch"] = time.perf_counter() - t
        self._log(job.id, f"fetched input: {len(data)} bytes in {timings['fetch']:.2f} s")

        t = time.perf_counter()
        try:
            decoded = images.decode(data, self.settings.max_input_pixels)
        except images.ImageError as exc:
            message = str(exc)
            too_large = message.startswith("image too large")
            raise InputError(
                message, "image_too_large" if too_large else "image_load_error"
            ) from None
        timings["decode"] = time.perf_counter() - t
        del data
        width, height = decoded.image.size
        self._log(job.id, f"decoded {width}x{height} {decoded.image.mode}")
        try:  # before the inference, which an output the format cannot hold would waste
            images.check_size(SCALE * width, SCALE * height, params.output_format)
        except images.ImageError as exc:
            raise _OutputError(str(exc)) from None
        if should_cancel():
            raise Cancelled()
        return _Prepared(params, decoded, timings)

    def _store_output(
        self,
        job: Job,
        prepared: _Prepared,
        result: Image.Image,
        should_cancel: Callable[[], bool],
    ) -> dict[str, Any]:
        """Encode and store the upscale; the job's output (its timings included)."""
        params, timings = prepared.params, prepared.timings
        t = time.perf_counter()
        encoded = encode_output(result, params.output_format, prepared.decoded.icc_profile)
        timings["encode"] = time.perf_counter() - t
        if should_cancel():
            raise Cancelled()

        t = time.perf_counter()
        ext = _EXTENSIONS[params.output_format]
        key = new_key(f"{job.id}.{ext}")
        ttl = job.file_ttl if job.file_ttl is not None else self.settings.file_ttl_seconds
        content_type = images.content_type(params.output_format)
        self.file_store.put(key, encoded, content_type, expires_at=time.time() + ttl)
        timings["store"] = time.perf_counter() - t

        image = ImageFile(
            url=f"{self.public_url}/files/{quote(key, safe='/')}",
            content_type=content_type,
            file_name=key.rsplit("/", 1)[-1],
            file_size=len(encoded),
            width=result.size[0],
            height=result.size[1],
            file_data=None,
        )
        self._log(
            job.id,
            f"done: {image.width}x{image.height} {params.output_format}, {image.file_size} bytes, "
            f"inference {timings['inference']:.2f} s",
        )
        return AuraSrOutput(image=image, timings=timings).model_dump(mode="json")

    def _discard(self, output: dict[str, Any]) -> None:
        url = str(output.get("image", {}).get("url", ""))
        prefix = f"{self.public_url}/files/"
        if url.startswith(prefix):
            try:
                self.file_store.delete(url[len(prefix) :])
            except Exception:
                log.warning("could not delete discarded output %s", url, exc_info=True)

    def _log(self, request_id: str, message: str, level: str = "INFO") -> None:
        try:
            self.job_store.append_log(request_id, message, level)
        except Exception:  # a log line is not worth failing the job over
            log.warning("could not append a log line to %s", request_id, exc_info=True)


def encode_output(image: Image.Image, fmt: str, icc_profile: bytes | None) -> bytes:
    """`images.encode`, its refusals turned into a job error the user can act on."""
    try:
        return images.encode(image, fmt, icc_profile)
    except images.ImageError as exc:
        raise _OutputError(str(exc)) from None


class _OutputError(InputError):
    """The output cannot be written in the requested format (e.g. WebP over 16383 px a side)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "image_too_large")

    def to_job_error(self) -> JobError:
        detail = [{"loc": ["body", "output_format"], "msg": self.message, "type": self.error_type}]
        return JobError(422, self.message, self.error_type, detail)


class _Invalid(InputError):
    """The stored input no longer validates (the API validates at submit; this is a backstop)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        message = "; ".join(str(item.get("msg", "")) for item in detail) or "invalid input"
        super().__init__(message, "validation_error")
        self.detail = detail

    def to_job_error(self) -> JobError:
        return JobError(422, self.message, self.error_type, self.detail)

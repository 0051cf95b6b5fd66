"""The worker's side of the engine: one `Upscaler` per checkpoint and engine setting per
process, how many jobs a worker batches, and job progress from tile counts."""

from __future__ import annotations

import logging
import threading
import time

from superscale.engine import EngineOptions, Upscaler, resolve_device
from superscale.jobs.store import JobStore
from superscale.settings import Settings

log = logging.getLogger(__name__)

# Jobs batched together when `Settings.max_batch_jobs` is unset and the device is not a CPU.
GPU_BATCH_JOBS = 8
# Below this many tiles every batch is logged; above it, at most one line per interval.
_LOG_EVERY_BATCH_UP_TO = 64
_LOG_INTERVAL = 1.0

_upscalers: dict[tuple[str, EngineOptions, str], Upscaler] = {}
_upscalers_lock = threading.Lock()


def get_upscaler(settings: Settings, checkpoint: str) -> Upscaler:
    """One Upscaler per checkpoint and engine setting, loaded on first use and shared by all
    workers of the process (the weights are large; loading twice would double the memory)."""
    options = settings.engine_options()
    key = (checkpoint, options, str(settings.model_dir or ""))
    with _upscalers_lock:
        upscaler = _upscalers.get(key)
        if upscaler is None:
            source = settings.checkpoint_source(checkpoint)  # a path, for one's own
            upscaler = Upscaler.from_options(source, options, settings.model_dir)
            _upscalers[key] = upscaler
        return upscaler


def max_batch_jobs(settings: Settings) -> int:
    """How many queued jobs of one batch key a worker takes at once (see `Settings`)."""
    if settings.max_batch_jobs is not None:
        return settings.max_batch_jobs
    return 1 if resolve_device(settings.device).type == "cpu" else GPU_BATCH_JOBS


def pipelined(settings: Settings) -> bool:
    """Whether a worker claims, fetches and decodes the next jobs and stores the last ones
    beside the inference (see `Settings.pipeline`)."""
    return _as_set_else_off_the_cpu(settings.pipeline, settings)


def warms_up(settings: Settings) -> bool:
    """Whether a worker readies its checkpoints before its first claim (`Settings.warm_up`)."""
    return _as_set_else_off_the_cpu(settings.warm_up, settings)


def _as_set_else_off_the_cpu(value: bool | None, settings: Settings) -> bool:
    """A worker switch as set, or by default on where the device is not the CPU."""
    return value if value is not None else resolve_device(settings.device).type != "cpu"


def warm_up(settings: Settings, stop: threading.Event) -> None:
    """Load, fold and compile each served checkpoint's default network (until `stop`); one
    that fails is logged and left to fail its jobs with the error then."""
    for checkpoint in settings.checkpoints:
        if stop.is_set():
            return
        started = time.perf_counter()
        try:
            get_upscaler(settings, checkpoint).warm_up()
        except Exception:
            log.warning("could not warm up %s", checkpoint, exc_info=True)
            continue
        log.info("%s ready in %.1f s", checkpoint, time.perf_counter() - started)


class TileProgress:
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

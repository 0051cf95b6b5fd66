"""`superscale worker`: one worker and a webhook dispatcher in their own process, against the
same job store and file store as `superscale serve` (same flags).

Shutdown: the first SIGTERM or Ctrl-C stops claiming and lets the running job finish, for at
most `--grace` seconds; then (or on a second signal) the job is released: its lease is ended at
once so that another worker, or the next start, picks it up.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from superscale.cli.options import (
    build_settings,
    log_level_option,
    model_options,
    open_stores,
    setup_logging,
    store_options,
)

log = logging.getLogger("superscale.worker")


@click.command()
@store_options
@click.option("--public-url", default=None, help="URL clients reach the API at (output URLs).")
@model_options
@click.option("--worker-id", default=None, help="Name in leases and logs (default host:pid:…).")
@click.option(
    "--max-batch-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Queued jobs of one checkpoint and seed run together in shared tile batches "
    "(default: 8 on a GPU, 1 on a CPU).",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds a running job may take to finish after SIGTERM before it is released.",
)
@log_level_option
def worker(
    data_dir: Path | None,
    database_url: str | None,
    storage_url: str | None,
    s3_endpoint_url: str | None,
    webhook_key: str | None,
    public_url: str | None,
    model_dir: Path | None,
    checkpoints: tuple[str, ...],
    device: str | None,
    dtype: str | None,
    worker_id: str | None,
    max_batch_jobs: int | None,
    grace: float,
    log_level: str,
) -> None:
    """Run one worker (and webhook delivery) against the shared stores."""
    from superscale.webhooks import WebhookDispatcher
    from superscale.worker import Worker

    setup_logging(log_level)
    settings = build_settings(
        data_dir=data_dir,
        database_url=database_url,
        storage_url=storage_url,
        s3_endpoint_url=s3_endpoint_url,
        webhook_key=webhook_key,
        public_url=public_url,
        model_dir=model_dir,
        checkpoints=list(checkpoints) or None,
        device=device,
        dtype=dtype,
        max_batch_jobs=max_batch_jobs,
    )
    signer, job_store, file_store = open_stores(settings)
    the_worker = Worker(settings, job_store, file_store, worker_id=worker_id)
    dispatcher = WebhookDispatcher(settings, job_store, signer)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second stop signal: releasing the running job now")
            the_worker.abort.set()
            return
        log.info("stopping: finishing the running job (at most %g s)", grace)
        stop.set()
        timer = threading.Timer(grace, the_worker.abort.set)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "worker %s serving %s on %s", the_worker.worker_id, settings.checkpoints, settings.device
    )
    dispatcher.start()
    try:
        the_worker.run_forever(stop)
    finally:
        dispatcher.stop(5)
        job_store.close()
        file_store.close()
        log.info("worker %s stopped", the_worker.worker_id)

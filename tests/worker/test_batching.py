"""Cross-job batching in the worker: queued jobs of one checkpoint and seed are claimed
together and share tile batches, yet each one completes, fails or is cancelled on its own
(small real model, real SQLite store, real local file store)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pngs import data_uri, encode
from superscale import images
from superscale.files import FileStore
from superscale.jobs.records import CancelOutcome, Job, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.schemas import ENDPOINT_ID, AuraSrInput, batch_key
from superscale.settings import Settings
from superscale.worker import Worker
from superscale.worker.engines import get_upscaler, max_batch_jobs

from .conftest import PUBLIC


def noise_png(h: int, w: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"))


@pytest.fixture
def worker_settings(worker_settings: Settings) -> Settings:
    """The worker conftest's settings, serving both checkpoints, batching up to 4 jobs."""
    worker_settings.checkpoints = ["v1", "v2"]
    worker_settings.max_batch_jobs = 4
    return worker_settings


def submit(store: SqliteJobStore, image: bytes | str, **extra: Any) -> str:
    """Submit as the API does: the batch key computed from the validated input."""
    webhook_url = extra.pop("webhook_url", None)
    url = image if isinstance(image, str) else data_uri(image)
    params = AuraSrInput.model_validate({"image_url": url, **extra})
    job = store.submit(
        NewJob(
            endpoint=ENDPOINT_ID,
            owner="key-1",
            input=params.model_dump(mode="json"),
            checkpoint=params.checkpoint,
            webhook_url=webhook_url,
            batch_key=batch_key(params),
        )
    )
    return job.id


def state(store: SqliteJobStore, request_id: str) -> Job:
    job = store.get(request_id)
    assert job is not None
    return job


def log_time(store: SqliteJobStore, request_id: str, prefix: str) -> float:
    return next(r.timestamp for r in store.logs(request_id) if r.message.startswith(prefix))


def output_pixels(job: Job, file_store: FileStore) -> bytes:
    assert job.error is None and job.output is not None
    stored = file_store.get(job.output["image"]["url"].removeprefix(f"{PUBLIC}/files/"))
    return images.decode(stored.data, 10**8).image.tobytes()


def test_default_batch_size_is_one_job_on_a_cpu(tmp_path: Path) -> None:
    assert max_batch_jobs(Settings(data_dir=tmp_path, device="cpu")) == 1
    assert max_batch_jobs(Settings(data_dir=tmp_path, device="cpu", max_batch_jobs=5)) == 5
    params = AuraSrInput.model_validate({"image_url": "x", "checkpoint": "v2"})
    assert batch_key(params) == "v2:seed=0"


def test_jobs_of_one_key_run_together_each_with_its_own_output(
    worker: Worker, worker_settings: Settings, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    pngs = [noise_png(40, 70, 1), noise_png(64, 64, 2), noise_png(20, 130, 3), noise_png(9, 9, 4)]
    a = submit(job_store, pngs[0], webhook_url="http://h/a")  # the default seed, 0
    other_seed = submit(job_store, pngs[1], seed=4)
    b = submit(job_store, pngs[1], seed=0, overlapping_tiles=True, output_format="jpeg")
    other_checkpoint = submit(job_store, pngs[2], checkpoint="v2")
    c = submit(job_store, pngs[2])
    d = submit(job_store, pngs[3])
    later = submit(job_store, pngs[3])  # beyond max_batch_jobs = 4

    assert worker.run_once()
    together = [a, b, c, d]
    assert [state(job_store, r).state for r in together] == ["COMPLETED"] * 4
    for r in (other_seed, other_checkpoint, later):
        assert state(job_store, r).state == "IN_QUEUE"
    # Shared batches: every job had started its inference before any of them finished.
    started = max(log_time(job_store, r, "tiles 0/") for r in together)
    assert started < min(log_time(job_store, r, "done:") for r in together)

    upscaler = get_upscaler(worker_settings, "v1")
    for r, png, overlap in zip([a, c, d], [pngs[0], pngs[2], pngs[3]], [False] * 3, strict=True):
        alone = upscaler.upscale(images.decode(png).image, overlapping_tiles=overlap)
        assert output_pixels(state(job_store, r), file_store) == alone.tobytes()
        tiles = [m.message for m in job_store.logs(r) if m.message.startswith("tiles ")]
        total = tiles[0].removeprefix("tiles 0/")
        assert tiles[-1] == f"tiles {total}/{total}"  # its own count, from 0 to its total
    job_b = state(job_store, b)
    assert job_b.output is not None and job_b.output["image"]["content_type"] == "image/jpeg"
    assert (job_b.output["image"]["width"], job_b.output["image"]["height"]) == (256, 256)
    assert job_b.inference_time is not None and job_b.inference_time > 0
    (delivery,) = job_store.webhooks(a)
    assert b'"status":"OK"' in delivery.body

    # The rest come in queue order, never mixed (claimed directly: running them would only
    # fold two more networks, seconds each).
    for r in (other_seed, other_checkpoint, later):
        assert [j.id for j in job_store.claim_batch("w", 30, ["v1", "v2"], 4)] == [r]


def test_a_bad_input_in_a_batch_fails_only_that_job(
    worker: Worker, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    good1 = submit(job_store, noise_png(30, 30, 1))
    broken = submit(job_store, "data:image/png;base64,AAAA", webhook_url="http://h/x")
    too_big = submit(job_store, noise_png(20, 5000, 2), output_format="webp")
    good2 = submit(job_store, noise_png(30, 50, 3))
    assert worker.run_once()
    for r in (good1, good2):
        assert state(job_store, r).error is None and output_pixels(state(job_store, r), file_store)
    error = state(job_store, broken).error
    assert error is not None and error.status_code == 422 and error.error_type == "image_load_error"
    (delivery,) = job_store.webhooks(broken)
    assert b'"status":"ERROR"' in delivery.body
    error = state(job_store, too_big).error
    assert error is not None and error.error_type == "image_too_large"


def test_one_cancelled_job_does_not_affect_the_others(
    worker: Worker, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    # The first job's 36 tiles run first: the cancel lands before the second one's tiles.
    sizes = [(384, 384), (128, 256), (128, 384)]  # 36, 8 and 12 tiles
    ids = [submit(job_store, noise_png(h, w, i)) for i, (h, w) in enumerate(sizes)]
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not any(m.message.startswith("tiles 1/") for m in job_store.logs(ids[0])):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.005)
    assert job_store.cancel(ids[1]) == CancelOutcome.REQUESTED
    thread.join(120)
    assert not thread.is_alive()
    cancelled = state(job_store, ids[1])
    assert cancelled.error is not None and cancelled.error.error_type == "client_cancelled"
    assert "tiles 8/8" not in [m.message for m in job_store.logs(ids[1])]
    for r in (ids[0], ids[2]):
        assert state(job_store, r).error is None and output_pixels(state(job_store, r), file_store)


def test_images_over_the_pixel_budget_run_in_separate_inferences(
    worker: Worker, job_store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("superscale.worker.loop.BATCH_PIXELS", 1000)
    small = [submit(job_store, noise_png(20, 20, i)) for i in range(2)]  # 400 px each: together
    big = submit(job_store, noise_png(30, 40, 5))  # 1200 px: over the budget, alone
    assert worker.run_once()
    assert all(state(job_store, r).error is None for r in [*small, big])
    last_small_start = max(log_time(job_store, r, "tiles 0/") for r in small)
    assert last_small_start < min(log_time(job_store, r, "done:") for r in small)
    assert max(log_time(job_store, r, "done:") for r in small) < log_time(
        job_store, big, "tiles 0/"
    )


def test_a_lost_lease_drops_only_that_job(
    worker: Worker, worker_settings: Settings, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    worker_settings.lease_seconds = 0.6  # heartbeats every 0.2 s, for each job of the batch
    first = submit(job_store, noise_png(384, 384, 0))  # 36 tiles: runs while we steal
    stolen = submit(job_store, noise_png(128, 128, 1))
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not any(m.message.startswith("tiles 1/") for m in job_store.logs(first)):
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.005)
    # As if the worker had stalled past the second job's lease: requeued, another takes it.
    for _ in range(20):  # a heartbeat landing in between renews it: retry
        with closing(sqlite3.connect(job_store.path)) as db, db:
            db.execute("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?", (stolen,))
        if job_store.recover_expired(max_attempts=3) == [stolen]:
            break
    else:
        raise AssertionError("could not expire the lease")
    thief = job_store.claim("other-worker", 60, ["v1"])
    assert thief is not None and thief.id == stolen
    thread.join(120)
    assert not thread.is_alive()
    assert output_pixels(state(job_store, first), file_store)  # completed, no error
    job = state(job_store, stolen)
    assert job.state == "IN_PROGRESS" and job.worker_id == "other-worker"
    assert job.output is None and job.error is None

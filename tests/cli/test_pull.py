"""`superscale pull`: checkpoints fetched ahead of time and checked, against a stand-in of the
hub's file routes on loopback serving a small random checkpoint in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hubstandin import HubFile, hub_stand_in
from superscale.cli import main
from superscale.engine import Upscaler


def _serve_checkpoint(files: dict, small_model_dir: Path, corrupt: bool = False) -> None:
    weights = (small_model_dir / "v1" / "model.safetensors").read_bytes()
    config = (small_model_dir / "v1" / "config.json").read_bytes()
    served = weights
    if corrupt:  # the right size, one flipped byte: only the hash can tell
        served = weights[:-100] + bytes([weights[-100] ^ 0xFF]) + weights[-99:]
    files[("fal/AuraSR", "model.safetensors")] = HubFile(served, published=weights)
    files[("fal/AuraSR", "config.json")] = HubFile(config, lfs=False)


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SUPERSCALE_MODEL_DIR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def test_pull_downloads_checks_and_the_engine_loads_it(
    hub_env: None, small_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with hub_stand_in() as hub:
        _serve_checkpoint(hub.files, small_model_dir)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        models = tmp_path / "models"
        args = ["pull", "v1", "--model-dir", str(models), "--progress"]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "100%" in result.stderr and "model.safetensors" in result.stderr  # the bar
    assert "v1: model.safetensors checked" in result.stdout
    assert f"v1: ready at {models / 'v1'}" in result.stdout
    assert any(r.startswith("GET /fal/AuraSR/resolve/main/model.safetensors") for r in hub.requests)
    weights = (models / "v1" / "model.safetensors").read_bytes()
    assert weights == (small_model_dir / "v1" / "model.safetensors").read_bytes()
    # A server given the directory needs no network now.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    up = Upscaler.from_checkpoint("v1", model_dir=models, device="cpu", dtype="fp32")
    assert up.config.scale == 4


def test_a_corrupted_download_is_refused_and_deleted(
    hub_env: None, small_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with hub_stand_in() as hub:
        _serve_checkpoint(hub.files, small_model_dir, corrupt=True)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        models = tmp_path / "models"
        result = CliRunner().invoke(main, ["pull", "v1", "--model-dir", str(models)])
    assert result.exit_code == 1
    assert "model.safetensors of checkpoint 'v1'" in result.stderr and "SHA-256" in result.stderr
    assert not (models / "v1" / "model.safetensors").exists()  # never left for a server


def test_offline_says_how_to_place_the_files(
    hub_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models"
    result = CliRunner().invoke(main, ["pull", "v2", "--model-dir", str(models)])
    assert result.exit_code == 1
    assert "fal/AuraSR-v2" in result.stderr
    assert f"place them in {models / 'v2'}/" in result.stderr


def test_a_registry_pin_outranks_the_hub(
    hub_env: None, small_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files the hub serves consistently but that are not the pinned ones are refused."""
    import dataclasses

    from superscale import registry

    pinned = dataclasses.replace(registry.REGISTRY["v1"], sha256={"config.json": "0" * 64})
    monkeypatch.setitem(registry.REGISTRY, "v1", pinned)
    with hub_stand_in() as hub:
        _serve_checkpoint(hub.files, small_model_dir)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = CliRunner().invoke(main, ["pull", "v1", "--model-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and "where the registry pins 000000000000" in result.stderr

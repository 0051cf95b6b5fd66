"""Checkpoint resolution, strict loading and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from superscale.model import (
    SMALL_CONFIG,
    CheckpointMismatch,
    CheckpointNotFound,
    CheckpointUnreadable,
    HubUnreachable,
    load_model,
    random_state_dict,
    resolve_checkpoint,
    save_random_checkpoint,
)


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty Hugging Face cache and no hub access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("SUPERSCALE_MODEL_DIR", raising=False)


def test_resolves_model_dir_layout(small_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERSCALE_MODEL_DIR", str(small_model_dir))
    files = resolve_checkpoint("v2")
    assert files.weights == small_model_dir / "v2" / "model.safetensors"
    assert files.config == small_model_dir / "v2" / "config.json"
    # An explicit argument wins over the environment.
    assert resolve_checkpoint("v1", model_dir=small_model_dir).weights.parent.name == "v1"


def test_resolves_explicit_dir_and_file(small_model_dir: Path) -> None:
    weights = small_model_dir / "v1" / "model.safetensors"
    assert resolve_checkpoint(small_model_dir / "v1").weights == weights
    assert resolve_checkpoint(str(weights)).config == weights.with_name("config.json")


def test_load_is_strict_and_exact(small_model_dir: Path) -> None:
    model = load_model(small_model_dir / "v1")
    saved = load_file(str(small_model_dir / "v1" / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not any(p.is_meta for p in model.parameters())


def test_hf_cache_is_used(no_hub: None, tmp_path: Path) -> None:
    """A snapshot in the Hugging Face cache layout resolves without the hub."""
    repo = tmp_path / "hf-cache" / "models--fal--AuraSR-v2"
    snapshot = repo / "snapshots" / ("a" * 40)
    save_random_checkpoint(snapshot, SMALL_CONFIG, seed=5)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    files = resolve_checkpoint("v2")
    assert files.weights == snapshot / "model.safetensors"


def test_offline_and_missing_says_how_to_place_files(no_hub: None) -> None:
    with pytest.raises(HubUnreachable) as info:
        resolve_checkpoint("v1")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "SUPERSCALE_MODEL_DIR" in message
    assert "model.safetensors" in message and "fal/AuraSR" in message


def test_unreachable_hub_says_how_to_place_files(
    no_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Online mode against a loopback port nobody listens on: the download fails fast.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachable, match="place them in"):
        resolve_checkpoint("v2")


def test_unknown_name_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match="unknown checkpoint 'v3'"):
        resolve_checkpoint("v3")
    with pytest.raises(CheckpointNotFound, match="no checkpoint file or directory"):
        resolve_checkpoint(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps(SMALL_CONFIG.to_dict()))
    with pytest.raises(CheckpointNotFound, match=r"missing model\.safetensors"):
        resolve_checkpoint(tmp_path / "half")
    lone = tmp_path / "lone" / "model.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(b"")
    with pytest.raises(CheckpointNotFound, match=r"no config\.json beside it"):
        resolve_checkpoint(lone)


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    state = random_state_dict(SMALL_CONFIG, seed=0)
    del state["init_conv.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["final_to_rgb.weight"] = torch.zeros(3, 9, 1, 1)
    directory = tmp_path / "bad"
    directory.mkdir()
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(SMALL_CONFIG.to_dict()))
    with pytest.raises(CheckpointMismatch) as info:
        load_model(directory)
    err = info.value
    assert err.missing == ["init_conv.bias"]
    assert err.unexpected == ["extra.weight"]
    assert err.mismatched == [("final_to_rgb.weight", (3, 9, 1, 1), (3, 8, 1, 1))]
    text = str(err)
    assert "missing keys (1): init_conv.bias" in text
    assert "final_to_rgb.weight: checkpoint [3, 9, 1, 1] vs model [3, 8, 1, 1]" in text


def test_unreadable_files_are_checkpoint_errors(tmp_path: Path) -> None:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    (directory / "config.json").write_text(json.dumps(SMALL_CONFIG.to_dict()))
    with pytest.raises(CheckpointUnreadable, match="not a readable safetensors file"):
        load_model(directory)
    (directory / "config.json").write_text('{"dim": 8, "colour": "red"}')
    with pytest.raises(CheckpointUnreadable, match="unknown config keys"):
        load_model(directory)
    (directory / "config.json").write_text("{")
    with pytest.raises(CheckpointUnreadable, match="not valid JSON"):
        load_model(directory)

"""Checkpoint resolution, strict loading and their errors."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
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


class _FakeHub(ThreadingHTTPServer):
    """The two hub routes hf_hub_download uses (HEAD for metadata, GET for content), on
    loopback, serving one repo's files; records the paths asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _FakeHubHandler)


class _FakeHubHandler(BaseHTTPRequestHandler):
    server: _FakeHub

    def _send(self, body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        data = self.server.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "b" * 40)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def log_message(self, *args: object) -> None:
        pass


def test_downloads_only_weights_and_config(
    no_hub: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = save_random_checkpoint(tmp_path / "source", SMALL_CONFIG, seed=4)
    prefix = "/fal/AuraSR-v2/resolve/main/"
    hub = _FakeHub(
        {
            prefix + name: (source / name).read_bytes()
            for name in ("model.safetensors", "config.json")
        }
        | {prefix + "model.ckpt": b"never fetched"}
    )
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        # huggingface_hub froze the variable at import (maybe while another test set it).
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        files = resolve_checkpoint("v2")
        assert files.weights.read_bytes() == (source / "model.safetensors").read_bytes()
        assert load_model(files).config == SMALL_CONFIG
        assert not any("model.ckpt" in r for r in hub.requests)
        # Now in the Hugging Face cache: found again with the hub gone and downloads off.
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert resolve_checkpoint("v2") == files
    finally:
        hub.shutdown()
        hub.server_close()


def test_failed_download_says_how_to_place_files(
    no_hub: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub answers but has no such files (a connection error takes the same path, after
    huggingface_hub's retries: ~20 s)."""
    hub = _FakeHub({})
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        with pytest.raises(HubUnreachable, match=r"could not download config\.json") as info:
            resolve_checkpoint("v2")
        assert "place them in $SUPERSCALE_MODEL_DIR/v2/" in str(info.value)
        assert hub.requests  # it did ask the (fake) hub
    finally:
        hub.shutdown()
        hub.server_close()

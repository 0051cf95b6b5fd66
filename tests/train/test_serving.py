"""A trained checkpoint served by name: `superscale serve` with
SUPERSCALE_CHECKPOINTS=v2,mine=DIR answers fal's Python client for "checkpoint": "mine", lists
the served names in its OpenAPI enum and in the 422 for a name it does not serve, and the
local `superscale upscale` takes the same name."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from loopback import SUPERSCALE, free_port, wait_for
from pngs import encode
from superscale.model import SMALL_CONFIG, save_random_checkpoint
from superscale.train import TrainOptions, train

APP = "fal-ai/aura-sr"


@pytest.fixture(scope="module")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint `superscale train` wrote (two steps from a random small network)."""
    root = tmp_path_factory.mktemp("mine")
    data = root / "data"
    data.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(data / f"{name}.png")
    init = save_random_checkpoint(root / "init", SMALL_CONFIG, seed=5)
    out = root / "run"
    train(
        TrainOptions(
            data=[str(data)],
            out=str(out),
            init=str(init),
            steps=2,
            batch=2,
            workers=0,
            progress=False,
        )
    )
    return out


def image_of(output: dict[str, object]) -> np.ndarray:
    image = output["image"]
    assert isinstance(image, dict)
    return np.asarray(Image.open(io.BytesIO(httpx.get(str(image["url"])).content)))


def test_serve_answers_fal_client_for_a_trained_checkpoint(
    mine: Path, small_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SUPERSCALE_MODEL_DIR": str(small_model_dir),
        "SUPERSCALE_CHECKPOINTS": f"v2,mine={mine}",
        "SUPERSCALE_DEVICE": "cpu",
        "SUPERSCALE_AUTH": "false",
    }
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [*SUPERSCALE, *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "serve")
        schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
        assert schema["AuraSrInput"]["properties"]["checkpoint"]["enum"] == ["v2", "mine"]

        for name, value in (
            ("RUN_URL_FORMAT", f"{url}/"),
            ("QUEUE_URL_FORMAT", f"{url}/queue/"),
            ("REST_URL", url),
            ("CDN_URL", url),
        ):
            monkeypatch.setattr(fal_module, name, value)
        fal = fal_client.SyncClient(key="unused:auth-off")
        rng = np.random.default_rng(0)
        png = encode(Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)))
        image_url = fal_client.encode(png, "image/png")
        ours = fal.subscribe(APP, {"image_url": image_url, "checkpoint": "mine", "seed": 3})
        published = fal.subscribe(APP, {"image_url": image_url, "checkpoint": "v2", "seed": 3})
        a, b = image_of(ours), image_of(published)
        assert a.shape == b.shape == (96, 96, 3)
        assert not np.array_equal(a, b)  # other weights, other pixels

        refused = httpx.post(
            f"{url}/queue/{APP}", json={"image_url": image_url, "checkpoint": "v1"}
        )
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "checkpoint"]
        assert "served: v2, mine" in refused.json()["detail"][0]["msg"]
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0


def test_serve_refuses_a_name_for_a_folder_without_a_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "SUPERSCALE_CHECKPOINTS": f"mine={tmp_path}"}
    done = subprocess.run(
        [*SUPERSCALE, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "holds no model.safetensors" in done.stderr and "Traceback" not in done.stderr


def test_upscale_takes_the_configured_name(mine: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(skimage.data.astronaut()[:32, :32]).save(source)
    env = {**os.environ, "SUPERSCALE_CHECKPOINTS": f"v2,mine={mine}"}
    out = tmp_path / "out.png"
    subprocess.run(
        [
            *SUPERSCALE,
            "upscale",
            str(source),
            "-o",
            str(out),
            "--checkpoint",
            "mine",
            "--device",
            "cpu",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert Image.open(out).size == (128, 128)
    bad = subprocess.run(
        [*SUPERSCALE, "upscale", str(source), "-o", str(out), "--checkpoint", "theirs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "use v1 or v2, mine, or a checkpoint folder" in bad.stderr

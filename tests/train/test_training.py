"""`superscale train` on the CPU at the small config, on real photographs (scikit-image's
data set): it learns, its GAN path stays finite, a resumed run equals an uninterrupted one,
two DDP processes equal one, its output loads strictly in our engine and in the reference,
and bad input gets a clear message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors.torch import load_file

from loopback import wait_for
from oracle import reference_upscaler
from superscale.model import (
    INPUT_NOISE_SCALE,
    SMALL_CONFIG,
    AuraSR,
    load_model,
    save_random_checkpoint,
)
from superscale.train import TrainingError, TrainOptions, train
from superscale.train.losses import vgg19_features

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(PHOTOS):
        # Nested and in several formats: the folder is searched recursively, by suffix.
        sub = folder / ("nested" if i % 2 else "")
        sub.mkdir(exist_ok=True)
        suffix = ".png" if i % 3 else ".jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(sub / f"{name}{suffix}")
    return folder


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("init") / "small", SMALL_CONFIG, 3)


def options(photos: Path, init: Path | str | None, out: Path, **overrides: Any) -> TrainOptions:
    values: dict[str, Any] = {
        "data": [str(photos)],
        "out": str(out),
        "init": None if init is None else str(init),
        "steps": 4,
        "batch": 2,
        "lr": 1e-3,
        "val_every": 1000,
        "save_every": 1000,
        "log_every": 1,
        "workers": 0,
        "progress": False,
        **overrides,
    }
    return TrainOptions(**values)


def log_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def state_of(out: Path) -> dict[str, Any]:
    return dict(torch.load(out / "training-state.pt", map_location="cpu", weights_only=False))


def random_vgg19_file(path: Path) -> Path:
    """VGG19 weights in torchvision's layout (random: the loss's plumbing, not its quality)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # torchvision's file holds the head too
    torch.save(state, path)
    return path


def test_it_learns(photos: Path, init: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(options(photos, init, out, steps=24, batch=4, workers=2, val_every=24))
    first, last = result.validations[0], result.validations[-1]
    assert (first["step"], last["step"]) == (0, 24)
    assert last["val_psnr"] >= first["val_psnr"] + 3.0, result.validations
    lines = log_lines(out)
    losses = [line["l1"] for line in lines if "l1" in line]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert all(line["steps_per_s"] > 0 for line in lines if "l1" in line)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # the train extra's
    grid = Image.open(out / "samples" / "step-0000024.png")
    assert grid.size == (3 * 256, 256)  # one held-out image: input, ours, target


def test_gan_and_perceptual_paths_run_and_stay_finite(
    photos: Path, init: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gan"
    vgg = random_vgg19_file(tmp_path / "vgg19.pth")
    opts = options(
        photos,
        init,
        out,
        gan=0.1,
        d_channels=8,
        perceptual=0.1,
        perceptual_weights=str(vgg),
        steps=3,
    )
    train(opts)
    lines = [line for line in log_lines(out) if "loss" in line]
    assert len(lines) == 3
    for line in lines:
        for name in ("l1", "perceptual", "gan_g", "gan_d", "loss"):
            assert np.isfinite(line[name]), line
    assert state_of(out)["discriminator"] is not None


def test_resume_equals_uninterrupted(photos: Path, init: Path, tmp_path: Path) -> None:
    common = {"gan": 0.1, "d_channels": 8, "accumulate": 2, "batch": 4}
    whole = tmp_path / "whole"
    train(options(photos, init, whole, steps=5, **common))
    parts = tmp_path / "parts"
    train(options(photos, init, parts, steps=3, **common))
    # Resumed with data-loading processes: a sample does not depend on who loads it.
    train(options(photos, init, parts, steps=5, workers=2), resume=True)
    a, b = state_of(whole), state_of(parts)
    assert a["step"] == b["step"] == 5
    for part in ("model", "ema", "discriminator"):
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), (part, key)
    assert a["opt_g"]["state"].keys() == b["opt_g"]["state"].keys()


def test_two_ddp_processes_equal_one_with_the_same_global_batch(
    photos: Path, init: Path, tmp_path: Path
) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    args = [
        str(photos),
        "--from",
        str(init),
        "--steps",
        "3",
        "--batch",
        "4",
        "--lr",
        "1e-3",
        "--workers",
        "0",
        "--no-progress",
        "--val-every",
        "1000",
        "--device",
        "cpu",
    ]
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "superscale", "train", *args, "--out", str(single)], check=True
    )
    pair = tmp_path / "pair"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "superscale",
            "train",
            *args,
            "--out",
            str(pair),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    a, b = state_of(single)["model"], state_of(pair)["model"]
    start = load_file(str(init / "model.safetensors"))
    # Adam moves each weight by about the learning rate a step, whatever its gradient's size,
    # so a gradient that cancels to float noise (summed in another order over two processes)
    # can move its weight differently: a few entries differ by a small part of one step, the
    # rest agree to float precision.
    tolerance = 0.05 * 1e-3  # a twentieth of one step at --lr 1e-3
    exact = moved = 0
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=0, atol=tolerance, msg=key)
        exact += int(torch.allclose(b[key], tensor, rtol=0, atol=1e-6))
        moved += int((tensor - start[key]).abs().max() > 10 * tolerance)
    assert exact >= 0.95 * len(a), f"{exact} of {len(a)} tensors within 1e-6"
    assert moved >= 0.5 * len(a), f"only {moved} of {len(a)} tensors trained"  # can fail


def test_output_is_the_official_format_and_loads_strictly_in_ours_and_the_reference(
    photos: Path, init: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    train(options(photos, init, out, steps=2))
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(AuraSR(SMALL_CONFIG).state_dict())
    assert set(weights) == set(load_file(str(init / "model.safetensors")))
    config = json.loads((out / "config.json").read_text())
    ours = load_model(out)  # strict
    assert ours.config == SMALL_CONFIG
    # EMA weights by default: what the state's EMA holds, not the raw weights.
    ema = state_of(out)["ema"]
    assert all(torch.equal(weights[k], ema[k].float()) for k in weights)
    reference = reference_upscaler(config, weights)  # strict load_state_dict
    tile = torch.rand(1, 3, 64, 64)
    z = torch.randn(1, config["style_network"]["dim_in"])
    with torch.no_grad():
        torch.manual_seed(7)  # the reference draws its input noise itself: the same draw
        theirs = reference.upsampler(lowres_image=tile, noise=z)
        torch.manual_seed(7)
        mine = ours(tile, z, noise=torch.randn_like(tile) * INPUT_NOISE_SCALE)
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_bad_input_gets_a_clear_message(photos: Path, init: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingError, match="no image to train on"):
        train(options(empty, init, tmp_path / "a"))
    with pytest.raises(TrainingError, match="no such file or folder"):
        train(options(tmp_path / "nowhere", init, tmp_path / "b"))

    small = tmp_path / "small"
    small.mkdir()
    Image.new("RGB", (100, 300)).save(small / "tiny.png")
    with pytest.raises(TrainingError, match="1 smaller than the crop"):
        train(options(small, init, tmp_path / "c"))

    other = SMALL_CONFIG.to_dict() | {"dim": 16}
    (tmp_path / "config.json").write_text(json.dumps(other))
    with pytest.raises(TrainingError, match=r"does not match the checkpoint.*dim"):
        train(options(photos, init, tmp_path / "d", config=str(tmp_path / "config.json")))

    missing = tmp_path / "no-such-vgg19.pth"
    with pytest.raises(TrainingError, match=f"no file at {missing}"):
        train(
            options(photos, init, tmp_path / "e", perceptual=1.0, perceptual_weights=str(missing))
        )

    with pytest.raises(TrainingError, match="nothing to resume"):
        train(options(photos, init, tmp_path / "f"), resume=True)


def test_unreadable_files_among_good_ones_are_skipped_and_counted(
    photos: Path, init: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(photos, mixed)
    (mixed / "notes.png").write_text("not an image")
    good = (mixed / "astronaut.jpg").read_bytes()
    (mixed / "cut.jpg").write_bytes(good[:200])  # a header, then nothing
    caplog.set_level("INFO", logger="superscale.train")
    train(options(mixed, init, tmp_path / "out", steps=2))
    assert "2 unreadable, skipped" in caplog.text
    assert "notes.png" in caplog.text


def test_the_command_line_trains_and_resumes(photos: Path, init: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    base = [sys.executable, "-m", "superscale", "train"]
    first = subprocess.run(
        [
            *base,
            str(photos),
            "--from",
            str(init),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch",
            "2",
            "--workers",
            "0",
            "--degrade",
            "real-world",
            "--jpeg-quality",
            "40,90",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "done: step 2" in first.stdout
    options_saved = state_of(out)["options"]
    assert options_saved["degradation"]["jpeg_quality"] == (40, 90)
    assert options_saved["degradation"]["second_order_prob"] == 0.5
    again = subprocess.run(
        [*base, "--out", str(out), "--resume", "--steps", "3"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "done: step 3" in again.stdout
    bad = subprocess.run(
        [*base, str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "no such file or folder" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_saves_its_last_whole_step_and_resumes_as_if_never_stopped(
    photos: Path, init: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "stopped"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "superscale",
            "train",
            str(photos),
            "--from",
            str(init),
            "--out",
            str(out),
            "--steps",
            "10000",
            "--batch",
            "2",
            "--lr",
            "1e-3",
            "--workers",
            "1",
            "--log-every",
            "1",
            "--save-every",
            "10000",
            "--val-every",
            "10000",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = out / "log.jsonl"
    wait_for(lambda: log.is_file() and '"loss"' in log.read_text(), 120, "a training step")
    os.killpg(run.pid, sig)  # the whole group, as a terminal's Ctrl-C: data loaders too
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == code, stderr
    assert f"go on with --resume {out}" in stderr and "Traceback" not in stderr
    saved = state_of(out)["step"]
    assert 1 <= saved < 10000
    train(options(photos, init, out, steps=saved + 1), resume=True)
    whole = tmp_path / "whole"
    train(options(photos, init, whole, steps=saved + 1, workers=1, val_every=10000))
    a, b = state_of(out), state_of(whole)
    assert a["step"] == b["step"] == saved + 1
    for part in ("model", "ema"):
        for key, tensor in a[part].items():
            assert torch.equal(tensor, b[part][key]), (part, key)


def test_bf16_autocast_trains(photos: Path, init: Path, tmp_path: Path) -> None:
    """The GPU path's autocast, on the CPU (where bf16 is emulated or AVX512-BF16)."""
    out = tmp_path / "bf16"
    train(options(photos, init, out, steps=2, bf16=True, gan=0.1, d_channels=8))
    lines = [line for line in log_lines(out) if "loss" in line]
    assert len(lines) == 2 and all(np.isfinite(line["loss"]) for line in lines)
    assert load_model(out).config == SMALL_CONFIG


def test_starts_from_a_published_name_or_from_scratch(
    photos: Path, small_model_dir: Path, tmp_path: Path
) -> None:
    published = tmp_path / "v2"
    train(options(photos, "v2", published, model_dir=str(small_model_dir), steps=1))
    assert load_model(published).config == load_model(small_model_dir / "v2").config
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_CONFIG.to_dict()))
    scratch = tmp_path / "scratch"
    train(options(photos, None, scratch, config=str(config), steps=1))
    assert load_model(scratch).config == SMALL_CONFIG
    with pytest.raises(TrainingError, match="needs a --config"):
        train(options(photos, None, tmp_path / "none"))

"""The training package's parts on their own: quality measures against scikit-image's, the
degradation chain, the positions each process takes, gradient checkpointing, the data scan."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.metrics
import torch
from PIL import Image

from superscale.model import SMALL_CONFIG, AuraSR, random_state_dict
from superscale.train.data import (
    CropDataset,
    DataError,
    StepPositions,
    find_images,
    scan_images,
    validation_samples,
)
from superscale.train.degrade import Degradation
from superscale.train.quality import psnr, ssim


def photo(size: int = 96) -> torch.Tensor:
    pixels = skimage.data.astronaut()[100 : 100 + size, 150 : 150 + size]
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255


def test_psnr_and_ssim_agree_with_scikit_image() -> None:
    target = photo()
    noisy = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    noisy = noisy.clamp(0, 1)
    a, b = noisy.permute(1, 2, 0).double().numpy(), target.permute(1, 2, 0).double().numpy()
    want_psnr = skimage.metrics.peak_signal_noise_ratio(b, a, data_range=1.0)
    want_ssim = skimage.metrics.structural_similarity(
        b,
        a,
        data_range=1.0,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert float(psnr(noisy[None], target[None])[0]) == pytest.approx(want_psnr, abs=1e-3)
    assert float(ssim(noisy[None], target[None])[0]) == pytest.approx(want_ssim, abs=1e-4)


def test_degradations_are_drawn_from_the_seed_alone() -> None:
    hr = photo(256)
    chain = Degradation.real_world()

    def run(seed: int) -> torch.Tensor:
        return chain.apply(hr, 64, np.random.default_rng([seed, 1]))

    first = run(0)
    assert first.shape == (3, 64, 64) and 0 <= float(first.min()) <= float(first.max()) <= 1
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
    bicubic = Degradation().apply(hr, 64, np.random.default_rng(0))
    assert not torch.equal(first, bicubic)


@pytest.mark.parametrize(
    "stage",
    [
        {"blur_prob": 1.0},
        {"noise_prob": 1.0},
        {"jpeg_prob": 1.0, "jpeg_quality": (20, 20)},
        {"resize_prob": 1.0, "resize_scale": (0.5, 0.5)},
    ],
)
def test_each_stage_changes_the_input(stage: dict[str, object]) -> None:
    hr = photo(256)
    plain = Degradation().apply(hr, 64, np.random.default_rng(0))
    degraded = Degradation(**stage).apply(hr, 64, np.random.default_rng(0))  # type: ignore[arg-type]
    assert (degraded - plain).abs().mean() > 1e-3


@pytest.mark.parametrize(
    "bad", [{"blur_prob": 1.5}, {"noise_sigma": (5.0, 1.0)}, {"jpeg_quality": (50, 101)}]
)
def test_bad_degradation_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Degradation(**bad)  # type: ignore[arg-type]


def test_processes_take_between_them_what_one_process_takes() -> None:
    one = list(islice(StepPositions(start=3, batch=8, accumulate=2, rank=0, world=1), 6))
    ranks = [list(islice(StepPositions(3, 8, 2, rank, 2), 6)) for rank in range(2)]
    for i, micro in enumerate(one):
        assert micro == ranks[0][i] + ranks[1][i]
    assert one[0][0] == 3 * 8  # a resumed run starts at its step's positions
    with pytest.raises(ValueError, match="must divide"):
        StepPositions(0, 6, 4, 0, 1)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    x, z = torch.rand(2, 3, 64, 64), torch.randn(2, SMALL_CONFIG.style_network.dim_in)
    target = torch.rand(2, 3, 256, 256)
    grads = []
    for checkpointed in (False, True):
        model = AuraSR(SMALL_CONFIG)
        model.load_state_dict(random_state_dict(SMALL_CONFIG, seed=2))
        model.checkpoint_activations(checkpointed)
        (model(x, z) - target).abs().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_the_scan_reads_headers_and_samples_are_positions(tmp_path: Path) -> None:
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "coffee.webp")
    (tmp_path / "sub").mkdir()
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "sub" / "cat.tiff")
    Image.new("RGB", (300, 200)).save(tmp_path / "sub" / "short.png")
    (tmp_path / "readme.txt").write_text("not an image, not even looked at")
    paths = find_images([tmp_path])
    assert [p.name for p in paths] == ["coffee.webp", "cat.tiff", "short.png"]
    scan = scan_images(paths, 256)
    assert [e.path.name for e in scan.usable] == ["coffee.webp", "cat.tiff"]
    assert [p.name for p in scan.too_small] == ["short.png"]
    data = CropDataset(scan.usable, crop=256, style_dim=8, degradation=Degradation(), seed=4)
    again = CropDataset(scan.usable, crop=256, style_dim=8, degradation=Degradation(), seed=4)
    for position in (0, 1, 5):  # past the first epoch too
        a, b = data[position], again[position]
        assert a["hr"].shape == (3, 256, 256) and a["lr"].shape == (3, 64, 64)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(data[0]["hr"], data[2]["hr"])


def test_validation_skips_an_image_that_does_not_decode(tmp_path: Path) -> None:
    good, cut_short = tmp_path / "coffee.png", tmp_path / "cut.png"
    Image.fromarray(skimage.data.coffee()).save(good)
    cut_short.write_bytes(good.read_bytes()[:5000])  # its header reads, its pixels do not
    scan = scan_images([cut_short, good], 256)
    assert len(scan.usable) == 2  # the scan reads headers only
    batch = validation_samples(scan.usable, 256, 8, Degradation())
    assert batch["hr"].shape == (1, 3, 256, 256)
    with pytest.raises(DataError, match="none of the validation images decodes"):
        validation_samples(scan.usable[:1], 256, 8, Degradation())

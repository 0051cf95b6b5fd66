"""Factors other than the model's 4: one pass and a resize down up to 4, two passes above it;
exact sizes, alpha, 1×1 inputs, progress over both passes, determinism, cancel and refusals
(small random model)."""

from __future__ import annotations

import pytest
from PIL import Image

from pngs import noise_image
from superscale.engine import Cancelled, Upscaler
from superscale.scaling import check_output_size, model_output_size, output_size

from .test_upscale import upscaler  # noqa: F401 (fixture)


@pytest.mark.parametrize(
    ("scale", "size"),
    [
        (1, (33, 17)),
        (2, (66, 34)),
        (2.5, (83, 43)),
        (3.3, (109, 56)),
        (4, (132, 68)),
        (5, (165, 85)),
        (7.25, (239, 123)),
        (16, (528, 272)),
    ],
)
def test_output_size_is_exact(upscaler: Upscaler, scale: float, size: tuple[int, int]) -> None:  # noqa: F811
    assert output_size(33, 17, scale) == size  # round(w·f) × round(h·f), halves up
    out = upscaler.upscale(noise_image(17, 33), scale=scale)
    assert out.size == size and out.mode == "RGB"


def test_below_four_is_the_4x_output_resized_down(upscaler: Upscaler) -> None:  # noqa: F811
    image = noise_image(20, 24, seed=3)
    four = upscaler.upscale(image, seed=5)
    two = upscaler.upscale(image, seed=5, scale=2)
    expected = four.resize((48, 40), Image.Resampling.LANCZOS)
    assert two.tobytes() == expected.tobytes()
    assert upscaler.upscale(image, seed=5, scale=4).tobytes() == four.tobytes()  # unresized


def test_above_four_runs_the_model_twice(upscaler: Upscaler) -> None:  # noqa: F811
    image = noise_image(6, 5, seed=4)
    first = upscaler.upscale(image, seed=2)
    sixteen = upscaler.upscale(image, seed=2, scale=16)
    assert sixteen.tobytes() == upscaler.upscale(first, seed=2).tobytes()
    eight = upscaler.upscale(image, seed=2, scale=8)
    assert eight.tobytes() == sixteen.resize((40, 48), Image.Resampling.LANCZOS).tobytes()


def test_progress_counts_the_tiles_of_both_passes(upscaler: Upscaler) -> None:  # noqa: F811
    seen: list[tuple[int, int]] = []
    upscaler.upscale(noise_image(70, 65), scale=5, progress=lambda d, t: seen.append((d, t)))
    # Pass 1: 2×2 tiles of 64; pass 2 on 280×260: 5×5 tiles.
    assert {t for _, t in seen} == {4 + 25}
    assert seen[0] == (0, 29) and seen[-1] == (29, 29)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_alpha_and_one_pixel_at_any_factor(upscaler: Upscaler) -> None:  # noqa: F811
    rgba = noise_image(9, 7, "RGBA", seed=1)
    for scale in (1, 2.5, 6):
        out = upscaler.upscale(rgba, scale=scale)
        assert out.mode == "RGBA" and out.size == output_size(7, 9, scale)
    pixel = Image.new("RGB", (1, 1), (200, 10, 30))
    assert upscaler.upscale(pixel, scale=1).size == (1, 1)
    assert upscaler.upscale(pixel, scale=16).size == (16, 16)


def test_same_seed_same_bytes_and_overlap_at_any_factor(upscaler: Upscaler) -> None:  # noqa: F811
    image = noise_image(30, 20, seed=9)
    for scale in (3, 6.5):
        a = upscaler.upscale(image, seed=1, scale=scale, overlapping_tiles=True)
        b = upscaler.upscale(image, seed=1, scale=scale, overlapping_tiles=True)
        assert a.tobytes() == b.tobytes() and a.size == output_size(20, 30, scale)


def test_many_images_each_with_its_factor(upscaler: Upscaler) -> None:  # noqa: F811
    images = [noise_image(10, 12, seed=s) for s in range(3)]
    outs = upscaler.upscale_many(images, seed=4, scale=[1.5, 4, 9])
    alone = [
        upscaler.upscale(im, seed=4, scale=f) for im, f in zip(images, [1.5, 4, 9], strict=True)
    ]
    for out, one in zip(outs, alone, strict=True):
        assert isinstance(out, Image.Image) and out.tobytes() == one.tobytes()


def test_cancel_in_the_second_pass(upscaler: Upscaler) -> None:  # noqa: F811
    calls = 0

    def cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3  # past the first pass's polls

    with pytest.raises(Cancelled):
        upscaler.upscale(noise_image(8, 8), scale=8, should_cancel=cancel)


@pytest.mark.parametrize("scale", [0, 0.99, 16.01, float("nan"), float("inf"), True])
def test_factors_out_of_range_are_refused(upscaler: Upscaler, scale: float) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="scale"):
        upscaler.upscale(noise_image(4, 4), scale=scale)


def test_output_limit_counts_the_models_own_output() -> None:
    assert model_output_size(100, 50, 3) == (400, 200)
    assert model_output_size(100, 50, 4.5) == (1600, 800)
    check_output_size(1024, 1024, 16, 16384 * 16384)  # exactly the default limit
    with pytest.raises(ValueError, match="SUPERSCALE_MAX_OUTPUT_PIXELS"):
        check_output_size(1025, 1024, 16, 16384 * 16384)
    with pytest.raises(ValueError, match="16384x8192"):
        check_output_size(1024, 512, 5, 1000)
    assert output_size(3, 3, 1.5) == (5, 5)  # 4.5 rounds up

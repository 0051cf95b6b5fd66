"""`Upscaler.upscale_many`: several images in shared tile batches, each as if upscaled alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superscale.engine import Cancelled, Upscaler


def _image(h: int, w: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


@pytest.fixture(scope="module", params=[1, 3])
def upscaler(small_model_dir: Path, request: pytest.FixtureRequest) -> Upscaler:
    # Batch 3 makes batches straddle images (and end part-full): the case to prove.
    return Upscaler.from_checkpoint(
        "v1", model_dir=small_model_dir, device="cpu", dtype="fp32", batch_size=request.param
    )


def test_outputs_are_byte_identical_to_one_image_at_a_time(upscaler: Upscaler) -> None:
    inputs = [
        _image(40, 70, 1),
        _image(17, 33, 2, "RGBA"),
        _image(64, 64, 3, "L"),
        _image(90, 20, 4),
    ]
    overlaps = [False, True, False, True]
    got = upscaler.upscale_many(inputs, seed=5, overlapping_tiles=overlaps)
    for image, overlap, out in zip(inputs, overlaps, got, strict=True):
        alone = upscaler.upscale(image, overlapping_tiles=overlap, seed=5)
        assert isinstance(out, Image.Image)
        assert (out.mode, out.size) == (alone.mode, alone.size)
        assert out.tobytes() == alone.tobytes()


def test_progress_per_image_and_cancel_stops_only_that_image(upscaler: Upscaler) -> None:
    inputs = [_image(64, 200, s) for s in range(3)]  # 4 tiles each
    seen: list[list[tuple[int, int]]] = [[], [], []]
    polls = [0, 0, 0]

    def cancel_after(i: int, n: int) -> Callable[[], bool]:
        def check() -> bool:
            polls[i] += 1
            return polls[i] > n

        return check

    def recorder(i: int) -> Callable[[int, int], None]:
        return lambda done, total: seen[i].append((done, total))

    got = upscaler.upscale_many(
        inputs,
        progress=[recorder(i) for i in range(3)],
        should_cancel=[None, cancel_after(1, 1), None],
    )
    assert isinstance(got[1], Cancelled)
    for i in (0, 2):
        out = got[i]
        assert isinstance(out, Image.Image)
        assert out.tobytes() == upscaler.upscale(inputs[i]).tobytes()
        assert seen[i][0] == (0, 4) and seen[i][-1] == (4, 4)
        assert [d for d, _ in seen[i]] == sorted(d for d, _ in seen[i])
    assert seen[1] and seen[1][-1][0] < 4  # it stopped part-way


def test_a_bad_image_fails_alone(upscaler: Upscaler) -> None:
    empty = Image.new("RGB", (0, 0))
    good = _image(30, 30, 9)
    got = upscaler.upscale_many([empty, good], seed=1)
    assert isinstance(got[0], ValueError)
    assert isinstance(got[1], Image.Image)
    assert got[1].tobytes() == upscaler.upscale(good, seed=1).tobytes()


def test_argument_errors(upscaler: Upscaler) -> None:
    with pytest.raises(ValueError, match="seed"):
        upscaler.upscale_many([_image(8, 8, 0)], seed=-1)
    with pytest.raises(ValueError, match="overlapping_tiles"):
        upscaler.upscale_many([_image(8, 8, 0)], overlapping_tiles=[True, False])
    assert upscaler.upscale_many([]) == []

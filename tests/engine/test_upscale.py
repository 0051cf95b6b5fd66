"""The Upscaler's contract: sizes, modes, seeds, progress, cancel (small random model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pngs import noise_image
from superscale.engine import Cancelled, Upscaler


@pytest.fixture(scope="module")
def upscaler(small_model_dir: Path) -> Upscaler:
    return Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", dtype="fp32")


@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 33), (64, 64), (65, 130), (1000, 40)])
def test_output_is_exactly_4x(upscaler: Upscaler, h: int, w: int) -> None:
    out = upscaler.upscale(noise_image(h, w))
    assert out.mode == "RGB"
    assert out.size == (4 * w, 4 * h)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 33), (65, 130)])
def test_overlapping_tiles_any_size(upscaler: Upscaler, h: int, w: int) -> None:
    assert upscaler.upscale(noise_image(h, w), overlapping_tiles=True).size == (4 * w, 4 * h)


def test_same_seed_same_bytes_other_seed_differs(upscaler: Upscaler) -> None:
    image = noise_image(40, 70)
    a = upscaler.upscale(image, seed=7).tobytes()
    assert upscaler.upscale(image, seed=7).tobytes() == a
    assert upscaler.upscale(image, seed=8).tobytes() != a
    assert upscaler.upscale(image).tobytes() == upscaler.upscale(image, seed=0).tobytes()
    # per_tile draws are seeded too.
    b = upscaler.upscale(image, seed=7, noise="per_tile").tobytes()
    assert upscaler.upscale(image, seed=7, noise="per_tile").tobytes() == b


def test_batch_size_changes_at_most_rounding(small_model_dir: Path, upscaler: Upscaler) -> None:
    """Tile noise is keyed by tile, not by batch: another batch size changes only the float
    rounding of the convolutions (at most one 8-bit level, on a handful of pixels)."""
    image = noise_image(70, 140)
    other = Upscaler.from_checkpoint(
        "v2", model_dir=small_model_dir, device="cpu", dtype="fp32", batch_size=3
    )
    a = np.asarray(other.upscale(image, seed=3), dtype=np.int16)
    b = np.asarray(upscaler.upscale(image, seed=3), dtype=np.int16)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_progress_counts_every_tile(upscaler: Upscaler) -> None:
    calls: list[tuple[int, int]] = []
    upscaler.upscale(
        noise_image(65, 130), overlapping_tiles=True, progress=lambda d, t: calls.append((d, t))
    )
    total = 2 * 3 + 3 * 4  # pass 1: 2×3 tiles; pass 2: 3×4
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_cancel_raises_between_batches(upscaler: Upscaler) -> None:
    calls: list[int] = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    done: list[int] = []
    with pytest.raises(Cancelled):
        upscaler.upscale(
            noise_image(130, 130),  # 9 tiles, batch 1
            should_cancel=should_cancel,
            progress=lambda d, _: done.append(d),
        )
    # Checked before folding, then before each batch: two batches ran, the third did not.
    assert len(calls) == 4
    assert done == [0, 1, 2]


def test_rgba_keeps_alpha(upscaler: Upscaler) -> None:
    image = noise_image(20, 30, "RGBA")
    alpha = np.zeros((20, 30), dtype=np.uint8)
    alpha[:, 15:] = 255
    image.putalpha(Image.fromarray(alpha))
    out = upscaler.upscale(image)
    assert out.mode == "RGBA" and out.size == (120, 80)
    out_alpha = np.asarray(out.getchannel("A"))
    # Lanczos (3 lobes, 12 output px at 4×) rings near the edge only.
    assert (out_alpha[:, :46] == 0).all() and (out_alpha[:, 74:] == 255).all()
    # RGB is the same as upscaling the RGB part alone.
    rgb = upscaler.upscale(image.convert("RGB"))
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(rgb))


def test_greyscale_and_palette_inputs(upscaler: Upscaler) -> None:
    grey = noise_image(10, 12).convert("L")
    out = upscaler.upscale(grey)
    assert out.mode == "RGB" and out.size == (48, 40)
    palette = noise_image(10, 12).convert("P")
    palette.info["transparency"] = 0
    assert upscaler.upscale(palette).mode == "RGBA"


def test_bad_arguments(upscaler: Upscaler) -> None:
    image = noise_image(8, 8)
    with pytest.raises(ValueError, match="seed"):
        upscaler.upscale(image, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        upscaler.upscale(image, seed=2**64)
    assert upscaler.upscale(image, seed=2**64 - 1).size == (32, 32)  # the largest seed works
    with pytest.raises(ValueError, match="noise"):
        upscaler.upscale(image, noise="bogus")  # type: ignore[arg-type]

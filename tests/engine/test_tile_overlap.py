"""`tile_overlap`: seams gone at a fraction of `overlapping_tiles`' cost. The seam metric
(`engine.seams`: steps across tile edges over steps inside tiles) on a smooth gradient and on
natural photographs from scikit-image's data set, as shipped and JPEG-compressed (small
random-weight model, whose untrained tile edges make seams stark)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superscale.engine import Upscaler
from superscale.engine.seams import seam_score
from superscale.engine.tiling import TilePlan

from .test_seams import _gradient

data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) ships the images")


def _photo(name: str, size: tuple[int, int] = (256, 192)) -> Image.Image:
    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, -1)
    return Image.fromarray(pixels[..., :3]).resize(size, Image.Resampling.LANCZOS)


def _jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


IMAGES = {
    "gradient": lambda: _gradient(192, 256),
    "astronaut": lambda: _photo("astronaut"),
    "coffee": lambda: _photo("coffee"),
    "astronaut-jpeg30": lambda: _jpeg(_photo("astronaut")),
    "chelsea-jpeg30": lambda: _jpeg(_photo("chelsea")),
}


@pytest.fixture(scope="module")
def up(small_model_dir: Path) -> Upscaler:
    return Upscaler.from_checkpoint("v1", model_dir=small_model_dir, device="cpu", dtype="fp32")


def _score(up: Upscaler, image: Image.Image, overlapping: bool, margin: int) -> float:
    out = np.asarray(up.upscale(image, overlapping_tiles=overlapping, tile_overlap=margin))
    assert out.shape[:2] == (image.height * 4, image.width * 4)  # exact, whatever the mode
    plan = TilePlan(image.height, image.width, 64, 4, overlapping, margin)
    return seam_score(out, plan)


@pytest.mark.parametrize("name", list(IMAGES))
def test_tile_overlap_beats_plain_and_matches_overlapping_tiles(up: Upscaler, name: str) -> None:
    image = IMAGES[name]()
    plain = _score(up, image, False, 0)
    fal = _score(up, image, True, 0)
    assert plain > 3, f"{name}: the metric must see the plain seams ({plain:.2f})"
    for margin in (8, 16):
        blended = _score(up, image, False, margin)
        assert blended < plain / 10, (name, margin, blended, plain)
        assert blended <= fal, (name, margin, blended, fal)


def test_the_cost_is_the_tiles_run() -> None:
    # (64 / (64 - overlap))² of a plain run's tiles on large images; 2× for overlapping_tiles.
    plain = TilePlan(2048, 2048, 64, 4, False).total
    assert TilePlan(2048, 2048, 64, 4, True).total / plain == pytest.approx(2, rel=0.07)
    for margin in (4, 8, 16):
        ratio = TilePlan(2048, 2048, 64, 4, False, margin).total / plain
        assert ratio == pytest.approx((64 / (64 - margin)) ** 2, rel=0.07), margin


def test_any_size_alpha_and_same_bytes(up: Upscaler) -> None:
    rgba = Image.fromarray(np.random.default_rng(3).integers(0, 256, (70, 130, 4), np.uint8))
    for margin in (1, 8, 32):
        a = up.upscale(rgba, tile_overlap=margin, seed=2)
        assert a.size == (520, 280) and a.mode == "RGBA"
        assert a.tobytes() == up.upscale(rgba, tile_overlap=margin, seed=2).tobytes()
    assert up.upscale(Image.new("RGB", (1, 1)), tile_overlap=16).size == (4, 4)
    assert up.upscale(rgba, tile_overlap=8, scale=2.5).size == (325, 175)


@pytest.mark.parametrize("margin", [-1, 33, True, 2.5])
def test_bad_overlaps_are_refused(up: Upscaler, margin: object) -> None:
    with pytest.raises(ValueError, match="tile_overlap"):
        up.upscale(Image.new("RGB", (8, 8)), tile_overlap=margin)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose one"):
        up.upscale(Image.new("RGB", (8, 8)), tile_overlap=8, overlapping_tiles=True)

"""Upscales as pixels (`upscale_many(as_arrays=True)`, what the worker hands its encoder): the
same pixels as the PIL images, for every path (RGBA, blended, resized, two passes), and
`images.encode` writes the same file from either."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pngs import noise_image
from superscale import images
from superscale.engine import Upscaler


@pytest.fixture(scope="module")
def upscaler(small_model_dir: Path) -> Upscaler:
    return Upscaler.from_checkpoint("v2", model_dir=small_model_dir, device="cpu", dtype="fp32")


def _image(h: int, w: int, mode: str = "RGB") -> Image.Image:
    return noise_image(h, w, mode, seed=h * w)


CASES = [
    ("rgb", _image(40, 70), {}),
    ("rgba", _image(30, 50, "RGBA"), {}),
    ("overlapping tiles", _image(40, 70), {"overlapping_tiles": True}),
    ("tile overlap", _image(70, 40), {"tile_overlap": 8}),
    ("scale 2 (resized)", _image(30, 50), {"scale": 2}),
    ("scale 6 (two passes)", _image(12, 20), {"scale": 6}),
]


@pytest.mark.parametrize(("name", "image", "options"), CASES, ids=[c[0] for c in CASES])
def test_arrays_are_the_images_pixels(
    upscaler: Upscaler, name: str, image: Image.Image, options: dict
) -> None:
    (as_image,) = upscaler.upscale_many([image], seed=3, **options)
    (as_array,) = upscaler.upscale_many([image], seed=3, as_arrays=True, **options)
    assert isinstance(as_image, Image.Image) and isinstance(as_array, np.ndarray)
    assert as_array.dtype == np.uint8 and as_array.shape[2] == len(as_image.mode)
    assert np.array_equal(as_array, np.asarray(as_image))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_takes_pixels(upscaler: Upscaler, fmt: str) -> None:
    image = _image(30, 40, "RGBA")
    (pixels,) = upscaler.upscale_many([image], seed=1, as_arrays=True)
    (picture,) = upscaler.upscale_many([image], seed=1)
    assert isinstance(pixels, np.ndarray) and isinstance(picture, Image.Image)
    assert images.size_of(pixels) == images.size_of(picture) == (160, 120)
    from_pixels, from_image = images.encode(pixels, fmt), images.encode(picture, fmt)
    if fmt == "png":
        assert from_pixels == from_image
    decoded = [np.asarray(Image.open(io.BytesIO(d))) for d in (from_pixels, from_image)]
    assert np.array_equal(*decoded)


def test_encode_refuses_pixels_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="uint8"):
        images.encode(np.zeros((4, 4, 3), np.float32), "png")
    with pytest.raises(images.ImageError):
        images.encode(np.zeros((4, 20000, 3), np.uint8), "webp")

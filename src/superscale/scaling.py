"""Any factor from 1 to 16 out of a 4× model: one pass of the model for factors up to its own,
two (the second on the first's output) above; then an antialiased resize down to the exact
size asked. Torch-free: the API and the worker size outputs with it before any inference."""

from __future__ import annotations

import math

from PIL import Image

MIN_SCALE = 1.0
MAX_SCALE = 16.0
MODEL_SCALE = 4  # what one pass of the network multiplies each side by


def check_scale(scale: float) -> float:
    """`scale` as a float; ValueError outside [1, 16] (NaN, infinities and bools included)."""
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError(f"scale must be a number from {MIN_SCALE:g} to {MAX_SCALE:g}")
    value = float(scale)
    if not (MIN_SCALE <= value <= MAX_SCALE):  # NaN fails both comparisons
        raise ValueError(f"scale must be from {MIN_SCALE:g} to {MAX_SCALE:g}, not {scale!r}")
    return value


def model_passes(scale: float, model_scale: int = MODEL_SCALE) -> int:
    return 1 if scale <= model_scale else 2


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """round(w·f) × round(h·f), halves rounded up, at least 1 px a side."""
    return (max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5)))


def model_output_size(
    width: int, height: int, scale: float, model_scale: int = MODEL_SCALE
) -> tuple[int, int]:
    """What the model itself produces on the way to `scale` (before the resize down)."""
    factor = model_scale ** model_passes(scale, model_scale)
    return width * factor, height * factor


def check_output_size(
    width: int, height: int, scale: float, max_pixels: int, model_scale: int = MODEL_SCALE
) -> None:
    """ValueError naming the limit when the model's output on the way to `scale` (the largest
    image the upscale holds) would exceed `max_pixels` (`SUPERSCALE_MAX_OUTPUT_PIXELS`)."""
    mw, mh = model_output_size(width, height, scale, model_scale)
    if mw * mh > max_pixels:
        side = math.isqrt(max_pixels)
        raise ValueError(
            f"a {width}x{height} image at factor {scale:g} needs a {mw}x{mh} model output, over "
            f"this server's limit of {max_pixels} pixels (SUPERSCALE_MAX_OUTPUT_PIXELS, about "
            f"{side}x{side}): use a smaller factor or image"
        )


def resize_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size`: Lanczos, which Pillow widens when it shrinks (antialiased)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)

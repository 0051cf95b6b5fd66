"""Any factor from 1 to 16 out of a 4× model: one pass of the model for factors up to its own,
two (the second on the first's output) above; then an antialiased resize down to the exact
size asked — a factor, or a target size. Torch-free: the API and the worker size outputs with
it before any inference."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

MIN_SCALE = 1.0
MAX_SCALE = 16.0
MODEL_SCALE = 4  # what one pass of the network multiplies each side by
# tile_overlap: at most half a 64-px tile, so an output band meets two tile rows at most.
MAX_TILE_OVERLAP = 32


def check_scale(scale: float) -> float:
    """`scale` as a float; ValueError outside [1, 16] (NaN, infinities and bools included)."""
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError(f"scale must be a number from {MIN_SCALE:g} to {MAX_SCALE:g}")
    value = float(scale)
    if not (MIN_SCALE <= value <= MAX_SCALE):  # NaN fails both comparisons
        raise ValueError(f"scale must be from {MIN_SCALE:g} to {MAX_SCALE:g}, not {scale!r}")
    return value


@dataclass(frozen=True)
class Target:
    """An output size asked for instead of a factor: either side, or both (one alone keeps
    the aspect ratio)."""

    width: int | None = None
    height: int | None = None


# What an upscale is asked for: a factor, or a target size.
Scale = float | Target


def resolve(width: int, height: int, scale: Scale) -> tuple[float, tuple[int, int]]:
    """(the larger of the two sides' factors, the output size) for a `width`×`height` image;
    ValueError when a side's factor falls outside 1 to 16."""
    if not isinstance(scale, Target):
        factor = check_scale(scale)
        return factor, output_size(width, height, factor)
    if scale.width is not None and scale.height is not None:
        size = (scale.width, scale.height)
    elif scale.width is not None:
        size = (scale.width, _round(height * scale.width / width))
    elif scale.height is not None:
        size = (_round(width * scale.height / height), scale.height)
    else:
        raise ValueError("a target size needs a width, a height or both")
    factors = (size[0] / width, size[1] / height)
    if not all(MIN_SCALE <= f <= MAX_SCALE for f in factors):
        raise ValueError(
            f"a {size[0]}x{size[1]} output is {factors[0]:.3g}x × {factors[1]:.3g}x the "
            f"{width}x{height} input: each side may grow from 1x to 16x"
        )
    return max(factors), size


def _round(value: float) -> int:
    return max(1, math.floor(value + 0.5))


def model_passes(scale: float, model_scale: int = MODEL_SCALE) -> int:
    return 1 if scale <= model_scale else 2


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """round(w·f) × round(h·f), halves rounded up, at least 1 px a side."""
    return _round(width * scale), _round(height * scale)


def model_output_size(
    width: int, height: int, scale: float, model_scale: int = MODEL_SCALE
) -> tuple[int, int]:
    """What the model itself produces on the way to `scale` (before the resize down)."""
    factor = model_scale ** model_passes(scale, model_scale)
    return width * factor, height * factor


def check_output_size(
    width: int, height: int, scale: Scale, max_pixels: int, model_scale: int = MODEL_SCALE
) -> tuple[int, int]:
    """The output size of `scale`; ValueError when it is out of range, or when the model's
    output on the way (the largest image the upscale holds) would exceed `max_pixels`
    (`SUPERSCALE_MAX_OUTPUT_PIXELS`), naming the limit."""
    factor, size = resolve(width, height, scale)
    mw, mh = model_output_size(width, height, factor, model_scale)
    if mw * mh > max_pixels:
        side = math.isqrt(max_pixels)
        raise ValueError(
            f"a {width}x{height} image at factor {factor:g} needs a {mw}x{mh} model output, over "
            f"this server's limit of {max_pixels} pixels (SUPERSCALE_MAX_OUTPUT_PIXELS, about "
            f"{side}x{side}): use a smaller factor or image"
        )
    return size


def resize_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size`: Lanczos, which Pillow widens when it shrinks (antialiased)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)

"""Overlapping tiles leave no seam at tile borders (smooth gradient, small random model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superscale.engine import Upscaler

OUT_TILE = 256
MARGIN = 16


def _gradient(h: int, w: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [xx / w * 200 + 20, yy / h * 200 + 20, (xx + yy) / (h + w) * 200 + 20]
    return Image.fromarray(np.stack(channels, -1).astype(np.uint8))


def _line_steps(out: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean |step| between neighbouring lines: (across tile borders, inside tiles).

    "Inside" keeps lines at least MARGIN px from any tile border or image edge: a network
    computing a tile sees zero padding at its edges, so lines next to a border are the seam's
    own neighbourhood, not the inside.
    """
    steps = np.abs(np.diff(out.astype(np.float64), axis=axis)).mean(axis=(1 - axis, 2))
    pos = np.arange(len(steps)) + 1  # step i lies between lines i and i + 1
    at_border = pos % OUT_TILE == 0
    distance = np.minimum(pos % OUT_TILE, -pos % OUT_TILE)
    inside = (distance >= MARGIN) & (len(steps) - pos >= MARGIN)
    return steps[at_border], steps[inside]


@pytest.fixture(scope="module")
def outputs(small_model_dir: Path) -> dict[bool, np.ndarray]:
    up = Upscaler.from_checkpoint("v1", model_dir=small_model_dir, device="cpu", dtype="fp32")
    image = _gradient(128, 192)  # 2×3 tiles: one horizontal and two vertical borders
    return {ov: np.asarray(up.upscale(image, overlapping_tiles=ov)) for ov in (False, True)}


@pytest.mark.parametrize("axis", [0, 1], ids=["rows", "columns"])
def test_overlapping_tiles_leave_no_seam(outputs: dict[bool, np.ndarray], axis: int) -> None:
    border, inside = _line_steps(outputs[True], axis)
    # Steps across tile borders are no larger than steps inside tiles. The largest inside
    # ones lie on the second pass's borders, where the blend is symmetric to ours: equal
    # up to float noise, hence the 10% margin.
    assert border.max() <= 1.1 * inside.max()
    # Without overlap the same borders stand out: the test can see a seam.
    border_plain, inside_plain = _line_steps(outputs[False], axis)
    assert border_plain.min() > 10 * np.percentile(inside_plain, 95)
    assert border.max() < border_plain.min() / 20

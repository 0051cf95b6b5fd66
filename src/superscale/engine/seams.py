"""How visible tile seams are: the step between neighbouring output lines where tiles meet,
against the steps inside tiles. Used by the tests and `benchmarks/seams.py` to compare the
seam remedies (`overlapping_tiles`, `tile_overlap`) on the same images."""

from __future__ import annotations

import numpy as np

from .tiling import TilePlan

INSIDE = 16  # output px: lines nearer a tile edge than this are the seam's neighbourhood


def tile_edges(plan: TilePlan, length: int, rows: bool) -> list[int]:
    """Output positions (0 < p < `length`) where a tile of `plan` begins or ends, along rows
    (`rows`) or columns: the step between lines p − 1 and p crosses it."""
    count = plan.rows if rows else plan.cols
    t, step = plan.out_tile, plan.out_stride
    edges: set[int] = set()
    for i in range(count):
        edges.update((i * step, i * step + t))
        if plan.overlap:  # the offset pass sits half a tile up-left
            edges.update((i * step + t // 2, i * step + t + t // 2))
    return sorted(p for p in edges if 0 < p < length)


def seam_score(output: np.ndarray, plan: TilePlan) -> float:
    """Mean |step| across tile edges over mean |step| inside tiles, both directions (1: the
    edges cannot be told from the inside; a visible seam scores well above 1)."""
    pixels = output.astype(np.float64)
    ratios = []
    for axis in (0, 1):
        steps = np.abs(np.diff(pixels, axis=axis)).mean(axis=(1 - axis, 2))
        edges = tile_edges(plan, pixels.shape[axis], rows=axis == 0)
        if not edges:
            continue
        pos = np.arange(1, len(steps) + 1)  # steps[i] lies between lines i and i + 1
        distance = np.min(np.abs(pos[:, None] - np.array(edges)[None, :]), axis=1)
        inside = (distance >= INSIDE) & (pos >= INSIDE) & (len(steps) + 1 - pos >= INSIDE)
        if not inside.any():
            continue
        ratios.append(steps[np.array(edges) - 1].mean() / max(steps[inside].mean(), 1e-9))
    return float(np.mean(ratios)) if ratios else 1.0

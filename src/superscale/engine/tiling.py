"""Cutting an image into model tiles and putting the upscaled tiles back together.

The model maps 64² tiles to 256² tiles. The image is padded right and bottom to a multiple
of 64 (pass 1). With overlapping tiles, a second pass runs on pass 1's image padded by half a
tile on every side, so its tile centres sit on pass 1's tile corners; each output pixel is the
blend of both passes, weighted by how central the pixel is in each pass's tile.

Outputs are assembled in bands of one tile row: a band is converted to 8 bits and written
out as soon as every tile touching it is done, so memory holds at most two float bands.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def pad_dim(x: Tensor, dim: int, before: int, after: int) -> Tensor:
    """Pad one spatial dim of (C, H, W): mirror (reflect) where the image is large enough,
    else repeat the edge pixel (a 1-px image cannot be mirrored)."""
    if before == 0 and after == 0:
        return x
    size = x.shape[dim]
    mode = "reflect" if max(before, after) < size else "replicate"
    pads = (before, after, 0, 0) if dim == 2 else (0, 0, before, after)
    return F.pad(x[None], pads, mode=mode)[0]


def pad_image(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    return pad_dim(pad_dim(x, 1, top, bottom), 2, left, right)


@torch.no_grad()
def blend_weights(out_tile: int) -> Tensor:
    """Per-pixel weight (out_tile²) of a tile in the two-pass blend, already normalised.

    A peaked bump `exp(-d²/0.5)^8` over the tile (d: distance from the centre, 1 at the
    edges' midpoints), divided by the sum of itself and the other pass's bump (shifted by
    half a tile). As the pattern repeats every tile in both passes, one tile describes all.
    """
    t = torch.linspace(-1, 1, out_tile)
    d2 = t[:, None] ** 2 + t[None, :] ** 2
    bump = torch.exp(-d2 / 0.5) ** 8
    bump = bump / bump.max()
    other = torch.roll(bump, shifts=(out_tile // 2, out_tile // 2), dims=(0, 1))
    return bump / (bump + other)


@dataclass(frozen=True)
class Tile:
    """One model input: `pass_` 0 or 1, tile row and column in that pass's grid."""

    pass_: int
    row: int
    col: int
    index: int  # raster index within its pass


@dataclass(frozen=True)
class TilePlan:
    """Where the `tile`-px tiles of a `height`×`width` image go, and their `scale`× outputs."""

    height: int
    width: int
    tile: int
    scale: int
    overlap: bool

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def out_tile(self) -> int:
        return self.tile * self.scale

    def pass_grid(self, pass_: int) -> tuple[int, int]:
        return (self.rows + pass_, self.cols + pass_)

    @property
    def total(self) -> int:
        n = self.rows * self.cols
        return n + (self.rows + 1) * (self.cols + 1) if self.overlap else n

    def tiles(self) -> Iterator[Tile]:
        """Every tile, ordered so that output bands complete one after another.

        Without overlap: pass 0 row by row. With overlap: pass-1 row 0, then pass-0 row r
        followed by pass-1 row r+1, which together finish band r.
        """

        def row(pass_: int, r: int) -> Iterator[Tile]:
            cols = self.pass_grid(pass_)[1]
            for c in range(cols):
                yield Tile(pass_, r, c, r * cols + c)

        if self.overlap:
            yield from row(1, 0)
        for r in range(self.rows):
            yield from row(0, r)
            if self.overlap:
                yield from row(1, r + 1)

    def bands_of(self, tile: Tile) -> list[int]:
        """The output bands (tile rows of the padded output) this tile writes into."""
        if tile.pass_ == 0:
            return [tile.row]
        return [b for b in (tile.row - 1, tile.row) if 0 <= b < self.rows]

    def inputs(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """The padded (C, H, W) inputs of pass 0 and, with overlap, pass 1."""
        _, h, w = image.shape
        first = pad_image(image, 0, self.rows * self.tile - h, 0, self.cols * self.tile - w)
        if not self.overlap:
            return first, None
        half = self.tile // 2
        return first, pad_image(first, half, half, half, half)


class BandAssembler:
    """Blends upscaled tiles into float bands and hands each band out in 8 bits when done."""

    def __init__(self, plan: TilePlan, out: np.ndarray) -> None:
        self.plan = plan
        self.out = out  # (4h, 4w, C) uint8, the final image
        self.weights = blend_weights(plan.out_tile) if plan.overlap else None
        self.pending = [0] * plan.rows
        for tile in plan.tiles():
            for b in plan.bands_of(tile):
                self.pending[b] += 1
        self.bands: dict[int, Tensor] = {}
        self.next_band = 0

    def add(self, tile: Tile, pixels: Tensor) -> None:
        """`pixels`: (C, T, T) float32 in [0, 1], the upscale of `tile`."""
        t = self.plan.out_tile
        if self.weights is not None:
            pixels = pixels * self.weights
        # Top-left of this tile in padded output coordinates (pass 1 sits half a tile up-left).
        y0 = tile.row * t - (t // 2) * tile.pass_
        x0 = tile.col * t - (t // 2) * tile.pass_
        width = self.plan.cols * t
        xa, xb = max(x0, 0), min(x0 + t, width)
        for b in self.plan.bands_of(tile):
            band = self.bands.get(b)
            if band is None:
                band = self.bands[b] = torch.zeros(pixels.shape[0], t, width)
            ya, yb = max(y0, b * t), min(y0 + t, (b + 1) * t)
            band[:, ya - b * t : yb - b * t, xa:xb] += pixels[
                :, ya - y0 : yb - y0, xa - x0 : xb - x0
            ]
            self.pending[b] -= 1
        self._flush()

    def _flush(self) -> None:
        t = self.plan.out_tile
        out_h, out_w = self.out.shape[:2]
        while self.next_band < self.plan.rows and self.pending[self.next_band] == 0:
            b = self.next_band
            band = self.bands.pop(b)
            rows = min(t, out_h - b * t)
            # Round to the nearest 8-bit level (the reference truncates, a bias of half a level).
            pixels = band[:, :rows, :out_w].mul(255).round_().clamp_(0, 255).to(torch.uint8)
            self.out[b * t : b * t + rows] = pixels.permute(1, 2, 0).numpy()
            self.next_band += 1

    @property
    def done(self) -> bool:
        return self.next_band == self.plan.rows

"""Cutting an image into model tiles and putting the upscaled tiles back together.

The model maps 64² tiles to 256² tiles. The image is padded right and bottom to fit whole
tiles (pass 0). Two ways to hide the seams between tiles:
- `overlap` (fal's `overlapping_tiles`): a second pass runs on pass 0's image padded by half a
  tile on every side, so its tile centres sit on pass 0's tile corners; each output pixel is
  the blend of both passes, weighted by how central the pixel is in each pass's tile. About 2×
  the tiles.
- `margin` (`tile_overlap`): one pass whose neighbouring tiles share `margin` input pixels (a
  stride of 64 − margin); where two tiles overlap, a raised-cosine ramp hands one over to the
  other (the weights of overlapping tiles sum to 1). (64 / (64 − margin))² the tiles.

Outputs are assembled in bands of one tile row (stride): a band is converted to 8 bits and
written out as soon as every tile touching it is done, so memory holds at most two float bands.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..scaling import MAX_TILE_OVERLAP as MAX_OVERLAP


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


def check_margin(margin: int) -> int:
    """`tile_overlap` as given, or ValueError outside 0 to `MAX_MARGIN`."""
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= MAX_OVERLAP:
        raise ValueError(f"tile_overlap must be a whole number of pixels from 0 to {MAX_OVERLAP}")
    return margin


@dataclass(frozen=True)
class TilePlan:
    """Where the `tile`-px tiles of a `height`×`width` image go, and their `scale`× outputs.
    `overlap`: fal's second, offset pass; `margin`: input pixels neighbouring tiles share."""

    height: int
    width: int
    tile: int
    scale: int
    overlap: bool
    margin: int = 0

    def __post_init__(self) -> None:
        check_margin(self.margin)
        if self.margin and self.overlap:
            raise ValueError("tile_overlap and overlapping_tiles are two remedies: choose one")

    @property
    def stride(self) -> int:
        return self.tile - self.margin

    @property
    def rows(self) -> int:
        return max(1, math.ceil((self.height - self.margin) / self.stride))

    @property
    def cols(self) -> int:
        return max(1, math.ceil((self.width - self.margin) / self.stride))

    @property
    def out_tile(self) -> int:
        return self.tile * self.scale

    @property
    def out_stride(self) -> int:
        return self.stride * self.scale

    @property
    def out_width(self) -> int:
        """Width of the padded output the tiles cover."""
        return ((self.cols - 1) * self.stride + self.tile) * self.scale

    @property
    def blended(self) -> bool:
        """Whether tiles overlap (and are blended): else each output pixel comes from one tile,
        which can be rounded to 8 bits on its own (on the device, say)."""
        return self.overlap or self.margin > 0

    def band_height(self, band: int) -> int:
        """A band is a stride of output rows; the last takes its tile row's whole height."""
        return self.out_tile if band == self.rows - 1 else self.out_stride

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
            below = self.margin and tile.row + 1 < self.rows  # its bottom margin
            return [tile.row, tile.row + 1] if below else [tile.row]
        return [b for b in (tile.row - 1, tile.row) if 0 <= b < self.rows]

    def origin(self, tile: Tile) -> tuple[int, int]:
        """The tile's top-left input pixel (in its pass's padded input)."""
        return tile.row * self.stride, tile.col * self.stride

    def window(self, tile: Tile) -> Tensor | None:
        """With a margin, the tile's (T, T) blend weights: a raised-cosine ramp over each side
        it shares with a neighbour, 1 elsewhere (image edges included)."""
        if not self.margin:
            return None
        ramp = _ramp(self.margin * self.scale)
        rows = _side_weights(self.out_tile, ramp, tile.row > 0, tile.row < self.rows - 1)
        cols = _side_weights(self.out_tile, ramp, tile.col > 0, tile.col < self.cols - 1)
        return rows[:, None] * cols[None, :]

    def inputs(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """The padded (C, H, W) inputs of pass 0 and, with overlap, pass 1."""
        _, h, w = image.shape
        padded_h = (self.rows - 1) * self.stride + self.tile
        padded_w = (self.cols - 1) * self.stride + self.tile
        first = pad_image(image, 0, padded_h - h, 0, padded_w - w)
        if not self.overlap:
            return first, None
        half = self.tile // 2
        return first, pad_image(first, half, half, half, half)


def _ramp(length: int) -> Tensor:
    """Rising weights over `length` pixels; with the same ramp reversed they sum to 1."""
    t = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def _side_weights(size: int, ramp: Tensor, before: bool, after: bool) -> Tensor:
    weights = torch.ones(size)
    n = len(ramp)
    if before:
        weights[:n] = ramp
    if after:
        weights[size - n :] = ramp.flip(0)
    return weights


class BandAssembler:
    """Blends upscaled tiles into float bands and hands each band out in 8 bits when done."""

    def __init__(self, plan: TilePlan, out: np.ndarray) -> None:
        self.plan = plan
        self.out = out  # (4h, 4w, C) uint8, the final image
        self.weights = blend_weights(plan.out_tile) if plan.overlap else None  # one for all
        self.pending = [0] * plan.rows
        for tile in plan.tiles():
            for b in plan.bands_of(tile):
                self.pending[b] += 1
        self.bands: dict[int, Tensor] = {}
        self.next_band = 0

    def add(self, tile: Tile, pixels: Tensor) -> None:
        """`pixels`: (C, T, T) float32 in [0, 1], the upscale of `tile`."""
        plan = self.plan
        if not plan.blended:  # one tile per pixel: no band to sum into
            self.add_rounded(tile, to_bytes(pixels.unsqueeze(0))[0])
            return
        t, step = plan.out_tile, plan.out_stride
        window = self.weights if self.weights is not None else plan.window(tile)
        if window is not None:
            pixels = pixels * window
        # Top-left of this tile in padded output coordinates (pass 1 sits half a tile up-left).
        y0 = tile.row * step - (t // 2) * tile.pass_
        x0 = tile.col * step - (t // 2) * tile.pass_
        width = plan.out_width
        xa, xb = max(x0, 0), min(x0 + t, width)
        for b in plan.bands_of(tile):
            top, height = b * step, plan.band_height(b)
            band = self.bands.get(b)
            if band is None:
                band = self.bands[b] = torch.zeros(pixels.shape[0], height, width)
            ya, yb = max(y0, top), min(y0 + t, top + height)
            band[:, ya - top : yb - top, xa:xb] += pixels[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
            self.pending[b] -= 1
        self._flush()

    def add_rounded(self, tile: Tile, pixels: Tensor) -> None:
        """`pixels`: (T, T, C) uint8, the upscale of `tile` already in 8 bits (`to_bytes`),
        written straight into the image; only where tiles do not overlap."""
        plan = self.plan
        if plan.blended:
            raise ValueError("overlapping tiles are blended in float: use add()")
        t = plan.out_tile
        y0, x0 = tile.row * t, tile.col * t
        out_h, out_w = self.out.shape[:2]
        self.out[y0 : y0 + t, x0 : x0 + t] = pixels[: out_h - y0, : out_w - x0].numpy()
        self.pending[tile.row] -= 1
        self._flush()

    def _flush(self) -> None:
        step = self.plan.out_stride
        out_h, out_w = self.out.shape[:2]
        while self.next_band < self.plan.rows and self.pending[self.next_band] == 0:
            b = self.next_band
            band = self.bands.pop(b, None)
            self.next_band += 1
            if band is None:  # its tiles were written as they came (`add_rounded`)
                continue
            top = b * step
            rows = max(0, min(self.plan.band_height(b), out_h - top))
            pixels = to_bytes(band[None, :, :rows, :out_w])[0]
            self.out[top : top + rows] = pixels.numpy()

    @property
    def done(self) -> bool:
        return self.next_band == self.plan.rows


def to_bytes(pixels: Tensor) -> Tensor:
    """(N, C, H, W) float in [0, 1] → (N, H, W, C) uint8, rounded to the nearest level (the
    reference truncates: a bias of half a level). The one conversion, on whichever device."""
    levels = pixels.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return levels.permute(0, 2, 3, 1).contiguous()

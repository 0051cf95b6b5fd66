"""`ImageTask`: one image on its way through the model's tile batches.

prepare (RGB to the network, alpha aside; the tile plan, padded inputs and an 8-bit assembler)
→ tiles → add each tile's output → finish (the RGB result, alpha Lanczos-resized back on).
`Upscaler.upscale_many` drives any number of them through shared batches; one image is the
case of one task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images
from ..model import AuraSRConfig
from .noise import ReferenceNoise
from .tiling import BandAssembler, Tile, TilePlan

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """`should_cancel()` returned true: the upscale stopped between two tile batches."""


@dataclass
class ImageTask:
    plan: TilePlan
    inputs: tuple[Tensor, Tensor | None]  # the padded input of each pass, (C, H, W) in [0, 1]
    out: np.ndarray
    assembler: BandAssembler
    tiles: list[Tile]
    tile_size: int
    alpha: Image.Image | None
    progress: ProgressFn | None
    should_cancel: CancelFn | None
    reference_noise: ReferenceNoise | None = None  # per_tile mode: this image's z draws
    done: int = 0
    error: BaseException | None = field(default=None)

    @classmethod
    def prepare(
        cls,
        image: Image.Image,
        config: AuraSRConfig,
        overlap: bool,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        reference_seed: int | None = None,
        margin: int = 0,
    ) -> ImageTask:
        """Split `image` (any mode) for the network; ValueError for an unusable one.
        `reference_seed`: draw a z per tile as the reference does (per_tile mode); `margin`:
        input pixels neighbouring tiles share (`tile_overlap`)."""
        image = images.normalize(image)
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        rgb = image.convert("RGB") if alpha is not None else image
        pixels = np.array(rgb)  # a writable copy: torch wants writable memory
        if pixels.ndim != 3 or pixels.shape[2] != config.channels:
            raise ValueError(f"expected an image with {config.channels} colour channels")
        h, w, c = pixels.shape
        if h < 1 or w < 1:
            raise ValueError("image is empty")
        size = config.input_image_size
        plan = TilePlan(h, w, size, config.scale, overlap, margin)
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
        out = np.empty((h * plan.scale, w * plan.scale, c), dtype=np.uint8)
        noise = None
        if reference_seed is not None:
            z_dim = config.style_network.dim_in
            noise = ReferenceNoise(reference_seed, z_dim, c, size, plan)
        return cls(
            plan=plan,
            inputs=plan.inputs(tensor),
            out=out,
            assembler=BandAssembler(plan, out),
            tiles=list(plan.tiles()),
            tile_size=size,
            alpha=alpha,
            progress=progress,
            should_cancel=should_cancel,
            reference_noise=noise,
        )

    def cancelled(self) -> bool:
        """Poll the cancel check (a check that raises ends this image only); True when the
        image has ended, by cancel or error."""
        if self.error is None and self.should_cancel is not None:
            try:
                if self.should_cancel():
                    self.error = Cancelled()
            except Exception as exc:
                self.error = exc
        return self.error is not None

    def report(self) -> None:
        if self.error is None and self.progress is not None:
            try:
                self.progress(self.done, len(self.tiles))
            except Exception as exc:
                self.error = exc

    def cut(self, tile: Tile) -> Tensor:
        """The tile's input pixels, (C, size, size)."""
        source = self.inputs[tile.pass_]
        assert source is not None
        y, x = self.plan.origin(tile)
        return source[:, y : y + self.tile_size, x : x + self.tile_size]

    def add(self, tile: Tile, pixels: Tensor) -> None:
        """The tile's upscale: (C, T, T) float in [0, 1], or (T, T, C) uint8 already rounded
        (`tiling.to_bytes`, where the image's tiles do not overlap)."""
        if pixels.dtype == torch.uint8:
            self.assembler.add_rounded(tile, pixels)
        else:
            self.assembler.add(tile, pixels)
        self.done += 1

    def finish(self, as_array: bool = False) -> Image.Image | np.ndarray:
        """The upscale: a PIL image, or with `as_array` its (H, W, 3 or 4) uint8 pixels (no
        copy into PIL's own layout, none back out for an encoder: ~0.15 s per 4096² RGB)."""
        assert self.assembler.done
        alpha = None
        if self.alpha is not None:
            # Alpha is not what the model was trained on, and running it through the network
            # would double the cost; Lanczos keeps edges sharp at a negligible cost.
            size = (self.out.shape[1], self.out.shape[0])
            alpha = self.alpha.resize(size, Image.Resampling.LANCZOS)
        if as_array:
            return self.out if alpha is None else np.dstack([self.out, np.asarray(alpha)])
        result = Image.fromarray(self.out, "RGB")
        if alpha is not None:
            result.putalpha(alpha)
        return result

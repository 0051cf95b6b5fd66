"""`upscale_many`: several images of one style through shared model batches.

Images upscaled with the same seed run the same folded network, so their tiles can share a
forward: a GPU stays busy under many small requests instead of running half-empty batches.
Tiles are taken image after image (not round-robin): batches fill the same way, and each
image finishes as early as it would in a queue, not all of them at the end. Every image keeps
its own plan, noise draws and assembler, so its bytes are those of `Upscaler.upscale` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images
from ..schemas import DEFAULT_SEED
from .noise import SharedNoise
from .tiling import BandAssembler, Tile, TilePlan
from .upscaler import MAX_SEED, CancelFn, Cancelled, ProgressFn, Upscaler

Outcome = Image.Image | Exception


@dataclass
class _Item:
    """One image's state while its tiles go through the shared batches."""

    index: int
    plan: TilePlan
    inputs: tuple[Tensor, Tensor | None]
    out: np.ndarray
    assembler: BandAssembler
    tiles: list[Tile]
    alpha: Image.Image | None
    progress: ProgressFn | None
    should_cancel: CancelFn | None
    done: int = 0
    error: Exception | None = field(default=None)


def _per_image(value: object, n: int, name: str) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != n:
            raise ValueError(f"{name}: expected {n} values, got {len(value)}")
        return list(value)
    return [value] * n


@torch.inference_mode()
def upscale_many(
    upscaler: Upscaler,
    images_in: Sequence[Image.Image],
    seed: int | None = None,
    overlapping_tiles: bool | Sequence[bool] = False,
    progress: Sequence[ProgressFn | None] | None = None,
    should_cancel: Sequence[CancelFn | None] | None = None,
) -> list[Outcome]:
    """Each image's 4× upscale (as `upscaler.upscale(image, overlap, seed)` would give it), or
    the exception that ended it: `Cancelled` when its `should_cancel()` said so (polled before
    each batch holding its tiles), ValueError for an unusable image. One image's failure never
    stops the others; an error inside a shared forward fails the images in that batch.
    `overlapping_tiles`, `progress` and `should_cancel` are one value or one per image."""
    seed = DEFAULT_SEED if seed is None else seed
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}]")
    n = len(images_in)
    overlaps = _per_image(overlapping_tiles, n, "overlapping_tiles")
    progresses = _per_image(progress, n, "progress") if progress is not None else [None] * n
    cancels = (
        _per_image(should_cancel, n, "should_cancel") if should_cancel is not None else [None] * n
    )
    outcomes: list[Outcome | None] = [None] * n
    items: list[_Item] = []
    for i, image in enumerate(images_in):
        try:
            items.append(_prepare(upscaler, i, image, bool(overlaps[i]), progresses[i], cancels[i]))
        except Exception as exc:  # this image only: the others still run
            outcomes[i] = exc

    live = [it for it in items if not _cancelled(it)]
    if live:
        tile = upscaler.config.input_image_size
        config = upscaler.config
        noise = SharedNoise(seed, config.style_network.dim_in, config.channels, tile)
        net = upscaler.folded(seed)
        for it in live:
            _report(it)
        queue = [(it, t) for it in live for t in it.tiles]
        pos = 0
        while pos < len(queue):
            batch: list[tuple[_Item, Tile]] = []
            while pos < len(queue) and len(batch) < upscaler.batch_size:
                it, t = queue[pos]
                pos += 1
                if it.error is None:
                    batch.append((it, t))
            # Poll each image once per batch (a poll may cost a database read).
            members = list({id(it): it for it, _ in batch}.values())
            for it in members:
                _cancelled(it)
            batch = [(it, t) for it, t in batch if it.error is None]
            if not batch:
                continue
            x = torch.stack([_cut(it.inputs, t, tile) + noise.input_noise(t) for it, t in batch])
            try:
                result = upscaler._forward(net, x.clamp_(0, 1), None)
            except Exception as exc:  # cannot tell whose tile broke it: fail the batch's images
                for it in members:
                    it.error = it.error or exc
                continue
            for (it, t), pixels in zip(batch, result, strict=True):
                it.assembler.add(t, pixels)
                it.done += 1
            for it in members:
                _report(it)

    for it in items:
        outcomes[it.index] = it.error if it.error is not None else _finish(it)
    return [o if o is not None else RuntimeError("not run") for o in outcomes]


def _prepare(
    upscaler: Upscaler,
    index: int,
    image: Image.Image,
    overlap: bool,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
) -> _Item:
    """Split an image as `Upscaler.upscale` does: RGB through the network, alpha aside."""
    image = images.normalize(image)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = image.convert("RGB") if alpha is not None else image
    pixels = np.array(rgb)  # a writable copy: torch wants writable memory
    h, w, c = pixels.shape
    if h < 1 or w < 1:
        raise ValueError("image is empty")
    config = upscaler.config
    plan = TilePlan(h, w, config.input_image_size, config.scale, overlap)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
    out = np.empty((h * plan.scale, w * plan.scale, c), dtype=np.uint8)
    return _Item(
        index=index,
        plan=plan,
        inputs=plan.inputs(tensor),
        out=out,
        assembler=BandAssembler(plan, out),
        tiles=list(plan.tiles()),
        alpha=alpha,
        progress=progress,
        should_cancel=should_cancel,
    )


def _cancelled(it: _Item) -> bool:
    """Poll the image's cancel check; a check that raises ends that image only."""
    if it.error is None and it.should_cancel is not None:
        try:
            if it.should_cancel():
                it.error = Cancelled()
        except Exception as exc:
            it.error = exc
    return it.error is not None


def _report(it: _Item) -> None:
    if it.error is None and it.progress is not None:
        try:
            it.progress(it.done, len(it.tiles))
        except Exception as exc:
            it.error = exc


def _finish(it: _Item) -> Image.Image:
    assert it.assembler.done
    result = Image.fromarray(it.out, "RGB")
    if it.alpha is not None:  # as `Upscaler.upscale` does: Lanczos, not the network
        result.putalpha(it.alpha.resize(result.size, Image.Resampling.LANCZOS))
    return result


def _cut(inputs: tuple[Tensor, Tensor | None], tile: Tile, size: int) -> Tensor:
    source = inputs[tile.pass_]
    assert source is not None
    y, x = tile.row * size, tile.col * size
    return source[:, y : y + size, x : x + size]

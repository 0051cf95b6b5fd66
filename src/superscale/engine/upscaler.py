"""`Upscaler`: a PIL image in, its 4× upscale out."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import images
from ..model import (
    AuraSR,
    CheckpointFiles,
    CheckpointReader,
    fold_network,
    load_model,
    resolve_checkpoint,
)
from ..schemas import DEFAULT_SEED
from . import prepack as prepacking
from .devices import default_batch_size, default_channels_last, resolve_device, resolve_dtype
from .noise import ReferenceNoise, SharedNoise, shared_z
from .tiling import BandAssembler, Tile, TilePlan

NoiseMode = Literal["shared", "per_tile"]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
MAX_SEED = 2**64 - 1


class Cancelled(Exception):
    """`should_cancel()` returned true: the upscale stopped between two tile batches."""


class Upscaler:
    """Runs AuraSR over whole images: tiling, blending, style folding, precision and device."""

    def __init__(
        self,
        source: AuraSR | CheckpointFiles,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        batch_size: int | None = None,
        fold_cache_size: int = 2,
        channels_last: bool | None = None,
        prepack: bool | None = None,
        winograd: bool | None = None,
    ) -> None:
        """`source`: a loaded network, or checkpoint files (their shapes are checked now;
        tensors are read when weights are folded, one at a time, and not kept).
        `prepack` (default: on CPUs with oneDNN): see `superscale.engine.prepack`.
        `winograd` (default: with prepacking in fp32): see `superscale.engine.winograd`.
        `fold_cache_size` folded networks stay cached (each ~0.8 GB fp32, ~0.4 GB bf16 at the
        released config), the least recently used dropped first."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._model: AuraSR | None = None
        self._reader: CheckpointReader | None = None
        if isinstance(source, AuraSR):
            if source.folded:
                raise ValueError("Upscaler needs the adaptive network, not a folded one")
            self._model = source.to(self.device).eval().requires_grad_(False)
            self.config = source.config
        else:
            self._reader = CheckpointReader(source)
            self.config = self._reader.config
        self.batch_size = batch_size or default_batch_size(self.device)
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.fold_cache_size = max(1, fold_cache_size)
        self.prepack = (
            self.device.type == "cpu" and prepacking.available() if prepack is None else prepack
        )
        self.winograd = (
            self.prepack and self.dtype == torch.float32 if winograd is None else winograd
        )
        # Winograd layers take NHWC (channels_last) memory; oneDNN's take either.
        self.channels_last = (
            default_channels_last(self.device, self.dtype) or self.winograd
            if channels_last is None
            else channels_last
        )
        self._folded: OrderedDict[int, AuraSR] = OrderedDict()
        self._fold_lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path = "v2",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        model_dir: str | Path | None = None,
        batch_size: int | None = None,
        fold_cache_size: int = 2,
        channels_last: bool | None = None,
        prepack: bool | None = None,
        winograd: bool | None = None,
    ) -> Upscaler:
        """`v1`, `v2` or a local checkpoint (see `superscale.model.resolve_checkpoint`)."""
        return cls(
            resolve_checkpoint(checkpoint, model_dir),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            fold_cache_size=fold_cache_size,
            channels_last=channels_last,
            prepack=prepack,
            winograd=winograd,
        )

    # Folding -------------------------------------------------------------------------------

    def folded(self, seed: int) -> AuraSR:
        """The plain CNN for `seed`'s shared style, from a small LRU cache."""
        with self._fold_lock:
            net = self._folded.get(seed)
            if net is not None:
                self._folded.move_to_end(seed)
                return net
            z = shared_z(seed, self.config.style_network.dim_in)
            if self._model is not None:
                net = self._model.fold(z, self.dtype)
            else:
                assert self._reader is not None
                net = fold_network(self.config, z, self._reader.get, self.dtype, self.device)
            if self.prepack:  # prepacked weights have oneDNN's own layout: no channels_last copy
                net = prepacking.prepack(net, self._example_batch(), self.winograd)
            if self.channels_last and not prepacking.is_packed(net):
                net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self._folded[seed] = net
            while len(self._folded) > self.fold_cache_size:
                self._folded.popitem(last=False)
            return net

    def _example_batch(self) -> Tensor:
        c, t = self.config.channels, self.config.input_image_size
        x = torch.zeros(self.batch_size, c, t, t, device=self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def warm_up(self, seed: int | None = None) -> None:
        """Fold the weights for `seed` (default: the default seed) ahead of the first request."""
        self.folded(DEFAULT_SEED if seed is None else seed)

    def adaptive_model(self) -> AuraSR:
        """The adaptive network (per_tile mode). Loaded from the checkpoint for each call when
        the Upscaler was built from files, so its 2.4 GB do not stay resident."""
        if self._model is not None:
            return self._model
        assert self._reader is not None
        return load_model(self._reader.files, device=self.device)

    # Upscaling -----------------------------------------------------------------------------

    @torch.inference_mode()
    def upscale(
        self,
        image: Image.Image,
        overlapping_tiles: bool = False,
        seed: int | None = None,
        noise: NoiseMode = "shared",
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> Image.Image:
        """`image` (any mode) → its 4× upscale, RGB or RGBA (alpha: Lanczos-resampled).

        `seed` (None: `schemas.DEFAULT_SEED`) fixes the style noise: on one device, dtype and
        batch size, the same seed gives the same bytes. `noise="shared"` folds one z into the
        weights (cached per seed); `"per_tile"` draws a z per tile as the reference does and
        runs the adaptive network in fp32 (slow: a compatibility mode). `progress(done,
        total)` counts tiles; `should_cancel()` is polled between batches and raises
        `Cancelled`. Bad arguments raise ValueError.
        """
        seed = DEFAULT_SEED if seed is None else seed
        if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}]")
        if noise not in ("shared", "per_tile"):
            raise ValueError(f"noise must be 'shared' or 'per_tile', not {noise!r}")
        image = images.normalize(image)
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        rgb = image.convert("RGB") if alpha is not None else image
        out = self.upscale_array(
            np.asarray(rgb), overlapping_tiles, seed, noise, progress, should_cancel
        )
        result = Image.fromarray(out, "RGB")
        if alpha is not None:
            # Alpha is not what the model was trained on, and running it through the network
            # would double the cost; Lanczos keeps edges sharp at a negligible cost.
            result.putalpha(alpha.resize(result.size, Image.Resampling.LANCZOS))
        return result

    @torch.inference_mode()
    def upscale_array(
        self,
        pixels: np.ndarray,
        overlapping_tiles: bool = False,
        seed: int = DEFAULT_SEED,
        noise: NoiseMode = "shared",
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> np.ndarray:
        """(H, W, 3) uint8 → (4H, 4W, 3) uint8."""
        if pixels.ndim != 3 or pixels.shape[2] != self.config.channels or pixels.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, {self.config.channels}) uint8 array")
        h, w, c = pixels.shape
        if h < 1 or w < 1:
            raise ValueError("image is empty")
        tile = self.config.input_image_size
        plan = TilePlan(h, w, tile, self.config.scale, overlapping_tiles)
        if not pixels.flags.writeable:  # PIL's arrays are read-only; torch wants writable memory
            pixels = pixels.copy()
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
        inputs = plan.inputs(image)
        out = np.empty((h * plan.scale, w * plan.scale, c), dtype=np.uint8)
        assembler = BandAssembler(plan, out)
        z_dim = self.config.style_network.dim_in

        if should_cancel is not None and should_cancel():  # before folding: it takes seconds
            raise Cancelled()
        run: Callable[[list[Tile]], Tensor]
        if noise == "shared":
            shared = SharedNoise(seed, z_dim, c, tile)
            net = self.folded(seed)

            def run(batch: list[Tile]) -> Tensor:
                x = torch.stack([_cut(inputs, t, tile) + shared.input_noise(t) for t in batch])
                return self._forward(net, x.clamp_(0, 1), None)
        else:
            ref = ReferenceNoise(seed, z_dim, c, tile, plan)
            adaptive = self.adaptive_model()

            def run(batch: list[Tile]) -> Tensor:
                draws = [ref.draw(t) for t in batch]
                x = torch.stack(
                    [_cut(inputs, t, tile) + n for t, (_, n) in zip(batch, draws, strict=True)]
                )
                z = torch.stack([zi for zi, _ in draws])
                return self._forward(adaptive, x.clamp_(0, 1), z)

        tiles = list(plan.tiles())
        total = len(tiles)
        if progress:
            progress(0, total)
        for start in range(0, total, self.batch_size):
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            batch = tiles[start : start + self.batch_size]
            result = run(batch)
            for t, pixels_out in zip(batch, result, strict=True):
                assembler.add(t, pixels_out)
            if progress:
                progress(start + len(batch), total)
        assert assembler.done
        return out

    def _forward(self, net: AuraSR, x: Tensor, z: Tensor | None) -> Tensor:
        """One batch of tiles through `net`: float32 [0, 1] in and out, on the CPU."""
        if z is None:  # folded: its body runs in the compute dtype, its ends in fp32
            x = x.to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = net(x)
        else:  # adaptive (per-tile styles): runs in the stored weights' dtype
            weights = net.init_conv.weight
            y = net(x.to(weights.device, weights.dtype), z.to(weights.device, weights.dtype))
        return y.float().clamp_(0, 1).cpu()


def _cut(inputs: tuple[Tensor, Tensor | None], tile: Tile, size: int) -> Tensor:
    source = inputs[tile.pass_]
    assert source is not None
    y, x = tile.row * size, tile.col * size
    return source[:, y : y + size, x : x + size]

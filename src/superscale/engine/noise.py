"""The two random inputs of every tile: style noise z and the input augmentation noise.

- `SharedNoise` (default): one z for the whole image, from the seed; each tile's input noise
  from its own generator keyed by (seed, pass, tile), so the draws depend on the seed only —
  not on batch size, device or thread timing.
- `ReferenceNoise` (`per_tile`): a z per tile, drawn exactly as the reference's tiled
  upscalers draw them from a generator seeded with `seed`: per batch of 8 tiles (its default
  batch) in raster order, first z (b, 128), then the input noise (b, 3, 64, 64), then another
  (b, 128) that the reference's forward draws and never uses; pass 0, then pass 1. Fed the
  same seed via `torch.manual_seed`, the reference draws the same numbers, whatever batch
  size our engine runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..model import INPUT_NOISE_SCALE
from .tiling import Tile, TilePlan

REFERENCE_BATCH = 8  # the reference's max_batch_size default: its draws come in batches of 8


def shared_z(seed: int, dim: int) -> Tensor:
    """The style noise every tile of an image shares for `seed`: (1, dim)."""
    return torch.randn(1, dim, generator=torch.Generator().manual_seed(seed))


class SharedNoise:
    def __init__(self, seed: int, z_dim: int, channels: int, tile: int) -> None:
        self.seed, self.z_dim, self.shape = seed, z_dim, (channels, tile, tile)
        self.z = shared_z(seed, z_dim)

    def input_noise(self, tile: Tile) -> Tensor:
        rng = np.random.default_rng([self.seed, tile.pass_, tile.row, tile.col])
        return (
            torch.from_numpy(rng.standard_normal(self.shape, dtype=np.float32)) * INPUT_NOISE_SCALE
        )


class ReferenceNoise:
    def __init__(
        self,
        seed: int,
        z_dim: int,
        channels: int,
        tile: int,
        plan: TilePlan,
        batch_size: int = REFERENCE_BATCH,
    ) -> None:
        self.z_dim, self.shape, self.batch_size = z_dim, (channels, tile, tile), batch_size
        # Generator state at the start of each (pass, batch): the draws are replayed on demand,
        # so nothing per tile is kept for the whole image.
        gen = torch.Generator().manual_seed(seed)
        self.states: dict[tuple[int, int], Tensor] = {}
        for pass_ in range(2 if plan.overlap else 1):
            rows, cols = plan.pass_grid(pass_)
            n = rows * cols
            for b in range((n + batch_size - 1) // batch_size):
                self.states[(pass_, b)] = gen.get_state()
                size = min(batch_size, n - b * batch_size)
                torch.randn(size, z_dim, generator=gen)
                torch.randn(size, *self.shape, generator=gen)
                torch.randn(size, z_dim, generator=gen)  # the reference's unused draw
        self.sizes = {
            (p, b): min(batch_size, plan.pass_grid(p)[0] * plan.pass_grid(p)[1] - b * batch_size)
            for p, b in self.states
        }
        self._cache: dict[int, tuple[int, Tensor, Tensor]] = {}  # the current batch per pass

    def _batch(self, pass_: int, batch: int) -> tuple[Tensor, Tensor]:
        cached = self._cache.get(pass_)
        if cached is None or cached[0] != batch:
            key = (pass_, batch)
            gen = torch.Generator()
            gen.set_state(self.states[key])
            z = torch.randn(self.sizes[key], self.z_dim, generator=gen)
            noise = torch.randn(self.sizes[key], *self.shape, generator=gen) * INPUT_NOISE_SCALE
            cached = self._cache[pass_] = (batch, z, noise)
        return cached[1], cached[2]

    def draw(self, tile: Tile) -> tuple[Tensor, Tensor]:
        """(z (dim,), input noise (C, T, T)) of one tile."""
        b, i = divmod(tile.index, self.batch_size)
        z, noise = self._batch(tile.pass_, b)
        return z[i], noise[i]

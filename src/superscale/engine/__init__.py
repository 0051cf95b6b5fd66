"""The engine: an image in, its 4× AuraSR upscale out (see `Upscaler`).

`task`: one image's way through the tile batches; `tiling`: padding, tile order, two-pass
blending, band-wise 8-bit assembly; `noise`: the seeded style and input noise of each tile;
`devices`: device, dtype and batch choice.
"""

from .devices import default_batch_size, resolve_device, resolve_dtype
from .options import EngineOptions
from .task import Cancelled
from .upscaler import NoiseMode, Upscaler

__all__ = [
    "Cancelled",
    "EngineOptions",
    "NoiseMode",
    "Upscaler",
    "default_batch_size",
    "resolve_device",
    "resolve_dtype",
]

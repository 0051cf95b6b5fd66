"""The engine: an image in, its 4× AuraSR upscale out (see `Upscaler`)."""

from .devices import default_batch_size, resolve_device, resolve_dtype
from .upscaler import Cancelled, NoiseMode, Upscaler

__all__ = [
    "Cancelled",
    "NoiseMode",
    "Upscaler",
    "default_batch_size",
    "resolve_device",
    "resolve_dtype",
]

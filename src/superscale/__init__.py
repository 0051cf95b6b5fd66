"""superscale: self-hostable 4x upscaling with fal's AuraSR, speaking fal's model-API protocol."""

__version__ = "0.1.0"

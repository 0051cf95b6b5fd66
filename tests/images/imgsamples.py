"""Images for the images tests, built in memory: noise, an sRGB profile, and by hand (PNG chunks)
what Pillow cannot write (16-bit RGB). `tests/pngs.py` has the helpers every test folder uses."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, ImageCms

from pngs import png_chunk


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one) from an H×W×3 uint16 array."""
    height, width, _ = arr.shape
    rows = arr.astype(">u2").reshape(height, width * 6 // 2).view(np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on each row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr, mode)

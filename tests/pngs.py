"""Images and image bytes for tests, built in memory: random pixels, encoded by Pillow, or PNG
chunks by hand where Pillow cannot write the kind (a header that claims an absurd size)."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def noise_image(h: int, w: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """An RGB or RGBA image of uniform random pixels (the hardest case for seams and codecs)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode)


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """`image` saved as `fmt` (Pillow's format name) with Pillow's save parameters."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    """`data` as a base64 `data:` URI, as clients send inline images."""
    return f"data:{content_type};base64," + base64.b64encode(data).decode()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming `width`×`height` RGB with one tiny IDAT: only a header check refuses it
    as too large; anything that tried to decode it would fail on missing data instead."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )

"""PNGs written in strips by threads (`superscale.png_strips`): decoders read back exactly the
pixels given, for shapes that stress the strip split; the zlib stream (its Adler-32 included)
is checked by zlib itself; `images.encode` takes this path on many-core hosts."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from superscale import images, png_strips


def _idat_stream(png: bytes) -> bytes:
    """The concatenated IDAT payloads, each chunk's CRC checked."""
    pos, stream = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        if kind == b"IDAT":
            stream += data
        pos += 12 + length
    return stream


@pytest.mark.parametrize(
    ("height", "width", "channels", "threads"),
    [(1, 1, 3, 4), (3, 5, 4, 8), (37, 101, 3, 2), (300, 257, 3, 3), (64, 64, 4, 1)],
)
def test_round_trip(height: int, width: int, channels: int, threads: int) -> None:
    rng = np.random.default_rng(height * width)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    pixels[: height // 2] //= 7  # some smooth rows among the noise
    png = png_strips.encode(pixels, threads)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == ("RGB" if channels == 3 else "RGBA")
    assert np.array_equal(np.asarray(decoded), pixels)
    # zlib checks the stream's own Adler-32 (the strips' checksums combined).
    raw = zlib.decompress(_idat_stream(png))
    assert len(raw) == height * (1 + width * channels)


def test_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="uint8"):
        png_strips.encode(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        png_strips.encode(np.zeros((4, 4), np.uint8))


def test_images_encode_writes_strips_on_many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the threshold at this machine's CPUs, a large image goes through strips (with its
    ICC profile kept); a small one through the single-thread writer."""
    monkeypatch.setattr(png_strips, "MIN_CPUS", 1)
    rng = np.random.default_rng(1)
    big = Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    icc = b"\x00" * 128  # opaque bytes: the chunk carries them as given
    data = images.encode(big, "png", icc_profile=icc)
    assert data.count(b"IDAT") > 2  # one per strip
    decoded = Image.open(io.BytesIO(data))
    assert decoded.info.get("icc_profile") == icc
    assert np.array_equal(np.asarray(decoded), np.asarray(big))
    small = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert images.encode(small, "png").count(b"IDAT") == 1
    assert "strips" in images.png_encoder_name()

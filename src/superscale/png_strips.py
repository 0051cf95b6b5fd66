"""A PNG written in strips by several threads, for hosts with many cores.

Each strip of rows is filtered (PNG's Sub filter, with NumPy) and deflated (zlib level 1) on
its own thread, ending on a full flush so the strips' streams join into one; each becomes its
own IDAT chunk, and the Adler-32 of the whole comes from the strips' checksums combined. NumPy
and zlib release the GIL, so the work spreads over the cores and the process's other threads
keep running — where fpng (faster on one core) holds the GIL for its whole encode: ~0.15 s
per 4096² output, during which a GPU worker's inference thread could not feed the GPU.
"""

from __future__ import annotations

import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .cpus import usable_cpus

# From this many usable CPUs, and this many pixels, `images.encode` writes PNGs in strips.
# One thread deflates a 4096² output in 0.76 s against fpng's 0.15 s, two in 0.375 s
# (benchmarks/png_encode.py, 2-core Zen 5): at that scaling strips pass fpng from ~5 threads;
# 8 leaves a margin for the GPU worker's own threads.
MIN_CPUS = 8
MIN_PIXELS = 1 << 20
_ADLER_BASE = 65521

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def worth_it(width: int, height: int) -> bool:
    """Whether strips beat one thread here for an image this size."""
    return width * height >= MIN_PIXELS and usable_cpus() >= MIN_CPUS


def encode(pixels: np.ndarray, threads: int | None = None) -> bytes:
    """`pixels`: (H, W, 3 or 4) uint8 → PNG bytes (RGB or RGBA, 8 bits)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError("expected (height, width, 3 or 4) uint8 pixels")
    height, width, channels = pixels.shape
    threads = threads or usable_cpus()
    count = max(1, min(height, 2 * threads))  # more strips than threads: even finishing
    bounds = np.linspace(0, height, count + 1).astype(int)
    last = count - 1
    jobs = [(pixels[bounds[i] : bounds[i + 1]], i == last) for i in range(count)]
    parts = list(_executor(threads).map(lambda job: _strip(*job), jobs))
    adler = 1
    for _, strip_adler, length in parts:
        adler = _adler_combine(adler, strip_adler, length)
    colour_type = 2 if channels == 3 else 6
    chunks = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
        _chunk(b"IDAT", b"\x78\x01" + parts[0][0]),  # zlib header: deflate, fastest
        *(_chunk(b"IDAT", body) for body, _, _ in parts[1:]),
        _chunk(b"IDAT", struct.pack(">I", adler)),
        _chunk(b"IEND", b""),
    ]
    return b"".join(chunks)


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="png")
        return _pool


def _strip(rows: np.ndarray, last: bool) -> tuple[bytes, int, int]:
    """One strip's filtered rows, deflated: (raw deflate, their Adler-32, their length)."""
    height, width, channels = rows.shape
    flat = rows.reshape(height, width * channels)
    filtered = np.empty((height, 1 + width * channels), np.uint8)
    filtered[:, 0] = 1  # Sub: each byte minus the one a pixel to its left
    filtered[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=filtered[:, 1 + channels :])
    raw = filtered.reshape(-1).data
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    body = deflate.compress(raw) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)
    return body, zlib.adler32(raw), len(raw)


def _adler_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte runs joined, from each one's (zlib's adler32_combine)."""
    rem = second_length % _ADLER_BASE
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 + _ADLER_BASE - 1) % _ADLER_BASE
    b = (rem * a1 + b1 + b2 + _ADLER_BASE - rem) % _ADLER_BASE
    return (b << 16) | a


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

"""PNG encoders on a realistic 4× output: which one `superscale.images.encode` should use.

The test image is what the service writes: a 4096×4096 RGB photo-like picture (a small random
image upscaled smoothly, plus sensor-like noise and some hard edges), not a flat or pure-noise
image that would flatter or punish every encoder alike. Each encoder's output is decoded again
and compared to the input, so a lossy or broken encoder cannot win.

    .venv/bin/python benchmarks/png_encode.py [--size 4096] [--repeat 3]

Optional encoders (fpng, imagecodecs, pyspng-seunglab) are measured when installed.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw


def photo_like(size: int, seed: int = 0) -> Image.Image:
    """A smooth picture with texture and edges, like an upscaled photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 64, size // 64, 3), dtype=np.uint8)
    base = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(40):  # hard-edged shapes, as objects in a photo
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(size // 32, size // 6, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
    noise = rng.normal(0.0, 3.0, (size, size, 3))
    arr = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def pillow(level: int) -> Callable[[Image.Image], bytes]:
    def encode(image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    return encode


def encoders() -> dict[str, Callable[[Image.Image], bytes]]:
    found: dict[str, Callable[[Image.Image], bytes]] = {
        f"pillow level {level}": pillow(level) for level in (0, 1, 2, 3, 6)
    }
    try:
        import fpng

        found["fpng"] = lambda im: fpng.from_ndarray(np.asarray(im))
    except ImportError:
        pass
    try:
        import imagecodecs

        found["imagecodecs png level 1"] = lambda im: imagecodecs.png_encode(
            np.asarray(im), level=1
        )
        found["imagecodecs png level 1 rle sub"] = lambda im: imagecodecs.png_encode(
            np.asarray(im), level=1, strategy=3, filter=16
        )
        found["imagecodecs spng level 1"] = lambda im: imagecodecs.spng_encode(
            np.asarray(im), level=1
        )
    except ImportError:
        pass
    try:
        import pyspng

        found["pyspng level 1"] = lambda im: pyspng.encode(np.asarray(im), compress_level=1)
    except ImportError:
        pass
    try:
        from superscale import png_strips
        from superscale.cpus import usable_cpus

        for threads in sorted({1, 2, usable_cpus()}):
            found[f"superscale strips, {threads} thread(s)"] = lambda im, n=threads: (
                png_strips.encode(np.asarray(im), n)
            )
    except ImportError:
        pass
    try:
        from superscale import images

        found[f"superscale.images.encode ({images.png_encoder_name()})"] = images.encode
    except ImportError:
        pass
    return found


def lossy_encoders() -> dict[str, Callable[[Image.Image], bytes]]:
    """The other output formats, for scale (no exact round trip to check)."""
    try:
        from superscale import images
    except ImportError:
        return {}
    return {
        f"superscale jpeg (quality {images.JPEG_QUALITY})": lambda im: images.encode(im, "jpeg"),
        f"superscale webp (quality {images.WEBP_QUALITY})": lambda im: images.encode(im, "webp"),
    }


def timed(encode: Callable[[Image.Image], bytes], image: Image.Image, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        encode(image)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    image = photo_like(args.size)
    raw_mb = args.size * args.size * 3 / 1e6
    expected = np.asarray(image)
    print(
        f"image: {args.size}x{args.size} RGB photo-like, {raw_mb:.1f} MB raw; best of {args.repeat}"
    )
    print(f"{'encoder':<44} {'seconds':>8} {'MB':>7} {'ratio':>6} {'MB/s raw':>9}")
    for name, encode in encoders().items():
        try:
            data = encode(image)
        except Exception as exc:  # an optional encoder that fails is reported, not fatal
            print(f"{name:<44} failed: {exc}")
            continue
        with Image.open(io.BytesIO(data)) as decoded:
            if not np.array_equal(np.asarray(decoded.convert("RGB")), expected):
                print(f"{name:<44} WRONG: decoded pixels differ")
                continue
        best = timed(encode, image, args.repeat)
        size_mb = len(data) / 1e6
        row(name, best, size_mb, raw_mb)
    for name, encode in lossy_encoders().items():
        size_mb = len(encode(image)) / 1e6
        row(name, timed(encode, image, args.repeat), size_mb, raw_mb)


def row(name: str, seconds: float, size_mb: float, raw_mb: float) -> None:
    print(
        f"{name:<44} {seconds:8.3f} {size_mb:7.1f} {size_mb / raw_mb:6.2f} {raw_mb / seconds:9.0f}"
    )


if __name__ == "__main__":
    main()

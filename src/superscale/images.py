"""Image bytes in and out: decode what users send into RGB/RGBA 8-bit, encode outputs fast.

`decode` refuses what it cannot handle with an `ImageError` (a `ValueError`) whose message can
be shown to the user as is: non-images, truncated files, decompression bombs (checked from the
header, before any pixel is decoded), zero-size images. It applies the EXIF orientation, keeps
the ICC profile of RGB-family images and takes the first frame of animations.

`encode` writes PNG through fpng where it is installed (about 10× faster than zlib at the same
size, see `benchmarks/png_encode.py`), Pillow at compression level 1 otherwise, and large
images in strips on many threads where there are many cores (`png_strips`); JPEG flattens
alpha onto white; WebP keeps alpha.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

from . import png_strips
from .cpus import usable_cpus

try:  # Optional fast PNG writer; Pillow's zlib does the job (slower) without it.
    import fpng as _fpng
except ImportError:  # pragma: no cover - depends on the installation
    _fpng = None

DEFAULT_MAX_PIXELS = 4096 * 4096  # the default of Settings.max_input_pixels

# Formats decoded. A list, not Pillow's every plugin: those without a magic number (TGA) would
# "recognise" random bytes, and some (EPS) shell out to other programs.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF", "JPEG2000")

OUTPUT_FORMATS = ("png", "jpeg", "webp")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_ALIASES = {"jpg": "jpeg"}

PNG_FALLBACK_LEVEL = 1  # zlib level without fpng: level 6 takes ~3× as long for 13% less
JPEG_QUALITY = 95
WEBP_QUALITY = 90
# Largest side each format can hold (limits of the formats themselves).
MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65535, "webp": 16383}
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """The input is not an image this service can process; the message says why."""


class ImageTooLarge(ImageError):
    """Over the pixel limit (or Pillow's bomb guard), or too big for the output format."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded input: `image` is RGB or RGBA 8-bit, upright."""

    image: Image.Image
    icc_profile: bytes | None  # an RGB profile the pixels are in; None means sRGB
    format: str  # Pillow's name of the input's format, e.g. "PNG"


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes into an upright RGB or RGBA 8-bit image, or raise `ImageError`."""
    if not data:
        raise ImageError("empty input: no image bytes were received")
    Image.init()
    formats = [name for name in INPUT_FORMATS if name in Image.OPEN]
    try:
        im = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:  # Pillow's own cap, above ours by default
        raise ImageTooLarge(f"image too large: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(_unidentified_message(data, formats)) from None
    except Exception as exc:  # any parser failure on untrusted bytes is the input's fault
        raise ImageError(f"cannot read the image header: {exc}") from None

    # Not `with im`: closing would free the pixels of an image returned as is.
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image too large: {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,}"
        )
    fmt = im.format or "unknown"
    try:
        im.load()  # the whole first frame: a truncated file fails here, not later
    except Exception as exc:
        raise ImageError(f"cannot decode the {fmt} image (damaged or truncated): {exc}") from None
    icc = im.info.get("icc_profile") or None
    image, icc = _normalize(_upright(im), icc)
    return DecodedImage(image=image, icc_profile=icc, format=fmt)


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _unidentified_message(data: bytes, formats: list[str]) -> str:
    """Tell a damaged file of a known format apart from bytes that are no image at all."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            return f"image has zero size ({width}x{height})"
    kind = next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WEBP"
    if kind is not None:
        return f"damaged {kind} image: its header cannot be read"
    return "not a supported image: the data is none of " + ", ".join(formats)


def normalize(image: Image.Image) -> Image.Image:
    """Any PIL image → RGB, or RGBA when it carries transparency; 8 bits per channel."""
    icc = image.info.get("icc_profile") or None
    return _normalize(image, icc)[0]


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block counts as upright, not as an error."""
    try:
        if im.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return im
        return ImageOps.exif_transpose(im)
    except Exception:
        return im


def _normalize(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert to RGB/RGBA 8-bit; return the ICC profile that still describes the pixels."""
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        return im, _rgb_profile(icc)
    if mode == "CMYK":
        # The CMYK profile no longer applies to RGB pixels: convert through it when it can be
        # used, and drop it in any case.
        return _cmyk_to_rgb(im, icc), None
    if mode.startswith("I") or mode.startswith("F"):  # I;16*, I (32-bit int), F (float)
        return _wide_to_8bit(im), None
    target = "RGBA" if im.has_transparency_data else "RGB"
    if mode in ("La", "RGBa"):  # premultiplied alpha: un-premultiply first
        im = im.convert(mode.replace("a", "A"))
    try:
        converted = im.convert(target)
    except ValueError as exc:
        raise ImageError(f"unsupported colour mode {mode}: {exc}") from None
    # A greyscale (GRAY) profile does not describe RGB pixels; only RGB profiles are kept.
    return converted, _rgb_profile(icc)


def _rgb_profile(icc: bytes | None) -> bytes | None:
    # ICC header: the data colour space signature is at bytes 16-19.
    return icc if icc is not None and len(icc) >= 20 and icc[16:20] == b"RGB " else None


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None:
        try:
            converted = ImageCms.profileToProfile(
                im,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: fall back to Pillow's plain formula
    return im.convert("RGB")


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale → 8-bit RGB, scaled, not clipped.

    Pillow's own conversion clips 16-bit values at 255 (a white image). 16-bit modes scale
    0..65535; 32-bit integers scale 0..65535 when any value exceeds 255 (16-bit data in a wide
    mode), else are taken as 8-bit; floats scale 0..1 when all values are within it, else clip.
    """
    arr = np.asarray(im)
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        out = np.clip(np.rint(arr), 0, 255)
    else:
        wide = arr.astype(np.int64)
        if im.mode.startswith("I;16") or (wide.size and wide.max() > 255):
            wide = np.clip(wide, 0, 65535)
            out = (wide * 255 + 32767) // 65535  # round(v / 257)
        else:
            out = np.clip(wide, 0, 255)
    return Image.fromarray(out.astype(np.uint8), "L").convert("RGB")


def _canonical(fmt: str) -> str:
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in OUTPUT_FORMATS:
        raise ImageError(
            f"unsupported output format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}"
        )
    return name


def content_type(fmt: str) -> str:
    """MIME type of an output format ("png" → "image/png")."""
    return _CONTENT_TYPES[_canonical(fmt)]


def extension(fmt: str) -> str:
    """File name extension of an output format, without the dot ("jpeg" → "jpg")."""
    return _EXTENSIONS[_canonical(fmt)]


def png_encoder_name() -> str:
    """Which PNG writer `encode` uses here (for logs and benchmarks)."""
    single = "fpng" if _fpng is not None else f"pillow level {PNG_FALLBACK_LEVEL}"
    if png_strips.worth_it(png_strips.MIN_PIXELS, 1):
        return f"strips on {usable_cpus()} threads (large images), else {single}"
    return single


def check_size(width: int, height: int, fmt: str) -> None:
    """Raise `ImageTooLarge` when a `width`×`height` image cannot be written as `fmt`.

    Callers can check an output size (4× the input) before spending the inference on it.
    """
    name = _canonical(fmt)
    if max(width, height) > MAX_SIDE[name]:
        raise ImageTooLarge(
            f"{name} cannot hold a {width}x{height} image (at most {MAX_SIDE[name]} px per "
            "side): choose png"
        )


def size_of(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of an image or of (H, W, C) pixels."""
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return image.size


def encode(
    image: Image.Image | np.ndarray,
    fmt: str = "png",
    icc_profile: bytes | None = None,
    quality: int | None = None,
    lossless: bool = False,
) -> bytes:
    """Encode an image, or its (H, W, 3 or 4) uint8 pixels, as png, jpeg or webp, embedding
    `icc_profile` when given. Pixels go to the PNG writers as they are (no copy into PIL's
    layout and back: ~0.15 s per 4096² RGB).

    JPEG has no alpha: RGBA images are composited onto white, as viewers show them.
    `quality` (1–100) is JPEG's and WebP's (default 90 each); `lossless` is WebP's. PNG is
    always lossless. Sizes a format cannot hold (WebP: 16383 px per side; JPEG: 65535) raise
    `ImageError`.
    """
    name = _canonical(fmt)
    check_size(*size_of(image), name)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError("pixels must be (height, width, 3 or 4) uint8")
        if name == "png":
            return _encode_png(image, icc_profile)
        image = Image.fromarray(image, "RGB" if image.shape[2] == 3 else "RGBA")
    if image.mode not in ("RGB", "RGBA"):
        image = normalize(image)
    if name == "png":
        return _encode_png(image, icc_profile)
    buf = io.BytesIO()
    extra: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if name == "jpeg":
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(buf, format="JPEG", quality=quality or JPEG_QUALITY, **extra)
    else:
        # method 4: Pillow's default effort; quality sets lossless WebP's effort too.
        webp_quality = quality or WEBP_QUALITY
        image.save(buf, format="WEBP", quality=webp_quality, lossless=lossless, **extra)
    return buf.getvalue()


def _encode_png(image: Image.Image | np.ndarray, icc_profile: bytes | None) -> bytes:
    if png_strips.worth_it(*size_of(image)):
        data = png_strips.encode(np.asarray(image))
        return _with_icc(data, icc_profile) if icc_profile else data
    if _fpng is None:
        return _encode_png_pillow(_as_image(image), icc_profile)
    data = bytes(_fpng.from_ndarray(np.ascontiguousarray(np.asarray(image))))
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):  # fpng answers b"" past its own limits
        return _encode_png_pillow(_as_image(image), icc_profile)
    return _with_icc(data, icc_profile) if icc_profile else data


def _as_image(image: Image.Image | np.ndarray) -> Image.Image:
    return Image.fromarray(image) if isinstance(image, np.ndarray) else image


def _encode_png_pillow(image: Image.Image, icc_profile: bytes | None) -> bytes:
    buf = io.BytesIO()
    extra: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    image.save(buf, format="PNG", compress_level=PNG_FALLBACK_LEVEL, **extra)
    return buf.getvalue()


def _with_icc(png: bytes, icc_profile: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (it must precede IDAT)."""
    payload = b"ICC Profile\x00\x00" + zlib.compress(icc_profile)
    chunk = struct.pack(">I", len(payload)) + b"iCCP" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + payload))
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 bytes, CRC
    if png[12:16] != b"IHDR":
        raise RuntimeError("PNG writer produced no IHDR first")  # a broken encoder, not input
    return png[:ihdr_end] + chunk + png[ihdr_end:]

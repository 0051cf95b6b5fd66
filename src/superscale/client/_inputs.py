"""Auto-upload: find local data in a request's arguments and swap in the URLs it was uploaded to.

Uploaded kinds: `pathlib.Path`, `bytes`/`bytearray`/`memoryview`, binary file objects and PIL
images, at any depth of dicts, lists and tuples. Strings pass through untouched (they may be
URLs or data: URIs), as in fal's JS clients.
"""

from __future__ import annotations

import io
import mimetypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
PIL_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


@dataclass
class Upload:
    data: bytes
    content_type: str
    file_name: str | None


def guess_content_type(data: bytes, file_name: str | None = None) -> str:
    """The content type from the bytes' signature, else the file name, else octet-stream."""
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if file_name:
        guessed, _ = mimetypes.guess_type(file_name)
        if guessed:
            return guessed
    return "application/octet-stream"


def _is_pil_image(value: Any) -> bool:
    # Only look if Pillow is loaded: without it, the caller cannot hold a PIL image.
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, pil.Image)


def _is_file_object(value: Any) -> bool:
    return isinstance(value, io.IOBase) or (
        callable(getattr(value, "read", None)) and not isinstance(value, (str, bytes, Path))
    )


def is_uploadable(value: Any) -> bool:
    return isinstance(value, (Path, bytes, bytearray, memoryview)) or (
        _is_pil_image(value) or _is_file_object(value)
    )


def encode_pil(image: Any, fmt: str = "png") -> Upload:
    """A PIL image encoded for upload (PNG by default: lossless, keeps alpha)."""
    fmt = fmt.lower()
    if fmt not in PIL_FORMATS:
        raise ValueError(f"format must be one of {sorted(PIL_FORMATS)}, got {fmt!r}")
    if fmt in ("jpeg", "jpg") and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")  # JPEG has no alpha
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if fmt == "jpg" else fmt.upper())
    return Upload(buffer.getvalue(), PIL_FORMATS[fmt], f"image.{fmt}")


def read_path(path: str | Path) -> Upload:
    path = Path(path)
    data = path.read_bytes()
    return Upload(data, guess_content_type(data, path.name), path.name)


def to_upload(value: Any) -> Upload:
    """Read one uploadable value into bytes, a content type and a file name."""
    if isinstance(value, Path):
        return read_path(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return Upload(data, guess_content_type(data), None)
    if _is_pil_image(value):
        return encode_pil(value)
    data = value.read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"file object {value!r} must be opened in binary mode ('rb')")
    name = getattr(value, "name", None)
    name = Path(name).name if isinstance(name, str) else None
    return Upload(bytes(data), guess_content_type(bytes(data), name), name)


def find_uploads(arguments: Any) -> list[Any]:
    """Every uploadable value in `arguments`, each object once, in walk order."""
    found: dict[int, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif is_uploadable(value):
            found.setdefault(id(value), value)

    visit(arguments)
    return list(found.values())


def substitute(arguments: Any, url_of: Callable[[Any], str]) -> Any:
    """A copy of `arguments` with each uploadable value replaced by `url_of(value)`."""
    if isinstance(arguments, dict):
        return {key: substitute(value, url_of) for key, value in arguments.items()}
    if isinstance(arguments, (list, tuple)):
        return [substitute(value, url_of) for value in arguments]
    if is_uploadable(arguments):
        return url_of(arguments)
    return arguments

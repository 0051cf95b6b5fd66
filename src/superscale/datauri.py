"""`data:` URIs: the one rule the API (at submit), the worker (decoding the input) and the client
(reading an inline output) all apply.

The rule: `data:[<media type>];base64,<payload>` — base64 only (every client and browser writes
images that way; a percent-encoded image is a URL too mangled to be a fair request). The
payload may be line-wrapped, unpadded, use the URL-safe alphabet, or carry percent-escapes (a
URL-encoded `+`); it must hold at least one byte, and no more than the caller's limit, which is
checked before decoding.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

PREFIX = "data:"


class DataUriError(ValueError):
    """Not a `data:` URI the rule accepts; `too_large` when only its size is at fault."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def is_data_uri(url: str) -> bool:
    return url[: len(PREFIX)].lower() == PREFIX


def decode(uri: str, max_bytes: int | None = None) -> bytes:
    """The bytes of `uri`, or `DataUriError` saying what is wrong with it."""
    if not is_data_uri(uri):
        raise DataUriError("not a data: URI")
    header, sep, payload = uri[len(PREFIX) :].partition(",")
    if not sep:
        raise DataUriError("data: URI without a ',' before its data")
    if not header.lower().endswith(";base64"):
        raise DataUriError("data: URI must be base64-encoded (data:<type>;base64,<data>)")
    if "%" in payload:
        payload = unquote(payload)
    compact = "".join(payload.split())
    if max_bytes is not None and len(compact) > max_bytes * 4 // 3 + 4:
        raise _too_large(max_bytes)
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        try:  # some encoders use the URL-safe alphabet
            data = base64.b64decode(compact, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise DataUriError("data: URI whose payload is not valid base64") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(max_bytes)
    if not data:
        raise DataUriError("data: URI with no data")
    return data


def _too_large(max_bytes: int) -> DataUriError:
    return DataUriError(f"data: URI larger than the limit of {max_bytes} bytes", too_large=True)

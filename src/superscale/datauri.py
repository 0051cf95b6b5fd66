"""`data:` URIs: the one rule the API (at submit), the worker (decoding the input) and the client
(reading an inline output) all apply — and the API's OpenAPI document states (`PATTERN`).

The rule: `data:[<media type>];base64,<payload>`, the payload standard or URL-safe base64 (one
alphabet), padding optional, spaces, tabs and line breaks allowed anywhere in it; at least one
byte, and no more than the caller's limit, which is checked before decoding. (Every client and
browser writes images that way; a percent-encoded image is a URL too mangled to be a fair
request.)
"""

from __future__ import annotations

import base64
import binascii
import re

PREFIX = "data:"
_SPACE = " \t\r\n"
_STANDARD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL_SAFE = (_STANDARD - {"+", "/"}) | {"-", "_"}
_HEADER = re.compile(r"[dD][aA][tT][aA]:[^,]*;[bB][aA][sS][eE]64")


def _payload_pattern(alphabet: str) -> str:
    symbol = f"[{alphabet}][ \\t\\r\\n]*"
    quad = f"(?:{symbol}){{4}}"
    tail = f"(?:{symbol}){{2}}(?:=[ \\t\\r\\n]*){{0,2}}|(?:{symbol}){{3}}(?:=[ \\t\\r\\n]*)?"
    return f"[ \\t\\r\\n]*(?:(?:{quad})+(?:{tail})?|(?:{quad})*(?:{tail}))"


# The rule as a regular expression (for schemas; `decode` checks the same without one).
PATTERN = (
    f"{_HEADER.pattern},(?:{_payload_pattern('A-Za-z0-9+/')}|{_payload_pattern('A-Za-z0-9_-')})"
)


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
    header, sep, payload = uri.partition(",")
    if not sep:
        raise DataUriError("data: URI without a ',' before its data")
    if not _HEADER.fullmatch(header):
        raise DataUriError("data: URI must be base64-encoded (data:<type>;base64,<data>)")
    compact = payload.translate({ord(c): None for c in _SPACE})
    if not compact:
        raise DataUriError("data: URI with no data")
    if max_bytes is not None and len(compact) > max_bytes * 4 // 3 + 4:
        raise _too_large(max_bytes)
    symbols = compact.rstrip("=")
    padding = len(compact) - len(symbols)
    alphabet = _STANDARD if set(symbols) <= _STANDARD else _URL_SAFE
    # Padding only at the end, and only as much as the last group can take.
    if (
        not symbols
        or not set(symbols) <= alphabet
        or padding > {0: 0, 2: 2, 3: 1}.get(len(symbols) % 4, -1)
    ):
        raise DataUriError("data: URI whose payload is not valid base64")
    compact = symbols + "=" * (-len(symbols) % 4)
    try:
        altchars = None if alphabet is _STANDARD else b"-_"
        data = base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):  # unreachable after the checks above; kept honest
        raise DataUriError("data: URI whose payload is not valid base64") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _too_large(max_bytes: int) -> DataUriError:
    return DataUriError(f"data: URI larger than the limit of {max_bytes} bytes", too_large=True)

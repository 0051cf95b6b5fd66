"""Unpadded base64url (RFC 4648 §5), as JWK members and our signed tokens use it."""

from __future__ import annotations

import base64


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    """The bytes of unpadded (or padded) base64url text; ValueError when it is not that."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

"""Unforgeable, expiring capabilities: upload tokens, upload URLs, proxy sessions.

A token is `base64url(JSON claims) + "." + base64url(HMAC-SHA256(secret, purpose + claims))`.
Stateless on purpose: any API server holding the same secret can check it, so uploads work
behind a load balancer. The secret is `Settings.secret_key` (`SUPERSCALE_SECRET_KEY`: set it on
every server when scaling out) or is created once in the data directory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from typing import Any

from superscale import _b64url as b64url
from superscale.settings import Settings

SECRET_ENV = "SUPERSCALE_SECRET_KEY"
SECRET_FILE = "secret.key"


def load_secret(settings: Settings) -> bytes:
    """The server's signing secret: `settings.secret_key`, else `{data_dir}/secret.key`
    (created on first use with mode 0600; concurrent first starts agree on one file)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            value = path.read_bytes().strip()
            if value:
                return value
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty; delete it or set {SECRET_ENV}") from None
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


class Signer:
    """Signs and checks claims for one purpose at a time (a token made for one use is
    rejected for any other)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, payload: str) -> bytes:
        # surrogatepass: a payload from a URL may hold anything; it must hash, not raise.
        msg = f"{purpose}\n{payload}".encode("utf-8", "surrogatepass")
        return b64url.encode(hmac.new(self._secret, msg, hashlib.sha256).digest()).encode()

    def sign(self, purpose: str, claims: dict[str, Any], ttl: float) -> str:
        body = dict(claims, exp=int(time.time() + ttl))
        payload = b64url.encode(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._mac(purpose, payload).decode()}"

    def verify(self, purpose: str, token: str) -> dict[str, Any] | None:
        """The claims when the token is genuine, made for `purpose` and unexpired; else None."""
        payload, _, mac = token.partition(".")
        # Compared as bytes: `compare_digest` refuses str with non-ASCII characters (a 500 for
        # any forged token holding one), and a token is anything a client sends.
        given = mac.encode("utf-8", "surrogatepass")
        if not payload or not mac or not hmac.compare_digest(given, self._mac(purpose, payload)):
            return None
        try:
            claims = json.loads(b64url.decode(payload))
        except ValueError:
            return None
        if not isinstance(claims, dict) or float(claims.get("exp", 0)) < time.time():
            return None
        return claims

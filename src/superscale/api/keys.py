"""API keys: `key_id:key_secret`, as fal's clients send them (`Authorization: Key …`).

The secret is 256 random bits, so its SHA-256 is enough to store: a slow password hash
(scrypt, argon2) defends low-entropy secrets against guessing, which these are not, and would
cost milliseconds on every request. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from superscale.jobs.records import ApiKey
from superscale.jobs.store import JobStore

_HASH_SCHEME = "sha256"


def hash_secret(secret: str) -> str:
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_HASH_SCHEME}${digest}"


def create_key(
    store: JobStore,
    name: str = "",
    *,
    max_queue: int | None = None,
    max_rps: float | None = None,
    upload_bytes_per_day: int | None = None,
) -> tuple[ApiKey, str]:
    """Make and store a new key (limits None: the server's). Returns the record and the full
    `key_id:secret` string, which exists only here: show it once."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_hex(32)
    key = ApiKey(
        key_id=key_id,
        secret_hash=hash_secret(secret),
        name=name,
        created_at=time.time(),
        max_queue=max_queue,
        max_rps=max_rps,
        upload_bytes_per_day=upload_bytes_per_day,
    )
    store.add_key(key)
    return key, f"{key_id}:{secret}"


def verify_key(get_key: Callable[[str], ApiKey | None], credential: str) -> ApiKey | None:
    """The key when `credential` (`key_id:secret`) names an active one; else None.
    `get_key` reads a key by id (`JobStore.get_key`, or the API's `KeyCache.get`)."""
    key_id, sep, secret = credential.strip().partition(":")
    if not sep or not key_id or not secret:
        return None
    key = get_key(key_id)
    if key is None or key.revoked_at is not None:
        # Hash anyway so an unknown id costs the same time as a wrong secret.
        hmac.compare_digest(hash_secret(secret), hash_secret("x"))
        return None
    return key if hmac.compare_digest(hash_secret(secret), key.secret_hash) else None


def active_keys(store: JobStore) -> list[ApiKey]:
    return [k for k in store.list_keys() if k.revoked_at is None]

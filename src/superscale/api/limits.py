"""What an API server keeps about keys between requests: their records (so that a poll does
not read the key again) and their request rates; and each key's limits, its own or the
server's."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from superscale.jobs.records import ApiKey
from superscale.jobs.store import JobStore
from superscale.settings import Settings

# Entries beyond this are dropped oldest first (keys that stopped calling).
MAX_CACHED_KEYS = 10_000


class KeyCache:
    """A job store's key records by id, each trusted for `seconds` after it was read; all are
    dropped when a key changes through the same store (a revocation on this server takes
    effect at once). Unknown ids are not cached: a made-up id costs a read, and never fills the
    cache."""

    def __init__(self, store: JobStore, seconds: float) -> None:
        self._store = store
        self._seconds = seconds
        self._entries: dict[str, tuple[float, ApiKey]] = {}
        self._seen_changes = store.keys_changed
        self._lock = threading.Lock()

    def cached(self, key_id: str) -> ApiKey | None:
        """The record when a fresh one is held (no store read: safe on the event loop)."""
        if self._store.keys_changed != self._seen_changes:
            with self._lock:
                self._entries.clear()
                self._seen_changes = self._store.keys_changed
            return None
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    def get(self, key_id: str) -> ApiKey | None:
        """Blocking: reads the store when the cached record is missing or too old."""
        key = self.cached(key_id)
        if key is not None:
            return key
        now = time.monotonic()
        key = self._store.get_key(key_id)
        with self._lock:
            if key is None:
                self._entries.pop(key_id, None)
            elif self._seconds > 0:
                if len(self._entries) >= MAX_CACHED_KEYS:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[key_id] = (now + self._seconds, key)
        return key


@dataclass(frozen=True)
class KeyLimits:
    max_queue: int | None
    max_rps: float | None
    upload_bytes_per_day: int | None

    @classmethod
    def of(cls, key: ApiKey | None, settings: Settings) -> KeyLimits:
        """The key's own limits where it sets them, else the server's; the server's alone
        for requests without a key (auth off, owner "")."""

        if key is None:
            return cls(
                settings.key_max_queue, settings.key_max_rps, settings.key_upload_bytes_per_day
            )
        return cls(
            max_queue=settings.key_max_queue if key.max_queue is None else key.max_queue,
            max_rps=settings.key_max_rps if key.max_rps is None else key.max_rps,
            upload_bytes_per_day=(
                settings.key_upload_bytes_per_day
                if key.upload_bytes_per_day is None
                else key.upload_bytes_per_day
            ),
        )


class RateLimiter:
    """Token buckets per key: `rate` requests a second, bursts of up to one second's worth
    (at least one request). In-process: each API server of a cluster counts its own."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)
        self._lock = threading.Lock()

    def wait_time(self, key: str, rate: float) -> float:
        """0 when a request may go now (it is counted); else the seconds until one may."""
        burst = max(1.0, rate)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_CACHED_KEYS:
                    self._buckets.pop(next(iter(self._buckets)))
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))

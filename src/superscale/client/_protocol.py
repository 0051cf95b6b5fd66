"""What the sync and async clients share and that does no I/O: configuration, endpoint ids and
URLs, request headers, and the retry policy."""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from superscale.client.errors import (
    REQUEST_TIMEOUT_TYPE_HEADER,
    SuperscaleError,
    parse_retry_after,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# Per-request limits; long waits happen by polling, never inside one request.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEFAULT_POLL_INTERVAL = 0.1
# Statuses a retry can cure: overload (429, 503) and gateways (502, 504).
RETRY_STATUS = frozenset({429, 502, 503, 504})
_NAMESPACES = ("workflows", "comfy")
_LEGACY_ID = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")


def resolve_base_url(base_url: str | None) -> str:
    """The server URL: the argument, else `SUPERSCALE_URL`, else the local default."""
    url = base_url or os.environ.get("SUPERSCALE_URL") or DEFAULT_BASE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def resolve_key(key: str | None) -> str | None:
    """The API key `key_id:key_secret`: the argument, else `FAL_KEY`, else
    `FAL_KEY_ID` + `FAL_KEY_SECRET`; None sends no Authorization (a `--no-auth` server)."""
    if key:
        return key
    if os.environ.get("FAL_KEY"):
        return os.environ["FAL_KEY"]
    key_id, secret = os.environ.get("FAL_KEY_ID"), os.environ.get("FAL_KEY_SECRET")
    if key_id and secret:
        return f"{key_id}:{secret}"
    return None


@dataclass(frozen=True)
class EndpointId:
    """An endpoint id split as fal's clients split it: `[ns/]owner/alias[/path]`."""

    owner: str
    alias: str
    path: str = ""
    namespace: str = ""

    @classmethod
    def parse(cls, endpoint: str) -> EndpointId:
        parts = [p for p in endpoint.strip("/").split("/") if p]
        if len(parts) == 1 and (m := _LEGACY_ID.match(parts[0])):
            return cls(m.group(1), m.group(2))
        namespace = ""
        if parts and parts[0] in _NAMESPACES:
            namespace, parts = parts[0], parts[1:]
        if len(parts) < 2:
            raise ValueError(f"endpoint must look like 'owner/alias', got {endpoint!r}")
        return cls(parts[0], parts[1], "/".join(parts[2:]), namespace)

    @property
    def app(self) -> str:
        """`[ns/]owner/alias`: what status, result and cancel URLs use."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{prefix}{self.owner}/{self.alias}"

    @property
    def full(self) -> str:
        """The whole id: what submit and run URLs use."""
        return f"{self.app}/{self.path}" if self.path else self.app


@dataclass(frozen=True)
class Urls:
    """Where each operation goes on one server."""

    base_url: str

    def run(self, endpoint: str) -> str:
        return f"{self.base_url}/{EndpointId.parse(endpoint).full}"

    def submit(self, endpoint: str) -> str:
        return f"{self.base_url}/queue/{EndpointId.parse(endpoint).full}"

    def request(self, endpoint: str, request_id: str) -> str:
        app = EndpointId.parse(endpoint).app
        return f"{self.base_url}/queue/{app}/requests/{quote(request_id, safe='')}"

    def status(self, endpoint: str, request_id: str) -> str:
        return self.request(endpoint, request_id) + "/status"

    def stream(self, endpoint: str, request_id: str) -> str:
        return self.request(endpoint, request_id) + "/status/stream"

    def cancel(self, endpoint: str, request_id: str) -> str:
        return self.request(endpoint, request_id) + "/cancel"

    @property
    def storage_token(self) -> str:
        return f"{self.base_url}/storage/auth/token?storage_type=fal-cdn-v3"

    def same_origin(self, url: str) -> bool:
        """Whether `url` is on this server (only then may it see the key)."""
        a, b = urlsplit(self.base_url), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Key {key}"} if key else {}


def submit_headers(priority: str | None, start_timeout: float | None) -> dict[str, str]:
    """fal's optional submit headers: queue priority and a server-side start deadline."""
    headers = {}
    if priority is not None:
        if priority not in ("normal", "low"):
            raise ValueError(f"priority must be 'normal' or 'low', got {priority!r}")
        headers["x-fal-queue-priority"] = priority
    if start_timeout is not None:
        headers["x-fal-request-timeout"] = str(float(start_timeout))
    return headers


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honouring the server's `Retry-After` up to a cap.

    `max_retries` counts retries after the first attempt. Non-idempotent requests (POST) are
    retried only when the server cannot have acted on them: a refused connection, 429, 503.
    """

    max_retries: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, retry: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        backoff = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        backoff *= random.uniform(0.5, 1.0)
        hinted = parse_retry_after(response.headers.get("retry-after")) if response else None
        if hinted is not None:
            return min(hinted, self.max_retry_after)
        return backoff

    def should_retry_status(self, response: httpx.Response, idempotent: bool) -> bool:
        code = response.status_code
        if code not in RETRY_STATUS:
            return False
        if code == 504 and response.headers.get(REQUEST_TIMEOUT_TYPE_HEADER):
            return False  # the caller's own start deadline ran out: retrying cannot help
        return idempotent or code in (429, 503)

    def should_retry_error(self, exc: httpx.TransportError, idempotent: bool) -> bool:
        # A failed connect means nothing reached the server; anything later may have.
        connect_failed = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        return idempotent or connect_failed


NO_RETRY = RetryPolicy(max_retries=0)


@dataclass(frozen=True)
class CdnToken:
    """A storage token from `/storage/auth/token`, reused until shortly before it expires."""

    token: str
    token_type: str
    base_url: str
    expires_at: float  # unix time

    @classmethod
    def from_json(cls, data: Any) -> CdnToken:
        try:
            expires = str(data["expires_at"]).replace("Z", "+00:00")
            when = datetime.fromisoformat(expires)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return cls(
                str(data["token"]),
                str(data.get("token_type") or "Bearer"),
                str(data["base_url"]).rstrip("/"),
                when.timestamp(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed storage token answer: {data!r:.200}") from exc

    def fresh(self, margin: float = 30.0) -> bool:
        return time.time() + margin < self.expires_at

    def upload_headers(self, content_type: str, file_name: str | None) -> dict[str, str]:
        headers = {"Authorization": f"{self.token_type} {self.token}", "Content-Type": content_type}
        if file_name:
            headers["X-Fal-File-Name"] = file_name
        return headers


def access_url(data: Any) -> str:
    """The URL of an uploaded file from `/files/upload`'s answer."""
    if isinstance(data, dict) and isinstance(data.get("access_url"), str):
        return str(data["access_url"])
    raise ValueError(f"malformed upload answer: {data!r:.200}")


def deadline_timeout(deadline: float | None, default: httpx.Timeout) -> httpx.Timeout:
    """The per-request timeout, shortened so that no request outlives `deadline`."""
    if deadline is None:
        return default
    remaining = max(0.001, deadline - time.monotonic())
    connect = default.connect if default.connect is not None else remaining
    read = default.read if default.read is not None else remaining
    return httpx.Timeout(min(read, remaining), connect=min(connect, remaining))


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON; a clear error when a proxy or a wrong URL answered with something else."""
    try:
        return response.json()
    except ValueError as exc:
        raise SuperscaleError(
            f"expected JSON from {response.request.url}, got {response.text[:200]!r}",
            status_code=response.status_code,
        ) from exc

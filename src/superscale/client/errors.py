"""The client's exceptions: one base class, one subclass per way a request can fail.

Every error carries the HTTP `status_code` (None when no answer came back) and the
`request_id` it concerns, when known, so that callers can log it or cancel.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx

# fal's header on a 504 that a start deadline (x-fal-request-timeout) caused.
REQUEST_TIMEOUT_TYPE_HEADER = "x-fal-request-timeout-type"


class SuperscaleError(Exception):
    """Base class of every error the client raises."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type
        self.body = body

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status {self.status_code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class ValidationError(SuperscaleError):
    """422: the input was refused. `errors` holds fal's field errors (`loc`, `msg`, `type`)."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        if isinstance(detail, list):
            return [e for e in detail if isinstance(e, dict)]
        return []

    @property
    def fields(self) -> list[str]:
        """The offending fields, e.g. `["checkpoint"]` (the leading `body` dropped)."""
        names = []
        for err in self.errors:
            loc = [str(p) for p in err.get("loc", []) if p != "body"]
            names.append(".".join(loc))
        return names


class AuthenticationError(SuperscaleError):
    """401/403: missing, unknown or revoked key, or a resource of another key."""


class NotFoundError(SuperscaleError):
    """404: unknown endpoint, request id or file."""


class RateLimitedError(SuperscaleError):
    """429: the server's queue is full. `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(SuperscaleError):
    """5xx: the server failed (a job's internal error, a gateway or an overload)."""


class RequestTimeoutError(SuperscaleError, TimeoutError):
    """The request did not finish in time: a client-side `timeout` ran out (the job was then
    cancelled on the server), or the server's start deadline expired (504)."""


class RequestCancelledError(SuperscaleError):
    """The request was cancelled before it produced an output (its result answers this)."""


class NetworkError(SuperscaleError):
    """No answer: the server could not be reached or the connection broke (after retries)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _message_from_body(body: Any, fallback: str) -> str:
    """A one-line message from fal's error body: the `detail` string or the field errors."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list) and detail:
            lines = []
            for err in detail:
                if not isinstance(err, dict):
                    lines.append(str(err))
                    continue
                loc = ".".join(str(p) for p in err.get("loc", []) if p != "body")
                msg = str(err.get("msg", "invalid"))
                lines.append(f"{loc}: {msg}" if loc else msg)
            return "; ".join(lines)
        for key in ("error", "message", "status"):
            if isinstance(body.get(key), str):
                return str(body[key])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def error_from_response(response: httpx.Response, request_id: str | None = None) -> SuperscaleError:
    """The exception a non-2xx answer stands for."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    code = response.status_code
    message = _message_from_body(body, f"HTTP {code} {response.reason_phrase}".strip())
    error_type = None
    if isinstance(body, dict) and isinstance(body.get("error_type"), str):
        error_type = body["error_type"]
    error_type = error_type or response.headers.get("x-fal-error-type")
    kwargs: dict[str, Any] = {
        "status_code": code,
        "request_id": response.headers.get("x-fal-request-id") or request_id,
        "error_type": error_type,
        "body": body,
    }
    if error_type in ("client_cancelled", "cancelled"):  # "cancelled": older servers
        return RequestCancelledError(message, **kwargs)
    if code == 422:
        return ValidationError(message, **kwargs)
    if code in (401, 403):
        return AuthenticationError(message, **kwargs)
    if code == 404:
        return NotFoundError(message, **kwargs)
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimitedError(message, retry_after=retry_after, **kwargs)
    if code == 408 or (code == 504 and response.headers.get(REQUEST_TIMEOUT_TYPE_HEADER)):
        return RequestTimeoutError(message, **kwargs)
    if code >= 500:
        return ServerError(message, **kwargs)
    return SuperscaleError(message, **kwargs)


def error_from_transport(
    method: str, url: str, exc: Exception, request_id: str | None = None
) -> SuperscaleError:
    """The exception for a request that got no answer: a timeout, or a network failure."""
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(f"{method} {url} timed out: {exc!r}", request_id=request_id)
    return NetworkError(f"{method} {url} failed: {exc!r}", request_id=request_id)

"""fal-shaped error answers: `{"detail": [{loc, msg, type}], "error_type"?}`.

Every refusal the API makes goes through `ApiError`, so clients (fal's Python client raises
`FalClientHTTPError(body["detail"])`, fal-js reads `detail` as field errors on 422) always see
the same shape, and nothing the user did wrong turns into a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from superscale.errors import ErrorType

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error answered with fal's error body."""

    def __init__(
        self,
        status_code: int,
        msg: str,
        *,
        loc: Sequence[str | int] = ("body",),
        type: str = "value_error",
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.status_code = status_code
        self.detail = (
            detail if detail is not None else [{"loc": list(loc), "msg": msg, "type": type}]
        )
        self.headers = dict(headers or {})
        self.error_type = error_type

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.detail}
        headers = dict(self.headers)
        if self.error_type:
            body["error_type"] = self.error_type
            headers.setdefault("X-Fal-Error-Type", self.error_type)
        return JSONResponse(body, status_code=self.status_code, headers=headers)


def not_found(what: str = "Request") -> ApiError:
    return ApiError(404, f"{what} not found", loc=("path",), type="not_found")


def retry_later(status_code: int, reason: str, error_type: ErrorType, seconds: int) -> ApiError:
    """A temporary refusal (busy, unreachable store), with `Retry-After` and `X-Fal-Retryable`
    for clients that read them. fal's own clients read neither (Python retries 429 but never
    our 503; JS retries both three times over ~7 s), which is why requests wait out short
    trouble before they are refused (`context.HoldMiddleware`)."""
    retry = str(seconds)
    return ApiError(
        status_code,
        f"{reason}; retry in {retry} s",
        type=error_type,
        headers={"Retry-After": retry, "X-Fal-Retryable": "true"},
        error_type=error_type,
    )


def validation_error(exc: ValidationError, prefix: str = "body") -> ApiError:
    """pydantic errors as fal's 422: locations prefixed like FastAPI's (`["body", field]`)."""
    detail = [
        {"loc": [prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return ApiError(422, "validation error", detail=detail)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Routing's own refusals (unknown path 404, wrong method 405) in fal's shape too."""
    assert isinstance(exc, StarletteHTTPException)
    msg = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    return ApiError(
        exc.status_code, msg, loc=("path",), type="http_error", headers=exc.headers
    ).response()


STORE_RETRY_AFTER = 5  # seconds; a database restart or failover usually takes about this long


async def store_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """The job store is unreachable: a temporary condition, so 503 with Retry-After (which
    clients retry), not a 500. The cause goes to the log, not to the client."""
    log.warning("job store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return retry_later(
        503,
        "The service cannot reach its job store",
        ErrorType.SERVICE_UNAVAILABLE,
        STORE_RETRY_AFTER,
    ).response()


async def file_not_found_handler(request: Request, exc: Exception) -> JSONResponse:
    """A file or multipart upload the store does not have (expired, completed, never made):
    whichever route asked, a 404 — not the 500 of an unhandled error."""
    return ApiError(404, "File or upload not found", loc=("path",), type="not_found").response()


STORAGE_RETRY_AFTER = 30  # seconds; freeing space takes an operator


async def storage_full_handler(request: Request, exc: Exception) -> JSONResponse:
    """The file store's disk is full: 507 with Retry-After, as for an unreachable store."""
    log.warning("file store full on %s %s: %s", request.method, request.url.path, exc)
    return retry_later(
        507, "The server's file storage is full", ErrorType.STORAGE_FULL, STORAGE_RETRY_AFTER
    ).response()


async def upload_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The store refused an upload step (a part out of range, parts that do not add up)."""
    return ApiError(422, f"upload refused: {exc}", type="value_error").response()


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # A bug on our side: log it with the traceback, answer in fal's shape without internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ApiError(500, "Internal server error", type="internal_error").response()

"""Reading and checking what a submit carries: body, input schema, `image_url`, headers.

Everything that can be judged without the network is judged here, so a bad request is a 422
at submit rather than a failed job later. Fetching, decoding and bomb checks are the worker's.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, cast
from urllib.parse import SplitResult, urlsplit

from fastapi import Request
from PIL import Image
from pydantic import ValidationError

from superscale import datauri, netguard
from superscale.api.context import ApiContext
from superscale.api.errors import ApiError, validation_error
from superscale.files.base import FileNotFound
from superscale.files.urls import key_of_path
from superscale.scaling import check_output_size
from superscale.schemas import AuraSrInput

_IMAGE_URL_LOC = ("body", "image_url")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body is larger than {limit} bytes", type="request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# An upload up to this size stays in memory while it arrives; a bigger one goes to a temporary
# file, so memory stays flat in uploads' sizes and in their number.
SPOOL_IN_MEMORY = 1024 * 1024


async def spool_body(request: Request, limit: int) -> tuple[BinaryIO, int]:
    """The body, spooled (`SPOOL_IN_MEMORY`) and rewound, and its size; 413 as `read_body`.
    The caller closes the file."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return cast(BinaryIO, spool), size


# Deeper than any input of ours: refused before anything walks it (a 2 KB body of brackets
# would otherwise reach Python's recursion limit in the parser, the validator or the encoder).
MAX_JSON_DEPTH = 32


def load_json(text: str | bytes) -> Any:
    """JSON from a client: ValueError for malformed text, NaN or Infinity (not JSON, though
    Python's parser takes them), numbers that overflow to infinity, and nesting deeper than
    `MAX_JSON_DEPTH`."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("a number is too large")
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(body: bytes) -> Any:
    try:
        return load_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        raise ApiError(
            422, f"JSON decode error: {exc}", loc=("body", pos), type="json_invalid"
        ) from None


# `image_url` as http(s): the rule, as the OpenAPI document states it. A registered host name
# or IPv4 address (no user info, no IPv6 literal), a port up to 65535, no spaces or control
# characters anywhere.
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
HTTP_URL_PATTERN = (
    "[hH][tT][tT][pP][sS]?://[A-Za-z0-9._~!$&'()*+,;=%-]+"
    f"(?::0*{_PORT})?(?:[/?#][^\\x00-\\x20\\x7f]*)?"
)
_HTTP_URL = re.compile(HTTP_URL_PATTERN)
# The whole rule for `image_url` (the data: branch from `superscale.datauri`).
IMAGE_URL_PATTERN = f"^(?:{HTTP_URL_PATTERN}|{datauri.PATTERN})$"


def http_url(url: str) -> SplitResult:
    """`url` split, when it is an absolute http(s) URL with a host and a valid port;
    ValueError saying what is wrong otherwise (control characters included: a NUL cannot be
    stored in PostgreSQL, and no URL holds one)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("holds control characters")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed or out-of-range port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if not host:
        raise ValueError("has no host")
    return parts


def check_webhook_url(url: str, ssrf_guard: bool) -> str:
    """`fal_webhook`, refused at submit (422) when it could never be delivered: not an http(s)
    URL, a malformed host or port, or — with the SSRF guard on — an address the server will
    not call (loopback, private, link-local …). Names that resolve to such addresses are
    refused at delivery, where the address is known."""

    def refuse(why: str) -> ApiError:
        return ApiError(422, f"fal_webhook {why}", loc=("query", "fal_webhook"), type="url_invalid")

    try:
        parts = http_url(url)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    host = (parts.hostname or "").lower()
    if ssrf_guard:
        if host == "localhost" or host.endswith(".localhost"):
            raise refuse("points at this machine (localhost), which the server does not call")
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return url  # a name: checked when it is resolved, at delivery
        reason = netguard.refusal_reason(address)
        if reason is not None:
            raise refuse(f"points at a {reason} address, which the server does not call")
    return url


def _bad_url(msg: str) -> ApiError:
    return ApiError(422, msg, loc=_IMAGE_URL_LOC, type="url_invalid")


def check_data_uri(url: str, max_bytes: int) -> bytes:
    try:
        return datauri.decode(url, max_bytes)
    except datauri.DataUriError as exc:
        raise _bad_url(str(exc)) from None


# Enough of a file for Pillow to read its size: PNG and WebP state it in the first bytes, a
# JPEG after its metadata segments (EXIF, ICC), rarely past this.
HEADER_BYTES = 256 * 1024


def image_size(data: bytes) -> tuple[int, int] | None:
    """The size an image's header states (nothing decoded); None when it is no image we can
    read, or the header lies past `data` — the worker then judges it whole."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # any malformed header: not ours to judge here
        return None


def check_output(inp: AuraSrInput, data: bytes, max_pixels: int) -> None:
    """422 at submit when the image's size is known here (a data: URI, an upload of ours) and
    its upscale would exceed the output limit or a target is out of range (the worker checks
    every other image before it runs)."""
    size = image_size(data)
    if size is None:
        return
    try:
        check_output_size(*size, inp.scale(), max_pixels)
    except ValueError as exc:
        loc = ("body", inp.scale_field())
        raise ApiError(422, str(exc), loc=loc, type="image_too_large") from None


async def check_image_url(url: str, request: Request, ctx: ApiContext) -> tuple[str, bytes | None]:
    """Validates an http(s) `image_url`; returns it, with our own file URLs made canonical, and
    for such a file its first `HEADER_BYTES` (read to show that it exists, and its size)."""
    try:
        parts = http_url(url)
    except ValueError as exc:
        raise _bad_url(f"image_url {exc}; or send a data: URI") from None
    if not _HTTP_URL.fullmatch(url):
        raise _bad_url(
            "image_url must be an http(s) URL with a host name or IPv4 address, a port up to "
            "65535, and no spaces or user info"
        )
    key = key_of_path(parts.path)
    if parts.netloc.lower() in ctx.own_netlocs(request) and key is not None:
        try:
            header = await ctx.call(ctx.file_store.head_bytes, key, HEADER_BYTES)
        except FileNotFound:  # missing or expired
            raise _bad_url("image_url names a file of this server that does not exist") from None
        return ctx.canonical_file_url(key), header
    return url, None


# Query parameters that are fal's controls, never input fields.
_CONTROL_PARAMS = ("fal_webhook", "fal_max_queue_length", "fal_jwt_token")


def query_input(request: Request) -> dict[str, Any]:
    """The input of a GET run or submit (`@fal-ai/client`'s `method: "get"` puts it in the
    query string): values read as a JSON body would have typed them — `true`/`false` and
    integers — except `image_url`, always a string."""
    return {
        k: v if k == "image_url" else _query_value(v)
        for k, v in request.query_params.items()
        if k not in _CONTROL_PARAMS
    }


def _query_value(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if re.fullmatch(r"-?[0-9]{1,19}", value):
        return int(value)
    return value


async def parse_input(request: Request, ctx: ApiContext) -> AuraSrInput:
    """Body (or, on a GET, the query string) → validated `AuraSrInput` (422 / 413 otherwise)."""
    if request.method == "GET":
        data: Any = query_input(request)
    else:
        data = parse_json(await read_body(request, ctx.settings.max_body_bytes))
    try:
        inp = AuraSrInput.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, "query" if request.method == "GET" else "body") from None
    if inp.checkpoint not in ctx.settings.checkpoints:
        served = ", ".join(ctx.settings.checkpoints)
        raise ApiError(
            422,
            f"checkpoint {inp.checkpoint!r} is not served here (served: {served})",
            loc=("body", "checkpoint"),
            type="literal_error",
        )
    if inp.tile_overlap is None:  # the server's default, so the job records what it ran with
        inp.tile_overlap = 0 if inp.overlapping_tiles else ctx.settings.tile_overlap
    if datauri.is_data_uri(inp.image_url):
        data = check_data_uri(inp.image_url, ctx.settings.max_input_bytes)
        check_output(inp, data, ctx.settings.max_output_pixels)
    else:
        inp.image_url, header = await check_image_url(inp.image_url, request, ctx)
        if header is not None:  # an upload of ours: its header says the size
            check_output(inp, header, ctx.settings.max_output_pixels)
    return inp


@dataclass
class JobOptions:
    """What fal's request headers and query ask of a job."""

    priority: int = 0
    start_deadline: float | None = None
    file_ttl: float | None = None
    webhook_url: str | None = None
    no_retry: bool = False  # X-Fal-No-Retry
    store_io: bool = True  # X-Fal-Store-IO (0: do not keep the payloads)
    max_waiting: int | None = None  # ?fal_max_queue_length


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _flag(request: Request, name: str) -> bool | None:
    """A yes/no header (1/true/yes or 0/false/no, any case); None when absent."""
    value = request.headers.get(name)
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if value not in _TRUE + _FALSE:
        raise _header_error(name, "must be 1, true, yes, 0, false or no")
    return value in _TRUE


def _start_timeout(request: Request) -> float | None:
    """`X-Fal-Request-Timeout` (or its newer name `X-Fal-Request-Start-Timeout`): seconds the
    job may wait to start."""
    for name in ("x-fal-request-timeout", "x-fal-request-start-timeout"):
        value = request.headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise _header_error(name, "must be a number of seconds") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise _header_error(name, "must be a positive number of seconds")
        return seconds
    return None


def _header_error(name: str, msg: str) -> ApiError:
    return ApiError(422, msg, loc=("header", name), type="value_error")


def parse_lifecycle(value: str | None, name: str) -> float | None:
    """`{"expiration_duration_seconds": N}` → N seconds (None: the server default)."""
    if not value:
        return None
    try:
        data = load_json(value)
    except ValueError as exc:
        raise _header_error(name, f"must be JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _header_error(name, "must be a JSON object")
    seconds = data.get("expiration_duration_seconds")
    if seconds is None:
        return None
    refused = _header_error(name, "expiration_duration_seconds must be a positive number")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise refused
    try:
        seconds = float(seconds)  # an integer too large for a float overflows here
    except OverflowError:
        raise refused from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise refused
    return seconds


def parse_options(request: Request, ssrf_guard: bool = True) -> JobOptions:
    headers = request.headers
    opts = JobOptions()
    priority = headers.get("x-fal-queue-priority", "normal").strip().lower()
    if priority not in ("normal", "low"):
        raise _header_error("x-fal-queue-priority", "must be 'normal' or 'low'")
    opts.priority = -1 if priority == "low" else 0
    timeout = _start_timeout(request)
    if timeout is not None:
        opts.start_deadline = time.time() + timeout
    opts.file_ttl = parse_lifecycle(
        headers.get("x-fal-object-lifecycle-preference"), "x-fal-object-lifecycle-preference"
    )
    webhook = request.query_params.get("fal_webhook")
    if webhook is not None:
        opts.webhook_url = check_webhook_url(webhook, ssrf_guard)
    opts.no_retry = bool(_flag(request, "x-fal-no-retry"))
    opts.store_io = _flag(request, "x-fal-store-io") is not False
    max_length = request.query_params.get("fal_max_queue_length")
    if max_length is not None:
        if not re.fullmatch(r"[0-9]{1,9}", max_length.strip()):
            raise ApiError(
                422,
                "fal_max_queue_length must be a whole number of requests (0 or more)",
                loc=("query", "fal_max_queue_length"),
                type="value_error",
            )
        opts.max_waiting = int(max_length.strip())
    return opts

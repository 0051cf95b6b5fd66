"""Uploads and hosted files (`fal-protocol.md` §3), for all three official clients.

- Python `fal-client`: `POST /storage/auth/token` → bearer token; `POST /files/upload`;
  multipart `POST /files/upload/multipart`, `PUT /files/{key}/multipart/{id}/{n}`,
  `POST /files/{key}/multipart/{id}/complete`.
- JS clients: `POST /storage/upload/initiate` → a signed `upload_url` that one `PUT` (no
  auth: the URL is the capability) fills; multipart via `/storage/upload/initiate-multipart`.
- `GET`/`HEAD /files/{key}`: the file, with its content type.

Upload sessions are bound to the uploading key inside signed claims (stateless, so any API
server with the shared secret accepts them); files themselves are served to whoever holds
their unguessable URL, as fal's CDN does.
"""

from __future__ import annotations

import contextlib
import mimetypes
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from superscale.api.auth import (
    UPLOAD_TOKEN_PURPOSE,
    key_is_live,
    key_limits,
    owner_from_key,
    owner_from_key_or_token,
)
from superscale.api.context import ApiContext, Ctx
from superscale.api.errors import ApiError, not_found, retry_later
from superscale.api.inputs import parse_json, parse_lifecycle, read_body, spool_body
from superscale.errors import ErrorType
from superscale.files.base import FileNotFound, UploadError, new_key
from superscale.files.urls import file_url

router = APIRouter()

TOKEN_TTL = 3600.0
UPLOAD_URL_TTL = 3600.0
PUT_PURPOSE = "upload-put"
MULTIPART_PURPOSE = "upload-multipart"
_LIFECYCLE_HEADERS = ("x-fal-object-lifecycle-preference", "x-fal-object-lifecycle")


def _expires_at(request: Request, ctx: ApiContext) -> float:
    ttl = None
    for name in _LIFECYCLE_HEADERS:
        ttl = parse_lifecycle(request.headers.get(name), name)
        if ttl is not None:
            break
    return time.time() + (ttl if ttl is not None else ctx.settings.file_ttl_seconds)


def _file_name(name: str | None, content_type: str) -> str:
    if name:
        return name
    ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"upload{ext}"


def _content_type(request: Request, fallback: str = "application/octet-stream") -> str:
    return request.headers.get("content-type") or fallback


def _used_up() -> ApiError:
    return ApiError(409, "This upload URL was already used", loc=("path",), type="upload_used")


def _bad_capability() -> ApiError:
    return ApiError(
        403, "Upload URL is invalid or expired", loc=("path",), type="upload_url_invalid"
    )


async def _initiate_body(request: Request, ctx: ApiContext) -> tuple[str, str]:
    body = await read_body(request, 64 * 1024)
    data: Any = parse_json(body) if body.strip() else {}
    if not isinstance(data, dict):
        raise ApiError(422, "body must be a JSON object", type="dict_type")
    content_type = data.get("content_type") or "application/octet-stream"
    file_name = data.get("file_name")
    if not isinstance(content_type, str) or not (file_name is None or isinstance(file_name, str)):
        raise ApiError(422, "content_type and file_name must be strings", type="string_type")
    return content_type, _file_name(file_name, content_type)


# --- Python client: token + /files/upload ----------------------------------------------------


@router.post("/storage/auth/token")
async def auth_token(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key(request, ctx)
    token = ctx.signer.sign(UPLOAD_TOKEN_PURPOSE, {"o": owner}, TOKEN_TTL)
    # Expire a minute early on the client's clock so it never sends a token we just refused.
    expires = datetime.fromtimestamp(time.time() + TOKEN_TTL - 60, tz=timezone.utc)
    return JSONResponse(
        {
            "token": token,
            "token_type": "Bearer",
            "base_url": ctx.base_url(request),
            "expires_at": expires.isoformat(),
        }
    )


async def _count_upload(ctx: ApiContext, owner: str, size: int) -> None:
    """Count uploaded bytes against the key's day; 429 past its `upload_bytes_per_day`."""
    limit = (await key_limits(ctx, owner)).upload_bytes_per_day
    if await ctx.write(ctx.job_store.add_upload_bytes, owner, size, limit) is None:
        seconds = 86400 - int(time.time()) % 86400
        raise retry_later(
            429,
            f"This key may upload {limit} bytes a day (UTC)",
            ErrorType.UPLOAD_QUOTA_EXCEEDED,
            seconds,
        )


@router.post("/files/upload")
async def upload(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key_or_token(request, ctx)
    body, size = await spool_body(request, ctx.settings.max_body_bytes)
    with body:
        await _count_upload(ctx, owner, size)
        content_type = _content_type(request)
        key = new_key(_file_name(request.headers.get("x-fal-file-name"), content_type))
        await ctx.call(ctx.file_store.put, key, body, content_type, _expires_at(request, ctx))
    return JSONResponse({"access_url": file_url(ctx.base_url(request), key)})


@router.post("/files/upload/multipart")
async def upload_multipart_start(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key_or_token(request, ctx)
    content_type = _content_type(request)
    key = new_key(_file_name(request.headers.get("x-fal-file-name"), content_type))
    upload_id = await ctx.call(
        ctx.file_store.start_multipart, key, content_type, _expires_at(request, ctx)
    )
    handle = ctx.signer.sign(MULTIPART_PURPOSE, {"k": key, "u": upload_id, "o": owner}, 86400)
    return JSONResponse({"access_url": file_url(ctx.base_url(request), key), "uploadId": handle})


async def _multipart_claims(
    request: Request, ctx: ApiContext, key: str, handle: str
) -> dict[str, Any]:
    owner = await owner_from_key_or_token(request, ctx)
    claims = ctx.signer.verify(MULTIPART_PURPOSE, handle)
    if claims is None or claims["k"] != key or claims["o"] != owner:
        raise not_found("Upload")
    return claims


async def _put_part(request: Request, ctx: ApiContext, claims: dict[str, Any], n: int) -> str:
    if not 1 <= n <= 10_000:
        raise ApiError(422, "part number must be 1..10000", loc=("path", "part_number"))
    body, size = await spool_body(request, ctx.settings.max_body_bytes)
    with body:
        await _count_upload(ctx, str(claims["o"]), size)
        return await ctx.call(ctx.file_store.put_part, claims["k"], claims["u"], n, body)


def _parts_list(data: Any) -> list[tuple[int, str]]:
    parts = data.get("parts") if isinstance(data, dict) else None
    try:
        assert isinstance(parts, list) and parts
        listed = [(int(p["partNumber"]), str(p["etag"])) for p in parts]
    except (AssertionError, KeyError, TypeError, ValueError):
        raise ApiError(
            422, 'body must be {"parts": [{"partNumber": n, "etag": e}, …]}', type="value_error"
        ) from None
    # fal's Python client uploads parts concurrently and lists them in the order they finished;
    # stores (S3 too) want them ascending.
    listed.sort()
    if len({n for n, _ in listed}) != len(listed):
        raise ApiError(422, "a part is listed twice", type="value_error")
    return listed


async def _complete(request: Request, ctx: ApiContext, claims: dict[str, Any]) -> int:
    parts = _parts_list(parse_json(await read_body(request, 1024 * 1024)))
    async with _single_use(ctx, f"complete:{claims['u']}", claims):
        try:
            return await ctx.call(
                ctx.file_store.complete_multipart, claims["k"], claims["u"], parts
            )
        except (UploadError, FileNotFound) as exc:
            raise ApiError(422, f"cannot complete the upload: {exc}", type="value_error") from None


@contextlib.asynccontextmanager
async def _single_use(ctx: ApiContext, use: str, claims: dict[str, Any]) -> AsyncIterator[None]:
    """Run the block at most once per `use` of a capability, across concurrent requests and
    servers (the use is recorded in the job store, atomically: check and act are one step).
    A block that fails gives the use back."""
    if not await ctx.write(ctx.job_store.spend, use, float(claims["exp"])):
        raise _used_up()
    try:
        yield
    except BaseException:
        await ctx.write(ctx.job_store.unspend, use)
        raise


@router.put("/files/{key:path}/multipart/{handle}/{part_number:int}")
async def upload_part(
    key: str, handle: str, part_number: int, request: Request, ctx: Ctx
) -> Response:
    claims = await _multipart_claims(request, ctx, key, handle)
    etag = await _put_part(request, ctx, claims, part_number)
    return Response(status_code=200, headers={"ETag": etag})


@router.post("/files/{key:path}/multipart/{handle}/complete")
async def upload_complete(key: str, handle: str, request: Request, ctx: Ctx) -> Response:
    claims = await _multipart_claims(request, ctx, key, handle)
    size = await _complete(request, ctx, claims)
    return JSONResponse({"access_url": file_url(ctx.base_url(request), key), "size": size})


# --- JS clients: initiate + signed PUT -------------------------------------------------------


@router.post("/storage/upload/initiate")
async def initiate(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key(request, ctx)
    content_type, file_name = await _initiate_body(request, ctx)
    key = new_key(file_name)
    base = ctx.base_url(request)
    # A store that can take the bytes itself (S3) gets them directly; else we take the PUT.
    upload_url = await ctx.call(ctx.file_store.presigned_put_url, key, content_type, UPLOAD_URL_TTL)
    if upload_url is None:
        claims = {"k": key, "o": owner, "c": content_type, "x": _expires_at(request, ctx)}
        token = ctx.signer.sign(PUT_PURPOSE, claims, UPLOAD_URL_TTL)
        upload_url = f"{base}/storage/upload/put/{token}"
    return JSONResponse({"upload_url": upload_url, "file_url": file_url(base, key)})


@router.put("/storage/upload/put/{token}")
async def signed_put(token: str, request: Request, ctx: Ctx) -> Response:
    claims = ctx.signer.verify(PUT_PURPOSE, token)
    if claims is None or not await key_is_live(ctx, str(claims["o"])):
        raise _bad_capability()
    body, size = await spool_body(request, ctx.settings.max_body_bytes)
    content_type = request.headers.get("content-type") or claims["c"]
    with body:
        await _count_upload(ctx, str(claims["o"]), size)
        # Single use: a URL that leaked, or a second concurrent PUT, cannot overwrite the file.
        async with _single_use(ctx, f"put:{token.rsplit('.', 1)[-1]}", claims):
            await ctx.call(ctx.file_store.put, claims["k"], body, content_type, claims["x"])
    return Response(status_code=200)


@router.post("/storage/upload/initiate-multipart")
async def initiate_multipart(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key(request, ctx)
    content_type, file_name = await _initiate_body(request, ctx)
    key = new_key(file_name)
    upload_id = await ctx.call(
        ctx.file_store.start_multipart, key, content_type, _expires_at(request, ctx)
    )
    token = ctx.signer.sign(MULTIPART_PURPOSE, {"k": key, "u": upload_id, "o": owner}, 86400)
    base = ctx.base_url(request)
    return JSONResponse(
        {
            "upload_url": f"{base}/storage/upload/multipart/{token}",
            "file_url": file_url(base, key),
        }
    )


async def _js_multipart_claims(ctx: ApiContext, token: str) -> dict[str, Any]:
    # The URL is the capability (the JS client sends no key on these calls): it dies with
    # the key it was made for.
    claims = ctx.signer.verify(MULTIPART_PURPOSE, token)
    if claims is None or not await key_is_live(ctx, str(claims["o"])):
        raise _bad_capability()
    return claims


@router.put("/storage/upload/multipart/{token}/{part_number:int}")
async def js_upload_part(token: str, part_number: int, request: Request, ctx: Ctx) -> Response:
    claims = await _js_multipart_claims(ctx, token)
    etag = await _put_part(request, ctx, claims, part_number)
    return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"ETag": etag})


@router.post("/storage/upload/multipart/{token}/complete")
async def js_upload_complete(token: str, request: Request, ctx: Ctx) -> Response:
    claims = await _js_multipart_claims(ctx, token)
    size = await _complete(request, ctx, claims)
    return JSONResponse({"file_url": file_url(ctx.base_url(request), claims["k"]), "size": size})


# --- hosted files ----------------------------------------------------------------------------


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, stop) one `Range: bytes=…` header asks of a file of `size` bytes; None for
    the whole file (no header, or one we may ignore: another unit, several ranges, bad syntax).
    Raises ApiError 416 for a range that starts past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[6:].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or not (first + last).isdigit():
        return None
    if not first:  # the last `last` bytes
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:  # an invalid range: ignored (RFC 9110 §14.1.1)
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, size if not last else min(size, int(last) + 1)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        f"Range Not Satisfiable (the file has {size} bytes)",
        loc=("header", "range"),
        type="range_not_satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
    )


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"])
async def get_file(key: str, request: Request, ctx: Ctx) -> Response:
    """The file, streamed from the store a chunk at a time (memory stays flat in its size and
    in the number of downloads); one `Range` of bytes answers 206 with that part."""
    try:
        reader = await ctx.call(ctx.file_store.open, key)
    except FileNotFound:
        raise not_found("File") from None
    try:
        part = byte_range(request.headers.get("range"), reader.size)
    except ApiError:
        reader.close()
        raise
    start, stop = part or (0, reader.size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(stop - start),
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        # Uploaded bytes carry a type their uploader chose: never let them run as a page of
        # our origin (the playground's proxy session lives here).
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    status = 200
    if part is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{reader.size}"
    if request.method == "HEAD":
        reader.close()
        return Response(status_code=status, media_type=reader.content_type, headers=headers)
    # A plain iterator: Starlette reads it in a thread, a chunk per step, as the client takes it.
    return StreamingResponse(
        reader.chunks(start, stop),
        status_code=status,
        media_type=reader.content_type,
        headers=headers,
    )

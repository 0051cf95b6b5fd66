"""fal's queue and run routes for `fal-ai/aura-sr`: run (POST or GET), submit (POST or GET),
status, status stream, output stream (`/stream`), result, cancel (`docs/api.md`)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from superscale.api.auth import key_limits, owner_for_app
from superscale.api.context import ApiContext, Ctx, context_of, hold_remaining
from superscale.api.endpoints import ALIAS, resolve_endpoint
from superscale.api.errors import ApiError, not_found, retry_later
from superscale.api.inputs import parse_input, parse_options
from superscale.api.limits import retry_seconds
from superscale.errors import ErrorType
from superscale.files.urls import rebase
from superscale.jobs.records import CancelOutcome, Job, NewJob, QueueFull
from superscale.schemas import ENDPOINT_ID, batch_key

router = APIRouter()

REQUEST_ID_HEADER = "x-fal-request-id"
BILLABLE_UNITS_HEADER = "X-Fal-Billable-Units"
# How long one blocking wait lasts before we look at the client again (disconnects, positions).
WAIT_SLICE = 5.0
QUEUED_SLICE = 1.0  # queue positions move without the job's version changing
# Under the 10 s fal promises, and well under the 15 s after which fal-js's output stream
# reader gives up on a quiet stream.
KEEPALIVE = 5.0
RUN_SLICE = 2.0  # a sync run notices a client that hung up within about this long
QUEUE_FULL_RETRY = 0.25  # seconds between looks at a full queue while a submit waits
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _parse_logs_flag(request: Request) -> bool:
    value = request.query_params.get("logs")
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(422, "logs must be true, false, 1 or 0", loc=("query", "logs"))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def request_urls(base: str, request_id: str) -> dict[str, str]:
    root = f"{base}/queue/fal-ai/aura-sr/requests/{request_id}"
    return {"response_url": root, "status_url": f"{root}/status", "cancel_url": f"{root}/cancel"}


def _status_body(ctx: ApiContext, job: Job, base: str, with_logs: bool) -> dict[str, Any]:
    """QueueStatus for a job. Blocking (reads logs and position from the store)."""
    body: dict[str, Any] = {"status": job.state, "request_id": job.id}
    body.update(request_urls(base, job.id))
    logs = None
    if with_logs:
        logs = [
            {
                "message": r.message,
                "level": r.level,
                "source": "USER",
                "timestamp": _iso(r.timestamp),
            }
            for r in ctx.job_store.logs(job.id)
        ]
    if job.state == "IN_QUEUE":
        body["queue_position"] = ctx.job_store.queue_position(job.id)
    body["logs"] = logs
    if job.state == "COMPLETED":
        body["metrics"] = {"inference_time": job.inference_time}
        if job.error is not None:
            body["error"] = job.error.message
            body["error_type"] = job.error.error_type
        ctx.metrics.observe_finished(job)
    return body


def _status_code(job: Job) -> int:
    return 200 if job.state == "COMPLETED" else 202


def _may_exist(request_id: str) -> bool:
    """Whether a job could have this id (ours are UUIDs): a NUL, which PostgreSQL cannot even
    compare with, or an absurd length is a 404 without a query."""
    return 0 < len(request_id) <= 128 and "\x00" not in request_id


async def _owned_job(ctx: ApiContext, request_id: str, owner: str) -> Job:
    if not _may_exist(request_id):
        raise not_found()
    job = await ctx.read(ctx.job_store.get, request_id)
    if job is None or job.owner != owner:
        raise not_found()
    return job


async def _owner(request: Request, ctx: ApiContext) -> str:
    return await owner_for_app(request, ctx, ALIAS)


async def _submit(request: Request, ctx: ApiContext, endpoint: str, owner: str) -> Job:
    opts = parse_options(request, ctx.settings.ssrf_guard)
    inp = await parse_input(request, ctx)
    new = NewJob(
        endpoint=endpoint,
        owner=owner,
        input=inp.stored(),
        checkpoint=inp.checkpoint,
        webhook_url=opts.webhook_url,
        priority=opts.priority,
        start_deadline=opts.start_deadline,
        file_ttl=opts.file_ttl,
        request_id=str(uuid.uuid4()),
        batch_key=batch_key(inp),
        no_retry=opts.no_retry,
        store_io=opts.store_io,
    )
    per_key = (await key_limits(ctx, owner)).max_queue
    while True:
        try:
            return await ctx.write(
                ctx.job_store.submit, new, ctx.settings.max_queue, opts.max_waiting, per_key
            )
        except QueueFull as exc:
            # A full queue is waited out within the request's hold (fal-js gives up on a 429
            # after ~7 s); a caller's own fal_max_queue_length, or its key's share of the
            # queue, is answered at once: waiting is for others' bursts, not one's own.
            if exc.limit == "queue" and hold_remaining() > QUEUE_FULL_RETRY:
                await anyio.sleep(QUEUE_FULL_RETRY)
                continue
            seconds = retry_seconds(exc.retry_after)
            reason = {
                "caller": "More requests are waiting than fal_max_queue_length allows",
                "key": f"This key already has {per_key} requests queued, as many as it may",
            }.get(exc.limit, "The queue is full")
            raise retry_later(429, reason, ErrorType.QUEUE_FULL, seconds) from None


async def _cancel(ctx: ApiContext, request_id: str) -> CancelOutcome:
    # A queued job ends here and now; the store queues its webhook in the same transaction.
    return await ctx.write(ctx.job_store.cancel, request_id)


def billable_units(output: dict[str, Any]) -> str | None:
    """What a result bills: the output image's megapixels (`docs/api.md`)."""
    image = output.get("image")
    if not isinstance(image, dict):
        return None
    width, height = image.get("width"), image.get("height")
    if not isinstance(width, int) or not isinstance(height, int):
        return None
    return f"{width * height / 1e6:.6f}".rstrip("0").rstrip(".")


def error_response(job: Job) -> JSONResponse:
    """A failed job's answer: its error's status and body."""
    assert job.error is not None
    err = job.error
    headers = {REQUEST_ID_HEADER: job.id, "X-Fal-Error-Type": str(err.error_type)}
    if err.status_code == 504 and err.error_type in (ErrorType.REQUEST_TIMEOUT, "timeout"):
        headers["X-Fal-Request-Timeout-Type"] = "user"
    return JSONResponse(err.to_body(), status_code=err.status_code, headers=headers)


async def job_output(ctx: ApiContext, job: Job) -> dict[str, Any]:
    """A completed job's output; one that may not keep it (X-Fal-Store-IO: 0) gives it once,
    then answers 404."""
    if job.store_io:
        return job.output or {}
    output = await ctx.write(ctx.job_store.take_output, job.id)
    if output is None:
        raise ApiError(
            404,
            "The output of this request was not stored (X-Fal-Store-IO: 0) and has been read "
            "or has expired",
            loc=("path", "request_id"),
            type="output_not_stored",
            headers={REQUEST_ID_HEADER: job.id},
        )
    return output


async def result_response(ctx: ApiContext, job: Job, request: Request) -> Response:
    """A finished job's answer: its output, or its error's status and body."""
    if job.error is not None:
        return error_response(job)
    output = _rebase(await job_output(ctx, job), ctx, request)
    headers = {REQUEST_ID_HEADER: job.id}
    units = billable_units(output)
    if units is not None:
        headers[BILLABLE_UNITS_HEADER] = units
    return JSONResponse(output, headers=headers)


def _rebase(value: Any, ctx: ApiContext, request: Request) -> Any:
    """Point our own file URLs in an output at the host this client reached us by (workers
    write them with the configured public URL; behind TLS or a proxy that is not it)."""
    if ctx.settings.public_url:  # configured explicitly: that is the URL to hand out
        return value
    old, new = ctx.settings.resolved_public_url(), ctx.base_url(request)
    if old == new:
        return value
    if isinstance(value, str):
        return rebase(value, old, new)
    if isinstance(value, dict):
        return {k: _rebase(v, ctx, request) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, ctx, request) for v in value]
    return value


@dataclass
class Update:
    """One step of a job as its streams report it: the job, and its QueueStatus body with only
    the log lines new since the previous update (fal's JS client accumulates them itself)."""

    job: Job
    body: dict[str, Any]


async def job_updates(
    ctx: ApiContext, request_id: str, base: str, with_logs: bool
) -> AsyncIterator[Update | None]:
    """A job's updates until it completes (the last update), with None whenever `KEEPALIVE`
    passed without one — the stream's keep-alive, and how we notice a client that left."""
    version = -2
    last_seen: tuple[Any, ...] | None = None
    logs_sent = 0
    last_sent = time.monotonic()
    while True:
        job = await ctx.call(ctx.job_store.get, request_id)
        if job is None:
            return
        if job.version != version or job.state == "IN_QUEUE":
            version = job.version
            body = await ctx.call(_status_body, ctx, job, base, with_logs)
            all_logs = body["logs"] or []
            seen = (job.state, body.get("queue_position"), len(all_logs))
            if seen != last_seen:
                last_seen = seen
                if with_logs:
                    body["logs"] = all_logs[logs_sent:]
                    logs_sent = len(all_logs)
                last_sent = time.monotonic()
                yield Update(job, body)
        if job.state == "COMPLETED":
            return
        if time.monotonic() - last_sent >= KEEPALIVE:
            last_sent = time.monotonic()
            yield None
        slice_ = QUEUED_SLICE if job.state == "IN_QUEUE" else min(WAIT_SLICE, KEEPALIVE)
        await ctx.wait(ctx.job_store.wait_for_change, request_id, version, slice_)


def sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


SSE_KEEPALIVE = b": keepalive\n\n"


# --- queue -----------------------------------------------------------------------------------


@router.get("/queue/{app:path}/requests/{request_id}/status/stream")
async def status_stream(app: str, request_id: str, request: Request, ctx: Ctx) -> Response:
    resolve_endpoint(app)
    with_logs = _parse_logs_flag(request)
    owner = await _owner(request, ctx)
    await _owned_job(ctx, request_id, owner)
    base = ctx.base_url(request)

    async def events() -> AsyncIterator[bytes]:
        async for update in job_updates(ctx, request_id, base, with_logs):
            yield SSE_KEEPALIVE if update is None else sse(update.body)

    headers = {**SSE_HEADERS, REQUEST_ID_HEADER: request_id}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _owned_status(
    ctx: ApiContext, request_id: str, owner: str, base: str, with_logs: bool
) -> tuple[Job, dict[str, Any]] | None:
    """A job and its QueueStatus in one blocking call (one read where reads are local)."""
    job = ctx.job_store.get(request_id)
    if job is None or job.owner != owner:
        return None
    return job, _status_body(ctx, job, base, with_logs)


@router.get("/queue/{app:path}/requests/{request_id}/status")
async def status(app: str, request_id: str, request: Request) -> Response:
    # The hottest route (clients poll it): no dependency to solve.
    ctx = context_of(request)
    resolve_endpoint(app)
    with_logs = _parse_logs_flag(request)
    owner = await _owner(request, ctx)
    found = None
    if _may_exist(request_id):
        found = await ctx.read(
            _owned_status, ctx, request_id, owner, ctx.base_url(request), with_logs
        )
    if found is None:
        raise not_found()
    job, body = found
    return JSONResponse(body, status_code=_status_code(job), headers={REQUEST_ID_HEADER: job.id})


@router.put("/queue/{app:path}/requests/{request_id}/cancel")
async def cancel(app: str, request_id: str, request: Request, ctx: Ctx) -> Response:
    resolve_endpoint(app)
    owner = await _owner(request, ctx)
    job = await ctx.call(ctx.job_store.get, request_id) if _may_exist(request_id) else None
    if job is None or job.owner != owner:
        return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
    outcome = await _cancel(ctx, request_id)
    headers = {REQUEST_ID_HEADER: job.id}
    if outcome in (CancelOutcome.CANCELLED, CancelOutcome.REQUESTED):
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)
    if outcome is CancelOutcome.ALREADY_COMPLETED:
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400, headers=headers)
    return JSONResponse({"status": "NOT_FOUND"}, status_code=404)


@router.get("/queue/{app:path}/requests/{request_id}")
async def result(app: str, request_id: str, request: Request) -> Response:
    ctx = context_of(request)
    resolve_endpoint(app)
    owner = await _owner(request, ctx)
    job = await _owned_job(ctx, request_id, owner)
    if job.state != "COMPLETED":
        raise ApiError(
            400,
            f"Request is still {'in queue' if job.state == 'IN_QUEUE' else 'in progress'}",
            loc=("path", "request_id"),
            type="not_completed",
            headers={REQUEST_ID_HEADER: job.id},
        )
    ctx.metrics.observe_finished(job)
    return await result_response(ctx, job, request)


@router.api_route("/queue/{endpoint:path}", methods=["POST", "GET"])
async def submit(endpoint: str, request: Request) -> Response:
    ctx = context_of(request)
    endpoint_id = resolve_endpoint(endpoint)
    owner = await _owner(request, ctx)
    job = await _submit(request, ctx, endpoint_id, owner)
    body: dict[str, Any] = {
        "status": "IN_QUEUE",
        "request_id": job.id,
        "gateway_request_id": job.id,
        **request_urls(ctx.base_url(request), job.id),
        "queue_position": await ctx.read(ctx.job_store.queue_position, job.id),
    }
    return JSONResponse(body, headers={REQUEST_ID_HEADER: job.id})


# --- synchronous run (fal.run) and output stream ---------------------------------------------


async def run(endpoint: str, request: Request, ctx: Ctx) -> Response:
    """Submit, wait for the job to finish, answer its output (or its error)."""
    endpoint_id = resolve_endpoint(endpoint)
    owner = await _owner(request, ctx)
    job: Job | None = await _submit(request, ctx, endpoint_id, owner)
    assert job is not None
    version = job.version
    while job is not None and job.state != "COMPLETED":
        version = await ctx.wait(ctx.job_store.wait_for_change, job.id, version, RUN_SLICE)
        if await request.is_disconnected():
            # Nobody will read the answer: free the worker for someone who will.
            await _cancel(ctx, job.id)
            return Response(status_code=499)
        job = await ctx.call(ctx.job_store.get, job.id)
    if job is None:
        raise ApiError(500, "The request vanished from the job store", type="internal_error")
    ctx.metrics.observe_finished(job)
    return await result_response(ctx, job, request)


async def stream(endpoint: str, request: Request, ctx: Ctx) -> Response:
    """`POST /{endpoint}/stream`: run, answering server-sent events as fal's `stream()`
    clients read them — the job's QueueStatus updates while it waits and runs (with its new
    log lines), then one last event: the output, or the error body of a failed job."""
    endpoint_id = resolve_endpoint(endpoint)
    owner = await _owner(request, ctx)
    job = await _submit(request, ctx, endpoint_id, owner)
    base = ctx.base_url(request)

    async def events() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for update in job_updates(ctx, job.id, base, with_logs=True):
                if update is None:
                    yield SSE_KEEPALIVE
                elif update.job.state != "COMPLETED":
                    yield sse(update.body)
                elif update.job.error is not None:
                    finished = True
                    yield sse(update.job.error.to_body())
                else:
                    finished = True
                    ctx.metrics.observe_finished(update.job)
                    output = _rebase(await job_output(ctx, update.job), ctx, request)
                    yield sse(output)
        finally:
            if not finished:  # the client left: nobody will read the output
                with anyio.CancelScope(shield=True):
                    await _cancel(ctx, job.id)

    headers = {**SSE_HEADERS, REQUEST_ID_HEADER: job.id}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


# The endpoint's own paths and the methods each answers; another method there is a 405.
_METHODS = [
    (re.compile(rf"(?:queue/)?{re.escape(ENDPOINT_ID)}/?"), "GET, POST"),
    (re.compile(rf"{re.escape(ENDPOINT_ID)}/stream/?"), "GET, POST"),
    (re.compile(rf"queue/{re.escape(ENDPOINT_ID)}/requests/[^/]+(?:/status(?:/stream)?)?"), "GET"),
    (re.compile(rf"queue/{re.escape(ENDPOINT_ID)}/requests/[^/]+/cancel"), "PUT"),
]


async def no_route(endpoint: str) -> Response:
    for path, method in _METHODS:
        if path.fullmatch(endpoint):
            raise ApiError(
                405,
                f"Method Not Allowed (this path answers {method})",
                loc=("path",),
                type="method_not_allowed",
                headers={"Allow": method},
            )
    raise ApiError(404, "Not Found", loc=("path",), type="not_found")


async def run_or_no_route(endpoint: str, request: Request, ctx: Ctx) -> Response:
    """GET on a path of ours that no other route took: a run when it names the endpoint
    (`@fal-ai/client`'s `method: "get"`: the input in the query string), else 404 or 405."""
    if endpoint.strip("/") == ENDPOINT_ID:
        return await run(endpoint, request, ctx)
    return await no_route(endpoint)


def add_run_route(app_router: APIRouter) -> None:
    """The output stream and the catch-all `POST|GET /{endpoint}`: registered last so they
    never shadow other routes. Other methods on unknown paths answer 404 (not the 405 the
    catch-all would imply)."""
    app_router.add_api_route("/{endpoint:path}/stream", stream, methods=["POST", "GET"])
    app_router.add_api_route("/{endpoint:path}", run, methods=["POST"])
    app_router.add_api_route("/{endpoint:path}", run_or_no_route, methods=["GET"])
    app_router.add_api_route(
        "/{endpoint:path}", no_route, methods=["HEAD", "PUT", "PATCH", "DELETE"]
    )
    # OPTIONS elsewhere keeps the router's own 405 (it lists the path's methods); here the
    # catch-all would list POST alone.
    for path in (ENDPOINT_ID, f"queue/{ENDPOINT_ID}"):
        app_router.add_api_route(f"/{path}", _options(path), methods=["OPTIONS"])


def _options(path: str) -> Callable[[], Awaitable[Response]]:
    async def options() -> Response:
        return await no_route(path)

    return options

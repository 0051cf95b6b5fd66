"""Operational routes: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from superscale import webhooks
from superscale.api import metrics
from superscale.api.context import Ctx
from superscale.api.openapi import build_openapi

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/health")
async def health() -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(ctx: Ctx) -> Response:
    """Readiness: the job store answers (a server that cannot reach it cannot take work)."""
    try:
        counts = await ctx.call(ctx.job_store.counts)
    except Exception as exc:  # any store failure means "not ready", never a 500
        # /ready is unauthenticated: the cause (it may name the database's user, host, port
        # and name) goes to the log only.
        log.warning("not ready: the job store is unavailable: %s", exc)
        return JSONResponse(
            {"status": "unavailable", "reason": "job store unavailable"}, status_code=503
        )
    free = await ctx.call(ctx.file_store.free_bytes)
    if free is not None and free < ctx.settings.min_free_bytes:
        log.warning("not ready: %d bytes free on the file store's disk", free)
        return JSONResponse(
            {"status": "unavailable", "reason": "file store disk full"}, status_code=503
        )
    return JSONResponse({"status": "ready", "jobs": counts})


@router.get("/metrics")
async def get_metrics(ctx: Ctx) -> Response:
    body = await ctx.call(ctx.metrics.render)
    return Response(body, media_type=metrics.CONTENT_TYPE)


@router.get("/.well-known/jwks.json")
async def jwks_document(ctx: Ctx) -> Response:
    """The public keys webhook receivers verify our signatures with."""
    if ctx.webhook_signer is not None:
        return JSONResponse(ctx.webhook_signer.jwks())
    return JSONResponse(await ctx.call(webhooks.jwks, ctx.settings))


@router.get("/openapi.json")
async def openapi(request: Request, ctx: Ctx) -> Response:
    return JSONResponse(build_openapi(ctx.base_url(request), ctx.settings.checkpoints))

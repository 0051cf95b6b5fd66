"""`create_app`: the ASGI app serving fal's protocol for `fal-ai/aura-sr`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from superscale.api import maintenance, ops, proxy, queue, storage, tokens
from superscale.api.context import ApiContext, HoldMiddleware
from superscale.api.errors import (
    ApiError,
    api_error_handler,
    file_not_found_handler,
    http_error_handler,
    storage_full_handler,
    store_unavailable_handler,
    unexpected_error_handler,
    upload_error_handler,
)
from superscale.api.hotpath import HotPaths
from superscale.api.metrics import HttpMetricsMiddleware, Metrics
from superscale.api.signing import Signer, load_secret
from superscale.files.base import FileNotFound, FileStore, StorageFull, UploadError
from superscale.jobs.records import StoreUnavailable
from superscale.jobs.store import JobStore
from superscale.settings import Settings
from superscale.webhooks import WebhookSigner

log = logging.getLogger("superscale.api")

EXPOSED_HEADERS = (
    "x-fal-request-id",
    "x-fal-billable-units",
    "x-fal-error-type",
    "x-fal-request-timeout-type",
    "x-fal-retryable",
    "retry-after",
    "etag",
)


def create_app(
    settings: Settings,
    job_store: JobStore,
    file_store: FileStore,
    *,
    maintenance_interval: float = maintenance.INTERVAL,
    file_sweep_interval: float = maintenance.FILE_INTERVAL,
) -> FastAPI:
    """The API over the given stores. The caller owns the stores (and closes them).

    Raises ValueError when the configured webhook key is unusable (better at start than as a
    500 on `/.well-known/jwks.json`)."""
    ctx = ApiContext(
        settings=settings,
        job_store=job_store,
        file_store=file_store,
        signer=Signer(load_secret(settings)),
        metrics=Metrics(job_store),
        webhook_signer=WebhookSigner.from_settings(settings),
    )
    if not settings.auth:
        log.warning(
            "!!! AUTH IS OFF (--no-auth): anyone who can reach %s can run jobs and upload "
            "files. Use this only on a trusted machine. !!!",
            settings.resolved_public_url(),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(
            maintenance.run_forever(ctx, maintenance_interval, file_sweep_interval)
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # FastAPI's generated document would describe our catch-all routes; we serve the
    # endpoint's own document at /openapi.json instead.
    app = FastAPI(
        title="superscale",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(StoreUnavailable, store_unavailable_handler)
    app.add_exception_handler(FileNotFound, file_not_found_handler)
    app.add_exception_handler(UploadError, upload_error_handler)
    app.add_exception_handler(StorageFull, storage_full_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.add_middleware(proxy.ProxyMiddleware)
    app.add_middleware(HoldMiddleware, seconds=settings.busy_hold)
    app.add_middleware(HttpMetricsMiddleware, metrics=ctx.metrics)
    # Browser apps on other origins call us with a key header and PUT to signed upload URLs,
    # as they do fal. No credentials: cookies (the proxy session) never work cross-origin.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=list(EXPOSED_HEADERS),
    )
    # Outermost: the hottest routes skip everything above (see its docstring).
    app.add_middleware(HotPaths, seconds=settings.busy_hold)

    # The queue's routes first: they are the ones polled, and no other router's paths overlap.
    for router in (queue.router, ops.router, proxy.router, storage.router, tokens.router):
        app.include_router(router)
    with contextlib.suppress(ImportError):  # the playground is optional
        from superscale.api.playground import router as playground_router

        app.include_router(playground_router)
    last = APIRouter()
    queue.add_run_route(last)  # the catch-all POST /{endpoint}: after every other route
    app.include_router(last)
    return app

"""What every route needs, built once per app: settings, stores, signers, metrics."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ParamSpec, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Request

from superscale.api.metrics import Metrics
from superscale.api.signing import Signer
from superscale.files.base import FileStore
from superscale.files.urls import file_url
from superscale.jobs.store import JobStore
from superscale.settings import Settings
from superscale.webhooks import WebhookSigner

P = ParamSpec("P")
T = TypeVar("T")

# Long waits (sync run, SSE stream) get their own thread pool, so that many open streams
# cannot starve the short store calls every other request makes.
WAIT_THREADS = 256
# Job store writes get a pool of their own too: on SQLite a write lock held by another process
# (a separate worker, a backup) keeps writes waiting up to the busy timeout, and they must not
# take the threads reads need (status polls read a WAL database without waiting on anyone).
WRITE_THREADS = 16


@dataclass
class ApiContext:
    settings: Settings
    job_store: JobStore
    file_store: FileStore
    signer: Signer
    metrics: Metrics
    # The webhook key whose JWKS we publish (None: loaded from `settings` on each request).
    webhook_signer: WebhookSigner | None = None
    wait_limiter: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(WAIT_THREADS))
    write_limiter: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(WRITE_THREADS))

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call off the event loop (reads, and file store calls)."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a job store write off the event loop, in the write pool."""
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.write_limiter
        )

    async def wait(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a long blocking wait (e.g. `wait_for_change`) in the wait pool."""
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.wait_limiter
        )

    def base_url(self, request: Request) -> str:
        """Where clients reach us: the configured public URL, else the request's own scheme
        and Host (so TLS, other ports and proxies that set X-Forwarded-* just work)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    def own_netlocs(self, request: Request) -> set[str]:
        """Host[:port] forms under which a URL points at this server."""
        netlocs = {request.url.netloc, urlsplit(self.settings.resolved_public_url()).netloc}
        netlocs.add(urlsplit(self.base_url(request)).netloc)
        return {n.lower() for n in netlocs if n}

    def canonical_file_url(self, key: str) -> str:
        """Our file URLs as stored in job inputs: on the configured public URL, which the
        worker (which has no request) recognises and reads from the store directly."""
        return file_url(self.settings.resolved_public_url(), key)


def get_ctx(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]

"""What every route needs, built once per app: settings, stores, signers, metrics."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, ParamSpec, TypeVar
from urllib.parse import urlsplit

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from superscale.api.limits import KeyCache, RateLimiter
from superscale.api.metrics import Metrics
from superscale.api.signing import Signer
from superscale.files.base import FileStore
from superscale.files.urls import file_url
from superscale.jobs.records import StoreUnavailable, outage_delays
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

# Until when (monotonic) the request being served waits out an unreachable job store: set per
# request by `HoldMiddleware`; 0 (outside requests: housekeeping) means not at all.
_hold_until: ContextVar[float] = ContextVar("superscale_hold_until", default=0.0)


def start_hold(seconds: float) -> None:
    """The request being served may wait out a store outage for `seconds` from now."""
    _hold_until.set(time.monotonic() + seconds)


def hold_remaining() -> float:
    """Seconds the current request may still wait for the store (or the queue) to recover."""
    return _hold_until.get() - time.monotonic()


# Probes and metrics answer at once: an orchestrator asks them to learn about an outage.
UNHELD_PATHS = frozenset({"/health", "/ready", "/metrics"})


class HoldMiddleware:
    """Gives each HTTP request `seconds` from its arrival to ride out a job store outage
    before it answers 503 (see `Settings.busy_hold`); a stream or run older than that meets
    an outage at once."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNHELD_PATHS:
            start_hold(self.seconds)
        await self.app(scope, receive, send)


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
    keys: KeyCache = field(init=False)
    rates: RateLimiter = field(default_factory=RateLimiter)

    def __post_init__(self) -> None:
        self.keys = KeyCache(self.job_store, self.settings.key_cache_seconds)

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A job store read: on the event loop where reads are local (SQLite) — a thread hop
        costs more than the read — waiting only briefly for a lock; else, or when that wait
        runs out, as `call` does."""
        if self.job_store.local_reads:
            try:
                with self.job_store.quick():
                    return fn(*args, **kwargs)
            except StoreUnavailable:
                pass
        return await self.call(fn, *args, **kwargs)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call off the event loop (reads, and file store calls)."""
        return await _held(functools.partial(fn, *args, **kwargs), None)

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a job store write off the event loop, in the write pool. A write whose commit
        answer was lost in an outage is tried again: a submit then finds the job it inserted
        (idempotent by request id); a one-time use (a signed URL, an unstored output) may
        then read as already used — a refusal, never a job lost or run twice."""
        return await _held(functools.partial(fn, *args, **kwargs), self.write_limiter)

    async def wait(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a long blocking wait (e.g. `wait_for_change`) in the wait pool."""
        return await _held(functools.partial(fn, *args, **kwargs), self.wait_limiter)

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


async def _held(call: Callable[[], T], limiter: CapacityLimiter | None) -> T:
    """`call` in a thread; tried again while the store is unreachable and the request's hold
    lasts (`HoldMiddleware`), so that a short outage delays answers instead of failing them."""
    delays = outage_delays()
    while True:
        try:
            return await anyio.to_thread.run_sync(call, limiter=limiter)
        except StoreUnavailable:
            remaining = hold_remaining()
            if remaining <= 0:
                raise
            await anyio.sleep(min(next(delays), remaining))


def context_of(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


async def get_ctx(request: Request) -> ApiContext:
    # async: FastAPI runs a plain function dependency in a thread, a hop on every request.
    return context_of(request)


Ctx = Annotated[ApiContext, Depends(get_ctx)]

"""The superscale Python client: fal_client's conveniences, pointed at your own server.

    import superscale.client as sc
    result = sc.subscribe("fal-ai/aura-sr", {"image_url": Path("photo.jpg")})
    result.image.download("photo_4x.png")

The module-level functions use a default client configured from the environment
(`SUPERSCALE_URL`, `FAL_KEY` or `FAL_KEY_ID` + `FAL_KEY_SECRET`); the `_async` ones an
`AsyncClient` per event loop. Build `SyncClient` / `AsyncClient` yourself for anything else.

Uploads use fal's Python flow: one storage token (cached until it nears expiry), then one
`POST /files/upload` per file. The JS initiate + PUT flow would cost two requests per file and
a signed URL each time, for no gain to a client that already holds a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from superscale.client._protocol import RetryPolicy
from superscale.client.aio import AsyncClient, AsyncRequestHandle
from superscale.client.errors import (
    AuthenticationError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    RequestCancelledError,
    RequestTimeoutError,
    ServerError,
    SuperscaleError,
    ValidationError,
)
from superscale.client.results import AuraSrResult, Image
from superscale.client.status import Completed, InProgress, Queued, Status
from superscale.client.sync import SyncClient, SyncRequestHandle

__all__ = [
    "AsyncClient",
    "AsyncRequestHandle",
    "AuraSrResult",
    "AuthenticationError",
    "Completed",
    "Image",
    "InProgress",
    "NetworkError",
    "NotFoundError",
    "Queued",
    "RateLimitedError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServerError",
    "Status",
    "SuperscaleError",
    "SyncClient",
    "SyncRequestHandle",
    "ValidationError",
    "cancel",
    "cancel_async",
    "result",
    "result_async",
    "run",
    "run_async",
    "status",
    "status_async",
    "stream",
    "stream_async",
    "submit",
    "submit_async",
    "subscribe",
    "subscribe_async",
    "upload",
    "upload_async",
    "upload_file",
    "upload_file_async",
    "upload_image",
    "upload_image_async",
]

_default_sync: SyncClient | None = None
# An httpx.AsyncClient's connections belong to one event loop: one default client per loop.
_default_async: tuple[asyncio.AbstractEventLoop, AsyncClient] | None = None


def default_client() -> SyncClient:
    """The client the module-level functions use, built from the environment on first use."""
    global _default_sync
    if _default_sync is None:
        _default_sync = SyncClient()
    return _default_sync


def default_async_client() -> AsyncClient:
    global _default_async
    loop = asyncio.get_running_loop()
    if _default_async is None or _default_async[0] is not loop:
        _default_async = (loop, AsyncClient())
    return _default_async[1]


def subscribe(
    endpoint: str,
    arguments: dict[str, Any],
    *,
    on_enqueue: Callable[[str], Any] | None = None,
    on_queue_update: Callable[[Status], Any] | None = None,
    with_logs: bool = False,
    timeout: float | None = None,
    interval: float | None = None,
    webhook_url: str | None = None,
    priority: str | None = None,
    start_timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """`SyncClient.subscribe` on the default client."""
    return default_client().subscribe(
        endpoint,
        arguments,
        on_enqueue=on_enqueue,
        on_queue_update=on_queue_update,
        with_logs=with_logs,
        timeout=timeout,
        interval=interval,
        webhook_url=webhook_url,
        priority=priority,
        start_timeout=start_timeout,
        headers=headers,
    )


def submit(
    endpoint: str,
    arguments: dict[str, Any],
    *,
    webhook_url: str | None = None,
    priority: str | None = None,
    start_timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> SyncRequestHandle:
    """`SyncClient.submit` on the default client."""
    return default_client().submit(
        endpoint,
        arguments,
        webhook_url=webhook_url,
        priority=priority,
        start_timeout=start_timeout,
        headers=headers,
    )


def status(endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
    return default_client().status(endpoint, request_id, with_logs=with_logs)


def result(endpoint: str, request_id: str) -> Any:
    return default_client().result(endpoint, request_id)


def cancel(endpoint: str, request_id: str) -> None:
    default_client().cancel(endpoint, request_id)


def stream(endpoint: str, request_id: str, *, with_logs: bool = False) -> Iterator[Status]:
    return default_client().stream(endpoint, request_id, with_logs=with_logs)


def run(endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None) -> Any:
    return default_client().run(endpoint, arguments, timeout=timeout)


def upload(data: bytes, content_type: str, file_name: str | None = None) -> str:
    return default_client().upload(data, content_type, file_name)


def upload_file(path: str | Path) -> str:
    return default_client().upload_file(path)


def upload_image(image: Any, format: str = "png") -> str:
    return default_client().upload_image(image, format)


async def subscribe_async(
    endpoint: str,
    arguments: dict[str, Any],
    *,
    on_enqueue: Callable[[str], Any] | None = None,
    on_queue_update: Callable[[Status], Any] | None = None,
    with_logs: bool = False,
    timeout: float | None = None,
    interval: float | None = None,
    webhook_url: str | None = None,
    priority: str | None = None,
    start_timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """`AsyncClient.subscribe` on the default client of this event loop."""
    return await default_async_client().subscribe(
        endpoint,
        arguments,
        on_enqueue=on_enqueue,
        on_queue_update=on_queue_update,
        with_logs=with_logs,
        timeout=timeout,
        interval=interval,
        webhook_url=webhook_url,
        priority=priority,
        start_timeout=start_timeout,
        headers=headers,
    )


async def submit_async(
    endpoint: str,
    arguments: dict[str, Any],
    *,
    webhook_url: str | None = None,
    priority: str | None = None,
    start_timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncRequestHandle:
    """`AsyncClient.submit` on the default client of this event loop."""
    return await default_async_client().submit(
        endpoint,
        arguments,
        webhook_url=webhook_url,
        priority=priority,
        start_timeout=start_timeout,
        headers=headers,
    )


async def status_async(endpoint: str, request_id: str, *, with_logs: bool = False) -> Status:
    return await default_async_client().status(endpoint, request_id, with_logs=with_logs)


async def result_async(endpoint: str, request_id: str) -> Any:
    return await default_async_client().result(endpoint, request_id)


async def cancel_async(endpoint: str, request_id: str) -> None:
    await default_async_client().cancel(endpoint, request_id)


def stream_async(
    endpoint: str, request_id: str, *, with_logs: bool = False
) -> AsyncIterator[Status]:
    return default_async_client().stream(endpoint, request_id, with_logs=with_logs)


async def run_async(
    endpoint: str, arguments: dict[str, Any], *, timeout: float | None = None
) -> Any:
    return await default_async_client().run(endpoint, arguments, timeout=timeout)


async def upload_async(data: bytes, content_type: str, file_name: str | None = None) -> str:
    return await default_async_client().upload(data, content_type, file_name)


async def upload_file_async(path: str | Path) -> str:
    return await default_async_client().upload_file(path)


async def upload_image_async(image: Any, format: str = "png") -> str:
    return await default_async_client().upload_image(image, format)

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
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

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

P = ParamSpec("P")
R = TypeVar("R")

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


# The module-level functions are the clients' own methods, called on the default client: the
# parameters are declared once, on the methods, and carried over exactly (ParamSpec), so type
# checkers and help() show each function's real signature.


def _carry(method: Callable[..., Any], call: Callable[..., Any]) -> None:
    """Give `call` the method's name, docstring and signature less `self` (for help())."""
    functools.update_wrapper(call, method)
    call.__qualname__ = method.__name__
    signature = inspect.signature(method)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    del call.__wrapped__  # type: ignore[attr-defined]


def _on_default_client(method: Callable[Concatenate[SyncClient, P], R]) -> Callable[P, R]:
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(default_client(), *args, **kwargs)

    _carry(method, call)
    return call


def _on_default_async_client(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await method(default_async_client(), *args, **kwargs)

    _carry(method, call)
    return call


def _iterating_on_default_async_client(
    method: Callable[Concatenate[AsyncClient, P], R],
) -> Callable[P, R]:
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(default_async_client(), *args, **kwargs)

    _carry(method, call)
    return call


subscribe = _on_default_client(SyncClient.subscribe)
submit = _on_default_client(SyncClient.submit)
status = _on_default_client(SyncClient.status)
result = _on_default_client(SyncClient.result)
cancel = _on_default_client(SyncClient.cancel)
stream = _on_default_client(SyncClient.stream)
run = _on_default_client(SyncClient.run)
upload = _on_default_client(SyncClient.upload)
upload_file = _on_default_client(SyncClient.upload_file)
upload_image = _on_default_client(SyncClient.upload_image)

subscribe_async = _on_default_async_client(AsyncClient.subscribe)
submit_async = _on_default_async_client(AsyncClient.submit)
status_async = _on_default_async_client(AsyncClient.status)
result_async = _on_default_async_client(AsyncClient.result)
cancel_async = _on_default_async_client(AsyncClient.cancel)
stream_async = _iterating_on_default_async_client(AsyncClient.stream)
run_async = _on_default_async_client(AsyncClient.run)
upload_async = _on_default_async_client(AsyncClient.upload)
upload_file_async = _on_default_async_client(AsyncClient.upload_file)
upload_image_async = _on_default_async_client(AsyncClient.upload_image)

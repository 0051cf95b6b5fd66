"""The routes clients call most — status polls, results, submits of `fal-ai/aura-sr` at their
canonical paths — dispatched straight to their handlers in `queue.py`, past the framework's
route matching, dependency solving and middleware layers, which cost more than the handlers
themselves (`benchmarks/api.py`).

Only the plain case is taken: a request with an `Origin` (a browser: CORS applies) or on any
other path goes through the whole app as before. What the skipped layers do for these routes is
done here: the store-outage hold, the request metrics, exception handlers (the app's own).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from superscale.api import queue
from superscale.api.context import start_hold
from superscale.api.metrics import RequestTimer
from superscale.schemas import ENDPOINT_ID

_ID = r"(?P<request_id>[^/]+)"
_PREFIX = f"/queue/{re.escape(ENDPOINT_ID)}"
Handler = Callable[[re.Match[str], Request], Awaitable[Response]]


async def _status(m: re.Match[str], request: Request) -> Response:
    return await queue.status(ENDPOINT_ID, m["request_id"], request)


async def _result(m: re.Match[str], request: Request) -> Response:
    return await queue.result(ENDPOINT_ID, m["request_id"], request)


async def _submit(m: re.Match[str], request: Request) -> Response:
    return await queue.submit(ENDPOINT_ID, request)


# (method, path, the route template the metrics name it by, handler)
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = [
    (
        "GET",
        re.compile(f"{_PREFIX}/requests/{_ID}/status"),
        "/queue/{app:path}/requests/{request_id}/status",
        _status,
    ),
    (
        "GET",
        re.compile(f"{_PREFIX}/requests/{_ID}"),
        "/queue/{app:path}/requests/{request_id}",
        _result,
    ),
    ("POST", re.compile(_PREFIX), "/queue/{endpoint:path}", _submit),
]


class HotPaths:
    """ASGI middleware: the app's outermost of its own."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.hold_seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for method, path, template, handler in ROUTES:
                if scope["method"] != method:
                    continue
                match = path.fullmatch(scope["path"])
                if match is not None and not _has_origin(scope):
                    await self._answer(scope, receive, send, template, handler, match)
                    return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        template: str,
        handler: Handler,
        match: re.Match[str],
    ) -> None:
        start_hold(self.hold_seconds)
        app: FastAPI = scope["app"]
        timer = RequestTimer(app.state.ctx.metrics, scope["method"], lambda: template)
        request = Request(scope, receive)
        try:
            try:
                response = await handler(match, request)
            except Exception as exc:
                response = await _handled(app, request, exc)
            await response(scope, receive, timer.send(send))
        finally:
            timer.finish()


async def _handled(app: FastAPI, request: Request, exc: Exception) -> Response:
    """The answer the app's own exception handlers give (the most specific one)."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            assert isinstance(response, Response)
            return response
    raise exc


def _has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])

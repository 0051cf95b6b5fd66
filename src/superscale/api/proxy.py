"""The browser proxy route `/api/fal/proxy`, as `@fal-ai/server-proxy` offers it.

Browsers must not hold an API key. fal's JS clients, given `proxyUrl`, send each request here
with `x-fal-target-url: <the fal URL they meant>`; we map the fal host to our own routes and
dispatch the request in-process (no outbound HTTP, streaming preserved), acting as:

- nobody in particular (owner "") when auth is off;
- with auth on, the key that opened a *proxy session*: `POST /api/fal/proxy/session` with
  `Authorization: Key …` sets an HttpOnly, SameSite=Strict cookie bound to that key (see
  `grant_proxy_session`, which the playground may call from its own routes);
- or the key of a server-side app that sends `Authorization: Key …` itself (a Node app with
  `proxyUrl`: the recipe that keeps working once fal-js refuses to send credentials to hosts
  that are not fal's).

Without a valid session or key the proxy answers 401.

A missing target, an unknown host or a target back at the proxy is 400.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from superscale.api.auth import PROXY_OWNER_SCOPE_KEY, owner_from_key
from superscale.api.context import ApiContext, Ctx
from superscale.api.errors import ApiError

PROXY_PATH = "/api/fal/proxy"
SESSION_COOKIE = "superscale_proxy"
SESSION_PURPOSE = "proxy-session"
SESSION_TTL = 12 * 3600.0

# fal host → the prefix of our routes that stands in for it.
HOST_PREFIXES = {
    "fal.run": "",
    "queue.fal.run": "/queue",
    "rest.fal.ai": "",
    "rest.alpha.fal.ai": "",
    "v3.fal.media": "",
}
_DROP_HEADERS = {b"x-fal-target-url", b"authorization", b"cookie", b"host"}

router = APIRouter()


def grant_proxy_session(response: Response, ctx: ApiContext, owner: str, secure: bool) -> float:
    """Set the proxy session cookie on `response`, acting as `owner` (a key id).
    Returns the session's expiry (unix time)."""
    # "n" names the session, so that signing out can revoke it (`JobStore.spend`).
    session = {"o": owner, "n": secrets.token_urlsafe(12)}
    token = ctx.signer.sign(SESSION_PURPOSE, session, SESSION_TTL)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_TTL),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    claims = ctx.signer.verify(SESSION_PURPOSE, token)
    assert claims is not None
    return float(claims["exp"])


def _session_claims(ctx: ApiContext, cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    claims = ctx.signer.verify(SESSION_PURPOSE, cookie)
    return claims if claims is not None and claims.get("n") else None


async def proxy_session_owner(ctx: ApiContext, cookie: str | None) -> str | None:
    """The key id a proxy session cookie acts as; None when it is missing, forged, expired,
    signed out, or its key is revoked."""
    claims = _session_claims(ctx, cookie)
    if claims is None or await ctx.call(ctx.job_store.is_spent, f"session:{claims['n']}"):
        return None
    owner = str(claims["o"])
    key = await ctx.call(ctx.job_store.get_key, owner)
    return None if key is None or key.revoked_at is not None else owner


@router.post(f"{PROXY_PATH}/session")
async def open_session(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key(request, ctx)
    response = Response(status_code=204)
    grant_proxy_session(response, ctx, owner, request.url.scheme == "https")
    return response


@router.delete(f"{PROXY_PATH}/session")
async def close_session(request: Request, ctx: Ctx) -> Response:
    """Sign out: the session is revoked in the store (a copy of the cookie stops working on
    every server), and the browser's cookie is deleted."""
    claims = _session_claims(ctx, request.cookies.get(SESSION_COOKIE))
    if claims is not None:
        await ctx.write(ctx.job_store.spend, f"session:{claims['n']}", float(claims["exp"]))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def map_target(target: str) -> tuple[str, bytes] | None:
    """`https://queue.fal.run/fal-ai/aura-sr?x=1` → (`/queue/fal-ai/aura-sr`, b"x=1")."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in HOST_PREFIXES:
        return None
    path = HOST_PREFIXES[host] + (parts.path or "/")
    if path.rstrip("/") == PROXY_PATH or path.startswith(PROXY_PATH + "/"):
        return None
    return path, parts.query.encode()


class ProxyMiddleware:
    """Rewrites `/api/fal/proxy` requests into requests for our own routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PROXY_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "POST", "PUT"):
            await _answer(send, 405, "Method not allowed", "method_not_allowed")
            return
        request = Request(scope)
        ctx: ApiContext = scope["app"].state.ctx
        target = request.headers.get("x-fal-target-url")
        if not target:
            await _answer(send, 400, "Missing the x-fal-target-url header", "missing_target")
            return
        mapped = map_target(target)
        if mapped is None:
            await _answer(send, 400, f"Target URL not allowed: {target}", "target_not_allowed")
            return
        owner: str | None = ""
        if ctx.settings.auth:
            owner = await proxy_session_owner(ctx, request.cookies.get(SESSION_COOKIE))
            if owner is None and "authorization" in request.headers:
                try:
                    owner = await owner_from_key(request, ctx)
                except ApiError as exc:
                    await exc.response()(scope, receive, send)
                    return
            if owner is None:
                await _answer(
                    send,
                    401,
                    "No proxy session or key: open a session, or send Authorization: Key …",
                    "unauthorized",
                )
                return
        path, query = mapped
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROP_HEADERS]
        host = request.headers.get("host")
        if host:
            headers.append((b"host", host.encode("latin-1")))
        # In place, as Starlette's router does, so outer middleware (metrics) sees the route.
        scope.update(
            path=path,
            raw_path=path.encode(),
            query_string=query,
            headers=headers,
            **{PROXY_OWNER_SCOPE_KEY: owner},
        )
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, msg: str, type_: str) -> None:
    body: dict[str, Any] = {
        "detail": [{"loc": ["header", "x-fal-target-url"], "msg": msg, "type": type_}]
    }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})

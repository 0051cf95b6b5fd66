"""Who is calling: an API key, an app token (`fal_jwt_token`), an upload token, or the browser
proxy's session.

The owner id returned here (a key id; "" when auth is off) is written on jobs and checked on
every read: another key's request is answered 404, as if it did not exist.
"""

from __future__ import annotations

from fastapi import Request

from superscale.api.context import ApiContext
from superscale.api.errors import ApiError, retry_later
from superscale.api.keys import verify_key
from superscale.api.limits import KeyLimits, retry_seconds
from superscale.errors import ErrorType
from superscale.jobs.records import ApiKey

# Set by the proxy middleware on requests it dispatches in-process; clients cannot set scope
# keys, so this cannot be forged from outside.
PROXY_OWNER_SCOPE_KEY = "superscale.proxy_owner"
UPLOAD_TOKEN_PURPOSE = "upload-token"
APP_TOKEN_PURPOSE = "app-token"
APP_TOKEN_PARAM = "fal_jwt_token"


def unauthorized(msg: str = "Invalid or missing API key") -> ApiError:
    return ApiError(
        401,
        msg,
        loc=("header", "authorization"),
        type="unauthorized",
        headers={"WWW-Authenticate": "Key"},
    )


async def owner_from_key(request: Request, ctx: ApiContext) -> str:
    """The caller's key id, from `Authorization: Key key_id:secret`."""
    if PROXY_OWNER_SCOPE_KEY in request.scope:
        return str(request.scope[PROXY_OWNER_SCOPE_KEY])
    if not ctx.settings.auth:
        admit(ctx, "", None)
        return ""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        raise unauthorized(
            "Bearer tokens (fal's user login) are not accepted by this server: set FAL_KEY "
            "to a key of this server (`superscale keys create`), sent as `Authorization: Key …`"
        )
    if scheme.lower() != "key" or not credential:
        raise unauthorized()
    if ctx.keys.cached(credential.strip().partition(":")[0]) is not None:
        key = verify_key(ctx.keys.cached, credential)  # no store read: on the loop
    else:
        key = await ctx.call(verify_key, ctx.keys.get, credential)
    if key is None:
        raise unauthorized()
    admit(ctx, key.key_id, key)
    return key.key_id


async def key_limits(ctx: ApiContext, owner: str) -> KeyLimits:
    """The limits of the key `owner` (the server's when auth is off)."""
    key = await _key(ctx, owner) if ctx.settings.auth and owner else None
    return KeyLimits.of(key, ctx.settings)


async def _key(ctx: ApiContext, key_id: str) -> ApiKey | None:
    """The key's record: the cached one (no store read), else read in a thread."""
    return ctx.keys.cached(key_id) or await ctx.call(ctx.keys.get, key_id)


def admit(ctx: ApiContext, owner: str, key: ApiKey | None) -> None:
    """Count a request against its key's requests per second; 429 past them."""
    rate = KeyLimits.of(key, ctx.settings).max_rps
    if rate is None:
        return
    wait = ctx.rates.wait_time(owner, rate)
    if wait > 0:
        raise retry_later(
            429,
            f"This key may send {rate:g} requests per second",
            ErrorType.RATE_LIMITED,
            retry_seconds(wait),
        )


async def owner_for_app(request: Request, ctx: ApiContext, alias: str) -> str:
    """Like `owner_from_key`, also accepting `?fal_jwt_token=` — an app token of `/tokens/`
    (fal's client-mode streams) — when it was made for this app (`alias`) and has not expired,
    acting as the key that asked for it."""
    token = request.query_params.get(APP_TOKEN_PARAM)
    if token is None or PROXY_OWNER_SCOPE_KEY in request.scope or not ctx.settings.auth:
        return await owner_from_key(request, ctx)
    claims = ctx.signer.verify(APP_TOKEN_PURPOSE, token)
    if claims is None:
        raise unauthorized("Invalid or expired fal_jwt_token")
    if alias not in claims["apps"]:
        raise unauthorized(f"This fal_jwt_token is not valid for the app {alias!r}")
    owner = str(claims["o"])
    key = await live_key(ctx, owner)
    if key is None:
        raise unauthorized("The key this fal_jwt_token was made for is revoked")
    admit(ctx, owner, key)
    return owner


async def live_key(ctx: ApiContext, owner: str) -> ApiKey | None:
    """The key a capability was made for (`owner`, a key id) while it may still be used: a
    revoked key's tokens, signed URLs and sessions die with it."""
    key = await _key(ctx, owner)
    return key if key is not None and key.revoked_at is None else None


async def key_is_live(ctx: ApiContext, owner: str) -> bool:
    """Whether a capability made for `owner` may still be used. Always true with auth off."""
    return not ctx.settings.auth or await live_key(ctx, owner) is not None


async def owner_from_key_or_token(request: Request, ctx: ApiContext) -> str:
    """Like `owner_from_key`, also accepting the upload token of `/storage/auth/token`."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and PROXY_OWNER_SCOPE_KEY not in request.scope:
        claims = ctx.signer.verify(UPLOAD_TOKEN_PURPOSE, credential.strip())
        if claims is None:
            raise unauthorized("Invalid or expired upload token")
        owner = str(claims["o"])
        key = await live_key(ctx, owner)
        if key is None:
            raise unauthorized("The key this upload token was made for is revoked")
        admit(ctx, owner, key)
        return owner
    return await owner_from_key(request, ctx)

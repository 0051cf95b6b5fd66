"""Who is calling: an API key, an app token (`fal_jwt_token`), an upload token, or the browser
proxy's session.

The owner id returned here (a key id; "" when auth is off) is written on jobs and checked on
every read: another key's request is answered 404, as if it did not exist.
"""

from __future__ import annotations

from fastapi import Request

from superscale.api.context import ApiContext
from superscale.api.errors import ApiError
from superscale.api.keys import verify_key

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
        return ""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        raise unauthorized(
            "Bearer tokens (fal's user login) are not accepted by this server: set FAL_KEY "
            "to a key of this server (`superscale keys create`), sent as `Authorization: Key …`"
        )
    if scheme.lower() != "key" or not credential:
        raise unauthorized()
    key_id = await ctx.call(verify_key, ctx.job_store, credential)
    if key_id is None:
        raise unauthorized()
    return key_id


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
    if not await key_is_live(ctx, owner):
        raise unauthorized("The key this fal_jwt_token was made for is revoked")
    return owner


async def key_is_live(ctx: ApiContext, owner: str) -> bool:
    """Whether a capability made for `owner` (a key id) may still be used: a revoked key's
    tokens, signed URLs and sessions die with it. Always true with auth off."""
    if not ctx.settings.auth:
        return True
    key = await ctx.call(ctx.job_store.get_key, owner)
    return key is not None and key.revoked_at is None


async def owner_from_key_or_token(request: Request, ctx: ApiContext) -> str:
    """Like `owner_from_key`, also accepting the upload token of `/storage/auth/token`."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and PROXY_OWNER_SCOPE_KEY not in request.scope:
        claims = ctx.signer.verify(UPLOAD_TOKEN_PURPOSE, credential.strip())
        if claims is None:
            raise unauthorized("Invalid or expired upload token")
        owner = str(claims["o"])
        if not await key_is_live(ctx, owner):
            raise unauthorized("The key this upload token was made for is revoked")
        return owner
    return await owner_from_key(request, ctx)

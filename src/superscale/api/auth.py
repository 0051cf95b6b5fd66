"""Who is calling: an API key, an upload token, or the browser proxy's session.

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
    if scheme.lower() != "key" or not credential:
        raise unauthorized()
    key_id = await ctx.call(verify_key, ctx.job_store, credential)
    if key_id is None:
        raise unauthorized()
    return key_id


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

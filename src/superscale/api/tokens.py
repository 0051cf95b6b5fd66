"""`POST /tokens/`: fal's short-lived app tokens (`fal-protocol.md` §8).

A caller holding a key asks for a token scoped to some apps and a lifetime, and hands it to code
that must not hold the key — fal's JS client does so for client-mode streams — which then sends
it as `?fal_jwt_token=` instead of `Authorization`. The token is signed with the server's secret
(any server of a cluster checks it), acts as the key that asked (the same isolation, dead once
that key is revoked), and is refused for other apps and once expired (`auth.owner_for_app`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from superscale.api.auth import APP_TOKEN_PURPOSE, owner_from_key
from superscale.api.context import Ctx
from superscale.api.errors import validation_error
from superscale.api.inputs import parse_json, read_body

router = APIRouter()

MAX_TOKEN_SECONDS = 24 * 3600
MAX_BODY = 64 * 1024


class TokenRequest(BaseModel):
    # App aliases (`aura-sr`), as fal's clients send them; a full id names its alias too.
    allowed_apps: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=32
    )
    token_expiration: int = Field(default=120, ge=1, le=MAX_TOKEN_SECONDS)


@router.post("/tokens/")
@router.post("/tokens")
async def create_token(request: Request, ctx: Ctx) -> Response:
    owner = await owner_from_key(request, ctx)
    data = parse_json(await read_body(request, MAX_BODY))
    try:
        asked = TokenRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    apps = sorted({app.strip("/").rsplit("/", 1)[-1] for app in asked.allowed_apps})
    claims = {"o": owner, "apps": apps}
    token = ctx.signer.sign(APP_TOKEN_PURPOSE, claims, asked.token_expiration)
    # fal answers the token as a bare JSON string; both clients read that.
    return JSONResponse(token, status_code=201)

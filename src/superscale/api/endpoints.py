"""fal's endpoint ids, parsed exactly as fal's clients parse them.

`owner/alias[/path]`; a lone `123-alias` segment is the legacy form of `123/alias`; a first
segment `workflows` or `comfy` is a namespace. We serve one endpoint: `fal-ai/aura-sr`, with
no sub-path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from superscale.api.errors import ApiError
from superscale.schemas import ENDPOINT_ID

NAMESPACES = ("workflows", "comfy")
_LEGACY = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")
OWNER, ALIAS = ENDPOINT_ID.split("/")


@dataclass(frozen=True)
class AppId:
    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None


def parse_app_id(endpoint_id: str) -> AppId | None:
    """None when fal's clients would reject the id."""
    parts = endpoint_id.strip("/").split("/")
    if len(parts) == 1:
        match = _LEGACY.match(parts[0])
        if not match:
            return None
        parts = [match.group(1), match.group(2)]
    if parts[0] in NAMESPACES:
        if len(parts) < 3:
            return None
        return AppId(parts[1], parts[2], "/".join(parts[3:]) or None, parts[0])
    if not parts[0] or not parts[1]:
        return None
    return AppId(parts[0], parts[1], "/".join(parts[2:]) or None)


def resolve_endpoint(endpoint_id: str, *, allow_path: bool = False) -> str:
    """The endpoint id we serve for a path's endpoint part, or a 404.

    Submit and run carry the full id (a sub-path would name another endpoint); status,
    result and cancel carry only `[ns/]owner/alias`."""
    app = parse_app_id(endpoint_id)
    if (
        app is None
        or app.namespace is not None
        or (app.owner, app.alias) != (OWNER, ALIAS)
        or (app.path is not None and not allow_path)
    ):
        raise ApiError(
            404, f"Endpoint {endpoint_id!r} not found", loc=("path", "endpoint"), type="not_found"
        )
    return ENDPOINT_ID

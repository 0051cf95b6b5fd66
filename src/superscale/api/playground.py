"""The playground: a page at `/` and `/playground` to try the endpoint from a browser.

Plain static files (HTML, CSS, JS modules; no build step, nothing from a CDN), so it works
offline. The page reaches the API only through the browser proxy route `/api/fal/proxy`; no key
ever reaches it. Assets are served from a fixed list of the files in `static/`, never from a
path the request names.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

STATIC_DIR = Path(__file__).parent / "static"
ASSET_PREFIX = "/playground/assets"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only what ships in static/, looked up by name: nothing else on disk can be reached.
_ASSETS = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _CONTENT_TYPES}

# The page loads only its own files; images may come from anywhere (an input URL, a file
# store on another host), and so may uploads (signed upload URLs of an S3 file store).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: http: https:",
        "connect-src 'self' http: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    # Revalidate on every load (ETag makes that cheap): an upgraded server never serves a
    # page with a stale script.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=_CONTENT_TYPES[path.suffix], headers=_HEADERS)


@router.get("/")
@router.get("/playground")
def page() -> FileResponse:
    """The playground page."""
    response = _file(_ASSETS["index.html"])
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@router.get(ASSET_PREFIX + "/{name}")
def asset(name: str) -> Response:
    """One of the page's static files."""
    path = _ASSETS.get(name)
    if path is None or name == "index.html":
        return Response("Not found", status_code=404, media_type="text/plain")
    return _file(path)

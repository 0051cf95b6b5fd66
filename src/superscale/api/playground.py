"""The playground: a page at `/` and `/playground` to try the endpoint from a browser.

Plain static files (HTML, CSS, JS modules; no build step, nothing from a CDN), so it works
offline. The page reaches the API only through the browser proxy route `/api/fal/proxy`; no key
ever reaches it. Assets are served from a fixed list of the files in `static/`, never from a
path the request names.

Access with auth on: the proxy accepts a session cookie (`superscale.api.proxy`). A browser gets
one from a login link (`login_url`; `login_banner` is the text `superscale serve` prints, and
`superscale login-link` makes one for a running server): opening `/playground/login?token=…`
asks for a click (so that link previewers cannot spend it), whose POST sets the cookie and
spends the link (one use per server process; links also expire). Holders of
a key can open a session themselves with `POST /api/fal/proxy/session` and `Authorization: Key …`.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from superscale.api.context import ApiContext, Ctx
from superscale.api.proxy import SESSION_COOKIE, grant_proxy_session, proxy_session_owner
from superscale.api.signing import Signer, load_secret
from superscale.jobs.store import JobStore
from superscale.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
ASSET_PREFIX = "/playground/assets"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def _load(path: Path) -> _Asset:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:32]
    return _Asset(data, gzip.compress(data, 9, mtime=0), _CONTENT_TYPES[path.suffix], f'"{digest}"')


# Only what ships in static/, looked up by name: nothing else on disk can be reached. Read once
# (about 55 kB): served from memory, compressed ahead, revalidated by ETag.
_ASSETS = {
    p.name: _load(p) for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _CONTENT_TYPES
}

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


LOGIN_PURPOSE = "playground-login"
LOGIN_TTL = 24 * 3600.0


def login_url(signer: Signer, base_url: str, owner: str, ttl: float = LOGIN_TTL) -> str:
    """A login link for the playground: opening it gives that browser a proxy session acting
    as `owner` (a key id). Works once per server process and for `ttl` seconds; the link is a
    credential, so print it only where the key could be read too (the server's own console)."""
    token = signer.sign(LOGIN_PURPOSE, {"o": owner, "n": secrets.token_urlsafe(12)}, ttl)
    return f"{base_url.rstrip('/')}/playground/login?token={token}"


def login_banner(settings: Settings, job_store: JobStore, key_id: str | None = None) -> str | None:
    """The lines `superscale serve` prints at start so that a person can open the playground:
    a login link acting as `key_id` (default: the newest active key). None with auth off (the
    page needs no login then) or when no key is active."""
    if not settings.auth:
        return None
    if key_id is None:
        active = [k for k in job_store.list_keys() if k.revoked_at is None]
        if not active:
            return None
        key_id = max(active, key=lambda k: k.created_at).key_id
    link = login_url(Signer(load_secret(settings)), settings.resolved_public_url(), key_id)
    hours = LOGIN_TTL / 3600
    return (
        f"Playground: open this link once to use it as key {key_id} "
        f"(valid {hours:.0f} h; `superscale login-link` makes another):\n    {link}"
    )


def _serve(request: Request, asset: _Asset, headers: dict[str, str] | None = None) -> Response:
    """An asset with its ETag: 304 when the browser's copy is current, gzip when accepted."""
    all_headers = {**_HEADERS, **(headers or {}), "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=all_headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        all_headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=all_headers)
    return Response(asset.body, media_type=asset.media_type, headers=all_headers)


@router.api_route("/", methods=["GET", "HEAD"])
@router.api_route("/playground", methods=["GET", "HEAD"])
def page(request: Request) -> Response:
    """The playground page."""
    csp = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return _serve(request, _ASSETS["index.html"], csp)


@router.api_route(ASSET_PREFIX + "/{name}", methods=["GET", "HEAD"])
def asset(request: Request, name: str) -> Response:
    """One of the page's static files."""
    found = _ASSETS.get(name)
    if found is None or name == "index.html":
        return Response("Not found", status_code=404, media_type="text/plain")
    return _serve(request, found)


async def _session_key(request: Request, ctx: ApiContext) -> str | None:
    """The key id this browser's proxy session acts as, when it is valid and the key live."""
    return await proxy_session_owner(ctx, request.cookies.get(SESSION_COOKIE))


@router.get("/playground/access")
async def access(request: Request, ctx: Ctx) -> JSONResponse:
    """Whether this browser may use the API through the proxy, and as which key."""
    if not ctx.settings.auth:
        return JSONResponse({"auth": False, "access": True, "key_id": None})
    key_id = await _session_key(request, ctx)
    return JSONResponse(
        {"auth": True, "access": key_id is not None, "key_id": key_id},
        headers={"Cache-Control": "no-store"},
    )


async def _login_owner(ctx: ApiContext, token: str) -> tuple[str, str, float] | str:
    """(key id, its use's name, expiry) of a live login link, or why it cannot be used. Uses
    are recorded in the job store: single use holds across restarts and servers."""
    claims = ctx.signer.verify(LOGIN_PURPOSE, token)
    if claims is None:
        return "This login link is not valid, or it has expired."
    owner, use = str(claims.get("o", "")), f"login:{claims.get('n', '')}"
    key = await ctx.call(ctx.job_store.get_key, owner)
    if key is None or key.revoked_at is not None:
        return "The key this login link acts as no longer exists or has been revoked."
    if await ctx.call(ctx.job_store.is_spent, use):
        return "This login link has already been used."
    return owner, use, float(claims["exp"])


@router.get("/playground/login")
async def login_page(ctx: Ctx, token: str = "") -> Response:
    """Ask before spending the link: a GET may come from a link previewer or a prefetch,
    which must not use up a one-time link."""
    if not ctx.settings.auth:
        return RedirectResponse("/playground", status_code=303)
    checked = await _login_owner(ctx, token)
    if isinstance(checked, str):
        return _login_refused(checked)
    body = f"""<h2>Open the playground</h2>
<p>This link lets this browser use the API as key <code>{html.escape(checked[0])}</code>,
through the server: the key itself never reaches the page. It works once.</p>
<form method="post" action="/playground/login">
<input type="hidden" name="token" value="{html.escape(token)}">
<button id="login" type="submit" class="primary">Continue to the playground</button>
</form>"""
    return _login_html(body, 200)


@router.post("/playground/login")
async def login(request: Request, ctx: Ctx) -> Response:
    """Spend a login link: set the proxy session cookie, then show the playground."""
    if not ctx.settings.auth:
        return RedirectResponse("/playground", status_code=303)
    form = parse_qs((await request.body())[:8192].decode("latin-1"))
    checked = await _login_owner(ctx, (form.get("token") or [""])[0])
    if isinstance(checked, str):
        return _login_refused(checked)
    owner, use, expires_at = checked
    if not await ctx.write(ctx.job_store.spend, use, expires_at):  # a concurrent request won
        return _login_refused("This login link has already been used.")
    response = RedirectResponse("/playground", status_code=303)
    grant_proxy_session(response, ctx, owner, secure=request.url.scheme == "https")
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_refused(reason: str) -> HTMLResponse:
    body = f"""<h2>No access</h2><p>{html.escape(reason)}</p>
<p>Make a fresh login link with <code>superscale login-link</code> on the server (or
restart <code>superscale serve</code>, which prints one), or start the server with
<code>--no-auth</code> on a trusted machine.</p>
<p><a href="/playground">Back to the playground</a></p>"""
    return _login_html(body, 401)


def _login_html(content: str, status: int) -> HTMLResponse:
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>superscale · login</title>
<link rel="stylesheet" href="{ASSET_PREFIX}/playground.css"></head>
<body><main class="layout single"><section class="panel">
{content}
</section></main></body></html>"""
    headers = {
        **_HEADERS,
        "Cache-Control": "no-store",
        # The token is in this page's URL: never send it on as a Referer.
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    }
    return HTMLResponse(page, status_code=status, headers=headers)

"""The playground's routes over HTTP on the real server (no browser needed): the page and its
assets, the access check, and login links traded for a proxy session cookie."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from superscale.api.keys import create_key
from superscale.api.playground import LOGIN_PURPOSE, login_banner, login_url
from superscale.api.signing import Signer, load_secret
from superscale.jobs import JobStore, open_job_store
from superscale.settings import Settings

from .conftest import Server, start_server, stop_server

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
PROXY = "/api/fal/proxy"


@pytest.fixture
def store(auth_server: Server) -> Iterator[JobStore]:
    """The server's own job store (SQLite in its data dir), to make and revoke keys."""
    job_store = open_job_store(f"sqlite:///{auth_server.data_dir / 'superscale.db'}")
    yield job_store
    job_store.close()


@pytest.fixture
def signer(auth_server: Server) -> Signer:
    return Signer(load_secret(Settings(data_dir=auth_server.data_dir)))


def _status_via_proxy(client: httpx.Client, server: Server) -> httpx.Response:
    target = f"https://queue.fal.run/fal-ai/aura-sr/requests/{uuid.uuid4()}/status"
    return client.get(f"{server.url}{PROXY}", headers={"x-fal-target-url": target})


def _login(client: httpx.Client, link: str) -> httpx.Response:
    """What a person does with a login link: open it, press Continue (a form POST)."""
    page = client.get(link)
    if page.status_code != 200:
        return page
    assert "set-cookie" not in page.headers, "opening the link alone must not spend it"
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(link.split("?")[0], data={"token": token.group(1)})


def test_page_and_every_asset_it_loads(auth_server: Server) -> None:
    for path in ("/", "/playground"):
        page = httpx.get(auth_server.url + path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        head = httpx.head(auth_server.url + path)
        assert head.status_code == 200 and head.content == b""
    assets = set(re.findall(r'(?:src|href)="(/playground/assets/[^"]+)"', page.text))
    assert {"/playground/assets/main.js", "/playground/assets/playground.css"} <= assets
    # Follow the module graph: every import must be served, with a type browsers accept.
    pending, seen = list(assets), set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = httpx.get(auth_server.url + path)
        assert response.status_code == 200, path
        suffix = path[path.rindex(".") :]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix]), path
        # Revalidation is cheap: the ETag answers 304 with no body.
        etag = response.headers["etag"]
        again = httpx.get(auth_server.url + path, headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b"", path
        if suffix == ".js":
            for name in re.findall(r'from "\./([\w.-]+)"', response.text):
                pending.append(f"/playground/assets/{name}")
    assert {"/playground/assets/api.js", "/playground/assets/compare.js"} <= seen
    # Compressed for browsers that take it (httpx does, and decodes it transparently).
    main = httpx.get(f"{auth_server.url}/playground/assets/main.js")
    assert main.headers["content-encoding"] == "gzip"
    assert int(main.headers["content-length"]) < len(main.content) / 2
    assert "import * as api" in main.text


@pytest.mark.parametrize(
    "path",
    [
        "/playground/assets/playground.py",
        "/playground/assets/..%2Fplayground.py",
        "/playground/assets/index.html",
        "/playground/assets/missing.js",
    ],
)
def test_only_listed_assets_are_served(auth_server: Server, path: str) -> None:
    response = httpx.get(auth_server.url + path)
    # An encoded slash leaves the asset route altogether (405 from the POST-only run route).
    assert response.status_code in (404, 405), response.text
    assert "STATIC_DIR" not in response.text


def test_no_session_no_access(auth_server: Server) -> None:
    with httpx.Client() as client:
        access = client.get(f"{auth_server.url}/playground/access").json()
        assert access == {"auth": True, "access": False, "key_id": None}
        assert _status_via_proxy(client, auth_server).status_code == 401


def test_login_link_opens_one_session(auth_server: Server, store: JobStore, signer: Signer) -> None:
    key, _ = create_key(store, "playground test")
    link = login_url(signer, auth_server.url, key.key_id)
    assert link.startswith(f"{auth_server.url}/playground/login?token=")
    with httpx.Client() as client:
        assert client.get(link).status_code == 200  # a previewer's GET spends nothing
        response = _login(client, link)
        assert response.status_code == 303
        assert response.headers["location"] == "/playground"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        access = client.get(f"{auth_server.url}/playground/access").json()
        assert access == {"auth": True, "access": True, "key_id": key.key_id}
        # The proxy now acts as that key: an unknown request is 404, no longer 401.
        assert _status_via_proxy(client, auth_server).status_code == 404
    with httpx.Client() as other:
        again = _login(other, link)
        assert again.status_code == 401
        assert "already been used" in again.text
        token = link.rsplit("=", 1)[1]
        replay = other.post(f"{auth_server.url}/playground/login", data={"token": token})
        assert replay.status_code == 401 and "set-cookie" not in replay.headers
        assert _status_via_proxy(other, auth_server).status_code == 401


def test_forged_expired_or_foreign_links_are_refused(
    auth_server: Server, store: JobStore, signer: Signer
) -> None:
    key, _ = create_key(store, "playground test")
    good = login_url(signer, auth_server.url, key.key_id)
    forged = Signer(b"not the server's secret")
    links = {
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "wrong secret": login_url(forged, auth_server.url, key.key_id),
        "expired": login_url(signer, auth_server.url, key.key_id, ttl=-10),
        "other purpose": f"{auth_server.url}/playground/login?token="
        + signer.sign("proxy-session", {"o": key.key_id, "n": "x"}, 60),
        "unknown key": login_url(signer, auth_server.url, "0000000000000000"),
        "no token": f"{auth_server.url}/playground/login",
    }
    for what, link in links.items():
        with httpx.Client() as client:
            response = client.get(link)
            assert response.status_code == 401, what
            assert "set-cookie" not in response.headers, what
            assert "superscale login-link" in response.text, what
            token = link.split("token=")[1] if "token=" in link else ""
            posted = client.post(f"{auth_server.url}/playground/login", data={"token": token})
            assert posted.status_code == 401 and "set-cookie" not in posted.headers, what
    assert signer.verify(LOGIN_PURPOSE, good.rsplit("=", 1)[1]) is not None


def test_revoking_the_key_ends_the_session(
    auth_server: Server, store: JobStore, signer: Signer
) -> None:
    key, _ = create_key(store, "playground test")
    with httpx.Client() as client:
        assert _login(client, login_url(signer, auth_server.url, key.key_id)).status_code == 303
        assert _status_via_proxy(client, auth_server).status_code == 404
        store.revoke_key(key.key_id)
        assert client.get(f"{auth_server.url}/playground/access").json()["access"] is False
        assert _status_via_proxy(client, auth_server).status_code == 401
    with httpx.Client() as client:
        response = _login(client, login_url(signer, auth_server.url, key.key_id))
        assert response.status_code == 401 and "revoked" in response.text


def test_login_banner_names_the_newest_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    job_store = open_job_store(settings.resolved_database_url())
    try:
        assert login_banner(settings, job_store) is None  # no key yet
        create_key(job_store, "old")
        newest, _ = create_key(job_store, "new")
        banner = login_banner(settings, job_store)
        assert banner is not None and newest.key_id in banner
        token = banner.rsplit("token=", 1)[1].strip()
        claims = Signer(load_secret(settings)).verify(LOGIN_PURPOSE, token)
        assert claims is not None and claims["o"] == newest.key_id
        assert login_banner(Settings(data_dir=tmp_path, auth=False), job_store) is None
    finally:
        job_store.close()


def test_serve_prints_a_working_login_link(auth_server: Server) -> None:
    """`superscale serve` with auth on prints a login link for its (here: first) key."""
    output = auth_server.output()
    first_key = re.search(r"FAL_KEY=(\w+):", output)
    link = re.search(r"(http://\S+/playground/login\?token=\S+)", output)
    assert first_key and link, output
    with httpx.Client() as client:
        assert _login(client, link.group(1)).status_code == 303
        access = client.get(f"{auth_server.url}/playground/access").json()
        assert access["key_id"] == first_key.group(1)


def test_login_link_stays_spent_after_a_restart(tmp_path: Path) -> None:
    """Single use was remembered per process: the link worked again after a restart (or on
    another server of a cluster). Uses now live in the job store."""
    data_dir = tmp_path / "data"
    first = start_server(data_dir, None, "--workers", "0")
    try:
        job_store = open_job_store(f"sqlite:///{data_dir / 'superscale.db'}")
        try:
            key, _ = create_key(job_store, "restart test")
        finally:
            job_store.close()
        signer = Signer(load_secret(Settings(data_dir=data_dir)))
        token = login_url(signer, first.url, key.key_id).rsplit("=", 1)[1]
        with httpx.Client() as client:
            used = client.post(f"{first.url}/playground/login", data={"token": token})
            assert used.status_code == 303
    finally:
        stop_server(first)
    second = start_server(data_dir, None, "--workers", "0")
    try:
        with httpx.Client() as client:
            replay = client.post(f"{second.url}/playground/login", data={"token": token})
            assert replay.status_code == 401 and "already been used" in replay.text
            assert "set-cookie" not in replay.headers
    finally:
        stop_server(second)


def test_signing_out_revokes_a_copied_session_cookie(
    auth_server: Server, store: JobStore, signer: Signer
) -> None:
    """Logout only deleted the browser's cookie: a copy of it stayed valid for 12 hours."""
    key, _ = create_key(store, "logout test")
    with httpx.Client() as client:
        assert _login(client, login_url(signer, auth_server.url, key.key_id)).status_code == 303
        cookie = client.cookies.get("superscale_proxy")
        assert cookie
        assert _status_via_proxy(client, auth_server).status_code == 404  # the session works
        assert client.delete(f"{auth_server.url}{PROXY}/session").status_code == 204
    with httpx.Client(cookies={"superscale_proxy": cookie}) as thief:
        access = thief.get(f"{auth_server.url}/playground/access").json()
        assert access["access"] is False
        assert _status_via_proxy(thief, auth_server).status_code == 401

"""Forged tokens holding non-ASCII characters are refused like any other forgery: 401, 403 or
404, never a 500 (`hmac.compare_digest` raises on non-ASCII str; tokens are compared as bytes).
One request per route that takes a signed token: signed upload URLs, multipart handles (both
clients' flows), upload tokens, playground login links and the proxy session cookie (whose
access check answers 200 "no access")."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .server import LiveServer

FORGED = ["é.é", "abc.dé", "ü", "x.\u2603"]


@pytest.mark.parametrize("token", FORGED)
def test_non_ascii_tokens_are_refused_not_500(server: LiveServer, token: str) -> None:
    path_token = quote(token, safe="")
    raw = token.encode("utf-8")  # headers carry bytes
    with server.client() as c:
        key = c.post("/files/upload", content=b"x", headers={"Content-Type": "text/plain"})
        assert key.status_code == 200, key.text
        file_key = key.json()["access_url"].split("/files/", 1)[1]
        answers = {
            "signed PUT": c.put(f"/storage/upload/put/{path_token}", content=b"x"),
            "JS multipart part": c.put(f"/storage/upload/multipart/{path_token}/1", content=b"x"),
            "JS multipart complete": c.post(
                f"/storage/upload/multipart/{path_token}/complete", json={"parts": []}
            ),
            "Python multipart part": c.put(
                f"/files/{file_key}/multipart/{path_token}/1", content=b"x"
            ),
            "Python multipart complete": c.post(
                f"/files/{file_key}/multipart/{path_token}/complete", json={"parts": []}
            ),
            "login link (GET)": c.get("/playground/login", params={"token": token}),
            "login link (POST)": c.post("/playground/login", data={"token": token}),
        }
    with server.client(key="") as anonymous:
        answers["upload token"] = anonymous.post(
            "/files/upload", content=b"x", headers={"Authorization": b"Bearer " + raw}
        )
        access = anonymous.get("/playground/access", headers={"Cookie": b"superscale_proxy=" + raw})
    # The access check answers whether this browser has a session: it has none.
    assert access.status_code == 200 and access.json()["access"] is False
    for route, answer in answers.items():
        assert answer.status_code in (400, 401, 403, 404, 422), (route, answer.status_code)

"""The three upload flows of fal's clients, byte-exact, and hosted files."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import httpx

from .server import LiveServer

BLOB = os.urandom(200_000)


def python_token(c: httpx.Client) -> dict:
    r = c.post("/storage/auth/token?storage_type=fal-cdn-v3", json={})
    assert r.status_code == 200, r.text
    return r.json()


def test_python_token_flow(server: LiveServer) -> None:
    with server.client() as c:
        tok = python_token(c)
        assert tok["token_type"] == "Bearer" and tok["base_url"] == server.url
        expires = datetime.fromisoformat(tok["expires_at"])
        assert expires.tzinfo is not None and expires > datetime.now(timezone.utc)
    bearer = {"Authorization": f"Bearer {tok['token']}"}
    with httpx.Client(base_url=server.url, headers=bearer) as c:
        r = c.post(
            "/files/upload",
            content=BLOB,
            headers={"Content-Type": "image/webp", "X-Fal-File-Name": "cat photo.webp"},
        )
        assert r.status_code == 200, r.text
        url = r.json()["access_url"]
        assert url.startswith(f"{server.url}/files/") and url.endswith("/cat_photo.webp")
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == BLOB
    assert got.headers["content-type"] == "image/webp"
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(BLOB)
    assert "sandbox" in got.headers["content-security-policy"]


def test_forged_or_tampered_tokens_are_refused(server: LiveServer) -> None:
    with server.client() as c:
        token = python_token(c)["token"]
    payload, mac = token.split(".")
    forged = [f"{payload}.{'A' * len(mac)}", f"{payload[:-2]}xx.{mac}", "x.y", "nodot"]
    for bad in forged:
        r = httpx.post(
            f"{server.url}/files/upload", content=b"x", headers={"Authorization": f"Bearer {bad}"}
        )
        assert r.status_code == 401, bad


def test_python_multipart_flow(server: LiveServer) -> None:
    parts = [BLOB[:100_000], BLOB[100_000:150_000], BLOB[150_000:]]
    with server.client() as c:
        token = python_token(c)
    auth = {"Authorization": f"Bearer {token['token']}"}
    with httpx.Client(headers=auth) as c:
        r = c.post(
            f"{token['base_url']}/files/upload/multipart",
            headers={"Content-Type": "image/png", "X-Fal-File-Name": "big.png"},
        )
        assert r.status_code == 200, r.text
        access_url, upload_id = r.json()["access_url"], r.json()["uploadId"]
        etags = []
        for n, part in enumerate(parts, 1):
            r = c.put(f"{access_url}/multipart/{upload_id}/{n}", content=part)
            assert r.status_code == 200, r.text
            etags.append({"partNumber": n, "etag": r.headers["etag"]})
        # Another key cannot touch this upload.
        other = server.new_key()
        r = httpx.post(
            f"{access_url}/multipart/{upload_id}/complete",
            json={"parts": etags},
            headers={"Authorization": f"Key {other}"},
        )
        assert r.status_code == 404
        r = c.post(f"{access_url}/multipart/{upload_id}/complete", json={"parts": etags})
        assert r.status_code == 200, r.text
        # complete is single-use
        assert (
            c.post(
                f"{access_url}/multipart/{upload_id}/complete", json={"parts": etags}
            ).status_code
            == 409
        )
    got = httpx.get(access_url)
    assert got.content == BLOB and got.headers["content-type"] == "image/png"


def test_js_initiate_and_signed_put(server: LiveServer) -> None:
    for query in ("?storage_type=fal-cdn-v3", ""):
        with server.client() as c:
            r = c.post(
                f"/storage/upload/initiate{query}",
                json={"content_type": "image/jpeg", "file_name": "x.jpg"},
            )
            assert r.status_code == 200, r.text
            upload_url, file_url = r.json()["upload_url"], r.json()["file_url"]
        assert httpx.get(file_url).status_code == 404  # nothing there before the PUT
        # The PUT carries no key: the signed URL is the capability.
        r = httpx.put(upload_url, content=BLOB, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        got = httpx.get(file_url)
        assert got.content == BLOB and got.headers["content-type"] == "image/jpeg"
        # single use
        assert httpx.put(upload_url, content=b"evil").status_code == 409
        assert httpx.get(file_url).content == BLOB


def test_tampered_upload_url_is_refused(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/storage/upload/initiate", json={"content_type": "image/png"})
    upload_url = r.json()["upload_url"]
    prefix, token = upload_url.rsplit("/", 1)
    payload, mac = token.split(".")
    bad = f"{prefix}/{payload}.{mac[::-1]}"
    assert httpx.put(bad, content=b"x").status_code == 403


def test_js_multipart_flow(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(
            "/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
            json={"content_type": "image/png", "file_name": "m.png"},
        )
        assert r.status_code == 200, r.text
    upload_url, file_url = r.json()["upload_url"], r.json()["file_url"]
    parts = []
    for n, chunk in enumerate((BLOB[:120_000], BLOB[120_000:]), 1):
        r = httpx.put(f"{upload_url}/{n}", content=chunk)
        assert r.status_code == 200, r.text
        assert r.json()["partNumber"] == n
        parts.append(r.json())
    r = httpx.post(f"{upload_url}/complete", json={"parts": parts})
    assert r.status_code == 200, r.text
    assert httpx.get(file_url).content == BLOB
    assert httpx.post(f"{upload_url}/complete", json={"parts": "nope"}).status_code == 422


def test_lifecycle_header_expires_uploads(server: LiveServer) -> None:
    life = json.dumps({"expiration_duration_seconds": 1})
    with server.client() as c:
        token = python_token(c)["token"]
    r = httpx.post(
        f"{server.url}/files/upload",
        content=b"short-lived",
        headers={"Authorization": f"Bearer {token}", "X-Fal-Object-Lifecycle": life},
    )
    url = r.json()["access_url"]
    assert httpx.get(url).status_code == 200
    deadline = time.monotonic() + 10
    while httpx.get(url).status_code != 404:
        assert time.monotonic() < deadline, "expired file was never removed"
        time.sleep(0.2)
    # Expired files read as missing at once; the sweep then removes their bytes.
    token_dir = url.split("/files/", 1)[1].split("/")[0]
    stored_dir = server.settings.data_dir / "files"
    while any(token_dir in str(p) for p in stored_dir.rglob("*")):
        assert time.monotonic() < deadline, "expired file was never removed"
        time.sleep(0.2)


def test_missing_and_hostile_file_keys_are_404(server: LiveServer) -> None:
    for path in ("/files/nope/a.png", "/files/..%2F..%2Fsecret.key", "/files/%2e%2e/secret.key"):
        r = httpx.get(f"{server.url}{path}")
        assert r.status_code == 404, path
        assert r.json()["detail"][0]["msg"] == "File not found"


def test_upload_over_body_limit_is_413(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/files/upload", content=b"x" * (server.settings.max_body_bytes + 1))
        assert r.status_code == 413


def test_upload_tokens_die_with_their_key(server: LiveServer) -> None:
    with server.client() as c:
        token = python_token(c)["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{server.url}/files/upload", content=b"a", headers=bearer).status_code == 200
    server.job_store.revoke_key(server.key_id)
    assert httpx.post(f"{server.url}/files/upload", content=b"a", headers=bearer).status_code == 401

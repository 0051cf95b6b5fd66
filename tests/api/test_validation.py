"""Bad input at submit: fal's 422 shape (or 413 / 401), never a 500, nothing queued."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from superscale.files import new_key

from .server import LiveServer
from .test_routes_queue import DATA_URI, INPUT

SUBMIT = "/queue/fal-ai/aura-sr"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, "PNG")
    return out.getvalue()


def assert_422(r, loc: list, type_: str | None = None) -> dict:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    err = detail[0]
    assert set(err) >= {"loc", "msg", "type"}
    assert err["loc"][: len(loc)] == loc, err
    if type_:
        assert err["type"] == type_
    return err


@pytest.mark.parametrize("path", [SUBMIT, "/fal-ai/aura-sr"])
def test_malformed_json(server: LiveServer, path: str) -> None:
    with server.client() as c:
        r = c.post(path, content=b'{"image_url": ', headers={"content-type": "application/json"})
        assert_422(r, ["body"], "json_invalid")


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({}, ["body", "image_url"], "missing"),
        ({"image_url": ""}, ["body", "image_url"], "string_too_short"),
        ({**INPUT, "checkpoint": "v3"}, ["body", "checkpoint"], "literal_error"),
        ({**INPUT, "upscaling_factor": 17}, ["body", "upscaling_factor"], "less_than_equal"),
        ({**INPUT, "upscale_factor": "0.5"}, ["body", "upscale_factor"], "value_error"),
        ({**INPUT, "upscale_factor": True}, ["body", "upscale_factor"], "value_error"),
        ({**INPUT, "upscaling_factor": "four"}, ["body", "upscaling_factor"], "value_error"),
        ({**INPUT, "overlapping_tiles": "sometimes"}, ["body", "overlapping_tiles"], None),
        ({**INPUT, "seed": -1}, ["body", "seed"], None),
        ({**INPUT, "output_format": "gif"}, ["body", "output_format"], None),
        ([INPUT], ["body"], None),
    ],
)
def test_schema_errors(server: LiveServer, body: object, loc: list, type_: str | None) -> None:
    with server.client() as c:
        assert_422(c.post(SUBMIT, json=body), loc, type_)
    assert server.job_store.counts().get("IN_QUEUE", 0) == 0


def test_factor_forms_fal_clients_send_are_accepted(server: LiveServer) -> None:
    with server.client() as c:
        for extra in (
            {"upscaling_factor": 4},
            {"upscaling_factor": "4"},
            {"upscale_factor": 4},
            {"upscaling_factor": 2},
            {"upscale_factor": "2.5"},
            {"upscale_factor": 16.0},
            {"upscaling_factor": 1},
        ):
            r = c.post(SUBMIT, json={**INPUT, **extra})
            assert r.status_code == 200, extra
            job = server.job_store.get(r.json()["request_id"])
            assert job is not None
            assert job.input["upscaling_factor"] == float(next(iter(extra.values())))


def test_an_output_over_the_limit_is_refused_at_submit(tmp_path: Path) -> None:
    from .server import live_server

    png = _png(300, 200)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    # 300×200 at 4× is 1200×800 = 960,000 pixels; at 5× the model makes 4800×3200.
    with live_server(tmp_path, workers=0, max_output_pixels=1_000_000) as srv, srv.client() as c:
        assert c.post(SUBMIT, json={"image_url": uri, "upscale_factor": 4}).status_code == 200
        r = c.post(SUBMIT, json={"image_url": uri, "upscale_factor": 5})
        err = assert_422(r, ["body", "upscaling_factor"], "image_too_large")
        assert "SUPERSCALE_MAX_OUTPUT_PIXELS" in err["msg"] and "4800x3200" in err["msg"]
        # An upload of ours: its header, read from the store, says the size too.
        up = c.post("/files/upload", content=png, headers={"content-type": "image/png"})
        url = up.json()["access_url"]
        assert c.post(SUBMIT, json={"image_url": url, "upscale_factor": 4}).status_code == 200
        r = c.post(SUBMIT, json={"image_url": url, "target_width": 1500})
        assert_422(r, ["body", "target_width"], "image_too_large")


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@not-base64@@",
        "data:image/png,rawbytes",
        "data:image/png;base64,",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "/relative/path.png",
        "http:///nohost.png",
        "http://example.com:99999/a.png",
    ],
)
def test_bad_image_urls(server: LiveServer, url: str) -> None:
    with server.client() as c:
        assert_422(c.post(SUBMIT, json={"image_url": url}), ["body", "image_url"])


def test_url_safe_base64_data_uri_is_accepted(server: LiveServer) -> None:
    payload = base64.urlsafe_b64encode(b"\xfb\xff" * 10).decode()
    with server.client() as c:
        assert (
            c.post(SUBMIT, json={"image_url": f"data:image/png;base64,{payload}"}).status_code
            == 200
        )


def test_own_expired_file_is_refused_at_submit(server: LiveServer) -> None:
    key = new_key("old.png")
    server.file_store.put(key, b"png", "image/png", expires_at=time.time() - 1)
    with server.client() as c:
        r = c.post(SUBMIT, json={"image_url": f"{server.url}/files/{key}"})
    assert "does not exist" in assert_422(r, ["body", "image_url"])["msg"]


def test_own_file_urls_must_exist(server: LiveServer) -> None:
    with server.client() as c:
        missing = f"{server.url}/files/AAAAAAAAAAAAAAAAAAAAAAAA/a.png"
        err = assert_422(c.post(SUBMIT, json={"image_url": missing}), ["body", "image_url"])
        assert "does not exist" in err["msg"]
        up = c.post("/files/upload", content=b"png", headers={"content-type": "image/png"})
        url = up.json()["access_url"]
        r = c.post(SUBMIT, json={"image_url": url})
        assert r.status_code == 200
        job = server.job_store.get(r.json()["request_id"])
        assert job is not None
        # stored under the server's public URL, which the worker reads from the store directly
        assert job.input["image_url"] == url.replace(
            server.url, server.settings.resolved_public_url()
        )


def test_unserved_checkpoint_is_422(tmp_path) -> None:
    from .server import live_server

    with live_server(tmp_path, workers=0, checkpoints=["v2"]) as srv, srv.client() as c:
        err = assert_422(c.post(SUBMIT, json=INPUT), ["body", "checkpoint"])
        assert "v1" in err["msg"]
        assert c.post(SUBMIT, json={**INPUT, "checkpoint": "v2"}).status_code == 200


def test_oversized_body_is_413(server: LiveServer) -> None:
    big = {"image_url": DATA_URI, "padding": "x" * (server.settings.max_body_bytes + 1)}
    with server.client() as c:
        r = c.post(SUBMIT, json=big)
        assert r.status_code == 413
        assert r.json()["detail"][0]["type"] == "request_too_large"

        # Without a Content-Length (chunked), the limit holds as the body streams in.
        def chunks():
            yield b'{"image_url": "'
            for _ in range(server.settings.max_body_bytes // 65536 + 2):
                yield b"A" * 65536
            yield b'"}'

        r = c.post(SUBMIT, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


@pytest.mark.parametrize(
    "auth",
    [None, "Key nope", "Key abc:def", "Bearer x", "Key", "Basic dXNlcjpwYXNz"],
)
def test_bad_credentials_are_401(server: LiveServer, auth: str | None) -> None:
    import httpx

    headers = {"Authorization": auth} if auth is not None else {}
    with httpx.Client(base_url=server.url, headers=headers) as c:
        for method, path in [
            ("POST", SUBMIT),
            ("POST", "/fal-ai/aura-sr"),
            ("GET", f"{SUBMIT}/requests/x/status"),
            ("POST", "/storage/auth/token"),
            ("POST", "/files/upload"),
            ("POST", "/storage/upload/initiate"),
        ]:
            r = c.request(method, path, json=INPUT)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["detail"][0]["loc"] == ["header", "authorization"]


def test_revoked_key_is_401(server: LiveServer) -> None:
    with server.client() as c:
        assert c.post(SUBMIT, json=INPUT).status_code == 200
        server.job_store.revoke_key(server.key_id)
        assert c.post(SUBMIT, json=INPUT).status_code == 401


def test_no_auth_server_takes_anonymous_requests(open_server: LiveServer) -> None:
    with open_server.client() as c:
        r = c.post(SUBMIT, json=INPUT)
        assert r.status_code == 200
        job = open_server.job_store.get(r.json()["request_id"])
        assert job is not None and job.owner == ""


def test_routing_errors_have_fals_shape(server: LiveServer) -> None:
    import httpx

    r = httpx.get(f"{server.url}/no/such/route")
    assert r.status_code == 404 and r.json()["detail"][0]["type"] == "not_found"
    r = httpx.post(f"{server.url}/health")
    assert r.status_code == 404 and r.json()["detail"][0]["type"] == "not_found"
    r = httpx.request("OPTIONS", f"{server.url}/health")
    assert r.status_code == 405 and r.json()["detail"][0]["msg"] == "Method Not Allowed"

"""The browser proxy route, and the operational routes (OpenAPI, health, metrics, JWKS)."""

from __future__ import annotations

import httpx
import pytest

from superscale.api.proxy import SESSION_COOKIE, map_target

from .server import LiveServer
from .test_routes_queue import INPUT, finish

PROXY = "/api/fal/proxy"


@pytest.mark.parametrize(
    ("target", "mapped"),
    [
        ("https://queue.fal.run/fal-ai/aura-sr", "/queue/fal-ai/aura-sr"),
        (
            "https://queue.fal.run/fal-ai/aura-sr/requests/1/status?logs=1",
            "/queue/fal-ai/aura-sr/requests/1/status?logs=1",
        ),
        ("https://fal.run/fal-ai/aura-sr", "/fal-ai/aura-sr"),
        (
            "https://rest.alpha.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
            "/storage/upload/initiate?storage_type=fal-cdn-v3",
        ),
        ("https://rest.fal.ai/storage/auth/token", "/storage/auth/token"),
        ("https://v3.fal.media/files/upload", "/files/upload"),
    ],
)
def test_target_mapping(target: str, mapped: str) -> None:
    result = map_target(target)
    assert result is not None
    path, query = result
    assert path + (f"?{query.decode()}" if query else "") == mapped


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/fal-ai/aura-sr",
        "https://fal.run.evil.example/x",
        "ftp://fal.run/x",
        "https://fal.run/api/fal/proxy",
        "not a url",
        "https://127.0.0.1/queue/x",
    ],
)
def test_disallowed_targets(target: str) -> None:
    assert map_target(target) is None


def test_proxy_with_auth_off_dispatches_in_process(open_server: LiveServer) -> None:
    with httpx.Client(base_url=open_server.url) as c:
        r = c.post(
            PROXY,
            json=INPUT,
            headers={
                "x-fal-target-url": "https://queue.fal.run/fal-ai/aura-sr",
                "x-fal-queue-priority": "low",
            },
        )
        assert r.status_code == 200, r.text
        sub = r.json()
        job = open_server.job_store.get(sub["request_id"])
        assert job is not None and job.priority == -1  # x-fal-* headers are forwarded
        finish(open_server, sub["request_id"])
        r = c.get(
            PROXY,
            headers={
                "x-fal-target-url": sub["status_url"].replace(
                    f"{open_server.url}/queue", "https://queue.fal.run"
                )
                + "?logs=1"
            },
        )
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
        assert r.json()["logs"][0]["message"] == "tiles 1/1"
        r = c.post(
            PROXY,
            headers={
                "x-fal-target-url": "https://rest.alpha.fal.ai/storage/upload/"
                "initiate?storage_type=fal-cdn-v3"
            },
            json={"content_type": "image/png", "file_name": "a.png"},
        )
        assert r.status_code == 200 and "upload_url" in r.json()
        for headers in ({}, {"x-fal-target-url": "https://evil.example/x"}):
            r = c.post(PROXY, json=INPUT, headers=headers)
            assert r.status_code == 400
            assert r.json()["detail"][0]["loc"] == ["header", "x-fal-target-url"]


def test_proxy_with_auth_needs_a_key_or_a_session(server: LiveServer) -> None:
    target = {"x-fal-target-url": "https://queue.fal.run/fal-ai/aura-sr"}
    with httpx.Client(base_url=server.url) as c:
        assert c.post(PROXY, json=INPUT, headers=target).status_code == 401
        # A server-side app's own key (fal-js with proxyUrl from Node) acts as that key...
        r = c.post(PROXY, json=INPUT, headers={**target, **server.headers()})
        assert r.status_code == 200, r.text
        job = server.job_store.get(r.json()["request_id"])
        assert job is not None and job.owner == server.key_id
        # ...a wrong one is refused, and the allow-list holds for keys as for sessions.
        wrong = {"Authorization": f"Key {server.key_id}:not-the-secret"}
        r = c.post(PROXY, json=INPUT, headers={**target, **wrong})
        assert r.status_code == 401 and r.json()["detail"][0]["type"] == "unauthorized"
        for outside in ("https://evil.example/fal-ai/aura-sr", "https://fal.run.evil.example/x"):
            headers = {"x-fal-target-url": outside, **server.headers()}
            assert c.post(PROXY, json=INPUT, headers=headers).status_code == 400
        assert c.post(f"{PROXY}/session").status_code == 401
        r = c.post(f"{PROXY}/session", headers=server.headers())
        assert r.status_code == 204
        cookie = r.cookies[SESSION_COOKIE]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        r = c.post(PROXY, json=INPUT, headers=target)  # the client keeps the cookie
        assert r.status_code == 200, r.text
        job = server.job_store.get(r.json()["request_id"])
        assert job is not None and job.owner == server.key_id  # acts as the session's key
        # The request is visible with the key directly too (same owner).
        with server.client() as direct:
            assert direct.get(r.json()["status_url"]).status_code == 202
        # A forged cookie, or a session of a revoked key, is refused.
        c.cookies.set(SESSION_COOKIE, cookie[:-3] + "abc")
        assert c.post(PROXY, json=INPUT, headers=target).status_code == 401
        c.cookies.set(SESSION_COOKIE, cookie)
        server.job_store.revoke_key(server.key_id)
        assert c.post(PROXY, json=INPUT, headers=target).status_code == 401


def test_openapi_document(server: LiveServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert doc["info"]["x-fal-metadata"]["endpointId"] == "fal-ai/aura-sr"
    schemas = doc["components"]["schemas"]
    assert {"AuraSrInput", "AuraSrOutput"} <= set(schemas)
    props = schemas["AuraSrInput"]["properties"]
    assert {"image_url", "upscaling_factor", "overlapping_tiles", "checkpoint"} <= set(props)
    assert schemas["AuraSrInput"]["required"] == ["image_url"]
    assert props["checkpoint"]["enum"] == ["v1", "v2"]
    assert "image" in schemas["AuraSrOutput"]["properties"]
    body = doc["paths"]["/queue/fal-ai/aura-sr"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/AuraSrInput")
    assert doc["servers"] == [{"url": server.url}]


def test_health_ready_jwks(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    jwks = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    assert jwks["keys"] and jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["crv"] == "Ed25519"


def test_metrics(server: LiveServer) -> None:
    with server.client() as c:
        queued = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()
        done = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()
        finish(server, queued["request_id"])  # the oldest is claimed first
        assert c.get(queued["status_url"]).json()["status"] == "COMPLETED"
        c.get("/queue/fal-ai/aura-sr/requests/nope/status")
    text = httpx.get(f"{server.url}/metrics").text
    assert "superscale_queue_depth 1.0" in text
    assert 'superscale_jobs{state="IN_QUEUE"} 1.0' in text
    assert 'superscale_jobs{state="COMPLETED"} 1.0' in text
    assert 'superscale_job_duration_seconds_count{outcome="ok"} 1.0' in text
    assert "superscale_job_inference_seconds_sum 0.5" in text
    assert (
        'superscale_http_requests_total{method="POST",route="/queue/{endpoint:path}",'
        'status="200"} 2.0'
    ) in text
    assert (
        'superscale_http_requests_total{method="GET",'
        'route="/queue/{app:path}/requests/{request_id}/status",status="404"} 1.0'
    ) in text
    assert done["request_id"] not in text  # ids never become labels


def test_stream_through_the_proxy(open_server: LiveServer) -> None:
    with httpx.Client(base_url=open_server.url) as c:
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        finish(open_server, rid)
        target = f"https://queue.fal.run/fal-ai/aura-sr/requests/{rid}/status/stream?logs=1"
        with c.stream(
            "GET", PROXY, headers={"x-fal-target-url": target, "accept": "text/event-stream"}
        ) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert '"COMPLETED"' in lines[-1]
    text = httpx.get(f"{open_server.url}/metrics").text
    # proxied requests are counted under the route they reached
    assert 'route="/queue/{app:path}/requests/{request_id}/status/stream",status="200"} 1.0' in text


def test_cors(server: LiveServer) -> None:
    pre = httpx.options(
        f"{server.url}/queue/fal-ai/aura-sr",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in pre.headers
    with server.client() as c:
        r = c.post("/queue/fal-ai/aura-sr", json=INPUT, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-fal-request-id" in r.headers["access-control-expose-headers"]


def test_store_down_is_not_ready_and_errors_keep_fals_shape(tmp_path) -> None:
    from .server import live_server

    with live_server(tmp_path, workers=0, auth=False) as srv:
        srv.job_store.close()  # as if the database went away
        ready = httpx.get(f"{srv.url}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert httpx.get(f"{srv.url}/health").status_code == 200  # alive, just not ready
        r = httpx.post(f"{srv.url}/queue/fal-ai/aura-sr", json=INPUT)
        assert r.status_code == 500
        assert r.json()["detail"][0] == {
            "loc": ["body"],
            "msg": "Internal server error",
            "type": "internal_error",
        }

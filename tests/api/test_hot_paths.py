"""The hot paths (status, result, submit at their canonical paths, answered past the
framework's routing and middleware) answer exactly as the whole app does: the same request
with an `Origin` header takes the whole app, without one the hot path."""

from __future__ import annotations

from pathlib import Path

import httpx

from .server import LiveServer, live_server

SUBMIT = "/queue/fal-ai/aura-sr"
ORIGIN = {"Origin": "https://app.example"}
COMPARED = ("content-type", "x-fal-request-id", "retry-after", "x-fal-error-type")


def both(client: httpx.Client, method: str, url: str, **kw: object) -> list[httpx.Response]:
    """The request by the hot path, then through the whole app (a browser's Origin)."""
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    return [
        client.request(method, url, headers=headers, **kw),  # type: ignore[arg-type]
        client.request(method, url, headers={**headers, **ORIGIN}, **kw),  # type: ignore[arg-type]
    ]


def assert_same(hot: httpx.Response, full: httpx.Response, new_job: bool = False) -> None:
    assert "access-control-allow-origin" not in hot.headers  # the hot path was taken
    if full.status_code != 500:  # Starlette answers a 500 outside CORS, with no headers
        assert full.headers["access-control-allow-origin"] == "*"  # the whole app was taken
    assert hot.status_code == full.status_code, (hot.text, full.text)
    for name in COMPARED:
        if new_job and name == "x-fal-request-id":  # each submit makes its own
            assert hot.headers[name] != full.headers[name]
        else:
            assert hot.headers.get(name) == full.headers.get(name), name


def test_status_result_and_refusals_match_the_whole_app(server: LiveServer) -> None:
    with server.client() as c, server.client(server.new_key()) as stranger:
        request_id = c.post(SUBMIT, json={"image_url": "https://example.com/a.png"}).json()[
            "request_id"
        ]
        base = f"{SUBMIT}/requests/{request_id}"
        for url in (f"{base}/status", f"{base}/status?logs=1", base):
            hot, full = both(c, "GET", url)
            assert_same(hot, full)
            assert hot.json() == full.json()
        for url in (f"{base}/status?logs=maybe", f"{SUBMIT}/requests/nope/status"):
            hot, full = both(c, "GET", url)  # 422, 404
            assert_same(hot, full)
            assert hot.json() == full.json()
        hot, full = both(stranger, "GET", f"{base}/status")  # another key's: 404
        assert_same(hot, full)
        assert hot.status_code == 404 and hot.json() == full.json()
        hot, full = both(httpx.Client(base_url=server.url), "GET", f"{base}/status")  # no key
        assert_same(hot, full)
        assert hot.status_code == 401 and hot.json() == full.json()


def test_submits_and_their_refusals_match_the_whole_app(server: LiveServer) -> None:
    with server.client() as c:
        hot, full = both(c, "POST", SUBMIT, json={"image_url": "https://example.com/a.png"})
        assert_same(hot, full, new_job=True)
        assert hot.json().keys() == full.json().keys()
        for body in ({"image_url": 5}, {"nope": 1}):
            hot, full = both(c, "POST", SUBMIT, json=body)  # 422 in fal's shape
            assert_same(hot, full)
            assert hot.status_code == 422 and hot.json() == full.json()
        hot, full = both(c, "POST", SUBMIT, content=b"{not json")
        assert_same(hot, full)
        assert hot.json() == full.json()


def test_the_hot_paths_are_counted_in_the_metrics(server: LiveServer) -> None:
    with server.client() as c:
        request_id = c.post(SUBMIT, json={"image_url": "https://example.com/a.png"}).json()[
            "request_id"
        ]
        for _ in range(3):
            c.get(f"{SUBMIT}/requests/{request_id}/status")
        metrics = c.get("/metrics").text
    route = 'route="/queue/{app:path}/requests/{request_id}/status",status="202"'
    counted = [line for line in metrics.splitlines() if route in line and "_total" in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 3


def test_a_closed_store_on_the_hot_path_answers_as_the_app_does(tmp_path: Path) -> None:
    body = {"image_url": "https://example.com/a.png"}
    with (
        live_server(tmp_path, workers=0, auth=False, busy_hold=0) as srv,
        # A connection each: the whole app closes one after its 500 (Starlette re-raises).
        httpx.Client(base_url=srv.url, limits=httpx.Limits(max_keepalive_connections=0)) as c,
    ):
        request_id = c.post(SUBMIT, json=body).json()["request_id"]
        srv.job_store.close()  # every store call now fails: the app's 500 handler answers
        for hot, full in (
            both(c, "GET", f"{SUBMIT}/requests/{request_id}/status"),
            both(c, "POST", SUBMIT, json=body),
        ):
            assert_same(hot, full)
            assert hot.status_code == 500 and hot.json() == full.json()

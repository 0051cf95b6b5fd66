"""Hostile request bodies and headers get a 422 in fal's shape, never a 500 (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import LiveServer, live_server

SUBMIT = "/queue/fal-ai/aura-sr"
IMAGE = "data:image/png;base64,iVBORw0KGgo="
LIFECYCLE = "x-fal-object-lifecycle-preference"


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 1000, 5000])
def test_deeply_nested_json_is_a_422(server: LiveServer, depth: int) -> None:
    """A few KB of brackets reached the parser's recursion limit: RecursionError, a 500."""
    body = f'{{"image_url": "{IMAGE}", "extra": {_deep(depth)}}}'
    with server.client() as c:
        submit = c.post(SUBMIT, content=body, headers={"Content-Type": "application/json"})
        upload = c.post(
            "/storage/upload/initiate",
            content=f'{{"content_type": "image/png", "x": {_deep(depth)}}}',
            headers={"Content-Type": "application/json"},
        )
        header = c.post(SUBMIT, json={"image_url": IMAGE}, headers={LIFECYCLE: _deep(depth)})
    for answer in (submit, upload, header):
        assert answer.status_code == 422, answer.text
        assert "nested deeper" in answer.text


def test_nesting_within_the_bound_is_fine(server: LiveServer) -> None:
    with server.client() as c:
        ok = c.post(SUBMIT, content=f'{{"image_url": "{IMAGE}", "extra": {_deep(20)}}}')
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("seconds", ["NaN", "Infinity", "-Infinity", "1e309", "1" + "0" * 400])
def test_lifecycle_that_never_ends_is_refused(server: LiveServer, seconds: str) -> None:
    """NaN, Infinity and overflowing numbers were accepted: the file never expired."""
    value = f'{{"expiration_duration_seconds": {seconds}}}'
    with server.client() as c:
        submit = c.post(SUBMIT, json={"image_url": IMAGE}, headers={LIFECYCLE: value})
        upload = c.post(
            "/files/upload",
            content=b"x",
            headers={"Content-Type": "text/plain", "x-fal-object-lifecycle": value},
        )
        token = c.post("/storage/auth/token", json={}).json()["token"]
    with server.client(key="") as anonymous:
        by_token = anonymous.post(
            "/files/upload",
            content=b"x",
            headers={
                "Content-Type": "text/plain",
                "Authorization": f"Bearer {token}",
                LIFECYCLE: value,
            },
        )
    for answer in (submit, upload, by_token):
        assert answer.status_code == 422, (seconds, answer.status_code, answer.text)
        assert answer.json()["detail"][0]["loc"][0] == "header"


def test_nan_in_the_body_is_not_json(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post(SUBMIT, content=f'{{"image_url": "{IMAGE}", "seed": NaN}}')
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", True),
        ("seed", "5"),
        ("seed", 5.5),
        ("overlapping_tiles", "yes"),
        ("overlapping_tiles", 1),
        ("overlapping_tiles", "true"),
    ],
)
def test_types_are_strict_where_fals_schema_is(
    server: LiveServer, field: str, value: object
) -> None:
    """A bool is not an integer, "5" is not a seed, "yes" is not a boolean: 422 at submit."""
    with server.client() as c:
        r = c.post(SUBMIT, json={"image_url": IMAGE, field: value})
    assert r.status_code == 422, (field, value, r.text)
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_strict_types_still_take_what_fals_clients_send(server: LiveServer) -> None:
    with server.client() as c:
        for extra in ({"seed": 5}, {"seed": 5.0}, {"seed": None}, {"overlapping_tiles": True}):
            assert c.post(SUBMIT, json={"image_url": IMAGE, **extra}).status_code == 200, extra


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """An API server on each job store: what PostgreSQL cannot hold must not become a 500."""
    job_store = None
    if request.param == "postgresql":
        from superscale.jobs.postgres import PostgresJobStore

        job_store = PostgresJobStore(request.getfixturevalue("pg_schema_url"))
    with live_server(tmp_path, workers=0, job_store=job_store) as srv:
        yield srv


def test_nul_characters_are_refused_on_both_stores(any_store_server: LiveServer) -> None:
    """PostgreSQL cannot store or even compare text with NUL: image_url, fal_webhook and
    request ids holding one were 500s there (and 404 or accepted on SQLite)."""
    with any_store_server.client() as c:
        bad_url = c.post(SUBMIT, json={"image_url": "https://example.com/a\x00.png"})
        assert bad_url.status_code == 422, bad_url.text
        assert bad_url.json()["detail"][0]["loc"] == ["body", "image_url"]
        bad_hook = c.post(
            SUBMIT, params={"fal_webhook": "https://hooks.example/\x00"}, json={"image_url": IMAGE}
        )
        assert bad_hook.status_code == 422, bad_hook.text
        assert bad_hook.json()["detail"][0]["loc"] == ["query", "fal_webhook"]
        ok = c.post(SUBMIT, json={"image_url": IMAGE})
        assert ok.status_code == 200
        nul_id = ok.json()["request_id"] + "%00"
        base = f"{SUBMIT}/requests/{nul_id}"
        for answer in (
            c.get(f"{base}/status"),
            c.get(base),
            c.put(f"{base}/cancel"),
            c.get(f"{base}/status/stream"),
        ):
            assert answer.status_code == 404, (answer.request.url, answer.text)


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        ("http://[::1/x", "not a valid URL"),
        ("http://hooks.example:99999/x", "not a valid URL"),
        ("http://hooks.example:port/x", "not a valid URL"),
        ("ftp://hooks.example/x", "http(s)"),
        ("http:///x", "no host"),
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://localhost:8000/x", "localhost"),
        ("http://10.1.2.3/x", "private"),
        ("http://169.254.169.254/latest", "link-local"),
    ],
)
def test_undeliverable_webhooks_are_refused_at_submit(
    server: LiveServer, hook: str, why: str
) -> None:
    """A malformed host was a 500; a bad port or a loopback receiver was accepted and the
    webhook silently dropped at delivery."""
    with server.client() as c:
        r = c.post(SUBMIT, params={"fal_webhook": hook}, json={"image_url": IMAGE})
    assert r.status_code == 422, (hook, r.status_code, r.text)
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["query", "fal_webhook"] and why in detail["msg"], detail


def test_loopback_webhooks_are_fine_with_the_guard_off(tmp_path: Path) -> None:
    with live_server(tmp_path, workers=0, ssrf_guard=False) as srv, srv.client() as c:
        r = c.post(
            SUBMIT, params={"fal_webhook": "http://127.0.0.1:9/x"}, json={"image_url": IMAGE}
        )
    assert r.status_code == 200, r.text

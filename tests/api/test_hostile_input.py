"""Hostile request bodies and headers get a 422 in fal's shape, never a 500 (issue 15)."""

from __future__ import annotations

import pytest

from .server import LiveServer

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
        ("seed", 5.0),
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
        for extra in ({"seed": 5}, {"seed": None}, {"overlapping_tiles": True}):
            assert c.post(SUBMIT, json={"image_url": IMAGE, **extra}).status_code == 200, extra

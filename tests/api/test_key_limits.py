"""Fair shares between keys at the API: each key's queue share, request rate and upload bytes
are its own (one key at its limit gets 429 with Retry-After; another key is unaffected), a
key's own limits override the server's, and key records are cached only briefly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from superscale.api.keys import create_key
from superscale.jobs import open_job_store

from .server import LiveServer, live_server

SUBMIT = "/queue/fal-ai/aura-sr"
BODY = {"image_url": "https://example.com/a.png"}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(
        tmp_path, workers=0, key_max_queue=3, key_upload_bytes_per_day=1000, key_cache_seconds=0.3
    ) as srv:
        yield srv


def assert_refused(r: httpx.Response, error_type: str) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-fal-error-type"] == error_type
    assert r.json()["error_type"] == error_type and r.json()["detail"][0]["msg"]


def test_a_key_at_its_queue_share_is_refused_and_another_is_not(limited: LiveServer) -> None:
    with limited.client() as noisy, limited.client(limited.new_key()) as quiet:
        for _ in range(3):
            assert noisy.post(SUBMIT, json=BODY).status_code == 200
        started = time.monotonic()
        assert_refused(noisy.post(SUBMIT, json=BODY), "queue_full")
        assert time.monotonic() - started < 2  # answered at once, not held like a full queue
        r = quiet.post(SUBMIT, json=BODY)
        assert r.status_code == 200
        # Claims go round the keys: the quiet key's job is next after the noisy key's first.
        assert r.json()["queue_position"] == 1


def test_a_keys_own_queue_limit_overrides_the_servers(limited: LiveServer) -> None:
    big = create_key(limited.job_store, "big", max_queue=5)[1]
    with limited.client(big) as c:
        codes = [c.post(SUBMIT, json=BODY).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


def test_requests_per_second_are_limited_per_key(limited: LiveServer) -> None:
    slow = create_key(limited.job_store, "slow", max_rps=2)[1]
    with limited.client(slow) as c, limited.client() as other:
        status = c.post(SUBMIT, json=BODY).json()["status_url"]
        answers = [c.get(status) for _ in range(3)]  # a burst of 2 left... then none
        refused = [r for r in answers if r.status_code == 429]
        assert refused, [r.status_code for r in answers]
        assert_refused(refused[0], "rate_limited")
        # Another key (the server sets no rate) is unaffected, and the slow key recovers.
        assert all(
            other.get("/queue/fal-ai/aura-sr/requests/x/status").status_code == 404
            for _ in range(20)
        )
        time.sleep(1.0)
        assert c.get(status).status_code == 202


def test_upload_bytes_per_day_are_limited_per_key(limited: LiveServer) -> None:
    with limited.client() as c, limited.client(limited.new_key()) as other:
        token = c.post("/storage/auth/token").json()["token"]
        up = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        assert httpx.post(f"{limited.url}/files/upload", content=b"x" * 600, headers=up).is_success
        refused = httpx.post(f"{limited.url}/files/upload", content=b"x" * 600, headers=up)
        assert_refused(refused, "upload_quota_exceeded")
        assert int(refused.headers["retry-after"]) <= 86400
        # The JS clients' signed PUT counts against the same day.
        r = c.post("/storage/upload/initiate", json={"content_type": "image/png"})
        assert_refused(
            httpx.put(r.json()["upload_url"], content=b"y" * 500), "upload_quota_exceeded"
        )
        assert httpx.put(r.json()["upload_url"], content=b"y" * 400).status_code == 200
        # Another key has its own day.
        r = other.post("/storage/upload/initiate", json={"content_type": "image/png"})
        assert httpx.put(r.json()["upload_url"], content=b"z" * 900).status_code == 200


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_time(
    limited: LiveServer,
) -> None:
    elsewhere = open_job_store(limited.settings.resolved_database_url())  # another server's
    try:
        with limited.client() as c:
            assert c.post(SUBMIT, json=BODY).status_code == 200  # the key is now cached
            assert elsewhere.revoke_key(limited.key_id)
            time.sleep(0.4)
            assert c.post(SUBMIT, json=BODY).status_code == 401
    finally:
        elsewhere.close()

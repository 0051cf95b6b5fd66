"""Webhooks: key persistence, fal's signature scheme against the JWKS, delivery to a loopback
receiver, retries with backoff, giving up, surviving a store reopen, and the SSRF guard."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fixture_http import FixtureServer, Reply
from superscale import webhooks
from superscale.jobs.records import JobError, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.settings import Settings

from .conftest import finished_job


def _run_until(dispatcher: webhooks.WebhookDispatcher, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "webhook not delivered in time"
        dispatcher.run_once()
        time.sleep(0.02)


def _fal_receiver_verifies(jwks: Mapping, headers: Mapping[str, str], body: bytes) -> None:
    """fal's documented scheme, written out here rather than via `webhooks.verify`, so a
    sign/verify pair that agrees with itself but not with fal fails: a hex Ed25519 signature
    over "{request_id}\\n{user_id}\\n{timestamp}\\n{sha256hex(body)}", timestamp within 300 s."""
    timestamp = headers["X-Fal-Webhook-Timestamp"]
    assert abs(time.time() - int(timestamp)) <= 300
    message = "\n".join(
        [
            headers["X-Fal-Webhook-Request-Id"],
            headers["X-Fal-Webhook-User-Id"],
            timestamp,
            hashlib.sha256(body).hexdigest(),
        ]
    ).encode()
    (jwk,) = jwks["keys"]
    x = jwk["x"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    public.verify(bytes.fromhex(headers["X-Fal-Webhook-Signature"]), message)  # raises if bad


def test_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    first = webhooks.WebhookSigner.load_or_create(tmp_path)
    second = webhooks.WebhookSigner.load_or_create(tmp_path)
    assert first.kid == second.kid
    assert stat.S_IMODE((tmp_path / webhooks.KEY_FILE).stat().st_mode) == 0o600
    (jwk,) = first.jwks()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == first.kid
    assert "d" not in jwk  # never the private part


def test_signature_verifies_and_tampering_fails(tmp_path: Path) -> None:
    signer = webhooks.WebhookSigner.load_or_create(tmp_path)
    body = b'{"request_id":"r1","status":"OK"}'
    headers = signer.sign("r1", "key-1", body)
    assert webhooks.verify(signer.jwks(), headers, body)
    assert not webhooks.verify(signer.jwks(), headers, body + b" ")
    assert not webhooks.verify(signer.jwks(), {**headers, webhooks.HEADER_USER_ID: "k2"}, body)
    stale = signer.sign("r1", "key-1", body, timestamp=int(time.time()) - 301)
    assert not webhooks.verify(signer.jwks(), stale, body)
    other = webhooks.WebhookSigner.load_or_create(tmp_path / "other")
    assert not webhooks.verify(other.jwks(), headers, body)
    # Key rotation: any key of the set may match; junk entries are skipped, not fatal.
    junk = [{"kty": "OKP", "crv": "Ed25519"}, {"kty": "OKP", "crv": "Ed25519", "x": "!!"}]
    mixed = {"keys": [*junk, *other.jwks()["keys"], *signer.jwks()["keys"]]}
    assert webhooks.verify(mixed, headers, body)


def test_delivers_signed_payload(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200, b"ok")
    request_id = finished_job(job_store, f"{receiver.url}/hook")
    dispatcher = webhooks.WebhookDispatcher(settings, job_store)
    _run_until(dispatcher, lambda: bool(receiver.requests))
    (seen,) = receiver.requests
    # What a receiver does: verify the headers with the published JWKS (fetched as JSON).
    published = json.loads(json.dumps(webhooks.jwks(settings)))
    assert webhooks.verify(published, seen.headers, seen.body)
    _fal_receiver_verifies(published, seen.headers, seen.body)
    assert seen.headers["X-Fal-Webhook-Request-Id"] == request_id
    assert seen.headers["X-Fal-Webhook-User-Id"] == "key-1"
    body = json.loads(seen.body)
    assert body == {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": {"image": {"url": "u"}, "timings": {}},
    }
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.delivered_at is not None and delivery.attempts == 1
    assert dispatcher.run_once() == 0  # nothing left to send


def test_error_payload(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    receiver = http_server()
    receiver.routes["/hook"] = Reply(204)
    error = JobError(422, "bad image", "image_load_error")
    finished_job(job_store, f"{receiver.url}/hook", error)
    _run_until(webhooks.WebhookDispatcher(settings, job_store), lambda: bool(receiver.requests))
    body = json.loads(receiver.requests[0].body)
    assert body["status"] == "ERROR" and body["error"] == "Invalid status code: 422"
    assert body["payload"]["detail"][0]["msg"] == "bad image"


def test_failing_receiver_gets_retries_with_backoff(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    receiver = http_server()
    answers = iter([500, 503, 200])
    receiver.routes["/hook"] = lambda seen: Reply(next(answers))
    request_id = finished_job(job_store, f"{receiver.url}/hook")
    dispatcher = webhooks.WebhookDispatcher(settings, job_store, base_delay=0.2)
    assert dispatcher.run_once() == 1
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.attempts == 1 and delivery.last_error == "receiver answered HTTP 500"
    assert dispatcher.run_once() == 0  # not due yet: backoff
    _run_until(dispatcher, lambda: job_store.webhooks(request_id)[0].delivered_at is not None)
    assert len(receiver.requests) == 3
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.attempts == 3


def test_gives_up_after_max_attempts(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    settings.webhook_max_attempts = 3
    receiver = http_server()
    receiver.routes["/hook"] = Reply(500)
    request_id = finished_job(job_store, f"{receiver.url}/hook")
    dispatcher = webhooks.WebhookDispatcher(settings, job_store, base_delay=0.01)
    _run_until(dispatcher, lambda: job_store.webhooks(request_id)[0].next_attempt_at is None)
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.attempts == 3 and delivery.delivered_at is None
    assert len(receiver.requests) == 3


def test_pending_delivery_survives_store_reopen(
    settings: Settings, http_server: Callable[[], FixtureServer]
) -> None:
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200)
    path = settings.data_dir / "superscale.db"
    store = SqliteJobStore(path)
    request_id = finished_job(store, f"{receiver.url}/hook")
    store.close()  # the server stops before delivering
    reopened = SqliteJobStore(path)
    try:
        dispatcher = webhooks.WebhookDispatcher(settings, reopened)
        _run_until(dispatcher, lambda: bool(receiver.requests))
        assert receiver.requests[0].headers["X-Fal-Webhook-Request-Id"] == request_id
        assert reopened.webhooks(request_id)[0].delivered_at is not None
    finally:
        reopened.close()


def test_dispatcher_thread_delivers(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200)
    dispatcher = webhooks.WebhookDispatcher(settings, job_store, poll_interval=0.05)
    dispatcher.start()
    try:
        finished_job(job_store, f"{receiver.url}/hook")
        deadline = time.monotonic() + 5
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.requests) == 1
    finally:
        dispatcher.stop()


def test_guard_refuses_loopback_receiver(
    settings: Settings, job_store: SqliteJobStore, http_server: Callable[[], FixtureServer]
) -> None:
    settings.ssrf_guard = True
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200)
    request_id = finished_job(job_store, f"{receiver.url}/hook")
    assert webhooks.WebhookDispatcher(settings, job_store).run_once() == 1
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.delivered_at is None and "loopback" in (delivery.last_error or "")
    assert delivery.next_attempt_at is None  # given up at once: retrying cannot help
    assert receiver.requests == []


def test_malformed_webhook_url_is_given_up(settings: Settings, job_store: SqliteJobStore) -> None:
    request_id = finished_job(job_store, "ftp://example.invalid/hook")
    assert webhooks.WebhookDispatcher(settings, job_store).run_once() == 1
    (delivery,) = job_store.webhooks(request_id)
    assert delivery.next_attempt_at is None and delivery.delivered_at is None
    assert "invalid webhook URL" in (delivery.last_error or "")


def test_no_webhook_without_url(job_store: SqliteJobStore) -> None:
    job = job_store.submit(NewJob(endpoint="fal-ai/aura-sr", owner="", input={}, checkpoint="v1"))
    assert not webhooks.enqueue(job_store, job.id)  # not finished, and no URL
    assert job_store.webhooks(job.id) == []

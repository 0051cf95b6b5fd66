"""Webhooks as fal sends them: payload, Ed25519 signature headers, JWKS, delivery with retries.

A job's webhook is queued in the job store by the same transaction that finishes the job, so
no crash can finish one without the other; a `WebhookDispatcher` thread claims due deliveries,
signs and POSTs them, and records each attempt. Because the state lives in the store, pending
deliveries survive restarts, and several dispatchers (one per process) never send the same
attempt twice (claiming leases a delivery).

Signature (fal's scheme): hex Ed25519 over
`"{request_id}\\n{user_id}\\n{timestamp}\\n{sha256hex(body)}"`, checked against the keys published
at `/.well-known/jwks.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from superscale import _b64url as b64url
from superscale import netguard
from superscale.jobs._common import webhook_body
from superscale.jobs.records import Job, WebhookDelivery
from superscale.jobs.store import JobStore
from superscale.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "webhook-ed25519.pem"
TIMESTAMP_TOLERANCE = 300.0  # seconds a receiver accepts, as fal documents
DELIVERY_TIMEOUT = 10.0
# First retry after 15 s, doubling: 10 attempts span 15 s × (2⁹ − 1) ≈ 2.1 h, as fal's do.
BASE_DELAY = 15.0

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal's signature covers."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{request_id}\n{user_id}\n{timestamp}\n{digest}".encode()


class WebhookSigner:
    """The server's webhook signing key (Ed25519), its key id and its JWKS."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._x = b64url.encode(raw)
        # RFC 7638 thumbprint: stable for the key, identical on every server sharing it.
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self._x}, separators=(",", ":")
        )
        self.kid = b64url.encode(hashlib.sha256(canonical.encode()).digest())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> WebhookSigner:
        """The key kept in `data_dir`, created on first use. Safe when several processes start
        at once: the file appears atomically and the loser of the race reads the winner's."""
        path = Path(data_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".webhook-key-")
            try:
                os.write(fd, pem)
                os.fsync(fd)
                os.close(fd)
                os.chmod(tmp, 0o600)
                os.link(tmp, path)  # fails if another process got there first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return cls.from_pem(path.read_bytes(), str(path))

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "the webhook key") -> WebhookSigner:
        """The key in PEM text (PKCS#8, unencrypted); `where` names its source in errors."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{where} does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSigner:
        """The configured key (`settings.webhook_key`: PEM text or a PEM file's path), else the
        one kept in the data directory. Raises ValueError, naming the source, for a bad key."""
        if settings.webhook_key is None:
            return cls.load_or_create(settings.data_dir)
        value = settings.webhook_key.get_secret_value()
        if value.lstrip().startswith("-----BEGIN"):
            return cls.from_pem(value.encode(), "SUPERSCALE_WEBHOOK_KEY")
        path = Path(value).expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ValueError(
                f"the webhook key file {path} cannot be read ({exc.strerror}); "
                "SUPERSCALE_WEBHOOK_KEY is PEM text or the path of a PEM file"
            ) from None
        return cls.from_pem(pem, str(path))

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self._x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def jwks(self) -> dict[str, Any]:
        """The document served at `/.well-known/jwks.json`."""
        return {"keys": [self.jwk()]}

    def sign(
        self, request_id: str, user_id: str, body: bytes, timestamp: int | None = None
    ) -> dict[str, str]:
        """The four signature headers for one delivery attempt."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(signed_message(request_id, user_id, ts, body))
        return {
            HEADER_REQUEST_ID: request_id,
            HEADER_USER_ID: user_id,
            HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: signature.hex(),
        }


def jwks(settings: Settings) -> dict[str, Any]:
    """The JWKS of the server configured by `settings` (creating its key on first use)."""
    return WebhookSigner.from_settings(settings).jwks()


def verify(
    jwks_document: Mapping[str, Any],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: float = TIMESTAMP_TOLERANCE,
) -> bool:
    """What a receiver does: check the timestamp window and the signature against any key of
    the JWKS. `headers` is matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        request_id = lower[HEADER_REQUEST_ID.lower()]
        user_id = lower[HEADER_USER_ID.lower()]
        ts = lower[HEADER_TIMESTAMP.lower()]
        signature = bytes.fromhex(lower[HEADER_SIGNATURE.lower()])
        if abs((time.time() if now is None else now) - int(ts)) > tolerance:
            return False
    except (KeyError, ValueError):
        return False
    message = signed_message(request_id, user_id, ts, body)
    for jwk in jwks_document.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        try:
            public = Ed25519PublicKey.from_public_bytes(b64url.decode(str(jwk["x"])))
            public.verify(signature, message)
            return True
        except (InvalidSignature, KeyError, ValueError):
            continue
    return False


def payload(job: Job) -> bytes:
    """fal's webhook body for a finished job."""
    return webhook_body(job.id, job.output, job.error)


def enqueue(job_store: JobStore, request_id: str) -> bool:
    """Queue the webhook of a finished job, if it asked for one. Never sends anything itself.

    A separate write after the one that finished the job, so not crash-safe: the service
    itself queues webhooks in that same transaction (`JobStore.complete`/`fail` with
    `webhook=`; the store's own finishes do it unasked). This is for jobs finished otherwise."""
    job = job_store.get(request_id)
    if job is None or job.state != "COMPLETED" or not job.webhook_url:
        return False
    job_store.add_webhook(job.id, job.webhook_url, payload(job))
    return True


class WebhookDispatcher:
    """Delivers queued webhooks: due deliveries first, up to `batch` at once on threads of
    their own (a slow receiver holds only its own), each attempt ending within `timeout`
    seconds however the receiver drips its answer, exponential backoff between attempts.

    `base_delay` (first retry) and `poll_interval` are knobs for tests; the defaults follow
    fal's documented schedule (10 attempts over about two hours).
    """

    def __init__(
        self,
        settings: Settings,
        job_store: JobStore,
        signer: WebhookSigner | None = None,
        *,
        base_delay: float = BASE_DELAY,
        timeout: float = DELIVERY_TIMEOUT,
        poll_interval: float = 1.0,
        batch: int = 16,
        allow: netguard.AllowHook | None = None,
    ) -> None:
        self.settings = settings
        self.job_store = job_store
        self.signer = signer or WebhookSigner.from_settings(settings)
        self.base_delay = base_delay
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.batch = batch
        self._client = netguard.client(guard=settings.ssrf_guard, timeout=timeout, allow=allow)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._attempts = ThreadPoolExecutor(max_workers=batch, thread_name_prefix="webhook")
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    def run_once(self) -> int:
        """Attempt every due delivery there is room for, side by side, and wait for them;
        returns how many were attempted."""
        started = self._start_due()
        wait(started)
        return len(started)

    def _start_due(self) -> list[Future[None]]:
        """Claim as many due deliveries as there are free attempt threads, and start them."""
        with self._in_flight_lock:
            free = self.batch - self._in_flight
        if free <= 0:
            return []
        # The claim lease outlasts one attempt (bounded by the timeout), so no other
        # dispatcher sends any of them meanwhile.
        due = self.job_store.claim_due_webhooks(free, lease_seconds=self.timeout + 30)
        with self._in_flight_lock:
            self._in_flight += len(due)
        return [self._attempts.submit(self._attempt_in_flight, delivery) for delivery in due]

    def _attempt_in_flight(self, delivery: WebhookDelivery) -> None:
        try:
            self._attempt(delivery)
        except Exception:  # a store hiccup recording the result: the lease retries it
            log.exception("webhook %s: recording the attempt failed", delivery.request_id)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _attempt(self, delivery: WebhookDelivery) -> None:
        job = self.job_store.get(delivery.request_id)
        user_id = job.owner if job is not None else ""
        headers = {"Content-Type": "application/json", "User-Agent": "superscale-webhook"}
        headers.update(self.signer.sign(delivery.request_id, user_id, delivery.body))
        error: str | None = None
        final = False  # retrying cannot help: a refused or malformed URL
        try:
            with netguard.budget(self.timeout):  # the whole attempt, DNS to last byte
                response = self._client.post(delivery.url, content=delivery.body, headers=headers)
            if not 200 <= response.status_code < 300:
                error = f"receiver answered HTTP {response.status_code}"
        except netguard.Refused as exc:
            error, final = f"refused: {exc}", True
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            error, final = f"invalid webhook URL: {exc}", True
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # whatever else: record it, keep the thread alive
            error = f"{type(exc).__name__}: {exc}"
        attempt = delivery.attempts + 1
        if error is None:
            self.job_store.webhook_result(delivery.id, True, None, None)
            log.info("webhook %s delivered (attempt %d)", delivery.request_id, attempt)
            return
        if final or attempt >= self.settings.webhook_max_attempts:
            next_at = None
            log.warning(
                "webhook %s gave up after %d attempts: %s", delivery.request_id, attempt, error
            )
        else:
            next_at = time.time() + self.base_delay * 2 ** (attempt - 1)
            log.info(
                "webhook %s attempt %d failed (%s); retrying", delivery.request_id, attempt, error
            )
        self.job_store.webhook_result(delivery.id, False, error, next_at)

    def run_forever(self, stop: threading.Event) -> None:
        """Start due deliveries as attempt threads free up, without waiting for them."""
        while not stop.is_set():
            try:
                busy = len(self._start_due())
            except Exception:  # a store hiccup must not end delivery for good
                log.exception("webhook dispatcher pass failed")
                busy = 0
            if not busy:
                stop.wait(self.poll_interval)

    def start(self) -> threading.Thread:
        """Run in a daemon thread until `stop()`."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="webhook-dispatcher", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop starting attempts, and wait (at most `timeout`, else one attempt's timeout)
        for those under way, so their outcomes are recorded before the store closes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._attempts.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        self._client.close()

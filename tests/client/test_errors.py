"""Each error class, raised by a real server's answer (or a real refused connection), and the
retry and timeout behaviour around them."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from superscale.client import (
    AuthenticationError,
    Completed,
    NetworkError,
    NotFoundError,
    Queued,
    RateLimitedError,
    RequestCancelledError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    SyncClient,
    ValidationError,
)
from superscale.schemas import ENDPOINT_ID

from .conftest import ServerProc, free_port

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


class Attempts:
    """Counts the requests an httpx client really sends (an httpx event hook)."""

    def __init__(self) -> None:
        self.count = 0
        self.sent_at: list[float] = []

    def __call__(self, request: httpx.Request) -> None:
        self.count += 1
        self.sent_at.append(time.monotonic())

    def http(self) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [self]})


def test_validation_error_names_the_field(client: SyncClient, image_file: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        client.submit(ENDPOINT_ID, {"image_url": image_file, "checkpoint": "v9"})
    err = caught.value
    assert err.status_code == 422 and err.fields == ["checkpoint"]
    assert err.errors[0]["loc"] == ["body", "checkpoint"]
    with pytest.raises(ValidationError) as factor:
        client.run(ENDPOINT_ID, {"image_url": "data:image/png;base64,AA==", "upscaling_factor": 17})
    assert factor.value.fields == ["upscaling_factor"]


def test_authentication_error_for_a_bad_or_missing_key(server: ServerProc) -> None:
    for key in ("0123456789abcdef:" + "0" * 64, None):
        attempts = Attempts()
        with SyncClient(server.url, key, http=attempts.http()) as client:
            client.key = key  # None must stay None, not fall back to the environment
            with pytest.raises(AuthenticationError) as caught:
                client.status(ENDPOINT_ID, UNKNOWN_ID)
        assert caught.value.status_code == 401
        assert attempts.count == 1  # a refused key is not retried


def test_not_found_carries_the_request_id(client: SyncClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.status(ENDPOINT_ID, UNKNOWN_ID)
    assert (caught.value.status_code, caught.value.request_id) == (404, UNKNOWN_ID)
    with pytest.raises(NotFoundError):
        client.result(ENDPOINT_ID, UNKNOWN_ID)
    with pytest.raises(NotFoundError):
        client.cancel(ENDPOINT_ID, UNKNOWN_ID)


def test_full_queue_is_retried_with_retry_after_then_raised(
    idle_server: ServerProc, image_file: Path
) -> None:
    with idle_server.client() as client:
        blocker = client.submit(ENDPOINT_ID, {"image_url": image_file})
        try:
            attempts = Attempts()
            policy = RetryPolicy(max_retries=2, base_delay=0.01, max_retry_after=0.3)
            url = client.upload_file(image_file)  # uploads are not what we count
            with SyncClient(
                idle_server.url, idle_server.key, retry=policy, http=attempts.http()
            ) as c:
                started = time.monotonic()
                with pytest.raises(RateLimitedError) as caught:
                    c.submit(ENDPOINT_ID, {"image_url": url})
                elapsed = time.monotonic() - started
            assert caught.value.status_code == 429 and caught.value.retry_after is not None
            assert caught.value.retry_after >= 1  # the server's hint…
            assert attempts.count == 3  # …waited out twice, capped at 0.3 s each
            gaps = [b - a for a, b in zip(attempts.sent_at, attempts.sent_at[1:], strict=False)]
            # Each gap is the capped wait plus one 429 round trip; the uncapped hint is >= 1 s.
            assert all(0.3 <= gap < 1.0 for gap in gaps), gaps
            assert elapsed >= 0.6
        finally:
            blocker.cancel()


def test_submit_succeeds_once_the_queue_frees(idle_server: ServerProc, image_file: Path) -> None:
    policy = RetryPolicy(max_retries=50, max_retry_after=0.05)
    with idle_server.client(retry=policy) as client:
        url = client.upload_file(image_file)
        blocker = client.submit(ENDPOINT_ID, {"image_url": url})
        timer = threading.Timer(0.5, blocker.cancel)
        timer.start()
        try:
            handle = client.submit(ENDPOINT_ID, {"image_url": url})  # 429s until the cancel
        finally:
            timer.join()
        assert client.status(ENDPOINT_ID, handle.request_id) == Queued(handle.request_id, 0)
        handle.cancel()


def test_transport_errors_are_retried_then_raised() -> None:
    attempts = Attempts()
    policy = RetryPolicy(max_retries=2, base_delay=0.01)
    with (
        SyncClient(
            f"http://127.0.0.1:{free_port()}", "k:s", retry=policy, http=attempts.http()
        ) as c,
        pytest.raises(NetworkError) as caught,
    ):
        c.status(ENDPOINT_ID, UNKNOWN_ID)
    assert caught.value.status_code is None and caught.value.request_id == UNKNOWN_ID
    assert attempts.count == 3


def test_subscribe_timeout_cancels_the_request_on_the_server(
    idle_server: ServerProc, image_file: Path
) -> None:
    with idle_server.client() as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as caught:
            client.subscribe(ENDPOINT_ID, {"image_url": image_file}, timeout=1.0)
        assert 1.0 <= time.monotonic() - started < 8.0
        request_id = caught.value.request_id
        assert request_id is not None
        status = client.status(ENDPOINT_ID, request_id)
        assert isinstance(status, Completed) and status.error_type == "client_cancelled"
        with pytest.raises(RequestCancelledError):
            client.result(ENDPOINT_ID, request_id)


def test_async_subscribe_timeout_cancels_too(idle_server: ServerProc, image_file: Path) -> None:
    async def main() -> str | None:
        async with idle_server.async_client() as client:
            with pytest.raises(RequestTimeoutError) as caught:
                await client.subscribe(ENDPOINT_ID, {"image_url": image_file}, timeout=0.5)
            assert caught.value.request_id is not None
            status = await client.status(ENDPOINT_ID, caught.value.request_id)
            assert isinstance(status, Completed) and status.error_type == "client_cancelled"
            return caught.value.request_id

    assert asyncio.run(main())


def test_interrupted_subscribe_cancels_the_request(
    idle_server: ServerProc, image_file: Path
) -> None:
    ids: list[str] = []

    def ctrl_c(status: object) -> None:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C while waiting

    with idle_server.client() as client:
        with pytest.raises(KeyboardInterrupt):
            client.subscribe(
                ENDPOINT_ID,
                {"image_url": image_file},
                on_enqueue=ids.append,
                on_queue_update=ctrl_c,
            )
        status = client.status(ENDPOINT_ID, ids[0])
    assert isinstance(status, Completed) and status.error_type == "client_cancelled"


def test_async_subscribe_cancelled_from_outside_cancels_the_request(
    idle_server: ServerProc, image_file: Path
) -> None:
    async def main() -> None:
        async with idle_server.async_client() as client:
            ids: list[str] = []
            call = client.subscribe(ENDPOINT_ID, {"image_url": image_file}, on_enqueue=ids.append)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(call, timeout=0.5)
            status = await client.status(ENDPOINT_ID, ids[0])
            assert isinstance(status, Completed) and status.error_type == "client_cancelled"

    asyncio.run(main())


def test_server_start_deadline_is_a_timeout_error(
    idle_server: ServerProc, image_file: Path
) -> None:
    with idle_server.client() as client:
        handle = client.submit(ENDPOINT_ID, {"image_url": image_file}, start_timeout=0.2)
        with pytest.raises(RequestTimeoutError) as caught:
            handle.result()  # no worker: the server expires the job (within ~1 s)
        assert caught.value.status_code == 504
        assert caught.value.request_id == handle.request_id


def test_server_error_from_a_job_that_fails_inside_the_server(
    client: SyncClient, image_file: Path
) -> None:
    # The fixture's v2 weights file is truncated: loading it fails in the worker.
    with pytest.raises(ServerError) as caught:
        client.subscribe(ENDPOINT_ID, {"image_url": image_file, "checkpoint": "v2"})
    err = caught.value
    assert err.status_code is not None and err.status_code >= 500
    assert err.request_id and err.error_type == "model_unavailable"

"""Every `SyncClient` method against a real `superscale serve` on loopback."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

import superscale.client as sc
from superscale.client import (
    AuraSrResult,
    Completed,
    InProgress,
    Queued,
    RequestCancelledError,
    RequestTimeoutError,
    Status,
    SuperscaleError,
    SyncClient,
)
from superscale.schemas import ENDPOINT_ID, AuraSrOutput

from .conftest import ServerProc


def test_subscribe_reports_progress_and_returns_a_typed_result(
    client: SyncClient, image_file: Path, tmp_path: Path
) -> None:
    updates: list[Status] = []
    enqueued: list[str] = []
    result = client.subscribe(
        ENDPOINT_ID,
        {"image_url": image_file},
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert isinstance(result, AuraSrResult) and isinstance(result, AuraSrOutput)
    assert (result.image.width, result.image.height) == (96, 64)
    assert result.image.content_type == "image/png"
    assert set(result.timings) >= {"inference"}
    assert isinstance(updates[-1], Completed) and updates[-1].request_id == enqueued[0]
    with_logs = [u for u in updates if isinstance(u, (InProgress, Completed))]
    messages = [log["message"] for u in with_logs for log in u.logs or []]
    assert any(m.startswith("tiles ") for m in messages), messages
    # The helpers fetch the hosted output.
    assert result.image.to_pil().size == (96, 64)
    saved = result.image.download(tmp_path / "out.png")
    assert Image.open(saved).size == (96, 64)
    assert result.image.download(tmp_path).name == Path(result.image.file_name).name


def test_submit_then_status_events_stream_and_result(client: SyncClient, image_file: Path) -> None:
    handle = client.submit(ENDPOINT_ID, {"image_url": image_file, "seed": 7})
    assert handle.request_id and handle.response_url.endswith(handle.request_id)
    first = handle.status()
    assert isinstance(first, (Queued, InProgress, Completed))
    streamed = list(handle.stream(with_logs=True))
    assert isinstance(streamed[-1], Completed) and streamed[-1].error is None
    polled = list(handle.iter_events(interval=0.05))
    assert isinstance(polled[-1], Completed)
    result = handle.result()
    again = client.result(ENDPOINT_ID, handle.request_id)
    assert result.image.url == again.image.url
    status = client.status(ENDPOINT_ID, handle.request_id, with_logs=True)
    assert isinstance(status, Completed) and status.logs
    assert list(client.stream(ENDPOINT_ID, handle.request_id))[-1] == Completed(
        handle.request_id, None, status.metrics
    )


def test_run_uses_the_synchronous_route(
    server: ServerProc, image_factory: Callable[..., Image.Image]
) -> None:
    sent: list[tuple[str, str]] = []

    def record(request: httpx.Request) -> None:
        sent.append((request.method, request.url.path))

    with (
        httpx.Client(event_hooks={"request": [record]}) as http,
        server.client(http=http) as client,
    ):
        result = client.run(ENDPOINT_ID, {"image_url": image_factory(8, 5)}, timeout=120)
    assert isinstance(result, AuraSrResult)
    assert result.image.to_pil().size == (32, 20)
    # One POST to the synchronous route; nothing through the queue (upload requests aside).
    assert sent.count(("POST", f"/{ENDPOINT_ID}")) == 1, sent
    assert not [path for _, path in sent if path.startswith("/queue/")], sent


def test_run_timeout_raises_a_timeout_error(
    client: SyncClient, image_factory: Callable[..., Image.Image]
) -> None:
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError) as caught:
        # 16 tiles: the job certainly outlasts 0.05 s (one 40² tile did not on a quiet CPU).
        client.run(ENDPOINT_ID, {"image_url": image_factory(256, 256)}, timeout=0.05)
    assert caught.value.status_code is None and time.monotonic() - started < 5


def test_cancel_a_queued_request(idle_server: ServerProc, image_file: Path) -> None:
    with idle_server.client() as client:
        handle = client.submit(ENDPOINT_ID, {"image_url": image_file})
        assert client.status(ENDPOINT_ID, handle.request_id) == Queued(handle.request_id, 0)
        handle.cancel()
        status = handle.status()
        assert isinstance(status, Completed) and status.error_type == "client_cancelled"
        with pytest.raises(RequestCancelledError) as caught:
            handle.result()
        assert caught.value.request_id == handle.request_id
        assert client.get_handle(ENDPOINT_ID, handle.request_id).status() == status
        with pytest.raises(SuperscaleError) as again:  # already completed: 400
            client.cancel(ENDPOINT_ID, handle.request_id)
        assert again.value.status_code == 400


def test_uploads_round_trip(
    client: SyncClient, image_file: Path, image_factory: Callable[..., Image.Image]
) -> None:
    data = image_file.read_bytes()
    url = client.upload(data, "image/png", "a.png")
    assert url.startswith(client.base_url)
    assert httpx.get(url).content == data
    url = client.upload_file(image_file)
    got = httpx.get(url)
    assert got.content == data and got.headers["content-type"] == "image/png"
    image = image_factory(10, 6, "RGBA")
    fetched = Image.open(io.BytesIO(httpx.get(client.upload_image(image)).content))
    assert fetched.mode == "RGBA" and fetched.tobytes() == image.tobytes()
    jpeg = httpx.get(client.upload_image(image, format="jpeg"))
    assert jpeg.headers["content-type"] == "image/jpeg"


def test_module_level_shortcuts_use_the_environment(
    server: ServerProc, image_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, secret = server.key.split(":", 1)
    monkeypatch.setenv("SUPERSCALE_URL", server.url)
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.setenv("FAL_KEY_ID", key_id)
    monkeypatch.setenv("FAL_KEY_SECRET", secret)
    monkeypatch.setattr(sc, "_default_sync", None)
    url = sc.upload_file(image_file)
    handle = sc.submit(ENDPOINT_ID, {"image_url": url})
    assert isinstance(list(sc.stream(ENDPOINT_ID, handle.request_id))[-1], Completed)
    assert isinstance(sc.status(ENDPOINT_ID, handle.request_id), Completed)
    assert sc.result(ENDPOINT_ID, handle.request_id).image.width == 96
    assert sc.subscribe(ENDPOINT_ID, {"image_url": url}).image.height == 64
    sc.default_client().close()

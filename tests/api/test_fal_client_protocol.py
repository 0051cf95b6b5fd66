"""fal's protocol, second round, through fal's Python client (`fal-client` 1.0.3, sync and
async) against the real server and worker: `stream()`, the app token of `/tokens/`, and
platform headers sent through the client's `headers` option."""

from __future__ import annotations

import asyncio
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx
import pytest

from .server import LiveServer, live_server
from .test_fal_client import APP, assert_4x_png, png_bytes


@pytest.fixture
def urls(worker_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    url = worker_server.url
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", f"{url}/")
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{url}/queue/")
    monkeypatch.setattr(fal_module, "REST_URL", url)
    monkeypatch.setattr(fal_module, "CDN_URL", url)
    return worker_server


def _check_stream(events: list[dict], side: int) -> None:
    *progress, output = events
    assert progress and {e["status"] for e in progress} <= {"IN_QUEUE", "IN_PROGRESS"}
    assert any(e["status"] == "IN_PROGRESS" for e in progress)
    assert any("tiles" in line["message"] for e in progress for line in e["logs"] or [])
    assert_4x_png(output, side)


def test_stream_sync(urls: LiveServer) -> None:
    fal = fal_client.SyncClient(key=urls.key)
    args = {"image_url": fal_client.encode(png_bytes(12, 7), "image/png")}
    _check_stream(list(fal.stream(APP, args)), 12)


def test_stream_async(urls: LiveServer) -> None:
    async def main() -> list[dict]:
        fal = fal_client.AsyncClient(key=urls.key)
        args = {"image_url": fal_client.encode(png_bytes(12, 8), "image/png")}
        return [event async for event in fal.stream(APP, args)]

    _check_stream(asyncio.run(main()), 12)


def test_app_token_from_the_client_works_without_the_key(urls: LiveServer) -> None:
    fal = fal_client.SyncClient(key=urls.key)
    token = fal._get_realtime_token(APP)  # what the client's realtime() asks /tokens/ for
    handle = fal.submit(APP, {"image_url": fal_client.encode(png_bytes(8, 9), "image/png")})
    status = httpx.get(f"{handle.status_url}?fal_jwt_token={token}")  # no Authorization
    assert status.status_code in (200, 202), status.text
    assert status.headers["x-fal-request-id"] == handle.request_id


def test_platform_headers_through_the_client(urls: LiveServer) -> None:
    fal = fal_client.SyncClient(key=urls.key)
    args = {"image_url": fal_client.encode(png_bytes(10, 10), "image/png")}
    handle = fal.submit(APP, args, headers={"X-Fal-Store-IO": "0", "X-Fal-No-Retry": "1"})
    assert_4x_png(handle.get(), 10)  # read once…
    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        fal.result(APP, handle.request_id)  # …then gone
    assert info.value.status_code == 404
    job = urls.job_store.get(handle.request_id)
    assert job is not None and job.input == {} and job.no_retry and not job.store_io


def test_factors_other_than_four_as_code_in_the_wild_sends_them(urls: LiveServer) -> None:
    fal = fal_client.SyncClient(key=urls.key)
    image = fal_client.encode(png_bytes(10, 12), "image/png")
    two = fal.subscribe(APP, {"image_url": image, "upscaling_factor": 2})
    assert (two["image"]["width"], two["image"]["height"]) == (20, 20)
    odd = fal.run(APP, {"image_url": image, "upscale_factor": "2.5"})
    assert (odd["image"]["width"], odd["image"]["height"]) == (25, 25)
    eight = fal.subscribe(APP, {"image_url": image, "upscale_factor": 8})
    assert (eight["image"]["width"], eight["image"]["height"]) == (80, 80)
    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        fal.submit(APP, {"image_url": image, "upscaling_factor": 32})
    assert info.value.status_code == 422


def test_start_timeouts_through_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No worker: nothing starts, so each start deadline passes.
    with live_server(tmp_path, workers=0) as srv:
        monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{srv.url}/queue/")
        fal = fal_client.SyncClient(key=srv.key)
        args = {"image_url": fal_client.encode(png_bytes(8, 13), "image/png")}
        handles = [
            fal.submit(APP, args, start_timeout=1.5),  # X-Fal-Request-Timeout
            fal.submit(APP, args, headers={"X-Fal-Request-Start-Timeout": "1.5"}),
        ]
        for handle in handles:
            for _ in handle.iter_events(interval=0.1):
                pass
            with pytest.raises(fal_client.client.FalClientHTTPError) as info:
                handle.get()
            assert info.value.status_code == 504
            assert info.value.response.headers["x-fal-error-type"] == "request_timeout"

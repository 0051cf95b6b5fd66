"""fal's official Python client (`fal-client` 1.0.3) against our server, end to end: the real
worker and engine on a small random-weight model, over plain HTTP and over TLS."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import httpx
import numpy as np
import pytest
from PIL import Image

from pngs import encode

from .server import LiveServer, live_server, make_tls_cert, tls_context

APP = "fal-ai/aura-sr"


def png_bytes(size: int = 20, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)))


def assert_4x_png(output: dict, side: int) -> None:
    image = output["image"]
    assert image["content_type"] == "image/png"
    assert (image["width"], image["height"]) == (4 * side, 4 * side)
    got = httpx.get(image["url"])
    assert got.status_code == 200 and len(got.content) == image["file_size"]
    assert Image.open(io.BytesIO(got.content)).size == (4 * side, 4 * side)
    assert set(output["timings"]) >= {"inference"}


@pytest.fixture
def fal(worker_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> fal_client.SyncClient:
    """fal's client pointed at our server over plain HTTP (its URL globals, as fal-protocol.md
    §7 describes)."""
    url = worker_server.url
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", f"{url}/")
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{url}/queue/")
    monkeypatch.setattr(fal_module, "REST_URL", url)
    monkeypatch.setattr(fal_module, "CDN_URL", url)
    return fal_client.SyncClient(key=worker_server.key)


def test_subscribe_with_queue_updates_and_logs(fal: fal_client.SyncClient) -> None:
    updates: list[fal_client.Status] = []
    data_uri = fal_client.encode(png_bytes(20), "image/png")
    output = fal.subscribe(
        APP,
        {"image_url": data_uri, "checkpoint": "v2"},
        with_logs=True,
        on_queue_update=updates.append,
    )
    assert_4x_png(output, 20)
    assert isinstance(updates[-1], fal_client.Completed)
    assert updates[-1].metrics["inference_time"] > 0
    logs = [entry["message"] for u in updates if getattr(u, "logs", None) for entry in u.logs]
    assert any("tile" in m.lower() for m in logs), logs


def test_submit_status_result(fal: fal_client.SyncClient) -> None:
    handle = fal.submit(APP, {"image_url": fal_client.encode(png_bytes(16, 1), "image/png")})
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
    for status in handle.iter_events(with_logs=True, interval=0.05):
        last = status
    assert isinstance(last, fal_client.Completed)
    assert_4x_png(handle.get(), 16)
    again = fal.result(APP, handle.request_id)  # by id, URLs built by the client
    assert again == handle.get()
    assert isinstance(fal.status(APP, handle.request_id), fal_client.Completed)


def test_run(fal: fal_client.SyncClient) -> None:
    output = fal.run(APP, {"image_url": fal_client.encode(png_bytes(12, 2), "image/png")})
    assert_4x_png(output, 12)


def test_upload_file_used_as_image_url(fal: fal_client.SyncClient, tmp_path: Path) -> None:
    path = tmp_path / "input.png"
    path.write_bytes(png_bytes(24, 3))
    url = fal.upload_file(path)
    assert httpx.get(url).content == path.read_bytes()  # byte-exact
    output = fal.subscribe(APP, {"image_url": url, "upscaling_factor": 4})
    assert_4x_png(output, 24)


def test_errors_surface_as_fal_client_errors(fal: fal_client.SyncClient) -> None:
    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        fal.submit(APP, {"image_url": "data:image/png;base64,!!", "checkpoint": "v1"})
    assert info.value.status_code == 422
    # A job that fails in the worker (bytes that are no image) raises from the result call.
    handle = fal.submit(APP, {"image_url": fal_client.encode(b"not an image", "image/png")})
    with pytest.raises(fal_client.client.FalClientHTTPError) as info:
        handle.get()
    assert info.value.status_code == 422  # bad input, as a submit-time validation error is


def test_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No worker, so the job is still queued when the cancel arrives.
    with live_server(tmp_path, workers=0) as srv:
        monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{srv.url}/queue/")
        fal = fal_client.SyncClient(key=srv.key)
        handle = fal.submit(APP, {"image_url": fal_client.encode(png_bytes(8), "image/png")})
        status = handle.status()
        assert isinstance(status, fal_client.Queued) and status.position == 0
        handle.cancel()
        assert isinstance(handle.status(), fal_client.Completed)
        with pytest.raises(fal_client.client.FalClientHTTPError):
            handle.get()
        with pytest.raises(fal_client.client.FalClientHTTPError) as info:
            fal.cancel(APP, handle.request_id)  # already completed
        assert info.value.status_code == 400


TLS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import fal_client, fal_client.client as m
    base = "https://" + os.environ["FAL_RUN_HOST"]
    m.REST_URL = base
    m.CDN_URL = base
    assert m.QUEUE_URL_FORMAT == base + "/queue/", m.QUEUE_URL_FORMAT
    updates = []
    url = fal_client.upload_file(sys.argv[1])
    sub = fal_client.subscribe("fal-ai/aura-sr", {"image_url": url}, with_logs=True,
                               on_queue_update=lambda s: updates.append(type(s).__name__))
    run = fal_client.run("fal-ai/aura-sr", {"image_url": fal_client.encode_file(sys.argv[1])})
    print(json.dumps({"upload": url, "subscribe": sub, "run": run, "updates": updates}))
    """
)


def test_tls_with_fal_host_variables(
    tmp_path_factory: pytest.TempPathFactory, small_model_dir: Path, tmp_path: Path
) -> None:
    cert, key = make_tls_cert(tmp_path)
    data = tmp_path_factory.mktemp("fal-tls")
    with live_server(
        data,
        workers=1,
        model_dir=small_model_dir,
        device="cpu",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    ) as srv:
        hostport = srv.url.removeprefix("https://")
        image = tmp_path / "in.png"
        image.write_bytes(png_bytes(16, 4))
        env = {
            **os.environ,
            "FAL_RUN_HOST": hostport,  # read at import: hence a subprocess
            "FAL_QUEUE_RUN_HOST": f"{hostport}/queue",
            "FAL_KEY": srv.key,
            "SSL_CERT_FILE": str(cert),
        }
        proc = subprocess.run(
            [sys.executable, "-c", TLS_SCRIPT, str(image)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["upload"].startswith(f"https://{hostport}/files/")
        for output in (result["subscribe"], result["run"]):
            assert output["image"]["url"].startswith(f"https://{hostport}/files/")
            assert (output["image"]["width"], output["image"]["height"]) == (64, 64)
            got = httpx.get(output["image"]["url"], verify=tls_context(cert))
            assert Image.open(io.BytesIO(got.content)).size == (64, 64)
        assert result["updates"][-1] == "Completed"


def test_multipart_upload_of_the_python_client(
    fal: fal_client.SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fal's client switches to multipart over 100 MiB in 10 MiB parts; shrink both so a small
    # file takes that path through the real client code.
    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 100_000)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 64 * 1024)
    data = os.urandom(300_000)
    url = fal.upload(data, "application/octet-stream", "blob.bin")
    assert "/files/" in url
    got = httpx.get(url)
    assert got.content == data and got.headers["content-type"] == "application/octet-stream"


def test_async_client(worker_server: LiveServer, fal: fal_client.SyncClient) -> None:
    import asyncio

    async def go() -> dict:
        client = fal_client.AsyncClient(key=worker_server.key)
        handle = await client.submit(
            APP, {"image_url": fal_client.encode(png_bytes(8), "image/png")}
        )
        async for _ in handle.iter_events(with_logs=True, interval=0.05):
            pass
        return await handle.get()

    assert_4x_png(asyncio.run(go()), 8)


def test_python_clients_fallback_upload_flow(fal: fal_client.SyncClient) -> None:
    # repository="fal": initiate?storage_type=gcs, then a PUT to the signed upload URL.
    data = png_bytes(10, 9)
    url = fal.upload(data, "image/png", "x.png", repository="fal")
    got = httpx.get(url)
    assert got.content == data and got.headers["content-type"] == "image/png"

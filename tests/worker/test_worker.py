"""The worker on the real small model, a real SQLite job store and a real local file store:
end to end, every bad input as a clear job error, cancel, lease loss, crash recovery."""

from __future__ import annotations

import base64
import io
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fixture_http import FixtureServer, Reply
from pngs import encode, png_header_only
from superscale import images
from superscale.files import FileStore, new_key
from superscale.jobs.records import CancelOutcome, Job, NewJob
from superscale.jobs.sqlite import SqliteJobStore
from superscale.schemas import ENDPOINT_ID
from superscale.settings import Settings
from superscale.worker import Worker
from superscale.worker.engines import get_upscaler


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    gradient = Image.radial_gradient("L").resize((width, height))
    image = gradient.convert(mode)
    if mode == "RGBA":
        image.putalpha(gradient)  # real transparency, so the alpha channel is kept
    return encode(image)


def submit(store: SqliteJobStore, image_url: str, **extra: Any) -> str:
    webhook_url = extra.pop("webhook_url", None)
    file_ttl = extra.pop("file_ttl", None)
    job = store.submit(
        NewJob(
            endpoint=ENDPOINT_ID,
            owner="key-1",
            input={"image_url": image_url, **extra},
            checkpoint=extra.get("checkpoint", "v1"),
            webhook_url=webhook_url,
            file_ttl=file_ttl,
        )
    )
    return job.id


def finished(store: SqliteJobStore, request_id: str) -> Job:
    job = store.get(request_id)
    assert job is not None and job.state == "COMPLETED"
    return job


def tile_logs(store: SqliteJobStore, request_id: str) -> list[str]:
    return [r.message for r in store.logs(request_id) if r.message.startswith("tiles ")]


def test_job_runs_end_to_end(
    worker: Worker,
    job_store: SqliteJobStore,
    file_store: FileStore,
    http_server: Callable[[], FixtureServer],
) -> None:
    server = http_server()
    server.routes["/in.png"] = Reply(200, png_bytes(130, 70), {"Content-Type": "image/png"})
    request_id = submit(job_store, f"{server.url}/in.png", file_ttl=120.0)
    assert worker.run_once()
    job = finished(job_store, request_id)
    assert job.error is None and job.output is not None
    image = job.output["image"]
    assert (image["width"], image["height"]) == (520, 280)
    assert image["content_type"] == "image/png"
    assert image["url"].startswith("http://files.test:8000/files/")
    stored = file_store.get(image["url"].removeprefix("http://files.test:8000/files/"))
    assert stored.size == image["file_size"] == len(stored.data)
    assert stored.expires_at is not None and abs(stored.expires_at - (time.time() + 120)) < 30
    decoded = images.decode(stored.data, 10**8)
    assert decoded.format == "PNG" and decoded.image.size == (520, 280)
    assert set(job.output["timings"]) == {"fetch", "decode", "inference", "encode", "store"}
    assert job.inference_time == job.output["timings"]["inference"] > 0
    # 130×70 is 3×2 tiles of 64: every batch is logged on an image this small (and the
    # engine's opening 0/total call, which tells the user the total).
    batch = get_upscaler(worker.settings, "v1").batch_size
    expected = [0, *range(batch, 6, batch), 6]
    assert tile_logs(job_store, request_id) == [f"tiles {n}/6" for n in expected]
    assert not worker.run_once()  # nothing left


def test_own_file_and_data_uri_inputs(
    worker: Worker, job_store: SqliteJobStore, file_store: FileStore, worker_settings: Settings
) -> None:
    key = new_key("upload.png")
    file_store.put(key, png_bytes(40, 30, "RGBA"), "image/png")
    own = submit(job_store, f"http://files.test:8000/files/{key}", output_format="webp")
    data = base64.b64encode(png_bytes(20, 10)).decode()
    inline = submit(job_store, f"data:image/png;base64,{data}", checkpoint="v1", seed=7)
    assert worker.run_once() and worker.run_once()
    out = finished(job_store, own).output
    assert out is not None
    assert out["image"]["content_type"] == "image/webp"
    assert (out["image"]["width"], out["image"]["height"]) == (160, 120)
    url = out["image"]["url"].removeprefix("http://files.test:8000/files/")
    assert Image.open(io.BytesIO(file_store.get(url).data)).mode == "RGBA"
    out = finished(job_store, inline).output
    assert out is not None and (out["image"]["width"], out["image"]["height"]) == (80, 40)


BAD_INPUTS: dict[str, tuple[Callable[[FixtureServer, int], str], str, str]] = {
    "unreachable": (
        lambda s, closed: f"http://127.0.0.1:{closed}/x.png",
        "file_download_error",
        "could not fetch image_url",
    ),
    "not an image": (lambda s, _: f"{s.url}/text", "image_load_error", "not"),
    "truncated png": (lambda s, _: f"{s.url}/truncated", "image_load_error", "truncated"),
    "bomb header": (lambda s, _: f"{s.url}/bomb", "image_too_large", "image too large"),
    "oversized body": (lambda s, _: f"{s.url}/big", "file_too_large", "larger than the limit"),
    "data uri not base64": (
        lambda s, _: "data:image/png;base64,%%%not-base64%%%",
        "image_load_error",
        "not valid base64",
    ),
    "missing own file": (
        lambda s, _: "http://files.test:8000/files/nope/x.png",
        "file_download_error",
        "does not exist",
    ),
    "http 404": (lambda s, _: f"{s.url}/missing", "file_download_error", "HTTP 404"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clear_job_error(
    case: str,
    worker: Worker,
    worker_settings: Settings,
    job_store: SqliteJobStore,
    http_server: Callable[[], FixtureServer],
    closed_port: int,
) -> None:
    worker_settings.max_input_bytes = 200_000
    server = http_server()
    server.routes["/text"] = Reply(200, b"<html>definitely not a picture</html>")
    server.routes["/truncated"] = Reply(200, png_bytes(300, 200)[:900])
    server.routes["/bomb"] = Reply(200, png_header_only(20000, 20000))
    server.routes["/big"] = Reply(200, b"\0" * 300_000)
    make_url, error_type, message = BAD_INPUTS[case]
    request_id = submit(job_store, make_url(server, closed_port))
    assert worker.run_once()  # the loop survives: the job carries the error
    job = finished(job_store, request_id)
    assert job.output is None and job.error is not None
    assert job.error.status_code == 422
    assert job.error.error_type == error_type
    assert message in job.error.message
    body = job.error.to_body()
    assert body["detail"][0]["loc"] == ["body", "image_url"]
    assert body["detail"][0]["type"] == error_type
    assert any(r.level == "ERROR" for r in job_store.logs(request_id))


def test_ssrf_target_is_a_clear_job_error(
    worker: Worker, worker_settings: Settings, job_store: SqliteJobStore
) -> None:
    worker_settings.ssrf_guard = True
    worker.fetcher.close()
    ids = [submit(job_store, url) for url in ("http://169.254.169.254/", "http://2130706433/")]
    assert worker.run_once() and worker.run_once()
    for request_id in ids:
        error = finished(job_store, request_id).error
        assert error is not None and error.status_code == 422
        assert "refused" in error.message


def test_unloadable_checkpoint_is_a_500_that_keeps_server_paths_out(
    worker_settings: Settings,
    job_store: SqliteJobStore,
    file_store: FileStore,
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken-models" / "v1"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file")
    worker_settings.model_dir = broken.parent
    worker = Worker(worker_settings, job_store, file_store)
    data = base64.b64encode(png_bytes(8, 8)).decode()
    request_id = submit(job_store, f"data:image/png;base64,{data}")
    assert worker.run_once()
    error = finished(job_store, request_id).error
    assert error is not None and error.status_code == 500
    assert error.error_type == "model_unavailable"
    # The exception's type names what went wrong; paths and tracebacks stay in the server log.
    assert "CheckpointUnreadable" in error.message and "server log" in error.message
    assert "Traceback" not in error.message and str(tmp_path) not in error.message


def _run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    return thread


def _wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_cancel_stops_at_the_next_tile_batch(
    worker: Worker, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    data = base64.b64encode(png_bytes(512, 512)).decode()  # 64 tiles
    request_id = submit(job_store, f"data:image/png;base64,{data}", webhook_url="http://h/x")
    thread = _run_in_thread(worker)
    _wait_for(lambda: len(tile_logs(job_store, request_id)) >= 2)
    assert job_store.cancel(request_id) == CancelOutcome.REQUESTED
    seen_at_cancel = len(tile_logs(job_store, request_id))
    thread.join(60)
    assert not thread.is_alive()
    job = finished(job_store, request_id)
    assert job.error is not None and job.error.error_type == "client_cancelled"
    assert job.error.status_code == 499 and job.output is None
    # At most the batch in flight when cancel arrived finishes; nothing after it.
    assert len(tile_logs(job_store, request_id)) <= seen_at_cancel + 1 < 64
    (delivery,) = job_store.webhooks(request_id)  # the cancellation is reported too
    assert b'"status":"ERROR"' in delivery.body


def test_lost_lease_stops_work_without_writing(
    worker: Worker, worker_settings: Settings, job_store: SqliteJobStore, file_store: FileStore
) -> None:
    worker_settings.lease_seconds = 0.6  # heartbeats every 0.2 s
    data = base64.b64encode(png_bytes(512, 512)).decode()
    request_id = submit(job_store, f"data:image/png;base64,{data}")
    thread = _run_in_thread(worker)
    _wait_for(lambda: len(tile_logs(job_store, request_id)) >= 1)
    # As if this worker had stalled past its lease: the lease runs out, the job is requeued
    # and another worker takes it over.
    # (Retried: a heartbeat landing between the two statements renews the lease.)
    for _ in range(20):
        with sqlite3.connect(job_store.path) as db:
            db.execute("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?", (request_id,))
        if job_store.recover_expired(max_attempts=3) == [request_id]:
            break
    else:
        raise AssertionError("could not expire the lease")
    thief = job_store.claim("other-worker", 60, ["v1"])
    assert thief is not None and thief.id == request_id
    thread.join(30)
    assert not thread.is_alive()
    job = job_store.get(request_id)
    assert job is not None and job.state == "IN_PROGRESS" and job.worker_id == "other-worker"
    assert job.output is None and job.error is None
    assert len(tile_logs(job_store, request_id)) < 64
    files_dir = Path(worker_settings.resolved_storage_url().removeprefix("file://"))
    assert not [p for p in files_dir.rglob("*.png")]  # no orphaned output


def test_idle_worker_recovers_jobs_of_dead_workers(
    worker: Worker, worker_settings: Settings, job_store: SqliteJobStore
) -> None:
    worker_settings.max_attempts = 2
    data = base64.b64encode(png_bytes(16, 16)).decode()
    # A worker that dies holding a job: twice for the first, once for the second.
    doomed = submit(job_store, f"data:image/png;base64,{data}", webhook_url="http://h/x")
    for _ in range(1):
        claimed = job_store.claim("dead-worker", 0.05, ["v1"])
        assert claimed is not None and claimed.id == doomed
        time.sleep(0.1)
        job_store.recover_expired(max_attempts=99)
    claimed = job_store.claim("dead-worker", 0.05, ["v1"])
    assert claimed is not None and claimed.id == doomed
    retried = submit(job_store, f"data:image/png;base64,{data}")
    claimed = job_store.claim("dead-worker", 0.05, ["v1"])
    assert claimed is not None and claimed.id == retried
    time.sleep(0.1)
    assert not worker.run_once()  # idle: recovers instead
    assert worker.run_once()  # runs the requeued job
    assert finished(job_store, retried).error is None
    error = finished(job_store, doomed).error
    assert error is not None and error.status_code == 500 and "2 time" in error.message
    (delivery,) = job_store.webhooks(doomed)
    assert b'"status":"ERROR"' in delivery.body


def test_completion_enqueues_webhook_and_run_forever_stops(
    worker: Worker, job_store: SqliteJobStore
) -> None:
    data = base64.b64encode(png_bytes(16, 16)).decode()
    ids = [submit(job_store, f"data:image/png;base64,{data}", webhook_url="http://h/x")]
    ids.append(submit(job_store, f"data:image/png;base64,{data}"))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    _wait_for(lambda: all(finished_or_none(job_store, i) for i in ids), timeout=60)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    (delivery,) = job_store.webhooks(ids[0])
    assert delivery.url == "http://h/x" and b'"status":"OK"' in delivery.body
    assert delivery.delivered_at is None  # the worker only enqueues
    assert job_store.webhooks(ids[1]) == []


def finished_or_none(store: SqliteJobStore, request_id: str) -> bool:
    job = store.get(request_id)
    return job is not None and job.state == "COMPLETED"


def test_progress_on_big_images_is_throttled(job_store: SqliteJobStore) -> None:
    from superscale.worker.engines import TileProgress

    request_id = submit(job_store, "data:,x")
    progress = TileProgress(job_store, request_id)
    for done in range(401):  # a 1280² input: 400 tiles, reported far faster than 1 line/s
        progress(done, 400)
    lines = tile_logs(job_store, request_id)
    assert lines[0] == "tiles 0/400" and lines[-1] == "tiles 400/400"
    assert len(lines) <= 4


def test_output_too_large_for_the_format_fails_before_inference(
    worker: Worker, job_store: SqliteJobStore
) -> None:
    # 4096 px wide → 16384 px: one more than WebP holds. Refused right after decoding.
    data = base64.b64encode(png_bytes(4096, 1)).decode()
    request_id = submit(job_store, f"data:image/png;base64,{data}", output_format="webp")
    assert worker.run_once()
    error = finished(job_store, request_id).error
    assert error is not None and error.status_code == 422
    assert error.error_type == "image_too_large"
    assert "webp cannot hold a 16384x4 image" in error.message and "png" in error.message
    assert error.to_body()["detail"][0]["loc"] == ["body", "output_format"]
    assert tile_logs(job_store, request_id) == []  # no tile was run


def test_encode_refusal_is_a_job_error_not_an_exception() -> None:
    from superscale.worker.failures import encode_output
    from superscale.worker.fetch import InputError

    with pytest.raises(InputError) as caught:
        encode_output(Image.new("RGB", (16384, 1)), "webp", None)
    error = caught.value.to_job_error()
    assert error.status_code == 422 and error.error_type == "image_too_large"
    assert "at most 16383 px" in error.message

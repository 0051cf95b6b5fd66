"""fal's platform controls (request headers and query) and response headers, against the real
server and store: X-Fal-Store-IO, X-Fal-No-Retry, fal_max_queue_length, X-Fal-Request-Start-
Timeout, x-fal-request-id, X-Fal-Billable-Units, a Bearer token that is not ours, GET runs and
submits, and a full queue waited out within the request's hold."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from superscale.api import maintenance
from superscale.api.context import ApiContext
from superscale.api.metrics import Metrics
from superscale.api.signing import Signer

from .server import LiveServer, live_server
from .test_routes_queue import INPUT, OUTPUT, finish

SUBMIT = "/queue/fal-ai/aura-sr"


def _request(rid: str) -> str:
    return f"{SUBMIT}/requests/{rid}"


def _ctx(srv: LiveServer) -> ApiContext:
    return ApiContext(
        srv.settings, srv.job_store, srv.file_store, Signer(b"k" * 32), Metrics(srv.job_store)
    )


def test_store_io_off_keeps_neither_input_nor_output(server: LiveServer) -> None:
    with server.client() as c:
        kept = c.post(SUBMIT, json=INPUT).json()["request_id"]
        unkept = c.post(SUBMIT, json=INPUT, headers={"X-Fal-Store-IO": "0"}).json()["request_id"]
        unread = c.post(SUBMIT, json=INPUT, headers={"x-fal-store-io": "0"}).json()["request_id"]
        for rid in (kept, unkept, unread):
            job = server.job_store.get(rid)
            assert job is not None and job.input["image_url"] == INPUT["image_url"]  # kept
            finish(server, rid)
        # The input (a data: URI here) is gone once the job ran; the default keeps it.
        assert server.job_store.get(unkept).input == {}  # type: ignore[union-attr]
        assert server.job_store.get(kept).input["image_url"] == INPUT["image_url"]  # type: ignore[union-attr]
        # The output: once, then 404; the default as often as asked.
        first = c.get(_request(unkept))
        assert first.status_code == 200 and first.json()["image"] == OUTPUT["image"]
        again = c.get(_request(unkept))
        assert again.status_code == 404 and again.json()["detail"][0]["type"] == "output_not_stored"
        assert again.headers["x-fal-request-id"] == unkept
        assert c.get(_request(kept)).json() == c.get(_request(kept)).json() == OUTPUT
        # Never read: dropped an hour (unstored_output_seconds) after the job ended.
        ctx = _ctx(server)
        assert maintenance.sweep_unread_outputs(ctx) == 0  # not yet
        assert maintenance.sweep_unread_outputs(ctx, now=time.time() + 3601) == 1
        assert c.get(_request(unread)).status_code == 404
        assert c.get(_request(kept)).status_code == 200
        bad = c.post(SUBMIT, json=INPUT, headers={"X-Fal-Store-IO": "maybe"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
            "header",
            "x-fal-store-io",
        ]


def test_no_retry_ends_a_job_whose_worker_died(server: LiveServer) -> None:
    with server.client() as c:
        once = c.post(SUBMIT, json=INPUT, headers={"X-Fal-No-Retry": "true"}).json()["request_id"]
        again = c.post(SUBMIT, json=INPUT).json()["request_id"]
        # A worker takes both and dies (its lease runs out, nobody renews it).
        assert server.job_store.claim("dying-worker", 0.05).id == once  # type: ignore[union-attr]
        assert server.job_store.claim("dying-worker", 0.05).id == again  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while server.job_store.get(once).state != "COMPLETED":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "maintenance never recovered the lease"
            time.sleep(0.05)
        res = c.get(_request(once))
        assert res.status_code == 500 and res.headers["x-fal-error-type"] == "runner_disconnected"
        assert "X-Fal-No-Retry" in res.json()["detail"]
        assert server.job_store.get(once).attempts == 1  # type: ignore[union-attr]
        # Without the header the job runs again.
        while server.job_store.get(again).state != "IN_QUEUE":  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_max_queue_length_refuses_at_once_when_more_are_waiting(server: LiveServer) -> None:
    with server.client() as c:
        for _ in range(2):
            assert c.post(SUBMIT, json=INPUT).status_code == 200
        assert c.post(f"{SUBMIT}?fal_max_queue_length=2", json=INPUT).status_code == 200
        t0 = time.monotonic()
        r = c.post(f"{SUBMIT}?fal_max_queue_length=2", json=INPUT)  # 3 waiting: more than 2
        assert r.status_code == 429 and time.monotonic() - t0 < 2  # not held: the caller's limit
        assert r.json()["error_type"] == "queue_full" and int(r.headers["retry-after"]) >= 1
        assert "fal_max_queue_length" in r.json()["detail"][0]["msg"]
        assert c.post(f"{SUBMIT}?fal_max_queue_length=3", json=INPUT).status_code == 200
        assert c.post(SUBMIT, json=INPUT).status_code == 200  # no limit asked: none applied
        for bad in ("-1", "x", "1e3", "²"):
            r = c.post(SUBMIT, params={"fal_max_queue_length": bad}, json=INPUT)
            assert r.status_code == 422, bad
            assert r.json()["detail"][0]["loc"] == ["query", "fal_max_queue_length"]


def test_a_full_queue_is_waited_out_within_the_hold(tmp_path: Path) -> None:
    with live_server(tmp_path, workers=0, max_queue=2, busy_hold=4) as srv, srv.client() as c:
        filler = [c.post(SUBMIT, json=INPUT).json()["request_id"] for _ in range(2)]
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(c.post(SUBMIT, json=INPUT)))
        t0 = time.monotonic()
        waiting.start()
        time.sleep(1.0)
        assert not answers  # held, not refused
        assert c.put(f"{_request(filler[0])}/cancel").status_code == 202  # room again
        waiting.join(10)
        assert answers[0].status_code == 200 and 1.0 <= time.monotonic() - t0 < 3
        # Full for longer than the hold: 429 once it has passed.
        t0 = time.monotonic()
        assert c.post(SUBMIT, json=INPUT).status_code == 429
        assert 3.5 <= time.monotonic() - t0 < 6


def test_request_id_on_every_request_answer_and_billable_units(server: LiveServer) -> None:
    with server.client() as c:
        submitted = c.post(SUBMIT, json=INPUT)
        rid = submitted.json()["request_id"]
        assert submitted.headers["x-fal-request-id"] == rid
        status = c.get(f"{_request(rid)}/status")
        assert status.headers["x-fal-request-id"] == rid
        not_yet = c.get(_request(rid))
        assert not_yet.status_code == 400 and not_yet.headers["x-fal-request-id"] == rid
        finish(server, rid)
        with c.stream("GET", f"{_request(rid)}/status/stream") as stream:
            assert stream.headers["x-fal-request-id"] == rid
        result = c.get(_request(rid))
        assert result.headers["x-fal-request-id"] == rid
        # A unit is an output megapixel: OUTPUT is 4×4.
        assert result.headers["x-fal-billable-units"] == "0.000016"
        cancelled = c.put(f"{_request(rid)}/cancel")
        assert cancelled.status_code == 400 and cancelled.headers["x-fal-request-id"] == rid
        # Browsers may read them (CORS).
        cors = c.get(_request(rid), headers={"Origin": "https://app.example"})
        exposed = cors.headers["access-control-expose-headers"].lower()
        assert "x-fal-request-id" in exposed and "x-fal-billable-units" in exposed


def test_start_timeout_synonym_ends_in_request_timeout(server: LiveServer) -> None:
    with server.client() as c:
        headers = {"X-Fal-Request-Start-Timeout": "0.3"}
        rid = c.post(SUBMIT, json=INPUT, headers=headers).json()["request_id"]
        deadline = time.monotonic() + 10
        while (res := c.get(_request(rid))).status_code == 400:
            assert time.monotonic() < deadline, "maintenance never expired the deadline"
            time.sleep(0.1)
        assert res.status_code == 504 and res.headers["x-fal-request-timeout-type"] == "user"
        assert res.headers["x-fal-error-type"] == "request_timeout"
        assert res.json() == {
            "detail": "The request was not started before its timeout (x-fal-request-timeout).",
            "error_type": "request_timeout",
        }
        bad = c.post(SUBMIT, json=INPUT, headers={"X-Fal-Request-Start-Timeout": "-1"})
        assert bad.json()["detail"][0]["loc"] == ["header", "x-fal-request-start-timeout"]


def test_a_bearer_token_that_is_not_ours_says_to_set_fal_key(server: LiveServer) -> None:
    r = httpx.post(
        f"{server.url}{SUBMIT}", json=INPUT, headers={"Authorization": "Bearer eyJhbGciOi.x.y"}
    )
    assert r.status_code == 401 and "FAL_KEY" in r.json()["detail"][0]["msg"]


def test_get_runs_and_submits_take_the_input_from_the_query(server: LiveServer) -> None:
    query = {**INPUT, "upscale_factor": "4", "overlapping_tiles": "true"}
    with server.client() as c:
        r = c.get(SUBMIT, params=query)
        assert r.status_code == 200, r.text
        job = server.job_store.get(r.json()["request_id"])
        assert job is not None and job.input["image_url"] == INPUT["image_url"]
        assert job.input["overlapping_tiles"] is True
        bad = c.get(SUBMIT, params={"upscale_factor": "4"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "image_url"]
        bad = c.get(SUBMIT, params={**INPUT, "overlapping_tiles": "sometimes"})
        assert bad.status_code == 422
        # Other GETs under the endpoint are still 404 or 405.
        assert c.get("/fal-ai/aura-sr/other").status_code == 404
        assert c.delete("/fal-ai/aura-sr").status_code == 405


def test_quiet_streams_keep_alive_within_ten_seconds(server: LiveServer) -> None:
    """No worker: the job waits, its status does not change, and both streams still send
    something well within fal's 10 s (fal-js drops an output stream silent for 15 s)."""
    with server.client() as c:
        rid = c.post(SUBMIT, json=INPUT).json()["request_id"]
        for method, url, body in (
            ("GET", f"{_request(rid)}/status/stream", None),
            ("POST", "/fal-ai/aura-sr/stream", INPUT),
        ):
            with c.stream(method, url, json=body) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")  # the first status, at once
                t0 = time.monotonic()
                while (line := next(lines)) == "":
                    pass
                assert line.startswith(":"), line  # a comment: nothing changed
                assert time.monotonic() - t0 <= 10


def test_output_stream_ends_with_the_error_and_a_hang_up_cancels(server: LiveServer) -> None:
    from superscale.jobs import JobError

    with server.client() as c:
        with c.stream("POST", "/fal-ai/aura-sr/stream", json=INPUT) as stream:
            lines = stream.iter_lines()
            first = json.loads(next(lines).removeprefix("data: "))
            assert first["status"] == "IN_QUEUE"
            rid = stream.headers["x-fal-request-id"]
            job = server.job_store.claim("w", 30)
            assert job is not None and job.id == rid
            error = JobError(422, "not an image", "image_load_error")
            assert server.job_store.fail(rid, "w", error)
            events = [json.loads(x.removeprefix("data: ")) for x in lines if x.startswith("data:")]
        assert events[-1] == error.to_body()
        # A client that leaves before the end: nobody will read the output, the job ends.
        with c.stream("POST", "/fal-ai/aura-sr/stream", json=INPUT) as stream:
            left = stream.headers["x-fal-request-id"]
            next(stream.iter_lines())
        deadline = time.monotonic() + 10
        while (job := server.job_store.get(left)) is None or job.state != "COMPLETED":
            assert time.monotonic() < deadline, "the abandoned stream's job still waits"
            time.sleep(0.1)
        assert job.error is not None and job.error.error_type == "client_cancelled"

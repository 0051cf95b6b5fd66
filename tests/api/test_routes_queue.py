"""Queue routes against the real server (no worker: jobs are finished through the store, as a
worker would finish them)."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx

from superscale.jobs import JobError

from .server import LiveServer

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
INPUT = {"image_url": DATA_URI}
OUTPUT = {
    "image": {
        "url": "http://x/files/k/out.png",
        "content_type": "image/png",
        "file_name": "out.png",
        "file_size": 3,
        "width": 4,
        "height": 4,
    },
    "timings": {"inference": 0.5},
}


def finish(srv: LiveServer, request_id: str, output: dict | None = None) -> None:
    job = srv.job_store.claim("test-worker", 30)
    assert job is not None and job.id == request_id
    srv.job_store.append_log(request_id, "tiles 1/1")
    assert srv.job_store.complete(request_id, "test-worker", output or OUTPUT, 0.5)


def test_submit_status_result(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/queue/fal-ai/aura-sr", json=INPUT)
        assert r.status_code == 200, r.text
        sub = r.json()
        rid = sub["request_id"]
        assert sub["status"] == "IN_QUEUE" and sub["queue_position"] == 0
        assert sub["gateway_request_id"] == rid
        assert r.headers["x-fal-request-id"] == rid
        base = f"{server.url}/queue/fal-ai/aura-sr/requests/{rid}"
        assert sub["response_url"] == base
        assert sub["status_url"] == base + "/status"
        assert sub["cancel_url"] == base + "/cancel"

        # A second job waits behind the first.
        second = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()
        st = c.get(second["status_url"]).json()
        assert st["queue_position"] == 1 and st["logs"] is None

        st = c.get(sub["status_url"], params={"logs": "1"})
        assert st.status_code == 202
        assert st.json() == {
            "status": "IN_QUEUE",
            "request_id": rid,
            "response_url": base,
            "status_url": base + "/status",
            "cancel_url": base + "/cancel",
            "queue_position": 0,
            "logs": [],
        }
        stored = server.job_store.get(rid)
        assert stored is not None and stored.input["image_url"] == DATA_URI
        assert stored.owner == server.key_id

        # Still running: the result is not there yet.
        assert c.get(sub["response_url"]).status_code == 400

        finish(server, rid)
        for flag in ("true", "1"):
            st = c.get(sub["status_url"], params={"logs": flag})
            assert st.status_code == 200
            body = st.json()
            assert body["status"] == "COMPLETED"
            assert body["metrics"] == {"inference_time": 0.5}
            assert [e["message"] for e in body["logs"]] == ["tiles 1/1"]
            entry = body["logs"][0]
            assert entry["source"] == "USER" and entry["level"] == "INFO"
            assert "+00:00" in entry["timestamp"]
        for flag in ("false", "0"):
            assert c.get(sub["status_url"], params={"logs": flag}).json()["logs"] is None
        assert c.get(sub["status_url"], params={"logs": "maybe"}).status_code == 422

        res = c.get(sub["response_url"])
        assert res.status_code == 200 and res.json() == OUTPUT
        assert res.headers["x-fal-request-id"] == rid


def test_failed_job_result_answers_its_error(server: LiveServer) -> None:
    with server.client() as c:
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        err = JobError(422, "cannot identify image file", "image_load_error")
        assert server.job_store.fail(rid, None, err)
        st = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}/status").json()
        assert st["status"] == "COMPLETED" and st["error"] == "cannot identify image file"
        assert st["error_type"] == "image_load_error"
        res = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}")
        assert res.status_code == 422
        assert res.json()["detail"][0]["msg"] == "cannot identify image file"
        assert res.headers["x-fal-error-type"] == "image_load_error"


def test_request_timeout_header_ends_in_504(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/queue/fal-ai/aura-sr", json=INPUT, headers={"x-fal-request-timeout": "0.3"})
        rid = r.json()["request_id"]
        deadline = time.monotonic() + 10
        while c.get(f"/queue/fal-ai/aura-sr/requests/{rid}/status").json()["status"] != (
            "COMPLETED"
        ):
            assert time.monotonic() < deadline, "maintenance never expired the deadline"
            time.sleep(0.1)
        res = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}")
        assert res.status_code == 504
        assert res.headers["x-fal-request-timeout-type"] == "user"
        bad = c.post("/queue/fal-ai/aura-sr", json=INPUT, headers={"x-fal-request-timeout": "x"})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["header", "x-fal-request-timeout"]


def test_priority_and_lifecycle_headers_reach_the_job(server: LiveServer) -> None:
    with server.client() as c:
        headers = {
            "x-fal-queue-priority": "low",
            "x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": 60}),
        }
        r = c.post(
            "/queue/fal-ai/aura-sr?fal_webhook=http%3A%2F%2Fh%2Fhook", json=INPUT, headers=headers
        )
        job = server.job_store.get(r.json()["request_id"])
        assert job is not None
        assert (job.priority, job.file_ttl, job.webhook_url) == (-1, 60.0, "http://h/hook")
        assert (
            c.post(
                "/queue/fal-ai/aura-sr", json=INPUT, headers={"x-fal-queue-priority": "urgent"}
            ).status_code
            == 422
        )
        assert c.post("/queue/fal-ai/aura-sr?fal_webhook=ftp://h/", json=INPUT).status_code == 422


def test_submit_sets_the_batch_key_from_checkpoint_and_seed(server: LiveServer) -> None:
    """Workers batch jobs whose keys match: the key must name what changes the weights."""
    with server.client() as c:
        keys = []
        for extra in ({}, {"seed": 0}, {"seed": 9}, {"checkpoint": "v2", "seed": 9}):
            r = c.post("/queue/fal-ai/aura-sr", json={**INPUT, **extra})
            job = server.job_store.get(r.json()["request_id"])
            assert job is not None
            keys.append(job.batch_key)
        assert keys == ["v1:seed=0", "v1:seed=0", "v1:seed=9", "v2:seed=9"]


def test_cancel(server: LiveServer) -> None:
    with server.client() as c:
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        url = f"/queue/fal-ai/aura-sr/requests/{rid}/cancel"
        r = c.put(url)
        assert (r.status_code, r.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        st = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}/status").json()
        assert st["status"] == "COMPLETED" and st["error_type"] == "client_cancelled"
        # The result is the cancellation as fal answers it (499, client_cancelled, a flat
        # detail), not just any error.
        res = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}")
        assert res.status_code == 499 and res.headers["x-fal-error-type"] == "client_cancelled"
        assert res.json() == {
            "detail": "The request was cancelled.",
            "error_type": "client_cancelled",
        }
        r = c.put(url)
        assert (r.status_code, r.json()) == (400, {"status": "ALREADY_COMPLETED"})
        r = c.put("/queue/fal-ai/aura-sr/requests/nope/cancel")
        assert (r.status_code, r.json()) == (404, {"status": "NOT_FOUND"})

        # A running job: cancellation is requested, the worker stops at its next tile batch.
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        assert server.job_store.claim("w", 30) is not None
        r = c.put(f"/queue/fal-ai/aura-sr/requests/{rid}/cancel")
        assert (r.status_code, r.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        job = server.job_store.get(rid)
        assert job is not None and job.cancel_requested


def test_stream(server: LiveServer) -> None:
    with server.client() as c:
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]

        def work() -> None:
            time.sleep(0.3)
            job = server.job_store.claim("w", 30)
            assert job is not None
            time.sleep(0.2)
            server.job_store.append_log(rid, "tiles 1/2")
            time.sleep(0.2)
            server.job_store.append_log(rid, "tiles 2/2")
            time.sleep(0.2)
            server.job_store.complete(rid, "w", OUTPUT, 0.25)

        threading.Thread(target=work).start()
        events = []
        started = time.monotonic()
        url = f"/queue/fal-ai/aura-sr/requests/{rid}/status/stream"
        with c.stream("GET", url, params={"logs": "1"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert time.monotonic() - started < 5  # closed right after COMPLETED
        states = [e["status"] for e in events]
        assert states[0] == "IN_QUEUE" and states[-1] == "COMPLETED"
        assert "IN_PROGRESS" in states
        assert events[0]["queue_position"] == 0
        # Each event carries only new log lines (fal's JS client accumulates them).
        assert [m["message"] for e in events for m in e["logs"]] == ["tiles 1/2", "tiles 2/2"]
        assert events[-1]["metrics"] == {"inference_time": 0.25}


def test_sync_run(server: LiveServer) -> None:
    def work() -> None:
        deadline = time.monotonic() + 10
        while (job := server.job_store.claim("w", 30)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.job_store.complete(job.id, "w", OUTPUT, 0.1)

    t = threading.Thread(target=work)
    t.start()
    with server.client() as c:
        r = c.post("/fal-ai/aura-sr", json=INPUT)
    t.join()
    assert r.status_code == 200 and r.json() == OUTPUT
    assert server.job_store.get(r.headers["x-fal-request-id"]) is not None


def test_sync_run_answers_the_jobs_error(server: LiveServer) -> None:
    def work() -> None:
        deadline = time.monotonic() + 10
        while (job := server.job_store.claim("w", 30)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.job_store.fail(job.id, "w", JobError(400, "bad image", "image_load_error"))

    t = threading.Thread(target=work)
    t.start()
    with server.client() as c:
        r = c.post("/fal-ai/aura-sr", json=INPUT)
    t.join()
    assert r.status_code == 400
    assert r.json()["detail"][0]["msg"] == "bad image"
    assert "x-fal-request-id" in r.headers


def test_other_keys_requests_are_404(server: LiveServer) -> None:
    other = server.new_key()
    with server.client() as mine, server.client(other) as theirs:
        rid = mine.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        base = f"/queue/fal-ai/aura-sr/requests/{rid}"
        assert theirs.get(base + "/status").status_code == 404
        assert theirs.get(base + "/status/stream").status_code == 404
        assert theirs.get(base).status_code == 404
        assert theirs.put(base + "/cancel").status_code == 404
        assert mine.get(base + "/status").status_code == 202


def test_unknown_endpoints_are_404(server: LiveServer) -> None:
    with server.client() as c:
        for path in (
            "/queue/fal-ai/flux",
            "/queue/fal-ai/aura-sr/extra",
            "/queue/123-aura-sr",
            "/queue/workflows/fal-ai/aura-sr",
            "/fal-ai/other",
            "/aura-sr",
        ):
            r = c.post(path, json=INPUT)
            assert r.status_code == 404, path
            assert r.json()["detail"][0]["type"] == "not_found"
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        assert c.get(f"/queue/fal-ai/other/requests/{rid}/status").status_code == 404
        # fal's clients drop a sub-path for status calls; both forms reach the job
        assert c.get(f"/queue/fal-ai/aura-sr/requests/{rid}/status").status_code == 202


def test_queue_full_is_429_with_retry_after(tmp_path) -> None:
    from .server import live_server

    with live_server(tmp_path, workers=0, max_queue=2, busy_hold=0) as srv, srv.client() as c:
        for _ in range(2):
            assert c.post("/queue/fal-ai/aura-sr", json=INPUT).status_code == 200
        r = c.post("/queue/fal-ai/aura-sr", json=INPUT)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["detail"][0]["type"] == "queue_full"


def test_status_of_unknown_request_is_404(server: LiveServer) -> None:
    with server.client() as c:
        r = c.get("/queue/fal-ai/aura-sr/requests/does-not-exist/status")
        assert r.status_code == 404
        assert r.json()["detail"][0]["msg"] == "Request not found"


def test_base_url_follows_the_host_header(server: LiveServer) -> None:
    with httpx.Client(headers={**server.headers(), "Host": "upscale.example:9000"}) as c:
        r = c.post(f"{server.url}/queue/fal-ai/aura-sr", json=INPUT)
    assert r.json()["status_url"].startswith("http://upscale.example:9000/queue/fal-ai/aura-sr/")


def test_sync_run_client_hanging_up_cancels_the_job(server: LiveServer) -> None:
    with server.client() as c:
        try:
            c.post("/fal-ai/aura-sr", json=INPUT, timeout=0.5)
        except httpx.TimeoutException:
            pass
        else:
            raise AssertionError("no worker: the run cannot have finished")
    deadline = time.monotonic() + 6
    while server.job_store.counts().get("COMPLETED", 0) != 1:
        assert time.monotonic() < deadline, "the abandoned run was never cancelled"
        time.sleep(0.1)
    assert server.job_store.counts().get("IN_QUEUE", 0) == 0


def test_cancelling_a_queued_job_sends_its_webhook(server: LiveServer) -> None:
    with server.client() as c:
        sub = c.post("/queue/fal-ai/aura-sr?fal_webhook=https://hooks.example/x", json=INPUT)
        rid = sub.json()["request_id"]
        assert c.put(f"/queue/fal-ai/aura-sr/requests/{rid}/cancel").status_code == 202
    due = server.job_store.claim_due_webhooks(10, 30)
    assert [(d.request_id, d.url) for d in due] == [(rid, "https://hooks.example/x")]
    assert json.loads(due[0].body)["status"] == "ERROR"


def test_output_file_urls_follow_the_host_the_client_used(server: LiveServer) -> None:
    ours = f"{server.settings.resolved_public_url()}/files/abc/out.png"
    output = {**OUTPUT, "image": {**OUTPUT["image"], "url": ours}}
    with server.client() as c:
        rid = c.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        finish(server, rid, output)
        direct = c.get(f"/queue/fal-ai/aura-sr/requests/{rid}").json()
        proxied = c.get(
            f"/queue/fal-ai/aura-sr/requests/{rid}", headers={"Host": "upscale.example:9000"}
        ).json()
    assert direct["image"]["url"] == ours
    assert proxied["image"]["url"] == "http://upscale.example:9000/files/abc/out.png"
    assert proxied["timings"] == OUTPUT["timings"]

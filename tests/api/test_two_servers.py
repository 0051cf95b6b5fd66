"""Two API servers on one PostgreSQL job store and one file store (scale-out): keys, upload
tokens and signed upload URLs made by one are honoured by the other (shared
SUPERSCALE_SECRET_KEY), and a stream on one sees a job finished through the other at once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from .server import live_server
from .test_routes_queue import INPUT, OUTPUT


def test_two_api_servers_share_state(
    tmp_path: Path, pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERSCALE_SECRET_KEY", "test-shared-secret")
    shared = {
        "workers": 0,
        "database_url": pg_schema_url,
        "storage_url": f"file://{tmp_path / 'files'}",
    }
    with (
        live_server(tmp_path / "a", **shared) as a,
        live_server(tmp_path / "b", **shared) as b,
        a.client() as ca,
    ):
        cb = httpx.Client(base_url=b.url, headers=a.headers(), timeout=30)  # A's key, on B
        rid = ca.post("/queue/fal-ai/aura-sr", json=INPUT).json()["request_id"]
        assert cb.get(f"/queue/fal-ai/aura-sr/requests/{rid}/status").status_code == 202

        events: list[dict] = []
        elapsed: list[float] = []

        def stream() -> None:
            url = f"/queue/fal-ai/aura-sr/requests/{rid}/status/stream"
            with cb.stream("GET", url) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        if events[-1]["status"] == "COMPLETED":
                            elapsed.append(time.monotonic())

        reader = threading.Thread(target=stream)
        reader.start()
        time.sleep(0.5)
        job = a.job_store.claim("w", 30)
        assert job is not None and job.id == rid
        # Once B's stream has reported IN_PROGRESS it waits on the job, re-reading it only every
        # 2 s while listening: a completion 0.3 s later reaches it at once only by NOTIFY.
        deadline = time.monotonic() + 10
        while not any(e["status"] == "IN_PROGRESS" for e in events):
            assert time.monotonic() < deadline, events
            time.sleep(0.02)
        time.sleep(0.3)
        done_at = time.monotonic()
        a.job_store.complete(rid, "w", OUTPUT, 0.1)
        reader.join(15)
        assert events[-1]["status"] == "COMPLETED"
        assert elapsed[0] - done_at < 1.0  # woken by NOTIFY; the 2 s poll would take ~1.7 s
        assert cb.get(f"/queue/fal-ai/aura-sr/requests/{rid}").json() == OUTPUT

        token = ca.post("/storage/auth/token", json={}).json()["token"]
        up = httpx.post(
            f"{b.url}/files/upload", content=b"bytes", headers={"Authorization": f"Bearer {token}"}
        )
        assert up.status_code == 200, up.text
        assert httpx.get(up.json()["access_url"].replace(b.url, a.url)).content == b"bytes"
        init = ca.post("/storage/upload/initiate", json={"content_type": "image/png"}).json()
        assert (
            httpx.put(init["upload_url"].replace(a.url, b.url), content=b"png").status_code == 200
        )
        assert httpx.get(init["file_url"]).content == b"png"
        cb.close()

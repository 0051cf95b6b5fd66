"""A short job store outage and a queue full for a while are ridden out: fal's Python client
(sync and async) and fal's JS client keep submitting and polling through them, and none of
their callers sees an error; every request they made completes once — none lost, none run
twice. Neither client reads Retry-After, Python never retries our 503 and JS gives up on a 429
after ~7 s: the server holds such requests for up to `busy_hold` (10 s) instead."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client as fal_module
import pytest

from superscale.jobs import NewJob
from superscale.jobs.postgres import PostgresJobStore

from .server import LiveServer, live_server
from .test_fal_client import APP, png_bytes
from .test_fal_js_client import JS_DIR, NODE, _js_client_installed, node_env  # noqa: F401
from .test_store_outage import TcpRelay, relayed_pg_url  # noqa: F401 (fixture)

RIDE = 8.0  # seconds the clients keep going; the trouble starts 1 s in
OUTAGE = 5.0  # seconds the store is gone
# Seconds the queue is full: longer than fal-js's own 429 retries last (1 + 2 + 4 s, ±25%).
FULL = 8.0
IMAGE = png_bytes(8, 11)


@contextmanager
def _clients(
    srv: LiveServer, monkeypatch: pytest.MonkeyPatch, ride: float = RIDE
) -> Iterator[dict[str, Any]]:
    """fal's three clients, each subscribing one request after another for RIDE seconds;
    yields their record, complete once the block's body has returned and they stopped."""
    for name, value in (
        ("RUN_URL_FORMAT", f"{srv.url}/"),
        ("QUEUE_URL_FORMAT", f"{srv.url}/queue/"),
        ("REST_URL", srv.url),
        ("CDN_URL", srv.url),
    ):
        monkeypatch.setattr(fal_module, name, value)
    record: dict[str, Any] = {"python": [], "python_async": [], "errors": [], "longest": 0.0}
    args = {"image_url": fal_client.encode(IMAGE, "image/png")}
    until = time.monotonic() + ride

    def sync_client() -> None:
        fal = fal_client.SyncClient(key=srv.key)
        while time.monotonic() < until:
            try:
                t0 = time.monotonic()
                handle = fal.submit(APP, args)
                for _ in handle.iter_events(with_logs=True, interval=0.1):
                    pass
                record["python"].append((handle.request_id, handle.get()["image"]["width"]))
                record["longest"] = max(record["longest"], time.monotonic() - t0)
            except Exception as exc:  # what a caller would see
                record["errors"].append(("python", repr(exc)))

    async def async_client() -> None:
        fal = fal_client.AsyncClient(key=srv.key)
        while time.monotonic() < until:
            try:
                t0 = time.monotonic()
                handle = await fal.submit(APP, args)
                async for _ in handle.iter_events(with_logs=True, interval=0.1):
                    pass
                output = await handle.get()
                record["python_async"].append((handle.request_id, output["image"]["width"]))
                record["longest"] = max(record["longest"], time.monotonic() - t0)
            except Exception as exc:
                record["errors"].append(("python_async", repr(exc)))

    assert NODE is not None
    env = node_env(srv, IMAGE, DURATION_MS=str(int(ride * 1000)))
    js = subprocess.Popen(
        [NODE, "fal_js_ride.mjs"], cwd=JS_DIR, env=env, stdout=subprocess.PIPE, text=True
    )
    threads = [
        threading.Thread(target=sync_client),
        threading.Thread(target=lambda: asyncio.run(async_client())),
    ]
    for thread in threads:
        thread.start()
    yield record
    for thread in threads:
        thread.join(120)
    stdout, _ = js.communicate(timeout=120)
    out = json.loads(stdout.strip().splitlines()[-1])
    record["js"] = [(d["requestId"], d["width"]) for d in out["done"]]
    record["errors"] += [("js", e) for e in out["errors"]]


def _check(srv: LiveServer, record: dict[str, Any], trouble: float, others: int = 0) -> None:
    """No caller saw an error; every request made completed once; the store holds exactly
    those (and `others` of the test's own), none still waiting or running."""
    assert record["errors"] == []
    # The trouble really met requests in flight: some waited through most of it.
    assert record["longest"] > trouble - 1.5, record["longest"]
    made = []
    for client in ("python", "python_async", "js"):
        assert record[client], f"{client} completed nothing"
        assert all(width == 32 for _, width in record[client]), record[client]
        made += [rid for rid, _ in record[client]]
    assert len(made) == len(set(made))
    for rid in made:
        job = srv.job_store.get(rid)
        assert job is not None and job.state == "COMPLETED" and job.error is None
        assert job.attempts == 1, f"{rid} ran {job.attempts} times"
    # Nothing lost or submitted twice: every job in the store is one a caller got back.
    assert srv.job_store.counts() == {
        "IN_QUEUE": 0,
        "IN_PROGRESS": 0,
        "COMPLETED": len(made) + others,
    }


def _during(trouble: Callable[[], None], seconds: float, recovery: Callable[[], None]) -> None:
    time.sleep(1.0)
    trouble()
    time.sleep(seconds)
    recovery()


def test_a_store_outage_is_ridden_out(
    tmp_path: Path,
    relayed_pg_url: tuple[str, TcpRelay],  # noqa: F811
    small_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, relay = relayed_pg_url
    store = PostgresJobStore(url, acquire_timeout=2.0)
    with live_server(
        tmp_path, workers=1, job_store=store, model_dir=small_model_dir, device="cpu"
    ) as srv:
        with _clients(srv, monkeypatch) as record:
            _during(relay.cut, OUTAGE, relay.restore)
        _check(srv, record, OUTAGE)


def test_a_full_queue_is_ridden_out(
    tmp_path: Path, small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 6
    with live_server(
        tmp_path, workers=1, model_dir=small_model_dir, device="cpu", max_queue=limit
    ) as srv:
        filler: list[str] = []

        def fill() -> None:
            # Jobs no worker here runs (a checkpoint it does not serve) fill the queue.
            new = NewJob(endpoint=APP, owner="filler", input={}, checkpoint="elsewhere")
            filler.extend(srv.job_store.submit(new).id for _ in range(limit))

        def empty() -> None:
            for rid in filler:
                srv.job_store.cancel(rid)

        with _clients(srv, monkeypatch, ride=FULL + 3) as record:
            _during(fill, FULL, empty)
        _check(srv, record, FULL, others=limit)

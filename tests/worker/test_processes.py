"""Real processes: `superscale serve` killed with SIGKILL mid-job and restarted loses nothing,
restarts its worker process when that dies, shares its port and metrics between API processes;
`superscale worker` releases its job on SIGTERM and delivers signed webhooks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixture_http import FixtureServer, Reply
from loopback import SUPERSCALE, descendants, free_port, rss_kb, wait_for
from pngs import data_uri
from superscale import webhooks
from superscale.jobs.sqlite import SqliteJobStore

from .test_worker import png_bytes

QUEUE = "/queue/fal-ai/aura-sr"


def png_data_uri(width: int, height: int) -> str:
    return data_uri(png_bytes(width, height))


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and every process below it: a machine's crash, not a stop."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([*SUPERSCALE, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        proc.wait(10)


def status(url: str, request_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}{QUEUE}/requests/{request_id}/status?logs=1", timeout=5)
    r.raise_for_status()
    return dict(r.json())


def tiles_logged(url: str, request_id: str) -> int:
    logs = status(url, request_id).get("logs") or []
    return sum(1 for entry in logs if entry["message"].startswith("tiles "))


def submit(url: str, image_url: str, webhook: str | None = None) -> str:
    params = {"fal_webhook": webhook} if webhook else None
    r = httpx.post(f"{url}{QUEUE}", json={"image_url": image_url}, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


@pytest.fixture
def env(small_model_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SUPERSCALE_MODEL_DIR": str(small_model_dir),
        "SUPERSCALE_DEVICE": "cpu",
        "SUPERSCALE_LEASE_SECONDS": "2",
        "SUPERSCALE_AUTH": "false",
    }


@pytest.mark.slow
def test_serve_killed_mid_job_completes_everything_after_restart(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    args = ["serve", "--port", str(port), "--data-dir", str(data_dir), "--checkpoint", "v1"]
    log = tmp_path / "serve.log"
    with process(args, env, log) as first:
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "first start")
        running = submit(url, png_data_uri(256, 256))  # 16 tiles: killed at the first log line
        queued = [submit(url, png_data_uri(24 + i, 20)) for i in range(3)]
        wait_for(lambda: tiles_logged(url, running) >= 1, 120, "the first job to run")
        kill_tree(first)
    assert status_in_store(data_dir, running) == "IN_PROGRESS"

    with process(args, env, log):
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "restart")
        for request_id in [running, *queued]:
            wait_for(
                lambda rid=request_id: status(url, rid)["status"] == "COMPLETED",  # type: ignore[misc]
                180,
                f"{request_id} to complete ({log.read_text()[-2000:]})",
            )
        results = {rid: httpx.get(f"{url}{QUEUE}/requests/{rid}", timeout=10) for rid in queued}
        results[running] = httpx.get(f"{url}{QUEUE}/requests/{running}", timeout=10)
        for rid, r in results.items():
            assert r.status_code == 200, (rid, r.text)
        image = results[running].json()["image"]
        assert (image["width"], image["height"]) == (1024, 1024)
        download = httpx.get(image["url"], timeout=10)
        assert download.status_code == 200 and download.content[:4] == b"\x89PNG"
    store = SqliteJobStore(data_dir / "superscale.db")
    try:
        job = store.get(running)
        assert job is not None and job.attempts == 2  # run twice: before and after the kill
        assert all((j := store.get(rid)) is not None and j.error is None for rid in queued)
    finally:
        store.close()


def status_in_store(data_dir: Path, request_id: str) -> str:
    store = SqliteJobStore(data_dir / "superscale.db")
    try:
        job = store.get(request_id)
        assert job is not None
        return job.state
    finally:
        store.close()


@pytest.mark.slow
def test_serve_restarts_its_worker_process_when_it_dies(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The worker process killed (the kernel's OOM killer, say) is started again by serve; the
    API answers throughout, and the job it was running is run again once its lease expires."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    log = tmp_path / "serve.log"
    with process([*args, "--checkpoint", "v1"], env, log) as serve:
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "start")
        wait_for(lambda: len(descendants(serve.pid)) >= 2, 30, "the API and worker processes")
        running = submit(url, png_data_uri(256, 256))
        wait_for(lambda: tiles_logged(url, running) >= 1, 120, "the job to run")
        api_and_workers = set(descendants(serve.pid))
        # The worker process is the one that loaded the model: the biggest.
        worker = max(api_and_workers, key=lambda pid: rss_kb(pid))
        os.kill(worker, signal.SIGKILL)
        assert httpx.get(f"{url}/health").status_code == 200  # the API process is untouched
        wait_for(
            lambda: status(url, running)["status"] == "COMPLETED",
            180,
            f"the job to complete after the restart ({log.read_text()[-2000:]})",
        )
        assert httpx.get(f"{url}{QUEUE}/requests/{running}", timeout=10).status_code == 200
        assert worker not in descendants(serve.pid)
        assert "starting it again" in log.read_text()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    store = SqliteJobStore(tmp_path / "data" / "superscale.db")
    try:
        job = store.get(running)
        assert job is not None and job.attempts == 2
    finally:
        store.close()


@pytest.mark.slow
def test_worker_process_releases_on_sigterm_and_delivers_signed_webhook(
    env: dict[str, str], tmp_path: Path, http_server: Callable[[], FixtureServer]
) -> None:
    env = {**env, "SUPERSCALE_SSRF_GUARD": "false"}  # the webhook receiver is on loopback
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    stores = ["--data-dir", str(data_dir)]
    worker_args = ["worker", *stores, "--public-url", url, "--checkpoint", "v1", "--grace", "0"]
    log = tmp_path / "procs.log"
    with process(["serve", "--workers", "0", "--port", str(port), *stores], env, log):
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "serve")
        request_id = submit(url, png_data_uri(256, 256), webhook=f"{receiver.url}/hook")
        with process(worker_args, env, log) as worker:
            wait_for(lambda: tiles_logged(url, request_id) >= 1, 120, "the worker to run it")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        # Released at once, not left to its lease: back in the queue.
        assert status(url, request_id)["status"] == "IN_QUEUE"
        assert receiver.requests == []

        with process([*worker_args[:-2], "--grace", "30"], env, log) as worker:
            wait_for(lambda: status(url, request_id)["status"] == "COMPLETED", 180, "completion")
            wait_for(lambda: receiver.requests, 30, "the webhook")
            worker.send_signal(signal.SIGTERM)  # idle: stops at once
            assert worker.wait(30) == 0
        jwks = httpx.get(f"{url}/.well-known/jwks.json").json()
        (delivery,) = receiver.requests
        assert webhooks.verify(jwks, delivery.headers, delivery.body)
        assert delivery.headers["X-Fal-Webhook-Request-Id"] == request_id
        assert b'"status":"OK"' in delivery.body


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_drains_the_same_in_serve_and_worker(
    command: str, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM mid-job, as a routine restart sends it: with no grace left the job goes back to
    the queue, not charged an attempt, and the process exits 0 — three restarts in a row; with
    grace, the job finishes before the exit. Then it has been run to the end exactly once."""
    from superscale.jobs import NewJob

    data_dir = tmp_path / "data"
    args = [command, "--data-dir", str(data_dir), "--checkpoint", "v1"]
    if command == "serve":
        args += ["--port", str(free_port())]
    log = tmp_path / f"{command}.log"
    store = SqliteJobStore(data_dir / "superscale.db")
    try:
        job = NewJob("fal-ai/aura-sr", "", {"image_url": png_data_uri(256, 256)}, "v1")
        request_id = store.submit(job).id

        def tiles_so_far() -> int:
            return sum(1 for line in store.logs(request_id) if line.message.startswith("tiles "))

        def mid_job() -> bool:
            current = store.get(request_id)
            return current is not None and current.state == "IN_PROGRESS" and tiles_so_far() > seen

        for restart in range(3):
            seen = tiles_so_far()
            with process([*args, "--grace", "0"], env, log) as proc:
                wait_for(mid_job, 120, f"run {restart + 1} to start the job")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0, log.read_text()[-3000:]
            back = store.get(request_id)
            assert back is not None and back.state == "IN_QUEUE", back
            assert back.attempts == 0 and back.worker_id is None

        seen = tiles_so_far()
        with process([*args, "--grace", "60"], env, log) as proc:
            wait_for(mid_job, 120, "the last run to start the job")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0, log.read_text()[-3000:]
        done = store.get(request_id)
        assert done is not None and done.state == "COMPLETED" and done.error is None, done
        assert done.attempts == 1 and done.output is not None
        assert (done.output["image"]["width"], done.output["image"]["height"]) == (1024, 1024)
    finally:
        store.close()


def test_serve_with_two_api_processes_shares_its_port_and_its_metrics(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path), "--no-worker"]
    with process([*args, "--api-processes", "2"], env, tmp_path / "serve.log") as serve:
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "start")
        wait_for(lambda: len(descendants(serve.pid)) >= 3, 30, "2 API processes and 1 worker")
        for _ in range(40):  # a connection each: the processes take turns accepting them
            assert httpx.get(f"{url}/openapi.json").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        # Each process counts its own; a scrape, whichever process answers it, sums them.
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("superscale_http_requests_total") and 'route="/openapi.json"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) == 40
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0


@pytest.mark.slow
def test_serve_runs_one_worker_process_per_listed_device(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`--device cpu,cpu` (as `cuda:0,cuda:1` on a machine with two GPUs): two worker
    processes, each claiming jobs from the one queue."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    args = ["serve", "--port", str(port), "--data-dir", str(data_dir), "--checkpoint", "v1"]
    env = {**env, "SUPERSCALE_DEVICE": "cpu,cpu", "SUPERSCALE_API_PROCESSES": "1"}
    log = tmp_path / "serve.log"
    with process(args, env, log) as serve:
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, 60, "start")
        wait_for(lambda: len(descendants(serve.pid)) >= 3, 30, "1 API and 2 worker processes")
        wait_for(lambda: log.read_text().count(" serving ['v1'] on cpu") == 2, 60, "2 workers")
        assert "per device (cpu, cpu)" in log.read_text()
        ids = [submit(url, png_data_uri(256, 256)) for _ in range(6)]
        wait_for(
            lambda: all(status(url, i)["status"] == "COMPLETED" for i in ids),
            240,
            f"the jobs to complete ({log.read_text()[-2000:]})",
        )
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    # Each worker logs the jobs it runs: "worker <id>: running <request id> (attempt 1)".
    ran = re.findall(r"worker (\S+): running (\S+) \(attempt", log.read_text())
    assert {request for _, request in ran} == set(ids)
    assert len({worker for worker, _ in ran}) == 2, ran

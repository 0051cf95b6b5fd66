"""The service's own overhead, on the smallest random-weight model.

    .venv/bin/python benchmarks/service.py [--jobs 50] [--seconds 3]

Runs the real server (uvicorn on loopback, SQLite, local files, one in-process worker) and
prints: submit → COMPLETED latency (client side: submit, then the SSE status stream until
COMPLETED) with a trivial 8×8 image, split into the engine's share (`inference_time`, as the
worker reports it) and everything else; and status requests per second (1 and 8 client threads).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

from superscale.api import create_app
from superscale.api.keys import create_key
from superscale.files import open_file_store
from superscale.jobs import open_job_store
from superscale.model import SMALL_CONFIG, save_random_checkpoint
from superscale.settings import Settings
from superscale.worker import Worker


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:<28} p50 {_pct(ms, 0.5):7.1f} ms   p99 {_pct(ms, 0.99):7.1f} ms"


def status_rate(status_url: str, key: str, threads: int, seconds: float) -> float:
    """Status requests per second that `threads` clients polling in a loop get answered."""
    count = [0] * threads
    deadline = time.perf_counter() + seconds

    def poll(i: int) -> None:
        with httpx.Client(headers={"Authorization": f"Key {key}"}) as c:
            while time.perf_counter() < deadline:
                assert c.get(status_url, params={"logs": "1"}).status_code in (200, 202)
                count[i] += 1

    pool = [threading.Thread(target=poll, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(count) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="superscale-bench-"))
    save_random_checkpoint(tmp / "models" / "v1", SMALL_CONFIG, seed=1)
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(
        data_dir=tmp, port=port, model_dir=tmp / "models", checkpoints=["v1"], device="cpu"
    )
    jobs = open_job_store(settings.resolved_database_url())
    files = open_file_store(
        settings.resolved_storage_url(), s3_endpoint_url=settings.s3_endpoint_url
    )
    key = create_key(jobs, "bench")[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, jobs, files), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    stop = threading.Event()
    worker = Worker(settings, jobs, files)
    threading.Thread(target=worker.run_forever, args=(stop,), daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, format="PNG")
    body = {"image_url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=60)

    def one_job() -> tuple[float, float]:
        t0 = time.perf_counter()
        sub = client.post("/queue/fal-ai/aura-sr", json=body).json()
        with client.stream("GET", sub["status_url"] + "/stream") as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["status"] == "COMPLETED":
                    break
        latency = time.perf_counter() - t0
        result = client.get(sub["response_url"])
        assert result.status_code == 200, result.text
        job = jobs.get(sub["request_id"])
        assert job is not None and job.inference_time is not None
        return latency, job.inference_time

    one_job()  # warm-up: model load, first-call allocations
    latencies, engine = [], []
    for _ in range(args.jobs):
        latency, inference = one_job()
        latencies.append(latency)
        engine.append(inference)
    overhead = [a - b for a, b in zip(latencies, engine, strict=True)]
    print(f"{args.jobs} jobs, 8x8 PNG, smallest random-weight model, 1 in-process worker")
    print(_row("submit -> COMPLETED", latencies))
    print(_row("  engine (inference_time)", engine))
    print(_row("  service overhead", overhead))

    status_url = client.post("/queue/fal-ai/aura-sr", json=body).json()["status_url"]
    for threads in (1, 8):
        rate = status_rate(status_url, key, threads, args.seconds)
        print(f"status?logs=1, {threads} client thread(s): {rate:7.0f} req/s")

    stop.set()
    server.should_exit = True


if __name__ == "__main__":
    main()

"""The service's own overhead, measured against a real `superscale serve` process.

Builds the smallest random-weight checkpoint, starts the server on loopback (SQLite, local
files, one in-process worker, auth off), then:
  1. submits N jobs one after another, each a 16×16 PNG as a data: URI, and times submit →
     COMPLETED as seen on the status stream (server push, so no polling granularity);
     the engine's share (the job's inference_time) is printed separately;
  2. hammers the status route for a bounded time from a few keep-alive clients: requests/s.

    .venv/bin/python benchmarks/service.py [--jobs 50] [--status-seconds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

QUEUE = "/queue/fal-ai/aura-sr"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_png_uri(size: int = 16) -> str:
    out = io.BytesIO()
    Image.radial_gradient("L").resize((size, size)).convert("RGB").save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def one_job(client: httpx.Client, image_url: str) -> tuple[float, float]:
    """Submit and wait on the stream; returns (latency, inference_time) in seconds."""
    started = time.perf_counter()
    r = client.post(QUEUE, json={"image_url": image_url})
    r.raise_for_status()
    status_url = r.json()["status_url"]
    with client.stream("GET", f"{status_url}/stream") as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event["status"] == "COMPLETED":
                latency = time.perf_counter() - started
                if event.get("error"):
                    raise RuntimeError(f"job failed: {event['error']}")
                return latency, float((event.get("metrics") or {}).get("inference_time") or 0)
    raise RuntimeError("stream ended before COMPLETED")


def status_rate(url: str, status_path: str, seconds: float, clients: int) -> tuple[int, float]:
    counts = [0] * clients
    deadline = time.perf_counter() + seconds

    def hammer(i: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while time.perf_counter() < deadline:
                client.get(status_path).raise_for_status()
                counts[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--status-seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    from superscale.model import SMALL_CONFIG, save_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="superscale-bench-") as tmp:
        root = Path(tmp)
        save_random_checkpoint(root / "models" / "v1", SMALL_CONFIG, seed=1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SUPERSCALE_MODEL_DIR": str(root / "models"),
            "SUPERSCALE_AUTH": "false",
            "SUPERSCALE_DEVICE": "cpu",
        }
        cmd = [
            sys.executable,
            "-m",
            "superscale",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(root / "data"),
            "--checkpoint",
            "v1",
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            image = tiny_png_uri()
            with httpx.Client(base_url=url, timeout=60) as client:
                for _ in range(3):  # load and fold the model, warm the caches
                    one_job(client, image)
                runs = [one_job(client, image) for _ in range(args.jobs)]
                last = client.post(QUEUE, json={"image_url": image}).json()
            latencies = [r[0] * 1000 for r in runs]
            engine = [r[1] * 1000 for r in runs]
            overhead = [lat - inf for lat, inf in zip(latencies, engine, strict=True)]
            status_path = last["status_url"].removeprefix(url)
            count, elapsed = status_rate(url, status_path, args.status_seconds, args.clients)
        finally:
            server.terminate()
            server.wait(15)

    print(
        f"superscale service benchmark: {args.jobs} sequential jobs, 16x16 PNG as data: URI, "
        f"smallest random-weight config, {os.cpu_count()} CPUs"
    )
    for name, values in (
        ("submit -> COMPLETED", latencies),
        ("engine (inference_time)", engine),
        ("service overhead", overhead),
    ):
        print(
            f"  {name:<24} p50 {percentile(values, 50):7.1f} ms   "
            f"p99 {percentile(values, 99):7.1f} ms   mean {statistics.fmean(values):7.1f} ms"
        )
    print(
        f"  status requests/s        {count / elapsed:7.0f}   "
        f"({count} GETs in {elapsed:.1f} s from {args.clients} keep-alive clients)"
    )


if __name__ == "__main__":
    main()

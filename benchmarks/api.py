"""The API under load: the real `superscale serve` (SQLite, local files, auth on) driven by
`wrk`, a native load generator (Debian's `wrk` package), so the client does not compete for a
Python GIL; it shares the machine's cores with the server all the same.

    .venv/bin/python benchmarks/api.py [--seconds 10] [--api-processes 2]

(installs `wrk` with apt-get when it is missing and it runs as root). Targets on a 2-core
machine, and where they stand, are in docs/performance.md.

Prints one table: submits/s; status polls/s at 1, 50 and 200 connections with 0 and 1,000
jobs queued (the polled job is the queue's last); p50/p99 latency of each; the worker's jobs/s
alone and with ~1,000 status polls/s beside it; and what 16 concurrent downloads of a 200 MB
file add to serve's resident memory (all its processes).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from superscale.api.keys import create_key
from superscale.files import open_file_store
from superscale.jobs import open_job_store
from superscale.model import SMALL_CONFIG, save_random_checkpoint

ENDPOINT = "/queue/fal-ai/aura-sr"
WRK_THREADS = 1  # one client thread: the server keeps the other core


@dataclass
class Load:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"wrk printed a latency this does not read: {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def wrk(url: str, key: str, conns: int, seconds: float, script: str | None = None) -> Load:
    """`wrk` against `url` with `conns` connections; its rate, p50/p99 and failed answers."""
    cmd = ["wrk", f"-t{min(WRK_THREADS, conns)}", f"-c{conns}", f"-d{round(seconds)}s", "--latency"]
    cmd += ["--timeout", "10s", "-H", f"Authorization: Key {key}"]
    if script is not None:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in errors.groups()) if errors else 0
    )
    if failed:
        print(f"wrk saw failures against {url}:\n{out}", file=sys.stderr, flush=True)
    return Load(rate, p50, p99, failed)


def ensure_wrk() -> None:
    """Install Debian's `wrk` when it is missing and we may (root with apt-get), as the test
    setup installs what it needs; else say how."""
    if shutil.which("wrk"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing wrk from Debian's packages", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: install Debian's (or your system's) wrk package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(width: int, height: int) -> str:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@contextlib.contextmanager
def server(data_dir: Path, workers: int, api_processes: int) -> Iterator[tuple[str, int]]:
    """`superscale serve` on a free port; (base URL, serve's process id). Queue limits are
    lifted: the submit benchmark queues tens of thousands of jobs with one key."""
    port = _free_port()
    cmd = [sys.executable, "-m", "superscale", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--model-dir", str(data_dir / "models")]
    cmd += ["--checkpoint", "v1", "--device", "cpu", "--workers", str(workers)]
    cmd += ["--log-level", "warning", "--api-processes", str(api_processes)]
    env = {**os.environ, "SUPERSCALE_MAX_QUEUE": "10000000", "SUPERSCALE_KEY_MAX_QUEUE": "10000000"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _lua(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def submit_many(client: httpx.Client, body: dict[str, str], n: int) -> list[str]:
    ids: list[str] = []
    for _ in range(n):
        r = client.post(ENDPOINT, json=body)
        r.raise_for_status()
        ids.append(r.json()["request_id"])
    return ids


def wait_done(client: httpx.Client, ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for request_id in ids:
        while client.get(f"{ENDPOINT}/requests/{request_id}/status").json()["status"] != (
            "COMPLETED"
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(request_id)
            time.sleep(0.05)


def worker_rate(client: httpx.Client, body: dict[str, str], jobs: int) -> float:
    ids = submit_many(client, body, jobs)
    t0 = time.perf_counter()
    wait_done(client, ids)
    return jobs / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and every process below it (serve's API and worker)."""
    total, tree = 0.0, {pid}
    for stat in sorted(Path("/proc").glob("[0-9]*/stat"), key=lambda p: int(p.parent.name)):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in tree:
                tree.add(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    for member in tree:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def download_growth(url: str, pid: int, file_url: str, n: int) -> float:
    """MB serve's RSS (all its processes) grows by, at most, while `n` clients download."""
    before, peak, done = rss_mb(pid), 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    curls = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", file_url]) for _ in range(n)]
    codes = [c.wait() for c in curls]
    done.set()
    sampler.join()
    if any(codes):
        raise RuntimeError(f"downloads failed: {codes}")
    return max(0.0, peak - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=40, help="jobs per worker-throughput run")
    parser.add_argument("--api-processes", type=int, default=2, help="serve --api-processes")
    args = parser.parse_args()
    ensure_wrk()
    secs = args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="superscale-api-bench-"))
    save_random_checkpoint(tmp / "models" / "v1", SMALL_CONFIG, seed=1)
    store = open_job_store(f"sqlite:///{tmp / 'superscale.db'}")
    key = create_key(store, "bench")[1]
    store.close()
    tiny = {"image_url": _png(8, 8)}
    rows: list[tuple[str, Load | str]] = []

    def show(name: str, value: Load | str) -> None:
        rows.append((name, value))
        if isinstance(value, Load):
            line = f"{value.rate:9.0f}/s  p50 {value.p50_ms:8.1f} ms  p99 {value.p99_ms:8.1f} ms"
            value = line + (f"  ({value.errors} failed)" if value.errors else "")
        print(f"{name:<44} {value}", flush=True)

    submit_lua = _lua(
        tmp,
        "submit.lua",
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(tiny))}\n",
    )
    # ~1,000 polls/s: 20 connections, each pausing 20 ms between its requests.
    paced_lua = _lua(tmp, "paced.lua", "function delay()\n  return 20\nend\n")

    print(f"superscale serve --api-processes {args.api_processes}; wrk, {WRK_THREADS} thread")
    with server(tmp, workers=0, api_processes=args.api_processes) as (url, _):
        client = httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=60)
        done = submit_many(client, tiny, 1)[0]
        client.put(f"{ENDPOINT}/requests/{done}/cancel").raise_for_status()
        for queued in (0, 1000):
            target = submit_many(client, tiny, queued)[-1] if queued else done
            for conns in (1, 50, 200):
                for logs in ("", "?logs=1") if conns == 50 else ("",):
                    status = f"{url}{ENDPOINT}/requests/{target}/status{logs}"
                    show(
                        f"status{logs}, {conns} conns, {queued} queued",
                        wrk(status, key, conns, secs),
                    )
        show("submit, 50 conns", wrk(f"{url}{ENDPOINT}", key, 50, secs, submit_lua))

    shutil.rmtree(tmp / "files", ignore_errors=True)
    (tmp / "superscale.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp / f"superscale.db{suffix}").unlink(missing_ok=True)
    store = open_job_store(f"sqlite:///{tmp / 'superscale.db'}")
    key = create_key(store, "bench")[1]
    store.close()
    with server(tmp, workers=1, api_processes=args.api_processes) as (url, pid):
        client = httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=60)
        small = {"image_url": _png(64, 64)}
        worker_rate(client, small, 4)  # warm-up: model load
        idle = worker_rate(client, small, args.jobs)
        show("worker jobs/s, idle API", f"{idle:9.2f}/s")
        target = submit_many(client, tiny, 1)[0]
        status = f"{url}{ENDPOINT}/requests/{target}/status"
        result: list[Load] = []
        poller = threading.Thread(
            target=lambda: result.append(wrk(status, key, 20, secs * 3, paced_lua))
        )
        poller.start()
        time.sleep(1)
        busy = worker_rate(client, small, args.jobs)
        poller.join()
        show(f"worker jobs/s, {result[0].rate:.0f} polls/s beside", f"{busy:9.2f}/s")
        show("  worker under polls / idle", f"{busy / idle:9.2f}")
        show("  the polls beside it", result[0])

        files = open_file_store(f"file://{tmp / 'files'}")
        size = 200 * 1024 * 1024
        files.put("bench0000000000000000000/big.bin", os.urandom(size), "application/octet-stream")
        files.close()
        grown = download_growth(url, pid, f"{url}/files/bench0000000000000000000/big.bin", 16)
        show("RSS added by 16 downloads of 200 MB", f"{grown:9.0f} MB")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

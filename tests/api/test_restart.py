"""Accepted work survives a killed server: `superscale serve` is SIGKILLed with jobs queued and
one running; started again on the same data directory, it completes every one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pngs import data_uri

from .test_cli import SUPERSCALE, free_port, wait_ready
from .test_fal_client import png_bytes

pytestmark = pytest.mark.slow  # two server starts and several real (small-model) jobs


def start(data_dir: Path, model_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "SUPERSCALE_LEASE_SECONDS": "2"}  # a dead worker's lease runs out fast
    return subprocess.Popen(
        [
            *SUPERSCALE,
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--model-dir",
            str(model_dir),
            "--device",
            "cpu",
            "--checkpoint",
            "v1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def test_jobs_survive_a_killed_server(tmp_path: Path, small_model_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    image = data_uri(png_bytes(96, 7))
    proc = start(tmp_path, small_model_dir, port)
    try:
        wait_ready(url, proc)
        subs = [
            httpx.post(f"{url}/queue/fal-ai/aura-sr", json={"image_url": image}).json()
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while httpx.get(subs[0]["status_url"]).json()["status"] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        states = [httpx.get(s["status_url"]).json()["status"] for s in subs]
        assert "IN_QUEUE" in states
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    proc = start(tmp_path, small_model_dir, port)
    try:
        wait_ready(url, proc)
        deadline = time.monotonic() + 240
        for sub in subs:  # the URLs handed out before the crash still work
            while (st := httpx.get(sub["status_url"]).json())["status"] != "COMPLETED":
                assert time.monotonic() < deadline, st
                time.sleep(0.2)
            result = httpx.get(sub["response_url"])
            assert result.status_code == 200, result.text
            assert result.json()["image"]["width"] == 384
    finally:
        proc.terminate()
        proc.wait(20)
    from superscale.jobs import open_job_store

    store = open_job_store(f"sqlite:///{tmp_path / 'superscale.db'}")
    try:
        running = store.get(subs[0]["request_id"])
        assert running is not None and running.attempts == 2  # interrupted once, then rerun
    finally:
        store.close()

"""Hosted files are streamed: one byte range per request (206, 416), HEAD without the body,
and a server's memory flat however big the file and however many download it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from loopback import SUPERSCALE, free_port, tree_rss_kb, wait_serving
from superscale.files import new_key, open_file_store

from .server import LiveServer

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def hosted(server: LiveServer) -> str:
    key = new_key("blob.bin")
    server.file_store.put(key, DATA, "application/x-test")
    return f"{server.url}/files/{key}"


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=10-19", 10, 20),
        ("bytes=16000-", 16000, len(DATA)),
        ("bytes=-100", len(DATA) - 100, len(DATA)),
        ("bytes=16380-99999", 16380, len(DATA)),  # past the end: up to the end
        ("bytes=0-0", 0, 1),
    ],
)
def test_a_range_answers_206_with_that_part(
    hosted: str, header: str, start: int, stop: int
) -> None:
    r = httpx.get(hosted, headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == DATA[start:stop]
    assert r.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
    assert r.headers["content-length"] == str(stop - start)
    assert r.headers["content-type"] == "application/x-test"


@pytest.mark.parametrize("header", ["bytes=16384-", "bytes=99999-100000", "bytes=-0"])
def test_a_range_past_the_end_is_416(hosted: str, header: str) -> None:
    r = httpx.get(hosted, headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    assert r.json()["detail"][0]["type"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "header", ["bytes=0-1,5-9", "items=0-1", "bytes=a-b", "bytes=5-2x", "bytes=9-2", "bytes=-"]
)
def test_ranges_we_may_ignore_get_the_whole_file(hosted: str, header: str) -> None:
    r = httpx.get(hosted, headers={"Range": header})
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["accept-ranges"] == "bytes"


def test_head_gives_the_headers_without_the_body(hosted: str) -> None:
    r = httpx.head(hosted)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["accept-ranges"] == "bytes"
    r = httpx.head(hosted, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["content-length"] == "10"


@pytest.mark.slow
def test_concurrent_downloads_of_a_big_file_keep_memory_flat(tmp_path: Path) -> None:
    """8 clients download a 96 MB file at once from a real `serve` (API and worker
    processes): held whole, that is 768 MB; streamed, the server grows by a few MB."""
    size = 96 * 1024 * 1024
    files = open_file_store(f"file://{tmp_path / 'files'}")
    key = new_key("big.bin")
    files.put(key, os.urandom(size), "application/octet-stream")
    files.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*SUPERSCALE, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--no-worker"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(url, proc, log.read_text)
        httpx.get(f"{url}/files/{key}", headers={"Range": "bytes=0-9"})  # warm
        before = tree_rss_kb(proc.pid)
        peak, received = [before], []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(tree_rss_kb(proc.pid))
                done.wait(0.02)

        def download() -> None:
            total = 0
            with httpx.stream("GET", f"{url}/files/{key}", timeout=120) as r:
                for chunk in r.iter_bytes(256 * 1024):
                    total += len(chunk)
            received.append(total)

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=download) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        done.set()
        sampler.join()
        assert received == [size] * 8
        grown_mb = (max(peak) - before) / 1024
        assert grown_mb < 64, f"serve grew by {grown_mb:.0f} MB"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

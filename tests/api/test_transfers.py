"""Transfers are streamed: downloads of hosted files take one byte range per request (206,
416), HEAD gives no body, and a server's memory stays flat however big the files and however
many download or upload them at once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `superscale serve` (its API and worker processes), auth off."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*SUPERSCALE, "serve", "--port", str(port), "--data-dir", str(tmp_path)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--no-worker", "--no-auth"], stdout=out, stderr=out)
    try:
        wait_serving(url, proc, log.read_text)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def peak_growth_mb(pid: int, clients: list[threading.Thread]) -> float:
    """How far the process tree's memory rose above where it stood while `clients` ran."""
    before = tree_rss_kb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(tree_rss_kb(pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    done.set()
    sampler.join()
    return (max(peak) - before) / 1024


@pytest.mark.slow
def test_concurrent_downloads_of_a_big_file_keep_memory_flat(tmp_path: Path) -> None:
    """8 clients download a 96 MB file at once: held whole, that is 768 MB; streamed, the
    server grows by a few MB."""
    size = 96 * 1024 * 1024
    files = open_file_store(f"file://{tmp_path / 'files'}")
    key = new_key("big.bin")
    files.put(key, os.urandom(size), "application/octet-stream")
    files.close()
    with serving(tmp_path) as (url, proc):
        httpx.get(f"{url}/files/{key}", headers={"Range": "bytes=0-9"})  # warm
        received: list[int] = []

        def download() -> None:
            total = 0
            with httpx.stream("GET", f"{url}/files/{key}", timeout=120) as r:
                for chunk in r.iter_bytes(256 * 1024):
                    total += len(chunk)
            received.append(total)

        grown = peak_growth_mb(proc.pid, [threading.Thread(target=download) for _ in range(8)])
        assert received == [size] * 8
        assert grown < 64, f"serve grew by {grown:.0f} MB"


@pytest.mark.slow
def test_concurrent_uploads_keep_memory_flat(tmp_path: Path) -> None:
    """8 clients upload 48 MB each at once (fal's Python client's /files/upload): held whole,
    384 MB; spooled through temporary files into the store, a few MB."""
    size = 48 * 1024 * 1024
    payload = os.urandom(size)
    with serving(tmp_path) as (url, proc):
        urls: list[str] = []

        def upload() -> None:
            def body() -> Iterator[bytes]:  # sent in pieces, as a client streams a file
                for at in range(0, size, 1024 * 1024):
                    yield payload[at : at + 1024 * 1024]

            r = httpx.post(
                f"{url}/files/upload",
                content=body(),
                headers={"Content-Type": "application/octet-stream"},
                timeout=120,
            )
            assert r.status_code == 200, r.text
            urls.append(r.json()["access_url"])

        grown = peak_growth_mb(proc.pid, [threading.Thread(target=upload) for _ in range(8)])
        assert len(urls) == 8
        assert grown < 64, f"serve grew by {grown:.0f} MB"
        back = httpx.get(urls[0], timeout=60)
        assert back.status_code == 200 and back.content == payload

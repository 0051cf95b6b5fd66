"""Uploads at their edges, on both file stores (issue 15): a part sent after its upload completed
is a 404, not a 500; single-use URLs and completes hold under concurrent requests; a revoked
key's upload URLs stop working."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from s3server import SeaweedS3

from .server import LiveServer, live_server


@pytest.fixture(params=["local", "s3"])
def any_file_store_server(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    storage_url = None
    if request.param == "s3":
        s3: SeaweedS3 = request.getfixturevalue("s3_server")
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        bucket = f"t-{uuid.uuid4().hex[:16]}"
        s3.client().create_bucket(Bucket=bucket)
        storage_url = f"s3://{bucket}/p"
    with live_server(tmp_path, workers=0, storage_url=storage_url) as srv:
        yield srv


def test_parts_after_completion_are_404_in_both_flows(any_file_store_server: LiveServer) -> None:
    with any_file_store_server.client() as c:
        # fal-client's flow: /files/upload/multipart, then parts and complete under the file URL.
        started = c.post(
            "/files/upload/multipart",
            headers={"Content-Type": "image/png", "X-Fal-File-Name": "a.png"},
        )
        assert started.status_code == 200, started.text
        url, handle = started.json()["access_url"], started.json()["uploadId"]
        part = c.put(f"{url}/multipart/{handle}/1", content=b"a" * 10)
        done = c.post(
            f"{url}/multipart/{handle}/complete",
            json={"parts": [{"partNumber": 1, "etag": part.headers["etag"]}]},
        )
        assert done.status_code == 200, done.text
        late = c.put(f"{url}/multipart/{handle}/2", content=b"late")
        assert late.status_code == 404, late.text
        # @fal-ai/client's flow: initiate-multipart, then signed part URLs.
        started = c.post(
            "/storage/upload/initiate-multipart",
            json={"content_type": "image/png", "file_name": "b.png"},
        )
        upload_url = started.json()["upload_url"]
        part = c.put(f"{upload_url}/1", content=b"b" * 10)
        done = c.post(
            f"{upload_url}/complete",
            json={"parts": [{"partNumber": 1, "etag": part.json()["etag"]}]},
        )
        assert done.status_code == 200, done.text
        late = c.put(f"{upload_url}/2", content=b"late")
        assert late.status_code == 404, late.text
        # The finished files are intact.
        assert c.get(url).content == b"a" * 10
        assert c.get(done.json()["file_url"]).content == b"b" * 10


def _race(n: int, send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """`n` requests at once (threads released together)."""
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        barrier.wait()
        return send(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_a_signed_upload_url_is_used_once_under_20_concurrent_puts(server: LiveServer) -> None:
    """Check-then-act: concurrent PUTs all saw no file yet, all succeeded, the last one won.
    (The local store: S3 takes such PUTs itself, through presigned URLs.)"""
    with server.client() as c:
        r = c.post("/storage/upload/initiate", json={"content_type": "text/plain"})
        upload_url, file_url = r.json()["upload_url"], r.json()["file_url"]
        assert upload_url.startswith(server.url)
        answers = _race(20, lambda i: httpx.put(upload_url, content=f"body {i}".encode()))
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [409] * 19, codes
        winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
        assert c.get(file_url).content == f"body {winner}".encode()


def test_a_multipart_upload_completes_once_under_20_concurrent_completes(
    any_file_store_server: LiveServer,
) -> None:
    """Concurrent completes all passed the "already there?" check; each wrote the file (half
    of them here with one part, half with two), the last one winning."""
    # Parts big enough that assembling them takes a while (S3's smallest non-last part: 5 MiB).
    sizes = {1: 5 * 1024 * 1024, 2: 1024 * 1024}
    with any_file_store_server.client() as c:
        started = c.post(
            "/storage/upload/initiate-multipart",
            json={"content_type": "text/plain", "file_name": "m.txt"},
        )
        upload_url, file_url = started.json()["upload_url"], started.json()["file_url"]
        etags = [
            c.put(f"{upload_url}/{n}", content=bytes([n]) * sizes[n]).json()["etag"] for n in (1, 2)
        ]
        bodies = [
            {"parts": [{"partNumber": n, "etag": etags[n - 1]} for n in range(1, 2 + i % 2)]}
            for i in range(20)
        ]
        answers = _race(20, lambda i: httpx.post(f"{upload_url}/complete", json=bodies[i]))
        codes = sorted(a.status_code for a in answers)
        assert codes.count(200) == 1 and set(codes) <= {200, 409}, codes
        winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
        expected = b"".join(bytes([n]) * sizes[n] for n in range(1, 2 + winner % 2))
        assert c.get(file_url).content == expected


def test_a_revoked_keys_upload_urls_stop_working(server: LiveServer) -> None:
    """A signed upload URL outlived the key it was made for (for its whole hour)."""
    key = server.new_key("soon revoked")
    with server.client(key=key) as c:
        put = c.post("/storage/upload/initiate", json={"content_type": "text/plain"})
        put_url = put.json()["upload_url"]
        parts = c.post("/storage/upload/initiate-multipart", json={"content_type": "text/plain"})
        parts_url = parts.json()["upload_url"]
    assert server.job_store.revoke_key(key.split(":")[0])
    assert httpx.put(put_url, content=b"x").status_code == 403
    assert httpx.put(f"{parts_url}/1", content=b"x").status_code == 403
    assert httpx.post(f"{parts_url}/complete", json={"parts": []}).status_code == 403

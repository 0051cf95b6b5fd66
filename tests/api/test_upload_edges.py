"""Uploads at their edges, on both file stores: a part sent after its upload completed is a
404, not a 500 (issue 15.10)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

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

"""One suite for every `FileStore`: the local directory and S3 must behave alike."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from loopback import free_port
from superscale.files import (
    FileNotFound,
    FileStore,
    InvalidKey,
    UploadError,
    new_key,
    open_file_store,
)
from superscale.files.base import READ_CHUNK
from superscale.settings import Settings

MIB = 1024 * 1024
BAD_KEYS = ["", "../x", "/etc/passwd", "a/../../b", "a/./b", "a//b", "a\\b", "a\x00b", "..", "a/"]


def test_put_get_round_trip(file_store: FileStore) -> None:
    key = new_key("photo.png")
    expires = time.time() + 3600
    file_store.put(key, b"\x89PNG-bytes", "image/png", expires_at=expires)
    got = file_store.get(key)
    assert (got.key, got.data, got.size, got.content_type) == (
        key,
        b"\x89PNG-bytes",
        10,
        "image/png",
    )
    assert got.expires_at == pytest.approx(expires)
    forever = new_key("a.webp")
    file_store.put(forever, b"", "image/webp")
    assert file_store.get(forever).expires_at is None
    assert file_store.get(forever).size == 0


def test_overwrite_replaces_bytes_and_type(file_store: FileStore) -> None:
    key = new_key("x.bin")
    file_store.put(key, b"one", "text/plain")
    file_store.put(key, b"two!", "application/octet-stream")
    got = file_store.get(key)
    assert (got.data, got.content_type) == (b"two!", "application/octet-stream")


def test_missing_and_deleted_files(file_store: FileStore) -> None:
    with pytest.raises(FileNotFound):
        file_store.get(new_key("nothing.png"))
    key = new_key("gone.png")
    file_store.put(key, b"x", "image/png")
    file_store.delete(key)
    with pytest.raises(FileNotFound):
        file_store.get(key)
    file_store.delete(key)  # deleting twice is fine


def test_expired_files_vanish_and_are_swept(file_store: FileStore) -> None:
    now = time.time()
    expired = new_key("old.png")
    soon = new_key("soon.png")
    later = new_key("later.png")
    forever = new_key("forever.png")
    file_store.put(expired, b"old", "image/png", expires_at=now - 5)
    file_store.put(soon, b"soon", "image/png", expires_at=now + 30)
    file_store.put(later, b"later", "image/png", expires_at=now + 3600)
    file_store.put(forever, b"forever", "image/png")
    with pytest.raises(FileNotFound):  # already unreadable before any sweep
        file_store.get(expired)
    assert file_store.delete_expired(now=now) == 1
    assert file_store.delete_expired(now=now + 60) == 1  # `soon` now
    assert file_store.delete_expired(now=now + 60) == 0
    assert file_store.get(later).data == b"later"
    assert file_store.get(forever).data == b"forever"
    with pytest.raises(FileNotFound):
        file_store.get(soon)


def test_head_bytes_reads_only_the_start(file_store: FileStore) -> None:
    now = time.time()
    key, empty, old = new_key("a.bin"), new_key("empty.bin"), new_key("old.bin")
    file_store.put(key, bytes(range(256)) * 40, "application/octet-stream")
    file_store.put(empty, b"", "application/octet-stream")
    file_store.put(old, b"old", "image/png", expires_at=now - 5)
    assert file_store.head_bytes(key, 10) == bytes(range(10))
    assert file_store.head_bytes(key, 1 << 20) == bytes(range(256)) * 40  # all of a shorter one
    assert file_store.head_bytes(empty, 10) == b""
    for missing in (old, new_key("never.bin")):
        with pytest.raises(FileNotFound):
            file_store.head_bytes(missing, 10)


def test_open_reads_any_range_a_chunk_at_a_time(file_store: FileStore) -> None:
    data = bytes(range(256)) * (READ_CHUNK // 256 * 2 + 3)  # two chunks and a bit
    key, empty, old = new_key("big.bin"), new_key("empty.bin"), new_key("old.bin")
    file_store.put(key, data, "image/webp")
    file_store.put(empty, b"", "image/png")
    file_store.put(old, b"old", "image/png", expires_at=time.time() - 5)
    reader = file_store.open(key)
    assert (reader.content_type, reader.size) == ("image/webp", len(data))
    chunks = list(reader.chunks(0, len(data)))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= READ_CHUNK and len(chunks) >= 3
    for start, stop in (
        (0, 1),
        (5, 17),
        (READ_CHUNK - 3, READ_CHUNK + 9),
        (len(data) - 4, len(data)),
    ):
        assert b"".join(file_store.open(key).chunks(start, stop)) == data[start:stop]
    assert file_store.open(empty).size == 0
    assert b"".join(file_store.open(empty).chunks(0, 0)) == b""
    for missing in (old, new_key("never.bin")):
        with pytest.raises(FileNotFound):
            file_store.open(missing)


def test_exists_agrees_with_get(file_store: FileStore) -> None:
    now = time.time()
    live, forever, expired = new_key("live.png"), new_key("forever.png"), new_key("old.png")
    file_store.put(live, b"live", "image/png", expires_at=now + 3600)
    file_store.put(forever, b"", "image/png")
    file_store.put(expired, b"old", "image/png", expires_at=now - 5)
    assert file_store.exists(live) and file_store.exists(forever)
    assert not file_store.exists(expired)  # expired but not yet swept: gone for readers
    assert not file_store.exists(new_key("never.png"))
    file_store.delete(live)
    assert not file_store.exists(live)
    for key in BAD_KEYS:
        assert not file_store.exists(key)
    parts = file_store.start_multipart(big := new_key("big.bin"), "text/plain", now + 3600)
    assert not file_store.exists(big)  # not until the upload is completed
    etag = file_store.put_part(big, parts, 1, b"x")
    file_store.complete_multipart(big, parts, [(1, etag)])
    assert file_store.exists(big)


def test_sweep_respects_overwrites_and_deletes(file_store: FileStore) -> None:
    now = time.time()
    renewed = new_key("renewed.png")
    file_store.put(renewed, b"v1", "image/png", expires_at=now + 10)
    file_store.put(renewed, b"v2", "image/png", expires_at=now + 1000)  # lifetime extended
    kept = new_key("kept.png")
    file_store.put(kept, b"v1", "image/png", expires_at=now + 10)
    file_store.put(kept, b"v2", "image/png")  # now lives forever
    dropped = new_key("dropped.png")
    file_store.put(dropped, b"x", "image/png", expires_at=now + 10)
    file_store.delete(dropped)
    assert file_store.delete_expired(now=now + 100) == 0
    assert file_store.get(renewed).data == b"v2"
    assert file_store.get(kept).data == b"v2"
    assert file_store.delete_expired(now=now + 2000) == 1
    with pytest.raises(FileNotFound):
        file_store.get(renewed)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused(file_store: FileStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        file_store.put(key, b"x", "text/plain")
    with pytest.raises(FileNotFound):  # InvalidKey is a FileNotFound for readers
        file_store.get(key)
    with pytest.raises(InvalidKey):
        file_store.start_multipart(key, "text/plain", None)


def test_keys_from_odd_file_names_work(file_store: FileStore) -> None:
    for name in ("../../etc/passwd", "été photo.png", "", "a" * 300, "C:\\x\\y.png"):
        key = new_key(name)
        file_store.put(key, name.encode(), "text/plain")
        assert file_store.get(key).data == name.encode()


def test_multipart_assembles_parts_in_order(file_store: FileStore) -> None:
    key = new_key("big.png")
    expires = time.time() + 600
    upload = file_store.start_multipart(key, "image/png", expires)
    # S3 wants every part but the last to be at least 5 MiB.
    chunks = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"tail"]
    etags = {}
    for number in (3, 1, 2):  # parts may arrive in any order
        etags[number] = file_store.put_part(key, upload, number, chunks[number - 1])
    assert etags[3] == hashlib.md5(b"tail").hexdigest()
    with pytest.raises(FileNotFound):  # nothing visible before completion
        file_store.get(key)
    size = file_store.complete_multipart(key, upload, [(n, etags[n]) for n in (1, 2, 3)])
    assert size == 10 * MIB + 4
    got = file_store.get(key)
    assert got.data == b"".join(chunks) and got.content_type == "image/png"
    assert got.expires_at == pytest.approx(expires)
    assert file_store.delete_expired(now=expires + 1) == 1


def test_multipart_errors(file_store: FileStore) -> None:
    key = new_key("bad.bin")
    upload = file_store.start_multipart(key, "application/octet-stream", None)
    etag = file_store.put_part(key, upload, 1, b"only part")
    with pytest.raises(UploadError):
        file_store.complete_multipart(key, upload, [(1, "0" * 32)])  # wrong etag
    with pytest.raises(UploadError):
        file_store.complete_multipart(key, upload, [(1, etag), (2, etag)])  # part 2 missing
    with pytest.raises(UploadError):
        file_store.complete_multipart(key, upload, [])
    with pytest.raises(FileNotFound):
        file_store.put_part(key, "f" * 32, 1, b"x")
    with pytest.raises(FileNotFound):
        file_store.complete_multipart(key, "f" * 32, [(1, etag)])
    assert file_store.complete_multipart(key, upload, [(1, etag)]) == 9
    assert file_store.get(key).data == b"only part"


def test_concurrent_writers_leave_one_whole_version(file_store: FileStore) -> None:
    key = new_key("race.bin")
    versions = [bytes([i]) * 200_000 for i in range(6)]
    threads = [
        threading.Thread(target=file_store.put, args=(key, v, "application/octet-stream"))
        for v in versions
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert file_store.get(key).data in versions


def test_presigned_put_url(file_store: FileStore, file_store_url: str) -> None:
    key = new_key("direct.png")
    url = file_store.presigned_put_url(key, "image/png", 300)
    if file_store_url.startswith("file://"):
        assert url is None  # the API takes the PUT itself
        return
    assert url is not None and url.startswith("http://127.0.0.1:")
    answer = httpx.put(url, content=b"direct bytes", headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    got = file_store.get(key)
    assert (got.data, got.content_type) == (b"direct bytes", "image/png")
    # The signature covers the key: another key is refused.
    tampered = url.replace("direct.png", "other.png")
    refused = httpx.put(tampered, content=b"x", headers={"Content-Type": "image/png"})
    assert refused.status_code == 403


# --- local only ----------------------------------------------------------------------------


def test_local_store_keeps_everything_under_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = open_file_store(f"file://{root}")
    for key in BAD_KEYS:
        with pytest.raises(InvalidKey):
            store.put(key, b"evil", "text/plain")
    key = new_key("ok.txt")
    store.put(key, b"fine", "text/plain", expires_at=time.time() + 60)
    outside = [p for p in tmp_path.rglob("*") if root not in (p, *p.parents)]
    assert outside == []
    assert list((root / "tmp").iterdir()) == []  # no temporary file left behind
    store.delete(key)
    assert list((root / "data").iterdir()) == []  # empty key directories pruned


# --- S3 only ---------------------------------------------------------------------------------


def test_s3_layout_and_lifecycle_rules(s3_bucket: str, s3_server) -> None:  # type: ignore[no-untyped-def]
    client = s3_server.client()
    client.put_bucket_lifecycle_configuration(
        Bucket=s3_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "users-own",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "logs/"},
                    "Expiration": {"Days": 3},
                }
            ]
        },
    )
    store = open_file_store(f"s3://{s3_bucket}/pre", s3_endpoint_url=Settings().s3_endpoint_url)
    key = new_key("out.png")
    store.put(key, b"x", "image/png", expires_at=time.time() + 3 * 86400)
    names = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert names[0].startswith("pre/expiry/") and names[0].endswith(key)
    assert names[1] == f"pre/files/{key}"
    rules = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    ids = {r["ID"] for r in rules}
    assert "users-own" in ids and "superscale-pre-7d" in ids  # merged, not replaced
    tags = client.get_object_tagging(Bucket=s3_bucket, Key=f"pre/files/{key}")["TagSet"]
    assert tags == [{"Key": "superscale-ttl-days", "Value": "7"}]
    # Opening again (another server) leaves the rules as they are.
    open_file_store(f"s3://{s3_bucket}/pre", s3_endpoint_url=Settings().s3_endpoint_url).close()
    again = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert len(again) == len(rules)
    store.close()


def test_s3_missing_bucket_is_a_clear_error(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="not reachable"):
        open_file_store("s3://no-such-bucket-here/x", s3_endpoint_url=Settings().s3_endpoint_url)
    monkeypatch.setenv("SUPERSCALE_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ValueError, match="not reachable"):
        open_file_store("s3://some-bucket/x", s3_endpoint_url=Settings().s3_endpoint_url)


def test_open_file_store_urls() -> None:
    for bad in ("ftp://x", "s3://", "file://", "/just/a/path"):
        with pytest.raises(ValueError):
            open_file_store(bad)

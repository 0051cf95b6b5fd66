"""File stores: `open_file_store(url)` builds the one a storage URL names."""

from __future__ import annotations

from superscale.files.base import (
    FileNotFound,
    FileStore,
    InvalidKey,
    StorageFull,
    StoredFile,
    UploadError,
    check_key,
    new_key,
)

__all__ = [
    "FileNotFound",
    "FileStore",
    "InvalidKey",
    "StorageFull",
    "StoredFile",
    "UploadError",
    "check_key",
    "new_key",
    "open_file_store",
]


def open_file_store(
    url: str, *, s3_endpoint_url: str | None = None, create_bucket: bool = False
) -> FileStore:
    """`file:///absolute/dir` or `s3://bucket[/prefix]`.

    S3 talks to `s3_endpoint_url` (`Settings.s3_endpoint_url`; None: AWS itself) and takes its
    credentials and region the way boto3 always does (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles, instance roles). `create_bucket`: make
    the bucket when it does not exist yet (a fresh store beside a fresh cluster).
    """
    if url.startswith("file://"):
        from superscale.files.local import LocalFileStore

        path = url.removeprefix("file://")
        if not path:
            raise ValueError(f"{url!r}: the local file store needs a directory")
        return LocalFileStore(path)
    if url.startswith("s3://"):
        from superscale.files.s3 import S3FileStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{url!r}: name a bucket, as in s3://bucket/prefix")
        return S3FileStore(
            bucket, prefix.strip("/"), endpoint_url=s3_endpoint_url, create_bucket=create_bucket
        )
    raise ValueError(f"unsupported storage URL {url!r}: use file:///dir or s3://bucket/prefix")

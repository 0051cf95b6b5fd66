"""The scale-out file store: one S3 bucket (AWS or any S3-compatible server), through boto3.

Layout under `prefix`:
  files/<key>                      the object; content type as the object's, expiry in its
                                   metadata (`x-amz-meta-expires-at`, unix seconds)
  expiry/<unix seconds>/<key>      an empty marker per expiring file. Keys sort by time, so
                                   `delete_expired` lists only what is due instead of
                                   inspecting every object.

Where the server supports bucket lifecycle rules, expiring objects also carry a tag naming a
day count, and a rule per day count deletes them after that long: a backstop for files the
sweep missed (e.g. when no server ran it). The rules are merged into the bucket's own, never
replacing them; a server without lifecycle support just goes without.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from superscale.files.base import (
    READ_CHUNK,
    Body,
    FileNotFound,
    FileReader,
    FileStore,
    StoredFile,
    UploadError,
    check_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import LifecycleRuleTypeDef

log = logging.getLogger(__name__)

TTL_TAG = "superscale-ttl-days"
TTL_DAY_BUCKETS = (1, 2, 7, 30, 90, 365)
RULE_PREFIX = "superscale-"
_MISSING = ("NoSuchKey", "404", "NotFound")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3FileStore(FileStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: S3Client | None = None,
        lifecycle: bool = True,
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        if client is None:
            # Path-style addressing: S3-compatible servers rarely have wildcard DNS for
            # bucket subdomains. SigV4 everywhere, presigned URLs included.
            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"} if endpoint_url else {"addressing_style": "auto"},
            )
            client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self._s3: S3Client = client
        try:
            self._head_or_create(bucket, create_bucket)
        except (ClientError, BotoCoreError) as exc:  # missing bucket, no credentials, no server
            where = f" at {endpoint_url}" if endpoint_url else ""
            raise ValueError(f"S3 bucket {bucket!r}{where} is not reachable: {exc}") from exc
        self._lifecycle = lifecycle and self._ensure_lifecycle_rules()

    # --- names ---------------------------------------------------------------------------
    def _head_or_create(self, bucket: str, create: bool) -> None:
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if not create or _code(exc) not in (*_MISSING, "NoSuchBucket"):
                raise
            try:
                self._s3.create_bucket(Bucket=bucket)
            except ClientError as race:  # another server made it first
                if _code(race) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            log.info("created the S3 bucket %r", bucket)

    def _object(self, key: str) -> str:
        return f"{self._base}files/{check_key(key)}"

    def _marker(self, key: str, expires_at: float) -> str:
        return f"{self._base}expiry/{math.floor(expires_at):012d}/{key}"

    def _extra(self, content_type: str, expires_at: float | None) -> dict[str, Any]:
        """put_object / create_multipart_upload arguments carrying type, expiry and TTL tag."""
        extra: dict[str, Any] = {"ContentType": content_type}
        if expires_at is not None:
            extra["Metadata"] = {"expires-at": repr(float(expires_at))}
            days = math.ceil(max(0.0, expires_at - time.time()) / 86400)
            bucket = next((d for d in TTL_DAY_BUCKETS if d >= days), None)
            if self._lifecycle and bucket is not None:
                extra["Tagging"] = f"{TTL_TAG}={bucket}"
        return extra

    @staticmethod
    def _expiry(metadata: dict[str, str]) -> float | None:
        value = metadata.get("expires-at")
        return None if value is None else float(value)

    # --- lifecycle rules -----------------------------------------------------------------
    def _ensure_lifecycle_rules(self) -> bool:
        ours: list[LifecycleRuleTypeDef] = [
            {
                "ID": f"{RULE_PREFIX}{self.prefix or 'root'}-{days}d",
                "Status": "Enabled",
                "Filter": {
                    "And": {
                        "Prefix": f"{self._base}files/",
                        "Tags": [{"Key": TTL_TAG, "Value": str(days)}],
                    }
                },
                "Expiration": {"Days": days},
            }
            for days in TTL_DAY_BUCKETS
        ]
        ours.append(
            {
                "ID": f"{RULE_PREFIX}{self.prefix or 'root'}-abort-uploads",
                "Status": "Enabled",
                "Filter": {"Prefix": f"{self._base}files/"},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        )
        try:
            try:
                config = self._s3.get_bucket_lifecycle_configuration(Bucket=self.bucket)
                existing: list[Any] = list(config.get("Rules", []))
            except ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                existing = []
            our_ids = {rule["ID"] for rule in ours}
            if our_ids <= {rule.get("ID") for rule in existing}:
                return True
            others = [rule for rule in existing if rule.get("ID") not in our_ids]
            self._s3.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={"Rules": [*others, *ours]},
            )
            return True
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "S3 lifecycle rules not set on %s (%s): expiry by sweep only", self.bucket, exc
            )
            return False

    # --- files ---------------------------------------------------------------------------
    def put(self, key: str, data: Body, content_type: str, expires_at: float | None = None) -> None:
        name = self._object(key)
        if expires_at is not None:  # marker first: a marker without its object is harmless
            self._s3.put_object(Bucket=self.bucket, Key=self._marker(key, expires_at), Body=b"")
        self._s3.put_object(
            Bucket=self.bucket, Key=name, Body=data, **self._extra(content_type, expires_at)
        )

    def get(self, key: str) -> StoredFile:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFound(key) from exc
            raise
        expires_at = self._expiry(obj.get("Metadata", {}))
        if expires_at is not None and expires_at <= time.time():
            obj["Body"].close()
            raise FileNotFound(key)
        data = obj["Body"].read()
        return StoredFile(
            key=key,
            content_type=obj.get("ContentType", "application/octet-stream"),
            size=len(data),
            data=data,
            expires_at=expires_at,
        )

    def open(self, key: str) -> FileReader:
        """A HEAD now; each range read later is a ranged GET, streamed a chunk at a time."""
        name = self._object(key)
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFound(key) from exc
            raise
        expires_at = self._expiry(head.get("Metadata", {}))
        if expires_at is not None and expires_at <= time.time():
            raise FileNotFound(key)
        etag = head["ETag"]  # each read asks for this version: never half of a replaced file

        def read_range(start: int, stop: int) -> Iterator[bytes]:
            if stop <= start:
                return
            obj = self._s3.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{stop - 1}", IfMatch=etag
            )
            with contextlib.closing(obj["Body"]) as body:
                yield from body.iter_chunks(READ_CHUNK)

        return FileReader(
            head.get("ContentType", "application/octet-stream"), head["ContentLength"], read_range
        )

    def head_bytes(self, key: str, n: int) -> bytes:
        """A ranged GET: the first `n` bytes only."""
        try:
            obj = self._s3.get_object(
                Bucket=self.bucket, Key=self._object(key), Range=f"bytes=0-{max(n, 1) - 1}"
            )
        except ClientError as exc:
            if _code(exc) == "InvalidRange":  # an empty object has no first byte
                return b""
            if _code(exc) in _MISSING:
                raise FileNotFound(key) from exc
            raise
        with contextlib.closing(obj["Body"]) as body:
            expires_at = self._expiry(obj.get("Metadata", {}))
            if expires_at is not None and expires_at <= time.time():
                raise FileNotFound(key)
            data: bytes = body.read()
        return data[:n]

    def exists(self, key: str) -> bool:
        """A HEAD request: the object's metadata (expiry included), never its bytes."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._object(key))
        except FileNotFound:  # an invalid key names no object
            return False
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        expires_at = self._expiry(head.get("Metadata", {}))
        return expires_at is None or expires_at > time.time()

    def delete(self, key: str) -> None:
        # Its expiry marker stays: the sweep finds no object for it and drops it.
        self._s3.delete_object(Bucket=self.bucket, Key=self._object(key))

    def delete_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        markers = f"{self._base}expiry/"
        removed = 0
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=markers
        )
        for page in pages:
            for item in page.get("Contents", []):
                marker = item["Key"]
                stamp, _, key = marker.removeprefix(markers).partition("/")
                if int(stamp) > now:
                    return removed  # markers are listed in time order: the rest are later
                removed += self._sweep(marker, key, int(stamp), now)
        return removed

    def _sweep(self, marker: str, key: str, stamp: int, now: float) -> int:
        """Delete the marker's object if it has really expired; 1 when it did."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._object(key))
            expires_at = self._expiry(head.get("Metadata", {}))
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise
            expires_at = None  # already deleted: only the marker is left
            head = None
        if expires_at is not None and expires_at > now and math.floor(expires_at) == stamp:
            return 0  # due later within this second
        deleted = 0
        if head is not None and expires_at is not None and expires_at <= now:
            self._s3.delete_object(Bucket=self.bucket, Key=self._object(key))
            deleted = 1
        # Otherwise the object was overwritten since: it has a marker of its own, if any.
        self._s3.delete_object(Bucket=self.bucket, Key=marker)
        return deleted

    # --- multipart -----------------------------------------------------------------------
    def start_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        upload = self._s3.create_multipart_upload(
            Bucket=self.bucket, Key=self._object(key), **self._extra(content_type, expires_at)
        )
        return upload["UploadId"]

    def put_part(self, key: str, upload_id: str, part_number: int, data: Body) -> str:
        try:
            part = self._s3.upload_part(
                Bucket=self.bucket,
                Key=self._object(key),
                UploadId=upload_id,
                PartNumber=part_number,
                Body=data,
            )
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                raise FileNotFound(f"no multipart upload {upload_id!r}") from exc
            raise UploadError(f"part {part_number}: {exc}") from exc
        return part["ETag"].strip('"')

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        if not parts:
            raise UploadError("a multipart upload needs at least one part")
        name = self._object(key)
        listed = [{"PartNumber": n, "ETag": f'"{etag.strip(chr(34))}"'} for n, etag in parts]
        try:
            self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
            )
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                raise FileNotFound(f"no multipart upload {upload_id!r}") from exc
            raise UploadError(f"cannot complete the upload: {exc}") from exc
        head = self._s3.head_object(Bucket=self.bucket, Key=name)
        expires_at = self._expiry(head.get("Metadata", {}))
        if expires_at is not None:
            self._s3.put_object(Bucket=self.bucket, Key=self._marker(key, expires_at), Body=b"")
        return int(head["ContentLength"])

    # --- direct uploads ------------------------------------------------------------------
    def presigned_put_url(self, key: str, content_type: str, expires_in: float) -> str | None:
        """A SigV4 URL for one PUT of this key; the client must send the same Content-Type.
        Files uploaded this way have no expiry of their own."""
        return self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": self._object(key), "ContentType": content_type},
            ExpiresIn=max(1, int(expires_in)),
        )

    def close(self) -> None:
        self._s3.close()

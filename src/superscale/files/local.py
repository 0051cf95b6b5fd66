"""The embedded file store: a directory tree, safe for several processes on one machine.

Layout under `root`:
  data/<key>            the bytes
  meta/<key>.json       {"content_type", "size", "expires_at"}: written after the bytes, so a
                        file is visible only once both are in place
  uploads/<upload_id>/  multipart staging: upload.json and one file per part
  tmp/                  where every write starts; `os.replace` then moves it in atomically
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from superscale.files.base import (
    READ_CHUNK,
    Body,
    FileNotFound,
    FileReader,
    FileStore,
    StorageFull,
    StoredFile,
    UploadError,
    check_key,
)

# Multipart uploads never completed are swept by delete_expired after this long.
STALE_UPLOAD_SECONDS = 24 * 3600.0
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
MAX_PART_NUMBER = 10_000  # S3's limit; the clients stay far below it


F = TypeVar("F", bound=Callable[..., Any])


def _full_disk_is_storage_full(method: F) -> F:
    """ENOSPC and EDQUOT are the disk's state, not the request's fault: `StorageFull`."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left on the file store's disk: {exc}") from exc
            raise

    return cast(F, wrapped)


class LocalFileStore(FileStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        # Private (directories 0700, files 0600 as mkstemp makes them): users' images.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("data", "meta", "uploads", "tmp"):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)

    # --- paths and atomic writes -------------------------------------------------------------
    def _data(self, key: str) -> Path:
        return self.root / "data" / check_key(key)

    def _meta(self, key: str) -> Path:
        return self.root / "meta" / f"{check_key(key)}.json"

    def _upload_dir(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise FileNotFound(f"no multipart upload {upload_id!r}")
        path = self.root / "uploads" / upload_id
        if not path.is_dir():
            raise FileNotFound(f"no multipart upload {upload_id!r}")
        return path

    def _tmp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        os.close(fd)
        return Path(name)

    def _install(self, tmp: Path, dest: Path) -> None:
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def _write_atomic(self, dest: Path, data: Body) -> tuple[int, str]:
        """Write `dest` whole or not at all; returns its size and MD5 (a part's etag)."""
        tmp = self._tmp()
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with tmp.open("wb") as out:
                for chunk in _chunks(data):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            self._install(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def _write_meta(self, key: str, content_type: str, size: int, expires: float | None) -> None:
        meta = {"content_type": content_type, "size": size, "expires_at": expires}
        self._write_atomic(self._meta(key), json.dumps(meta).encode())

    def _read_meta(self, key: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._meta(key).read_bytes()))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError) as exc:
            raise FileNotFound(key) from exc

    def _prune_dirs(self, path: Path, stop: Path) -> None:
        """Remove directories left empty by a delete, up to (not including) `stop`."""
        for parent in path.parents:
            if parent == stop or stop not in parent.parents:
                return
            try:
                parent.rmdir()
            except OSError:
                return

    # --- files ------------------------------------------------------------------------------
    @_full_disk_is_storage_full
    def put(self, key: str, data: Body, content_type: str, expires_at: float | None = None) -> None:
        size, _ = self._write_atomic(self._data(key), data)
        self._write_meta(key, content_type, size, expires_at)

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free

    def _open_live(self, key: str) -> tuple[dict[str, Any], BinaryIO]:
        """The file's sidecar and its bytes opened, unless missing or expired (FileNotFound).
        The open file stays readable even if the file is deleted or replaced meanwhile."""
        meta = self._read_meta(key)
        expires_at = meta.get("expires_at")
        if expires_at is not None and expires_at <= time.time():
            raise FileNotFound(key)
        try:
            return meta, self._data(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise FileNotFound(key) from exc

    def get(self, key: str) -> StoredFile:
        meta, f = self._open_live(key)
        with f:
            data = f.read()
        return StoredFile(key, meta["content_type"], len(data), data, meta.get("expires_at"))

    def open(self, key: str) -> FileReader:
        meta, f = self._open_live(key)
        size = os.fstat(f.fileno()).st_size

        def read_range(start: int, stop: int) -> Iterator[bytes]:
            f.seek(start)
            left = stop - start
            while left > 0:
                chunk = f.read(min(READ_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

        return FileReader(meta["content_type"], size, read_range, f.close)

    def head_bytes(self, key: str, n: int) -> bytes:
        _, f = self._open_live(key)
        with f:
            return f.read(n)

    def exists(self, key: str) -> bool:
        """The sidecar's expiry and a stat of the bytes; the file itself is not read."""
        try:
            expires_at = self._read_meta(key).get("expires_at")
            present = self._data(key).is_file()
        except FileNotFound:
            return False
        return present and (expires_at is None or expires_at > time.time())

    def delete(self, key: str) -> None:
        # Metadata first: from then on the file is gone for readers, whatever happens next.
        for path, stop in ((self._meta(key), "meta"), (self._data(key), "data")):
            path.unlink(missing_ok=True)
            self._prune_dirs(path, self.root / stop)

    def delete_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        meta_root = self.root / "meta"
        removed = 0
        # os.walk, not Path.rglob: it shrugs off directories another process prunes meanwhile.
        found = [
            Path(parent) / name
            for parent, _, names in os.walk(meta_root)
            for name in names
            if name.endswith(".json")
        ]
        for meta_path in found:
            try:
                expires_at = json.loads(meta_path.read_bytes()).get("expires_at")
            except (OSError, json.JSONDecodeError):
                continue  # deleted meanwhile, or being replaced
            if expires_at is not None and expires_at <= now:
                key = meta_path.relative_to(meta_root).as_posix().removesuffix(".json")
                self.delete(key)
                removed += 1
        for upload in (self.root / "uploads").iterdir():
            if upload.stat().st_mtime < now - STALE_UPLOAD_SECONDS:
                shutil.rmtree(upload, ignore_errors=True)
        return removed

    # --- multipart ------------------------------------------------------------------------------
    @_full_disk_is_storage_full
    def start_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        check_key(key)
        upload_id = secrets.token_hex(16)
        staging = self.root / "uploads" / upload_id
        staging.mkdir(mode=0o700)
        info = {"key": key, "content_type": content_type, "expires_at": expires_at}
        self._write_atomic(staging / "upload.json", json.dumps(info).encode())
        return upload_id

    def _upload_info(self, key: str, upload_id: str) -> tuple[Path, dict[str, Any]]:
        staging = self._upload_dir(upload_id)
        info = dict(json.loads((staging / "upload.json").read_text()))
        if info["key"] != check_key(key):
            raise FileNotFound(f"no multipart upload {upload_id!r} for {key!r}")
        return staging, info

    @_full_disk_is_storage_full
    def put_part(self, key: str, upload_id: str, part_number: int, data: Body) -> str:
        staging, _ = self._upload_info(key, upload_id)
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise UploadError(f"part number {part_number} is outside 1..{MAX_PART_NUMBER}")
        return self._write_atomic(staging / f"{part_number:05d}", data)[1]

    @_full_disk_is_storage_full
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        staging, info = self._upload_info(key, upload_id)
        if not parts:
            raise UploadError("a multipart upload needs at least one part")
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise UploadError("parts must be listed once each, in ascending order")
        tmp = self._tmp()
        size = 0
        try:
            with tmp.open("wb") as out:
                for number, etag in parts:
                    try:
                        part = (staging / f"{number:05d}").open("rb")
                    except (FileNotFoundError, ValueError) as exc:
                        raise UploadError(f"part {number} was never uploaded") from exc
                    digest = hashlib.md5(usedforsecurity=False)
                    with part:
                        for chunk in _chunks(part):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                    if digest.hexdigest() != etag.strip('"'):
                        raise UploadError(f"part {number}: etag {etag!r} does not match")
            self._install(tmp, self._data(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._write_meta(key, info["content_type"], size, info["expires_at"])
        shutil.rmtree(staging, ignore_errors=True)
        return size


def _chunks(data: Body) -> Iterator[bytes]:
    """The bytes, or the file's contents from where it stands, a chunk at a time. A part's
    etag is its MD5, as on S3: clients' bookkeeping stays the same on either store."""
    if isinstance(data, bytes):
        yield data
        return
    while chunk := data.read(READ_CHUNK):
        yield chunk

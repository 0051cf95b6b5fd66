"""The file store: uploads and outputs. A local directory by default, S3 when scaled out.

Files are named by an opaque, unguessable key (`new_key`); the API serves them at
`{public_url}/files/{key}`. The key's randomness is the capability, as on fal's CDN.
Expiry is kept per file; `delete_expired` removes what has run out.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO


class FileNotFound(Exception):
    pass


class InvalidKey(FileNotFound, ValueError):
    """A key that is not a plain relative path of safe segments (see `check_key`).
    A FileNotFound too: no such file can exist, so readers answer it like any missing file."""


class StorageFull(Exception):
    """The store has no space left (a full disk or quota). Nothing is wrong with the request:
    the same call can succeed once space is freed."""


class UploadError(ValueError):
    """A multipart upload that cannot be completed: unknown parts, wrong etags, no parts."""


@dataclass
class StoredFile:
    key: str
    content_type: str
    size: int
    data: bytes
    expires_at: float | None = None


# What a store takes: bytes, or a binary file (seekable) read from where it stands.
Body = bytes | BinaryIO

# Bytes a download reads from the store at a time: memory per download stays this, whatever
# the file's size.
READ_CHUNK = 1024 * 1024


@dataclass
class FileReader:
    """An open stored file: its type and size, and its bytes read a chunk at a time
    (`chunks`, blocking). `close` releases what `open` took (a file, a connection)."""

    content_type: str
    size: int
    read_range: Callable[[int, int], Iterator[bytes]]
    close: Callable[[], None] = lambda: None

    def chunks(self, start: int, stop: int) -> Iterator[bytes]:
        """Bytes [start, stop) in chunks of at most READ_CHUNK; closes the reader after."""
        try:
            yield from self.read_range(start, stop)
        finally:
            self.close()


def new_key(file_name: str) -> str:
    """An unguessable key that keeps the file name's last path segment, for downloads."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in file_name.rsplit("/", 1)[-1])
    return f"{secrets.token_urlsafe(18)}/{safe[:100] or 'file'}"


def check_key(key: str) -> str:
    """Accept only what `new_key` makes: `/`-separated segments of letters, digits and `._-`.

    Stores build paths and object names from keys, so this is what keeps a key from naming
    anything outside the store (`..`, absolute paths, backslashes, NUL).
    """
    segments = key.split("/")
    if not key or len(key) > 512 or len(segments) > 8:
        raise InvalidKey(f"invalid file key {key!r}")
    for segment in segments:
        if segment in ("", ".", "..") or not all(c.isalnum() or c in "._-" for c in segment):
            raise InvalidKey(f"invalid file key {key!r}")
    return key


class FileStore(abc.ABC):
    @abc.abstractmethod
    def put(self, key: str, data: Body, content_type: str, expires_at: float | None = None) -> None:
        """Store the bytes, or a binary file's contents read from where it stands (an upload
        spooled to disk: copied through, never held whole)."""

    @abc.abstractmethod
    def get(self, key: str) -> StoredFile:
        """Raises FileNotFound for a missing or expired file."""

    def open(self, key: str) -> FileReader:
        """The file to read in chunks (downloads); FileNotFound as for `get`. Stores override
        this default, which holds the whole file, with one that reads only what is asked."""
        stored = self.get(key)

        def read_range(start: int, stop: int) -> Iterator[bytes]:
            for at in range(start, stop, READ_CHUNK):
                yield stored.data[at : min(stop, at + READ_CHUNK)]

        return FileReader(stored.content_type, stored.size, read_range)

    def head_bytes(self, key: str, n: int) -> bytes:
        """The file's first `n` bytes (all of a shorter one); FileNotFound as for `get`. Stores
        override this default, which reads the whole file, with a partial read."""
        return self.get(key).data[:n]

    def exists(self, key: str) -> bool:
        """Whether `get(key)` would find the file (present and not expired). Stores override
        this with a cheaper check than this default, which reads the whole file."""
        try:
            self.get(key)
        except FileNotFound:
            return False
        return True

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def delete_expired(self, now: float | None = None) -> int:
        """Remove files whose expiry has passed; returns how many."""

    # Multipart uploads (fal's JS client over 90 MB, Python over 100 MiB).
    @abc.abstractmethod
    def start_multipart(self, key: str, content_type: str, expires_at: float | None) -> str:
        """Returns an upload id."""

    @abc.abstractmethod
    def put_part(self, key: str, upload_id: str, part_number: int, data: Body) -> str:
        """Returns the part's etag."""

    @abc.abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        """Assembles the parts in order; returns the file size. Raises UploadError when a
        listed part is missing or its etag differs, FileNotFound for an unknown upload."""

    def free_bytes(self) -> int | None:
        """Space left for new files, where the store can tell (a local disk); None where it
        cannot or need not (S3)."""
        return None

    def presigned_put_url(self, key: str, content_type: str, expires_in: float) -> str | None:
        """A URL a client may PUT the file's bytes to directly, bypassing the API server.
        None when the store has no such thing (the local store): the API then takes the PUT."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections or pools the store holds."""
